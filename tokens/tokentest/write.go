package tokentest

import (
	"bufio"
	"crypto/cipher"
	"crypto/des"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"math/rand/v2"
	"os"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/ocktools/pkcstok-migrate/tokens"
)

// NameStyle selects how object file names are made when an object has none.
type NameStyle int

const (
	// NameCounter gives the names of token libraries before 3.18: CounterName(0), (1), ...
	// = "00000000", "10000000", ...; NVTOK.DAT's name counter holds the next name.
	NameCounter NameStyle = iota
	// NameMkstemp gives names like 3.18+ libraries: "OB" + 6 characters of [A-Za-z0-9],
	// unique and deterministic from Seed; NVTOK.DAT's name counter is all zero bytes.
	NameMkstemp
)

// KeepClearMax is the largest object count for which Generated.Objects keeps the clear
// (flattened) bytes of each object. Above it only ClearSHA256 and the small fields are kept,
// so memory stays small for benchmark-sized repositories.
const KeepClearMax = 1000

// Limits on generated names.
const (
	maxCounterObjects = 2821109907456 // 36^8
	maxMkstempObjects = 56800235584   // 62^6
)

// Options describe the old-format repository WriteOld makes. The zero value is not usable:
// Type and SOPIN (and UserPIN unless UserPINUnset) are required.
type Options struct {
	Type tokens.Type // Soft, ICA, CCA or EP11

	// PINs (raw bytes, no NUL). NVTOK.DAT holds their SHA-1; MK_SO / MK_USER are
	// encrypted under keys derived from them.
	SOPIN, UserPIN string
	// UserPINUnset writes a token whose user PIN was never set: user_pin_sha = 20 ASCII '0',
	// no MK_USER, CKF_USER_PIN_INITIALIZED (0x8) clear. UserPIN must then be empty.
	UserPINUnset bool

	// MK88 writes legacy CCA 88-byte MK files (64-byte MK, §3.2), for any Type.
	MK88 bool
	// MK is the master key: 24 bytes (or 64 with MK88). When nil it is made from Seed:
	// Soft/ICA as a 3DES key with odd-parity bytes, CCA/EP11 as plain random bytes; a 64-byte
	// MK gets 24 such bytes followed by 40 zero bytes, as old libraries did.
	MK []byte

	Label string // token label, at most 32 bytes; "" means "tokentest"

	// Objects lists explicit objects. Alternatively N generates N objects, deterministic
	// from Seed: about 40 % public data, 40 % private data, 20 % private RSA keys (~1.3 KB
	// flattened on Soft/ICA). Set one of the two, not both.
	Objects []ObjectSpec
	N       int
	Seed    int64

	NameStyle NameStyle
	// NoObjIdx writes no TOK_OBJ/OBJ.IDX (a token on which no object was ever created);
	// it requires zero objects.
	NoObjIdx bool

	// Order is the byte order of the host-order fields (NVTOK.DAT integers, object total_len,
	// the flattened bodies): binary.BigEndian for a repository as a token on s390x writes it.
	// nil means little-endian, whatever machine the tests run on.
	Order ByteOrder

	// Workers is the number of goroutines writing object files; 0 means 4 × GOMAXPROCS.
	Workers int
	// NoObjectList leaves Generated.Objects nil (the counts are still filled).
	NoObjectList bool
}

// ObjectSpec is one explicit object. The flattened object gets, in this order: CKA_CLASS,
// CKA_TOKEN = true, CKA_PRIVATE, CKA_LABEL (if Label != ""), CKA_ID (if ID != nil), Attrs,
// then Value (if non-nil) as CKA_VALUE — or, for secret and private keys on CCA and EP11, as
// the secure-key blob CKA_IBM_OPAQUE.
type ObjectSpec struct {
	Name    string // "" takes the next name of Options.NameStyle; else exactly 8 bytes
	Private bool
	Class   uint32
	Label   string
	ID      []byte
	Attrs   []Attr
	Value   []byte
	// Flat, when non-nil, is used verbatim as the flattened object and every field above
	// except Name and Private is ignored (for tests with odd or broken bodies).
	Flat []byte
}

