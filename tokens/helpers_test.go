package tokens

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"io"
	"io/fs"
	"os"
	"strings"
	"testing"
)

// vecOrder is the byte order of the host-order fields in the spec's §11 vectors and in the
// hand-built vectors of these tests: they were written for a little-endian host. The reader finds
// the order from the bytes, so the tests pass on a big-endian host too.
var vecOrder binary.ByteOrder = binary.LittleEndian

// mapFS is an in-memory repository for tests.
type mapFS map[string][]byte

func (m mapFS) ReadFile(name string) ([]byte, error) {
	b, ok := m[name]
	if !ok {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
	}
	return b, nil
}

// dirFS reads a directory read-only (os.DirFS refuses names leaving the root).
func dirFS(dir string) FS { return IOFS(os.DirFS(dir)) }

// unhex decodes hex that may contain blanks and '|' separators.
func unhex(t testing.TB, s string) []byte {
	t.Helper()
	s = strings.NewReplacer(" ", "", "|", "", "\n", "", "\t", "").Replace(s)
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatalf("bad hex in test: %v", err)
	}
	return b
}

// seq returns the bytes from, from+1, ..., from+n-1.
func seq(from byte, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = from + byte(i)
	}
	return b
}

// fixedReader hands out the given bytes, then fails.
func fixedReader(parts ...[]byte) *bytes.Reader { return bytes.NewReader(bytes.Join(parts, nil)) }

// newUpgrade is StartUpgrade and Wait.
func newUpgrade(r *Repository, soPIN, userPIN []byte, rnd io.Reader) (*Upgrade, error) {
	p, err := r.StartUpgrade(soPIN, userPIN, rnd)
	if err != nil {
		return nil, err
	}
	return p.Wait()
}
