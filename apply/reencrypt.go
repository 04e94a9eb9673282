package apply

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync/atomic"

	"github.com/ocktools/pkcstok-migrate/contract"
	"github.com/ocktools/pkcstok-migrate/tokens"
)

// reencrypter turns the repository into its 3.12 form while repofs.CopyTreeWith copies it,
// spread over the copy's workers: NVTOK.DAT, MK_SO and MK_USER become the new key files, the
// objects of the plan are re-encrypted, everything else is copied as it is. It keeps the
// SHA-256 of each object's clear bytes (in plan order) and checks every file from the bytes
// read back through the descriptor it was written with (verify): the key files must be
// exactly what was written, and every object must decrypt with the new master key to the
// clear bytes it had before.
type reencrypter struct {
	p                *contract.Plan
	up               *tokens.PendingUpgrade
	order            tokens.ByteOrder // the repository's, from the plan
	oldKeys, newKeys *tokens.Keys
	o                Options
	names            []string // the objects of OBJ.IDX, in order
	byName           []int32  // indexes of names sorted by name
	sums             [][32]byte
	done             []bool // transformed
	checked          []bool // verified after writing
	private          []bool
	tally            tokens.OrderTally // byte-order evidence of the objects
	keyFiles         [3]atomic.Bool
	migrated         atomic.Int64
	progress         atomic.Int64
}

// keyFiles are the files the Upgrade replaces, in reencrypter.keyFiles order.
var keyFiles = [3]string{tokens.FileNVTok, tokens.FileMKSO, tokens.FileMKUser}

func newReencrypter(p *contract.Plan, names []string, oldKeys *tokens.Keys, up *tokens.PendingUpgrade, o Options) *reencrypter {
	n := len(names)
	r := &reencrypter{p: p, up: up, order: planOrder(p), oldKeys: oldKeys, newKeys: up.Keys, o: o,
		byName: make([]int32, n), sums: make([][32]byte, n), done: make([]bool, n), checked: make([]bool, n),
		private: make([]bool, n), names: names}
	for i := range r.byName {
		r.byName[i] = int32(i)
	}
	sort.Slice(r.byName, func(a, b int) bool { return names[r.byName[a]] < names[r.byName[b]] })
	return r
}

// isKeyFile: rel is one of the key files (CopyOptions.Defer: written last, once the PBKDF2
// derivations they need are done).
func isKeyFile(rel string) bool { return keyFileIndex(rel) >= 0 }

// keyFileIndex is rel's index in keyFiles, -1 when it is not a key file.
func keyFileIndex(rel string) int {
	for i, f := range keyFiles {
		if rel == f {
			return i
		}
	}
	return -1
}

// keyFile is the new content of rel when it is one of the key files; it waits for the
// derivations.
func (r *reencrypter) keyFile(rel string) (int, []byte, bool, error) {
	i := keyFileIndex(rel)
	if i < 0 {
		return 0, nil, false, nil
	}
	up, err := r.up.Wait()
	if err != nil {
		return i, nil, true, contract.Errorf(contract.CodeCorruptRepository, "new keys: %w", err)
	}
	return i, [][]byte{up.NVToken, up.MKSO, up.MKUser}[i], true, nil
}

// object returns the first index in byName of the plan's entries for name (OBJ.IDX may list
// a name twice: all its entries follow), or false when the plan does not list it.
func (r *reencrypter) object(rel string) (string, int, bool) {
	name, ok := strings.CutPrefix(rel, "TOK_OBJ/")
	if !ok || strings.Contains(name, "/") {
		return "", 0, false
	}
	names := r.names
	k := sort.Search(len(r.byName), func(k int) bool { return names[r.byName[k]] >= name })
	if k == len(r.byName) || names[r.byName[k]] != name {
		return "", 0, false
	}
	return name, k, true
}

