package plan

import (
	"encoding/binary"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	json "github.com/goccy/go-json"
	"github.com/stretchr/testify/require"

	"github.com/ocktools/pkcstok-migrate/contract"
	"github.com/ocktools/pkcstok-migrate/internal/layout"
	"github.com/ocktools/pkcstok-migrate/schema"
	"github.com/ocktools/pkcstok-migrate/tokens"
	"github.com/ocktools/pkcstok-migrate/tokens/tokentest"
)

// newRepo writes a generated old-format token of the given type (slot 3) and its conf.
func newRepo(t *testing.T, typ tokens.Type, mk88 bool) (ds, confdir string) {
	t.Helper()
	dir := t.TempDir()
	_, err := tokentest.WriteOldWithConf(dir, 3, tokentest.Options{Type: typ, SOPIN: "sopin123", UserPIN: "user1234", N: 12, Seed: 7, MK88: mk88})
	require.NoError(t, err)
	return filepath.Join(dir, "swtok"), filepath.Join(dir, "conf")
}

// Every token type goes through the same plan; the type comes from the slot's stdll.
func TestPlanEveryTokenType(t *testing.T) {
	for _, tc := range []struct {
		typ  tokens.Type
		mk88 bool
	}{{tokens.TypeSoft, false}, {tokens.TypeICA, false}, {tokens.TypeCCA, true}, {tokens.TypeEP11, false}} {
		t.Run(tc.typ.String(), func(t *testing.T) {
			ds, confdir := newRepo(t, tc.typ, tc.mk88)
			p, err := Make(Options{Slot: 3, Datastore: ds, Confdir: confdir, SOPIN: []byte("sopin123"), UserPIN: []byte("user1234"), ProcRoot: t.TempDir(), PIDFiles: []string{}})
			require.NoError(t, err)
			require.Equal(t, tc.typ.String(), p.TokenType)
			require.Equal(t, contract.FormatOld, p.Format)
			require.True(t, p.Changed)
			require.Equal(t, 12, p.Counts.Total)
			require.Equal(t, p.Counts.Private, p.Counts.Reencrypt)
			require.Equal(t, p.Counts.Public, p.Counts.RewrapHeader)
			require.Contains(t, p.ConfDiff, "+  tokversion = 3.12")
			require.NoError(t, schema.ValidateValue(schema.Plan, p))
		})
	}
}

// A plan holds no PIN and nothing derived from one: it is safe as a CI artifact.
func TestPlanHoldsNoSecret(t *testing.T) {
	ds, confdir := newRepo(t, tokens.TypeSoft, false)
	p, err := Make(Options{Slot: 3, Datastore: ds, Confdir: confdir, SOPIN: []byte("sopin123"), UserPIN: []byte("user1234"), ProcRoot: t.TempDir(), PIDFiles: []string{}})
	require.NoError(t, err)
	b, err := json.Marshal(p)
	require.NoError(t, err)
	for _, secret := range []string{"sopin123", "user1234", hex.EncodeToString([]byte("sopin123")), hex.EncodeToString([]byte("user1234"))} {
		require.NotContains(t, string(b), secret)
	}
}

// The fingerprint covers every byte and mode of the repository and the conf bytes.
func TestFingerprintTracksState(t *testing.T) {
	ds, confdir := newRepo(t, tokens.TypeSoft, false)
	o := Options{Slot: 3, Datastore: ds, Confdir: confdir, ProcRoot: t.TempDir(), PIDFiles: []string{}}
	first, err := Make(o)
	require.NoError(t, err)
	again, err := Make(o)
	require.NoError(t, err)
	require.Equal(t, first.Fingerprint, again.Fingerprint)

	conf := filepath.Join(confdir, layout.ConfName)
	orig, err := os.ReadFile(conf)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(conf, append(append([]byte{}, orig...), '\n'), 0o644))
	changed, err := Make(o)
	require.NoError(t, err)
	require.NotEqual(t, first.Fingerprint, changed.Fingerprint, "conf edit")
	require.NoError(t, os.WriteFile(conf, orig, 0o644))

	require.NoError(t, os.Chmod(filepath.Join(ds, "MK_SO"), 0o640))
	changed, err = Make(o)
	require.NoError(t, err)
	require.NotEqual(t, first.Fingerprint, changed.Fingerprint, "mode change")
}

// Without PINs the plan still lists every object and says what it could not see.
func TestPlanWithoutPINs(t *testing.T) {
	ds, confdir := newRepo(t, tokens.TypeSoft, false)
	p, err := Make(Options{Slot: 3, Datastore: ds, Confdir: confdir, ProcRoot: t.TempDir(), PIDFiles: []string{}})
	require.NoError(t, err)
	require.False(t, p.PINsChecked)
	require.Len(t, p.Objects, 12)
	require.NotEmpty(t, p.Incomplete)
	for _, o := range p.Objects {
		if o.Private {
			require.Nil(t, o.Class, o.File)
		} else {
			require.NotNil(t, o.Class, o.File)
		}
	}
}

