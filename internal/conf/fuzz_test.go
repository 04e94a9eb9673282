package conf

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/ocktools/pkcstok-migrate/internal/repofs"
)

// FuzzParse: any input parses or gives an error, never panics or hangs; for every slot of a
// parsed file, SetTokVersion either fails with a typed error or gives a file that parses again
// with tokversion 3.12 in that slot (SetTokVersion itself checks the rest of the tree).
func FuzzParse(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/*/*/*.conf*")
	for _, p := range seeds {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	for _, s := range []string{
		"slot 1 { stdll = x }", "slot 1 { stdll = x tokversion = \"3.0", "l ( a,\n b )",
		"p\n 1 2\n e", "version", "\"", "#", "slot 0x3\r\n{\r\nstdll=a\r\n}", "k = 99999999999999999999",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cf, err := Parse("fuzz", data)
		if err != nil {
			var se *syntaxError
			if !errors.As(err, &se) && !errors.Is(err, repofs.ErrTooLarge) {
				t.Fatalf("untyped parse error: %v", err)
			}
			return
		}
		for _, n := range cf.nodes {
			if n.Type != nodeIndexedBlock || n.Key != "slot" {
				continue
			}
			e, err := cf.SetTokVersion(n.Num)
			if err != nil {
				if errors.Is(err, errInternal) {
					t.Fatalf("edit check failed: %v\ninput %q", err, data)
				}
				continue
			}
			nf, err := Parse("fuzz", e.Content)
			if err != nil {
				t.Fatalf("edited file does not parse: %v\ninput %q\noutput %q", err, data, e.Content)
			}
			s, err := nf.Slot(n.Num)
			if err != nil || !s.TokVersionIs312() {
				t.Fatalf("slot %d not at 3.12 after the edit: %v\noutput %q", n.Num, err, e.Content)
			}
			if e.Action == actionNone && e.Diff != "" || e.Action != actionNone && e.Diff == "" {
				t.Fatalf("diff does not match action %s", e.Action)
			}
		}
	})
}
