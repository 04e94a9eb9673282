package tokens_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"flag"
	"io/fs"
	"math/rand/v2"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ocktools/pkcstok-migrate/tokens"
	"github.com/ocktools/pkcstok-migrate/tokens/tokentest"
	"github.com/stretchr/testify/require"
)

// The repository-level vectors in testdata/vectors are files, reviewed and committed; this
// generator only (re)writes them:
//
//	go test ./tokens -run TestGenerateVectors -update-vectors
//
// Old-format repositories come from tokentest, the independent old-format writer; 3.12
// repositories from tokens' own writer (StartUpgrade + ReencryptObject) with a fixed ChaCha8
// stream, so the output is the same on every run. The fail_ vectors are good repositories with
// one byte-wise change each. TestVectorFiles reads them.

var updateVectors = flag.Bool("update-vectors", false, "rewrite tokens/testdata/vectors (TestGenerateVectors)")

const (
	vecSOPIN   = "so-Vector-8642"
	vecUserPIN = "user-Vector-1357"
	// Wrong PINs differ from the right ones in the last character only.
	vecWrongSOPIN   = "so-Vector-8643"
	vecWrongUserPIN = "user-Vector-1358"
)

// vecRepo is a repository in memory: slash-separated relative path -> content, and the
// objects of OBJ.IDX as vector.json lists them.
type vecRepo struct {
	files   map[string][]byte
	objects []vectorObject
}

func (r *vecRepo) clone() *vecRepo {
	c := &vecRepo{files: make(map[string][]byte, len(r.files)), objects: slices.Clone(r.objects)}
	for k, v := range r.files {
		c.files[k] = bytes.Clone(v)
	}
	return c
}

// obj is the file of object name (must exist).
func (r *vecRepo) obj(t *testing.T, name string) []byte {
	t.Helper()
	b, ok := r.files["TOK_OBJ/"+name]
	require.True(t, ok, "no object %s", name)
	return b
}

// vecFS lets tokens read a vecRepo.
type vecFS map[string][]byte

func (m vecFS) ReadFile(name string) ([]byte, error) {
	b, ok := m[name]
	if !ok {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
	}
	return b, nil
}

// genOld writes an old-format repository with tokentest and reads it back into memory.
func genOld(t *testing.T, o tokentest.Options) (*vecRepo, *tokentest.Generated) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "repo")
	g, err := tokentest.WriteOld(dir, o)
	require.NoError(t, err)
	r := &vecRepo{files: map[string][]byte{}, objects: []vectorObject{}}
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		r.files[filepath.ToSlash(rel)] = b
		return err
	})
	require.NoError(t, err)
	for _, ob := range g.Objects {
		r.objects = append(r.objects, vectorObject{File: ob.Name, Private: ob.Private, ClearSHA256: hex.EncodeToString(ob.ClearSHA256[:])})
	}
	return r, g
}

// to312 converts an old repository with tokens' own 3.12 writer. The random salts, master key
// and object keys come from a ChaCha8 stream seeded with seed.
func to312(t *testing.T, old *vecRepo, soPIN, userPIN string, seed byte) *vecRepo {
	t.Helper()
	repo, err := tokens.Load(vecFS(old.files))
	require.NoError(t, err)
	oldKeys, err := repo.Unlock([]byte(soPIN), []byte(userPIN))
	require.NoError(t, err)
	defer oldKeys.Wipe()
	rnd := rand.NewChaCha8([32]byte{0: 'v', 1: 'e', 2: 'c', 3: seed})
	up, err := newUpgrade(repo, []byte(soPIN), []byte(userPIN), rnd)
	require.NoError(t, err)
	defer up.Keys.Wipe()

	r := old.clone()
	r.files[tokens.FileNVTok] = up.NVToken
	r.files[tokens.FileMKSO] = up.MKSO
	r.files[tokens.FileMKUser] = up.MKUser
	for i, name := range repo.Index {
		out, clearObj, changed, err := tokens.ReencryptObject(name, old.obj(t, name), oldKeys, up.Keys, rnd)
		require.NoError(t, err)
		require.True(t, changed)
		sum := sha256.Sum256(clearObj)
		require.Equal(t, r.objects[i].ClearSHA256, hex.EncodeToString(sum[:]), "clear bytes changed by the conversion of %s", name)
		r.files[tokens.ObjectPath(name)] = out
	}
	return r
}

