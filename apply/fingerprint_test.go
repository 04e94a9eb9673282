package apply_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ocktools/pkcstok-migrate/apply"
	"github.com/ocktools/pkcstok-migrate/plan"
)

// The fingerprint apply reports is computed from what the copy wrote, without reading the
// migrated repository again: it must be what a fresh plan of the result finds.
func TestApplyFingerprintIsTheResultsPlan(t *testing.T) {
	ds, confdir, o := newToken(t)
	req := plan.Options{Slot: 3, Datastore: ds, Confdir: confdir, SOPIN: []byte("so-pin-1"), UserPIN: []byte("user-pin-2")}
	res, err := apply.Run(req, nil, o)
	require.NoError(t, err)
	require.True(t, res.RepositoryChanged)
	require.True(t, res.ConfChanged)
	req.ProcRoot, req.PIDFiles = o.ProcRoot, o.PIDFiles
	p, err := plan.Make(req)
	require.NoError(t, err)
	require.False(t, p.Changed)
	require.Equal(t, p.Fingerprint, res.Fingerprint)

	again, err := apply.Run(req, p, o)
	require.NoError(t, err)
	require.False(t, again.Changed)
	require.Equal(t, p.Fingerprint, again.Fingerprint)
}
