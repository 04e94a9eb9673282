//go:build faultinject

package apply_test

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ocktools/pkcstok-migrate/apply"
	"github.com/ocktools/pkcstok-migrate/contract"
	"github.com/ocktools/pkcstok-migrate/internal/layout"
	"github.com/ocktools/pkcstok-migrate/plan"
)

// treeWithout is tree() of root without the entries of an in-place switch at its top level.
func treeWithout(t *testing.T, root string) string {
	t.Helper()
	var kept []string
	for _, l := range strings.Split(tree(t, root), "\n") {
		top, _, _ := strings.Cut(l, " ")
		top, _, _ = strings.Cut(top, "/")
		if !layout.Reserved(top) {
			kept = append(kept, l)
		}
	}
	return strings.Join(kept, "\n")
}

// checkMigrated: a fresh plan with the PINs finds a 3.12 repository whose objects all
// decrypt, and nothing left to do.
func checkMigrated(t *testing.T, r plan.Options, objects int) {
	t.Helper()
	p, err := plan.Make(r)
	if err != nil {
		t.Fatalf("plan after apply: %v", err)
	}
	if p.Format != "3.12" || p.Changed || p.Counts.Total != objects || !p.PINsChecked {
		t.Fatalf("after apply: format %s changed %v objects %d/%d pins %v", p.Format, p.Changed, p.Counts.Total, objects, p.PINsChecked)
	}
}

// cycleInPlace runs plan, apply, a rerun, rollback and apply again on an in-place repository.
func cycleInPlace(t *testing.T, r plan.Options, o apply.Options, backup string) {
	t.Helper()
	ds := r.Datastore
	before := treeWithout(t, ds)
	p, err := plan.Make(r)
	if err != nil {
		t.Fatal(err)
	}
	if p.Switch != "in_place" || p.Backup != backup {
		t.Fatalf("plan: switch %q (%q), backup %q, want in_place, %q", p.Switch, p.SwitchBlockedBy, p.Backup, backup)
	}
	res, err := apply.Run(r, p, o)
	if err != nil {
		t.Fatalf("apply: %v", err)
	}
	if !res.RepositoryChanged || res.Backup == nil || res.Backup.Datastore != backup {
		t.Fatalf("apply: %+v", res)
	}
	checkMigrated(t, r, p.Counts.Total)
	if got := treeWithout(t, backup); got != before {
		t.Errorf("the backup %s is not the original:\n%s\nwant\n%s", backup, got, before)
	}
	if fp, err := plan.Make(r); err != nil || fp.Fingerprint != res.Fingerprint {
		t.Errorf("the result's fingerprint is not a fresh plan's (%v)", err)
	}
	for _, n := range []string{layout.InPlaceTmp, layout.InPlaceJournal} {
		if _, err := os.Lstat(filepath.Join(ds, n)); err == nil {
			t.Errorf("%s left in the repository", n)
		}
	}
	if fi, err := os.Stat(backup); err != nil || fi.Mode().Perm() != 0o770 {
		t.Errorf("backup mode: %v %v", fi, err)
	}
	again, err := apply.Run(r, nil, o)
	if err != nil || again.Changed {
		t.Fatalf("rerun: changed %v, %v", again != nil && again.Changed, err)
	}
	rb, err := apply.Rollback(r, o)
	if err != nil {
		t.Fatalf("rollback: %v", err)
	}
	if got := treeWithout(t, ds); got != before {
		t.Errorf("rolled back, the repository is not the original:\n%s\nwant\n%s", got, before)
	}
	if rb.Backup == nil {
		t.Fatalf("rollback says nothing of the migrated files: %+v", rb)
	}
	if p2, err := plan.Make(r); err != nil || p2.Format != "old" || p2.Switch != "in_place" {
		t.Fatalf("plan after rollback: %v %+v", err, p2)
	}
	if err := os.RemoveAll(rb.Backup.Datastore); err != nil {
		t.Fatal(err)
	}
	if _, err := apply.Run(r, nil, o); err != nil {
		t.Fatalf("apply after rollback: %v", err)
	}
	checkMigrated(t, r, p.Counts.Total)
}