// transform is the CopyOptions.Transform of the working copy.
func (r *reencrypter) transform(rel string, data []byte) ([]byte, error) {
	if i, content, ok, err := r.keyFile(rel); ok {
		if err != nil {
			return nil, err
		}
		if err := r.o.hook(contract.OpWrite.Of(rel)); err != nil {
			return nil, err
		}
		r.keyFiles[i].Store(true)
		return content, nil
	}
	if rel == tokens.FileIndex {
		// The plan's objects are OBJ.IDX's names, read under the same locks; a different
		// OBJ.IDX now means the repository changed under the run.
		if names := tokens.ParseIndex(data); len(names) != len(r.names) {
			return nil, contract.Errorf(contract.CodeStalePlan, "OBJ.IDX lists %d objects, the plan %d: the repository changed during the run", len(names), len(r.names))
		} else {
			for i, n := range names {
				if n != r.names[i] {
					return nil, contract.Errorf(contract.CodeStalePlan, "OBJ.IDX entry %d differs from the plan's: the repository changed during the run", i+1)
				}
			}
		}
		return data, nil
	}
	name, k, ok := r.object(rel)
	if !ok {
		return data, nil // not listed in OBJ.IDX: copied as it is
	}
	if r.o.stepHook != nil {
		if err := r.o.hook(contract.OpObject.Of(name)); err != nil {
			return nil, err
		}
	}
	re, err := tokens.Reencrypt(name, data, r.order, r.oldKeys, r.newKeys, r.o.Rand)
	if err != nil {
		return nil, objectError(name, err)
	}
	if !re.Changed {
		// The repository is old (NVTOK.DAT): an object already in the 3.12 format means a
		// mixed repository, which the plan refuses too.
		return nil, &contract.Error{Code: contract.CodeCorruptRepository, Message: fmt.Sprintf("%s mixes old and 3.12 files (TOK_OBJ/%s is already 3.12); refusing to guess", r.p.Datastore, name)}
	}
	// The flattened body is copied as it is, but the token library parses it on load: one
	// that does not parse (a total_len that cuts it short, say) is refused here, as the
	// plan's scan refuses it.
	parseOrder := re.Object.Order
	if parseOrder == tokens.OrderUnknown {
		parseOrder = r.order
	}
	if !re.Object.BodyWellFormed(parseOrder) {
		// The full parse decides (and says why).
		if _, err := tokens.ParseFlattenedOrder(name, re.Clear, parseOrder); err != nil {
			return nil, objectError(name, err)
		}
	}
	sum := sha256.Sum256(re.Clear)
	r.tally.Add(int(r.byName[k]), re.Object)
	// A name OBJ.IDX lists twice is one file: every entry gets its sum.
	for ; k < len(r.byName) && r.names[r.byName[k]] == name; k++ {
		i := r.byName[k]
		r.sums[i], r.done[i] = sum, true
		r.private[i] = re.Object.Private
		if r.o.Progress != nil {
			r.o.Progress(int(r.progress.Add(1)), len(r.names))
		}
	}
	r.migrated.Add(1)
	return re.Out, nil
}

// objectError is the error of an object that cannot be migrated: byte_order when its byte
// order is the repository's other one, corrupt_repository otherwise.
func objectError(name string, err error) error {
	code := contract.CodeCorruptRepository
	if errors.Is(err, tokens.ErrByteOrder) {
		code = contract.CodeByteOrder
	}
	return contract.Errorf(code, "object %s: %w", name, err)
}

// counts sums up the objects as the plan would have.
func (r *reencrypter) counts() contract.Counts {
	c := contract.Counts{Total: len(r.private)}
	for _, priv := range r.private {
		if priv {
			c.Private++
			c.Reencrypt++
		} else {
			c.Public++
			c.RewrapHeader++
		}
	}
	return c
}

func (r *reencrypter) fail(format string, args ...any) error {
	return &contract.Error{Code: contract.CodeVerifyFailed, Message: "verification of the working copy failed, nothing was switched: " + fmt.Sprintf(format, args...)}
}

// verify is the CopyOptions.Verify of the working copy: written is what the new file holds,
// read back through the descriptor it was written with, before it is closed.
func (r *reencrypter) verify(rel string, written []byte) error {
	if i, content, ok, err := r.keyFile(rel); ok {
		if err != nil {
			return err
		}
		if !bytes.Equal(written, content) {
			return r.fail("%s differs from what was written", keyFiles[i])
		}
		return nil
	}
	name, k, ok := r.object(rel)
	if !ok {
		return nil // copied as it is; the copy compared the bytes read back already
	}
	obj, err := tokens.DecodeObjectOrder(name, written, r.order, r.newKeys)
	switch {
	case err != nil:
		return r.fail("object %s: %v", name, err)
	case obj.Format != tokens.Format312:
		return r.fail("object %s: not in the 3.12 format", name)
	}
	sum := sha256.Sum256(obj.Clear)
	for ; k < len(r.byName) && r.names[r.byName[k]] == name; k++ {
		i := r.byName[k]
		if !r.done[i] || sum != r.sums[i] {
			return r.fail("object %s: clear bytes differ from the original's", name)
		}
		r.checked[i] = true
	}
	return nil
}

// result hands back the number of objects re-encrypted once the copy is done. An object of
// the plan the copy never met (its file vanished) or never verified, or a key file it never
// wrote, is an error.
func (r *reencrypter) result() (int, error) {
	for i := range r.done {
		if !r.done[i] {
			// The name is OBJ.IDX's bytes, not a file the copy met: not quoted.
			return 0, contract.Errorf(contract.CodeCorruptRepository, "object %d of OBJ.IDX names no file of TOK_OBJ (none was found while copying)", i+1)
		}
		if !r.checked[i] {
			return 0, r.fail("object %s was not read back", r.names[i])
		}
	}
	for i := range r.keyFiles {
		if !r.keyFiles[i].Load() {
			return 0, contract.Errorf(contract.CodeCorruptRepository, "%s was not found while copying", keyFiles[i])
		}
	}
	return int(r.migrated.Load()), nil
}

// planOrder is the repository byte order the plan found ("any": nothing depends on it).
func planOrder(p *contract.Plan) tokens.ByteOrder {
	o, err := tokens.ParseByteOrder(p.ByteOrder)
	if err != nil {
		return tokens.OrderUnknown
	}
	return o
}
