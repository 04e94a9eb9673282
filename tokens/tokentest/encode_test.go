package tokentest

import (
	"bytes"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ocktools/pkcstok-migrate/tokens"
)

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatalf("bad hex in test: %v", err)
	}
	return b
}

func seq(from, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(from + i)
	}
	return b
}

// §11.1
func TestPrimitiveVectors(t *testing.T) {
	cases := []struct{ name, got, want string }{
		{"SHA-1(87654321)", hex.EncodeToString(PINHash("87654321")), "a7d579ba76398070eae654c30ff153a4c273272a"},
		{"SHA-1(12345678)", hex.EncodeToString(PINHash("12345678")), "7c222fb2927d828af22f592134e8932480637c0d"},
		{"PINKey(87654321)", hex.EncodeToString(PINKey("87654321")), "5e8667a439c68f5145dd2fcbecf022095e8667a439c68f51"},
	}
	m1, m2 := md5.Sum([]byte("87654321")), md5.Sum([]byte("12345678"))
	cases = append(cases,
		struct{ name, got, want string }{"MD5(87654321)", hex.EncodeToString(m1[:]), "5e8667a439c68f5145dd2fcbecf02209"},
		struct{ name, got, want string }{"MD5(12345678)", hex.EncodeToString(m2[:]), "25d55ad283aa400af464c76d713c07ad"},
		struct{ name, got, want string }{"PINKey(12345678)", hex.EncodeToString(PINKey("12345678")), "25d55ad283aa400af464c76d713c07ad25d55ad283aa400a"},
	)
	for _, c := range cases {
		if c.got != c.want {
			t.Errorf("%s = %s, want %s", c.name, c.got, c.want)
		}
	}
}

// §11.2
func TestOldMKVectors(t *testing.T) {
	mk24, mk64 := seq(0, 24), seq(0, 64)
	cases := []struct {
		name string
		got  []byte
		want string
	}{
		{"MK_SO 24", EncodeOldMK(mk24, "87654321"), "7bd25948deac0b37aabb660e6affaa22b3b7c77b7c0edd425b808416773099376d7f35c5e5cf4d5a0eeba398bc83b74e"},
		{"MK_USER 24", EncodeOldMK(mk24, "12345678"), "ad5a0a63c09a7184e54dd8fe1859abcf9c9ed82f5d83bbc2ab07d5c6cbf4e845b87faea9a57d22597f3f1433ecd31fc7"},
		{"MK_SO 64 (CCA 88 bytes)", EncodeOldMK(mk64, "87654321"), "7bd25948deac0b37aabb660e6affaa22b3b7c77b7c0edd420f2419329f54beefad8ea8ed93f79f3a9674d0ac8f2ba1366db217ea8139f6615a4d45dfdfba862405928fd599c9955ee7b36811892bd7f76b2ea8c4b36ed3d5"},
	}
	for _, c := range cases {
		if got := hex.EncodeToString(c.got); got != c.want {
			t.Errorf("%s:\n got %s\nwant %s", c.name, got, c.want)
		}
	}
	if n := len(EncodeOldMK(mk24, "x")); n != 48 {
		t.Errorf("24-byte MK file is %d bytes", n)
	}
	if n := len(EncodeOldMK(mk64, "x")); n != 88 {
		t.Errorf("64-byte MK file is %d bytes", n)
	}
	// The plaintext row of §11.2: decrypting gives MK ‖ SHA-1(MK) ‖ 04040404.
	pt, err := tdesCBCDecrypt(PINKey("87654321"), []byte(MKIV), EncodeOldMK(mk24, "87654321"))
	if err != nil {
		t.Fatal(err)
	}
	if want := hex.EncodeToString(mk24) + "ed6a95036e3e046931597a457db7a78b7309c4c0" + "04040404"; hex.EncodeToString(pt) != want {
		t.Errorf("MK plaintext %x, want %s", pt, want)
	}
	if _, err := decodeOldMK(EncodeOldMK(mk24, "87654321"), "12345678"); err == nil {
		t.Error("MK_SO decrypted with the wrong PIN")
	}
}

