package tokens

import (
	"crypto/cipher"
	"crypto/des"
	"crypto/md5"
	"crypto/sha1"
	"crypto/subtle"
	"errors"
)

// Old format crypto (§3.1): 3DES-CBC, keys from MD5(PIN), SHA-1 integrity.

const (
	oldMKSize      = 48 // 24-byte MK
	oldMKSizeCCA   = 88 // legacy CCA: 64-byte MK
	oldMKLen       = 24
	oldMKLenCCA    = 64
	oldObjKeyLen   = 24 // only MK[0:24] is ever used as a key (§3.2)
	oldPrefixLen   = 5  // total_len u32 host ‖ private flag
	maxObjectLen   = 0x7FFFFFFF
	oldPrivOverhad = 4 + sha1.Size // N field and SHA-1 inside the plaintext
)

var (
	oldMKIV  = []byte("12345678")
	oldObjIV = []byte("10293847")
)

// ErrOldMKCheck is returned by DecryptOldMK when the SHA-1 inside the decrypted file does not
// match: the PIN is wrong or the file was changed (upstream says "appears to be tampered").
var ErrOldMKCheck = errors.New("master key check failed (wrong PIN or tampered file)")

// oldPINKey is MD5(pin) ‖ MD5(pin)[0:8], the 24-byte two-key 3DES key of §3.1.
func oldPINKey(pin []byte) []byte {
	h := md5.Sum(pin)
	k := make([]byte, 24)
	copy(k, h[:])
	copy(k[16:], h[:8])
	clear(h[:])
	return k
}

// DecryptOldMK decrypts an old-format MK_SO or MK_USER file (file is the name for errors) with a
// PIN and returns the full master key: 24 bytes for a 48-byte file, 64 for an 88-byte legacy CCA
// file (§3.2). Other sizes give a *CorruptError; a failed SHA-1 check gives ErrOldMKCheck.
func DecryptOldMK(file string, data, pin []byte) ([]byte, error) {
	var mkLen int
	switch len(data) {
	case oldMKSize:
		mkLen = oldMKLen
	case oldMKSizeCCA:
		mkLen = oldMKLenCCA
	default:
		return nil, corrupt(file, "unknown size of %d bytes, want %d or %d", len(data), oldMKSize, oldMKSizeCCA)
	}
	key := oldPINKey(pin)
	defer clear(key)
	blk, err := des.NewTripleDESCipher(key)
	if err != nil {
		return nil, err // cannot happen: the key is always 24 bytes
	}
	pt := make([]byte, len(data))
	cipher.NewCBCDecrypter(blk, oldMKIV).CryptBlocks(pt, data)
	sum := sha1.Sum(pt[:mkLen])
	ok := subtle.ConstantTimeCompare(sum[:], pt[mkLen:mkLen+sha1.Size]) == 1
	clear(sum[:])
	if !ok {
		clear(pt)
		return nil, ErrOldMKCheck
	}
	clear(pt[mkLen:])
	return pt[:mkLen:mkLen], nil
}

// decodeOld decodes an old object file (§5.2) whose host-order fields are in order ord. blk is
// the 3DES block of MK[0:24], or nil.
func decodeOld(file string, data []byte, ord ByteOrder, blk func() (cipher.Block, error), o *Object) error {
	if len(data) < oldPrefixLen {
		return corrupt(file, "file of %d bytes is shorter than the %d-byte object prefix", len(data), oldPrefixLen)
	}
	host := ord.Binary()
	total := uint64(host.Uint32(data))
	if total <= oldPrefixLen {
		return corrupt(file, "total_len is not above the %d-byte object prefix", oldPrefixLen)
	}
	if total > maxObjectLen {
		return corrupt(file, "total_len is not below 2^31")
	}
	if total > uint64(len(data)) {
		return corrupt(file, "total_len is past the end of the %d-byte file", len(data))
	}
	body := data[oldPrefixLen:total:total]
	o.Format = FormatOld
	o.Private = data[4] != 0
	if !o.Private {
		o.Clear = body
		return nil
	}
	if blk == nil {
		return ErrNeedKeys
	}
	if len(body)%des.BlockSize != 0 {
		return corrupt(file, "total_len gives a ciphertext that is not a multiple of %d bytes", des.BlockSize)
	}
	if len(body) < oldPrivOverhad {
		return corrupt(file, "total_len gives a ciphertext shorter than %d bytes", oldPrivOverhad)
	}
	b, err := blk()
	if err != nil {
		return err
	}
	pt := make([]byte, len(body))
	cipher.NewCBCDecrypter(b, oldObjIV).CryptBlocks(pt, body)
	n := uint64(host.Uint32(pt))
	if n >= uint64(len(pt)) || n > uint64(len(pt)-oldPrivOverhad) {
		clear(pt)
		return corrupt(file, "decrypted object data length does not fit the ciphertext (wrong master key or tampered)")
	}
	clearObj := pt[4 : 4+n : 4+n]
	sum := sha1.Sum(clearObj)
	if subtle.ConstantTimeCompare(sum[:], pt[4+n:4+n+sha1.Size]) != 1 {
		clear(pt)
		return corrupt(file, "stored hash does not match the decrypted object (wrong master key or tampered)")
	}
	o.Clear = clearObj
	return nil
}