// GeneratedObject describes one object file WriteOld wrote.
type GeneratedObject struct {
	Name     string
	Private  bool
	Class    uint32
	Label    string
	ID       []byte
	FileSize int
	ClearLen int
	// Clear is the flattened object; nil when more than KeepClearMax objects were written.
	Clear       []byte
	ClearSHA256 [32]byte
}

// Generated is what WriteOld wrote.
type Generated struct {
	Dir     string
	Type    tokens.Type
	MK      []byte            // the whole MK (24 or 64 bytes); objects use MK[0:24]
	Objects []GeneratedObject // in OBJ.IDX order; nil with Options.NoObjectList
	Public  int
	Private int
	Bytes   int64 // total size of the object files
}

// WriteOld writes an old-format repository into dir, which must not exist or be empty:
// NVTOK.DAT, MK_SO, MK_USER (unless UserPINUnset), TOK_OBJ/, TOK_OBJ/OBJ.IDX (unless NoObjIdx)
// and one file per object. Files get mode 0660 and directories 0770; group and owner are
// left as they are. Option errors are reported before anything is created; a later I/O
// error leaves a partial repository behind. Objects are made and written by several
// goroutines one at a time, so memory does not grow with the object content (but
// Generated.Objects holds one small entry per object unless NoObjectList). The output is the
// same for the same Options.
func WriteOld(dir string, o Options) (*Generated, error) {
	count, err := o.validate()
	if err != nil {
		return nil, err
	}
	names, nextName, err := o.namer(count)
	if err != nil {
		return nil, err
	}
	mk := o.masterKey()
	block, err := des.NewTripleDESCipher(mk[:24])
	if err != nil {
		return nil, fmt.Errorf("master key: %w", err)
	}

	label := o.Label
	if label == "" {
		label = "tokentest"
	}
	var userPIN *string
	if !o.UserPINUnset {
		userPIN = &o.UserPIN
	}
	nv := DefaultNVTokenFields(o.Type, label, o.SOPIN, userPIN)
	if o.NameStyle == NameCounter {
		nv.NextObjectName = CounterName(nextName)
	}
	nvb, err := o.enc().OldNVToken(nv)
	if err != nil {
		return nil, err
	}

	if err := makeRepoDir(dir); err != nil {
		return nil, err
	}
	objDir := filepath.Join(dir, "TOK_OBJ")
	masked, err := mkdir(objDir)
	if err != nil {
		return nil, err
	}
	done, err := tokenGroup(dir, objDir)
	if err != nil {
		return nil, err
	}
	if err := writeFile(filepath.Join(dir, "NVTOK.DAT"), nvb, false); err != nil {
		return nil, err
	}
	if err := writeFile(filepath.Join(dir, "MK_SO"), EncodeOldMK(mk, o.SOPIN), false); err != nil {
		return nil, err
	}
	if !o.UserPINUnset {
		if err := writeFile(filepath.Join(dir, "MK_USER"), EncodeOldMK(mk, o.UserPIN), false); err != nil {
			return nil, err
		}
	}

	g := &Generated{Dir: dir, Type: o.Type, MK: mk}
	if !o.NoObjectList {
		g.Objects = make([]GeneratedObject, count)
	}
	if !o.NoObjIdx {
		if err := writeIndex(filepath.Join(objDir, "OBJ.IDX"), count, names); err != nil {
			return nil, err
		}
	}
	if err := o.writeObjects(objDir, count, names, block, !masked, g); err != nil {
		return nil, err
	}
	if err := done(); err != nil {
		return nil, err
	}
	return g, nil
}