const sampleFlatHex = "0000000004000000313030303030303000000000000000000400000000000000010000000000000001000000010200000000000000010000000103000000000000000400000074657374"

func sampleAttrs() []Attr {
	return []Attr{
		LE.UlongAttr(CKAClass, 0),
		BoolAttr(CKAToken, true),
		BoolAttr(CKAPrivate, true),
		StringAttr(CKALabel, "test"),
	}
}

// §11.3
func TestSampleObjectVectors(t *testing.T) {
	flat := LE.Flatten(CKOData, "10000000", sampleAttrs())
	if got := hex.EncodeToString(flat); got != sampleFlatHex || len(flat) != 74 {
		t.Fatalf("flattened (%d bytes):\n got %s\nwant %s", len(flat), got, sampleFlatHex)
	}
	if FlattenedSize(sampleAttrs()) != 74 {
		t.Errorf("FlattenedSize = %d", FlattenedSize(sampleAttrs()))
	}
	pub := LE.EncodeOldPublic(flat)
	if got, want := hex.EncodeToString(pub), "4f00000000"+sampleFlatHex; got != want || len(pub) != 79 {
		t.Errorf("old public:\n got %s\nwant %s", got, want)
	}
	priv, err := LE.EncodeOldPrivate(flat, seq(0, 24))
	if err != nil {
		t.Fatal(err)
	}
	const wantPriv = "6d000000010cc613b912cead2e740762b73838c74a4a082cf48d2b5e3eb52b3d73fb767b5bb3578c958b149496808889cf874c6ff613f2e473470e89db7071eb41da6aec0a276995f60a29bbafcf31847e9e80c15442d504a9ceb1775989c21c078aa021f8493718e7420db62b"
	if got := hex.EncodeToString(priv); got != wantPriv || len(priv) != 109 {
		t.Errorf("old private:\n got %s\nwant %s", got, wantPriv)
	}
	// A 64-byte MK encrypts with its first 24 bytes.
	priv64, err := LE.EncodeOldPrivate(flat, seq(0, 64))
	if err != nil || !bytes.Equal(priv64, priv) {
		t.Errorf("64-byte MK: %v, equal=%v", err, bytes.Equal(priv64, priv))
	}
	if _, err := LE.EncodeOldPrivate(flat, seq(0, 16)); err == nil {
		t.Error("16-byte MK accepted")
	}
}

func TestFlattenSpecialCases(t *testing.T) {
	for _, ty := range []uint32{CKAClass, CKAKeyType, CKACertificateType, CKAModulusBits, CKAValueBits, CKAValueLen} {
		if a := LE.UlongAttr(ty, 7); len(a.Value) != 4 || a.Value[0] != 7 {
			t.Errorf("attr %#x: value % x, want 4 bytes", ty, a.Value)
		}
	}
	for _, ty := range []uint32{CKAKeyGenMechanism, 0x40000600, 0x80000002} {
		if a := LE.UlongAttr(ty, 7); len(a.Value) != 8 || a.Value[0] != 7 {
			t.Errorf("attr %#x: value % x, want 8 bytes", ty, a.Value)
		}
	}
	nested := NestedAttr(CKAWrapTemplate, LE.UlongAttr(CKAClass, 4), BoolAttr(CKAToken, true))
	flat := LE.Flatten(CKOSecretKey, "OBabcdef", []Attr{nested})
	// header 16 + record header 12 + nested (16 + 13)
	if len(flat) != 16+12+29 {
		t.Fatalf("nested flat is %d bytes", len(flat))
	}
	if l := flat[16+8]; l != 29 {
		t.Errorf("nested L = %d, want 29", l)
	}
	empty := LE.Flatten(CKOSecretKey, "OBabcdef", []Attr{NestedAttr(CKADeriveTemplate)})
	if len(empty) != 28 || empty[24] != 0 {
		t.Errorf("empty template: % x", empty)
	}
	if short := LE.Flatten(0, "abc", nil); !bytes.Equal(short[8:16], []byte("abc\x00\x00\x00\x00\x00")) {
		t.Errorf("short name: % x", short[8:16])
	}
}

