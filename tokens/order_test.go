package tokens_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ocktools/pkcstok-migrate/internal/repofs"
	"github.com/ocktools/pkcstok-migrate/tokens"
	"github.com/ocktools/pkcstok-migrate/tokens/tokentest"
	"github.com/stretchr/testify/require"
)

func oldNVTok(t *testing.T, enc tokentest.Encoding, edit func(f *tokentest.NVTokenFields)) []byte {
	t.Helper()
	user := "user-pin"
	f := tokentest.DefaultNVTokenFields(tokens.TypeSoft, "order", "so-pin", &user)
	if edit != nil {
		edit(&f)
	}
	b, err := enc.OldNVToken(f)
	require.NoError(t, err)
	return b
}

func TestNVTokenOrder(t *testing.T) {
	for _, c := range []struct {
		name string
		enc  tokentest.Encoding
		want tokens.ByteOrder
	}{
		{"good_le_nvtok", tokentest.LE, tokens.LittleEndian},
		{"good_be_nvtok", tokentest.BE, tokens.BigEndian},
	} {
		t.Run(c.name, func(t *testing.T) {
			b := oldNVTok(t, c.enc, nil)
			o, ev, err := tokens.NVTokenOrder(b)
			require.NoError(t, err)
			require.Equal(t, c.want, o)
			require.Equal(t, c.want, ev.Order)
			require.Equal(t, "NVTOK.DAT", ev.File)
			require.Contains(t, ev.Reason, "max PIN length 8")
			nv, err := tokens.ParseNVToken(b)
			require.NoError(t, err)
			require.Equal(t, c.want, nv.Order)
			require.Equal(t, uint32(8), nv.Info.MaxPinLen)
			require.Equal(t, uint32(4), nv.Info.MinPinLen)
			require.Equal(t, tokentest.FlagsUsable, nv.Info.Flags)
			require.Equal(t, [4]int32{1, 0, 1, 1}, nv.Tweaks)
		})
	}

	t.Run("good_symmetric_nvtok_needs_no_order", func(t *testing.T) {
		// Every integer reads the same both ways: the 3.12 image is the same either way.
		b := oldNVTok(t, tokentest.LE, func(f *tokentest.NVTokenFields) {
			f.Flags = 0
			f.Counters = [10]uint32{}
			f.Tweaks = [4]int32{}
		})
		o, _, err := tokens.NVTokenOrder(b)
		require.NoError(t, err)
		require.Equal(t, tokens.OrderUnknown, o)
	})

	t.Run("good_weak_witnesses_decide_when_strong_ones_are_silent", func(t *testing.T) {
		b := oldNVTok(t, tokentest.BE, func(f *tokentest.NVTokenFields) {
			f.Flags = 0
			f.Counters = [10]uint32{0, 0, 0, 0, 0, 0, 100, 100, 0, 0}
			f.Tweaks = [4]int32{}
		})
		o, ev, err := tokens.NVTokenOrder(b)
		require.NoError(t, err)
		require.Equal(t, tokens.BigEndian, o)
		require.Contains(t, ev.Reason, "total public memory 100")
	})

	t.Run("fail_nvtok_contradicts_itself", func(t *testing.T) {
		b := oldNVTok(t, tokentest.LE, nil)
		binary.BigEndian.PutUint32(b[116:], 8)
		binary.BigEndian.PutUint32(b[120:], 4)
		_, _, err := tokens.NVTokenOrder(b)
		require.ErrorIs(t, err, tokens.ErrByteOrder)
		require.ErrorIs(t, err, tokens.ErrCorrupt)
		require.Contains(t, err.Error(), "NVTOK.DAT: its fields contradict each other")
		// Which fields, not their values: those are bytes of the file, and errors carry no repository bytes.
		require.Contains(t, err.Error(), "max PIN length, min PIN length read big-endian")
		require.NotContains(t, err.Error(), "134217728")
		_, err = tokens.ParseNVToken(b)
		require.ErrorIs(t, err, tokens.ErrByteOrder)
	})

	t.Run("fail_nvtok_undecidable", func(t *testing.T) {
		// Fields that differ by order, but none that says which reading is right.
		b := oldNVTok(t, tokentest.LE, func(f *tokentest.NVTokenFields) {
			f.Flags = 0x0100
			f.Counters = [10]uint32{}
			f.Tweaks = [4]int32{}
		})
		_, _, err := tokens.NVTokenOrder(b)
		require.ErrorIs(t, err, tokens.ErrByteOrder)
		require.Contains(t, err.Error(), "none of them tells")
	})
}

