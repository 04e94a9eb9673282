package crash

// The power-loss crash test: see README.md.
//
// Every scenario runs the real binary once under strace on a fresh token, replays the trace
// with crash/crashsim, and for every cut point of it builds the strict, the lenient and
// a few seeded random crash states. Every distinct state is opened by the real openCryptoki
// of the testing-amd64 root, as the first application after the reboot would, which must
// change nothing (library_test.go). Each distinct state (all of them, or a seeded sample
// when a scenario has a budget) is written out, checked as a booting machine would see it,
// and rebooted into: the operation runs again with the real binary and must converge, and a
// second run must change nothing. Then the same is done with a binary built with the tag
// crashcheck_nojournalsync, which lacks one barrier: that build must be caught.
//
// Runs with PKCSTOK_CRASH=1 (make crash), as root, with strace, the group pkcs11 and the
// testing-amd64 root of make setup (with CI=true a missing one fails the test instead of
// skipping it; PKCSTOK_CRASH_LIBRARY=0 sweeps without the library). PKCSTOK_CRASH_SEED changes
// the seed (default 14); PKCSTOK_CRASH_KEEP=DIR writes every failing state there as a JSON
// file for crash/testdata/states; PKCSTOK_CRASH_BIN=FILE tests that binary (built with
// -tags faultinject) instead of building one, e.g. an older commit's.

import (
	"errors"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ocktools/pkcstok-migrate/crash/crashsim"
	"github.com/ocktools/pkcstok-migrate/internal/repofs"
)

// scenario is one traced run and the crash states of its trace.
type scenario struct {
	name    string
	fixture string
	op      string // apply, legacy or rollback
	budget  int    // how many distinct states to reboot into at most (0: all)
	// from, when set, gives the initial tree instead of the fixture (a crash state of an
	// earlier scenario: the recovery run is crashed too).
	from func() *crashsim.Tree
	// force switches in place (PKCSTOK_MIGRATE_SWITCH): "in_place_inside" (the
	// backup inside the repository, as on a mount point) or "in_place" (beside it).
	force string
	// layout puts the scenario's trees on a real layout the exchange cannot switch: "bind"
	// (a mount-point repository) or "overlay" (a lower-layer repository): fixture.layout.
	layout string
	// noLibrary leaves out the library check (the self-check: only the barrier it
	// removes may catch that build).
	noLibrary bool
	// slot, for a rollback of the host fixture, rolls back that slot alone (rollbackOne):
	// the other slots must stay as they are.
	slot int
}

// labeled is one distinct crash state and where it first came from.
type labeled struct {
	tree  *crashsim.Tree
	id    int // its place among the scenario's distinct states
	cut   int
	kind  string // strict, lenient, mix N: how it was first built
	label string
	// strict, lenient, mix: whether some cut point built it that way (a state may be both
	// the lenient state before a barrier and the strict state after it).
	strict, lenient, mix bool
	// builtAt is every cut point and kind of cut that built it.
	builtAt []builtAt
	// libErr: the real token library damaged it at boot, or could not open it
	// (library_test.go).
	libErr error
}

// builtAt is one cut that built a state: the cut point, where it is ("after ..."), the kind.
type builtAt struct {
	cut         int
	where, kind string
}

// sweepStats are the figures of one scenario.
type sweepStats struct {
	name                            string
	ops, cuts, built, distinct, ran int
	byKind                          map[string]int
	failures                        []string
	tl                              tally
	dur                             time.Duration
	// afterOp is the lenient state right after the first op of each kind ("exchange"), for
	// the recovery scenarios.
	afterOp map[string]*crashsim.Tree
	// The library check: the states by outcome, the states damaged, the cut points where a
	// state was damaged, and the scenario's report (table and DAMAGE list).
	libOutcomes    map[string]int
	libDamaged     int
	libDamagedCuts []int
	libReport      string
	libDur         time.Duration
}

func gate(t *testing.T, needStrace bool) {
	t.Helper()
	ci := os.Getenv("CI") == "true"
	miss := func(why string) {
		if ci {
			t.Fatalf("the crash test cannot run in CI: %s", why)
		}
		t.Skip(why)
	}
	if os.Geteuid() != 0 {
		miss("needs root (the token group is set on every file)")
	}
	if _, err := repofs.LookupGroup("pkcs11"); err != nil {
		miss("needs the group pkcs11 (groupadd -r pkcs11)")
	}
	if needStrace {
		if _, err := exec.LookPath("strace"); err != nil {
			miss("needs strace (apt-get install strace)")
		}
	}
}

