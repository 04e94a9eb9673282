//go:build linux

package faults

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ocktools/pkcstok-migrate/internal/layout"
)

// trialRun is one trial under way.
type trialRun struct {
	t      *testing.T
	h      *harness
	fx     *fsSetup
	tr     trial
	c      cli
	data   *image // the repository's file system (and the conf's, unless confIm)
	confIm *image // the conf's own file system, for where == conf
	target *image // the file system the fault hits
	row    *row
	// swept is what a sweep left free before the run (bytes or inodes), -1 otherwise.
	swept int64
}

// inject makes the fault; lift takes it away. Both say what they did, for the table.
func (r *trialRun) inject() (string, error) {
	im := r.target
	switch r.tr.fault {
	case "enospc":
		if r.tr.free != nil {
			want := r.tr.free(r.fx.sp)
			got, err := fillTo(im.mnt, want)
			if err != nil {
				return "", err
			}
			r.swept = got
			return fmt.Sprintf("free %d (asked %d; need %d + margin %d)", got, want, r.fx.sp.needBytes, r.fx.sp.marginBytes), nil
		}
		return fillAll(im.mnt)
	case "inodes":
		var want int64
		if r.tr.free != nil {
			want = r.tr.free(r.fx.sp)
		}
		got, err := fillInodes(im.mnt, want)
		if err != nil {
			return "", err
		}
		if r.tr.free != nil {
			r.swept = got
		}
		return fmt.Sprintf("%d inodes free (asked %d; need %d + margin %d)", got, want, r.fx.sp.needInodes, r.fx.sp.marginInodes), nil
	case "ro":
		return "remount,ro", im.remountRO()
	case "shutdown":
		return "shutdown (NOLOGFLUSH)", shutdown(im.mnt)
	case "eio":
		var size int64
		if fi, err := statSize(im.img); err == nil {
			size = fi
		}
		limit := uint64(float64(size)*r.tr.cut) &^ 511
		return fmt.Sprintf("device cut at %d MiB of %d", limit/mib, size/mib), setSizeLimit(im.dev, limit)
	}
	return "", fmt.Errorf("unknown fault %q", r.tr.fault)
}

func statSize(p string) (int64, error) {
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		return 0, err
	}
	return st.Size, nil
}

func (r *trialRun) lift() (string, error) {
	im := r.target
	switch r.tr.fault {
	case "enospc", "inodes":
		err := removeFillers(im.mnt)
		if err == nil {
			return "fillers removed", nil
		}
		// A file system that gave up (btrfs aborts a transaction that runs out of
		// metadata space and turns read-only) comes back with a mount.
		if rerr := im.remount(); rerr != nil {
			return "", fmt.Errorf("remove fillers: %w; remount: %w", err, rerr)
		}
		if err2 := removeFillers(im.mnt); err2 != nil {
			return "", fmt.Errorf("remove fillers: %w; after a remount: %w", err, err2)
		}
		return fmt.Sprintf("fillers removed after a remount (%v)", errors.Unwrap(err)), nil
	case "ro":
		return "remount,rw", im.remountRW()
	case "shutdown":
		return "umount, mount (log recovery)", im.remount()
	case "eio":
		if err := setSizeLimit(im.dev, 0); err != nil {
			return "", err
		}
		return "size restored, umount, mount", im.remount()
	}
	return "", fmt.Errorf("unknown fault %q", r.tr.fault)
}

// fail records a failed check of the trial.
func (r *trialRun) fail(point, format string, args ...any) {
	r.t.Helper()
	r.row.failed = true
	r.t.Errorf("%s: %s", point, fmt.Sprintf(format, args...))
}

