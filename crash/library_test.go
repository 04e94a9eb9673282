package crash

// The boot-then-application check (README.md, "The token library at every cut point"): before
// the rerun, the real openCryptoki 3.27 of the cached Debian testing root (make setup) opens
// each crash state as an application would after the reboot (pkcsslotd, then a user login
// with the user PIN and C_FindObjects through pkcs11-tool), and nothing of the repository, its
// backups or the conf directory may differ afterwards.
//
// The library runs once per distinct input (libKey): the slot, the user PIN, the bytes of the
// state's opencryptoki.conf, and the repository directory's own metadata with everything of
// NVTOK.DAT, MK_SO, MK_USER and TOK_OBJ. That covers what the library reads (under strace it
// opens of a state only opencryptoki.conf and, in the repository, NVTOK.DAT, MK_USER,
// TOK_OBJ/OBJ.IDX and the objects listed there), so two states with the same input get the
// same answer and the same writes.

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ocktools/pkcstok-migrate/crash/crashsim"
	"github.com/ocktools/pkcstok-migrate/e2e/ockroot"
	"github.com/ocktools/pkcstok-migrate/internal/layout"
)

// libraryEnv set to 0 sweeps without the library check (make fs-suites: the library reads
// a copy in its own root, the same bytes on every file system).
const libraryEnv = "PKCSTOK_CRASH_LIBRARY"

// libSpec is the root whose openCryptoki opens the crash states: Debian testing's 3.27 on
// amd64, the newest release (e2e/README.md).
var libSpec = ockroot.Testing

// What an application saw.
const (
	libLoginOK      = "login ok"
	libRefused      = "token refused" // C_OpenSession or an earlier call: no token in the slot
	libLoginFailed  = "login failed"  // C_Login
	libListFailed   = "listing failed"
	libNoRepository = "no repository" // nothing at the repository path: the library is not run
	// pkcsslotd exited at start: no slot of the machine can be opened until apply runs
	// again. Nothing is written, so it is a refusal, not damage; but only the known window
	// may cause it (switchedInPrivate), any other state it refuses fails.
	libSlotdRefused = "pkcsslotd refused to start"
)

// slotdReason is the line of pkcsslotd's log that says why it refused to start.
func slotdReason(err error) string {
	_, log, _ := strings.Cut(err.Error(), "): ")
	for _, l := range strings.Split(log, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			return l
		}
	}
	return err.Error()
}

// libOutcome is one run of the library on one input: a login to each slot of the state, in
// one session.
type libOutcome struct {
	logins  []libLogin
	changed []string // how the repositories, their backups and the conf directory differ afterwards
	err     error    // the check could not be made
	dur     time.Duration
}

// libLogin is what an application saw of one slot.
type libLogin struct {
	slot    int
	kind    string
	rv      string // the failing call and its return value, when not ok
	objects int    // objects listed after the login
}

func (o *libOutcome) damaged() bool { return len(o.changed) > 0 }

func (l libLogin) String() string {
	switch l.kind {
	case libLoginOK:
		return fmt.Sprintf("%s, %d objects listed", l.kind, l.objects)
	case "":
		return "not run"
	}
	if l.rv != "" {
		return l.kind + " (" + l.rv + ")"
	}
	return l.kind
}

func (o *libOutcome) String() string {
	var parts []string
	if o.slotdRefused() {
		parts = []string{o.logins[0].String()}
	}
	for _, l := range o.logins {
		if o.slotdRefused() {
			break
		}
		if len(o.logins) > 1 {
			parts = append(parts, fmt.Sprintf("slot %d: %s", l.slot, l))
		} else {
			parts = append(parts, l.String())
		}
	}
	s := strings.Join(parts, "; ")
	if len(parts) == 0 {
		s = "not run"
	}
	if o.err != nil {
		s += "; the check failed: " + o.err.Error()
	}
	if o.damaged() {
		s += "; DAMAGED: " + strings.Join(o.changed, "; ")
	} else if o.err == nil && !o.noRepository() {
		s += "; nothing changed"
	}
	return s
}