func TestCounterName(t *testing.T) {
	for i, want := range map[uint64]string{0: "00000000", 1: "10000000", 7: "70000000", 10: "A0000000", 35: "Z0000000", 36: "01000000", 37: "11000000", 36*36 + 2: "20100000"} {
		if got := CounterName(i); got != want {
			t.Errorf("CounterName(%d) = %s, want %s", i, got, want)
		}
	}
}

// fixture is the part of fixture.json the tests use.
type fixture struct {
	SOPIN      string `json:"so_pin"`
	UserPIN    string `json:"user_pin"`
	TokenLabel string `json:"token_label"`
	Objects    []struct {
		File           string `json:"file"`
		Private        bool   `json:"private"`
		ClearLen       int    `json:"clear_len"`
		ClearSHA256    string `json:"clear_sha256"`
		BeforeFileSize int    `json:"before_file_size"`
	} `json:"objects"`
}

const fixturesDir = "../testdata/fixtures"

func loadFixture(t *testing.T, name string) (*fixture, string) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(fixturesDir, name, "fixture.json"))
	if err != nil {
		t.Fatalf("fixture %s: %v", name, err)
	}
	var f fixture
	if err := json.Unmarshal(raw, &f); err != nil {
		t.Fatalf("fixture %s: %v", name, err)
	}
	return &f, filepath.Join(fixturesDir, name, "before", "swtok")
}

var oldFixtures = []string{"soft-small", "soft-mixed20", "deb381-soft", "deb381-pkcs11tool", "soft-emptied-0-objects", "soft-never-used-no-objidx", "synthetic-cca-mk88"}

// The writer must reproduce the real token's files byte for byte: decrypt each real MK file
// and object, encode it again with this package, compare.
func TestFixturesReencodeIdentically(t *testing.T) {
	// the fixtures were written on x86_64: little-endian, the default encoding
	for _, name := range oldFixtures {
		t.Run(name, func(t *testing.T) {
			f, dir := loadFixture(t, name)
			read := func(p string) []byte {
				t.Helper()
				b, err := os.ReadFile(filepath.Join(dir, p))
				if err != nil {
					t.Fatal(err)
				}
				return b
			}
			mkSO, mkUser := read("MK_SO"), read("MK_USER")
			mk, err := decodeOldMK(mkSO, f.SOPIN)
			if err != nil {
				t.Fatalf("MK_SO: %v", err)
			}
			mk2, err := decodeOldMK(mkUser, f.UserPIN)
			if err != nil || !bytes.Equal(mk, mk2) {
				t.Fatalf("MK_USER: %v, same MK %v", err, bytes.Equal(mk, mk2))
			}
			if !bytes.Equal(EncodeOldMK(mk, f.SOPIN), mkSO) {
				t.Error("EncodeOldMK(SO) differs from the real MK_SO")
			}
			if !bytes.Equal(EncodeOldMK(mk, f.UserPIN), mkUser) {
				t.Error("EncodeOldMK(user) differs from the real MK_USER")
			}
			for _, o := range f.Objects {
				file := read("TOK_OBJ/" + o.File)
				flat, private, err := decodeOldObject(file, mk)
				if err != nil {
					t.Fatalf("%s: %v", o.File, err)
				}
				if sum := sha256.Sum256(flat); hex.EncodeToString(sum[:]) != o.ClearSHA256 || private != o.Private {
					t.Fatalf("%s: clear sha/private flag differ from fixture.json", o.File)
				}
				want := OldPublicSize(len(flat))
				var re []byte
				if private {
					want = OldPrivateSize(len(flat))
					re, err = LE.EncodeOldPrivate(flat, mk)
					if err != nil {
						t.Fatal(err)
					}
				} else {
					re = LE.EncodeOldPublic(flat)
				}
				if len(file) != want || o.BeforeFileSize != want {
					t.Errorf("%s: size %d, formula %d", o.File, len(file), want)
				}
				if !bytes.Equal(re, file) {
					t.Errorf("%s: re-encoded object differs from the real file", o.File)
				}
				class, oname, attrs, err := parseFlat(flat)
				if err != nil || oname != o.File {
					t.Fatalf("%s: parse: %v, name %q", o.File, err, oname)
				}
				if !bytes.Equal(LE.Flatten(class, oname, attrs), flat) {
					t.Errorf("%s: Flatten of the parsed records differs", o.File)
				}
			}
		})
	}
}