// check is one check point: the run's answer, then the tree: nothing lost, the conf whole,
// the window invariant. A refusal (no_space, read_only) must have changed nothing.
func (r *trialRun) check(i int, point string, o *outcome, before map[string]fileSum) state {
	r.t.Helper()
	// Something outside the test may unmount an image (a clean-up of another job): what is
	// under the mount point then is not the trial's, and no finding.
	for _, im := range []*image{r.data, r.confIm} {
		if im != nil && !im.mounted() {
			r.t.Fatalf("%s: %s is no longer mounted: something outside the test unmounted it", point, im.mnt)
		}
	}
	if o != nil {
		if why := o.clean(); why != "" {
			r.fail(point, "not a clean answer: %s", why)
		}
	}
	st := r.fx.tk.look(r.c.ds, r.c.conf)
	if st.lost > 0 {
		r.fail(point, "%d objects lost: %s", st.lost, strings.Join(st.problems, "; "))
		r.row.lost = max(r.row.lost, st.lost)
	}
	if st.window() {
		r.row.window = append(r.row.window, point)
		r.fail(point, "WINDOW: %s holds a 3.12 repository while slot %d of %s lacks tokversion = 3.12 (conf %s)", r.c.ds, slot, r.c.conf, st.confState)
	}
	if !st.unreadable && st.confState != "orig" && st.confState != "3.12" {
		r.fail(point, "%s is neither the original nor the conf apply writes: %s", layout.ConfName, st.confState)
	}
	if !st.unreadable && st.repo != "old" && st.repo != "3.12" {
		r.fail(point, "the datastore holds no repository of either format: %s (%s)", st.repo, strings.Join(st.problems, "; "))
	}
	if st.unreadable && i >= 2 {
		r.fail(point, "the file system still answers EIO after the fault was lifted: %s", strings.Join(st.problems, "; "))
	}
	if o != nil && (o.code == "no_space" || o.code == "read_only") && before != nil {
		if after, err := r.treeNow(); err == nil {
			if d := treeDiff(before, after); len(d) > 0 {
				r.fail(point, "apply said %s (\"nothing was done\") but changed: %s", o.code, strings.Join(d, "; "))
			}
		}
	}
	cell := st.cell()
	if o != nil {
		cell = o.short() + " → " + cell
	}
	if len(st.leftovers) > 0 {
		cell += " +" + strings.Join(st.leftovers, ",")
	}
	r.row.cells[i] = cell
	return st
}

// treeNow is the metadata of everything the runs may touch: the repository's parent (the
// repository, the working copy, the backup, the journal, the conf when it is there) and the
// conf directory. A run that changed nothing leaves it as it was.
func (r *trialRun) treeNow() (map[string]fileSum, error) {
	all := map[string]fileSum{}
	for _, d := range []string{filepath.Dir(r.c.ds), r.c.conf} {
		s, err := snapshot(d, false)
		if err != nil {
			return nil, err
		}
		for k, v := range s {
			all[d+"/"+k] = v
		}
	}
	return all, nil
}

// start mounts fresh copies of the images for one attempt of a trial.
func (h *harness) start(t *testing.T, fx *fsSetup, tr trial, row *row) (*trialRun, func()) {
	fx.seq++
	r := &trialRun{t: t, h: h, fx: fx, tr: tr, row: row, swept: -1}
	id := fmt.Sprintf("%s-%d", fx.kind.name, fx.seq)
	var releaseData, releaseConf func()
	r.data, releaseData = h.copyOf(t, fx.kind, fx.golden, id)
	confdir := filepath.Join(r.data.mnt, "t", "conf")
	r.target = r.data
	if tr.where == "conf" {
		r.confIm, releaseConf = h.copyOf(t, fx.kind, fx.confGolden, id+"-conf")
		confdir = filepath.Join(r.confIm.mnt, "conf")
		r.target = r.confIm
	}
	h.cli(&r.c, filepath.Join(r.data.mnt, "t", dsName), confdir)
	return r, func() {
		if releaseConf != nil {
			releaseConf()
		}
		releaseData()
	}
}

// stoppedAt says whether the run was found stopped with the moment's entry still there (the
// phase lists the entries present). A run caught late, after the step that removes or
// renames the entry again (the exchange takes the working copy's name, the switch's end the
// journal), met the fault at another moment. The test does not assume the order of the
// steps: that is what a change of apply may change.
func stoppedAt(m moment, at string) bool {
	names, ok := strings.CutPrefix(at, "at: ")
	return ok && slices.Contains(strings.Split(names, "+"), m.name)
}

// faultRun runs apply with the trial's fault: before it, or at its moment. missed says why
// the run did not meet the fault where the trial wants it ("" when it did).
func (r *trialRun) faultRun() (first *outcome, notes []string, missed string) {
	tr := r.tr
	if tr.moment.name == atStart.name {
		note, err := r.inject()
		if err != nil {
			r.t.Fatalf("the fault before the run: %v", err)
		}
		return r.c.run("apply"), []string{note}, ""
	}
	var ierr error
	first = r.c.runAt("apply", tr.moment, func() string {
		note, err := r.inject()
		if err != nil {
			ierr = err
			return "fault failed: " + err.Error()
		}
		return note
	})
	notes = []string{first.fired}
	switch {
	case strings.HasPrefix(first.fired, "not reached"):
		missed = fmt.Sprintf("the run ended (%s) before %s", first.short(), tr.moment.name)
	case first.at == "":
		missed = "the run was not stopped: " + first.fired
	case ierr != nil:
		missed = fmt.Sprintf("the fault failed (%s): %v", first.at, ierr)
	case tr.moment.entry != "" && !stoppedAt(tr.moment, first.at):
		missed = fmt.Sprintf("stopped %s, past %s", first.at, tr.moment.name)
	}
	return first, notes, missed
}

