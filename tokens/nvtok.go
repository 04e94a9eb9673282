package tokens

import (
	"encoding/binary"
	"strings"
)

// be is for the fields the 3.12 format defines as big-endian.
var be = binary.BigEndian

// Sizes of NVTOK.DAT (§2.4).
const (
	NVTokOldSize = 232
	NVTokNewSize = 592
)

// Version is the 3.12 format version number (§0).
const Version312 uint32 = 0x0003000C

// CKF_USER_PIN_INITIALIZED in TokenInfo.Flags.
const FlagUserPINInitialized uint32 = 0x8

// Iteration counts outside [1, MaxIterations] are refused as corrupt: the format stores the count
// and a reader must use it, but a huge value (for example 100000 read in the wrong byte order,
// about 1.16e19) would make PIN checking run practically forever.
const MaxIterations = 10_000_000

// Offsets in NVTOK.DAT (§2.1–2.3).
const (
	offFlags      = 96
	offInfoInts   = 96 // 11 u32 from here
	numInfoInts   = 11
	offHWVersion  = 140
	offUTCTime    = 144
	offUserPINSHA = 160
	offSOPINSHA   = 184
	offNextName   = 208
	offTweaks     = 216 // 4 s32 from here
	numTweaks     = 4
	offVersion    = 232
	offPad        = 236
	offSOLogin    = 240 // it(8) salt(64) key(32)
	offUserLogin  = 344 // it(8) salt(64) key(32)
	offSOWrap     = 448 // it(8) salt(64)
	offUserWrap   = 520 // it(8) salt(64)
	saltLen       = 64
	purposeLen    = 32
	derivedKeyLen = 32
)

// Purpose strings at the start of each 64-byte salt (§2.3).
const (
	purposeSOLogin   = "so_login_purpose________________"
	purposeUserLogin = "user_login_purpose______________"
	purposeSOWrap    = "so_wrap_purpose_________________"
	purposeUserWrap  = "user_wrap_purpose_______________"
)

// TokenInfo is the 160-byte token-info block (§2.1). Strings are the raw bytes, blanks kept.
type TokenInfo struct {
	Label, ManufacturerID, Model, SerialNumber string
	Flags                                      uint32
	MaxSessionCount, SessionCount              uint32
	MaxRwSessionCount, RwSessionCount          uint32
	MaxPinLen, MinPinLen                       uint32
	TotalPublicMemory, FreePublicMemory        uint32
	TotalPrivateMemory, FreePrivateMemory      uint32
	HardwareVersion, FirmwareVersion           [2]uint8
	UTCTime                                    string
}

// KDF is one PBKDF2 parameter set of a 3.12 NVTOK.DAT (§2.3, §4.1).
type KDF struct {
	Iterations uint64
	Salt       []byte // 64 bytes: purpose string ‖ 32 random bytes
}

// NVToken is a parsed NVTOK.DAT.
type NVToken struct {
	Format Format
	Info   TokenInfo
	// UserPINSHA and SOPINSHA are bytes 160–183 and 184–207: the old-format SHA-1 PIN hashes
	// (first 20 bytes). The 3.12 format carries them over unused.
	UserPINSHA, SOPINSHA []byte
	NextObjectName       []byte   // bytes 208–215
	Tweaks               [4]int32 // allow_weak_des, check_des_parity, allow_key_mods, netscape_mods
	// Order is the byte order of the old format's integers as NVTokenOrder found it
	// (OrderUnknown when every one of them reads the same in both orders, and always for the
	// 3.12 format, whose integers are big-endian on every machine). OrderEvidence says why.
	Order         ByteOrder
	OrderEvidence Evidence
	// 3.12 only (zero for the old format).
	Version                              uint32
	SOLogin, UserLogin, SOWrap, UserWrap KDF
	SOLoginKey, UserLoginKey             []byte // 32 bytes each
	Raw                                  []byte // the whole file as read
}

