package tokentest

// A minimal old-format decoder, for the tests only: it lets the tests check that what the
// writer produces decrypts back (and that the real fixtures re-encode to the same bytes).

import (
	"bytes"
	"crypto/cipher"
	"crypto/des"
	"crypto/sha1"
	"encoding/binary"
	"fmt"
)

func tdesCBCDecrypt(key, iv, ct []byte) ([]byte, error) {
	if len(ct)%8 != 0 {
		return nil, fmt.Errorf("ciphertext length %d not a multiple of 8", len(ct))
	}
	block, err := des.NewTripleDESCipher(key)
	if err != nil {
		return nil, err
	}
	pt := make([]byte, len(ct))
	cipher.NewCBCDecrypter(block, iv).CryptBlocks(pt, ct)
	return pt, nil
}

// decodeOldMK decrypts an MK file (48 or 88 bytes) and checks its SHA-1.
func decodeOldMK(file []byte, pin string) ([]byte, error) {
	var n int
	switch len(file) {
	case 48:
		n = 24
	case 88:
		n = 64
	default:
		return nil, fmt.Errorf("MK file size %d", len(file))
	}
	pt, err := tdesCBCDecrypt(PINKey(pin), []byte(MKIV), file)
	if err != nil {
		return nil, err
	}
	sum := sha1.Sum(pt[:n])
	if !bytes.Equal(sum[:], pt[n:n+20]) {
		return nil, fmt.Errorf("MK hash mismatch")
	}
	for _, p := range pt[n+20:] {
		if p != 4 {
			return nil, fmt.Errorf("MK padding byte %#x", p)
		}
	}
	return pt[:n], nil
}

// decodeOldObject returns the flattened bytes of an old object file.
// Its host-order fields are little-endian, the default encoding (decodeOldObjectIn for others).
func decodeOldObject(file, mk []byte) (flat []byte, private bool, err error) {
	return decodeOldObjectIn(binary.LittleEndian, file, mk)
}

func decodeOldObjectIn(ne binary.ByteOrder, file, mk []byte) (flat []byte, private bool, err error) {
	if len(file) < 5 {
		return nil, false, fmt.Errorf("short file")
	}
	total := int(ne.Uint32(file))
	if total != len(file) || total <= 5 {
		return nil, false, fmt.Errorf("total_len %d, file size %d", total, len(file))
	}
	switch file[4] {
	case 0:
		return file[5:], false, nil
	case 1:
	default:
		return nil, false, fmt.Errorf("private flag %d", file[4])
	}
	pt, err := tdesCBCDecrypt(mk[:24], []byte(ObjectIV), file[5:])
	if err != nil {
		return nil, true, err
	}
	n := int(ne.Uint32(pt))
	if n+24 > len(pt) {
		return nil, true, fmt.Errorf("N %d too large for %d bytes", n, len(pt))
	}
	flat = pt[4 : 4+n]
	sum := sha1.Sum(flat)
	if !bytes.Equal(sum[:], pt[4+n:24+n]) {
		return nil, true, fmt.Errorf("object hash mismatch")
	}
	pad := pt[24+n:]
	if len(pad) < 1 || len(pad) > 8 {
		return nil, true, fmt.Errorf("padding length %d", len(pad))
	}
	for _, p := range pad {
		if int(p) != len(pad) {
			return nil, true, fmt.Errorf("bad padding % x", pad)
		}
	}
	return flat, true, nil
}

// parseFlat splits a flattened object into its header fields and raw top-level records
// (nested templates stay raw bytes, which still re-flatten to the same bytes).
func parseFlat(flat []byte) (class uint32, name string, attrs []Attr, err error) {
	return parseFlatIn(binary.LittleEndian, flat)
}

func parseFlatIn(ne binary.ByteOrder, flat []byte) (class uint32, name string, attrs []Attr, err error) {
	if len(flat) < 16 {
		return 0, "", nil, fmt.Errorf("flattened object of %d bytes", len(flat))
	}
	class = ne.Uint32(flat)
	count := int(ne.Uint32(flat[4:]))
	name = string(flat[8:16])
	rest := flat[16:]
	for i := range count {
		if len(rest) < 12 {
			return 0, "", nil, fmt.Errorf("record %d: header out of bounds", i)
		}
		t, l := ne.Uint32(rest), int(ne.Uint32(rest[8:]))
		if ne.Uint32(rest[4:]) != 0 {
			return 0, "", nil, fmt.Errorf("record %d: pointer slot not zero", i)
		}
		if l > len(rest)-12 {
			return 0, "", nil, fmt.Errorf("record %d: value out of bounds", i)
		}
		attrs = append(attrs, Attr{Type: t, Value: rest[12 : 12+l]})
		rest = rest[12+l:]
	}
	if len(rest) != 0 {
		return 0, "", nil, fmt.Errorf("%d trailing bytes", len(rest))
	}
	return class, name, attrs, nil
}

func findAttr(attrs []Attr, t uint32) (Attr, bool) {
	for _, a := range attrs {
		if a.Type == t {
			return a, true
		}
	}
	return Attr{}, false
}