// switchedInPrivate reports whether a slot's repository in tree is a working copy the
// exchange has just switched in, still root-only and marked: apply gives it its mode and
// removes the marker right after the exchange (settleWorkingCopy), and a power cut between
// the two leaves a repository pkcsslotd 3.27 cannot enter. For a slot with a tokname it then
// refuses to start ("Could not stat directory .../TOK_OBJ"), writing nothing, until apply
// runs again and finishes the switch. The copy stays private up to the exchange so that no
// member of the token group can change it after its verification (SECURITY.md).
func switchedInPrivate(tree *crashsim.Tree, fx *fixture) bool {
	for _, s := range fx.slots() {
		if e := tree.Lookup(s.ds); e != nil && e.Mode&0o077 == 0 && tree.Lookup(s.ds+"/"+layout.WorkingCopyMarker) != nil {
			return true
		}
	}
	return false
}

// slotdRefused: pkcsslotd would not start with the state.
func (o *libOutcome) slotdRefused() bool {
	return len(o.logins) > 0 && o.logins[0].kind == libSlotdRefused
}

// noRepository: the state lacks a repository, and the library was not run.
func (o *libOutcome) noRepository() bool {
	return len(o.logins) > 0 && o.logins[0].kind == libNoRepository
}

// libEntry is the outcome for one input, shared by every state that has it.
type libEntry struct {
	key  [32]byte
	what string // the conf and the repository in words
	done chan struct{}
	out  libOutcome
}

type libChecker struct {
	version string
	mu      sync.Mutex
	cache   map[[32]byte]*libEntry
	runs    atomic.Int64 // library runs
	runNS   atomic.Int64 // their time in all
}

// newLibChecker is nil when PKCSTOK_CRASH_LIBRARY=0. A missing root skips the test, or fails
// it with CI=true (make test): the check is part of make crash.
func newLibChecker(t *testing.T) *libChecker {
	t.Helper()
	if os.Getenv(libraryEnv) == "0" {
		t.Logf("%s=0: the crash states are NOT opened by the real token library", libraryEnv)
		return nil
	}
	if m := ockroot.Missing(libSpec); m != "" {
		why := fmt.Sprintf("the library check needs openCryptoki of the %s root: %s (or %s=0 to sweep without it)", libSpec.Name(), m, libraryEnv)
		if os.Getenv("CI") == "true" {
			t.Fatalf("the crash test cannot run in CI: %s", why)
		}
		t.Skip(why)
	}
	cache, err := ockroot.CacheDir()
	if err != nil {
		t.Fatal(err)
	}
	st, err := ockroot.ReadStamp(filepath.Join(cache, libSpec.Name()))
	if err != nil {
		t.Fatal(err)
	}
	return &libChecker{version: st.Versions["opencryptoki"], cache: map[[32]byte]*libEntry{}}
}

// libRead are the entries of a repository the library can read: its key files and the
// object directory (a superset: of TOK_OBJ it opens OBJ.IDX and the objects listed there).
// Anything else in the repository directory (the in-place switch's working copy, backup
// and marks) it never opens.
var libRead = []string{"NVTOK.DAT", "MK_SO", "MK_USER", "TOK_OBJ"}

// libKey digests what the library can read of a state: the bytes of opencryptoki.conf, and of
// each slot its number, its user PIN and of its repository its own mode, owner and group and
// every entry of libRead with everything below it (names, kinds, modes, owners, groups,
// content). It reports whether the state has every slot's repository.
func libKey(fx *fixture, tree *crashsim.Tree) ([32]byte, bool) {
	h := sha256.New()
	if c := tree.Lookup(confPath); c != nil && c.Kind == crashsim.File {
		sum := sha256.Sum256(c.Data)
		h.Write([]byte{1})
		h.Write(sum[:])
	} else {
		h.Write([]byte{0})
	}
	all := true
	for _, s := range fx.slots() {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(s.slot))
		h.Write(n[:])
		h.Write([]byte(s.user))
		h.Write([]byte{0})
		if repo := subtree(tree, s.ds); repo != nil {
			rh := libReadOf(repo).Hash()
			h.Write([]byte{1})
			h.Write(rh[:])
		} else {
			h.Write([]byte{0})
			all = false
		}
	}
	var k [32]byte
	h.Sum(k[:0])
	return k, all
}

