package plan

import (
	"crypto/sha256"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	json "github.com/goccy/go-json"
	"github.com/stretchr/testify/require"

	"github.com/ocktools/pkcstok-migrate/contract"
	"github.com/ocktools/pkcstok-migrate/internal/layout"
	"github.com/ocktools/pkcstok-migrate/schema"
	"github.com/ocktools/pkcstok-migrate/tokens"
	"github.com/ocktools/pkcstok-migrate/tokens/tokentest"
)

// treeDigest hashes names, modes, mtimes and contents under dir: info must change none.
func treeDigest(t *testing.T, dir string) string {
	t.Helper()
	h := sha256.New()
	require.NoError(t, filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		st, err := d.Info()
		if err != nil {
			return err
		}
		fmt.Fprintf(h, "%s %v %d\n", p, st.Mode(), st.ModTime().UnixNano())
		if st.Mode().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			h.Write(b)
		}
		return nil
	}))
	return fmt.Sprintf("%x", h.Sum(nil))
}

// Every token type, each in the directory the token library uses for it, without PINs.
func TestInventoryEveryTokenType(t *testing.T) {
	for _, tc := range []struct {
		typ  tokens.Type
		mk88 bool
	}{{tokens.TypeSoft, false}, {tokens.TypeICA, false}, {tokens.TypeCCA, true}, {tokens.TypeEP11, false}} {
		t.Run(tc.typ.String(), func(t *testing.T) {
			dir := t.TempDir()
			_, err := tokentest.WriteOldWithConf(dir, 3, tokentest.Options{Type: tc.typ, SOPIN: "sopin123", UserPIN: "user1234", N: 12, Seed: 7, MK88: tc.mk88})
			require.NoError(t, err)
			if d := tc.typ.DefaultDir(); d != "swtok" {
				require.NoError(t, os.Rename(filepath.Join(dir, "swtok"), filepath.Join(dir, d)))
			}
			before := treeDigest(t, dir)
			inv, err := MakeInventory(Options{Confdir: filepath.Join(dir, "conf"), StateBase: dir, ProcRoot: t.TempDir(), PIDFiles: []string{}})
			require.NoError(t, err)
			require.Equal(t, before, treeDigest(t, dir), "info changed the tree")
			require.NoError(t, schema.ValidateValue(schema.Info, inv))
			require.True(t, inv.NeedsMigration)
			var s *contract.SlotInfo
			for i := range inv.Slots {
				if inv.Slots[i].Slot == 3 {
					s = &inv.Slots[i]
				}
			}
			require.NotNil(t, s)
			require.Equal(t, tc.typ.String(), s.TokenType)
			require.Equal(t, filepath.Join(dir, tc.typ.DefaultDir()), s.Datastore)
			require.Equal(t, contract.FormatOld, s.Format)
			require.Equal(t, "little-endian", s.ByteOrder)
			require.NotNil(t, s.Objects)
			require.Equal(t, 12, *s.Objects)
			require.Equal(t, "absent", s.TokVersion)
			require.True(t, s.NeedsMigration)
			b, err := json.Marshal(inv)
			require.NoError(t, err)
			require.NotContains(t, string(b), "sopin123")
			require.NotContains(t, string(b), "user1234")
		})
	}
}

// Only an unreadable conf is an error; its code is conf_invalid.
func TestInventoryConfErrors(t *testing.T) {
	_, err := MakeInventory(Options{Confdir: t.TempDir()})
	require.Equal(t, contract.CodeConfInvalid, contract.CodeOf(err))

	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, layout.ConfName), []byte("slot 1 {\n stdll = \n"), 0o644))
	_, err = MakeInventory(Options{Confdir: dir})
	require.Equal(t, contract.CodeConfInvalid, contract.CodeOf(err))

	_, err = MakeInventory(Options{})
	require.Equal(t, contract.CodeBadRequest, contract.CodeOf(err))
}

// A slot whose block is unusable is named in the warnings; the others are still listed.
func TestInventoryBadSlotIsAWarning(t *testing.T) {
	dir := t.TempDir()
	conf := "slot 1 {\n stdll = libpkcs11_sw.so\n}\nslot 2 {\n description = nothing\n}\n"
	require.NoError(t, os.WriteFile(filepath.Join(dir, layout.ConfName), []byte(conf), 0o644))
	inv, err := MakeInventory(Options{Confdir: dir, StateBase: dir})
	require.NoError(t, err)
	require.NoError(t, schema.ValidateValue(schema.Info, inv))
	require.Len(t, inv.Slots, 1)
	require.Equal(t, contract.FormatMissing, inv.Slots[0].Format)
	require.False(t, inv.NeedsMigration)
	require.Len(t, inv.Warnings, 1)
	require.Contains(t, inv.Warnings[0], "slot 2")
}
