// Package tokentest writes old-format (pre-3.12) openCryptoki token repositories for tests and
// benchmarks.
//
// It is a second, independent implementation of the old-format writer, made from the spec
// (doc/format.md §2, §3, §5, §6) with the Go standard library only, so that it can
// cross-check the reader in package tokens. It deliberately imports nothing from tokens
// except tokens.Type.
//
// Host-order fields are written in the byte order of an Encoding: LE (what the package-level
// functions and a zero Options use, the order of the spec's §11 vectors and of x86_64, ppc64le
// and aarch64 hosts) or BE (what a token on s390x writes), whatever the order of the machine the
// tests run on.
package tokentest

import (
	"crypto/cipher"
	"crypto/des"
	"crypto/md5"
	"crypto/sha1"
	"encoding/binary"
	"fmt"
	"strings"

	"github.com/ocktools/pkcstok-migrate/tokens"
)

// Old-format constants (§3.1).
const (
	MKIV        = "12345678" // IV of MK_SO / MK_USER
	ObjectIV    = "10293847" // IV of private objects
	NVTokenSize = 232        // old NVTOK.DAT size (§2.2)
	// UnsetPINHash is what user_pin_sha holds while the user PIN was never set.
	UnsetPINHash = "00000000000000000000"
)

// Attribute types used by the generator (PKCS#11 CKA_* values).
const (
	CKAClass            uint32 = 0x000
	CKAToken            uint32 = 0x001
	CKAPrivate          uint32 = 0x002
	CKALabel            uint32 = 0x003
	CKAUniqueID         uint32 = 0x004
	CKAApplication      uint32 = 0x010
	CKAValue            uint32 = 0x011
	CKACertificateType  uint32 = 0x080
	CKAKeyType          uint32 = 0x100
	CKAID               uint32 = 0x102
	CKASensitive        uint32 = 0x103
	CKAEncrypt          uint32 = 0x104
	CKADecrypt          uint32 = 0x105
	CKAWrap             uint32 = 0x106
	CKAUnwrap           uint32 = 0x107
	CKASign             uint32 = 0x108
	CKAModulus          uint32 = 0x120
	CKAModulusBits      uint32 = 0x121
	CKAPublicExponent   uint32 = 0x122
	CKAPrivateExponent  uint32 = 0x123
	CKAPrime1           uint32 = 0x124
	CKAPrime2           uint32 = 0x125
	CKAExponent1        uint32 = 0x126
	CKAExponent2        uint32 = 0x127
	CKACoefficient      uint32 = 0x128
	CKAValueBits        uint32 = 0x160
	CKAValueLen         uint32 = 0x161
	CKAExtractable      uint32 = 0x162
	CKALocal            uint32 = 0x163
	CKANeverExtractable uint32 = 0x164
	CKAAlwaysSensitive  uint32 = 0x165
	CKAKeyGenMechanism  uint32 = 0x166
	CKAModifiable       uint32 = 0x170
	CKACopyable         uint32 = 0x171
	CKADestroyable      uint32 = 0x172
	CKAWrapTemplate     uint32 = 0x40000211
	CKAUnwrapTemplate   uint32 = 0x40000212
	CKADeriveTemplate   uint32 = 0x40000213
	CKAAllowedMechs     uint32 = 0x40000600
	CKAIBMOpaque        uint32 = 0x80000001
)

// Object classes (CKO_*).
const (
	CKOData        uint32 = 0
	CKOCertificate uint32 = 1
	CKOPublicKey   uint32 = 2
	CKOPrivateKey  uint32 = 3
	CKOSecretKey   uint32 = 4
)

// Key types (CKK_*).
const (
	CKKRSA           uint32 = 0x00
	CKKGenericSecret uint32 = 0x10
	CKKAES           uint32 = 0x1f
)

// Is32Bit reports whether the attribute is one of the unsigned longs stored as 4 bytes in a
// flattened object (§5.1).
func Is32Bit(t uint32) bool {
	switch t {
	case CKAClass, CKAKeyType, CKACertificateType, CKAModulusBits, CKAValueBits, CKAValueLen:
		return true
	}
	return false
}

// Attr is one attribute record of a flattened object. Value holds the raw value bytes. When
// Nested is non-nil the record is a nested template (§5.1): Value is ignored and the value is
// the flattened encoding of Nested.
type Attr struct {
	Type   uint32
	Value  []byte
	Nested []Attr
}

// BytesAttr is an attribute with raw bytes (labels, IDs, key material, blobs).
func BytesAttr(t uint32, v []byte) Attr { return Attr{Type: t, Value: v} }

// StringAttr is an attribute whose value is the bytes of s (no terminating NUL).
func StringAttr(t uint32, s string) Attr { return Attr{Type: t, Value: []byte(s)} }