// writeVector writes one vector directory.
func writeVector(t *testing.T, root, name string, r *vecRepo, m vectorMeta) {
	t.Helper()
	dir := filepath.Join(root, name)
	require.NoError(t, os.MkdirAll(dir, 0o755))
	for rel, b := range r.files {
		p := filepath.Join(dir, filepath.FromSlash(rel))
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.WriteFile(p, b, 0o644))
	}
	if m.Objects == nil {
		m.Objects = r.objects
	}
	if m.Objects == nil {
		m.Objects = []vectorObject{}
	}
	if m.Expect == "" {
		m.Expect = "ok"
	}
	j, err := json.MarshalIndent(m, "", "  ")
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "vector.json"), append(j, '\n'), 0o644))
}

func u32(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }

// beAttrs re-encodes little-endian 4- and 8-byte unsigned-long attributes big-endian.
func beAttrs(attrs []tokentest.Attr) []tokentest.Attr {
	out := slices.Clone(attrs)
	for i, a := range out {
		switch len(a.Value) {
		case 4:
			out[i] = tokentest.BE.UlongAttr(a.Type, uint64(binary.LittleEndian.Uint32(a.Value)))
		case 8:
			if !tokentest.Is32Bit(a.Type) && a.Type != tokentest.CKAValue {
				out[i] = tokentest.BE.UlongAttr(a.Type, binary.LittleEndian.Uint64(a.Value))
			}
		}
	}
	return out
}

// blob is n deterministic bytes (key material and secure-key blobs).
func blob(tag string, n int) []byte {
	var b []byte
	for i := 0; len(b) < n; i++ {
		s := sha256.Sum256([]byte(tag + string(rune('0'+i))))
		b = append(b, s[:]...)
	}
	return b[:n]
}

func vecObjects() []tokentest.ObjectSpec {
	return []tokentest.ObjectSpec{
		{Class: tokentest.CKOData, Label: "public data", Value: []byte("hello from a public object"),
			Attrs: []tokentest.Attr{tokentest.StringAttr(tokentest.CKAApplication, "vectors")}},
		{Private: true, Class: tokentest.CKOData, Label: "private data", Value: []byte("a private note")},
		{Private: true, Class: tokentest.CKOSecretKey, Label: "aes key", ID: []byte{0x01, 0x02},
			Attrs: []tokentest.Attr{
				tokentest.LE.UlongAttr(tokentest.CKAKeyType, uint64(tokentest.CKKAES)),
				tokentest.BoolAttr(tokentest.CKASensitive, true),
				tokentest.LE.UlongAttr(tokentest.CKAValueLen, 16),
			},
			Value: blob("aes", 16)},
	}
}