func seed() int64 {
	if s, err := strconv.ParseInt(os.Getenv("PKCSTOK_CRASH_SEED"), 10, 64); err == nil {
		return s
	}
	return 14
}

// hostRecoveryEnv set to 1 adds apply-host-recovery: the host's apply rerun from the state
// right after its first exchange, crashed at every point.
const hostRecoveryEnv = "PKCSTOK_CRASH_HOST_RECOVERY"

// mixesPerCut is how many random mixes are built at every cut point.
const mixesPerCut = 3

func TestCrash(t *testing.T) {
	if os.Getenv("PKCSTOK_CRASH") != "1" {
		t.Skip("the crash sweep runs in its own make target: PKCSTOK_CRASH=1 (make crash)")
	}
	gate(t, true)
	lib := newLibChecker(t)
	start := time.Now()
	h := newHarness(t, true)
	h.lib = lib
	sd := seed()
	if lib != nil {
		keepLibrary(t, fmt.Sprintf("# The real openCryptoki %s (%s) at every cut point, seed %d\n", lib.version, libSpec.Name(), sd), true)
	}
	t.Logf("seed %d, %d random mixes per cut point, %d workers; traced runs and states on %s (%s)", sd, mixesPerCut, workers(), h.fsType, h.scratch)

	if b := os.Getenv("PKCSTOK_CRASH_BUDGET"); b != "" {
		t.Logf("PKCSTOK_CRASH_BUDGET=%s: each scenario reboots into every state a strict cut built and at most %s states in all", b, b)
	}

	var applySmall *sweepStats
	var rollbackSmall, applyHost *sweepStats
	scenarios := []scenario{
		{name: "apply/soft-small", fixture: "soft-small", op: "apply"},
		{name: "rollback/soft-small", fixture: "soft-small", op: "rollback"},
		{name: "legacy/soft-small", fixture: "soft-small", op: "legacy", budget: 60},
		{name: "apply/soft-mixed20", fixture: "soft-mixed20", op: "apply", budget: 90},
		{name: "apply-recovery/soft-small", fixture: "soft-small", op: "apply", from: func() *crashsim.Tree { return applySmall.afterOp["exchange"] }},
		{name: "rollback-recovery/soft-small", fixture: "soft-small", op: "rollback", from: func() *crashsim.Tree { return rollbackSmall.afterOp["exchange"] }},
		// The in-place switch, forced here where the exchange would work: the
		// states between its first and its last exchange mix old and new files.
		{name: "apply-in-place-inside/soft-small", fixture: "soft-small", op: "apply", force: "in_place_inside", budget: 80},
		{name: "apply-in-place-beside/soft-small", fixture: "soft-small", op: "apply", force: "in_place", budget: 40},
		{name: "rollback-in-place-inside/soft-small", fixture: "soft-small", op: "rollback", force: "in_place_inside", budget: 60},
		{name: "legacy-in-place-inside/soft-small", fixture: "soft-small", op: "legacy", force: "in_place_inside", budget: 40},
		// And on the real layouts, where plan chooses the in-place switch itself.
		{name: "apply-mount-point/soft-small", fixture: "soft-small", op: "apply", layout: "bind", budget: 30},
		{name: "rollback-mount-point/soft-small", fixture: "soft-small", op: "rollback", layout: "bind", budget: 20},
		{name: "apply-overlay-lower/soft-small", fixture: "soft-small", op: "apply", layout: "overlay", budget: 30},
		{name: "rollback-overlay-lower/soft-small", fixture: "soft-small", op: "rollback", layout: "overlay", budget: 20},
		// A host: three Soft slots (soft-small, deb381-soft, soft-mixed20, each with its own
		// PINs) migrated by one apply; one of them rolled back alone; the rerun of the host's
		// apply crashed from the state right after its first exchange.
		{name: "apply-host/" + hostName, fixture: hostFixture, op: "apply", budget: 30},
		{name: "rollback-slot/" + hostName + "-slot5", fixture: hostFixture, op: "rollback", slot: 5},
	}
	if os.Getenv(hostRecoveryEnv) == "1" {
		// Not in make crash: its rerun copies the other two slots again, and its 25 strict
		// states cost as much as apply-host's (README.md).
		scenarios = append(scenarios, scenario{name: "apply-host-recovery/" + hostName, fixture: hostFixture, op: "apply", budget: 25,
			from: func() *crashsim.Tree { return applyHost.afterOp["exchange"] }})
	}
	var all []*sweepStats
	for _, sc := range scenarios {
		sc := sc
		var st *sweepStats
		ok := t.Run(sc.name, func(t *testing.T) {
			st = h.sweep(t, sc, h.bin, sd, false)
			for _, f := range st.failures {
				t.Error(f)
			}
		})
		if st == nil {
			if !ok {
				t.FailNow()
			}
			continue // left out by -run
		}
		switch sc.name {
		case "apply/soft-small":
			applySmall = st
		case "rollback/soft-small":
			rollbackSmall = st
		case "apply-host/" + hostName:
			applyHost = st
		}
		all = append(all, st)
	}

	// The self-check: a build without the barrier that makes the journal durable before
	// the exchange must be caught. Its strict states are enough.
	t.Run("selfcheck/crashcheck_nojournalsync", func(t *testing.T) {
		broken := filepath.Join(h.dir, "pkcstok-migrate-nojournalsync")
		build(t, broken, "crashcheck_nojournalsync")
		st := h.sweep(t, scenario{name: "selfcheck", fixture: "soft-small", op: "apply", noLibrary: true}, broken, sd, true)
		if len(st.failures) == 0 {
			t.Fatalf("the build without the journal's syncfs passed %d crash states: the crash test cannot fail", st.ran)
		}
		t.Logf("SELFCHECK: the build without the journal's syncfs is caught in %d of %d strict states; first: %s",
			len(st.failures), st.ran, st.failures[0])
		// The in-place switch relies on the same barrier (its journal and the verified copy
		// before the first exchange). Its strict states cannot show it (no exchange is
		// durable before the next barrier either): the mixes do, where some exchanges
		// survived and the contents they point at did not.
		st = h.sweep(t, scenario{name: "selfcheck-in-place", fixture: "soft-small", op: "apply", force: "in_place_inside", budget: 40, noLibrary: true}, broken, sd, false)
		if len(st.failures) == 0 {
			t.Fatalf("in place, the build without the journal's syncfs passed %d crash states: the crash test cannot fail", st.ran)
		}
		t.Logf("SELFCHECK: in place, the build without the journal's syncfs is caught in %d of %d states; first: %s",
			len(st.failures), st.ran, st.failures[0])
	})

	var cuts, built, distinct, ran, checked, lost, half, missing, mixed int64
	for _, st := range all {
		cuts += int64(st.cuts)
		built += int64(st.built)
		distinct += int64(st.distinct)
		ran += int64(st.ran)
		checked += st.tl.objectsChecked.Load()
		lost += st.tl.objectsLost.Load()
		half += st.tl.halfConf.Load()
		missing += st.tl.missingRepo.Load()
		mixed += st.tl.inPlaceMixed.Load()
	}
	t.Logf("FIGURES: %d cut points, %d crash states built, %d distinct, %d rebooted into; objects checked %d, lost %d; half confs %d; missing repository paths %d; in-place switches half done at boot (journal present, finished by the rerun) %d; on %s; %.0fs",
		cuts, built, distinct, ran, checked, lost, half, missing, mixed, h.fsType, time.Since(start).Seconds())
	if lib != nil {
		sum := lib.summary(all)
		t.Log("\n" + sum)
		if p := keepLibrary(t, sum, false); p != "" {
			t.Logf("the library's tables and DAMAGE lists: %s", p)
		}
	}
}

