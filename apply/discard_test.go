//go:build faultinject

package apply_test

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/ocktools/pkcstok-migrate/apply"
	"github.com/ocktools/pkcstok-migrate/contract"
	"github.com/ocktools/pkcstok-migrate/internal/layout"
	"github.com/ocktools/pkcstok-migrate/plan"
)

// remove-backups takes back what apply printed and removes each backup by its identity,
// wherever the switch kept it: beside the repository (the exchange, an overlay's in-place
// switch) or inside it (a mount point's in-place switch).
func TestRemoveBackupsEverySwitch(t *testing.T) {
	for _, force := range []string{"", "in_place", "in_place_inside"} {
		t.Run("switch="+force, func(t *testing.T) {
			ds, confdir, o := newToken(t)
			r := req(ds, confdir)
			plan.ForceSwitch(&r, force)
			res, err := apply.Run(r, nil, o)
			if err != nil {
				t.Fatal(err)
			}
			b := res.Backup
			if b == nil || b.DatastoreIno == 0 || b.ConfIno == 0 {
				t.Fatalf("apply gave no identities: %+v", b)
			}
			rm := plan.Options{Slot: 3, Datastore: ds, Confdir: confdir}
			got, err := apply.RemoveBackups(rm, b)
			if err != nil {
				t.Fatal(err)
			}
			if !got.Changed || len(got.Removed) != 2 {
				t.Errorf("removed %v", got.Removed)
			}
			for _, p := range []string{b.Datastore, b.Conf, ds + layout.SuffixDiscard, filepath.Join(ds, layout.InPlaceDiscard)} {
				if _, err := os.Lstat(p); err == nil {
					t.Errorf("%s is still there", p)
				}
			}
			p, err := plan.Make(r)
			if err != nil || p.Changed {
				t.Errorf("the migrated token after the removal: changed=%v %v", p != nil && p.Changed, err)
			}
		})
	}
}

// A backup object whose identity is not the entry's now removes nothing; one without an
// identity (a backup an earlier run made) is kept with a warning.
func TestRemoveBackupsByIdentityOnly(t *testing.T) {
	ds, confdir, o := newToken(t)
	res, err := apply.Run(req(ds, confdir), nil, o)
	if err != nil {
		t.Fatal(err)
	}
	rm := plan.Options{Slot: 3, Datastore: ds, Confdir: confdir}
	wrong := *res.Backup
	wrong.DatastoreIno++
	before := tree(t, filepath.Dir(ds))
	_, err = apply.RemoveBackups(rm, &wrong)
	wantCode(t, err, contract.CodeVerifyFailed, "left alone")
	if after := tree(t, filepath.Dir(ds)); after != before {
		t.Errorf("a refused removal changed files:\nbefore\n%s\nafter\n%s", before, after)
	}
	byName := contract.Backup{Datastore: res.Backup.Datastore, Conf: res.Backup.Conf}
	got, err := apply.RemoveBackups(rm, &byName)
	if err != nil {
		t.Fatal(err)
	}
	if got.Changed || len(got.Warnings) < 2 {
		t.Errorf("a backup named without identity: changed %v, warnings %q", got.Changed, got.Warnings)
	}
	// The repository itself, named as its own backup, is never removed.
	live, err := os.Lstat(ds)
	if err != nil {
		t.Fatal(err)
	}
	self := *res.Backup
	self.DatastoreIno = inode(live)
	_, err = apply.RemoveBackups(rm, &self)
	wantCode(t, err, contract.CodeVerifyFailed, "repository")
}

func inode(fi os.FileInfo) uint64 { return fi.Sys().(*syscall.Stat_t).Ino }
