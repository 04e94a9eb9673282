package apply_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ocktools/pkcstok-migrate/apply"
	"github.com/ocktools/pkcstok-migrate/contract"
	"github.com/ocktools/pkcstok-migrate/plan"
)

// onMount moves the token newToken made into a file system mounted for the test (its parent
// directory is the mount point), and returns the new datastore path.
func onMount(t *testing.T, ds, fstype, opts string) string {
	t.Helper()
	mnt := filepath.Join(t.TempDir(), "state")
	if err := os.Mkdir(mnt, 0o770); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(fstype, mnt, fstype, 0, opts); err != nil {
		t.Skipf("mount %s: %v", fstype, err)
	}
	t.Cleanup(func() { unix.Unmount(mnt, unix.MNT_DETACH) })
	dst := filepath.Join(mnt, "swtok")
	if out, err := execCommand("cp", "-a", ds, dst); err != nil {
		t.Fatalf("cp: %v\n%s", err, out)
	}
	return dst
}

// A file system without the room the working copy needs, one without the inodes, and one
// that is read-only: plan says so (space, enough false, a warning) and apply refuses before
// any work (no_space, read_only), nothing changed.
func TestSpaceShortRefusedBeforeAnyWork(t *testing.T) {
	for _, c := range []struct {
		name, opts string
		ro         bool
		code       contract.Code
		says       string
	}{
		{"bytes", "size=1m", false, contract.CodeNoSpace, "bytes free"},
		{"inodes", "size=64m,nr_inodes=14", false, contract.CodeNoSpace, "inodes free"},
		{"read_only", "size=64m", true, contract.CodeReadOnly, "read-only"},
	} {
		t.Run(c.name, func(t *testing.T) {
			ds0, confdir, o := newToken(t)
			ds := onMount(t, ds0, "tmpfs", c.opts)
			if c.ro {
				if err := unix.Mount("", filepath.Dir(ds), "", unix.MS_REMOUNT|unix.MS_RDONLY, c.opts); err != nil {
					t.Fatalf("remount read-only: %v", err)
				}
			}
			p, err := plan.Make(req(ds, confdir))
			if err != nil {
				t.Fatal(err)
			}
			var repo *contract.Space
			for i := range p.Space {
				for _, f := range p.Space[i].For {
					if f == "repository" {
						repo = &p.Space[i]
					}
				}
			}
			if repo == nil || repo.Enough || repo.NeedBytes <= 0 || repo.NeedInodes <= 0 {
				t.Fatalf("plan's space for the repository: %+v", p.Space)
			}
			if !strings.Contains(strings.Join(p.Warnings, "\n"), c.says) {
				t.Errorf("no warning says %q: %q", c.says, p.Warnings)
			}
			before := tree(t, filepath.Dir(ds))
			confBefore := tree(t, confdir)
			_, err = apply.Run(req(ds, confdir), nil, o)
			wantCode(t, err, c.code, "nothing was done")
			if after := tree(t, filepath.Dir(ds)); after != before {
				t.Errorf("the refused apply changed the repository's file system:\nbefore\n%s\nafter\n%s", before, after)
			}
			if after := tree(t, confdir); after != confBefore {
				t.Errorf("the refused apply changed the conf directory")
			}
		})
	}
}

// Where there is room, the plan says what is needed and free on each file system, and apply
// goes ahead.
func TestSpaceEnough(t *testing.T) {
	ds, confdir, o := newToken(t)
	p, err := plan.Make(req(ds, confdir))
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Space) == 0 {
		t.Fatal("no space in the plan")
	}
	for _, s := range p.Space {
		if !s.Enough || s.NeedBytes <= 0 || s.FreeBytes <= 0 {
			t.Errorf("space %+v", s)
		}
	}
	if _, err := apply.Run(req(ds, confdir), nil, o); err != nil {
		t.Fatal(err)
	}
	if p, err = plan.Make(req(ds, confdir)); err != nil || len(p.Space) != 0 {
		t.Errorf("a plan with nothing to write lists space: %+v %v", p.Space, err)
	}
}

func execCommand(name string, args ...string) ([]byte, error) {
	return exec.Command(name, args...).CombinedOutput()
}