// libReadOf is the part of a repository the library can read: its root and libRead.
func libReadOf(repo *crashsim.Tree) *crashsim.Tree {
	read := &crashsim.Tree{Root: repo.Root}
	for _, e := range repo.Entries {
		top, _, _ := strings.Cut(e.Path, "/")
		for _, r := range libRead {
			if top == r {
				read.Entries = append(read.Entries, e)
			}
		}
	}
	return read
}

// describeLibInput names the conf and the repositories of a state in words, for the report
// ("the original's": what the library reads of it is the fixture's original).
func (fx *fixture) describeLibInput(tree *crashsim.Tree) string {
	conf := "no conf"
	if c := tree.Lookup(confPath); c != nil && c.Kind == crashsim.File {
		switch string(c.Data) {
		case string(fx.conf):
			conf = "original conf"
			if fx.target != nil {
				conf = fmt.Sprintf("conf without slot %d's tokversion", fx.target.slot)
			}
		case string(fx.newConf):
			conf = "migrated conf (tokversion = 3.12)"
		default:
			conf = fmt.Sprintf("another conf (%d bytes)", len(c.Data))
		}
	}
	parts := []string{conf}
	for _, s := range fx.slots() {
		parts = append(parts, fx.what(s)+s.describeRepo(subtree(tree, s.ds)))
	}
	return strings.Join(parts, ", ")
}

// describeRepo names a repository of slot s in words.
func (s *fixture) describeRepo(repo *crashsim.Tree) string {
	if repo == nil {
		return "no repository"
	}
	var parts []string
	for _, n := range []string{"NVTOK.DAT", "MK_SO", "MK_USER"} {
		if e := repo.Lookup(n); e != nil && e.Kind == crashsim.File {
			parts = append(parts, fmt.Sprintf("%s %d", n, len(e.Data)))
		} else {
			parts = append(parts, n+" missing")
		}
	}
	form := "other"
	if e := repo.Lookup("NVTOK.DAT"); e != nil {
		switch len(e.Data) {
		case 232:
			form = "old"
		case 592:
			form = "3.12"
		}
	}
	d := fmt.Sprintf("%s repository %04o (%s)", form, repo.Root.Mode, strings.Join(parts, ", "))
	if libReadOf(repo).Hash() == libReadOf(s.repo).Hash() {
		d += ", the original's"
	}
	return d
}

// check returns the library's outcome for tree, running it when no state with the same input
// has been opened before.
func (lc *libChecker) check(fx *fixture, tree *crashsim.Tree) *libEntry {
	key, hasRepo := libKey(fx, tree)
	lc.mu.Lock()
	e := lc.cache[key]
	if e == nil {
		e = &libEntry{key: key, what: fx.describeLibInput(tree), done: make(chan struct{})}
		lc.cache[key] = e
		lc.mu.Unlock()
		if hasRepo {
			e.out = lc.run(fx, tree)
		} else {
			// Not run: the boot check already fails a state whose repository path is
			// missing.
			for _, s := range fx.slots() {
				e.out.logins = append(e.out.logins, libLogin{slot: s.slot, kind: libNoRepository})
			}
		}
		close(e.done)
	} else {
		lc.mu.Unlock()
		<-e.done
	}
	return e
}

// ckrLine is pkcs11-tool's report of a failed call.
var ckrLine = regexp.MustCompile(`PKCS11 function (C_\w+) failed: rv = (CKR_\w+)`)

// objectLine is the first line of an object in pkcs11-tool --list-objects.
var objectLine = regexp.MustCompile(`^(Data object|Certificate Object|Public Key Object|Private Key Object|Secret Key Object|Profile object)`)