// tokenGroup gives the repository the group a real token's files have, as the token library's
// set_perm rule does (doc/format.md §1.4; the 3.8.1 and 3.23 libraries leave root:pkcs11
// 0660): when run as root on a host with the group pkcs11, dirs get that group and, while the
// files are written, the setgid bit, so that every file gets it too. done clears the bit.
// Elsewhere (no root, no group) the group stays the creator's.
func tokenGroup(dirs ...string) (done func() error, err error) {
	done = func() error { return nil }
	g, lerr := user.LookupGroup("pkcs11")
	if os.Geteuid() != 0 || lerr != nil {
		return done, nil
	}
	gid, err := strconv.Atoi(g.Gid)
	if err != nil {
		return nil, fmt.Errorf("group pkcs11: gid %q: %w", g.Gid, err)
	}
	for _, d := range dirs {
		if err := os.Chown(d, -1, gid); err != nil {
			return nil, err
		}
		if err := os.Chmod(d, 0o770|os.ModeSetgid); err != nil {
			return nil, err
		}
	}
	return func() error {
		for _, d := range dirs {
			if err := os.Chmod(d, 0o770); err != nil {
				return err
			}
		}
		return nil
	}, nil
}

func (o *Options) validate() (int, error) {
	if !o.Type.Supported() {
		return 0, fmt.Errorf("tokentest: unsupported token type %v", o.Type)
	}
	if o.SOPIN == "" {
		return 0, errors.New("tokentest: SO PIN is empty")
	}
	if strings.IndexByte(o.SOPIN, 0) >= 0 || strings.IndexByte(o.UserPIN, 0) >= 0 {
		return 0, errors.New("tokentest: a PIN contains a NUL byte")
	}
	if o.UserPINUnset && o.UserPIN != "" {
		return 0, errors.New("tokentest: UserPIN given together with UserPINUnset")
	}
	if !o.UserPINUnset && o.UserPIN == "" {
		return 0, errors.New("tokentest: user PIN is empty (set UserPINUnset for a token without one)")
	}
	if len(o.Label) > 32 {
		return 0, fmt.Errorf("tokentest: label has %d bytes, at most 32 allowed", len(o.Label))
	}
	want := 24
	if o.MK88 {
		want = 64
	}
	if o.MK != nil && len(o.MK) != want {
		return 0, fmt.Errorf("tokentest: MK has %d bytes, want %d (MK88 = %v)", len(o.MK), want, o.MK88)
	}
	if o.N < 0 {
		return 0, fmt.Errorf("tokentest: negative object count %d", o.N)
	}
	if o.N > 0 && len(o.Objects) > 0 {
		return 0, errors.New("tokentest: set Objects or N, not both")
	}
	if o.Workers < 0 {
		return 0, fmt.Errorf("tokentest: negative worker count %d", o.Workers)
	}
	count := o.N
	if len(o.Objects) > 0 {
		count = len(o.Objects)
	}
	switch o.NameStyle {
	case NameCounter:
		if uint64(count) > maxCounterObjects {
			return 0, fmt.Errorf("tokentest: %d objects exceed the counter name space", count)
		}
	case NameMkstemp:
		if uint64(count) > maxMkstempObjects {
			return 0, fmt.Errorf("tokentest: %d objects exceed the mkstemp name space", count)
		}
	default:
		return 0, fmt.Errorf("tokentest: unknown name style %d", o.NameStyle)
	}
	if o.NoObjIdx && count > 0 {
		return 0, errors.New("tokentest: NoObjIdx needs zero objects (the token creates OBJ.IDX with the first object)")
	}
	return count, nil
}

