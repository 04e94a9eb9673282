package tokens

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/des"
	"crypto/md5"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"io/fs"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// doc/format.md §11 vectors and the named good_/fail_ cases. Everything here is built in
// memory; the old-format encoders below are test-only and follow §3 and §5.2 directly.

const (
	defaultSOPIN = "87654321"
	testUserPIN  = "12345678"
	// §11.3 sample flattened object
	sampleFlat = "0000000004000000313030303030303000000000000000000400000000000000010000000000000001000000010200000000000000010000000103000000000000000400000074657374"
	sampleName = "10000000"
)

func TestPrimitives_11_1(t *testing.T) {
	s := sha1.Sum([]byte(defaultSOPIN))
	require.Equal(t, "a7d579ba76398070eae654c30ff153a4c273272a", hex.EncodeToString(s[:]))
	m := md5.Sum([]byte(defaultSOPIN))
	require.Equal(t, "5e8667a439c68f5145dd2fcbecf02209", hex.EncodeToString(m[:]))
	require.Equal(t, "5e8667a439c68f5145dd2fcbecf022095e8667a439c68f51", hex.EncodeToString(oldPINKey([]byte(defaultSOPIN))))
	s = sha1.Sum([]byte(testUserPIN))
	require.Equal(t, "7c222fb2927d828af22f592134e8932480637c0d", hex.EncodeToString(s[:]))
	m = md5.Sum([]byte(testUserPIN))
	require.Equal(t, "25d55ad283aa400af464c76d713c07ad", hex.EncodeToString(m[:]))
}

// test-only old-format encoders

func encryptOldMK(t testing.TB, mk []byte, pin string) []byte {
	t.Helper()
	sum := sha1.Sum(mk)
	pt := append(append(bytes.Clone(mk), sum[:]...), 4, 4, 4, 4)
	blk, err := des.NewTripleDESCipher(oldPINKey([]byte(pin)))
	require.NoError(t, err)
	ct := make([]byte, len(pt))
	cipher.NewCBCEncrypter(blk, oldMKIV).CryptBlocks(ct, pt)
	return ct
}

func encodeOldPublic(flat []byte) []byte {
	out := make([]byte, 5+len(flat))
	vecOrder.PutUint32(out, uint32(len(out)))
	copy(out[5:], flat)
	return out
}

func encodeOldPrivate(t testing.TB, flat, mk []byte) []byte {
	return encodeOldPrivateN(t, flat, mk, uint32(len(flat)))
}

// encodeOldPrivateN lets the N field lie.
func encodeOldPrivateN(t testing.TB, flat, mk []byte, n uint32) []byte {
	t.Helper()
	sum := sha1.Sum(flat)
	pt := make([]byte, 4, 4+len(flat)+28)
	vecOrder.PutUint32(pt, n)
	pt = append(append(pt, flat...), sum[:]...)
	p := 8 - len(pt)%8
	pt = append(pt, bytes.Repeat([]byte{byte(p)}, p)...)
	blk, err := des.NewTripleDESCipher(mk[:24])
	require.NoError(t, err)
	out := make([]byte, 5+len(pt))
	vecOrder.PutUint32(out, uint32(len(out)))
	out[4] = 1
	cipher.NewCBCEncrypter(blk, oldObjIV).CryptBlocks(out[5:], pt)
	return out
}

// oldNV builds an old 232-byte NVTOK.DAT (LE host) for the given PINs; userPIN "" = never set.
func oldNV(soPIN, userPIN string) []byte {
	b := make([]byte, NVTokOldSize)
	copy(b, strings.Repeat(" ", 96))
	copy(b, "vector token")
	copy(b[32:], "IBM")
	copy(b[64:], "Soft")
	flags := uint32(0x445)
	if userPIN != "" {
		flags |= FlagUserPINInitialized
	}
	for i := 0; i < numInfoInts; i++ {
		vecOrder.PutUint32(b[offInfoInts+4*i:], uint32(i*0x01020304)+1)
	}
	vecOrder.PutUint32(b[offFlags:], flags)
	b[140], b[141], b[142], b[143] = 1, 2, 3, 4
	copy(b[offUTCTime:], "2024010112000000")
	if userPIN == "" {
		copy(b[offUserPINSHA:], userPINUnset)
	} else {
		s := sha1.Sum([]byte(userPIN))
		copy(b[offUserPINSHA:], s[:])
	}
	s := sha1.Sum([]byte(soPIN))
	copy(b[offSOPINSHA:], s[:])
	copy(b[offNextName:], "20000000")
	for i := 0; i < numTweaks; i++ {
		vecOrder.PutUint32(b[offTweaks+4*i:], uint32(int32(i-1)))
	}
	return b
}