// BoolAttr is a CK_BBOOL attribute (1 byte).
func BoolAttr(t uint32, v bool) Attr {
	if v {
		return Attr{Type: t, Value: []byte{1}}
	}
	return Attr{Type: t, Value: []byte{0}}
}

// Encoding writes the host-order fields of the old format and of flattened objects in one
// byte order: the order of the machine a repository is meant for.
type Encoding struct{ Order ByteOrder }

// ByteOrder is what binary.LittleEndian and binary.BigEndian are.
type ByteOrder interface {
	binary.ByteOrder
	binary.AppendByteOrder
}

// LE and BE are the encodings of little-endian and big-endian (s390x) token repositories.
var (
	LE = Encoding{binary.LittleEndian}
	BE = Encoding{binary.BigEndian}
)

func (e Encoding) order() ByteOrder {
	if e.Order == nil {
		return binary.LittleEndian
	}
	return e.Order
}

// UlongAttr is an unsigned-long attribute in host order: 4 bytes for the special-case types
// of Is32Bit, 8 bytes for every other type (§5.1). A value that does not fit into 32 bits is
// truncated for the 4-byte types.
func (e Encoding) UlongAttr(t uint32, v uint64) Attr {
	if Is32Bit(t) {
		b := make([]byte, 4)
		e.order().PutUint32(b, uint32(v))
		return Attr{Type: t, Value: b}
	}
	b := make([]byte, 8)
	e.order().PutUint64(b, v)
	return Attr{Type: t, Value: b}
}

// NestedAttr is a template attribute (CKA_WRAP_TEMPLATE etc.) holding the given records.
func NestedAttr(t uint32, nested ...Attr) Attr {
	n := make([]Attr, len(nested))
	copy(n, nested)
	return Attr{Type: t, Nested: n}
}

func attrsSize(attrs []Attr) int {
	n := 0
	for i := range attrs {
		n += 12 + attrValueSize(&attrs[i])
	}
	return n
}

func attrValueSize(a *Attr) int {
	if a.Nested != nil {
		return attrsSize(a.Nested)
	}
	return len(a.Value)
}

func (e Encoding) appendAttrs(b []byte, attrs []Attr) []byte {
	ne := e.order()
	for i := range attrs {
		a := &attrs[i]
		b = ne.AppendUint32(b, a.Type)
		b = ne.AppendUint32(b, 0) // pointer slot, always 0 on disk
		b = ne.AppendUint32(b, uint32(attrValueSize(a)))
		if a.Nested != nil {
			b = e.appendAttrs(b, a.Nested)
		} else {
			b = append(b, a.Value...)
		}
	}
	return b
}

// FlattenedSize is len(Flatten(class, name, attrs)).
func FlattenedSize(attrs []Attr) int { return 16 + attrsSize(attrs) }

// Flatten encodes a flattened object (§5.1) in host order: class, attribute count, the 8-byte
// name, then the records exactly as given (the caller includes CKA_CLASS etc. itself; the count
// is len(attrs)). The name is written as exactly 8 bytes: a shorter name is padded with NUL
// bytes and a longer one cut, which only makes sense for tests of corrupt data.
func (e Encoding) Flatten(class uint32, name string, attrs []Attr) []byte {
	return e.AppendFlatten(nil, class, name, attrs)
}

// AppendFlatten is Flatten appending to b.
func (e Encoding) AppendFlatten(b []byte, class uint32, name string, attrs []Attr) []byte {
	ne := e.order()
	b = growCap(b, FlattenedSize(attrs))
	b = ne.AppendUint32(b, class)
	b = ne.AppendUint32(b, uint32(len(attrs)))
	var nm [8]byte
	copy(nm[:], name)
	b = append(b, nm[:]...)
	return e.appendAttrs(b, attrs)
}

func growCap(b []byte, n int) []byte {
	if cap(b)-len(b) >= n {
		return b
	}
	nb := make([]byte, len(b), len(b)+n)
	copy(nb, b)
	return nb
}

// EncodeOldPublic is an old-format public object file (§5.2): total_len (host order) = 5 +
// len(flat), private flag 0, then flat in clear.
func (e Encoding) EncodeOldPublic(flat []byte) []byte {
	b := make([]byte, 5, 5+len(flat))
	e.order().PutUint32(b, uint32(5+len(flat)))
	return append(b, flat...)
}

// OldPrivateSize is the file size of an old private object whose flattened body has n bytes:
// 5 + 8*(floor((n+24)/8)+1) (§5.2).
func OldPrivateSize(n int) int { return 5 + 8*((n+24)/8+1) }

// OldPublicSize is the file size of an old public object with an n-byte flattened body.
func OldPublicSize(n int) int { return 5 + n }