// namer returns the function giving the i-th object name and the number of generated names
// used (the next value of the old name counter). Explicit names are checked; unnamed objects
// take the next generated name that no explicit object uses.
func (o *Options) namer(count int) (func(i int) string, uint64, error) {
	var gen func(i uint64) string
	if o.NameStyle == NameMkstemp {
		gen = mkstempNamer(o.Seed)
	} else {
		gen = CounterName
	}
	if len(o.Objects) == 0 {
		return func(i int) string { return gen(uint64(i)) }, uint64(count), nil
	}
	names := make([]string, count)
	seen := make(map[string]int, count)
	for i, s := range o.Objects {
		if s.Name == "" {
			continue
		}
		if err := checkName(s.Name); err != nil {
			return nil, 0, fmt.Errorf("tokentest: object %d: %w", i, err)
		}
		if j, dup := seen[s.Name]; dup {
			return nil, 0, fmt.Errorf("tokentest: objects %d and %d are both named %q", j, i, s.Name)
		}
		seen[s.Name] = i
		names[i] = s.Name
	}
	next := uint64(0)
	for i := range names {
		if names[i] != "" {
			continue
		}
		for {
			n := gen(next)
			next++
			if _, used := seen[n]; !used {
				names[i] = n
				seen[n] = i
				break
			}
		}
	}
	return func(i int) string { return names[i] }, next, nil
}

func checkName(n string) error {
	if len(n) != 8 {
		return fmt.Errorf("object name %q is not 8 bytes", n)
	}
	if strings.ContainsAny(n, "/\x00\n") {
		return fmt.Errorf("object name %q contains '/', NUL or newline", n)
	}
	if strings.HasSuffix(n, ".TMP") {
		return fmt.Errorf("object name %q looks like a temporary file", n)
	}
	return nil
}

// mkstempNamer maps i to "OB" + 6 base-62 digits of (a*i + c) mod 62^6. a is coprime with
// 62^6 (odd, not a multiple of 31), so the first 62^6 names are distinct without any table.
func mkstempNamer(seed int64) func(uint64) string {
	const m = maxMkstempObjects
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
	r := rand.New(rand.NewPCG(uint64(seed), 0x6d6b7374656d70)) // "mkstemp"
	a := r.Uint64N(m) | 1
	for a%31 == 0 {
		a = (a + 2) % m
	}
	c := r.Uint64N(m)
	return func(i uint64) string {
		hi, lo := bits.Mul64(a, i%m)
		v := (bits.Rem64(hi, lo, m) + c) % m
		var b [8]byte
		b[0], b[1] = 'O', 'B'
		for k := 7; k >= 2; k-- {
			b[k] = alphabet[v%62]
			v /= 62
		}
		return string(b[:])
	}
}

// masterKey returns o.MK or makes one from the seed (§3.2: Soft/ICA produce a 3DES key,
// CCA/EP11 draw random bytes; legacy 64-byte MKs carry only 24 random bytes).
func (o *Options) masterKey() []byte {
	if o.MK != nil {
		return append([]byte(nil), o.MK...)
	}
	n := 24
	if o.MK88 {
		n = 64
	}
	mk := make([]byte, n)
	src := newChaCha(o.Seed, 0, "tokentest-mk")
	_, _ = src.Read(mk[:24])
	if o.Type == tokens.TypeSoft || o.Type == tokens.TypeICA {
		for i := range mk[:24] {
			mk[i] = oddParity(mk[i])
		}
	}
	return mk
}

func oddParity(b byte) byte {
	b &^= 1
	ones := 0
	for v := b; v != 0; v &= v - 1 {
		ones++
	}
	if ones%2 == 0 {
		b |= 1
	}
	return b
}

// newChaCha is the deterministic random source for one purpose and index.
func newChaCha(seed int64, idx uint64, domain string) *rand.ChaCha8 {
	var s [32]byte
	binary.LittleEndian.PutUint64(s[0:], uint64(seed))
	binary.LittleEndian.PutUint64(s[8:], idx)
	copy(s[16:], domain)
	return rand.NewChaCha8(s)
}

func makeRepoDir(dir string) error {
	fi, err := os.Stat(dir)
	switch {
	case err == nil:
		if !fi.IsDir() {
			return fmt.Errorf("repository %s: not a directory", dir)
		}
		f, err := os.Open(dir)
		if err != nil {
			return err
		}
		_, err = f.Readdirnames(1)
		f.Close()
		if err == nil {
			return fmt.Errorf("repository %s: directory is not empty", dir)
		}
		if !errors.Is(err, io.EOF) {
			return err
		}
		if err := os.Chmod(dir, 0o770); err != nil {
			return err
		}
		return nil
	case errors.Is(err, os.ErrNotExist):
		if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
			return err
		}
		_, err := mkdir(dir)
		return err
	default:
		return err
	}
}

