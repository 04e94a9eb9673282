package tokens_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ocktools/pkcstok-migrate/internal/repofs"
	"github.com/ocktools/pkcstok-migrate/tokens"
	"github.com/stretchr/testify/require"
)

// Repository-level test vectors: every directory under testdata/vectors is one repository plus
// vector.json, named by what it proves (good_… must open, fail_… must fail with one named
// error). They are files so that other implementations can use them too; vectors_gen_test.go
// wrote them. Git keeps neither empty directories nor modes, so each vector is read from a
// temporary copy that gets TOK_OBJ/ when it is missing.

// vectorMeta is vector.json.
type vectorMeta struct {
	SOPIN         string         `json:"so_pin"`
	UserPIN       string         `json:"user_pin"`
	Expect        string         `json:"expect"`         // "ok" or a key of vectorErrors
	ErrorContains string         `json:"error_contains"` // substring of the error text (fail_ only)
	Objects       []vectorObject `json:"objects"`        // good_: exactly the OBJ.IDX objects, in order
	Proves        string         `json:"proves"`
	// ByteOrder is the order the repository must be found in ("" = little-endian).
	ByteOrder string `json:"byte_order,omitempty"`
}

type vectorObject struct {
	File        string `json:"file"`
	Private     bool   `json:"private"`
	ClearSHA256 string `json:"clear_sha256"`
	// LegacyHostOrderHeader: a 3.12 public object with the 3.12–3.14 host-order header.
	LegacyHostOrderHeader bool `json:"legacy_host_order_header,omitempty"`
}

// vectorErrors maps the names used in "expect" to the errors they stand for.
var vectorErrors = map[string]error{
	"ErrWrongSOPIN":    tokens.ErrWrongSOPIN,
	"ErrWrongUserPIN":  tokens.ErrWrongUserPIN,
	"ErrUserPINNotSet": tokens.ErrUserPINNotSet,
	"ErrMKMismatch":    tokens.ErrMKMismatch,
	"ErrCorrupt":       tokens.ErrCorrupt,
	"ErrNotExist":      fs.ErrNotExist,
	"ErrSymlink":       repofs.ErrSymlink,
	"ErrByteOrder":     tokens.ErrByteOrder,
}

func TestVectorFiles(t *testing.T) {
	root := filepath.Join("testdata", "vectors")
	entries, err := os.ReadDir(root) // sorted by name
	require.NoError(t, err)
	var names []string
	for _, e := range entries {
		require.True(t, e.IsDir(), "stray file %s in %s", e.Name(), root)
		names = append(names, e.Name())
	}
	require.GreaterOrEqual(t, len(names), 26)

	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			src := filepath.Join(root, name)
			m := readVectorMeta(t, src)
			checkVectorMeta(t, name, m)
			runVector(t, name, copyVector(t, src), m)
		})
	}

	// A symlink cannot live in git portably, so this vector is built here: good_soft_old with
	// its private object 10000000 moved out of the repository and replaced by a symlink to it.
	// Followed, the link would decode fine (checked below); repofs must refuse it.
	t.Run("fail_symlink_in_tok_obj", func(t *testing.T) {
		t.Parallel()
		const name = "fail_symlink_in_tok_obj"
		src := filepath.Join(root, "good_soft_old")
		good := readVectorMeta(t, src)
		dir := copyVector(t, src)
		outside := filepath.Join(t.TempDir(), "10000000")
		obj := filepath.Join(dir, "TOK_OBJ", "10000000")
		require.NoError(t, os.Rename(obj, outside))
		require.NoError(t, os.Symlink(outside, obj))

		_, err := walkVector(tokens.IOFS(os.DirFS(dir)), good.SOPIN, good.UserPIN)
		require.NoError(t, err, "the link target must be a good object, so that only the refusal to follow can fail")

		m := *good
		m.Expect = "ErrSymlink"
		m.ErrorContains = "TOK_OBJ/10000000"
		m.Proves = "A symlink in place of an object file is refused by repofs (never followed), although its target is a valid object."
		checkVectorMeta(t, name, &m)
		runVector(t, name, dir, &m)
	})
}

func readVectorMeta(t *testing.T, dir string) *vectorMeta {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "vector.json"))
	require.NoError(t, err)
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	m := &vectorMeta{}
	require.NoError(t, dec.Decode(m), "%s/vector.json", dir)
	return m
}

// checkVectorMeta checks the naming rule and that vector.json says what it proves.
func checkVectorMeta(t *testing.T, name string, m *vectorMeta) {
	t.Helper()
	require.NotEmpty(t, strings.TrimSpace(m.Proves), "%s: proves is empty", name)
	require.NotEmpty(t, m.SOPIN, "%s: so_pin is empty", name)
	switch {
	case strings.HasPrefix(name, "good_"):
		require.Equal(t, "ok", m.Expect, "%s: a good_ vector must expect ok", name)
		require.Empty(t, m.ErrorContains, name)
	case strings.HasPrefix(name, "fail_"):
		require.Contains(t, vectorErrors, m.Expect, "%s: unknown expected error", name)
		require.NotEmpty(t, m.ErrorContains, "%s: a fail_ vector must say what the error text contains", name)
	default:
		t.Fatalf("vector %q: name must start with good_ or fail_", name)
	}
	for _, o := range m.Objects {
		require.NoError(t, tokens.ValidObjectName(o.File), "%s: listed object", name)
		require.Len(t, o.ClearSHA256, 64, "%s: clear_sha256 of %s", name, o.File)
	}
}

