package tokens

import (
	"crypto/aes"
	"testing"

	"github.com/stretchr/testify/require"
)

// RFC 3394 §4.1–4.6 (§4.6 is also doc/format.md §11.1).
func TestKeyWrapRFC3394(t *testing.T) {
	const data128 = "00112233445566778899AABBCCDDEEFF"
	const data192 = data128 + "0001020304050607"
	const data256 = data128 + "000102030405060708090A0B0C0D0E0F"
	for _, c := range []struct{ name, kek, data, wrapped string }{
		{"4.1_128_kek_128_data", "000102030405060708090A0B0C0D0E0F", data128, "1FA68B0A8112B447AEF34BD8FB5A7B829D3E862371D2CFE5"},
		{"4.2_192_kek_128_data", "000102030405060708090A0B0C0D0E0F1011121314151617", data128, "96778B25AE6CA435F92B5B97C050AED2468AB8A17AD84E5D"},
		{"4.3_256_kek_128_data", "000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F", data128, "64E8C3F9CE0F5BA263E9777905818A2A93C8191E7D6E8AE7"},
		{"4.4_192_kek_192_data", "000102030405060708090A0B0C0D0E0F1011121314151617", data192, "031D33264E15D33268F24EC260743EDCE1C6C7DDEE725A936BA814915C6762D2"},
		{"4.5_256_kek_192_data", "000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F", data192, "A8F9BC1612C68B3FF6E6F4FBE30E71E4769C8B80A32CB8958CD5D17D6B254DA1"},
		{"4.6_256_kek_256_data", "000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F", data256, "28C9F404C4B810F4CBCCB35CFB87F8263F5786E2D80ED326CBC7F0E71A99F43BFB988B9B7A02DD21"},
	} {
		t.Run(c.name, func(t *testing.T) {
			kek, err := aes.NewCipher(unhex(t, c.kek))
			require.NoError(t, err)
			got, err := keyWrap(kek, unhex(t, c.data))
			require.NoError(t, err)
			require.Equal(t, unhex(t, c.wrapped), got)
			back, err := keyUnwrap(kek, got)
			require.NoError(t, err)
			require.Equal(t, unhex(t, c.data), back)
			for i := range got { // any flipped bit fails the integrity check
				bad := append([]byte(nil), got...)
				bad[i] ^= 1
				out, err := keyUnwrap(kek, bad)
				require.ErrorIs(t, err, errKeyWrapIntegrity)
				require.Nil(t, out)
			}
		})
	}
	kek, err := aes.NewCipher(make([]byte, 32))
	require.NoError(t, err)
	for _, n := range []int{0, 8, 15, 17} {
		_, err := keyWrap(kek, make([]byte, n))
		require.Error(t, err)
	}
	for _, n := range []int{0, 8, 16, 23, 25} {
		_, err := keyUnwrap(kek, make([]byte, n))
		require.Error(t, err)
	}
}

func TestTypeAndFormat(t *testing.T) {
	for _, c := range []struct {
		in    string
		t     Type
		exact bool
	}{
		{"libpkcs11_sw.so", TypeSoft, true},
		{"libpkcs11_ica.so", TypeICA, true},
		{"libpkcs11_cca.so", TypeCCA, true},
		{"libpkcs11_ep11.so", TypeEP11, true},
		{"/usr/lib64/opencryptoki/stdll/libpkcs11_sw.so", TypeSoft, false},
		{"libpkcs11_cca.so.0", TypeCCA, false},
		{"libpkcs11_ep11.so.0.1", TypeEP11, false},
		{"libpkcs11_ep11.so.", TypeUnknown, false},
		{"libpkcs11_ep11.so.x", TypeUnknown, false},
		{"libpkcs11_tpm.so", TypeUnknown, false},
		{"", TypeUnknown, false},
	} {
		got, exact := TypeFromStdll(c.in)
		require.Equal(t, c.t, got, c.in)
		require.Equal(t, c.exact, exact, c.in)
	}
	require.Equal(t, "Soft", TypeSoft.String())
	require.Equal(t, "ep11tok", TypeEP11.DefaultDir())
	require.Equal(t, "lite", TypeICA.DefaultDir())
	require.Equal(t, "ccatok", TypeCCA.DefaultDir())
	require.Equal(t, "", TypeUnknown.DefaultDir())
	require.Equal(t, "unknown/unsupported", Type(42).String())
	require.Equal(t, "3.12", Format312.String())
	require.Equal(t, "old", FormatOld.String())
	require.Equal(t, "unknown", FormatUnknown.String())
}