// run opens a fresh session on the root (a fresh /dev/shm, /run and lock directory, as after
// a reboot), puts the state's repository and siblings into /var/lib/opencryptoki and its conf
// directory's files into /etc/opencryptoki, starts pkcsslotd, logs in as the user and lists
// the objects, stops pkcsslotd and compares.
func (lc *libChecker) run(fx *fixture, tree *crashsim.Tree) (out libOutcome) {
	start := time.Now()
	defer func() {
		out.dur = time.Since(start)
		lc.runs.Add(1)
		lc.runNS.Add(int64(out.dur))
	}()
	r, err := ockroot.Open(libSpec)
	if err != nil {
		out.err = err
		return out
	}
	defer func() {
		if err := r.Close(); err != nil && out.err == nil {
			out.err = fmt.Errorf("close the %s session: %w", libSpec.Name(), err)
		}
	}()
	if err := placeState(r, tree); err != nil {
		out.err = err
		return out
	}
	before, err := libSnapshot(r)
	if err != nil {
		out.err = err
		return out
	}
	want := &crashsim.Tree{}
	for _, e := range tree.Entries {
		if e.Path != confDir {
			want.Entries = append(want.Entries, e)
		}
	}
	if d := want.Diff(before); len(d) > 0 {
		out.err = fmt.Errorf("the session does not hold the state:\n%s", strings.Join(d, "\n"))
		return out
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pid, err := r.StartSlotd(ctx)
	switch {
	case errors.Is(err, ockroot.ErrSlotdExited):
		// The daemon refused the state: no slot can be opened (what it wrote before it
		// exited is compared all the same).
		for _, s := range fx.slots() {
			out.logins = append(out.logins, libLogin{slot: s.slot, kind: libSlotdRefused, rv: slotdReason(err)})
		}
		err = nil
	case err != nil:
		out.err = err
		return out
	default:
		// Each slot in turn, with its own user PIN (in the environment, never in argv), as
		// one application after another would.
		for _, s := range fx.slots() {
			if err = lc.login(ctx, r, fx, s, &out); err != nil {
				break
			}
		}
		if serr := r.StopSlotd(pid); serr != nil && err == nil {
			err = fmt.Errorf("stop pkcsslotd: %w", serr)
		}
	}
	if err != nil {
		out.err = err
		return out
	}
	after, err := libSnapshot(r)
	if err != nil {
		out.err = err
		return out
	}
	out.changed = before.Diff(after)
	return out
}

// login logs in to slot s of the session's state as its user and lists the objects.
func (lc *libChecker) login(ctx context.Context, r *ockroot.Root, fx, s *fixture, out *libOutcome) error {
	res, err := r.ToolPINEnv(ctx, s.slot, s.user, "--list-objects")
	if err != nil {
		return fmt.Errorf("slot %d: %w", s.slot, err)
	}
	if fx.leaks(res.Stdout) || fx.leaks(res.Stderr) {
		return fmt.Errorf("slot %d: pkcs11-tool printed a PIN", s.slot)
	}
	l := libLogin{slot: s.slot}
	if l.kind, l.rv, l.objects = classify(res.Code, res.Stdout, res.Stderr); l.kind == "" {
		return fmt.Errorf("slot %d: pkcs11-tool: %s", s.slot, res)
	}
	out.logins = append(out.logins, l)
	return nil
}

// classify reads what pkcs11-tool --login --list-objects said: the outcome, the failing call
// and its return value, the objects listed. The last failing call counts (a failed
// C_GetAttributeValue of one attribute is a warning, exit 0). kind is "" when the output
// says neither.
func classify(code int, stdout, stderr []byte) (kind, rv string, objects int) {
	if code == 0 {
		for _, l := range strings.Split(string(stdout), "\n") {
			if objectLine.MatchString(l) {
				objects++
			}
		}
		return libLoginOK, "", objects
	}
	m := ckrLine.FindAllStringSubmatch(string(stdout)+string(stderr), -1)
	if len(m) == 0 {
		return "", "", 0
	}
	f, ckr := m[len(m)-1][1], m[len(m)-1][2]
	switch f {
	case "C_Login":
		kind = libLoginFailed
	case "C_FindObjectsInit", "C_FindObjects", "C_FindObjectsFinal", "C_GetAttributeValue":
		kind = libListFailed
	default:
		kind = libRefused
	}
	return kind, f + ": " + ckr, 0
}

// placeState writes the state into the session: every top-level entry but the conf directory
// into /var/lib/opencryptoki (the repository at swtok, the default data store of the Soft
// token, and its backups, working copy and journal beside it) and the conf directory's files
// into /etc/opencryptoki, each with its mode, owner and group.
func placeState(r *ockroot.Root, tree *crashsim.Tree) error {
	varTree := &crashsim.Tree{Root: crashsim.Attr{Mode: 0o755}}
	for _, e := range tree.Entries {
		if top, _, _ := strings.Cut(e.Path, "/"); top != confDir {
			varTree.Entries = append(varTree.Entries, e)
		}
	}
	confTree := subtree(tree, confDir)
	if confTree == nil {
		confTree = &crashsim.Tree{}
	}
	for _, p := range []struct {
		t      *crashsim.Tree
		dir    string
		prefix string // the image's own entries of that name are removed first
	}{
		{varTree, "/var/lib/opencryptoki", dsName},
		{confTree, "/etc/opencryptoki", layout.ConfName},
	} {
		dir := r.Path(p.dir)
		ents, err := os.ReadDir(dir)
		if err != nil {
			return err
		}
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), p.prefix) {
				if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
					return err
				}
			}
		}
		// Written beside the directory, then renamed into it: hard links between the
		// entries survive.
		stage := dir + ".pkcstok-crash-state"
		if err := p.t.Materialize(stage); err != nil {
			return err
		}
		for _, e := range p.t.Entries {
			if !strings.Contains(e.Path, "/") {
				if !strings.HasPrefix(e.Path, p.prefix) {
					return fmt.Errorf("state entry %s is not the repository's or the conf's", e.Path)
				}
				if err := os.Rename(filepath.Join(stage, e.Path), filepath.Join(dir, e.Path)); err != nil {
					return err
				}
			}
		}
		if err := os.Remove(stage); err != nil {
			return err
		}
	}
	return nil
}

