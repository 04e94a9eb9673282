package apply_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ocktools/pkcstok-migrate/apply"
	"github.com/ocktools/pkcstok-migrate/internal/procscan"
)

// shmFile is the file of the datastore's shared-memory segment under dir.
func shmFile(dir, ds string) string {
	return filepath.Join(dir, strings.TrimPrefix(procscan.ShmName(ds), "/"))
}

// The segments are found before the switch and removed by identity after it: a member who
// puts a symlink at the datastore's name once the switch is done cannot make root unlink
// another token's segment, and a file she puts at the segment's name after the lookup is not
// removed either.
func TestShmSegmentsPinnedBeforeSwitch(t *testing.T) {
	for _, op := range []string{"apply", "rollback"} {
		t.Run(op, func(t *testing.T) {
			ds, confdir, o := newToken(t)
			shm := t.TempDir()
			o.ShmDir = shm
			other := filepath.Join(filepath.Dir(ds), "othertok")
			if err := os.Mkdir(other, 0o770); err != nil {
				t.Fatal(err)
			}
			if op == "rollback" {
				if _, err := apply.Run(req(ds, confdir), nil, o); err != nil {
					t.Fatal(err)
				}
			}
			own, foreign := shmFile(shm, ds), shmFile(shm, other)
			for _, f := range []string{own, foreign} {
				if err := os.WriteFile(f, []byte("segment\n"), 0o660); err != nil {
					t.Fatal(err)
				}
			}
			moved := ds + "_moved_by_member"
			o = apply.WithHook(o, func(step string) error {
				// After the switch (apply: the journal's removal; rollback: the conf), the
				// member swaps a symlink to the other token in at the datastore's name.
				if step == "journal_remove" || step == "rollback_conf" {
					if _, err := os.Lstat(moved); err == nil {
						return nil
					}
					if err := os.Rename(ds, moved); err != nil {
						t.Error(err)
					}
					if err := os.Symlink(other, ds); err != nil {
						t.Error(err)
					}
				}
				return nil
			})
			var err error
			if op == "apply" {
				_, err = apply.Run(req(ds, confdir), nil, o)
			} else {
				_, err = apply.Rollback(req(ds, confdir), o)
			}
			t.Logf("%s: %v", op, err)
			if _, serr := os.Lstat(moved); serr != nil {
				t.Fatalf("the hook never ran: %v", serr)
			}
			if _, err := os.Stat(foreign); err != nil {
				t.Errorf("the other token's segment was removed: %v", err)
			}
			if _, err := os.Stat(own); err == nil {
				t.Errorf("the token's own segment %s was not removed", own)
			}
		})
	}
}

// A file put at the segment's name after the lookup is not the segment found: it stays.
func TestShmSegmentReplacedAfterLookupStays(t *testing.T) {
	ds, confdir, o := newToken(t)
	shm := t.TempDir()
	o.ShmDir = shm
	own := shmFile(shm, ds)
	if err := os.WriteFile(own, []byte("segment\n"), 0o660); err != nil {
		t.Fatal(err)
	}
	o = apply.WithHook(o, func(step string) error {
		if step == "copy" {
			// A new file renamed over the segment: another inode (a file written after a
			// removal could reuse the number on some file systems).
			if err := os.WriteFile(own+".new", []byte("planted\n"), 0o660); err != nil {
				t.Error(err)
			}
			if err := os.Rename(own+".new", own); err != nil {
				t.Error(err)
			}
		}
		return nil
	})
	if _, err := apply.Run(req(ds, confdir), nil, o); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(own); err != nil || string(b) != "planted\n" {
		t.Errorf("the entry put there after the lookup was touched: %q %v", b, err)
	}
}