// mkdir makes a directory with mode exactly 0770. It reports whether the umask took bits
// away (then new files need an explicit chmod too).
func mkdir(path string) (masked bool, err error) {
	if err := os.Mkdir(path, 0o770); err != nil {
		return false, err
	}
	fi, err := os.Stat(path)
	if err != nil {
		return false, err
	}
	if fi.Mode().Perm() == 0o770 {
		return false, nil
	}
	if err := os.Chmod(path, 0o770); err != nil {
		return true, err
	}
	return true, nil
}

// writeFile creates a new file, writes data and makes sure its mode is 0660 (§1.4). Like the
// token library it creates the file with 0600 and then sets 0660, unless fast is set: then it
// creates it with 0660 directly (the caller knows the umask does not mask those bits).
//
// It uses raw system calls: os.OpenFile adds several fcntl and epoll calls per file, which
// for 100,000 object files cost more than the writing.
func writeFile(path string, data []byte, fast bool) error {
	perm := uint32(0o600)
	if fast {
		perm = 0o660
	}
	fd, err := syscall.Open(path, syscall.O_WRONLY|syscall.O_CREAT|syscall.O_EXCL|syscall.O_CLOEXEC, perm)
	for err == syscall.EINTR {
		fd, err = syscall.Open(path, syscall.O_WRONLY|syscall.O_CREAT|syscall.O_EXCL|syscall.O_CLOEXEC, perm)
	}
	if err != nil {
		return &os.PathError{Op: "open", Path: path, Err: err}
	}
	fail := func(op string, err error) error {
		syscall.Close(fd)
		return &os.PathError{Op: op, Path: path, Err: err}
	}
	for rest := data; len(rest) > 0; {
		n, err := syscall.Write(fd, rest)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return fail("write", err)
		}
		if n == 0 {
			return fail("write", io.ErrShortWrite)
		}
		rest = rest[n:]
	}
	if !fast {
		if err := syscall.Fchmod(fd, 0o660); err != nil {
			return fail("chmod", err)
		}
	}
	if err := syscall.Close(fd); err != nil {
		return &os.PathError{Op: "close", Path: path, Err: err}
	}
	return nil
}

func writeIndex(path string, count int, names func(int) string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 64<<10)
	for i := range count {
		w.WriteString(names(i))
		w.WriteByte('\n')
	}
	err = w.Flush()
	if err == nil {
		err = f.Chmod(0o660)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err // each an *fs.PathError naming path
}

// objectContent is one object before encoding.
type objectContent struct {
	class   uint32
	private bool
	label   string
	id      []byte
	attrs   []Attr
	flat    []byte // overrides class/attrs when non-nil
}

