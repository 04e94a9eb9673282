package tokens

import (
	"bytes"
	"encoding/binary"
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

// swapNVTok is an old NVTOK.DAT with its 15 integers in the other byte order.
func swapNVTok(b []byte) []byte {
	s := bytes.Clone(b)
	for _, f := range nvtokIntFields {
		binary.BigEndian.PutUint32(s[f.off:], binary.LittleEndian.Uint32(b[f.off:]))
	}
	return s
}

func FuzzParseNVToken(f *testing.F) {
	fixtureSeeds(f, "*/*/swtok/NVTOK.DAT")
	if b, err := os.ReadFile("testdata/fixtures/soft-small/before/swtok/NVTOK.DAT"); err == nil {
		f.Add(swapNVTok(b)) // big-endian
	}
	f.Add(make([]byte, NVTokOldSize))
	f.Fuzz(func(t *testing.T, b []byte) {
		nv, err := ParseNVToken(b)
		if err == nil {
			_ = nv.UserPINSet()
			if nv.Format == FormatOld {
				// The swapped file must be found in the other order with the same values.
				sw, err := ParseNVToken(swapNVTok(b))
				if err != nil || sw.Order != nv.Order.Other() || sw.Info != nv.Info {
					t.Fatalf("byte-swapped NVTOK.DAT: order %v vs %v, err %v", sw.Order, nv.Order, err)
				}
			}
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
	// Big-endian seeds (which/3 picks the order given: unknown, little-, big-endian).
	flatBE := swapFlat(f, flat)
	pubBE := append(binary.BigEndian.AppendUint32(nil, uint32(5+len(flatBE))), 0)
	f.Add(append(pubBE, flatBE...), uint8(6))
	f.Add(EncodePublic312(flatBE), uint8(3))
	f.Fuzz(func(t *testing.T, file []byte, which uint8) {
		var k *Keys
		switch which % 3 {
		case 1:
			k = oldKeys
		case 2:
			k = newKeys
		}
		ord := ByteOrder(which / 3 % 3)
		o, err := DecodeObjectOrder(sampleName, file, ord, k)
		if o == nil {
			t.Fatal("nil object")
		}
		if err == nil {
			if ord != OrderUnknown && o.Order == ord.Other() {
				t.Fatalf("decoded in %v but shows %v", ord, o.Order)
			}
			_, _ = ParseFlattenedOrder(sampleName, o.Clear, o.Order)
		}
		_, _ = Reencrypt(sampleName, file, ord, oldKeys, newKeys, bytes.NewReader(make([]byte, 32)))
	})
}

func FuzzParseFlattened(f *testing.F) {
	f.Add(unhex(f, sampleFlat), uint8(0))
	f.Add(swapFlat(f, unhex(f, sampleFlat)), uint8(2))
	f.Add(newFlat(0, 1, sampleName).add(attr(ckaWrapTemplate, attr(ckaClass, u32(1)))).b, uint8(1))
	f.Fuzz(func(t *testing.T, b []byte, which uint8) {
		a, err := ParseFlattenedOrder(sampleName, b, ByteOrder(which%3))
		if err == nil && which%3 == 0 && a.Order != OrderUnknown {
			// What was found from the object itself must parse the same when given.
			if b, err := ParseFlattenedOrder(sampleName, b, a.Order); err != nil || !sameAttrs(a, b) {
				t.Fatalf("order %v found, then refused: %v", a.Order, err)
			}
		}
	})
}

// swapFlat re-encodes the little-endian §11.3 sample object big-endian: header, record headers
// and the 4-byte CKA_CLASS value.
func swapFlat(f *testing.F, le []byte) []byte {
	a, err := parseFlattened(sampleName, le, LittleEndian)
	if err != nil {
		f.Fatal(err)
	}
	out := binary.BigEndian.AppendUint32(nil, a.HeaderClass)
	out = binary.BigEndian.AppendUint32(out, a.Count)
	out = append(out, le[8:16]...)
	rest := le[16:]
	for len(rest) >= 12 {
		typ, l := binary.LittleEndian.Uint32(rest), binary.LittleEndian.Uint32(rest[8:])
		val := rest[12 : 12+l]
		out = binary.BigEndian.AppendUint32(out, typ)
		out = binary.BigEndian.AppendUint32(out, 0)
		out = binary.BigEndian.AppendUint32(out, l)
		if is32BitAttr(typ) && l == 4 {
			out = binary.BigEndian.AppendUint32(out, binary.LittleEndian.Uint32(val))
		} else {
			out = append(out, val...)
		}
		rest = rest[12+l:]
	}
	return out
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