func TestOldMKFiles_11_2(t *testing.T) {
	mk := seq(0, 24)
	mkSO := unhex(t, "7bd25948deac0b37aabb660e6affaa22b3b7c77b7c0edd425b808416773099376d7f35c5e5cf4d5a0eeba398bc83b74e")
	mkUser := unhex(t, "ad5a0a63c09a7184e54dd8fe1859abcf9c9ed82f5d83bbc2ab07d5c6cbf4e845b87faea9a57d22597f3f1433ecd31fc7")
	cca := unhex(t, "7bd25948deac0b37aabb660e6affaa22b3b7c77b7c0edd420f2419329f54beefad8ea8ed93f79f3a9674d0ac8f2ba1366db217ea8139f6615a4d45dfdfba862405928fd599c9955ee7b36811892bd7f76b2ea8c4b36ed3d5")
	require.Equal(t, mkSO, encryptOldMK(t, mk, defaultSOPIN))
	require.Equal(t, mkUser, encryptOldMK(t, mk, testUserPIN))
	require.Equal(t, cca, encryptOldMK(t, seq(0, 64), defaultSOPIN))

	got, err := DecryptOldMK(FileMKSO, mkSO, []byte(defaultSOPIN))
	require.NoError(t, err)
	require.Equal(t, mk, got)
	got, err = DecryptOldMK(FileMKUser, mkUser, []byte(testUserPIN))
	require.NoError(t, err)
	require.Equal(t, mk, got)
	got, err = DecryptOldMK(FileMKSO, cca, []byte(defaultSOPIN))
	require.NoError(t, err)
	require.Equal(t, seq(0, 64), got)

	_, err = DecryptOldMK(FileMKSO, mkSO, []byte(testUserPIN))
	require.ErrorIs(t, err, ErrOldMKCheck)
	for _, n := range []int{0, 8, 40, 47, 49, 87, 89, 96} {
		_, err = DecryptOldMK(FileMKSO, make([]byte, n), []byte(defaultSOPIN))
		var ce *CorruptError
		require.ErrorAs(t, err, &ce, "size %d", n)
		require.Equal(t, FileMKSO, ce.File)
	}
}

func TestSampleObjects_11_3(t *testing.T) {
	flat := unhex(t, sampleFlat)
	require.Len(t, flat, 74)
	a, err := ParseFlattened(sampleName, flat)
	require.NoError(t, err)
	require.Equal(t, uint32(0), a.Class)
	require.Equal(t, "CKO_DATA", ClassName(a.Class))
	require.Equal(t, []byte("test"), a.Label)
	require.Nil(t, a.ID)
	require.Nil(t, a.KeyType)
	require.True(t, *a.Token)
	require.True(t, *a.Private)
	require.Equal(t, uint32(4), a.Count)

	oldPub := append(unhex(t, "4f00000000"), flat...)
	require.Equal(t, oldPub, encodeOldPublic(flat))
	oldPriv := unhex(t, "6d000000010cc613b912cead2e740762b73838c74a4a082cf48d2b5e3eb52b3d73fb767b5bb3578c958b149496808889cf874c6ff613f2e473470e89db7071eb41da6aec0a276995f60a29bbafcf31847e9e80c15442d504a9ceb1775989c21c078aa021f8493718e7420db62b")
	require.Equal(t, oldPriv, encodeOldPrivate(t, flat, seq(0, 24)))
	newPub := append(unhex(t, "0003000c 00 00000000000000 0000004a"), flat...)
	newPriv := unhex(t, "0003000c01000000ea6a7bc9db0d34f0a2a6adb93f77133b085a9e2040be6adfefc2778396c7e908e23c60df3cbaa2163130303030303030000000010000004ae2492b050af6aacafce96055c85070a5b63b8dcb486ba6e9f31a92fe9fb3153fb5e2fdd71574d2861d3aaceb2dde21b01df7864f33ec0d5bbda981caede024eec221a265ed28e83447a72d2ec94a36d4d70c0eab7c16a086a011")
	oldKeys := &Keys{Format: FormatOld, OldMK: seq(0, 24)}
	newKeys := &Keys{Format: Format312, NewMK: seq(0x20, 32)}

	// readers
	for _, c := range []struct {
		name    string
		file    []byte
		k       *Keys
		format  Format
		private bool
	}{
		{"good_old_public", oldPub, nil, FormatOld, false},
		{"good_old_private", oldPriv, oldKeys, FormatOld, true},
		{"good_new_public", newPub, nil, Format312, false},
		{"good_new_private", newPriv, newKeys, Format312, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			o, err := DecodeObject(sampleName, c.file, c.k)
			require.NoError(t, err)
			require.Equal(t, c.format, o.Format)
			require.Equal(t, c.private, o.Private)
			require.Equal(t, flat, o.Clear)
		})
	}

	// writers reproduce the vectors exactly
	require.Equal(t, newPub, EncodePublic312(flat))
	got, err := EncodePrivate312(sampleName, flat, seq(0x20, 32), bytes.NewReader(seq(0x40, 32)))
	require.NoError(t, err)
	require.Equal(t, newPriv, got)
	out, clearOut, changed, err := ReencryptObject(sampleName, oldPriv, oldKeys, newKeys, bytes.NewReader(seq(0x40, 32)))
	require.NoError(t, err)
	require.True(t, changed)
	require.Equal(t, newPriv, out)
	require.Equal(t, flat, clearOut)
	out, _, changed, err = ReencryptObject(sampleName, oldPub, oldKeys, newKeys, nil)
	require.NoError(t, err)
	require.True(t, changed)
	require.Equal(t, newPub, out)
	// an unreadable random source is an error, not a weak key
	_, err = EncodePrivate312(sampleName, flat, seq(0x20, 32), bytes.NewReader(nil))
	require.Error(t, err)
}

