package conf

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// before is what UnsetTokVersion is told the slot had before its migration.
func before(s *Slot) string {
	if s.TokVersionKind == KindAbsent {
		return "absent"
	}
	return s.TokVersion
}

// Every conf of the test data, every slot set to 3.12 one after the other and then put back
// one by one in any order: after the last, the file is the original byte for byte.
func TestUnsetTokVersionIsTheInverse(t *testing.T) {
	var inputs [][]byte
	for _, pat := range []string{"testdata/golden/*/input.conf", "testdata/conf-rewrite/*/opencryptoki.conf.before"} {
		files, err := filepath.Glob(pat)
		require.NoError(t, err)
		for _, f := range files {
			b, err := os.ReadFile(f)
			require.NoError(t, err)
			inputs = append(inputs, b)
		}
	}
	require.NotEmpty(t, inputs)
	checked := 0
	for _, in := range inputs {
		f, err := Parse(confName, in)
		if err != nil {
			continue
		}
		slots, err := f.Slots()
		if err != nil {
			continue
		}
		orig := map[uint64]string{}
		content := in
		var ids []uint64
		for _, s := range slots {
			cf, err := Parse(confName, content)
			require.NoError(t, err)
			e, err := cf.SetTokVersion(uint64(s.ID))
			if err != nil {
				continue
			}
			orig[uint64(s.ID)] = before(s)
			ids = append(ids, uint64(s.ID))
			content = e.Content
		}
		// Back in the order they were set, then (from the original again) in reverse.
		for _, order := range [][]uint64{ids, reversed(ids)} {
			c := content
			for _, id := range order {
				cf, err := Parse(confName, c)
				require.NoError(t, err)
				e, err := cf.UnsetTokVersion(id, orig[id])
				require.NoError(t, err, "slot %d of\n%s", id, c)
				c = e.Content
			}
			assert.Equal(t, string(in), string(c))
			checked++
		}
	}
	assert.Greater(t, checked, 20)
}

func reversed(ids []uint64) []uint64 {
	out := make([]uint64, len(ids))
	for i, id := range ids {
		out[len(ids)-1-i] = id
	}
	return out
}

// A tokversion = 3.12 that is not where a migration puts it is not removed: someone wrote it.
func TestUnsetTokVersionRefusesALineNotOurs(t *testing.T) {
	for _, in := range []string{
		"slot 1 {\n  tokversion = 3.12\n  stdll = libpkcs11_sw.so\n}\n",
		"slot 1 {\n  stdll = libpkcs11_sw.so\n  tokversion = 3.12 # set by hand\n}\n",
	} {
		f, err := Parse(confName, []byte(in))
		require.NoError(t, err)
		_, err = f.UnsetTokVersion(1, "absent")
		assert.ErrorIs(t, err, errTokVersionNotOurs, in)
	}
}

// Slots not at 3.12, or 3.12 before the migration, are left alone.
func TestUnsetTokVersionNone(t *testing.T) {
	in := "slot 1 {\n  stdll = libpkcs11_sw.so\n}\nslot 2 {\n  stdll = libpkcs11_sw.so\n  tokversion = 3.12\n}\n"
	f, err := Parse(confName, []byte(in))
	require.NoError(t, err)
	for id, b := range map[uint64]string{1: "absent", 2: "3.12"} {
		e, err := f.UnsetTokVersion(id, b)
		require.NoError(t, err)
		assert.False(t, e.Changes())
		assert.Equal(t, in, string(e.Content))
	}
}