// EncodeOldPrivate is an old-format private object file (§5.2): total_len, flag 1, then
// 3DES-CBC(key = mk[0:24], IV "10293847") of N ‖ flat ‖ SHA-1(flat) ‖ PKCS#7 padding, its
// host-order fields in the encoding's byte order. mk may be a 24- or 64-byte master key; only
// its first 24 bytes are used.
func (e Encoding) EncodeOldPrivate(flat, mk []byte) ([]byte, error) {
	if len(mk) < 24 {
		return nil, fmt.Errorf("encode private object: master key has %d bytes, need at least 24", len(mk))
	}
	block, err := des.NewTripleDESCipher(mk[:24])
	if err != nil {
		return nil, fmt.Errorf("encode private object: %w", err)
	}
	return e.appendOldPrivate(nil, flat, block), nil
}

// appendOldPrivate appends the old private object file for flat, encrypting with block
// (a 3DES cipher built from MK[0:24]; safe to share between goroutines).
func (e Encoding) appendOldPrivate(b, flat []byte, block cipher.Block) []byte {
	ne := e.order()
	ctLen := 8 * ((len(flat)+24)/8 + 1)
	b = growCap(b, 5+ctLen)
	b = ne.AppendUint32(b, uint32(5+ctLen))
	b = append(b, 1)
	pt := len(b)
	b = ne.AppendUint32(b, uint32(len(flat)))
	b = append(b, flat...)
	sum := sha1.Sum(flat)
	b = append(b, sum[:]...)
	b = appendPad(b, pt)
	cipher.NewCBCEncrypter(block, []byte(ObjectIV)).CryptBlocks(b[pt:], b[pt:])
	return b
}

// appendPad adds PKCS#7 padding (8-byte block) to the data that starts at b[from:]; a full block
// is added when it is already a multiple of 8.
func appendPad(b []byte, from int) []byte {
	p := 8 - (len(b)-from)%8
	for range p {
		b = append(b, byte(p))
	}
	return b
}

// PINKey is the old-format 3DES key derived from a PIN: MD5(PIN) ‖ MD5(PIN)[0:8] (§3.1).
func PINKey(pin string) []byte {
	sum := md5.Sum([]byte(pin))
	k := make([]byte, 0, 24)
	k = append(k, sum[:]...)
	return append(k, sum[:8]...)
}

// PINHash is SHA-1(PIN), the value stored in NVTOK.DAT for the old format (§2.2).
func PINHash(pin string) []byte {
	s := sha1.Sum([]byte(pin))
	return s[:]
}

// EncodeOldMK is an old MK_SO / MK_USER file (§3.2): 3DES-CBC(key = PINKey(pin), IV
// "12345678") of MK ‖ SHA-1(MK) ‖ PKCS#7 padding. A 24-byte MK gives 48 bytes, a 64-byte
// (legacy CCA) MK gives 88 bytes.
func EncodeOldMK(mk []byte, pin string) []byte {
	pt := make([]byte, 0, len(mk)+28)
	pt = append(pt, mk...)
	sum := sha1.Sum(mk)
	pt = append(pt, sum[:]...)
	pt = appendPad(pt, 0)
	block, err := des.NewTripleDESCipher(PINKey(pin))
	if err != nil { // cannot happen: PINKey is always 24 bytes
		panic("tokentest: " + err.Error())
	}
	cipher.NewCBCEncrypter(block, []byte(MKIV)).CryptBlocks(pt, pt)
	return pt
}

// NVTokenFields are the fields of an old NVTOK.DAT (§2.1, §2.2).
type NVTokenFields struct {
	// Blank-padded strings; longer than the field is an error.
	Label          string // 32
	ManufacturerID string // 32
	Model          string // 16
	SerialNumber   string // 16
	UTCTime        string // 16

	Flags uint32
	// The ten counters after the flags, in order: ulMaxSessionCount, ulSessionCount,
	// ulMaxRwSessionCount, ulRwSessionCount, ulMaxPinLen, ulMinPinLen, ulTotalPublicMemory,
	// ulFreePublicMemory, ulTotalPrivateMemory, ulFreePrivateMemory.
	Counters [10]uint32

	HardwareVersion, FirmwareVersion [2]uint8

	// 20-byte hashes; copied into the 24-byte fields, bytes 20–23 stay zero.
	UserPINSHA, SOPINSHA []byte

	// NextObjectName is the 8-byte name counter; "" writes 8 zero bytes.
	NextObjectName string

	// allow_weak_des, check_des_parity, allow_key_mods, netscape_mods.
	Tweaks [4]int32
}

// Token flag bits (CKF_*).
const (
	FlagRNG                uint32 = 0x1
	FlagLoginRequired      uint32 = 0x4
	FlagUserPINInitialized uint32 = 0x8
	FlagClockOnToken       uint32 = 0x40
	FlagDualCrypto         uint32 = 0x200
	FlagTokenInitialized   uint32 = 0x400
	// FlagsUsable is what a real initialised token with both PINs set has (0x64D).
	FlagsUsable = FlagRNG | FlagLoginRequired | FlagUserPINInitialized | FlagClockOnToken |
		FlagDualCrypto | FlagTokenInitialized
)