// TestKeyMaterial_11_4 proves the writer (StartUpgrade) against §11.4, then reads what it wrote with
// the 3.12 reader and exercises its PIN errors.
func TestKeyMaterial_11_4(t *testing.T) {
	mkOld := seq(0, 24)
	repo := mapFS{
		FileNVTok:  oldNV(defaultSOPIN, testUserPIN),
		FileMKSO:   encryptOldMK(t, mkOld, defaultSOPIN),
		FileMKUser: encryptOldMK(t, mkOld, testUserPIN),
	}
	r, err := Load(repo)
	require.NoError(t, err)
	require.False(t, r.IndexPresent)
	require.Empty(t, r.Index)
	up, err := newUpgrade(r, []byte(defaultSOPIN), []byte(testUserPIN), fixedReader(make([]byte, 128), seq(0x20, 32)))
	require.NoError(t, err)
	nvt := up.NVToken
	require.Len(t, nvt, NVTokNewSize)
	require.Equal(t, "0336c80aa94e0d5108f9498073c59a83230c87a5dce682b8308ccb19401d3ecc", hex.EncodeToString(nvt[312:344]))
	require.Equal(t, "7180f8287d8ed8aafbece4697b46db820538d4316eb3e9f113c87d3824e0ddd7", hex.EncodeToString(nvt[416:448]))
	require.Equal(t, "ed0dda924cc3a51fb4dbacfd959d1481869be28deb19e8300508e75ca58e7a5fa6b5cbb309e89ecc", hex.EncodeToString(up.MKSO))
	require.Equal(t, "636a60ed79bf4e8ef8ba5bd371c55b4929a3323120efdc7181ae5b0202ca0b00d53ddd33fbc99288", hex.EncodeToString(up.MKUser))
	require.Equal(t, seq(0x20, 32), up.Keys.NewMK)
	require.Equal(t, Format312, up.Keys.Format)

	// §2.3/2.5 layout of the new image
	old := repo[FileNVTok]
	require.Equal(t, old[:96], nvt[:96])
	for i := 0; i < numInfoInts; i++ {
		require.Equal(t, vecOrder.Uint32(old[96+4*i:]), be.Uint32(nvt[96+4*i:]), "info int %d", i)
	}
	require.Equal(t, old[140:216], nvt[140:216])
	for i := 0; i < numTweaks; i++ {
		require.Equal(t, vecOrder.Uint32(old[216+4*i:]), be.Uint32(nvt[216+4*i:]), "tweak %d", i)
	}
	require.Equal(t, unhex(t, "0003000c 00000000"), nvt[232:240])
	for _, f := range []struct {
		off     int
		purpose string
	}{{240, purposeSOLogin}, {344, purposeUserLogin}, {448, purposeSOWrap}, {520, purposeUserWrap}} {
		require.Equal(t, uint64(100000), be.Uint64(nvt[f.off:]))
		require.Equal(t, f.purpose, string(nvt[f.off+8:f.off+40]))
		require.Len(t, f.purpose, 32)
		require.Equal(t, make([]byte, 32), nvt[f.off+40:f.off+72])
	}

	// the wrap keys of §11.4 unwrap what the writer wrote
	soWrap := unhex(t, "8898a2c323b8adc8da9a06c56fdccd87ca7a63242eb5d4cff1ce668b43c2d5a0")
	userWrap := unhex(t, "b385c2bdc61a6716d1a54517f336272fbb3d031d0249b43dad3adaeba0b5f14c")
	for _, c := range []struct{ kek, wrapped []byte }{{soWrap, up.MKSO}, {userWrap, up.MKUser}} {
		blk, err := aes.NewCipher(c.kek)
		require.NoError(t, err)
		mk, err := keyUnwrap(blk, c.wrapped)
		require.NoError(t, err)
		require.Equal(t, seq(0x20, 32), mk)
	}

	// read back with the 3.12 reader
	repo312 := mapFS{FileNVTok: nvt, FileMKSO: up.MKSO, FileMKUser: up.MKUser}
	r312, err := Load(repo312)
	require.NoError(t, err)
	require.Equal(t, r.NV.Info, r312.NV.Info)
	k, err := r312.Unlock([]byte(defaultSOPIN), []byte(testUserPIN))
	require.NoError(t, err)
	require.Equal(t, seq(0x20, 32), k.NewMK)
	k.Wipe()
	require.Nil(t, k.NewMK)

	t.Run("fail_new_upgrade_on_312", func(t *testing.T) {
		_, err := newUpgrade(r312, []byte(defaultSOPIN), []byte(testUserPIN), fixedReader(make([]byte, 160)))
		require.Error(t, err)
	})
	t.Run("fail_new_upgrade_wrong_pin", func(t *testing.T) {
		_, err := newUpgrade(r, []byte("x"), []byte(testUserPIN), fixedReader(make([]byte, 160)))
		require.ErrorIs(t, err, ErrWrongSOPIN)
	})

	// 3.12 PIN errors (each derives at most 4 keys)
	blkUser, err := aes.NewCipher(userWrap)
	require.NoError(t, err)
	otherMKUser, err := keyWrap(blkUser, seq(0x60, 32))
	require.NoError(t, err)
	noUserFlag := bytes.Clone(nvt)
	be.PutUint32(noUserFlag[offFlags:], be.Uint32(nvt[offFlags:])&^FlagUserPINInitialized)
	tamperedSO := bytes.Clone(up.MKSO)
	tamperedSO[10] ^= 1
	cases := []struct {
		name      string
		fs        mapFS
		so, user  string
		want      []error
		corruptIn string
	}{
		{"fail_312_wrong_so_pin", repo312, "87654320", testUserPIN, []error{ErrWrongSOPIN}, ""},
		{"fail_312_wrong_user_pin", repo312, defaultSOPIN, "12345670", []error{ErrWrongUserPIN}, ""},
		{"fail_312_both_pins_wrong", repo312, "a", "b", []error{ErrWrongSOPIN, ErrWrongUserPIN}, ""},
		{"fail_312_user_pin_flag_unset", mapFS{FileNVTok: noUserFlag, FileMKSO: up.MKSO, FileMKUser: up.MKUser}, defaultSOPIN, testUserPIN, []error{ErrUserPINNotSet}, ""},
		{"fail_312_mk_user_missing", mapFS{FileNVTok: nvt, FileMKSO: up.MKSO}, defaultSOPIN, testUserPIN, []error{ErrUserPINNotSet}, ""},
		{"fail_312_mk_so_mk_user_disagree", mapFS{FileNVTok: nvt, FileMKSO: up.MKSO, FileMKUser: otherMKUser}, defaultSOPIN, testUserPIN, []error{ErrMKMismatch}, ""},
		{"fail_312_mk_so_tampered", mapFS{FileNVTok: nvt, FileMKSO: tamperedSO, FileMKUser: up.MKUser}, defaultSOPIN, testUserPIN, []error{ErrCorrupt}, FileMKSO},
		{"fail_312_mk_user_old_size", mapFS{FileNVTok: nvt, FileMKSO: up.MKSO, FileMKUser: repo[FileMKUser]}, defaultSOPIN, testUserPIN, []error{ErrCorrupt}, FileMKUser},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, err := Load(c.fs)
			require.NoError(t, err)
			k, err := r.Unlock([]byte(c.so), []byte(c.user))
			require.Nil(t, k)
			for _, w := range c.want {
				require.ErrorIs(t, err, w)
			}
			checkCorruptFile(t, err, c.corruptIn)
			requireNoSecrets(t, err, c.so, c.user)
		})
	}
}

