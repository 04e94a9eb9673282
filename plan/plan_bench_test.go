package plan

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/ocktools/pkcstok-migrate/tokens"
	"github.com/ocktools/pkcstok-migrate/tokens/tokentest"
)

// Benchmarks for `make bench` (never run in CI; no timing is asserted anywhere).
//
// Repositories come from PKCSTOK_BENCH_DATA (bench/data, written by `make bench-data`:
// n<N>/swtok and n<N>/conf) when it holds them, else they are generated once per process.
// N = 10, 1000, 10000; 100000 too with BENCH_LARGE=1.

func benchSizes() []int {
	s := []int{10, 1000, 10000}
	if os.Getenv("BENCH_LARGE") == "1" {
		s = append(s, 100000)
	}
	return s
}

// benchRepo returns a directory holding swtok/ (old format, N objects) and conf/, generating
// it below tmp when PKCSTOK_BENCH_DATA does not hold one.
func benchRepo(b *testing.B, tmp string, n int) string {
	if base := os.Getenv("PKCSTOK_BENCH_DATA"); base != "" {
		d := filepath.Join(base, "n"+strconv.Itoa(n))
		if _, err := os.Stat(filepath.Join(d, "swtok", "NVTOK.DAT")); err == nil {
			return d
		}
	}
	d := filepath.Join(tmp, "n"+strconv.Itoa(n))
	if _, err := tokentest.WriteOld(filepath.Join(d, "swtok"), tokentest.Options{
		Type: tokens.TypeSoft, SOPIN: "sopin123", UserPIN: "user1234", N: n, Seed: 1, NoObjectList: true,
		Label: fmt.Sprintf("pkcstok bench %d", n),
	}); err != nil {
		b.Fatal(err)
	}
	conf, err := tokentest.OldConf(3, tokens.TypeSoft)
	if err != nil {
		b.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(d, "conf"), 0o755); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(d, "conf", ConfName), conf, 0o644); err != nil {
		b.Fatal(err)
	}
	return d
}

// BenchmarkPlan makes the full plan of an old repository with both PINs: every object read,
// decrypted and parsed, the fingerprint of every file. It only reads.
func BenchmarkPlan(b *testing.B) {
	tmp := b.TempDir()
	for _, n := range benchSizes() {
		b.Run(fmt.Sprintf("N=%d", n), func(b *testing.B) {
			d := benchRepo(b, tmp, n)
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