func TestDecideOrder(t *testing.T) {
	nvLE := tokens.Evidence{File: "NVTOK.DAT", Order: tokens.LittleEndian, Reason: "max PIN length 8"}
	obj := func(name string, o tokens.ByteOrder) tokens.Evidence {
		return tokens.Evidence{File: "TOK_OBJ/" + name, Order: o, Reason: "total_len"}
	}
	o, ev, err := tokens.DecideOrder(nvLE, []tokens.Evidence{obj("OB000001", tokens.LittleEndian), {}, obj("OB000002", tokens.LittleEndian)})
	require.NoError(t, err)
	require.Equal(t, tokens.LittleEndian, o)
	require.Len(t, ev, 3) // NVTOK.DAT, the first object, "1 more"

	_, _, err = tokens.DecideOrder(nvLE, []tokens.Evidence{obj("OB000001", tokens.LittleEndian), obj("OB000002", tokens.BigEndian)})
	require.ErrorIs(t, err, tokens.ErrByteOrder)
	require.Contains(t, err.Error(), "TOK_OBJ/OB000002: written in big-endian byte order")

	// Without NVTOK.DAT evidence (3.12) the minority is named.
	_, _, err = tokens.DecideOrder(tokens.Evidence{}, []tokens.Evidence{obj("A0000000", tokens.BigEndian), obj("B0000000", tokens.LittleEndian), obj("C0000000", tokens.BigEndian)})
	require.ErrorIs(t, err, tokens.ErrByteOrder)
	require.Contains(t, err.Error(), "TOK_OBJ/B0000000")

	o, ev, err = tokens.DecideOrder(tokens.Evidence{}, nil)
	require.NoError(t, err)
	require.Equal(t, tokens.OrderUnknown, o)
	require.Empty(t, ev)
}

// TestBigEndianRepositories: tokentest writes big-endian repositories of all four token types
// (CCA with 88-byte MK files); each is found big-endian on this host whatever its own order,
// unlocks, and converts to a 3.12 repository whose objects decrypt to the same clear bytes,
// with the flattened bodies still big-endian.
func TestBigEndianRepositories(t *testing.T) {
	for _, c := range []struct {
		typ  tokens.Type
		mk88 bool
	}{{tokens.TypeSoft, false}, {tokens.TypeICA, false}, {tokens.TypeCCA, true}, {tokens.TypeEP11, false}} {
		t.Run("good_be_"+strings.ToLower(c.typ.String()), func(t *testing.T) {
			t.Parallel()
			dir := filepath.Join(t.TempDir(), "repo")
			g, err := tokentest.WriteOld(dir, tokentest.Options{Type: c.typ, SOPIN: "be-so-pin", UserPIN: "be-user", MK88: c.mk88, N: 12, Seed: 11, Order: binary.BigEndian})
			require.NoError(t, err)
			d, err := repofs.OpenDir(dir)
			require.NoError(t, err)
			defer d.Close()
			repo, err := tokens.Load(d)
			require.NoError(t, err)
			require.Equal(t, tokens.BigEndian, repo.NV.Order)
			keys, err := repo.Unlock([]byte("be-so-pin"), []byte("be-user"))
			require.NoError(t, err)
			defer keys.Wipe()
			up, err := newUpgrade(repo, []byte("be-so-pin"), []byte("be-user"), rand.NewChaCha8([32]byte{1}))
			require.NoError(t, err)
			defer up.Keys.Wipe()
			nv, err := tokens.ParseNVToken(up.NVToken)
			require.NoError(t, err)
			require.Equal(t, repo.NV.Info, nv.Info, "token info carried over into the big-endian 3.12 integers")
			require.Equal(t, repo.NV.Tweaks, nv.Tweaks)

			var evidence []tokens.Evidence
			for i, name := range repo.Index {
				file, err := repo.ReadObject(name)
				require.NoError(t, err)
				o, err := tokens.DecodeObjectOrder(name, file, tokens.BigEndian, keys)
				require.NoError(t, err)
				require.Equal(t, tokens.BigEndian, o.Order, "%s: %s", name, o.OrderEvidence())
				evidence = append(evidence, o.OrderEvidence())
				require.Equal(t, g.Objects[i].ClearSHA256, sha256.Sum256(o.Clear), name)
				a, err := tokens.ParseFlattenedOrder(name, o.Clear, tokens.BigEndian)
				require.NoError(t, err)
				require.Equal(t, g.Objects[i].Class, a.Class, name)
				require.Equal(t, g.Objects[i].Label, string(a.Label), name)

				// Decoding it as little-endian is a mixed-order error naming the file.
				_, err = tokens.DecodeObjectOrder(name, file, tokens.LittleEndian, keys)
				require.ErrorIs(t, err, tokens.ErrByteOrder, name)
				require.Contains(t, err.Error(), "TOK_OBJ/"+name)

				out, clear, changed, err := reencryptOrder(name, file, tokens.BigEndian, keys, up.Keys, rand.NewChaCha8([32]byte{byte(i)}))
				require.NoError(t, err)
				require.True(t, changed)
				require.Equal(t, []byte{0, 3, 0, 12}, out[:4], "3.12 headers are big-endian on every host")
				n, err := tokens.DecodeObjectOrder(name, out, tokens.BigEndian, up.Keys)
				require.NoError(t, err)
				require.Equal(t, clear, n.Clear)
				require.Equal(t, g.Objects[i].ClearSHA256, sha256.Sum256(n.Clear))
				if !o.Private {
					require.Equal(t, tokens.BigEndian, n.Order, "the body of a public 3.12 object still shows big-endian")
					// A 3.12 object is taken as it is.
					again, _, changed, err := reencryptOrder(name, out, tokens.BigEndian, keys, up.Keys, nil)
					require.NoError(t, err)
					require.False(t, changed)
					require.Equal(t, out, again)
				}
			}
			o, _, err := tokens.DecideOrder(repo.NV.OrderEvidence, evidence)
			require.NoError(t, err)
			require.Equal(t, tokens.BigEndian, o)
		})
	}
}

