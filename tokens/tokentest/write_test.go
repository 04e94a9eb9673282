package tokentest

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"github.com/ocktools/pkcstok-migrate/tokens"
)

func baseOptions(t tokens.Type) Options {
	return Options{Type: t, SOPIN: "sopin123", UserPIN: "user1234", Label: "tokentest label", Seed: 42}
}

func readDir(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		info, err := d.Info()
		if err != nil {
			return err
		}
		if d.IsDir() {
			if info.Mode().Perm() != 0o770 {
				t.Errorf("%s: dir mode %v, want 0770", rel, info.Mode().Perm())
			}
			return nil
		}
		if !info.Mode().IsRegular() || info.Mode().Perm() != 0o660 {
			t.Errorf("%s: mode %v, want regular 0660", rel, info.Mode())
		}
		b, err := os.ReadFile(p)
		files[filepath.ToSlash(rel)] = b
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// checkRepo decodes a written repository with the test decoder and checks it against g.
func checkRepo(t *testing.T, o Options, g *Generated) map[string][]byte {
	t.Helper()
	files := readDir(t, g.Dir)
	nv := files["NVTOK.DAT"]
	if len(nv) != NVTokenSize {
		t.Fatalf("NVTOK.DAT is %d bytes", len(nv))
	}
	flags := binary.LittleEndian.Uint32(nv[96:])
	if !bytes.Equal(nv[184:204], PINHash(o.SOPIN)) {
		t.Error("so_pin_sha is not SHA-1(SO PIN)")
	}
	if string(nv[64:80]) != (o.Type.String() + strings.Repeat(" ", 16))[:16] {
		t.Errorf("model %q", nv[64:80])
	}
	mkLen := 24
	if o.MK88 {
		mkLen = 64
	}
	if len(g.MK) != mkLen || len(files["MK_SO"]) != mkLen+24 {
		t.Fatalf("MK %d bytes, MK_SO %d bytes", len(g.MK), len(files["MK_SO"]))
	}
	mk, err := decodeOldMK(files["MK_SO"], o.SOPIN)
	if err != nil || !bytes.Equal(mk, g.MK) {
		t.Fatalf("MK_SO: %v", err)
	}
	if o.UserPINUnset {
		if _, ok := files["MK_USER"]; ok {
			t.Error("MK_USER written for an unset user PIN")
		}
		if string(nv[160:180]) != UnsetPINHash || flags != 0x645 {
			t.Errorf("unset user PIN: hash %q, flags %#x", nv[160:180], flags)
		}
	} else {
		mk2, err := decodeOldMK(files["MK_USER"], o.UserPIN)
		if err != nil || !bytes.Equal(mk2, g.MK) {
			t.Fatalf("MK_USER: %v", err)
		}
		if !bytes.Equal(nv[160:180], PINHash(o.UserPIN)) || flags != 0x64D {
			t.Errorf("user_pin_sha / flags %#x", flags)
		}
	}

	idx, hasIdx := files["TOK_OBJ/OBJ.IDX"]
	if hasIdx == o.NoObjIdx {
		t.Fatalf("OBJ.IDX present = %v with NoObjIdx = %v", hasIdx, o.NoObjIdx)
	}
	var names []string
	if len(idx) > 0 {
		if idx[len(idx)-1] != '\n' {
			t.Fatal("OBJ.IDX does not end in a newline")
		}
		names = strings.Split(string(idx[:len(idx)-1]), "\n")
	}
	if len(names) != len(g.Objects) || len(files) != len(names)+3+btoi(!o.UserPINUnset)-btoi(o.NoObjIdx) {
		t.Fatalf("%d names, %d objects, %d files", len(names), len(g.Objects), len(files))
	}
	pub, priv := 0, 0
	for i, name := range names {
		obj := g.Objects[i]
		if obj.Name != name {
			t.Fatalf("object %d: name %q, OBJ.IDX %q", i, obj.Name, name)
		}
		file := files["TOK_OBJ/"+name]
		flat, private, err := decodeOldObject(file, g.MK)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if private != obj.Private || len(file) != obj.FileSize || len(flat) != obj.ClearLen || sha256.Sum256(flat) != obj.ClearSHA256 {
			t.Fatalf("%s: file does not match Generated", name)
		}
		if obj.Clear != nil && !bytes.Equal(obj.Clear, flat) {
			t.Fatalf("%s: Clear differs", name)
		}
		want := OldPublicSize(len(flat))
		if private {
			priv++
			want = OldPrivateSize(len(flat))
		} else {
			pub++
		}
		if len(file) != want {
			t.Errorf("%s: size %d, formula %d", name, len(file), want)
		}
		class, oname, attrs, err := parseFlat(flat)
		if err != nil || oname != name || class != obj.Class {
			t.Fatalf("%s: parse %v, name %q, class %d/%d", name, err, oname, class, obj.Class)
		}
		if a, ok := findAttr(attrs, CKAPrivate); !ok || (a.Value[0] == 1) != private {
			t.Errorf("%s: CKA_PRIVATE does not match the file flag", name)
		}
		if a, ok := findAttr(attrs, CKAClass); ok && binary.LittleEndian.Uint32(a.Value) != class {
			t.Errorf("%s: CKA_CLASS differs from the header", name)
		}
		if obj.Label != "" {
			if a, ok := findAttr(attrs, CKALabel); !ok || string(a.Value) != obj.Label {
				t.Errorf("%s: label", name)
			}
		}
	}
	if pub != g.Public || priv != g.Private {
		t.Errorf("counts %d/%d, Generated %d/%d", pub, priv, g.Public, g.Private)
	}
	return files
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

func TestWriteOldTypesAndMix(t *testing.T) {
	for _, ty := range []tokens.Type{tokens.TypeSoft, tokens.TypeICA, tokens.TypeCCA, tokens.TypeEP11} {
		t.Run(ty.String(), func(t *testing.T) {
			o := baseOptions(ty)
			o.N = 400
			g, err := WriteOld(filepath.Join(t.TempDir(), "repo"), o)
			if err != nil {
				t.Fatal(err)
			}
			files := checkRepo(t, o, g)
			if g.Public < 120 || g.Public > 200 || g.Private < 200 || g.Private > 280 {
				t.Errorf("mix: %d public, %d private", g.Public, g.Private)
			}
			rsa, nested := 0, 0
			for _, obj := range g.Objects {
				if obj.Class != CKOPrivateKey {
					continue
				}
				rsa++
				_, _, attrs, _ := parseFlat(obj.Clear)
				blob, hasBlob := findAttr(attrs, CKAIBMOpaque)
				_, hasPriv := findAttr(attrs, CKAPrivateExponent)
				if secureKeyType(ty) != hasBlob || hasBlob == hasPriv {
					t.Errorf("%s: opaque %v, private exponent %v", obj.Name, hasBlob, hasPriv)
				}
				if ty == tokens.TypeEP11 && (len(blob.Value) < 300 || len(blob.Value) > 1000) {
					t.Errorf("%s: EP11 blob of %d bytes", obj.Name, len(blob.Value))
				}
				if ty == tokens.TypeSoft && (obj.ClearLen < 1100 || obj.ClearLen > 1500) {
					t.Errorf("%s: RSA body %d bytes", obj.Name, obj.ClearLen)
				}
				if a, ok := findAttr(attrs, CKAUnwrapTemplate); ok {
					nested++
					if len(a.Value) != 4*12+4+4+4+1 {
						t.Errorf("%s: unwrap template of %d bytes", obj.Name, len(a.Value))
					}
				}
			}
			if rsa < 50 || nested == 0 {
				t.Errorf("%d RSA keys, %d with templates", rsa, nested)
			}
			// counter names, and NVTOK.DAT holds the next one
			if g.Objects[0].Name != "00000000" || g.Objects[1].Name != "10000000" || g.Objects[36].Name != "01000000" {
				t.Errorf("counter names %s %s %s", g.Objects[0].Name, g.Objects[1].Name, g.Objects[36].Name)
			}
			if string(files["NVTOK.DAT"][208:216]) != CounterName(400) {
				t.Errorf("next name %q", files["NVTOK.DAT"][208:216])
			}
		})
	}
}

func TestWriteOldDeterministic(t *testing.T) {
	o := baseOptions(tokens.TypeEP11)
	o.N, o.NameStyle = 60, NameMkstemp
	tmp := t.TempDir()
	g1, err := WriteOld(filepath.Join(tmp, "a"), o)
	if err != nil {
		t.Fatal(err)
	}
	o.Workers = 1
	g2, err := WriteOld(filepath.Join(tmp, "b"), o)
	if err != nil {
		t.Fatal(err)
	}
	a, b := checkRepo(t, o, g1), checkRepo(t, o, g2)
	if len(a) != len(b) {
		t.Fatal("different file sets")
	}
	for k, v := range a {
		if !bytes.Equal(b[k], v) {
			t.Errorf("%s differs between runs", k)
		}
	}
	o.Seed++
	g3, err := WriteOld(filepath.Join(tmp, "c"), o)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(g3.MK, g1.MK) || g3.Objects[0].Name == g1.Objects[0].Name {
		t.Error("another seed gave the same MK or names")
	}
}

func TestWriteOldMkstempNames(t *testing.T) {
	o := baseOptions(tokens.TypeSoft)
	o.N, o.NameStyle, o.NoObjectList = KeepClearMax+200, NameMkstemp, false
	g, err := WriteOld(t.TempDir(), o)
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`^OB[A-Za-z0-9]{6}$`)
	seen := map[string]bool{}
	for _, obj := range g.Objects {
		if !re.MatchString(obj.Name) || seen[obj.Name] {
			t.Fatalf("bad or duplicate name %q", obj.Name)
		}
		seen[obj.Name] = true
		if obj.Clear != nil {
			t.Fatal("Clear kept for more than KeepClearMax objects")
		}
	}
	nv, _ := os.ReadFile(filepath.Join(g.Dir, "NVTOK.DAT"))
	if !bytes.Equal(nv[208:216], make([]byte, 8)) {
		t.Errorf("mkstemp style: name counter % x, want zeros", nv[208:216])
	}
	// The name map itself is a bijection on a much larger range.
	gen := mkstempNamer(7)
	seen = map[string]bool{}
	for i := uint64(0); i < 100000; i++ {
		n := gen(i * 9973)
		if seen[n] {
			t.Fatalf("mkstemp name collision at %d", i)
		}
		seen[n] = true
	}
	checkRepo(t, o, g)
}

func TestWriteOldVariants(t *testing.T) {
	fixedMK := seq(0, 24)
	cases := map[string]func(*Options){
		"mk88 CCA":          func(o *Options) { o.Type, o.MK88, o.N = tokens.TypeCCA, true, 30 },
		"mk88 fixed":        func(o *Options) { o.MK88, o.MK, o.N = true, seq(0, 64), 5 },
		"fixed MK":          func(o *Options) { o.MK, o.N = fixedMK, 5 },
		"user PIN unset":    func(o *Options) { o.UserPIN, o.UserPINUnset, o.N = "", true, 3 },
		"no OBJ.IDX":        func(o *Options) { o.NoObjIdx = true },
		"empty OBJ.IDX":     func(o *Options) {},
		"empty label":       func(o *Options) { o.Label = "" },
		"one worker, ICA":   func(o *Options) { o.Type, o.Workers, o.N = tokens.TypeICA, 1, 20 },
		"many workers":      func(o *Options) { o.Workers, o.N = 64, 3 },
		"unicode PIN, EP11": func(o *Options) { o.Type, o.SOPIN, o.UserPIN, o.N = tokens.TypeEP11, "sö€", "ü!", 10 },
	}
	for name, mod := range cases {
		t.Run(name, func(t *testing.T) {
			o := baseOptions(tokens.TypeSoft)
			mod(&o)
			g, err := WriteOld(filepath.Join(t.TempDir(), "x", "repo"), o)
			if err != nil {
				t.Fatal(err)
			}
			files := checkRepo(t, o, g)
			if o.MK != nil && !bytes.Equal(g.MK, o.MK) {
				t.Error("fixed MK not used")
			}
			if o.MK88 && o.MK == nil && !bytes.Equal(g.MK[24:], make([]byte, 40)) {
				t.Error("generated 64-byte MK has non-zero ballast")
			}
			if !o.NoObjIdx && o.N == 0 && len(files["TOK_OBJ/OBJ.IDX"]) != 0 {
				t.Error("OBJ.IDX not empty")
			}
			if (o.Type == tokens.TypeSoft || o.Type == tokens.TypeICA) && o.MK == nil {
				for _, b := range g.MK[:24] {
					if pop(b)%2 != 1 {
						t.Fatalf("Soft/ICA MK byte %#x without odd parity", b)
					}
				}
			}
		})
	}
}

func pop(b byte) int {
	n := 0
	for ; b != 0; b &= b - 1 {
		n++
	}
	return n
}

func TestWriteOldExplicitObjects(t *testing.T) {
	o := baseOptions(tokens.TypeCCA)
	o.MK = seq(0, 24)
	o.Objects = []ObjectSpec{
		{Name: "10000000", Private: true, Class: CKOData, Label: "test"},
		{Class: CKOSecretKey, Private: true, Label: "aes", ID: []byte{1, 2}, Value: []byte("blob"),
			Attrs: []Attr{LE.UlongAttr(CKAKeyType, uint64(CKKAES)), LE.UlongAttr(CKAValueLen, 32)}},
		{Class: CKOData, Value: []byte("v")},
		{Name: "OBrawraw", Flat: []byte("whatever bytes, even broken")},
	}
	g, err := WriteOld(t.TempDir(), o)
	if err != nil {
		t.Fatal(err)
	}
	checkRepoLoose(t, g)
	// Object 0 is the §11.3 sample: its file must be the spec's bytes.
	file, err := os.ReadFile(filepath.Join(g.Dir, "TOK_OBJ", "10000000"))
	if err != nil {
		t.Fatal(err)
	}
	want, _ := LE.EncodeOldPrivate(unhex(t, sampleFlatHex), seq(0, 24))
	if !bytes.Equal(file, want) {
		t.Errorf("sample object file %x", file)
	}
	// Unnamed objects take the counter name of their position.
	// Unnamed objects take the next counter names not used by named ones.
	if g.Objects[1].Name != "00000000" || g.Objects[2].Name != "20000000" {
		t.Errorf("names %q %q", g.Objects[1].Name, g.Objects[2].Name)
	}
	if nv, _ := os.ReadFile(filepath.Join(g.Dir, "NVTOK.DAT")); string(nv[208:216]) != "30000000" {
		t.Errorf("next name %q", nv[208:216])
	}
	_, _, attrs, _ := parseFlat(g.Objects[1].Clear)
	if a, ok := findAttr(attrs, CKAIBMOpaque); !ok || string(a.Value) != "blob" {
		t.Error("CCA secret key value not stored as CKA_IBM_OPAQUE")
	}
	_, _, attrs, _ = parseFlat(g.Objects[2].Clear)
	if a, ok := findAttr(attrs, CKAValue); !ok || string(a.Value) != "v" {
		t.Error("data value not stored as CKA_VALUE")
	}
	if string(g.Objects[3].Clear) != "whatever bytes, even broken" {
		t.Error("Flat not used verbatim")
	}
}

// checkRepoLoose checks names and decryption only (for objects with odd bodies).
func checkRepoLoose(t *testing.T, g *Generated) {
	t.Helper()
	idx, err := os.ReadFile(filepath.Join(g.Dir, "TOK_OBJ", "OBJ.IDX"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, o := range g.Objects {
		names = append(names, o.Name)
		file, err := os.ReadFile(filepath.Join(g.Dir, "TOK_OBJ", o.Name))
		if err != nil {
			t.Fatal(err)
		}
		flat, _, err := decodeOldObject(file, g.MK)
		if err != nil || !bytes.Equal(flat, o.Clear) {
			t.Fatalf("%s: %v", o.Name, err)
		}
	}
	if string(idx) != strings.Join(names, "\n")+"\n" {
		t.Errorf("OBJ.IDX %q", idx)
	}
}

func TestWriteOldErrors(t *testing.T) {
	cases := map[string]func(*Options){
		"unknown type":       func(o *Options) { o.Type = tokens.TypeUnknown },
		"bad type":           func(o *Options) { o.Type = 99 },
		"no SO PIN":          func(o *Options) { o.SOPIN = "" },
		"no user PIN":        func(o *Options) { o.UserPIN = "" },
		"PIN with NUL":       func(o *Options) { o.UserPIN = "a\x00b" },
		"unset but given":    func(o *Options) { o.UserPINUnset = true },
		"long label":         func(o *Options) { o.Label = strings.Repeat("x", 33) },
		"MK 16":              func(o *Options) { o.MK = seq(0, 16) },
		"MK 64 without MK88": func(o *Options) { o.MK = seq(0, 64) },
		"MK88 with 24":       func(o *Options) { o.MK88, o.MK = true, seq(0, 24) },
		"negative N":         func(o *Options) { o.N = -1 },
		"N and Objects":      func(o *Options) { o.N, o.Objects = 1, []ObjectSpec{{}} },
		"negative workers":   func(o *Options) { o.Workers = -1 },
		"name style":         func(o *Options) { o.NameStyle = 9 },
		"NoObjIdx with objs": func(o *Options) { o.NoObjIdx, o.N = true, 1 },
		"short name":         func(o *Options) { o.Objects = []ObjectSpec{{Name: "abc"}} },
		"slash name":         func(o *Options) { o.Objects = []ObjectSpec{{Name: "ab/cdefg"}} },
		"tmp name":           func(o *Options) { o.Objects = []ObjectSpec{{Name: "ABCD.TMP"}} },
		"duplicate name":     func(o *Options) { o.Objects = []ObjectSpec{{Name: "10000000"}, {}, {Name: "10000000"}} },
	}
	for name, mod := range cases {
		t.Run(name, func(t *testing.T) {
			o := baseOptions(tokens.TypeSoft)
			mod(&o)
			dir := filepath.Join(t.TempDir(), "repo")
			if _, err := WriteOld(dir, o); err == nil {
				t.Fatal("accepted")
			}
			if _, err := os.Stat(dir); err == nil {
				t.Error("option error left a directory behind")
			}
		})
	}

	// Directory problems.
	tmp := t.TempDir()
	if err := os.WriteFile(filepath.Join(tmp, "file"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{tmp, filepath.Join(tmp, "file"), filepath.Join(tmp, "file", "sub")} {
		if _, err := WriteOld(dir, baseOptions(tokens.TypeSoft)); err == nil {
			t.Errorf("%s accepted", dir)
		} else if !strings.Contains(err.Error(), tmp) {
			t.Errorf("error without the path: %v", err)
		}
	}
	empty := filepath.Join(tmp, "empty")
	if err := os.Mkdir(empty, 0o755); err != nil {
		t.Fatal(err)
	}
	g, err := WriteOld(empty, baseOptions(tokens.TypeSoft))
	if err != nil {
		t.Fatal(err)
	}
	checkRepo(t, baseOptions(tokens.TypeSoft), g)
}

// With a umask that leaves 0770/0660 alone, object files are created with 0660 directly
// instead of 0600 + fchmod; the result must be the same.
func TestWriteOldPermissiveUmask(t *testing.T) {
	old := syscall.Umask(0o007)
	defer syscall.Umask(old)
	o := baseOptions(tokens.TypeICA)
	o.N = 30
	g, err := WriteOld(filepath.Join(t.TempDir(), "repo"), o)
	if err != nil {
		t.Fatal(err)
	}
	checkRepo(t, o, g)
	syscall.Umask(0o077)
	g, err = WriteOld(filepath.Join(t.TempDir(), "repo"), o)
	if err != nil {
		t.Fatal(err)
	}
	checkRepo(t, o, g)
}

func TestWriteOldNoObjectList(t *testing.T) {
	o := baseOptions(tokens.TypeSoft)
	o.N, o.NoObjectList = 50, true
	g, err := WriteOld(t.TempDir(), o)
	if err != nil {
		t.Fatal(err)
	}
	if g.Objects != nil || g.Public+g.Private != 50 || g.Bytes == 0 {
		t.Errorf("objects %v, %d+%d, %d bytes", g.Objects != nil, g.Public, g.Private, g.Bytes)
	}
}