func (o *Options) writeObjects(objDir string, count int, names func(int) string, block cipher.Block, fast bool, g *Generated) error {
	workers := o.Workers
	if workers == 0 {
		workers = 4 * runtime.GOMAXPROCS(0) // mostly waiting for the file system
	}
	workers = min(workers, max(count, 1))
	keepClear := count <= KeepClearMax
	enc := o.enc()

	var (
		firstErr  error
		errOnce   sync.Once
		stop      = make(chan struct{})
		jobs      = make(chan int, 4*workers)
		wg        sync.WaitGroup
		nPub      atomic.Int64
		nPriv     atomic.Int64
		totalSize atomic.Int64
	)
	fail := func(err error) {
		errOnce.Do(func() { firstErr = err; close(stop) })
	}
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var flatBuf, fileBuf []byte
			for i := range jobs {
				select {
				case <-stop:
					continue // drain
				default:
				}
				name := names(i)
				c := o.content(i, name)
				flat := c.flat
				if flat == nil {
					flatBuf = enc.AppendFlatten(flatBuf[:0], c.class, name, c.attrs)
					flat = flatBuf
				}
				if c.private {
					fileBuf = enc.appendOldPrivate(fileBuf[:0], flat, block)
				} else {
					fileBuf = append(growCap(fileBuf[:0], 5+len(flat)), 0, 0, 0, 0, 0)
					enc.order().PutUint32(fileBuf, uint32(5+len(flat)))
					fileBuf = append(fileBuf, flat...)
				}
				if err := writeFile(filepath.Join(objDir, name), fileBuf, fast); err != nil {
					fail(err)
					continue
				}
				if c.private {
					nPriv.Add(1)
				} else {
					nPub.Add(1)
				}
				totalSize.Add(int64(len(fileBuf)))
				if g.Objects != nil {
					gobj := GeneratedObject{
						Name: name, Private: c.private, Class: c.class, Label: c.label, ID: c.id,
						FileSize: len(fileBuf), ClearLen: len(flat), ClearSHA256: sha256.Sum256(flat),
					}
					if c.flat != nil && len(flat) >= 4 {
						gobj.Class = enc.order().Uint32(flat)
					}
					if keepClear {
						gobj.Clear = append([]byte(nil), flat...)
					}
					g.Objects[i] = gobj
				}
			}
		}()
	}
dispatch:
	for i := range count {
		select {
		case jobs <- i:
		case <-stop:
			break dispatch
		}
	}
	close(jobs)
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	g.Public, g.Private, g.Bytes = int(nPub.Load()), int(nPriv.Load()), totalSize.Load()
	return nil
}

// enc is the Encoding of Options.Order.
func (o *Options) enc() Encoding { return Encoding{o.Order} }

// content builds object i: from Options.Objects, or generated from the seed.
func (o *Options) content(i int, name string) objectContent {
	if len(o.Objects) > 0 {
		return o.explicit(&o.Objects[i])
	}
	return generate(o.enc(), o.Type, o.Seed, i)
}

func secureKeyType(t tokens.Type) bool { return t == tokens.TypeCCA || t == tokens.TypeEP11 }

func (o *Options) explicit(s *ObjectSpec) objectContent {
	c := objectContent{class: s.Class, private: s.Private, label: s.Label, id: s.ID, flat: s.Flat}
	if s.Flat != nil {
		return c
	}
	attrs := make([]Attr, 0, 6+len(s.Attrs))
	attrs = append(attrs, o.enc().UlongAttr(CKAClass, uint64(s.Class)), BoolAttr(CKAToken, true), BoolAttr(CKAPrivate, s.Private))
	if s.Label != "" {
		attrs = append(attrs, StringAttr(CKALabel, s.Label))
	}
	if s.ID != nil {
		attrs = append(attrs, BytesAttr(CKAID, s.ID))
	}
	attrs = append(attrs, s.Attrs...)
	if s.Value != nil {
		t := CKAValue
		if secureKeyType(o.Type) && (s.Class == CKOSecretKey || s.Class == CKOPrivateKey) {
			t = CKAIBMOpaque
		}
		attrs = append(attrs, BytesAttr(t, s.Value))
	}
	c.attrs = attrs
	return c
}