// The 3.27 fixtures' NVTOK.DAT is exactly DefaultNVTokenFields; the 3.8.1 one with its values.
func TestFixtureNVToken(t *testing.T) {
	for _, name := range []string{"soft-small", "soft-mixed20", "soft-emptied-0-objects", "soft-never-used-no-objidx", "synthetic-cca-mk88"} {
		f, dir := loadFixture(t, name)
		real, err := os.ReadFile(filepath.Join(dir, "NVTOK.DAT"))
		if err != nil {
			t.Fatal(err)
		}
		got, err := LE.OldNVToken(DefaultNVTokenFields(tokens.TypeSoft, f.TokenLabel, f.SOPIN, &f.UserPIN))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, real) {
			t.Errorf("%s: NVTOK.DAT differs:\n got %x\nreal %x", name, got, real)
		}
	}

	f, dir := loadFixture(t, "deb381-soft")
	real, err := os.ReadFile(filepath.Join(dir, "NVTOK.DAT"))
	if err != nil {
		t.Fatal(err)
	}
	nv := DefaultNVTokenFields(tokens.TypeSoft, f.TokenLabel, f.SOPIN, &f.UserPIN)
	nv.ManufacturerID, nv.Model, nv.SerialNumber = "IBM Corp.", "IBM SoftTok", "123"
	nv.Counters = [10]uint32{unavailable, unavailable, unavailable, unavailable, 8, 4, unavailable, unavailable, unavailable, unavailable}
	nv.HardwareVersion, nv.FirmwareVersion = [2]uint8{1, 0}, [2]uint8{1, 0}
	nv.Flags = FlagsUsable &^ FlagDualCrypto // 3.8.1 writes 0x44D
	nv.NextObjectName = CounterName(7)
	got, err := LE.OldNVToken(nv)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, real) {
		t.Errorf("deb381-soft: NVTOK.DAT differs:\n got %x\nreal %x", got, real)
	}
}

func TestOldNVTokenErrors(t *testing.T) {
	good := DefaultNVTokenFields(tokens.TypeEP11, "x", "so", nil)
	b, err := LE.OldNVToken(good)
	if err != nil || len(b) != NVTokenSize {
		t.Fatalf("good fields: %v, %d bytes", err, len(b))
	}
	if string(b[160:180]) != UnsetPINHash || good.Flags&FlagUserPINInitialized != 0 {
		t.Error("unset user PIN not encoded")
	}
	if string(b[64:80]) != "EP11            " {
		t.Errorf("model %q", b[64:80])
	}
	bad := []func(*NVTokenFields){
		func(f *NVTokenFields) { f.Label = strings.Repeat("L", 33) },
		func(f *NVTokenFields) { f.Model = strings.Repeat("M", 17) },
		func(f *NVTokenFields) { f.UTCTime = strings.Repeat("1", 17) },
		func(f *NVTokenFields) { f.SOPINSHA = nil },
		func(f *NVTokenFields) { f.UserPINSHA = make([]byte, 24) },
		func(f *NVTokenFields) { f.NextObjectName = "123" },
	}
	for i, mod := range bad {
		f := good
		mod(&f)
		if _, err := LE.OldNVToken(f); err == nil {
			t.Errorf("bad case %d accepted", i)
		}
	}
}

func TestOldConf(t *testing.T) {
	got, err := OldConf(3, tokens.TypeSoft)
	if err != nil {
		t.Fatal(err)
	}
	if want := "version opencryptoki-3.11\n\nslot 3 {\n  stdll = libpkcs11_sw.so\n}\n"; string(got) != want {
		t.Errorf("conf %q", got)
	}
	if _, err := OldConf(1024, tokens.TypeSoft); err == nil {
		t.Error("slot 1024 accepted")
	}
	if _, err := OldConf(0, tokens.TypeUnknown); err == nil {
		t.Error("unknown type accepted")
	}
}