// ParseNVToken decodes NVTOK.DAT. The size alone decides the format (§2.4): 232 old, 592 new.
func ParseNVToken(b []byte) (*NVToken, error) {
	const file = "NVTOK.DAT"
	var ord interface{ Uint32([]byte) uint32 }
	n := &NVToken{Raw: b}
	switch len(b) {
	case NVTokOldSize:
		n.Format = FormatOld
		o, ev, err := NVTokenOrder(b)
		if err != nil {
			return nil, err
		}
		n.Order, n.OrderEvidence = o, ev
		if o == OrderUnknown {
			o = LittleEndian // every integer reads the same in both orders
		}
		ord = o.Binary()
	case NVTokNewSize:
		n.Format, ord = Format312, be
	default:
		return nil, corrupt(file, "invalid size of %d bytes: neither old (%d) nor new (%d) token format", len(b), NVTokOldSize, NVTokNewSize)
	}
	info := &n.Info
	info.Label = string(b[0:32])
	info.ManufacturerID = string(b[32:64])
	info.Model = string(b[64:80])
	info.SerialNumber = string(b[80:96])
	ints := [numInfoInts]*uint32{&info.Flags, &info.MaxSessionCount, &info.SessionCount,
		&info.MaxRwSessionCount, &info.RwSessionCount, &info.MaxPinLen, &info.MinPinLen,
		&info.TotalPublicMemory, &info.FreePublicMemory, &info.TotalPrivateMemory, &info.FreePrivateMemory}
	for i, p := range ints {
		*p = ord.Uint32(b[offInfoInts+4*i:])
	}
	info.HardwareVersion = [2]uint8{b[offHWVersion], b[offHWVersion+1]}
	info.FirmwareVersion = [2]uint8{b[offHWVersion+2], b[offHWVersion+3]}
	info.UTCTime = string(b[offUTCTime : offUTCTime+16])
	n.UserPINSHA = b[offUserPINSHA : offUserPINSHA+24 : offUserPINSHA+24]
	n.SOPINSHA = b[offSOPINSHA : offSOPINSHA+24 : offSOPINSHA+24]
	n.NextObjectName = b[offNextName : offNextName+8 : offNextName+8]
	for i := range n.Tweaks {
		n.Tweaks[i] = int32(ord.Uint32(b[offTweaks+4*i:]))
	}
	if n.Format == FormatOld {
		return n, nil
	}
	n.Version = be.Uint32(b[offVersion:])
	if n.Version != Version312 {
		return nil, corrupt(file, "the version field (offset %d) is not 0x%08X, the 3.12 version", offVersion, Version312)
	}
	kdf := func(off int, name string) (KDF, error) {
		it := be.Uint64(b[off:])
		if it == 0 || it > MaxIterations {
			return KDF{}, corrupt(file, "%s iteration count out of range 1..%d", name, MaxIterations)
		}
		return KDF{Iterations: it, Salt: b[off+8 : off+8+saltLen : off+8+saltLen]}, nil
	}
	var err error
	if n.SOLogin, err = kdf(offSOLogin, "so_login"); err != nil {
		return nil, err
	}
	if n.UserLogin, err = kdf(offUserLogin, "user_login"); err != nil {
		return nil, err
	}
	if n.SOWrap, err = kdf(offSOWrap, "so_wrap"); err != nil {
		return nil, err
	}
	if n.UserWrap, err = kdf(offUserWrap, "user_wrap"); err != nil {
		return nil, err
	}
	k := offSOLogin + 8 + saltLen
	n.SOLoginKey = b[k : k+derivedKeyLen : k+derivedKeyLen]
	k = offUserLogin + 8 + saltLen
	n.UserLoginKey = b[k : k+derivedKeyLen : k+derivedKeyLen]
	return n, nil
}

// userPINUnset is the old-format user_pin_sha of a token whose user PIN was never set (§2.2).
var userPINUnset = []byte(strings.Repeat("0", 20))

// UserPINSet reports whether the user PIN was ever set: old format, user_pin_sha is not 20 ASCII
// '0'; 3.12 format, CKF_USER_PIN_INITIALIZED is set in the flags.
func (n *NVToken) UserPINSet() bool {
	if n.Format == Format312 {
		return n.Info.Flags&FlagUserPINInitialized != 0
	}
	return string(n.UserPINSHA[:20]) != string(userPINUnset)
}

// upgradeNVToken builds the 3.12 image of an old NVTOK.DAT (§2.5 steps 1–2, 5) with the version
// and iteration counts filled in and the four salts taken from salts (4 × 32 random bytes, in
// file order so_login, user_login, so_wrap, user_wrap). The login keys are left zero. The 15
// integers are read in the old file's own byte order ord (OrderUnknown only when each reads
// the same in both orders) and written big-endian.
func upgradeNVToken(old []byte, ord ByteOrder, salts []byte) []byte {
	if ord == OrderUnknown {
		ord = LittleEndian
	}
	host := ord.Binary()
	out := make([]byte, NVTokNewSize)
	copy(out, old[:NVTokOldSize])
	for i := 0; i < numInfoInts; i++ {
		o := offInfoInts + 4*i
		be.PutUint32(out[o:], host.Uint32(old[o:]))
	}
	for i := 0; i < numTweaks; i++ {
		o := offTweaks + 4*i
		be.PutUint32(out[o:], host.Uint32(old[o:]))
	}
	be.PutUint32(out[offVersion:], Version312)
	// bytes 236–239 stay zero (§2.3 padding)
	for i, s := range []struct {
		off     int
		purpose string
	}{{offSOLogin, purposeSOLogin}, {offUserLogin, purposeUserLogin}, {offSOWrap, purposeSOWrap}, {offUserWrap, purposeUserWrap}} {
		be.PutUint64(out[s.off:], 100000)
		copy(out[s.off+8:], s.purpose)
		copy(out[s.off+8+purposeLen:s.off+8+saltLen], salts[32*i:32*i+32])
	}
	return out
}

// RewrittenByLibrary reports whether nvtok (NVTOK.DAT) and mkSO (MK_SO) are what the token
// library leaves when it opens a 3.12 repository under a conf without tokversion = 3.12: it
// rewrites NVTOK.DAT in the old format, while MK_SO keeps its 3.12 form (doc/format.md §12).
// Such a repository cannot be read as either format; its original is in the migration's
// backup.
func RewrittenByLibrary(nvtok, mkSO []byte) bool {
	return len(nvtok) == NVTokOldSize && len(mkSO) == mkNewFileSize
}