// copyVector copies the repository files of a vector (not vector.json) into a temporary
// directory and adds TOK_OBJ/ when git dropped it. It returns the copy's path.
func copyVector(t *testing.T, src string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "repo")
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		switch {
		case rel == "vector.json":
			return nil
		case d.IsDir():
			return os.MkdirAll(filepath.Join(dst, rel), 0o700)
		case !d.Type().IsRegular():
			return errors.New("vector " + src + ": " + rel + " is not a regular file")
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o600)
	})
	require.NoError(t, err)
	require.NoError(t, os.MkdirAll(filepath.Join(dst, "TOK_OBJ"), 0o700))
	return dst
}

// decodedObject is what the walk learnt about one object.
type decodedObject struct {
	name    string
	private bool
	legacy  bool
	sum     string
}

// walkVector is the read path of a migration: Load, Unlock, then every OBJ.IDX object read,
// decoded in the order NVTOK.DAT shows and parsed, then the repository's byte order decided
// over all of them. It stops at the first error and returns the objects decoded before it.
func walkVector(fsys tokens.FS, soPIN, userPIN string) ([]decodedObject, error) {
	out, _, err := walkVectorOrder(fsys, soPIN, userPIN)
	return out, err
}

func walkVectorOrder(fsys tokens.FS, soPIN, userPIN string) ([]decodedObject, tokens.ByteOrder, error) {
	r, err := tokens.Load(fsys)
	if err != nil {
		return nil, tokens.OrderUnknown, err
	}
	k, err := r.Unlock([]byte(soPIN), []byte(userPIN))
	if err != nil {
		return nil, tokens.OrderUnknown, err
	}
	defer k.Wipe()
	var out []decodedObject
	var evidence []tokens.Evidence
	for _, name := range r.Index {
		file, err := r.ReadObject(name)
		if err != nil {
			return out, tokens.OrderUnknown, err
		}
		o, err := tokens.DecodeObjectOrder(name, file, r.NV.Order, k)
		if err != nil {
			return out, tokens.OrderUnknown, err
		}
		evidence = append(evidence, o.OrderEvidence())
		if _, err := tokens.ParseFlattenedOrder(name, o.Clear, o.Order); err != nil {
			return out, tokens.OrderUnknown, err
		}
		sum := sha256.Sum256(o.Clear)
		out = append(out, decodedObject{name: name, private: o.Private, legacy: o.LegacyHostOrderHeader, sum: hex.EncodeToString(sum[:])})
	}
	ord, _, err := tokens.DecideOrder(r.NV.OrderEvidence, evidence)
	return out, ord, err
}

func runVector(t *testing.T, name, dir string, m *vectorMeta) {
	t.Helper()
	d, err := repofs.OpenDir(dir)
	require.NoError(t, err)
	defer d.Close()
	got, order, err := walkVectorOrder(d, m.SOPIN, m.UserPIN)

	listed := map[string]vectorObject{}
	for _, o := range m.Objects {
		listed[o.File] = o
	}
	for _, g := range got { // every object that decoded must be the listed one
		want, ok := listed[g.name]
		if !ok {
			require.False(t, strings.HasPrefix(name, "good_"), "%s: object %s not listed in vector.json", name, g.name)
			continue
		}
		require.Equal(t, want.ClearSHA256, g.sum, "%s: clear bytes of %s", name, g.name)
		require.Equal(t, want.Private, g.private, "%s: private flag of %s", name, g.name)
		require.Equal(t, want.LegacyHostOrderHeader, g.legacy, "%s: legacy header of %s", name, g.name)
	}

	if m.Expect == "ok" {
		require.NoError(t, err, name)
		want := tokens.LittleEndian
		if m.ByteOrder != "" {
			want, err = tokens.ParseByteOrder(m.ByteOrder)
			require.NoError(t, err, name)
		}
		if len(m.Objects) > 0 || m.ByteOrder != "" {
			require.Equal(t, want, order, "%s: byte order", name)
		}
		require.Len(t, got, len(m.Objects), "%s: objects in OBJ.IDX vs vector.json", name)
		for i, o := range m.Objects {
			require.Equal(t, o.File, got[i].name, "%s: object %d", name, i)
		}
		return
	}

	require.Error(t, err, "%s: want %s", name, m.Expect)
	msg := err.Error()
	for k, e := range vectorErrors { // the first error is the expected one and only that one
		want := k == m.Expect || m.Expect == "ErrByteOrder" && k == "ErrCorrupt" // a byte-order error is a kind of corruption
		require.Equal(t, want, errors.Is(err, e), "%s: errors.Is(%s) for error %q", name, k, msg)
	}
	require.Contains(t, msg, m.ErrorContains, name)
	for _, pin := range []string{m.SOPIN, m.UserPIN} {
		if pin != "" {
			require.NotContains(t, msg, pin, "%s: error text contains a PIN", name)
		}
	}
}
