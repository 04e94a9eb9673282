package apply_test

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ocktools/pkcstok-migrate/apply"
	"github.com/ocktools/pkcstok-migrate/contract"
	"github.com/ocktools/pkcstok-migrate/internal/conf"
	"github.com/ocktools/pkcstok-migrate/internal/layout"
	"github.com/ocktools/pkcstok-migrate/internal/repofs"
	"github.com/ocktools/pkcstok-migrate/plan"
	"github.com/ocktools/pkcstok-migrate/tokens"
	"github.com/ocktools/pkcstok-migrate/tokens/tokentest"
)

// newToken writes a small generated old-format Soft token and its conf into a temp dir.
func newToken(t *testing.T) (ds, confdir string, o apply.Options) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("apply needs root (it sets the token group)")
	}
	if _, err := repofs.LookupGroup("pkcs11"); err != nil {
		t.Skipf("group pkcs11: %v", err)
	}
	root := t.TempDir()
	ds, confdir = filepath.Join(root, "swtok"), filepath.Join(root, "conf")
	if _, err := tokentest.WriteOld(ds, tokentest.Options{Type: tokens.TypeSoft, SOPIN: "so-pin-1", UserPIN: "user-pin-2", N: 4, Seed: 1}); err != nil {
		t.Fatal(err)
	}
	c, err := tokentest.OldConf(3, tokens.TypeSoft)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(confdir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(confdir, layout.ConfName), c, 0o644); err != nil {
		t.Fatal(err)
	}
	proc := filepath.Join(root, "proc")
	os.Mkdir(proc, 0o755)
	return ds, confdir, apply.Options{ProcRoot: proc, PIDFiles: []string{filepath.Join(root, "none.pid")}}
}

// tree lists every entry below root (mode, and size and SHA-256 of regular files).
func tree(t *testing.T, root string) string {
	t.Helper()
	var lines []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		line := fmt.Sprintf("%s %v", rel, info.Mode())
		if info.Mode().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			line += fmt.Sprintf(" %d %x", len(b), sha256.Sum256(b))
		}
		lines = append(lines, line)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// A leftover opencryptoki.conf_new that conf.WriteIfUnchanged would refuse (a symlink, a FIFO) must stop
// apply before the repository is switched, not leave it migrated with the conf unchanged.
func TestReliabilityConfTempRefusedBeforeSwitch(t *testing.T) {
	for _, kind := range []string{"symlink", "fifo", "dir"} {
		t.Run(kind, func(t *testing.T) {
			ds, confdir, o := newToken(t)
			p := filepath.Join(confdir, conf.TempName)
			var err error
			switch kind {
			case "symlink":
				err = os.Symlink("/etc/passwd", p)
			case "fifo":
				err = unix.Mkfifo(p, 0o660)
			case "dir":
				err = os.Mkdir(p, 0o755)
			}
			if err != nil {
				t.Fatal(err)
			}
			before := tree(t, filepath.Dir(ds))
			var steps []string
			o = apply.WithHook(o, func(s string) error { steps = append(steps, s); return nil })
			_, err = apply.Run(plan.Options{Slot: 3, Datastore: ds, Confdir: confdir, SOPIN: []byte("so-pin-1"), UserPIN: []byte("user-pin-2")}, nil, o)
			var pe *contract.Error
			if !errors.As(err, &pe) || pe.Code != contract.CodeBackupExists {
				t.Fatalf("want backup_exists, got %v", err)
			}
			if after := tree(t, filepath.Dir(ds)); after != before {
				t.Errorf("the refused run changed files:\nbefore\n%s\nafter\n%s", before, after)
			}
			for _, s := range steps {
				if s == "exchange" || s == "copy" {
					t.Errorf("reached step %q before refusing", s)
				}
			}
		})
	}
}

// A rollback stopped after its exchange (before the migrated repository is renamed to
// _ROLLED_BACK) must finish that rename on the rerun even though the conf still has to be
// restored too, not only the conf (which would leave the migrated repository under the
// backup's name).
func TestReliabilityRollbackResumesAfterExchange(t *testing.T) {
	ds, confdir, o := newToken(t)
	req := plan.Options{Slot: 3, Datastore: ds, Confdir: confdir, SOPIN: []byte("so-pin-1"), UserPIN: []byte("user-pin-2")}
	original := tree(t, ds)
	if _, err := apply.Run(req, nil, o); err != nil {
		t.Fatal(err)
	}
	stop := o
	stop = apply.WithHook(stop, func(s string) error {
		if s == "rollback_rename" {
			return errors.New("injected fault")
		}
		return nil
	})
	rb := plan.Options{Slot: 3, Datastore: ds, Confdir: confdir}
	if _, err := apply.Rollback(rb, stop); err == nil {
		t.Fatal("the injected fault did not stop rollback")
	}
	if _, err := apply.Rollback(rb, o); err != nil {
		t.Fatalf("second rollback: %v", err)
	}
	if got := tree(t, ds); got != original {
		t.Errorf("the repository is not the original:\n%s\nwant\n%s", got, original)
	}
	if _, err := os.Lstat(ds + layout.SuffixBak); err == nil {
		t.Errorf("%s still exists after the rollback", ds+layout.SuffixBak)
	}
	b, err := os.ReadFile(filepath.Join(ds+layout.SuffixRolledBack, "NVTOK.DAT"))
	if err != nil || len(b) != tokens.NVTokNewSize {
		t.Errorf("the migrated repository is not at %s (%v)", ds+layout.SuffixRolledBack, err)
	}
}