const unavailable = 0xFFFFFFFF

// DefaultNVTokenFields are the token data a 3.27 token in old-format mode writes (the values
// of the soft-mixed20 fixture): manufacturer "IBM", model = t.String(), flags 0x64D (0x645
// when userPIN == nil, that is the user PIN was never set), PIN hashes, tweaks 1,0,1,1.
func DefaultNVTokenFields(t tokens.Type, label, soPIN string, userPIN *string) NVTokenFields {
	f := NVTokenFields{
		Label:          label,
		ManufacturerID: "IBM",
		Model:          t.String(),
		Flags:          FlagsUsable,
		Counters:       [10]uint32{0, unavailable, 0, unavailable, 8, 4, unavailable, unavailable, unavailable, unavailable},
		SOPINSHA:       PINHash(soPIN),
		Tweaks:         [4]int32{1, 0, 1, 1},
	}
	if userPIN == nil {
		f.Flags &^= FlagUserPINInitialized
		f.UserPINSHA = []byte(UnsetPINHash)
	} else {
		f.UserPINSHA = PINHash(*userPIN)
	}
	return f
}

// OldNVToken encodes a 232-byte old NVTOK.DAT (§2.2) with host-order integers.
func (e Encoding) OldNVToken(f NVTokenFields) ([]byte, error) {
	b := make([]byte, 0, NVTokenSize)
	var err error
	pad := func(name, s string, n int) {
		if err != nil {
			return
		}
		if len(s) > n {
			err = fmt.Errorf("NVTOK.DAT: %s has %d bytes, at most %d allowed", name, len(s), n)
			return
		}
		b = append(b, s...)
		b = append(b, strings.Repeat(" ", n-len(s))...)
	}
	pad("label", f.Label, 32)
	pad("manufacturerID", f.ManufacturerID, 32)
	pad("model", f.Model, 16)
	pad("serialNumber", f.SerialNumber, 16)
	if err != nil {
		return nil, err
	}
	ne := e.order()
	b = ne.AppendUint32(b, f.Flags)
	for _, c := range f.Counters {
		b = ne.AppendUint32(b, c)
	}
	b = append(b, f.HardwareVersion[0], f.HardwareVersion[1], f.FirmwareVersion[0], f.FirmwareVersion[1])
	pad("utcTime", f.UTCTime, 16)
	if err != nil {
		return nil, err
	}
	for _, h := range []struct {
		name string
		v    []byte
	}{{"user_pin_sha", f.UserPINSHA}, {"so_pin_sha", f.SOPINSHA}} {
		if len(h.v) != 20 {
			return nil, fmt.Errorf("NVTOK.DAT: %s has %d bytes, want 20", h.name, len(h.v))
		}
		b = append(b, h.v...)
		b = append(b, 0, 0, 0, 0)
	}
	switch len(f.NextObjectName) {
	case 0:
		b = append(b, make([]byte, 8)...)
	case 8:
		b = append(b, f.NextObjectName...)
	default:
		return nil, fmt.Errorf("NVTOK.DAT: next object name %q is not 8 bytes", f.NextObjectName)
	}
	for _, tw := range f.Tweaks {
		b = ne.AppendUint32(b, uint32(tw))
	}
	if len(b) != NVTokenSize { // guard against a layout slip
		return nil, fmt.Errorf("NVTOK.DAT: built %d bytes, want %d", len(b), NVTokenSize)
	}
	return b, nil
}

// CounterName is the object name old token libraries (before 3.18) gave their i-th object:
// base 36 over [0-9A-Z] with the first character least significant ("00000000", "10000000",
// ..., "Z0000000", "01000000", ...). i must be below 36^8.
func CounterName(i uint64) string {
	const digits = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
	var b [8]byte
	for k := range b {
		b[k] = digits[i%36]
		i /= 36
	}
	return string(b[:])
}

// OldConf is a minimal opencryptoki.conf with one slot for the token type, in old-format mode
// (no tokversion): "version opencryptoki-3.11", a blank line, then the slot block.
func OldConf(slot int, t tokens.Type) ([]byte, error) {
	if !t.Supported() {
		return nil, fmt.Errorf("opencryptoki.conf: unsupported token type %v", t)
	}
	if slot < 0 || slot >= 1024 {
		return nil, fmt.Errorf("opencryptoki.conf: slot %d out of range 0..1023", slot)
	}
	return fmt.Appendf(nil, "version opencryptoki-3.11\n\nslot %d {\n  stdll = %s\n}\n", slot, t.Stdll()), nil
}