// keepLibrary appends text to library.md in PKCSTOK_CRASH_KEEP (first empties it), scenario
// by scenario, so that a run cut short keeps what it found. It returns the file's path.
func keepLibrary(t *testing.T, text string, first bool) string {
	keep := os.Getenv("PKCSTOK_CRASH_KEEP")
	if keep == "" {
		return ""
	}
	p := filepath.Join(keep, "library.md")
	flags := os.O_WRONLY | os.O_CREATE | os.O_APPEND
	if first {
		flags |= os.O_TRUNC
	}
	err := os.MkdirAll(keep, 0o755)
	if err == nil {
		var f *os.File
		if f, err = os.OpenFile(p, flags, 0o644); err == nil {
			_, err = f.WriteString(text + "\n")
			if cerr := f.Close(); err == nil {
				err = cerr
			}
		}
	}
	if err != nil {
		t.Error(err)
	}
	return p
}

func workers() int { return max(1, min(runtime.NumCPU(), 4)) }

// sweep traces one scenario and reboots into its crash states. strictOnly keeps the states
// a strict cut built alone (for the self-check).
func (h *harness) sweep(t *testing.T, sc scenario, bin string, sd int64, strictOnly bool) *sweepStats {
	start := time.Now()
	st := &sweepStats{name: sc.name, byKind: map[string]int{}, afterOp: map[string]*crashsim.Tree{}, libOutcomes: map[string]int{}}
	fx, sim := h.traceScenario(t, sc, bin)
	st.ops = len(sim.Ops)
	all, err := collect(sim, sd, st)
	if err != nil {
		t.Fatalf("%s: %v", sc.name, err)
	}
	st.distinct = len(all)
	if h.lib != nil && !sc.noLibrary {
		// Boot, then an application: before any rerun, the real token library opens every
		// distinct state (library_test.go).
		st.libReport = h.lib.libSweep(fx, sc, all, len(sim.Ops), st)
		t.Log("\n" + st.libReport)
		keepLibrary(t, st.libReport, false)
	}
	states := sample(all, budgetFor(sc), sd, strictOnly)
	h.runStates(fx, sc, bin, states, st)
	// The states left out of the sample were opened by the library all the same.
	sampled := map[int]bool{}
	for _, s := range states {
		sampled[s.id] = true
	}
	for _, s := range all {
		if s.libErr != nil && !sampled[s.id] {
			st.failures = append(st.failures, h.failure(fx, sc, s, s.libErr))
		}
	}
	sort.Strings(st.failures)
	st.dur = time.Since(start)
	lib := ""
	if st.libReport != "" {
		lib = fmt.Sprintf("; the library opened %d distinct states, %d damaged, at %d cut points, in %.1fs", st.distinct, st.libDamaged, len(st.libDamagedCuts), st.libDur.Seconds())
	}
	t.Logf("%s: %d ops, %d cut points, %d crash states built, %d distinct, %d rebooted into (%s); %d failed; objects checked %d, lost %d; half confs %d; missing repository paths %d%s; %.1fs",
		sc.name, st.ops, st.cuts, st.built, st.distinct, st.ran, kinds(st.byKind), len(st.failures),
		st.tl.objectsChecked.Load(), st.tl.objectsLost.Load(), st.tl.halfConf.Load(), st.tl.missingRepo.Load(), lib, st.dur.Seconds())
	return st
}