func checkCorruptFile(t *testing.T, err error, file string) {
	t.Helper()
	if file == "" {
		return
	}
	var ce *CorruptError
	require.ErrorAs(t, err, &ce)
	require.Equal(t, file, ce.File)
	require.Contains(t, err.Error(), file)
}

func requireNoSecrets(t *testing.T, err error, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		if len(s) >= 4 {
			require.NotContains(t, err.Error(), s)
		}
	}
}

// TestOldUnlock covers the old-format PIN checks (§3.3, §4.3): good_ and fail_ repositories.
func TestOldUnlock(t *testing.T) {
	mk := seq(0, 24)
	good := mapFS{
		FileNVTok:  oldNV(defaultSOPIN, testUserPIN),
		FileMKSO:   encryptOldMK(t, mk, defaultSOPIN),
		FileMKUser: encryptOldMK(t, mk, testUserPIN),
	}
	with := func(kv ...any) mapFS {
		m := mapFS{}
		for k, v := range good {
			m[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			if kv[i+1] == nil {
				delete(m, kv[i].(string))
			} else {
				m[kv[i].(string)] = kv[i+1].([]byte)
			}
		}
		return m
	}
	flipped := bytes.Clone(good[FileMKSO])
	flipped[20] ^= 0x80
	cases := []struct {
		name      string
		fs        mapFS
		so, user  string
		want      []error
		corruptIn string
		mk        []byte
	}{
		{"good_old_48", good, defaultSOPIN, testUserPIN, nil, "", mk},
		{"good_old_cca_mk88", with(FileMKSO, encryptOldMK(t, seq(0, 64), defaultSOPIN), FileMKUser, encryptOldMK(t, seq(0, 64), testUserPIN)), defaultSOPIN, testUserPIN, nil, "", mk},
		{"fail_old_wrong_so_pin", good, "87654320", testUserPIN, []error{ErrWrongSOPIN}, "", nil},
		{"fail_old_wrong_user_pin", good, defaultSOPIN, "12345670", []error{ErrWrongUserPIN}, "", nil},
		{"fail_old_both_pins_wrong", good, "abcdefgh", "ijklmnop", []error{ErrWrongSOPIN, ErrWrongUserPIN}, "", nil},
		{"fail_old_user_pin_never_set", with(FileNVTok, oldNV(defaultSOPIN, ""), FileMKUser, nil), defaultSOPIN, testUserPIN, []error{ErrUserPINNotSet}, "", nil},
		{"fail_old_user_pin_hash_zeros", with(FileNVTok, oldNV(defaultSOPIN, "")), defaultSOPIN, testUserPIN, []error{ErrUserPINNotSet}, "", nil},
		{"fail_old_mk_user_missing", with(FileMKUser, nil), defaultSOPIN, testUserPIN, []error{ErrUserPINNotSet}, "", nil},
		{"fail_old_mk_so_mk_user_disagree", with(FileMKUser, encryptOldMK(t, seq(1, 24), testUserPIN)), defaultSOPIN, testUserPIN, []error{ErrMKMismatch}, "", nil},
		{"fail_old_mk88_so_mk48_user", with(FileMKSO, encryptOldMK(t, append(bytes.Clone(mk), make([]byte, 40)...), defaultSOPIN)), defaultSOPIN, testUserPIN, []error{ErrMKMismatch}, "", nil},
		{"fail_old_mk_so_tampered", with(FileMKSO, flipped), defaultSOPIN, testUserPIN, []error{ErrCorrupt}, FileMKSO, nil},
		{"fail_old_mk_so_third_size", with(FileMKSO, make([]byte, 56)), defaultSOPIN, testUserPIN, []error{ErrCorrupt}, FileMKSO, nil},
		{"fail_old_mk_user_empty", with(FileMKUser, []byte{}), defaultSOPIN, testUserPIN, []error{ErrCorrupt}, FileMKUser, nil},
		{"fail_old_mk_so_312_size", with(FileMKSO, make([]byte, 40)), defaultSOPIN, testUserPIN, []error{ErrCorrupt}, FileMKSO, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, err := Load(c.fs)
			require.NoError(t, err)
			k, err := r.Unlock([]byte(c.so), []byte(c.user))
			if c.want == nil {
				require.NoError(t, err)
				require.Equal(t, FormatOld, k.Format)
				require.Equal(t, c.mk, k.OldMK)
				return
			}
			require.Nil(t, k)
			for _, w := range c.want {
				require.ErrorIs(t, err, w)
			}
			checkCorruptFile(t, err, c.corruptIn)
			requireNoSecrets(t, err, c.so, c.user)
		})
	}
}