// libSnapshot reads back what placeState wrote, in the state's own shape (conf/... for the
// conf directory), with whatever else of those names the library made.
func libSnapshot(r *ockroot.Root) (*crashsim.Tree, error) {
	out := &crashsim.Tree{}
	for _, p := range []struct{ dir, prefix, as string }{
		{"/var/lib/opencryptoki", dsName, ""},
		{"/etc/opencryptoki", layout.ConfName, confDir + "/"},
	} {
		ents, err := os.ReadDir(r.Path(p.dir))
		if err != nil {
			return nil, err
		}
		for _, de := range ents {
			if !strings.HasPrefix(de.Name(), p.prefix) {
				continue
			}
			// Snapshot of the parent would read the image's other tokens too: read each
			// entry of ours on its own.
			s, err := snapshotEntry(filepath.Join(r.Path(p.dir), de.Name()))
			if err != nil {
				return nil, err
			}
			for _, e := range s {
				if e.Path == "." {
					e.Path = p.as + de.Name()
				} else {
					e.Path = p.as + de.Name() + "/" + e.Path
				}
				out.Entries = append(out.Entries, e)
			}
		}
	}
	sortTree(out)
	return out, nil
}

// snapshotEntry reads one file or directory tree as entries: the top one as ".", the rest
// below it by their relative paths.
func snapshotEntry(p string) ([]crashsim.Entry, error) {
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		return nil, fmt.Errorf("snapshot %s: %w", p, err)
	}
	attr := crashsim.Attr{Mode: st.Mode & 0o7777, UID: int(st.Uid), GID: int(st.Gid)}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		return []crashsim.Entry{{Path: ".", Kind: crashsim.File, Attr: attr, Data: b}}, nil
	case unix.S_IFDIR:
		t, err := crashsim.Snapshot(p)
		if err != nil {
			return nil, err
		}
		return append([]crashsim.Entry{{Path: ".", Kind: crashsim.Dir, Attr: t.Root}}, t.Entries...), nil
	}
	return nil, fmt.Errorf("snapshot %s: neither a file nor a directory", p)
}

// listedAll: the library logged in to every slot of fx and listed all its token's objects.
func (o *libOutcome) listedAll(fx *fixture) bool {
	slots := fx.slots()
	if len(o.logins) != len(slots) {
		return false
	}
	for i, s := range slots {
		if l := o.logins[i]; l.kind != libLoginOK || l.objects != len(s.objects) {
			return false
		}
	}
	return true
}