// TestObjectOrderEdges: the cases where total_len alone does not tell.
func TestObjectOrderEdges(t *testing.T) {
	flatBE := tokentest.BE.Flatten(tokentest.CKOData, "OBedge01", []tokentest.Attr{
		tokentest.BE.UlongAttr(tokentest.CKAClass, uint64(tokentest.CKOData)),
		tokentest.StringAttr(tokentest.CKALabel, "edge"),
	})

	t.Run("good_be_old_object_of_196620_bytes_looks_like_3.12", func(t *testing.T) {
		// total_len 0x0003000C big-endian is the 3.12 version number (§5.5).
		flat := append(bytes.Clone(flatBE), make([]byte, int(tokens.Version312)-5-len(flatBE))...)
		file := tokentest.BE.EncodeOldPublic(flat)
		require.Len(t, file, int(tokens.Version312))
		require.Equal(t, []byte{0, 3, 0, 12}, file[:4])
		for _, ord := range []tokens.ByteOrder{tokens.BigEndian, tokens.OrderUnknown} {
			o, err := tokens.DecodeObjectOrder("OBedge01", file, ord, nil)
			require.NoError(t, err, ord)
			require.Equal(t, tokens.FormatOld, o.Format)
			require.Equal(t, tokens.BigEndian, o.Order)
			require.Equal(t, flat, o.Clear)
		}
		out, _, changed, err := reencryptOrder("OBedge01", file, tokens.BigEndian, nil, nil, nil)
		require.NoError(t, err)
		require.True(t, changed)
		require.Equal(t, tokens.EncodePublic312(flat), out)
	})

	t.Run("good_both_total_len_readings_fit_the_content_decides", func(t *testing.T) {
		// total_len 00 01 02 00 is 66048 big-endian and 131328 little-endian; the file is
		// padded to 131328 bytes, so both readings fit and the little-endian one even equals
		// the file size. The repository's order (big-endian) decides.
		flat := append(bytes.Clone(flatBE), make([]byte, 0x00010200-5-len(flatBE))...)
		file := tokentest.BE.EncodeOldPublic(flat)
		file = append(file, make([]byte, 0x00020100-len(file))...) // little-endian reading 0x00020100 fits too, and is the file size
		o, err := tokens.DecodeObjectOrder("OBedge01", file, tokens.BigEndian, nil)
		require.NoError(t, err)
		require.Equal(t, flat, o.Clear)
	})

	t.Run("fail_le_legacy_header_in_be_repository", func(t *testing.T) {
		file := tokens.EncodePublic312(tokentest.LE.Flatten(tokentest.CKOData, "OBedge01", []tokentest.Attr{tokentest.LE.UlongAttr(tokentest.CKAClass, 0)}))
		binary.LittleEndian.PutUint32(file, tokens.Version312)
		binary.LittleEndian.PutUint32(file[12:], binary.BigEndian.Uint32(file[12:]))
		o, err := tokens.DecodeObjectOrder("OBedge01", file, tokens.OrderUnknown, nil)
		require.NoError(t, err)
		require.True(t, o.LegacyHostOrderHeader)
		require.Equal(t, tokens.LittleEndian, o.Order)
		_, err = tokens.DecodeObjectOrder("OBedge01", file, tokens.BigEndian, nil)
		require.ErrorIs(t, err, tokens.ErrByteOrder)
	})

	t.Run("fail_header_and_body_disagree", func(t *testing.T) {
		file := tokentest.LE.EncodeOldPublic(flatBE) // little-endian total_len, big-endian body
		_, err := tokens.DecodeObject("OBedge01", file, nil)
		require.ErrorIs(t, err, tokens.ErrByteOrder)
		require.Contains(t, err.Error(), "its header says little-endian")
	})

	t.Run("good_flattened_order_found_from_the_body", func(t *testing.T) {
		a, err := tokens.ParseFlattened("OBedge01", flatBE)
		require.NoError(t, err)
		require.Equal(t, tokens.BigEndian, a.Order)
		require.Equal(t, "edge", string(a.Label))
		_, err = tokens.ParseFlattenedOrder("OBedge01", flatBE, tokens.LittleEndian)
		require.ErrorIs(t, err, tokens.ErrCorrupt)
	})

	t.Run("good_no_attributes_either_order", func(t *testing.T) {
		flat := tokentest.BE.Flatten(0, "OBedge01", nil) // class 0, no attributes: nothing to tell
		a, err := tokens.ParseFlattened("OBedge01", flat)
		require.NoError(t, err)
		require.Equal(t, tokens.OrderUnknown, a.Order)
	})

	t.Run("fail_no_attributes_class_differs_by_order", func(t *testing.T) {
		flat := tokentest.BE.Flatten(4, "OBedge01", nil)
		_, err := tokens.ParseFlattened("OBedge01", flat)
		require.ErrorIs(t, err, tokens.ErrByteOrder)
	})
}