func TestNVToken(t *testing.T) {
	for _, n := range []int{0, 1, 160, 231, 233, 591, 593, 1024} {
		_, err := ParseNVToken(make([]byte, n))
		var ce *CorruptError
		require.ErrorAs(t, err, &ce, "fail_nvtok_third_size %d", n)
		require.Equal(t, FileNVTok, ce.File)
		require.ErrorIs(t, err, ErrCorrupt)
	}
	_, err := Load(mapFS{FileNVTok: make([]byte, 300)})
	require.ErrorIs(t, err, ErrCorrupt)
	_, err = Load(mapFS{})
	require.ErrorIs(t, err, fs.ErrNotExist)
	_, err = Load(mapFS{FileNVTok: oldNV(defaultSOPIN, "")})
	require.ErrorIs(t, err, fs.ErrNotExist, "MK_SO is required")

	nv, err := ParseNVToken(oldNV(defaultSOPIN, testUserPIN))
	require.NoError(t, err)
	require.Equal(t, FormatOld, nv.Format)
	require.True(t, nv.UserPINSet())
	require.Equal(t, "vector token", strings.TrimRight(nv.Info.Label, " "))
	require.Equal(t, [2]uint8{1, 2}, nv.Info.HardwareVersion)
	require.Equal(t, [2]uint8{3, 4}, nv.Info.FirmwareVersion)
	require.Equal(t, [4]int32{-1, 0, 1, 2}, nv.Tweaks)
	require.Equal(t, "20000000", string(nv.NextObjectName))
	nv, err = ParseNVToken(oldNV(defaultSOPIN, ""))
	require.NoError(t, err)
	require.False(t, nv.UserPINSet())

	// a 3.12 image: padding ignored on read, version and iteration counts checked
	img := upgradeNVToken(oldNV(defaultSOPIN, testUserPIN), LittleEndian, make([]byte, 128))
	img[236], img[239] = 0xde, 0xad
	nv, err = ParseNVToken(img)
	require.NoError(t, err, "good_nvtok_312_padding_ignored")
	require.Equal(t, Format312, nv.Format)
	require.Equal(t, uint64(100000), nv.UserWrap.Iterations)
	for name, mut := range map[string]func(b []byte){
		"fail_nvtok_312_version":         func(b []byte) { b[235] = 0x0b },
		"fail_nvtok_312_zero_iterations": func(b []byte) { be.PutUint64(b[offSOWrap:], 0) },
		"fail_nvtok_312_host_order_iterations": func(b []byte) {
			binaryLE := make([]byte, 8)
			hostOrderPut64(binaryLE, 100000)
			copy(b[offUserLogin:], binaryLE)
		},
	} {
		b := bytes.Clone(img)
		mut(b)
		_, err := ParseNVToken(b)
		require.ErrorIs(t, err, ErrCorrupt, name)
	}
}