// runTrial: the fault, then in order: the state right after it, a rerun of apply under it,
// the fault lifted, apply again (must succeed), plan (nothing to do), rollback (must succeed
// and give back the original repository and conf byte for byte).
func (h *harness) runTrial(t *testing.T, fx *fsSetup, tr trial) {
	row := &row{fs: fx.kind.name, trial: tr.name()}
	defer func() {
		row.failed = row.failed || t.Failed()
		h.add(row)
	}()
	// A run the stop did not catch at its moment (it ended first, or went past the moment
	// before it stopped) tested another trial: it is made again on fresh images, twice at
	// most, and the table says so.
	var r *trialRun
	var first *outcome
	var before map[string]fileSum
	var notes, retried []string
	for attempt := 1; ; attempt++ {
		var release func()
		r, release = h.start(t, fx, tr, row)
		before, _ = r.treeNow()
		var missed string
		first, notes, missed = r.faultRun()
		if missed == "" {
			break
		}
		if attempt == 3 {
			r.fail("after the fault", "the fault missed its moment three times, the last: %s", missed)
			break
		}
		retried = append(retried, missed)
		release()
	}
	if len(retried) > 0 {
		notes = append(notes, fmt.Sprintf("made again %d× (%s)", len(retried), strings.Join(retried, "; ")))
	}
	r.check(0, "after the fault", first, before)
	if first.exit != 0 {
		notes = append(notes, first.code+": "+first.msg)
	}
	// The promise of the space check: a file system short of what the plan counts, with
	// its margin, is refused before any work.
	if r.swept >= 0 {
		need := fx.sp.needBytes + fx.sp.marginBytes
		if tr.fault == "inodes" {
			need = fx.sp.needInodes + fx.sp.marginInodes
		}
		if r.swept < need && first.code != "no_space" {
			r.fail("after the fault", "%d free of the %d needed with the margin, but apply answered %s", r.swept, need, first.short())
		}
		// And the other way: a file system with the need and its margin free is enough
		// (the count includes what XFS takes for each new inode).
		if r.swept >= need && first.exit != 0 && strings.Contains(first.msg, "no space left") {
			r.fail("after the fault", "SHORT: %d free of the %d needed with the margin, the plan said enough, apply ran out of space", r.swept, need)
		}
	}

	// 2. apply again under the fault.
	before, _ = r.treeNow()
	rerun := r.c.run("apply")
	r.check(1, "rerun under the fault", rerun, before)

	// 3. The fault lifted.
	note, err := r.lift()
	if err != nil {
		t.Fatalf("lift the fault: %v", err)
	}
	notes = append(notes, note)
	r.check(2, "fault lifted", nil, nil)

	// 4. apply again, then plan: nothing left to do.
	again := r.c.run("apply")
	if again.exit != 0 {
		r.fail("apply after the fault", "exit %d %s: %s", again.exit, again.code, again.msg)
	}
	st := r.check(3, "apply after the fault", again, nil)
	if again.exit == 0 && (st.repo != "3.12" || st.confState != "3.12" || len(st.leftovers) > 0) {
		r.fail("apply after the fault", "succeeded but left %s %v", st.cell(), st.leftovers)
	}
	plan := r.c.run("plan")
	if plan.exit != 0 {
		r.fail("plan after apply", "exit %d (%s): nothing should be left to do", plan.exit, plan.code)
	}
	r.row.cells[3] += " · " + plan.short()

	// 5. rollback: the original repository and conf, byte for byte.
	rb := r.c.run("rollback")
	if why := rb.clean(); why != "" {
		r.fail("rollback", "not a clean answer: %s", why)
	}
	switch {
	case rb.exit != 0:
		r.fail("rollback", "exit %d %s: %s", rb.exit, rb.code, rb.msg)
		r.row.cells[4] = rb.short()
	default:
		if d := fx.tk.unchanged(r.c.ds, r.c.conf); d != "" {
			r.fail("rollback", "the original is not back: %s", d)
			r.row.cells[4] = rb.short() + " · differs"
		} else {
			r.row.cells[4] = rb.short() + " · identical"
		}
	}
	if st := fx.tk.look(r.c.ds, r.c.conf); st.lost > 0 {
		r.fail("rollback", "%d objects lost: %s", st.lost, strings.Join(st.problems, "; "))
		r.row.lost = max(r.row.lost, st.lost)
	}
	r.row.note = strings.Join(notes, "; ")
}