// Codes for what the conf says about the slot.
func TestPlanConfErrors(t *testing.T) {
	ds, confdir := newRepo(t, tokens.TypeSoft, false)
	conf := filepath.Join(confdir, layout.ConfName)
	for _, tc := range []struct {
		name, content string
		slot          int
		code          contract.Code
	}{
		{"fail_slot_missing", "slot 1 {\n stdll = libpkcs11_sw.so\n}\n", 3, contract.CodeSlotNotFound},
		{"fail_tpm_unsupported", "slot 3 {\n stdll = libpkcs11_tpm.so\n}\n", 3, contract.CodeUnsupportedToken},
		{"fail_syntax", "slot 3 {\n stdll = \n}\n", 3, contract.CodeConfInvalid},
		{"fail_tokversion_bare_word", "slot 3 {\n stdll = libpkcs11_sw.so\n tokversion = new\n}\n", 3, contract.CodeConfInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.NoError(t, os.WriteFile(conf, []byte(tc.content), 0o644))
			_, err := Make(Options{Slot: tc.slot, Datastore: ds, Confdir: confdir, ProcRoot: t.TempDir(), PIDFiles: []string{}})
			require.Error(t, err)
			require.Equal(t, tc.code, contract.CodeOf(err), err.Error())
			require.False(t, strings.Contains(err.Error(), "sopin123"))
		})
	}
}

// newRepoOrder is newRepo in a given byte order.
func newRepoOrder(t *testing.T, typ tokens.Type, mk88 bool, order tokentest.ByteOrder) (ds, confdir string) {
	t.Helper()
	dir := t.TempDir()
	_, err := tokentest.WriteOldWithConf(dir, 3, tokentest.Options{Type: typ, SOPIN: "sopin123", UserPIN: "user1234", N: 12, Seed: 7, MK88: mk88, Order: order})
	require.NoError(t, err)
	return filepath.Join(dir, "swtok"), filepath.Join(dir, "conf")
}

// The byte order is the repository's, found from its bytes on any host; a repository of the
// other order than this host's gets a warning (this host's token library cannot open it).
func TestPlanByteOrder(t *testing.T) {
	host := tokens.HostByteOrder()
	for _, tc := range []struct {
		typ   tokens.Type
		mk88  bool
		order tokentest.ByteOrder
		want  tokens.ByteOrder
	}{
		{tokens.TypeSoft, false, binary.BigEndian, tokens.BigEndian},
		{tokens.TypeICA, false, binary.BigEndian, tokens.BigEndian},
		{tokens.TypeCCA, true, binary.BigEndian, tokens.BigEndian},
		{tokens.TypeEP11, false, binary.BigEndian, tokens.BigEndian},
		{tokens.TypeSoft, false, binary.LittleEndian, tokens.LittleEndian},
	} {
		t.Run(tc.typ.String()+"_"+tc.want.String(), func(t *testing.T) {
			ds, confdir := newRepoOrder(t, tc.typ, tc.mk88, tc.order)
			for _, pins := range [][2][]byte{{[]byte("sopin123"), []byte("user1234")}, {nil, nil}} {
				p, err := Make(Options{Slot: 3, Datastore: ds, Confdir: confdir, SOPIN: pins[0], UserPIN: pins[1], ProcRoot: t.TempDir(), PIDFiles: []string{}})
				require.NoError(t, err)
				require.Equal(t, tc.want.String(), p.ByteOrder)
				require.NotEmpty(t, p.ByteOrderEvidence)
				require.Contains(t, p.ByteOrderEvidence[0], "NVTOK.DAT: ")
				warned := strings.Contains(strings.Join(p.Warnings, "\n"), "the token library on this host cannot open it")
				require.Equal(t, tc.want != host, warned, "warnings %q", p.Warnings)
				require.NoError(t, schema.ValidateValue(schema.Plan, p))
				for _, o := range p.Objects {
					if o.Class != nil {
						require.NotEqual(t, "", o.ClassName)
						require.Less(t, *o.Class, int64(16), "class of %s read in the wrong order", o.File)
					}
				}
			}
		})
	}
}

// An object file of the other byte order copied into a repository is refused with byte_order,
// naming the file; so is an NVTOK.DAT whose order cannot be decided.
func TestPlanMixedByteOrder(t *testing.T) {
	ds, confdir := newRepoOrder(t, tokens.TypeSoft, false, binary.BigEndian)
	le, _ := newRepoOrder(t, tokens.TypeSoft, false, binary.LittleEndian)
	idx, err := os.ReadFile(filepath.Join(ds, "TOK_OBJ", "OBJ.IDX"))
	require.NoError(t, err)
	name := strings.Fields(string(idx))[0]
	other, err := os.ReadFile(filepath.Join(le, "TOK_OBJ", name))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(ds, "TOK_OBJ", name), other, 0o660))
	for _, pins := range [][2][]byte{{[]byte("sopin123"), []byte("user1234")}, {nil, nil}} {
		_, err := Make(Options{Slot: 3, Datastore: ds, Confdir: confdir, SOPIN: pins[0], UserPIN: pins[1], ProcRoot: t.TempDir(), PIDFiles: []string{}})
		require.Error(t, err)
		require.Equal(t, contract.CodeByteOrder, contract.CodeOf(err))
		require.Contains(t, err.Error(), "TOK_OBJ/"+name+": written in little-endian byte order")
		require.Contains(t, err.Error(), "the repository is big-endian")
	}
}
