package apply_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ocktools/pkcstok-migrate/apply"
	"github.com/ocktools/pkcstok-migrate/contract"
	"github.com/ocktools/pkcstok-migrate/internal/repofs"
	"github.com/ocktools/pkcstok-migrate/plan"
	"github.com/ocktools/pkcstok-migrate/tokens"
	"github.com/ocktools/pkcstok-migrate/tokens/tokentest"
)

// A big-endian repository (as on s390x) of every token type migrates on this host, whatever
// its order: every object's clear bytes, flattened body in big-endian order included, are
// unchanged, the 3.12 headers are big-endian, and NVTOK.DAT's token info carries over.
func TestApplyBigEndian(t *testing.T) {
	for _, tc := range []struct {
		typ  tokens.Type
		mk88 bool
	}{{tokens.TypeSoft, false}, {tokens.TypeICA, false}, {tokens.TypeCCA, true}, {tokens.TypeEP11, false}} {
		t.Run(tc.typ.String(), func(t *testing.T) {
			_, _, o := newToken(t) // skips without root or group
			root := t.TempDir()
			g, err := tokentest.WriteOldWithConf(root, 3, tokentest.Options{Type: tc.typ, SOPIN: "so-pin-1", UserPIN: "user-pin-2", N: 10, Seed: 5, MK88: tc.mk88, Order: binary.BigEndian})
			require.NoError(t, err)
			ds, confdir := filepath.Join(root, "swtok"), filepath.Join(root, "conf")
			oldNV, err := os.ReadFile(filepath.Join(ds, "NVTOK.DAT"))
			require.NoError(t, err)
			req := plan.Options{Slot: 3, Datastore: ds, Confdir: confdir, SOPIN: []byte("so-pin-1"), UserPIN: []byte("user-pin-2")}
			res, err := apply.Run(req, nil, o)
			require.NoError(t, err)
			require.True(t, res.RepositoryChanged)
			require.Equal(t, 10, res.ObjectsMigrated)

			d, err := repofs.OpenDir(ds)
			require.NoError(t, err)
			defer d.Close()
			repo, err := tokens.Load(d)
			require.NoError(t, err)
			require.Equal(t, tokens.Format312, repo.NV.Format)
			old, err := tokens.ParseNVToken(oldNV)
			require.NoError(t, err)
			require.Equal(t, old.Info, repo.NV.Info)
			k, err := repo.Unlock([]byte("so-pin-1"), []byte("user-pin-2"))
			require.NoError(t, err)
			defer k.Wipe()
			for i, name := range repo.Index {
				file, err := repo.ReadObject(name)
				require.NoError(t, err)
				require.True(t, bytes.HasPrefix(file, []byte{0, 3, 0, 12}), name)
				ob, err := tokens.DecodeObjectOrder(name, file, tokens.BigEndian, k)
				require.NoError(t, err)
				require.Equal(t, g.Objects[i].ClearSHA256, sha256.Sum256(ob.Clear), name)
			}
			// Planned again: nothing to do, still big-endian.
			p, err := plan.Make(plan.Options{Slot: 3, Datastore: ds, Confdir: confdir, SOPIN: []byte("so-pin-1"), UserPIN: []byte("user-pin-2"), ProcRoot: o.ProcRoot, PIDFiles: o.PIDFiles})
			require.NoError(t, err)
			require.False(t, p.Changed)
			require.Equal(t, "big-endian", p.ByteOrder)
		})
	}
}

// An object of the other byte order is refused before anything is switched.
func TestApplyRefusesMixedByteOrder(t *testing.T) {
	_, _, o := newToken(t)
	root := t.TempDir()
	_, err := tokentest.WriteOldWithConf(root, 3, tokentest.Options{Type: tokens.TypeSoft, SOPIN: "so-pin-1", UserPIN: "user-pin-2", N: 6, Seed: 5, Order: binary.BigEndian})
	require.NoError(t, err)
	leRoot := t.TempDir()
	_, err = tokentest.WriteOldWithConf(leRoot, 3, tokentest.Options{Type: tokens.TypeSoft, SOPIN: "so-pin-1", UserPIN: "user-pin-2", N: 6, Seed: 5})
	require.NoError(t, err)
	ds, confdir := filepath.Join(root, "swtok"), filepath.Join(root, "conf")
	le, err := os.ReadFile(filepath.Join(leRoot, "swtok", "TOK_OBJ", tokentest.CounterName(2)))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(ds, "TOK_OBJ", tokentest.CounterName(2)), le, 0o660))
	before := tree(t, root)
	_, err = apply.Run(plan.Options{Slot: 3, Datastore: ds, Confdir: confdir, SOPIN: []byte("so-pin-1"), UserPIN: []byte("user-pin-2")}, nil, o)
	require.Error(t, err)
	require.Equal(t, contract.CodeByteOrder, contract.CodeOf(err))
	require.Equal(t, before, tree(t, root), "nothing changed")
}
