package tokens

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// flatBuilder writes flattened objects (§5.1, LE host) for tests.
type flatBuilder struct{ b []byte }

func newFlat(class uint32, count uint32, name string) *flatBuilder {
	f := &flatBuilder{b: make([]byte, 16)}
	vecOrder.PutUint32(f.b, class)
	vecOrder.PutUint32(f.b[4:], count)
	copy(f.b[8:], name)
	return f
}

func attr(typ uint32, val []byte) []byte {
	r := make([]byte, 12, 12+len(val))
	vecOrder.PutUint32(r, typ)
	vecOrder.PutUint32(r[8:], uint32(len(val)))
	return append(r, val...)
}

func u32(v uint32) []byte { b := make([]byte, 4); vecOrder.PutUint32(b, v); return b }
func u64(v uint64) []byte { b := make([]byte, 8); vecOrder.PutUint64(b, v); return b }

func (f *flatBuilder) add(recs ...[]byte) *flatBuilder {
	for _, r := range recs {
		f.b = append(f.b, r...)
	}
	return f
}

func TestParseFlattened(t *testing.T) {
	const name = "OB123456"
	tmpl := append(attr(ckaClass, u32(4)), attr(ckaKeyType, u32(0x1f))...)
	tmpl = append(tmpl, attr(ckaLabel, []byte("inner"))...)
	good := newFlat(0, 8, name).add(
		attr(ckaClass, u32(4)),
		attr(ckaKeyType, u32(0x1f)),
		attr(ckaWrapTemplate, tmpl),
		attr(0x40000600, []byte("0123456789abcdef")),
		attr(ckaLabel, []byte("outer")),
		attr(ckaID, []byte{0xa1, 0xa1}),
		attr(ckaValueLen, u32(32)),
		attr(0x166, u64(7)), // CKA_KEY_GEN_MECHANISM: an 8-byte ulong
		// CKA_ALLOWED_MECHANISMS above: plain bytes, not nested
	).b
	a, err := ParseFlattened(name, good)
	require.NoError(t, err, "good_nested_template_and_allowed_mechanisms")
	require.Equal(t, uint32(4), a.Class, "CKA_CLASS wins over the header's 0")
	require.Equal(t, uint32(0), a.HeaderClass)
	require.Equal(t, "CKO_SECRET_KEY", ClassName(a.Class))
	require.Equal(t, "outer", string(a.Label), "nested template attributes do not leak out")
	require.Equal(t, []byte{0xa1, 0xa1}, a.ID)
	require.Equal(t, uint32(0x1f), *a.KeyType)
	require.Equal(t, "CKK_AES", KeyTypeName(*a.KeyType))
	require.Nil(t, a.Token)
	require.Nil(t, a.Private)

	// header class used when CKA_CLASS is absent; trailing bytes ignored like the token library
	a, err = ParseFlattened(name, append(newFlat(3, 1, name).add(attr(ckaToken, []byte{1})).b, 0xEE))
	require.NoError(t, err)
	require.Equal(t, uint32(3), a.Class)
	require.True(t, *a.Token)

	nested := func(inner []byte) []byte {
		return newFlat(0, 1, name).add(attr(ckaUnwrapTemplate, inner)).b
	}
	deep := attr(ckaClass, u32(1))
	for i := 0; i <= maxTemplateNestingDepth; i++ {
		deep = attr(ckaDeriveTemplate, deep)
	}
	for _, c := range []struct {
		name string
		b    []byte
	}{
		{"fail_flat_empty", nil},
		{"fail_flat_short_header", good[:15]},
		{"fail_flat_name_mismatch", newFlat(0, 0, "OB654321").b},
		{"fail_flat_count_past_end", newFlat(0, 2, name).add(attr(ckaToken, []byte{1})).b},
		{"fail_flat_record_header_cut", good[:16+11]},
		{"fail_flat_value_past_end", good[:len(good)-1]},
		{"fail_flat_value_length_4GiB", func() []byte {
			b := newFlat(0, 1, name).add(attr(ckaLabel, []byte("x"))).b
			vecOrder.PutUint32(b[24:], 0xFFFFFFFF)
			return b
		}()},
		{"fail_flat_class_8_bytes", newFlat(0, 1, name).add(attr(ckaClass, u64(4))).b},
		{"fail_flat_modulus_bits_3_bytes", newFlat(0, 1, name).add(attr(ckaModulusBits, []byte{1, 2, 3})).b},
		{"fail_flat_nested_record_past_end", nested(append(attr(ckaClass, u32(1)), 1, 2, 3))},
		{"fail_flat_nested_32bit_wrong_length", nested(attr(ckaValueBits, u64(1)))},
		{"fail_flat_templates_too_deep", newFlat(0, 1, name).add(deep).b},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseFlattened(name, c.b)
			var ce *CorruptError
			require.ErrorAs(t, err, &ce)
			require.Equal(t, "TOK_OBJ/"+name, ce.File)
		})
	}
	require.Equal(t, "CKO_VENDOR_DEFINED", ClassName(0x80000000))
	require.Equal(t, "CKO_VENDOR_DEFINED+0x5", ClassName(0x80000005))
	require.Equal(t, "0x00000063", ClassName(99))
	require.Equal(t, "CKO_PROFILE", ClassName(9))
}