// traceScenario prepares the scenario's initial tree, runs its operation under strace and
// checks that the traced run itself succeeded.
func (h *harness) traceScenario(t *testing.T, sc scenario, bin string) (*fixture, *crashsim.Sim) {
	fx := h.fixture(t, sc.fixture)
	if sc.force != "" || sc.layout != "" {
		c := *fx
		c.force, c.layout = sc.force, sc.layout
		fx = &c
	}
	if sc.slot != 0 {
		c, err := h.rollbackOne(fx, sc.slot)
		if err != nil {
			t.Fatalf("%s: %v", sc.name, err)
		}
		fx = c
	}
	root := h.newDir("traced")
	initial := fx.tree
	if sc.from != nil {
		if initial = sc.from(); initial == nil {
			t.Fatalf("%s: no initial state from the earlier scenario", sc.name)
		}
	}
	undo, err := fx.materialize(initial, root)
	defer os.RemoveAll(root)
	defer undo()
	if err != nil {
		t.Fatal(err)
	}
	if sc.op == "rollback" && sc.from == nil {
		// Rollback starts from a migrated token.
		stdin, args := fx.command("apply", root)
		if r, err := h.run(fx, bin, stdin, args...); err != nil || r.code != 0 {
			t.Fatalf("apply before the rollback: %v %v", err, r)
		}
		whole := *fx // every slot migrated
		whole.target = nil
		if err := h.finalCheck(&whole, "apply", root); err != nil {
			t.Fatalf("apply before the rollback: %v", err)
		}
		if fx.start, err = crashsim.Snapshot(root); err != nil {
			t.Fatal(err)
		}
	}
	sim, r, err := h.trace(fx, bin, sc.op, root)
	if err != nil {
		t.Fatalf("%s: %v\n%v", sc.name, err, r)
	}
	if r.code != 0 || sc.op != "legacy" && !r.changed {
		t.Fatalf("%s: the traced run did not succeed with changes: %s", sc.name, r)
	}
	if err := h.finalCheck(fx, sc.op, root); err != nil {
		t.Fatalf("%s: the traced run: %v", sc.name, err)
	}
	return fx, sim
}

