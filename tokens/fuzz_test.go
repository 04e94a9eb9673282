package tokens

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// Fuzz targets: no input may panic. Seeds are the §11 vectors and real fixture files.

func fixtureSeeds(f *testing.F, glob string, extra ...any) {
	paths, _ := filepath.Glob(filepath.Join("testdata/fixtures", glob))
	for _, p := range paths {
		if b, err := os.ReadFile(p); err == nil && len(b) < 4096 {
			f.Add(append([]any{b}, extra...)...)
		}
	}
}

func FuzzParseNVToken(f *testing.F) {
	fixtureSeeds(f, "*/*/swtok/NVTOK.DAT")
	f.Add(make([]byte, NVTokOldSize))
	f.Fuzz(func(t *testing.T, b []byte) {
		nv, err := ParseNVToken(b)
		if err == nil {
			_ = nv.UserPINSet()
		}
	})
}

func FuzzDecryptOldMK(f *testing.F) {
	f.Add(unhex(f, "7bd25948deac0b37aabb660e6affaa22b3b7c77b7c0edd425b808416773099376d7f35c5e5cf4d5a0eeba398bc83b74e"), []byte(defaultSOPIN))
	f.Add(make([]byte, 88), []byte(""))
	f.Add([]byte{1, 2, 3}, []byte("x"))
	f.Fuzz(func(t *testing.T, file, pin []byte) {
		mk, err := DecryptOldMK(FileMKSO, file, pin)
		if err == nil && len(mk) != 24 && len(mk) != 64 {
			t.Fatalf("MK of %d bytes", len(mk))
		}
	})
}

func FuzzDecodeObject(f *testing.F) {
	flat := unhex(f, sampleFlat)
	oldKeys := &Keys{Format: FormatOld, OldMK: seq(0, 24)}
	newKeys := &Keys{Format: Format312, NewMK: seq(0x20, 32)}
	newPriv, _ := EncodePrivate312(sampleName, flat, newKeys.NewMK, bytes.NewReader(seq(0x40, 32)))
	f.Add(encodeOldPublic(flat), uint8(0))
	f.Add(encodeOldPrivate(f, flat, oldKeys.OldMK), uint8(1))
	f.Add(EncodePublic312(flat), uint8(0))
	f.Add(newPriv, uint8(2))
	fixtureSeeds(f, "soft-small/*/swtok/TOK_OBJ/OB*", uint8(0))
	f.Fuzz(func(t *testing.T, file []byte, which uint8) {
		var k *Keys
		switch which % 3 {
		case 1:
			k = oldKeys
		case 2:
			k = newKeys
		}
		o, err := DecodeObject(sampleName, file, k)
		if o == nil {
			t.Fatal("nil object")
		}
		if err == nil {
			_, _ = ParseFlattened(sampleName, o.Clear)
		}
		_, _, _, _ = ReencryptObject(sampleName, file, oldKeys, newKeys, bytes.NewReader(make([]byte, 32)))
	})
}

func FuzzParseFlattened(f *testing.F) {
	f.Add(unhex(f, sampleFlat))
	f.Add(newFlat(0, 1, sampleName).add(attr(ckaWrapTemplate, attr(ckaClass, u32(1)))).b)
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = ParseFlattened(sampleName, b)
	})
}

func FuzzParseIndex(f *testing.F) {
	f.Add([]byte("OB123456\nOBabcdef\n"))
	f.Add([]byte("\n\r\n../x\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		names := ParseIndex(b)
		n := 0
		for _, s := range names {
			n += len(s)
			_ = ValidObjectName(s)
		}
		if n > len(b) {
			t.Fatal("names longer than the input")
		}
	})
}
