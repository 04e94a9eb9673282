package tokens

import (
	"crypto/cipher"
	"crypto/subtle"
	"encoding/binary"
	"errors"
)

// AES key wrap, RFC 3394 §2.2, without padding and with the default IV A6A6A6A6A6A6A6A6.
// Used for MK_SO/MK_USER (§4.2) and the per-object key of a 3.12 private object (§5.4).

var keyWrapIV = [8]byte{0xA6, 0xA6, 0xA6, 0xA6, 0xA6, 0xA6, 0xA6, 0xA6}

// errKeyWrapIntegrity is returned when an unwrap gives an IV other than the default IV: the KEK
// is wrong or the wrapped data was changed.
var errKeyWrapIntegrity = errors.New("key unwrap integrity check failed")

var errKeyWrapLength = errors.New("key wrap input must be a multiple of 8 bytes, at least 16")

// keyWrap wraps plaintext (n ≥ 2 64-bit blocks) under the AES block kek; the result is
// len(plaintext)+8 bytes.
func keyWrap(kek cipher.Block, plaintext []byte) ([]byte, error) {
	if len(plaintext) < 16 || len(plaintext)%8 != 0 {
		return nil, errKeyWrapLength
	}
	n := len(plaintext) / 8
	out := make([]byte, 8+len(plaintext))
	copy(out[8:], plaintext)
	var buf [16]byte
	copy(buf[:8], keyWrapIV[:])
	for j := 0; j <= 5; j++ {
		for i := 1; i <= n; i++ {
			r := out[8*i : 8*i+8]
			copy(buf[8:], r)
			kek.Encrypt(buf[:], buf[:])
			t := uint64(n*j + i)
			binary.BigEndian.PutUint64(buf[:8], binary.BigEndian.Uint64(buf[:8])^t)
			copy(r, buf[8:])
		}
	}
	copy(out[:8], buf[:8])
	return out, nil
}

// keyUnwrap reverses keyWrap; the result is len(ciphertext)-8 bytes. An integrity failure is an
// error and no key material is returned.
func keyUnwrap(kek cipher.Block, ciphertext []byte) ([]byte, error) {
	if len(ciphertext) < 24 || len(ciphertext)%8 != 0 {
		return nil, errKeyWrapLength
	}
	n := len(ciphertext)/8 - 1
	out := make([]byte, 8*n)
	copy(out, ciphertext[8:])
	var buf [16]byte
	copy(buf[:8], ciphertext[:8])
	for j := 5; j >= 0; j-- {
		for i := n; i >= 1; i-- {
			r := out[8*(i-1) : 8*i]
			t := uint64(n*j + i)
			binary.BigEndian.PutUint64(buf[:8], binary.BigEndian.Uint64(buf[:8])^t)
			copy(buf[8:], r)
			kek.Decrypt(buf[:], buf[:])
			copy(r, buf[8:])
		}
	}
	if subtle.ConstantTimeCompare(buf[:8], keyWrapIV[:]) != 1 {
		clear(out)
		clear(buf[:])
		return nil, errKeyWrapIntegrity
	}
	clear(buf[:])
	return out, nil
}