// libState is one distinct crash state's library outcome, and every cut that built it.
type libState struct {
	s labeled
	e *libEntry
}

// libSweep opens every distinct state of a scenario (not only the sample rebooted into: with
// the outcome shared by every state of one input this costs a few library runs) and sets
// libErr on each state the library damaged or could not open. The scenario's first state (a
// healthy token before the operation) and its last (the operation done) must log in and list
// every object: the check must be able to pass. It returns the scenario's report.
func (lc *libChecker) libSweep(fx *fixture, sc scenario, states []labeled, lastCut int, st *sweepStats) string {
	start := time.Now()
	defer func() { st.libDur = time.Since(start) }()
	// The inputs on a few workers (each library run is a session of its own: its own
	// pkcsslotd, /run and /dev/shm), then the states in order.
	entries := make([]*libEntry, len(states))
	work := make(chan int)
	var wg sync.WaitGroup
	for w := 0; w < workers(); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				entries[i] = lc.check(fx, states[i].tree)
			}
		}()
	}
	for i := range states {
		work <- i
	}
	close(work)
	wg.Wait()
	var rows []libState
	for i := range states {
		s := &states[i]
		e := entries[i]
		rows = append(rows, libState{*s, e})
		o := &e.out
		for _, l := range o.logins {
			st.libOutcomes[l.kind]++
		}
		st.libOutcomes[""] += len(fx.slots()) - len(o.logins) // not opened: the check failed
		first := sc.from == nil && s.strict && s.cut == 0
		last := false
		for _, b := range s.builtAt {
			last = last || b.cut == lastCut && b.kind == "strict"
		}
		switch {
		case o.err != nil || o.damaged():
			s.libErr = fmt.Errorf("the real openCryptoki %s at boot: %s", lc.version, o)
		case o.slotdRefused() && !switchedInPrivate(s.tree, fx):
			s.libErr = fmt.Errorf("the real openCryptoki %s at boot: no slot of the machine can be opened until apply runs again: %s", lc.version, o)
		case (first || last) && !o.listedAll(fx):
			s.libErr = fmt.Errorf("the real openCryptoki %s must log in to every slot and list all the objects of its token before and after the operation: %s",
				lc.version, o)
		}
		if o.damaged() {
			st.libDamaged++
		}
	}
	report, cuts := lc.libReport(sc, rows, lastCut)
	st.libDamagedCuts = cuts
	return report
}