// generate makes the i-th object of a generated repository. Everything comes from a random
// source seeded with (seed, i), so objects can be made in any order and on any goroutine.
//
// Mix: 40 % public data, 40 % private data, 20 % private RSA keys. Soft/ICA RSA keys carry
// clear 1536-bit components (~1.3 KB flattened); CCA/EP11 ones carry the modulus and a
// random CKA_IBM_OPAQUE blob (EP11 300–1000 bytes, CCA 800–1200) instead of the private
// components. Every eighth RSA key also has a nested CKA_UNWRAP_TEMPLATE and an 8-byte-per-
// entry CKA_ALLOWED_MECHANISMS, to exercise those parser paths.
func generate(enc Encoding, t tokens.Type, seed int64, i int) objectContent {
	src := newChaCha(seed, uint64(i), "tokentest-object")
	r := rand.New(src)
	bytesN := func(n int) []byte {
		b := make([]byte, n)
		_, _ = src.Read(b)
		return b
	}
	uid := make([]byte, 64)
	hex.Encode(uid, bytesN(32))

	kind := r.IntN(10)
	if kind < 8 {
		private := kind >= 4
		prefix := "pub-data-"
		if private {
			prefix = "priv-data-"
		}
		label := fmt.Sprintf("%s%06d", prefix, i)
		value := bytesN(16 + r.IntN(185))
		return objectContent{class: CKOData, private: private, label: label, attrs: []Attr{
			enc.UlongAttr(CKAClass, uint64(CKOData)),
			BoolAttr(CKAToken, true),
			BoolAttr(CKAPrivate, private),
			BoolAttr(CKAModifiable, true),
			BoolAttr(CKACopyable, true),
			BoolAttr(CKADestroyable, true),
			StringAttr(CKALabel, label),
			StringAttr(CKAApplication, "tokentest"),
			BytesAttr(CKAValue, value),
			BytesAttr(CKAUniqueID, uid),
		}}
	}

	label := fmt.Sprintf("rsa-%06d", i)
	id := bytesN(4)
	modulus := bytesN(192)
	modulus[0] |= 0x80
	attrs := make([]Attr, 0, 24)
	attrs = append(attrs,
		enc.UlongAttr(CKAClass, uint64(CKOPrivateKey)),
		enc.UlongAttr(CKAKeyType, uint64(CKKRSA)),
		BoolAttr(CKAToken, true),
		BoolAttr(CKAPrivate, true),
		BoolAttr(CKAModifiable, true),
		StringAttr(CKALabel, label),
		BytesAttr(CKAID, id),
		BytesAttr(CKAUniqueID, uid),
		BoolAttr(CKASensitive, true),
		BoolAttr(CKADecrypt, true),
		BoolAttr(CKASign, true),
		BoolAttr(CKAUnwrap, true),
		BoolAttr(CKAExtractable, false),
		BoolAttr(CKALocal, true),
		BoolAttr(CKANeverExtractable, true),
		BoolAttr(CKAAlwaysSensitive, true),
		enc.UlongAttr(CKAKeyGenMechanism, 0), // CKM_RSA_PKCS_KEY_PAIR_GEN
		BytesAttr(CKAModulus, modulus),
		BytesAttr(CKAPublicExponent, []byte{1, 0, 1}),
	)
	if secureKeyType(t) {
		n := 300 + r.IntN(701)
		if t == tokens.TypeCCA {
			n = 800 + r.IntN(401)
		}
		attrs = append(attrs, BytesAttr(CKAIBMOpaque, bytesN(n)))
	} else {
		attrs = append(attrs,
			BytesAttr(CKAPrivateExponent, bytesN(192)),
			BytesAttr(CKAPrime1, bytesN(96)),
			BytesAttr(CKAPrime2, bytesN(96)),
			BytesAttr(CKAExponent1, bytesN(96)),
			BytesAttr(CKAExponent2, bytesN(96)),
			BytesAttr(CKACoefficient, bytesN(96)),
		)
	}
	if r.IntN(8) == 0 {
		mechs := make([]byte, 16)
		enc.order().PutUint64(mechs[0:], 0x1)  // CKM_RSA_PKCS
		enc.order().PutUint64(mechs[8:], 0x40) // CKM_SHA256_RSA_PKCS
		attrs = append(attrs,
			BytesAttr(CKAAllowedMechs, mechs),
			NestedAttr(CKAUnwrapTemplate,
				enc.UlongAttr(CKAClass, uint64(CKOSecretKey)),
				enc.UlongAttr(CKAKeyType, uint64(CKKAES)),
				enc.UlongAttr(CKAValueLen, 32),
				BoolAttr(CKASensitive, true),
			),
		)
	}
	return objectContent{class: CKOPrivateKey, private: true, label: label, id: id, attrs: attrs}
}
