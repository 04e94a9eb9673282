package apply

import (
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/ocktools/pkcstok-migrate/internal/layout"
	"github.com/ocktools/pkcstok-migrate/internal/repofs"
	"github.com/ocktools/pkcstok-migrate/plan"
	"github.com/ocktools/pkcstok-migrate/tokens"
	"github.com/ocktools/pkcstok-migrate/tokens/tokentest"
)

// Benchmarks for `make bench` (never run in CI; no timing is asserted anywhere).
//
// Repositories come from PKCSTOK_BENCH_DATA (optional: a directory of
// n<N>/swtok and n<N>/conf) when it holds them, else they are generated once per benchmark.
// N = 10, 1000, 10000; 100000 too with BENCH_LARGE=1. Each apply is undone with Rollback
// and the migrated tree moved aside (deleted at the end), so every iteration migrates the
// same untouched original and nothing is deleted between timed runs: on a file system
// without a journal, ext4 skips recently freed inodes when it allocates new ones, and
// deleting tens of thousands of files right before a run would make its file creation
// several times slower.

// BenchmarkApply migrates a repository of N objects end to end (plan under the lock, copy
// with re-encryption, syncfs, verification, exchange, conf edit), in process.
func BenchmarkApply(b *testing.B) {
	if _, err := repofs.LookupGroup("pkcs11"); err != nil {
		b.Skip("group pkcs11 is needed: ", err)
	}
	tmp := b.TempDir()
	for _, n := range tokentest.BenchSizes() {
		b.Run(fmt.Sprintf("N=%d", n), func(b *testing.B) {
			d := tokentest.BenchRepo(b, tmp, n)
			req := plan.Options{Slot: 3, Datastore: filepath.Join(d, "swtok"), Confdir: filepath.Join(d, "conf"), SOPIN: []byte("sopin123"), UserPIN: []byte("user1234")}
			trash := filepath.Join(d, "bench-trash")
			b.Cleanup(func() { os.RemoveAll(trash) })
			if err := os.MkdirAll(trash, 0o700); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				res, err := Run(req, nil, Options{})
				if err != nil {
					b.Fatal(err)
				}
				if res.ObjectsTotal != n {
					b.Fatalf("migrated %d objects, want %d", res.ObjectsTotal, n)
				}
				b.StopTimer()
				undo(b, req, trash, i)
				i++
				b.StartTimer()
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/object")
		})
	}
}

// undo rolls the migration back and moves the migrated repository aside.
func undo(b *testing.B, req plan.Options, trash string, i int) {
	if _, err := Rollback(req, Options{}); err != nil {
		b.Fatal(err)
	}
	for _, m := range [][2]string{
		{req.Datastore + layout.SuffixRolledBack, filepath.Join(trash, "repo"+strconv.Itoa(i))},
	} {
		if err := os.Rename(m[0], m[1]); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkReencryptObject is the per-object step of apply without any file I/O: one old
// object file to its 3.12 file, for each kind the generator makes.
func BenchmarkReencryptObject(b *testing.B) {
	dir := filepath.Join(b.TempDir(), "swtok")
	if _, err := tokentest.WriteOld(dir, tokentest.Options{Type: tokens.TypeSoft, SOPIN: "sopin123", UserPIN: "user1234", N: 50, Seed: 1}); err != nil {
		b.Fatal(err)
	}
	d, err := repofs.OpenDir(dir)
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	repo, err := tokens.Load(d)
	if err != nil {
		b.Fatal(err)
	}
	oldKeys, err := repo.Unlock([]byte("sopin123"), []byte("user1234"))
	if err != nil {
		b.Fatal(err)
	}
	mk := make([]byte, 32)
	rand.Read(mk)
	newKeys := &tokens.Keys{Format: tokens.Format312, NewMK: mk}
	kinds := map[string][][2]string{} // kind -> (name, file)
	for _, name := range repo.Index {
		data, err := d.ReadFile("TOK_OBJ/" + name)
		if err != nil {
			b.Fatal(err)
		}
		obj, err := tokens.DecodeObject(name, data, oldKeys)
		if err != nil {
			b.Fatal(err)
		}
		a, err := tokens.ParseFlattened(name, obj.Clear)
		if err != nil {
			b.Fatal(err)
		}
		kind := "public"
		if obj.Private {
			kind = "private-data"
			if a.Class != 0 {
				kind = "private-" + tokens.ClassName(a.Class)
			}
		}
		kinds[kind] = append(kinds[kind], [2]string{name, string(data)})
	}
	for _, kind := range []string{"public", "private-data", "private-CKO_PRIVATE_KEY"} {
		objs := kinds[kind]
		if len(objs) == 0 {
			continue
		}
		b.Run(kind, func(b *testing.B) {
			b.ReportAllocs()
			var size int
			i := 0
			for b.Loop() {
				o := objs[i%len(objs)]
				i++
				out, _, _, err := tokens.ReencryptObject(o[0], []byte(o[1]), oldKeys, newKeys, rand.Reader)
				if err != nil {
					b.Fatal(err)
				}
				size = len(out)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/object")
			b.ReportMetric(float64(size), "bytes/object")
		})
	}
}