func hostOrderPut64(b []byte, v uint64) {
	for i := 0; i < 8; i++ {
		b[i] = byte(v >> (8 * i))
	}
}

// TestObjectVectors: every malformed object is a *CorruptError naming TOK_OBJ/<name>, never a panic.
func TestObjectVectors(t *testing.T) {
	flat := unhex(t, sampleFlat)
	oldKeys := &Keys{Format: FormatOld, OldMK: seq(0, 24)}
	newKeys := &Keys{Format: Format312, NewMK: seq(0x20, 32)}
	oldPriv := encodeOldPrivate(t, flat, oldKeys.OldMK)
	oldPub := encodeOldPublic(flat)
	newPriv, err := EncodePrivate312(sampleName, flat, newKeys.NewMK, bytes.NewReader(seq(0x40, 32)))
	require.NoError(t, err)
	newPub := EncodePublic312(flat)
	mod := func(b []byte, f func(b []byte) []byte) []byte { return f(bytes.Clone(b)) }

	legacy := mod(newPub, func(b []byte) []byte {
		vecOrder.PutUint32(b, Version312)
		vecOrder.PutUint32(b[12:], uint32(len(flat)))
		return b
	})
	o, err := DecodeObject(sampleName, legacy, nil)
	require.NoError(t, err, "good_new_public_host_order_header")
	require.True(t, o.LegacyHostOrderHeader)
	require.Equal(t, Format312, o.Format)
	require.Equal(t, flat, o.Clear)
	out, _, changed, err := ReencryptObject(sampleName, legacy, oldKeys, newKeys, nil)
	require.NoError(t, err)
	require.False(t, changed, "a 3.12 file, even with the legacy header, is left alone")
	require.Equal(t, legacy, out)

	cases := []struct {
		name string
		file []byte
		k    *Keys
	}{
		{"fail_empty_object", nil, oldKeys},
		{"fail_object_of_3_bytes", []byte{1, 2, 3}, oldKeys},
		{"fail_object_of_4_bytes", oldPub[:4], oldKeys},
		{"fail_old_total_len_5", mod(oldPub, func(b []byte) []byte { vecOrder.PutUint32(b, 5); return b }), nil},
		{"fail_old_total_len_0", mod(oldPub, func(b []byte) []byte { vecOrder.PutUint32(b, 0); return b }), nil},
		{"fail_old_public_truncated", oldPub[:len(oldPub)-1], nil},
		{"fail_old_private_truncated", oldPriv[:len(oldPriv)-8], oldKeys},
		{"fail_old_total_len_past_end", mod(oldPub, func(b []byte) []byte { vecOrder.PutUint32(b, uint32(len(b)+1)); return b }), nil},
		{"fail_old_total_len_4GiB", mod(oldPriv, func(b []byte) []byte { vecOrder.PutUint32(b, 0xFFFFFFFF); return b }), oldKeys},
		{"fail_old_ciphertext_not_multiple_of_8", mod(oldPriv, func(b []byte) []byte {
			b = append(b, 0)
			vecOrder.PutUint32(b, uint32(len(b)))
			return b
		}), oldKeys},
		{"fail_old_ciphertext_8_bytes", mod(oldPriv[:13], func(b []byte) []byte { vecOrder.PutUint32(b, 13); return b }), oldKeys},
		{"fail_old_private_flipped_ciphertext", mod(oldPriv, func(b []byte) []byte { b[40] ^= 1; return b }), oldKeys},
		{"fail_old_private_flipped_last_block", mod(oldPriv, func(b []byte) []byte { b[len(b)-9] ^= 1; return b }), oldKeys},
		{"fail_old_private_wrong_mk", oldPriv, &Keys{Format: FormatOld, OldMK: seq(1, 24)}},
		{"fail_old_private_N_past_ciphertext", encodeOldPrivateN(t, flat, oldKeys.OldMK, 0xFFFFFFFF), oldKeys},
		{"fail_old_private_N_leaves_no_room_for_hash", encodeOldPrivateN(t, flat, oldKeys.OldMK, uint32(len(flat)+8)), oldKeys},
		{"fail_old_private_N_too_small", encodeOldPrivateN(t, flat, oldKeys.OldMK, uint32(len(flat)-1)), oldKeys},
		{"fail_new_public_truncated", newPub[:len(newPub)-1], nil},
		{"fail_new_public_trailing_byte", append(bytes.Clone(newPub), 0), nil},
		{"fail_new_public_header_only_short", newPub[:15], nil},
		{"fail_new_public_4GiB_length", mod(newPub, func(b []byte) []byte { be.PutUint32(b[12:], 0xFFFFFFFF); return b }), nil},
		{"fail_new_public_reserved_nonzero", mod(newPub, func(b []byte) []byte { b[7] = 1; return b }), nil},
		{"fail_new_flag_byte_2", mod(newPub, func(b []byte) []byte { b[4] = 2; return b }), nil},
		{"fail_new_private_flipped_gcm_tag", mod(newPriv, func(b []byte) []byte { b[len(b)-1] ^= 1; return b }), newKeys},
		{"fail_new_private_flipped_ciphertext", mod(newPriv, func(b []byte) []byte { b[70] ^= 1; return b }), newKeys},
		{"fail_new_private_truncated", newPriv[:len(newPriv)-1], newKeys},
		{"fail_new_private_4GiB_length", mod(newPriv, func(b []byte) []byte { be.PutUint32(b[60:], 0xFFFFFFFF); return b }), newKeys},
		{"fail_new_private_zero_length", mod(newPriv[:80], func(b []byte) []byte { be.PutUint32(b[60:], 0); return b }), newKeys},
		{"fail_new_private_wrong_mk", newPriv, &Keys{Format: Format312, NewMK: seq(0x21, 32)}},
		{"fail_new_private_host_order_header", mod(newPriv, func(b []byte) []byte { vecOrder.PutUint32(b, Version312); return b }), newKeys},
	}
	for i := 0; i < privHdrLen; i++ {
		cases = append(cases, struct {
			name string
			file []byte
			k    *Keys
		}{"fail_new_private_flipped_header_byte_" + string(rune('0'+i/10)) + string(rune('0'+i%10)), mod(newPriv, func(b []byte) []byte { b[i] ^= 0x10; return b }), newKeys})
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o, err := DecodeObject(sampleName, c.file, c.k)
			require.Error(t, err)
			require.NotNil(t, o)
			require.Nil(t, o.Clear)
			if !errors.Is(err, ErrCorrupt) {
				// only a flipped version byte can turn a 3.12 private object into "old private
				// with 3.12 keys", which is a usage error, not data
				require.Contains(t, c.name, "flipped_header_byte_0", err.Error())
				return
			}
			checkCorruptFile(t, err, ObjectPath(sampleName))
			if !strings.HasPrefix(c.name, "fail_new") && c.k != nil && c.k != oldKeys {
				return
			}
			if strings.HasPrefix(c.name, "fail_new") && (c.k != newKeys || strings.Contains(c.name, "flipped")) {
				return // a well-formed 3.12 file is passed through without decryption
			}
			_, _, _, err = ReencryptObject(sampleName, c.file, oldKeys, newKeys, bytes.NewReader(seq(0x40, 32)))
			require.Error(t, err)
		})
	}

	t.Run("fail_keys_of_wrong_format", func(t *testing.T) {
		_, err := DecodeObject(sampleName, newPriv, oldKeys)
		require.Error(t, err)
		_, err = DecodeObject(sampleName, oldPriv, newKeys)
		require.Error(t, err)
	})
	t.Run("fail_encode_private_bad_name", func(t *testing.T) {
		for _, n := range []string{"", "1000000", "100000000", "1000/000", "10..0000"} {
			_, err := EncodePrivate312(n, flat, newKeys.NewMK, bytes.NewReader(seq(0x40, 32)))
			require.Error(t, err, n)
		}
	})
	t.Run("fail_reencrypt_without_new_keys", func(t *testing.T) {
		_, _, _, err := ReencryptObject(sampleName, oldPriv, oldKeys, nil, nil)
		require.Error(t, err)
	})
}