// runStates reboots into every state on a few workers and records the failures in st.
func (h *harness) runStates(fx *fixture, sc scenario, bin string, states []labeled, st *sweepStats) {
	st.ran += len(states)
	for _, s := range states {
		for k, by := range map[string]bool{"strict": s.strict, "lenient": s.lenient, "mix": s.mix} {
			if by {
				st.byKind[k]++
			}
		}
	}
	var mu sync.Mutex
	work := make(chan labeled)
	var wg sync.WaitGroup
	for w := 0; w < workers(); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for s := range work {
				_, err := h.checkState(fx, sc.op, s.tree, &st.tl, bin, false)
				if s.libErr != nil {
					err = errors.Join(s.libErr, err)
				}
				if err == nil {
					continue
				}
				msg := h.failure(fx, sc, s, err)
				mu.Lock()
				st.failures = append(st.failures, msg)
				mu.Unlock()
			}
		}()
	}
	for _, s := range states {
		work <- s
	}
	close(work)
	wg.Wait()
	sort.Strings(st.failures)
}

// failure is the message of a failing state; with PKCSTOK_CRASH_KEEP the state is saved.
func (h *harness) failure(fx *fixture, sc scenario, s labeled, err error) string {
	msg := fmt.Sprintf("%s: %s: %v", sc.name, s.label, err)
	if keep := os.Getenv("PKCSTOK_CRASH_KEEP"); keep != "" {
		if p, serr := saveState(keep, fx, sc.op, s, err); serr != nil {
			msg += fmt.Sprintf(" (not saved: %v)", serr)
		} else {
			msg += " (saved as " + p + ")"
		}
	}
	return msg
}

func kinds(m map[string]int) string {
	var s []string
	for _, k := range []string{"strict", "lenient", "mix"} {
		s = append(s, fmt.Sprintf("%d built by a %s cut", m[k], k))
	}
	return strings.Join(s, ", ")
}

// collect builds the crash states of every cut point and keeps the distinct ones, in cut
// order. Once the run has ended, nothing may be left that only the page cache holds: the
// strict state after the last op must be the final tree.
func collect(sim *crashsim.Sim, sd int64, st *sweepStats) ([]labeled, error) {
	seen := map[[32]byte]int{}
	var out []labeled
	err := sim.Cuts(func(c *crashsim.Cut) (bool, error) {
		st.cuts++
		where := "before the first op"
		if c.K > 0 {
			where = "after " + sim.Ops[c.K-1].String()
		}
		add := func(kind string, tr *crashsim.Tree, err error) error {
			if err != nil {
				return err
			}
			st.built++
			h := tr.Hash()
			i, ok := seen[h]
			if !ok {
				i = len(out)
				seen[h] = i
				out = append(out, labeled{tree: tr, id: i, cut: c.K, kind: kind,
					label: fmt.Sprintf("cut %d of %d (%s), %s", c.K, len(sim.Ops), where, kind)})
			}
			out[i].builtAt = append(out[i].builtAt, builtAt{cut: c.K, where: where, kind: kind})
			switch strings.Fields(kind)[0] {
			case "strict":
				out[i].strict = true
			case "lenient":
				out[i].lenient = true
			default:
				out[i].mix = true
			}
			return nil
		}
		strict, err := c.Strict()
		if err := add("strict", strict, err); err != nil {
			return false, err
		}
		lenient, err := c.Lenient()
		if err := add("lenient", lenient, err); err != nil {
			return false, err
		}
		for i := 0; i < mixesPerCut; i++ {
			m, err := c.Mix(sd*1_000_003 + int64(c.K)*31 + int64(i))
			if err := add(fmt.Sprintf("mix %d", i), m, err); err != nil {
				return false, err
			}
		}
		if c.K > 0 {
			kind := sim.Ops[c.K-1].Kind.String()
			if _, ok := st.afterOp[kind]; !ok {
				st.afterOp[kind] = lenient
			}
		}
		if c.K == len(sim.Ops) {
			if d := strict.Diff(lenient); len(d) > 0 {
				st.failures = append(st.failures, fmt.Sprintf("the run ended with work a power cut would lose:\n%s", strings.Join(d, "\n")))
			}
		}
		return true, nil
	})
	return out, err
}

