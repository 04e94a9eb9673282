package tokentest

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/ocktools/pkcstok-migrate/tokens"
)

// WriteOldWithConf writes an old-format repository to dir/swtok and an opencryptoki.conf
// with that slot to dir/conf, as a data store and conf directory pair for plan and apply.
func WriteOldWithConf(dir string, slot int, o Options) (*Generated, error) {
	g, err := WriteOld(filepath.Join(dir, "swtok"), o)
	if err != nil {
		return nil, err
	}
	conf, err := OldConf(slot, o.Type)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(dir, "conf"), 0o755); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, "conf", "opencryptoki.conf")
	if err := os.WriteFile(path, conf, 0o644); err != nil {
		return nil, err
	}
	return g, nil
}

// BenchSizes are the object counts of the plan and apply benchmarks: 10, 1,000 and 10,000;
// 100,000 too with BENCH_LARGE=1.
func BenchSizes() []int {
	s := []int{10, 1000, 10000}
	if os.Getenv("BENCH_LARGE") == "1" {
		s = append(s, 100000)
	}
	return s
}

// BenchRepo returns a directory holding swtok/ (Soft, old format, n objects, PINs sopin123 /
// user1234, slot 3) and conf/: the one under PKCSTOK_BENCH_DATA (optional)
// when it is there, else one generated below tmp.
func BenchRepo(tb testing.TB, tmp string, n int) string {
	tb.Helper()
	if base := os.Getenv("PKCSTOK_BENCH_DATA"); base != "" {
		d := filepath.Join(base, "n"+strconv.Itoa(n))
		if _, err := os.Stat(filepath.Join(d, "swtok", "NVTOK.DAT")); err == nil {
			return d
		}
	}
	d := filepath.Join(tmp, "n"+strconv.Itoa(n))
	if _, err := WriteOldWithConf(d, 3, Options{
		Type: tokens.TypeSoft, SOPIN: "sopin123", UserPIN: "user1234", N: n, Seed: 1, NoObjectList: true,
		Label: fmt.Sprintf("pkcstok bench %d", n),
	}); err != nil {
		tb.Fatal(err)
	}
	return d
}