func TestIndex(t *testing.T) {
	for _, c := range []struct {
		name string
		in   string
		want []string
	}{
		{"good_idx_empty_file", "", []string{}},
		{"good_idx_final_newline", "OB123456\nOBabcdef\n", []string{"OB123456", "OBabcdef"}},
		{"good_idx_no_final_newline", "OB123456\nOBabcdef", []string{"OB123456", "OBabcdef"}},
		{"good_idx_empty_lines_kept", "\nOB123456\n\n", []string{"", "OB123456", ""}},
		{"good_idx_cr_kept", "OB12345\r\n", []string{"OB12345\r"}},
		{"good_idx_only_newline", "\n", []string{""}},
		{"good_idx_blank_not_trimmed", " OB12345\n", []string{" OB12345"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			require.Equal(t, c.want, ParseIndex([]byte(c.in)))
		})
	}
	for _, n := range []string{"OB123456", "00000000", "ZZZZZZZZ", "OB12345\r"} {
		require.NoError(t, ValidObjectName(n), n)
	}
	for _, n := range []string{"", "OB12345", "OB1234567", "OB1/3456", "../OB123", "OB..3456", "OB12\x00456", "........", ".", ".."} {
		err := ValidObjectName(n)
		require.ErrorIs(t, err, ErrCorrupt, "fail_idx_name %q", n)
		_, err = readObject(mapFS{}, n)
		require.ErrorIs(t, err, ErrCorrupt)
	}

	repo := mapFS{
		FileNVTok:          oldNV(defaultSOPIN, testUserPIN),
		FileMKSO:           encryptOldMK(t, seq(0, 24), defaultSOPIN),
		FileMKUser:         encryptOldMK(t, seq(0, 24), testUserPIN),
		FileIndex:          []byte("OB123456\n\nOBmissin\n"),
		"TOK_OBJ/OB123456": encodeOldPublic(unhex(t, sampleFlat)),
	}
	r, err := Load(repo)
	require.NoError(t, err)
	require.True(t, r.IndexPresent)
	require.Equal(t, []string{"OB123456", "", "OBmissin"}, r.Index)
	_, err = r.ReadObject("OB123456")
	require.NoError(t, err)
	_, err = r.ReadObject("")
	require.ErrorIs(t, err, ErrCorrupt)
	_, err = r.ReadObject("OBmissin")
	require.ErrorIs(t, err, fs.ErrNotExist, "fail_idx_names_missing_file")
	require.Contains(t, err.Error(), "TOK_OBJ/OBmissin")
	// ParseFlattened catches an object whose stored name is not its file name
	_, err = ParseFlattened("OB123456", unhex(t, sampleFlat))
	require.ErrorIs(t, err, ErrCorrupt)
}