func TestHostByteOrder(t *testing.T) {
	h := tokens.HostByteOrder()
	require.NotEqual(t, tokens.OrderUnknown, h)
	b := make([]byte, 2)
	h.Binary().PutUint16(b, 1)
	require.Equal(t, uint16(1), binary.NativeEndian.Uint16(b))
	require.True(t, errors.Is(&tokens.OrderError{}, tokens.ErrCorrupt))
	for _, o := range []tokens.ByteOrder{tokens.LittleEndian, tokens.BigEndian} {
		p, err := tokens.ParseByteOrder(o.String())
		require.NoError(t, err)
		require.Equal(t, o, p)
	}
}

// reencryptOrder is tokens.Reencrypt giving the parts of its result.
func reencryptOrder(name string, file []byte, ord tokens.ByteOrder, oldKeys, newKeys *tokens.Keys, rnd io.Reader) (out, clear []byte, changed bool, err error) {
	r, err := tokens.Reencrypt(name, file, ord, oldKeys, newKeys, rnd)
	if err != nil {
		return nil, nil, false, err
	}
	return r.Out, r.Clear, r.Changed, nil
}

// newUpgrade is StartUpgrade and Wait.
func newUpgrade(r *tokens.Repository, soPIN, userPIN []byte, rnd io.Reader) (*tokens.Upgrade, error) {
	p, err := r.StartUpgrade(soPIN, userPIN, rnd)
	if err != nil {
		return nil, err
	}
	return p.Wait()
}
