package plan

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/ocktools/pkcstok-migrate/tokens/tokentest"
)

// Benchmarks for `make bench` (never run in CI; no timing is asserted anywhere).
//
// Repositories come from PKCSTOK_BENCH_DATA (optional: a directory of
// n<N>/swtok and n<N>/conf) when it holds them, else they are generated once per process.
// N = 10, 1000, 10000; 100000 too with BENCH_LARGE=1.

// BenchmarkPlan makes the full plan of an old repository with both PINs: every object read,
// decrypted and parsed, the fingerprint of every file. It only reads.
func BenchmarkPlan(b *testing.B) {
	tmp := b.TempDir()
	for _, n := range tokentest.BenchSizes() {
		b.Run(fmt.Sprintf("N=%d", n), func(b *testing.B) {
			d := tokentest.BenchRepo(b, tmp, n)
			o := Options{Slot: 3, Datastore: filepath.Join(d, "swtok"), Confdir: filepath.Join(d, "conf"), SOPIN: []byte("sopin123"), UserPIN: []byte("user1234")}
			b.ReportAllocs()
			for b.Loop() {
				p, insp, err := MakeWithKeys(o)
				if err != nil {
					b.Fatal(err)
				}
				insp.Keys.Wipe()
				if p.Counts.Total != n {
					b.Fatalf("plan lists %d objects, want %d", p.Counts.Total, n)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/object")
		})
	}
}