// libReport is the scenario's table (one row per library input, in cut order: the cut
// points that built a state of that input, the states, the outcome) and its DAMAGE list
// (every cut point where some state built there was damaged, with the kinds of cut).
func (lc *libChecker) libReport(sc scenario, rows []libState, lastCut int) (string, []int) {
	type agg struct {
		e                    *libEntry
		cuts                 map[int]bool
		strict, lenient, mix int
		states               int
	}
	var order []*agg
	byKey := map[[32]byte]*agg{}
	damage := map[int]map[string]bool{} // cut -> kinds
	refused := map[int]bool{}           // cuts where pkcsslotd refused a state
	where := map[int]string{}
	for _, r := range rows {
		a := byKey[r.e.key]
		if a == nil {
			a = &agg{e: r.e, cuts: map[int]bool{}}
			byKey[r.e.key] = a
			order = append(order, a)
		}
		a.states++
		switch {
		case r.s.strict:
			a.strict++
		case r.s.lenient:
			a.lenient++
		default:
			a.mix++
		}
		for _, b := range r.s.builtAt {
			a.cuts[b.cut] = true
			where[b.cut] = b.where
			if r.e.out.slotdRefused() {
				refused[b.cut] = true
			}
			if r.e.out.damaged() {
				if damage[b.cut] == nil {
					damage[b.cut] = map[string]bool{}
				}
				damage[b.cut][b.kind] = true
			}
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "LIBRARY %s (openCryptoki %s, %s): %d distinct states, %d library inputs\n", sc.name, lc.version, libSpec.Name(), len(rows), len(order))
	fmt.Fprintf(&b, "| cut points (of 0-%d) | states (strict/lenient/mix) | conf and repository | the library at boot |\n|---|---|---|---|\n", lastCut)
	for _, a := range order {
		fmt.Fprintf(&b, "| %s | %d (%d/%d/%d) | %s | %s |\n", ranges(a.cuts), a.states, a.strict, a.lenient, a.mix, a.e.what, &a.e.out)
	}
	if len(refused) > 0 {
		fmt.Fprintf(&b, "SLOTD %s: pkcsslotd refused to start with a state built at %d of %d cut points: %s\n", sc.name, len(refused), lastCut+1, ranges(refused))
	}
	var cuts []int
	for c := range damage {
		cuts = append(cuts, c)
	}
	sort.Ints(cuts)
	if len(cuts) == 0 {
		fmt.Fprintf(&b, "DAMAGE %s: none: at no cut point did the library change the repository, its backups or the conf\n", sc.name)
		return b.String(), nil
	}
	fmt.Fprintf(&b, "DAMAGE %s: the library changed the state at %d of %d cut points:\n", sc.name, len(cuts), lastCut+1)
	for _, c := range cuts {
		var kinds []string
		for k := range damage[c] {
			kinds = append(kinds, k)
		}
		sort.Strings(kinds)
		fmt.Fprintf(&b, "  cut %d of %d (%s): %s\n", c, lastCut, where[c], strings.Join(kinds, ", "))
	}
	return b.String(), cuts
}

// ranges prints a set of cut points as "0-17, 19, 23-30".
func ranges(set map[int]bool) string {
	var c []int
	for k := range set {
		c = append(c, k)
	}
	sort.Ints(c)
	var out []string
	for i := 0; i < len(c); {
		j := i
		for j+1 < len(c) && c[j+1] == c[j]+1 {
			j++
		}
		if j == i {
			out = append(out, strconv.Itoa(c[i]))
		} else {
			out = append(out, fmt.Sprintf("%d-%d", c[i], c[j]))
		}
		i = j + 1
	}
	return strings.Join(out, ", ")
}

// summary is the LIBRARY line of the figures and the DAMAGE SUMMARY: the cut points where
// the library damaged a state, by scenario.
func (lc *libChecker) summary(all []*sweepStats) string {
	var b strings.Builder
	states := map[string]int{}
	var distinct, damaged int
	for _, st := range all {
		for k, n := range st.libOutcomes {
			states[k] += n
		}
		if st.libReport != "" {
			distinct += st.distinct
		}
		damaged += st.libDamaged
	}
	runs := lc.runs.Load()
	per := time.Duration(0)
	if runs > 0 {
		per = time.Duration(lc.runNS.Load() / runs)
	}
	var kinds []string
	for _, k := range []string{libLoginOK, libRefused, libLoginFailed, libListFailed, libSlotdRefused, libNoRepository, ""} {
		if states[k] > 0 {
			name := k
			if k == "" {
				name = "not opened (the check failed)"
			}
			kinds = append(kinds, fmt.Sprintf("%s %d", name, states[k]))
		}
	}
	fmt.Fprintf(&b, "LIBRARY: openCryptoki %s (%s) opened %d distinct crash states (slots opened: %s) through %d inputs, %d library runs (pkcsslotd, a user login to each slot, C_FindObjects) in %.1fs, %.2fs each; states damaged %d\n",
		lc.version, libSpec.Name(), distinct, strings.Join(kinds, ", "), len(lc.cache), runs, time.Duration(lc.runNS.Load()).Seconds(), per.Seconds(), damaged)
	b.WriteString("DAMAGE SUMMARY (cut points where the library changed the repository, its backups or the conf):\n")
	for _, st := range all {
		if st.libReport == "" {
			continue
		}
		set := map[int]bool{}
		for _, c := range st.libDamagedCuts {
			set[c] = true
		}
		if len(set) == 0 {
			fmt.Fprintf(&b, "  %s: none\n", st.name)
		} else {
			fmt.Fprintf(&b, "  %s: %d of %d cut points: %s\n", st.name, len(set), st.cuts, ranges(set))
		}
	}
	return b.String()
}