func TestGenerateVectors(t *testing.T) {
	if !*updateVectors {
		t.Skip("run with -update-vectors to rewrite testdata/vectors")
	}
	root := filepath.Join("testdata", "vectors")
	require.NoError(t, os.RemoveAll(root))
	pins := func(so, user string) vectorMeta { return vectorMeta{SOPIN: so, UserPIN: user} }
	with := func(m vectorMeta, expect, contains, proves string) vectorMeta {
		m.Expect, m.ErrorContains, m.Proves = expect, contains, proves
		return m
	}
	ok := pins(vecSOPIN, vecUserPIN)
	base := tokentest.Options{SOPIN: vecSOPIN, UserPIN: vecUserPIN, Seed: 20240601}

	// --- good, old format ---
	o := base
	o.Type, o.Objects, o.Label = tokens.TypeSoft, vecObjects(), "vectors soft"
	soft, _ := genOld(t, o)
	writeVector(t, root, "good_soft_old", soft, with(ok, "ok", "",
		"An old-format Soft repository with one public and two private objects (counter names) unlocks and every object decrypts to the bytes tokentest's independent encoder flattened."))

	o = base
	o.Type, o.Label, o.NameStyle = tokens.TypeICA, "vectors ica", tokentest.NameMkstemp
	o.Objects = []tokentest.ObjectSpec{
		{Class: tokentest.CKOCertificate, Label: "cert", Value: blob("cert", 40),
			Attrs: []tokentest.Attr{tokentest.LE.UlongAttr(tokentest.CKACertificateType, 0)}},
		{Private: true, Class: tokentest.CKOSecretKey, Label: "ica key",
			Attrs: []tokentest.Attr{tokentest.LE.UlongAttr(tokentest.CKAKeyType, uint64(tokentest.CKKGenericSecret))},
			Value: blob("ica", 24)},
	}
	ica, _ := genOld(t, o)
	writeVector(t, root, "good_ica_old", ica, with(ok, "ok", "",
		"An old-format ICA repository with mkstemp-style object names (3.18+) reads like a Soft one: same 3DES master key handling, same object format."))

	o = base
	o.Type, o.Label, o.MK88 = tokens.TypeCCA, "vectors cca", true
	o.Objects = []tokentest.ObjectSpec{
		{Class: tokentest.CKOData, Label: "cca public", Value: []byte("cca public data")},
		{Private: true, Class: tokentest.CKOSecretKey, Label: "cca secure key",
			Attrs: []tokentest.Attr{tokentest.LE.UlongAttr(tokentest.CKAKeyType, uint64(tokentest.CKKAES))},
			Value: blob("cca", 64)},
	}
	cca, ccaGen := genOld(t, o)
	writeVector(t, root, "good_cca_old_mk88", cca, with(ok, "ok", "",
		"Legacy CCA 88-byte MK_SO/MK_USER files (64-byte master key) unlock, and objects are encrypted with the master key's first 24 bytes only."))

	o = base
	o.Type, o.Label = tokens.TypeEP11, "vectors ep11"
	o.Objects = []tokentest.ObjectSpec{
		{Private: true, Class: tokentest.CKOSecretKey, Label: "ep11 secure key", ID: []byte{0xE1},
			Attrs: []tokentest.Attr{tokentest.LE.UlongAttr(tokentest.CKAKeyType, uint64(tokentest.CKKAES))},
			Value: blob("ep11", 200)},
		{Class: tokentest.CKOData, Label: "ep11 public", Value: []byte("ep11 public data")},
	}
	ep11, _ := genOld(t, o)
	writeVector(t, root, "good_ep11_old_opaque_blob", ep11, with(ok, "ok", "",
		"An old-format EP11 repository whose private key carries a 200-byte CKA_IBM_OPAQUE secure-key blob decrypts and parses; the blob is carried as opaque bytes."))

	o = base
	o.Type, o.Label, o.NoObjIdx = tokens.TypeSoft, "vectors never used", true
	noIdx, _ := genOld(t, o)
	writeVector(t, root, "good_old_no_objidx", noIdx, with(ok, "ok", "",
		"A token on which no object was ever created has no TOK_OBJ/OBJ.IDX (and, in git, no TOK_OBJ): it loads and unlocks with zero objects."))

	o = base
	o.Type, o.Label = tokens.TypeSoft, "vectors emptied"
	emptyIdx, _ := genOld(t, o)
	require.Contains(t, emptyIdx.files, tokens.FileIndex)
	require.Empty(t, emptyIdx.files[tokens.FileIndex])
	writeVector(t, root, "good_old_empty_objidx", emptyIdx, with(ok, "ok", "",
		"An empty OBJ.IDX (every object deleted) is an empty object list, not an error."))

	// --- good, 3.12 ---
	soft312 := to312(t, soft, vecSOPIN, vecUserPIN, 1)
	writeVector(t, root, "good_soft_312", soft312, with(ok, "ok", "",
		"good_soft_old converted by tokens' own 3.12 writer unlocks through PBKDF2 and AES key wrap, and every object has the same clear bytes as before the conversion."))

	legacy := soft312.clone()
	pub := legacy.obj(t, "00000000")
	require.Equal(t, tokens.Version312, binary.BigEndian.Uint32(pub))
	binary.LittleEndian.PutUint32(pub, tokens.Version312)
	binary.LittleEndian.PutUint32(pub[12:], binary.BigEndian.Uint32(pub[12:]))
	legacy.objects[0].LegacyHostOrderHeader = true
	writeVector(t, root, "good_312_legacy_hostorder_public", legacy, with(ok, "ok", "",
		"A 3.12 public object whose 16-byte header is in host (little-endian) order, as 3.12 to 3.14 wrote it, is still read and flagged as legacy."))

	// --- fail: PINs and master key files ---
	writeVector(t, root, "fail_wrong_so_pin", soft, with(pins(vecWrongSOPIN, vecUserPIN), "ErrWrongSOPIN", "SO PIN is incorrect",
		"An SO PIN that differs in its last character is refused by the SHA-1 check against NVTOK.DAT, and only the SO PIN is reported."))
	writeVector(t, root, "fail_wrong_user_pin", soft, with(pins(vecSOPIN, vecWrongUserPIN), "ErrWrongUserPIN", "user PIN is incorrect",
		"A user PIN that differs in its last character is refused, and only the user PIN is reported."))

	o = base
	o.Type, o.Label, o.UserPIN, o.UserPINUnset = tokens.TypeSoft, "vectors no user pin", "", true
	o.Objects = vecObjects()[:1]
	noUser, _ := genOld(t, o)
	require.NotContains(t, noUser.files, tokens.FileMKUser)
	writeVector(t, root, "fail_user_pin_never_set", noUser, with(ok, "ErrUserPINNotSet", "never set",
		"A token whose user PIN was never set (user_pin_sha all ASCII '0', no MK_USER) cannot be unlocked with any user PIN."))

	r := soft.clone()
	r.files[tokens.FileMKUser] = tokentest.EncodeOldMK(blob("other mk", 24), vecUserPIN)
	writeVector(t, root, "fail_mk_so_user_disagree", r, with(ok, "ErrMKMismatch", "different master keys",
		"MK_SO and MK_USER that each decrypt correctly with their PIN but hold different master keys are refused."))

	r = cca.clone()
	r.files[tokens.FileMKUser] = tokentest.EncodeOldMK(ccaGen.MK[:24], vecUserPIN)
	require.Len(t, r.files[tokens.FileMKSO], 88)
	writeVector(t, root, "fail_mk88_with_mk48", r, with(ok, "ErrMKMismatch", "different master keys",
		"An 88-byte MK_SO next to a 48-byte MK_USER holding the same first 24 bytes is a mismatch: the master keys are compared over their full length."))

	r = soft.clone()
	r.files[tokens.FileNVTok] = append(r.files[tokens.FileNVTok], make([]byte, 8)...)
	writeVector(t, root, "fail_nvtok_third_size", r, with(ok, "ErrCorrupt", "NVTOK.DAT: invalid size of 240 bytes",
		"An NVTOK.DAT of 240 bytes, neither the old 232 nor the new 592, is corrupt: the size alone decides the format."))

	r = soft.clone()
	r.files[tokens.FileMKSO] = append(r.files[tokens.FileMKSO], make([]byte, 8)...)
	writeVector(t, root, "fail_mk_file_third_size", r, with(ok, "ErrCorrupt", "MK_SO: unknown size of 56 bytes",
		"An MK_SO of 56 bytes, neither 48 nor 88, is corrupt rather than a wrong PIN."))

	// --- fail: 3.12 ---
	writeVector(t, root, "fail_312_wrong_so_pin", soft312, with(pins(vecWrongSOPIN, vecUserPIN), "ErrWrongSOPIN", "SO PIN is incorrect",
		"On a 3.12 repository a wrong SO PIN fails the constant-time PBKDF2 login-key comparison and only the SO PIN is reported."))

	r = soft312.clone()
	b := r.obj(t, "10000000")
	b[len(b)-1] ^= 0x01
	writeVector(t, root, "fail_312_gcm_tag_flipped", r, with(ok, "ErrCorrupt", "TOK_OBJ/10000000: AES-GCM authentication failed",
		"One flipped bit in the GCM tag of a 3.12 private object fails authentication; nothing of the object is returned."))

	r = soft312.clone()
	b = r.obj(t, "10000000")
	b[5] ^= 0x01 // reserved byte: no parser looks at it, only the AAD covers it
	writeVector(t, root, "fail_312_header_byte_flipped", r, with(ok, "ErrCorrupt", "TOK_OBJ/10000000: AES-GCM authentication failed",
		"A flipped reserved byte in a 3.12 private object's 64-byte header, read by no parser, is caught because the header is the GCM additional data."))

	// --- fail: old objects ---
	r = soft.clone()
	r.files["TOK_OBJ/10000000"] = r.obj(t, "10000000")[:len(r.obj(t, "10000000"))-8]
	writeVector(t, root, "fail_old_private_truncated", r, with(ok, "ErrCorrupt", "TOK_OBJ/10000000: total_len",
		"An old private object file cut short by one 3DES block (as by an interrupted copy) is corrupt: its total_len runs past the end."))

	r = soft.clone()
	b = r.obj(t, "00000000")
	binary.LittleEndian.PutUint32(b, uint32(len(b)+1))
	writeVector(t, root, "fail_old_total_len_past_end", r, with(ok, "ErrCorrupt", "TOK_OBJ/00000000: total_len",
		"An old public object whose total_len is one byte more than the file is corrupt, not read past the end."))

	r = soft.clone()
	b = r.obj(t, "10000000")
	binary.LittleEndian.PutUint32(b, 0xFFFFFFFF)
	writeVector(t, root, "fail_old_length_4GiB", r, with(ok, "ErrCorrupt", "not below 2^31",
		"An old object's total_len of 0xFFFFFFFF is refused before any allocation or decryption."))

	r = soft.clone()
	b = append(r.obj(t, "10000000"), 0)
	binary.LittleEndian.PutUint32(b, uint32(len(b)))
	r.files["TOK_OBJ/10000000"] = b
	writeVector(t, root, "fail_old_ciphertext_not_multiple_of_8", r, with(ok, "ErrCorrupt", "not a multiple of 8",
		"An old private object whose total_len is consistent but whose ciphertext is not a whole number of 3DES blocks is corrupt."))

	// --- fail: OBJ.IDX ---
	r = soft.clone()
	delete(r.files, "TOK_OBJ/10000000")
	r.objects = slices.DeleteFunc(r.objects, func(v vectorObject) bool { return v.File == "10000000" })
	writeVector(t, root, "fail_objidx_names_missing_file", r, with(ok, "ErrNotExist", "TOK_OBJ/10000000",
		"OBJ.IDX naming an object file that does not exist is a missing-file error naming it, after the objects before it decoded."))

	idxWith := func(src *vecRepo, bad string, file []byte) *vecRepo {
		r := src.clone()
		names := tokens.ParseIndex(r.files[tokens.FileIndex])
		names = slices.Insert(names, 1, bad)
		r.files[tokens.FileIndex] = []byte(strings.Join(names, "\n") + "\n")
		if file != nil && path.Base(bad) == bad {
			r.files["TOK_OBJ/"+bad] = file
		}
		return r
	}
	pubFile := soft.obj(t, "00000000")
	writeVector(t, root, "fail_objidx_name_7_chars", idxWith(soft, "0000000", pubFile), with(ok, "ErrCorrupt", "an object name of 7 bytes, not 8",
		"A 7-byte name in OBJ.IDX is refused by the name check even though TOK_OBJ holds a file of that name."))
	writeVector(t, root, "fail_objidx_name_with_slash", idxWith(soft, "../MK_SO", nil), with(ok, "ErrCorrupt", "contains '/'",
		"The 8-byte OBJ.IDX name ../MK_SO, which would read the SO master key file as an object, is refused before any file is opened."))
	writeVector(t, root, "fail_objidx_name_dotdot", idxWith(soft, "..000000", pubFile), with(ok, "ErrCorrupt", `contains ".."`,
		"An 8-byte OBJ.IDX name containing \"..\" is refused although a file of that name exists: no name with \"..\" can leave TOK_OBJ."))

	// --- big-endian repositories, as a token on s390x writes them ---
	withOrder := func(m vectorMeta, order string) vectorMeta { m.ByteOrder = order; return m }
	beBase := base
	beBase.Order = binary.BigEndian

	o = beBase
	o.Type, o.Objects, o.Label = tokens.TypeSoft, vecObjects(), "vectors soft be"
	o.Objects[2].Attrs = beAttrs(o.Objects[2].Attrs)
	softBE, _ := genOld(t, o)
	writeVector(t, root, "good_be_soft_old", softBE, withOrder(with(ok, "ok", "",
		"An old-format Soft repository written big-endian (NVTOK.DAT integers, total_len, the private objects' length field and the flattened bodies) is found big-endian from its own bytes on any host, unlocks, and every object decrypts to the bytes tokentest's encoder flattened."), "big-endian"))

	o = beBase
	o.Type, o.Label, o.NameStyle = tokens.TypeICA, "vectors ica be", tokentest.NameMkstemp
	o.Objects = []tokentest.ObjectSpec{
		{Class: tokentest.CKOCertificate, Label: "cert", Value: blob("cert", 40),
			Attrs: []tokentest.Attr{tokentest.BE.UlongAttr(tokentest.CKACertificateType, 0)}},
		{Private: true, Class: tokentest.CKOSecretKey, Label: "ica key",
			Attrs: []tokentest.Attr{tokentest.BE.UlongAttr(tokentest.CKAKeyType, uint64(tokentest.CKKGenericSecret))},
			Value: blob("ica", 24)},
	}
	icaBE, _ := genOld(t, o)
	writeVector(t, root, "good_be_ica_old", icaBE, withOrder(with(ok, "ok", "",
		"A big-endian ICA repository (the token type that exists only on s390x) reads like the little-endian one."), "big-endian"))

	o = beBase
	o.Type, o.Label, o.MK88 = tokens.TypeCCA, "vectors cca be", true
	o.Objects = []tokentest.ObjectSpec{
		{Class: tokentest.CKOData, Label: "cca public", Value: []byte("cca public data")},
		{Private: true, Class: tokentest.CKOSecretKey, Label: "cca secure key",
			Attrs: []tokentest.Attr{tokentest.BE.UlongAttr(tokentest.CKAKeyType, uint64(tokentest.CKKAES))},
			Value: blob("cca", 64)},
	}
	ccaBE, _ := genOld(t, o)
	writeVector(t, root, "good_be_cca_old_mk88", ccaBE, withOrder(with(ok, "ok", "",
		"A big-endian CCA repository with legacy 88-byte MK files: the MK files are byte strings (no order), the objects big-endian."), "big-endian"))

	o = beBase
	o.Type, o.Label = tokens.TypeEP11, "vectors ep11 be"
	o.Objects = []tokentest.ObjectSpec{
		{Private: true, Class: tokentest.CKOSecretKey, Label: "ep11 secure key", ID: []byte{0xE1},
			Attrs: []tokentest.Attr{tokentest.BE.UlongAttr(tokentest.CKAKeyType, uint64(tokentest.CKKAES))},
			Value: blob("ep11", 200)},
		{Class: tokentest.CKOData, Label: "ep11 public", Value: []byte("ep11 public data")},
	}
	ep11BE, _ := genOld(t, o)
	writeVector(t, root, "good_be_ep11_old_opaque_blob", ep11BE, withOrder(with(ok, "ok", "",
		"A big-endian EP11 repository whose secure-key blob is carried as opaque bytes."), "big-endian"))

	soft312BE := to312(t, softBE, vecSOPIN, vecUserPIN, 2)
	writeVector(t, root, "good_be_soft_312", soft312BE, withOrder(with(ok, "ok", "",
		"good_be_soft_old converted by tokens' own writer: NVTOK.DAT and the object headers are big-endian as on every host, the flattened bodies stay big-endian (the repository's order), and the order is found from the public object's body."), "big-endian"))

	writeVector(t, root, "fail_be_wrong_user_pin", softBE, with(pins(vecSOPIN, vecWrongUserPIN), "ErrWrongUserPIN", "user PIN is incorrect",
		"A wrong user PIN on a big-endian repository is a wrong PIN, not a byte-order or corruption error."))

	r = softBE.clone()
	r.files["TOK_OBJ/10000000"] = r.obj(t, "10000000")[:len(r.obj(t, "10000000"))-8]
	writeVector(t, root, "fail_be_old_private_truncated", r, with(ok, "ErrCorrupt", "TOK_OBJ/10000000: total_len",
		"A big-endian private object cut short by one block is corrupt (its big-endian total_len runs past the end), not taken for an object of the other order."))

	// One object file of a little-endian repository copied into a big-endian one, and the
	// reverse: the public object 00000000 has the same name and content in both.
	r = softBE.clone()
	r.files["TOK_OBJ/00000000"] = soft.obj(t, "00000000")
	writeVector(t, root, "fail_be_repository_with_le_object", r, with(ok, "ErrByteOrder", "TOK_OBJ/00000000: written in little-endian byte order",
		"A little-endian object file copied into a big-endian repository is refused as mixed byte order, naming the file."))
	r = soft.clone()
	r.files["TOK_OBJ/00000000"] = softBE.obj(t, "00000000")
	writeVector(t, root, "fail_le_repository_with_be_object", r, with(ok, "ErrByteOrder", "TOK_OBJ/00000000: written in big-endian byte order",
		"A big-endian object file copied into a little-endian repository is refused as mixed byte order, naming the file."))
	r = soft312BE.clone()
	r.files["TOK_OBJ/00000000"] = soft312.obj(t, "00000000")
	r.objects[0] = soft312.objects[0] // it decodes on its own; only the repository as a whole is refused
	writeVector(t, root, "fail_be_312_repository_with_le_object", r, with(ok, "ErrByteOrder", "mixed byte order",
		"In a 3.12 repository (whose NVTOK.DAT tells no host order) a public object with a little-endian body among big-endian ones is refused."))

	r = soft.clone()
	nv := r.files[tokens.FileNVTok]
	binary.BigEndian.PutUint32(nv[116:], 8) // max PIN length big-endian, flags and tweaks little-endian
	binary.BigEndian.PutUint32(nv[120:], 4)
	writeVector(t, root, "fail_nvtok_order_contradicts_itself", r, with(ok, "ErrByteOrder", "NVTOK.DAT: its fields contradict each other",
		"An NVTOK.DAT whose PIN lengths read big-endian but whose flags and tweaks read little-endian is refused: its byte order cannot be decided."))

	var total int64
	require.NoError(t, filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			var fi fs.FileInfo
			if fi, err = d.Info(); err == nil {
				total += fi.Size()
			}
		}
		return err
	}))
	t.Logf("testdata/vectors: %d bytes", total)
	require.Less(t, total, int64(300<<10))
}
