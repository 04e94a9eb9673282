package apply

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync/atomic"

	"github.com/ocktools/pkcstok-migrate/internal/parallel"
	"github.com/ocktools/pkcstok-migrate/internal/repofs"
	"github.com/ocktools/pkcstok-migrate/plan"
	"github.com/ocktools/pkcstok-migrate/tokens"
)

// reencrypter turns the objects of the plan into their 3.12 files while CopyTreeWith copies
// them, spread over the copy's workers, and keeps the SHA-256 of each object's clear bytes
// (in plan order) for verify.
type reencrypter struct {
	p                *plan.Plan
	order            tokens.ByteOrder // the repository's, from the plan
	oldKeys, newKeys *tokens.Keys
	o                Options
	byName           []int32 // indexes of p.Objects sorted by file name
	sums             [][32]byte
	done             []bool
	migrated         atomic.Int64
	progress         atomic.Int64
}

func newReencrypter(p *plan.Plan, oldKeys, newKeys *tokens.Keys, o Options) *reencrypter {
	n := len(p.Objects)
	r := &reencrypter{p: p, order: planOrder(p), oldKeys: oldKeys, newKeys: newKeys, o: o, byName: make([]int32, n), sums: make([][32]byte, n), done: make([]bool, n)}
	for i := range r.byName {
		r.byName[i] = int32(i)
	}
	sort.Slice(r.byName, func(a, b int) bool { return p.Objects[r.byName[a]].File < p.Objects[r.byName[b]].File })
	return r
}

// transform is the CopyOptions.Transform of the working copy: objects listed in OBJ.IDX are
// re-encrypted, every other file is copied as it is.
func (r *reencrypter) transform(rel string, data []byte) ([]byte, error) {
	name, ok := strings.CutPrefix(rel, "TOK_OBJ/")
	if !ok || strings.Contains(name, "/") {
		return data, nil
	}
	objs := r.p.Objects
	k := sort.Search(len(r.byName), func(k int) bool { return objs[r.byName[k]].File >= name })
	if k == len(r.byName) || objs[r.byName[k]].File != name {
		return data, nil // not listed in OBJ.IDX: copied as it is
	}
	if err := r.o.hook("object " + name); err != nil {
		return nil, err
	}
	out, clear, changed, err := tokens.ReencryptObjectOrder(name, data, r.order, r.oldKeys, r.newKeys, r.o.Rand)
	if err != nil {
		code := plan.CodeCorruptRepository
		if errors.Is(err, tokens.ErrByteOrder) {
			code = plan.CodeByteOrder
		}
		return nil, plan.Errorf(code, "object %s: %w", name, err)
	}
	sum := sha256.Sum256(clear)
	// A name OBJ.IDX lists twice is one file: every entry gets its sum.
	for ; k < len(r.byName) && objs[r.byName[k]].File == name; k++ {
		i := r.byName[k]
		r.sums[i], r.done[i] = sum, true
		if r.o.Progress != nil {
			r.o.Progress(int(r.progress.Add(1)), len(objs))
		}
	}
	if !changed {
		return data, nil
	}
	r.migrated.Add(1)
	return out, nil
}

// result hands back the sums once the copy is done; an object of the plan the copy never
// met (its file vanished) is an error.
func (r *reencrypter) result() ([][32]byte, int, error) {
	for i, d := range r.done {
		if !d {
			return nil, 0, plan.Errorf(plan.CodeCorruptRepository, "object %s of OBJ.IDX was not found while copying", r.p.Objects[i].File)
		}
	}
	return r.sums, int(r.migrated.Load()), nil
}

// planOrder is the repository byte order the plan found ("any": nothing depends on it).
func planOrder(p *plan.Plan) tokens.ByteOrder {
	o, err := tokens.ParseByteOrder(p.ByteOrder)
	if err != nil {
		return tokens.OrderUnknown
	}
	return o
}

// verify re-reads the working copy with the 3.12 reader: the key files are the ones written
// and every object decrypts to exactly the clear bytes it had before.
func verify(p *plan.Plan, tmp *repofs.Dir, up *tokens.Upgrade, sums [][32]byte) error {
	fail := func(format string, args ...any) error {
		return &plan.Error{Code: plan.CodeVerifyFailed, Message: "verification of the working copy failed, nothing was switched: " + fmt.Sprintf(format, args...)}
	}
	repo, err := tokens.Load(tmp)
	if err != nil {
		return fail("%v", err)
	}
	if repo.NV.Format != tokens.Format312 {
		return fail("NVTOK.DAT is not in the 3.12 format")
	}
	for _, f := range []struct {
		name      string
		got, want []byte
	}{{"MK_SO", repo.MKSO, up.MKSO}, {"MK_USER", repo.MKUser, up.MKUser}} {
		if !bytes.Equal(f.got, f.want) {
			return fail("%s differs from what was written", f.name)
		}
	}
	nv, err := tmp.ReadFile("NVTOK.DAT")
	if err != nil || !bytes.Equal(nv, up.NVToken) {
		return fail("NVTOK.DAT differs from what was written")
	}
	if len(repo.Index) != len(p.Objects) {
		return fail("OBJ.IDX lists %d objects, the plan %d", len(repo.Index), len(p.Objects))
	}
	if len(p.Objects) == 0 {
		return nil
	}
	objDir, err := tmp.OpenSubdir("TOK_OBJ")
	if err != nil {
		return fail("%v", err)
	}
	defer objDir.Close()
	order := planOrder(p)
	return parallel.For(len(p.Objects), func(i int) error {
		name := p.Objects[i].File
		data, err := objDir.ReadFile(name)
		if err != nil {
			return fail("object %s: %v", name, err)
		}
		obj, err := tokens.DecodeObjectOrder(name, data, order, up.Keys)
		switch {
		case err != nil:
			return fail("object %s: %v", name, err)
		case obj.Format != tokens.Format312:
			return fail("object %s: not in the 3.12 format", name)
		case sha256.Sum256(obj.Clear) != sums[i]:
			return fail("object %s: clear bytes differ from the original's", name)
		}
		return nil
	})
}