// The in-place switch, forced where the exchange would work, with the backup
// beside the repository (as on an overlay) and inside it (as on a mount point).
func TestInPlaceForced(t *testing.T) {
	for _, force := range []string{"in_place", "in_place_inside"} {
		t.Run(force, func(t *testing.T) {
			ds, confdir, o := newToken(t)
			r := req(ds, confdir)
			plan.ForceSwitch(&r, force)
			backup := ds + layout.SuffixBak
			if force == "in_place_inside" {
				backup = filepath.Join(ds, layout.InPlaceBak)
			}
			cycleInPlace(t, r, o, backup)
		})
	}
}

// A datastore that is a mount point (a bind mount here; its own volume or a tmpfs alike) is
// switched in place, the original kept inside it.
func TestMountPointDatastoreInPlace(t *testing.T) {
	ds, confdir, o := newToken(t)
	if err := unix.Mount(ds, ds, "", unix.MS_BIND, ""); err != nil {
		t.Fatalf("bind mount: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(ds, unix.MNT_DETACH) })
	p, err := plan.Make(req(ds, confdir))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(p.SwitchBlockedBy, "mount point") {
		t.Errorf("plan: switch %q (%q)", p.Switch, p.SwitchBlockedBy)
	}
	cycleInPlace(t, req(ds, confdir), o, filepath.Join(ds, layout.InPlaceBak))
}

// On an overlay without redirect_dir, a directory of the lower (image) layer cannot be
// renamed (EXDEV): it is switched in place, its files copied up, the original kept beside it;
// a repository made in the upper layer is exchanged as anywhere.
func TestOverlayLowerLayerDatastore(t *testing.T) {
	for _, layer := range []string{"lower", "upper"} {
		t.Run(layer, func(t *testing.T) {
			ds0, confdir, o := newToken(t)
			root := t.TempDir()
			lower, upper, work, merged := filepath.Join(root, "lower"), filepath.Join(root, "upper"), filepath.Join(root, "work"), filepath.Join(root, "merged")
			for _, d := range []string{lower, upper, work, merged} {
				os.Mkdir(d, 0o755)
			}
			if layer == "lower" {
				if err := os.Rename(ds0, filepath.Join(lower, "swtok")); err != nil {
					t.Fatal(err)
				}
			}
			if err := unix.Mount("overlay", merged, "overlay", 0, "lowerdir="+lower+",upperdir="+upper+",workdir="+work); err != nil {
				t.Fatalf("overlay: %v", err)
			}
			t.Cleanup(func() { unix.Unmount(merged, unix.MNT_DETACH) })
			ds := filepath.Join(merged, "swtok")
			if layer == "upper" {
				// Made through the overlay: it lives in the upper layer only.
				if out, err := exec.Command("cp", "-a", ds0, ds).CombinedOutput(); err != nil {
					t.Fatalf("cp: %v %s", err, out)
				}
				p, err := plan.Make(req(ds, confdir))
				if err != nil {
					t.Fatal(err)
				}
				if _, err = apply.Run(req(ds, confdir), nil, o); p.Switch != "exchange" || err != nil {
					t.Fatalf("upper layer: switch %q (%q), apply: %v", p.Switch, p.SwitchBlockedBy, err)
				}
				return
			}
			p, err := plan.Make(req(ds, confdir))
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(p.SwitchBlockedBy, "lower layer") {
				t.Errorf("plan: switch %q (%q)", p.Switch, p.SwitchBlockedBy)
			}
			cycleInPlace(t, req(ds, confdir), o, ds+layout.SuffixBak)
		})
	}
}

// An in-place apply stopped at every step (the state left as it was: what a kill leaves) and
// run again converges: the repository is migrated, its backup the original, nothing lost; so
// does an in-place rollback.
func TestInPlaceStoppedAtEveryStep(t *testing.T) {
	// The backup beside the repository differs only in its last rename: make crash covers
	// that layout at every cut point.
	for _, force := range []string{"in_place_inside"} {
		for _, op := range []string{"apply", "rollback"} {
			t.Run(force+"/"+op, func(t *testing.T) { stopEverywhere(t, force, op) })
		}
	}
}

func stopEverywhere(t *testing.T, force, op string) {
	var steps []string
	{
		ds, confdir, o := newToken(t)
		r := req(ds, confdir)
		plan.ForceSwitch(&r, force)
		if op == "rollback" {
			if _, err := apply.Run(r, nil, o); err != nil {
				t.Fatal(err)
			}
		}
		o = apply.WithHook(o, func(s string) error { steps = append(steps, s); return nil })
		run(t, op, r, o)
	}
	if len(steps) < 8 {
		t.Fatalf("only %d steps: %v", len(steps), steps)
	}
	stride := 1
	if testing.Short() {
		// make unit-s390x runs this under qemu: a sample of the steps there (make unit and
		// make crash take every step).
		stride = 5
	}
	for k := 0; k < len(steps); k += stride {
		ds, confdir, o := newToken(t)
		r := req(ds, confdir)
		plan.ForceSwitch(&r, force)
		if op == "rollback" {
			if _, err := apply.Run(r, nil, o); err != nil {
				t.Fatal(err)
			}
		}
		orig := treeWithout(t, ds)
		if op == "rollback" {
			orig = treeWithout(t, backupOf(ds, force))
		}
		n := 0
		o = apply.WithHook(o, func(s string) error {
			n++
			if n == k+1 {
				return errors.New("stopped")
			}
			return nil
		})
		if _, err := runErr(op, r, o); err == nil {
			t.Fatalf("step %d (%s): no error", k, steps[k])
		}
		o = apply.WithHook(o, nil)
		if _, err := runErr(op, r, o); err != nil && !(op == "rollback" && contract.CodeOf(err) == contract.CodeNothingToRollBack) {
			t.Fatalf("stopped at step %d (%s), the rerun failed: %v", k, steps[k], err)
		}
		switch op {
		case "apply":
			checkMigrated(t, r, 4)
			if got := treeWithout(t, backupOf(ds, force)); got != orig {
				t.Fatalf("stopped at step %d (%s): the backup is not the original", k, steps[k])
			}
		case "rollback":
			if got := treeWithout(t, ds); got != orig {
				t.Fatalf("stopped at step %d (%s): the rolled-back repository is not the original", k, steps[k])
			}
		}
	}
	t.Logf("%s %s: stopped at each of %d steps, every rerun converged", force, op, len(steps))
}

func backupOf(ds, force string) string {
	if force == "in_place_inside" {
		return filepath.Join(ds, layout.InPlaceBak)
	}
	return ds + layout.SuffixBak
}

func run(t *testing.T, op string, r plan.Options, o apply.Options) {
	t.Helper()
	if _, err := runErr(op, r, o); err != nil {
		t.Fatalf("%s: %v", op, err)
	}
}

func runErr(op string, r plan.Options, o apply.Options) (*contract.Result, error) {
	if op == "rollback" {
		return apply.Rollback(r, o)
	}
	return apply.Run(r, nil, o)
}

// A backup in an overlay's lower layer (an image committed after the migration) cannot be
// renamed once it holds the migrated files: rollback refuses before it switches anything.
func TestOverlayLowerBackupRollbackRefused(t *testing.T) {
	ds0, confdir, o := newToken(t)
	if _, err := apply.Run(req(ds0, confdir), nil, o); err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	lower, upper, work, merged := filepath.Join(root, "lower"), filepath.Join(root, "upper"), filepath.Join(root, "work"), filepath.Join(root, "merged")
	for _, d := range []string{lower, upper, work, merged} {
		os.Mkdir(d, 0o755)
	}
	for _, n := range []string{"swtok", "swtok" + layout.SuffixBak} {
		if err := os.Rename(filepath.Join(filepath.Dir(ds0), n), filepath.Join(lower, n)); err != nil {
			t.Fatal(err)
		}
	}
	if err := unix.Mount("overlay", merged, "overlay", 0, "lowerdir="+lower+",upperdir="+upper+",workdir="+work); err != nil {
		t.Fatalf("overlay: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(merged, unix.MNT_DETACH) })
	ds := filepath.Join(merged, "swtok")
	before := tree(t, merged)
	_, err := apply.Rollback(req(ds, confdir), o)
	wantCode(t, err, contract.CodeCannotSwitch, "cannot be renamed")
	if after := tree(t, merged); after != before {
		t.Errorf("the refused rollback changed files")
	}
}

// Members of the token group can write the repository, so they can put entries at the names
// the in-place switch uses, and rename its working copy while it runs (SECURITY.md, promise
// 2): a root-only directory of someone else's at the working copy's name is refused and left
// alone; a working copy renamed during the switch is found by its marker, and the rerun
// finishes the switch from where it is.
func TestInPlaceHostile(t *testing.T) {
	t.Run("victim-at-working-copy-name", func(t *testing.T) {
		ds, confdir, o := newToken(t)
		r := req(ds, confdir)
		plan.ForceSwitch(&r, "in_place_inside")
		v := filepath.Join(ds, layout.InPlaceTmp)
		victim(t, v)
		before := tree(t, v)
		_, err := apply.Run(r, nil, o)
		wantCode(t, err, contract.CodeCorruptRepository, "")
		if after := tree(t, v); after != before {
			t.Errorf("the victim changed:\n%s\nwant\n%s", after, before)
		}
	})
	t.Run("working-copy-renamed-during-the-switch", func(t *testing.T) {
		ds, confdir, o := newToken(t)
		r := req(ds, confdir)
		plan.ForceSwitch(&r, "in_place_inside")
		orig := treeWithout(t, ds)
		n := 0
		o = apply.WithHook(o, func(s string) error {
			if s == "switch_entry" {
				if n++; n == 3 {
					// As a member can: a rename inside the repository.
					if err := os.Rename(filepath.Join(ds, layout.InPlaceTmp), filepath.Join(ds, "hers")); err != nil {
						t.Fatal(err)
					}
				}
			}
			return nil
		})
		_, err := apply.Run(r, nil, o)
		wantCode(t, err, contract.CodeVerifyFailed, "moved by someone else")
		o = apply.WithHook(o, nil)
		if _, err := apply.Run(r, nil, o); err != nil {
			t.Fatalf("rerun: %v", err)
		}
		checkMigrated(t, r, 4)
		if got := treeWithout(t, filepath.Join(ds, layout.InPlaceBak)); got != orig {
			t.Errorf("the backup is not the original")
		}
		if _, err := os.Lstat(filepath.Join(ds, "hers")); err == nil {
			t.Errorf("the renamed working copy is still there")
		}
	})
	t.Run("entry-at-backup-name", func(t *testing.T) {
		ds, confdir, o := newToken(t)
		r := req(ds, confdir)
		plan.ForceSwitch(&r, "in_place_inside")
		if err := os.WriteFile(filepath.Join(ds, layout.InPlaceBak), []byte("hers"), 0o660); err != nil {
			t.Fatal(err)
		}
		before := tree(t, ds)
		_, err := apply.Run(r, nil, o)
		wantCode(t, err, contract.CodeBackupExists, layout.InPlaceBak)
		if after := tree(t, ds); after != before {
			t.Errorf("the refused run changed the repository")
		}
	})
}