// budgetFor is the scenario's budget, capped by PKCSTOK_CRASH_BUDGET when set (make fs-suites
// runs the sweep once per extra file system and keeps it short: every strict state still,
// and that many states in all).
func budgetFor(sc scenario) int {
	c, err := strconv.Atoi(os.Getenv("PKCSTOK_CRASH_BUDGET"))
	if err != nil || c <= 0 || sc.budget > 0 && sc.budget <= c {
		return sc.budget
	}
	return c
}

// sample keeps every state a strict cut built and, within budget, a seeded random choice of
// the others.
func sample(states []labeled, budget int, sd int64, strictOnly bool) []labeled {
	var strict, other []labeled
	for _, s := range states {
		if s.strict {
			strict = append(strict, s)
		} else if !strictOnly {
			other = append(other, s)
		}
	}
	if budget > 0 && len(strict)+len(other) > budget {
		r := rand.New(rand.NewSource(sd))
		r.Shuffle(len(other), func(i, j int) { other[i], other[j] = other[j], other[i] })
		other = other[:max(0, budget-len(strict))]
	}
	out := append(strict, other...)
	sort.SliceStable(out, func(i, j int) bool { return out[i].cut < out[j].cut })
	return out
}

// crashDirEnv names a directory on the file system the traced runs and the crash states are
// to be written to (make fs-suites: a loop-mounted XFS or btrfs image). Unset, they go to a
// private tmpfs.
const crashDirEnv = "PKCSTOK_CRASH_DIR"

// scratchDir is where the traced runs and the crash states are written: a fresh directory
// below $PKCSTOK_CRASH_DIR when it is set (no tmpfs then: the point is that file system),
// else privateTmpfs(dir).
func scratchDir(t *testing.T, dir string) (string, error) {
	base := os.Getenv(crashDirEnv)
	if base == "" {
		return privateTmpfs(t, dir), nil
	}
	if fi, err := os.Stat(base); err != nil || !fi.IsDir() {
		return "", fmt.Errorf("%s=%s: not a directory (%v)", crashDirEnv, base, err)
	}
	d, err := os.MkdirTemp(base, "pkcstok-crash-")
	if err != nil {
		return "", fmt.Errorf("%s: %w", crashDirEnv, err)
	}
	// MkdirTemp gives 0700; the fixtures' root is 0755 like a real /var/lib.
	if err := os.Chmod(d, 0o755); err != nil {
		return "", err
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d, nil
}

// privateTmpfs mounts a tmpfs at dir when root may (the reruns syncfs; on a shared disk that
// waits for every other process's writes, and durability is the model's business, not the
// disk's), else uses dir on the ordinary disk.
func privateTmpfs(t *testing.T, dir string) string {
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=512m,mode=0755"); err != nil {
		t.Logf("no private tmpfs (%v): states are written to the ordinary disk", err)
		return dir
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	return dir
}

// fsTypeOf names the file system dir is on (statfs magic), for the log.
func fsTypeOf(dir string) string {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return "unknown (" + err.Error() + ")"
	}
	switch uint32(st.Type) {
	case unix.TMPFS_MAGIC:
		return "tmpfs"
	case unix.EXT4_SUPER_MAGIC:
		return "ext4"
	case unix.XFS_SUPER_MAGIC:
		return "xfs"
	case unix.BTRFS_SUPER_MAGIC:
		return "btrfs"
	}
	return fmt.Sprintf("0x%x", uint32(st.Type))
}
