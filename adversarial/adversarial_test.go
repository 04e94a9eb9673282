// Package adversarial races the real pkcstok-migrate binary, run as root, against an
// unprivileged member of the token group. See README.md.
package adversarial

import (
	"bytes"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

type opKind int

const (
	opApply         opKind = iota // apply / the legacy interface: the repository may be migrated
	opRollback                    // rollback after a clean apply
	opReadOnly                    // plan, info, a refused request: nothing may change
	opRemoveBackups               // remove-backups after a clean apply: only the backup may go
)

// attack is one row of the table: adding an attack is adding an entry to attacks.
type attack struct {
	name    string
	group   int // the attack group (1–8, adversarial/README.md); 0: a regression guard, safe when written
	promise string
	runs    int // iterations of the victim operation (each on a fresh layout)
	layout  layoutOpts
	setup   func(e *env) // root, after the layout
	pre     func(e *env) // the member's one-shot steps before the operation
	race    func(e *env) []string
	kind    opKind
	legacy  bool // op is the -s -d -c interface
	op      func(e *env) *runRes
	check   func(e *env, r *runRes) []string
}

// racing loops are bounded by a count and a time, and stopped (SIGTERM) when root's run ends.
var raceBounds = []string{"-n", "2000000", "-t", "40s"}

func racing(action string, undo string, args ...string) func(e *env) []string {
	return func(e *env) []string {
		a := append([]string{}, raceBounds...)
		if undo != "" {
			a = append(a, "-undo", e.p(undo))
		}
		a = append(a, action)
		for _, x := range args {
			a = append(a, e.p(x))
		}
		return a
	}
}

func member(args ...string) func(e *env) {
	return func(e *env) {
		a := make([]string, len(args))
		for i, x := range args {
			a[i] = e.p(x)
		}
		e.oneShot(nil, a...)
	}
}

var (
	apply    = func(e *env) *runRes { return e.apply() }
	plan     = func(e *env) *runRes { return e.plan() }
	rollback = func(e *env) *runRes { return e.rollback() }
	legacyY  = func(e *env) *runRes { return e.legacy("y\n" + soPIN + "\n" + userPIN + "\n") }
)

func planOut(e *env, out string) {
	e.t.Helper()
	if r := e.run(opTimeout, e.request(nil), nil, "plan", "--request", "-", "--out", out); r.code != 2 {
		e.t.Fatalf("setup plan --out: %s", r)
	}
}

func applyPlan(e *env, p string) *runRes {
	return e.run(opTimeout, e.request(map[string]any{"slot": nil, "datastore": nil, "confdir": nil}), nil, "apply", "--plan", p, "--request", "-")
}

// refused: the run must fail (exit 1) promptly.
func refused(what string) func(e *env, r *runRes) []string {
	return func(e *env, r *runRes) []string {
		if r.code != 1 || r.timedOut {
			return []string{fmt.Sprintf("%s was not refused: %s", what, r)}
		}
		return nil
	}
}

func pinFileReq(e *env, userPINFile string) *runRes {
	return e.run(fifoTimeout, e.request(map[string]any{"user_pin": nil, "user_pin_file": userPINFile}), nil, "plan", "--request", "-")
}

func noControl(e *env, r *runRes) []string {
	if bytes.ContainsAny(r.stdout, "\x1b\x07") || bytes.ContainsAny(r.stderr, "\x1b\x07") {
		return []string{fmt.Sprintf("the label's escape sequence reached the output raw: %s", r)}
	}
	return nil
}

const sparseFiles, sparseSize = 16, 63 << 20

var (
	sparseBoundBytes int64 = 256 << 20 // what a repository of this token may cost on disk
	sparseBoundRSSKB int64 = 512 << 10
	clearLimitError        = regexp.MustCompile(`(?i)too large|too big|limit|exceed|bound|at most`)
)

var attacks = []attack{
	{
		name: "1-tmp-preexisting-victim", group: 1, runs: 1, kind: opApply,
		promise: "root deletes/renames/chmods/chowns only entries this run created (dev/ino): a victim renamed to <ds>_PKCSTOK_MIGRATE_TMP survives",
		pre:     member("rename", "{state}/vault", "{ds}_PKCSTOK_MIGRATE_TMP"),
		op:      apply,
	},
	{
		name: "2-tmp-swap-race", group: 2, runs: 5, kind: opApply, layout: layoutOpts{objects: 40},
		promise: "after success the live datastore is root's verified copy (root-owned, 3.12, not her inode); else a clean failure, nothing lost",
		race:    racing("swapin", "", "{state}", "swtok_PKCSTOK_MIGRATE_TMP", "{state}/mine"),
		op:      apply,
	},
	{
		name: "2-tmp-swap-race-victim-dir", group: 2, runs: 3, kind: opApply, layout: layoutOpts{objects: 40},
		promise: "root's working copy swapped for the root-only vault: root never writes into, chmods, chowns, removes or switches in the vault",
		race:    racing("swapin1", "", "{state}", "swtok_PKCSTOK_MIGRATE_TMP", "{state}/vault"),
		op:      apply,
	},
	{
		name: "3-stale-plan-empty-journal", group: 3, runs: 1, kind: opApply,
		promise: "a saved plan is refused (stale_plan) once the repository changed, an empty journal of hers or not",
		setup:   func(e *env) { planOut(e, e.p("{root}/p.json")) },
		pre:     member("stale", "{ds}"),
		op:      func(e *env) *runRes { return applyPlan(e, e.p("{root}/p.json")) },
		check: func(e *env, r *runRes) []string {
			if r.errCode != "stale_plan" {
				return []string{fmt.Sprintf("want stale_plan: %s", r)}
			}
			return nil
		},
	},
	{
		name: "4-plan-out-tmp-symlink", group: 4, runs: 1, kind: opReadOnly,
		promise: "plan --out never writes through a symlink the member placed at <out>.tmp",
		pre:     member("symlink", "{dir}/victims/secret", "{shared}/p.json.tmp"),
		op: func(e *env) *runRes {
			return e.run(opTimeout, e.request(nil), nil, "plan", "--request", "-", "--out", e.p("{shared}/p.json"))
		},
		check: planFileSane("{shared}/p.json"),
	},
	{
		name: "4-plan-all-slots-out-symlink", group: 4, runs: 1, kind: opReadOnly,
		promise: "plan --all-slots --out never writes through a symlink at <out>",
		pre:     member("symlink", "{dir}/victims/secret", "{shared}/all.json"),
		op: func(e *env) *runRes {
			return e.run(opTimeout, []byte(fmt.Sprintf(`{"all_slots":true,"confdir":%q}`, e.confdir)), nil,
				"plan", "--request", "-", "--state-dir", e.state, "--out", e.p("{shared}/all.json"))
		},
		check: planFileSane("{shared}/all.json"),
	},
	{
		name: "4-plan-forged-by-member", group: 4, runs: 1, kind: opApply,
		promise: "apply --plan refuses a plan file owned by the member (same bytes as root's)",
		setup: func(e *env) {
			// Plans are written 0600 now, so she cannot read root's; a plan is meant to be
			// shareable (a CI artifact: it holds no PIN), so she has its bytes from a copy.
			planOut(e, e.p("{shared}/p.json"))
			b, err := os.ReadFile(e.p("{shared}/p.json"))
			must(e.t, err)
			must(e.t, os.WriteFile(e.p("{shared}/artifact.json"), b, 0o644))
		},
		pre:   member("forge", "{shared}/artifact.json", "{shared}/p.json"),
		op:    func(e *env) *runRes { return applyPlan(e, e.p("{shared}/p.json")) },
		check: refused("a plan file owned by the member"),
	},
	{
		name: "4-plan-mode-0666", group: 4, runs: 1, kind: opApply,
		promise: "apply --plan refuses a plan file others may write (0666)",
		setup: func(e *env) {
			planOut(e, e.p("{shared}/p.json"))
			must(e.t, os.Chmod(e.p("{shared}/p.json"), 0o666))
		},
		op:    func(e *env) *runRes { return applyPlan(e, e.p("{shared}/p.json")) },
		check: refused("a plan file of mode 0666"),
	},
	{
		name: "5-hardlink-to-root-file", group: 5, runs: 1, kind: opApply,
		promise: "no copy of a root 0600 file hard-linked into the repository becomes readable by the group; modes never widen",
		setup: func(e *env) {
			if !e.s.setHardlinks(e.t, "0") {
				// Root places the link itself: the same file in the repository.
				must(e.t, os.Link(e.p("{dir}/victims/secret"), e.p("{ds}/TOK_OBJ/LINKED00")))
			}
		},
		pre: func(e *env) {
			if _, err := os.Lstat(e.p("{ds}/TOK_OBJ/LINKED00")); err != nil {
				member("link", "{dir}/victims/secret", "{ds}/TOK_OBJ/LINKED00")(e)
				e.s.setHardlinks(e.t, e.s.hardlinkSysctl)
			}
		},
		op: apply,
	},
	{
		name: "5-stray-0600-file", group: 5, runs: 1, kind: opApply,
		promise: "a root 0600 file in the repository keeps its readers in the new repository and _BAK",
		setup: func(e *env) {
			must(e.t, os.WriteFile(e.p("{ds}/notes"), []byte("root's own notes\n"), 0o600))
			must(e.t, os.Chmod(e.p("{ds}/notes"), 0o600))
		},
		op: apply,
	},
	{
		name: "6-sparse-amplification", group: 6, runs: 1, kind: opApply,
		promise: fmt.Sprintf("%d sparse %d MiB files: a clear error, at most %d MiB written, peak RSS at most %d MiB", sparseFiles, sparseSize>>20, sparseBoundBytes>>20, sparseBoundRSSKB>>10),
		pre:     member("sparse", "{ds}/TOK_OBJ", fmt.Sprint(sparseFiles), fmt.Sprint(sparseSize)),
		op: func(e *env) *runRes {
			tmp := e.ds + "_PKCSTOK_MIGRATE_TMP"
			return e.run(2*opTimeout, e.request(nil), func(r *runRes) {
				if n := diskUsage(tmp); n > r.peakTmp {
					r.peakTmp = n
				}
			}, "apply", "--request", "-")
		},
		check: func(e *env, r *runRes) []string {
			var v []string
			if r.code == 0 {
				r.peakTmp = max(r.peakTmp, diskUsage(e.ds))
				v = append(v, fmt.Sprintf("accepted: %d MiB of sparse files migrated", sparseFiles*sparseSize>>20))
			} else if !clearLimitError.MatchString(r.errMsg) {
				v = append(v, fmt.Sprintf("no clear error about a bound: %s", r))
			}
			if r.peakTmp > sparseBoundBytes {
				v = append(v, fmt.Sprintf("wrote %d MiB (bound %d MiB)", r.peakTmp>>20, sparseBoundBytes>>20))
			}
			if r.maxRSSKB > sparseBoundRSSKB {
				v = append(v, fmt.Sprintf("peak RSS %d MiB (bound %d MiB)", r.maxRSSKB>>10, sparseBoundRSSKB>>10))
			}
			e.t.Logf("sparse: exit %d, working copy peak %d MiB, peak RSS %d MiB, %v", r.code, r.peakTmp>>20, r.maxRSSKB>>10, r.dur.Round(time.Millisecond))
			return v
		},
	},
	{
		name: "7-fifo-pin-file", group: 7, runs: 1, kind: opReadOnly,
		promise: "a FIFO as --user-pin-file is refused at once (no hang)",
		pre:     member("mkfifo", "{shared}/user.pin"),
		op:      func(e *env) *runRes { return pinFileReq(e, e.p("{shared}/user.pin")) },
		check:   refused("a FIFO as PIN file"),
	},
	{
		name: "7-fifo-pid-file", group: 7, runs: 1, kind: opApply,
		promise: "a FIFO as a pkcsslotd PID file does not hang the run",
		setup: func(e *env) {
			e.extraEnv = append(e.extraEnv, "PKCSTOK_MIGRATE_PIDFILES="+e.p("{shared}/pkcsslotd.pid"))
		},
		pre: member("mkfifo", "{shared}/pkcsslotd.pid"),
		op:  func(e *env) *runRes { return e.run(fifoTimeout, e.request(nil), nil, "apply", "--request", "-") },
	},
	{
		name: "7-member-owned-pin-file", group: 7, runs: 1, kind: opReadOnly,
		promise: "a PIN file owned by the member (0600) is refused",
		pre: func(e *env) {
			e.oneShot([]byte(userPIN+"\n"), "writestdin", e.p("{shared}/user.pin"), "600")
		},
		op:    func(e *env) *runRes { return pinFileReq(e, e.p("{shared}/user.pin")) },
		check: refused("a PIN file owned by the member"),
	},
	{
		name: "7-symlinked-pin-file", group: 7, runs: 1, kind: opReadOnly,
		promise: "a symlinked PIN file is refused",
		pre:     member("symlink", "{root}/user.pin", "{shared}/user.pin"),
		op:      func(e *env) *runRes { return pinFileReq(e, e.p("{shared}/user.pin")) },
		check:   refused("a symlink as PIN file"),
	},
	{
		name: "7-request-file-0644", group: 7, runs: 1, kind: opReadOnly,
		promise: "a --request file holding PINs at mode 0644 is refused",
		setup: func(e *env) {
			must(e.t, os.WriteFile(e.p("{shared}/req.json"), e.request(nil), 0o644))
			must(e.t, os.Chmod(e.p("{shared}/req.json"), 0o644))
		},
		op:    func(e *env) *runRes { return e.run(opTimeout, nil, nil, "plan", "--request", e.p("{shared}/req.json")) },
		check: refused("a world-readable request file with PINs"),
	},
	{
		name: "7-label-escape-legacy", group: 7, runs: 1, kind: opReadOnly, legacy: true,
		layout:  layoutOpts{label: "\x1b]0;pwned\x07"},
		promise: "a token label with escape sequences never reaches the terminal raw (-s -d -c)",
		op:      func(e *env) *runRes { return e.legacy("n\n") },
		check:   noControl,
	},
	{
		name: "label-escape-info", group: 0, runs: 1, kind: opReadOnly,
		layout:  layoutOpts{label: "\x1b]0;pwned\x07"},
		promise: "a token label with escape sequences never reaches the terminal raw (info --json=false)",
		op:      func(e *env) *runRes { return e.info(false) },
		check:   noControl,
	},
	{
		name: "7-rollback-member-conf-bak", group: 7, runs: 1, kind: opRollback,
		layout:  layoutOpts{confGroupW: true},
		promise: "rollback never installs an opencryptoki.conf_BAK the member wrote (conf dir group-writable)",
		setup:   func(e *env) { e.cleanApply() },
		pre: func(e *env) {
			e.oneShot([]byte("# the member's conf\nversion opencryptoki-3.11\n"), "writestdin", e.p("{conf}/evil"), "644")
			member("rename", "{conf}/evil", "{conf}/opencryptoki.conf_BAK")(e)
		},
		op: rollback,
		check: func(e *env, r *runRes) []string {
			var st unix.Stat_t
			b, _ := os.ReadFile(e.conf)
			if unix.Lstat(e.conf, &st) == nil && int(st.Uid) == e.s.uid || bytes.Contains(b, []byte("the member's conf")) {
				return []string{"the member's file became opencryptoki.conf"}
			}
			return nil
		},
	},

	// Controls: no attacker. They show the judge itself passes a plain run.
	{
		name: "control/apply", runs: 1, kind: opApply,
		promise: "without an attacker apply succeeds and every check of a success holds",
		op:      apply,
		check:   wantSuccess,
	},
	{
		name: "control/legacy", runs: 1, kind: opApply, legacy: true,
		promise: "without an attacker -s -d -c (PINs on stdin) succeeds and every check of a success holds",
		op:      legacyY,
		check:   wantSuccess,
	},

	// Regression guards: safe when written, racing.
	{
		name: "datastore-symlink-swap/apply", runs: 5, kind: opApply,
		promise: "a symlink swapped in for the datastore is never followed; success means root's copy",
		pre:     member("symlink", "{state}/vault", "{state}/advlink"),
		race:    racing("xchg", "", "{state}/advlink", "{ds}"),
		op:      apply,
	},
	{
		name: "TOK_OBJ-symlink-swap/apply", runs: 5, kind: opApply,
		promise: "a symlink swapped in for TOK_OBJ is never followed",
		pre:     member("symlink", "{state}/vault", "{state}/advlink"),
		race:    racing("xchg", "", "{state}/advlink", "{ds}/TOK_OBJ"),
		op:      apply,
	},
	{
		name: "NVTOK.DAT-symlink-swap/apply", runs: 5, kind: opApply,
		promise: "a symlink swapped in for NVTOK.DAT is never followed",
		pre:     member("symlink", "{dir}/victims/secret", "{state}/advlink"),
		race:    racing("xchg", "", "{state}/advlink", "{ds}/NVTOK.DAT"),
		op:      apply,
	},
	{
		name: "_BAK-symlink/apply", runs: 5, kind: opApply,
		promise: "a symlink appearing at <ds>_BAK is never followed or replaced",
		race:    racing("symflap", "{state}", "{state}", "swtok_BAK", "{state}/vault"),
		op:      apply,
	},
	{
		name: "journal-symlink/apply", runs: 5, kind: opApply,
		promise: "a symlink appearing at the journal is never written through",
		race:    racing("symflap", "{state}", "{state}", "swtok_PKCSTOK_MIGRATE_JOURNAL", "{dir}/victims/secret"),
		op:      apply,
	},
	{
		name: "conf_new-symlink/apply", runs: 5, kind: opApply, layout: layoutOpts{confGroupW: true},
		promise: "a symlink at opencryptoki.conf_new (conf dir group-writable) is never written through",
		race:    racing("symflap", "{conf}", "{conf}", "opencryptoki.conf_new", "{dir}/victims/secret"),
		op:      apply,
	},
	{
		name: "fifo-object-exchange/apply", runs: 5, kind: opApply,
		promise: "a FIFO exchanged with an object file never hangs the run",
		pre:     member("mkfifo", "{state}/advfifo"),
		race:    racing("xchg", "", "{state}/advfifo", "{ds}/TOK_OBJ/{obj0}"),
		op:      apply,
	},
	{
		name: "device-object-exchange/apply", runs: 5, kind: opApply,
		promise: "a device node (root's /dev/zero twin) exchanged with an object file is never read",
		setup:   func(e *env) { mknodZero(e, "{state}/zero") },
		race:    racing("xchg", "", "{state}/zero", "{ds}/TOK_OBJ/{obj0}"),
		op:      apply,
	},
	{
		name: "device-in-repository/apply", runs: 1, kind: opApply,
		promise: "a device node moved into TOK_OBJ is refused, not read",
		setup:   func(e *env) { mknodZero(e, "{state}/zero") },
		pre:     member("rename", "{state}/zero", "{ds}/TOK_OBJ/ZERO0000"),
		op:      apply,
	},
	{
		name: "_ROLLED_BACK-symlink/rollback", runs: 5, kind: opRollback,
		promise: "a symlink appearing at <ds>_ROLLED_BACK is never followed or replaced",
		setup:   func(e *env) { e.cleanApply() },
		race:    racing("symflap", "{state}", "{state}", "swtok_ROLLED_BACK", "{state}/vault"),
		op:      rollback,
	},
	{
		name: "_BAK-symlink-swap/rollback", runs: 5, kind: opRollback,
		promise: "a symlink swapped in for <ds>_BAK is never switched in or followed",
		setup:   func(e *env) { e.cleanApply() },
		pre:     member("symlink", "{state}/vault", "{state}/advlink"),
		race:    racing("xchg", "", "{state}/advlink", "{ds}_BAK"),
		op:      rollback,
	},
	{
		name: "datastore-symlink-swap/plan", runs: 5, kind: opReadOnly,
		promise: "plan never follows a symlink swapped in for the datastore and changes nothing",
		pre:     member("symlink", "{state}/vault", "{state}/advlink"),
		race:    racing("xchg", "", "{state}/advlink", "{ds}"),
		op:      plan,
	},
	{
		name: "datastore-symlink-swap/info", runs: 5, kind: opReadOnly,
		promise: "info never follows a symlink swapped in for the datastore and changes nothing",
		pre:     member("symlink", "{state}/vault", "{state}/advlink"),
		race:    racing("xchg", "", "{state}/advlink", "{ds}"),
		op:      func(e *env) *runRes { return e.info(true) },
	},
	{
		name: "datastore-symlink-swap/legacy", runs: 5, kind: opApply, legacy: true,
		promise: "-s -d -c (PINs on stdin) never follows a symlink swapped in for the datastore",
		pre:     member("symlink", "{state}/vault", "{state}/advlink"),
		race:    racing("xchg", "", "{state}/advlink", "{ds}"),
		op:      legacyY,
	},
}

func wantSuccess(e *env, r *runRes) []string {
	if r.code != 0 {
		return []string{fmt.Sprintf("the control run failed: %s", r)}
	}
	return nil
}

func planFileSane(rel string) func(e *env, r *runRes) []string {
	return func(e *env, r *runRes) []string {
		var st unix.Stat_t
		if err := unix.Lstat(e.p(rel), &st); err == nil && (st.Mode&unix.S_IFMT != unix.S_IFREG || st.Uid != 0) {
			return []string{fmt.Sprintf("%s is not root's regular file after plan --out (mode %o uid %d)", rel, st.Mode, st.Uid)}
		}
		return nil
	}
}

func mknodZero(e *env, rel string) {
	must(e.t, unix.Mknod(e.p(rel), unix.S_IFCHR|0o600, int(unix.Mkdev(1, 5))))
}

// diskUsage is the bytes allocated below root (0 when it does not exist).
func diskUsage(root string) int64 {
	var n int64
	for _, f := range walkAll(root) {
		n += int64(f.st.Blocks) * 512
	}
	return n
}

type row struct {
	name        string
	group       int
	runs, iters int
	wins        int
	promise     string
}

func TestAdversarial(t *testing.T) {
	if os.Getenv("PKCSTOK_ADVERSARIAL") != "1" {
		t.Skip("set PKCSTOK_ADVERSARIAL=1 (make adversarial) to race the binary as root against an unprivileged user")
	}
	start := time.Now()
	s := newSuite(t)
	var rows []row
	for _, a := range attacks {
		rw := row{name: a.name, group: a.group, promise: a.promise}
		t.Run(a.name, func(t *testing.T) {
			defer func() { rows = append(rows, rw) }()
			for i := 0; i < a.runs; i++ {
				v, iters := s.runOnce(t, a, i)
				rw.runs++
				rw.iters += iters
				if len(v) > 0 {
					rw.wins++
					t.Errorf("run %d: the attacker won:\n  %s", i, strings.Join(v, "\n  "))
				}
			}
		})
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\n%-36s %-7s %5s %9s %5s  %s\n", "attack", "group", "runs", "att.iter", "wins", "promise")
	total := 0
	for _, r := range rows {
		f := "guard"
		if r.group > 0 {
			f = fmt.Sprint(r.group)
		}
		fmt.Fprintf(&b, "%-36s %-7s %5d %9d %5d  %s\n", r.name, f, r.runs, r.iters, r.wins, r.promise)
		total += r.wins
	}
	fmt.Fprintf(&b, "attacker wins: %d in %d attacks, %v\n", total, len(rows), time.Since(start).Round(time.Second))
	fmt.Print(b.String())
	if total > 0 {
		t.Errorf("the attacker won %d times", total)
	}
}

// runOnce builds a fresh layout, runs the attack once and returns what it broke.
func (s *suite) runOnce(t *testing.T, a attack, i int) (violations []string, iters int) {
	e := s.newEnv(t, strings.ReplaceAll(a.name, "/", "_"), i, a.layout)
	defer func() {
		for _, c := range e.cleanups {
			c()
		}
	}()
	if a.setup != nil {
		a.setup(e)
	}
	if a.pre != nil {
		a.pre(e)
	}
	e.origIno = inode(t, e.ds)
	e.origSnap = snapshot(t, e.ds)
	var err error
	e.origConf, err = os.ReadFile(e.conf)
	must(t, err)
	var st unix.Stat_t
	must(t, unix.Lstat(e.conf, &st))
	e.confMode = st.Mode

	var rc *racer
	if a.race != nil {
		rc = e.startRacer(a.race(e)...)
	}
	r := a.op(e)
	if rc != nil {
		iters = rc.stop(t)
	}
	t.Logf("run %d: %s", i, r)
	violations = e.generic(a, r)
	if a.check != nil {
		violations = append(violations, a.check(e, r)...)
	}
	return violations, iters
}

func (e *env) succeeded(a attack, r *runRes) bool {
	if a.legacy {
		return r.code == 0 && bytes.Contains(r.stdout, []byte("finished successfully")) && bytes.Contains(r.stdout, []byte("Migrated "))
	}
	if a.kind == opRollback || a.kind == opRemoveBackups {
		return r.code == 0 && r.doc["changed"] == true
	}
	return r.success()
}

// generic is what every run is judged by, whatever the attack.
func (e *env) generic(a attack, r *runRes) []string {
	var v []string
	if r.timedOut {
		v = append(v, fmt.Sprintf("hang: killed after %v", r.dur.Round(time.Millisecond)))
	}
	for _, pin := range []string{soPIN, userPIN} {
		if bytes.Contains(r.stdout, []byte(pin)) || bytes.Contains(r.stderr, []byte(pin)) {
			v = append(v, "a PIN is in the output")
		}
	}
	all := walkAll(e.dir)
	victimIno := map[uint64]bool{}
	for _, vi := range e.victims {
		victimIno[vi.ino] = true
		p := ""
		for _, f := range all {
			if uint64(f.st.Ino) == vi.ino && uint64(f.st.Dev) == vi.dev {
				p = f.path
			}
		}
		if p == "" {
			v = append(v, fmt.Sprintf("victim %s was deleted (inode %d found nowhere)", vi.name, vi.ino))
			continue
		}
		if d := snapDiff(vi.snap, snapshot(e.t, p)); d != "" {
			v = append(v, fmt.Sprintf("victim %s (now at %s) changed: %s", vi.name, p, d))
		}
	}
	for _, f := range all {
		if f.st.Mode&unix.S_IFMT != unix.S_IFREG || f.st.Size != 64 || victimIno[uint64(f.st.Ino)] {
			continue
		}
		b, err := readNoFollow(f.path)
		if err != nil {
			continue
		}
		for _, vi := range e.victims {
			if bytes.Equal(b, vi.secret) && (f.st.Mode&0o066 != 0 || f.st.Uid != 0) {
				v = append(v, fmt.Sprintf("a copy of victim %s at %s is readable by more than root (mode %o, %d:%d)", vi.name, f.path, f.st.Mode&0o7777, f.st.Uid, f.st.Gid))
			}
		}
	}
	ok := e.succeeded(a, r)
	switch a.kind {
	case opApply:
		if ok {
			v = append(v, e.checkMigrated()...)
		}
		v = append(v, e.preserved(all, e.origIno, e.origSnap, "the original repository")...)
	case opRollback:
		v = append(v, e.preserved(all, e.firstIno, e.firstSnap, "the original repository")...)
		v = append(v, e.preserved(all, e.origIno, e.origSnap, "the migrated repository")...)
		if ok {
			var st unix.Stat_t
			if err := unix.Lstat(e.ds, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR || st.Uid != 0 ||
				uint64(st.Ino) != e.firstIno && uint64(st.Ino) != e.origIno {
				v = append(v, fmt.Sprintf("after rollback %s is neither root's original nor root's migrated repository", e.ds))
			}
		}
		v = append(v, e.confRootOwned()...)
	case opRemoveBackups:
		// The migrated repository stays; the original (the backup) only unless it was removed.
		v = append(v, e.preserved(all, e.origIno, e.origSnap, "the migrated repository")...)
		if !ok {
			v = append(v, e.preserved(all, e.firstIno, e.firstSnap, "the original repository")...)
		} else if findIno(all, e.firstIno) != "" {
			v = append(v, "remove-backups reported success but the backup is still there")
		}
		v = append(v, e.confRootOwned()...)
	case opReadOnly:
		v = append(v, e.preserved(all, e.origIno, e.origSnap, "the repository")...)
		if b, err := os.ReadFile(e.conf); err != nil || !bytes.Equal(b, e.origConf) {
			v = append(v, "opencryptoki.conf changed")
		}
	}
	return v
}

// preserved: the tree root had (found by inode wherever it is now) is what it was.
func (e *env) preserved(all []found, ino uint64, snap map[string]string, what string) []string {
	p := findIno(all, ino)
	if p == "" {
		return []string{fmt.Sprintf("%s (inode %d) is gone", what, ino)}
	}
	var st unix.Stat_t
	if unix.Lstat(p, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return []string{fmt.Sprintf("%s: inode %d at %s is no longer a directory", what, ino, p)}
	}
	if d := snapDiff(snap, snapshot(e.t, p)); d != "" {
		return []string{fmt.Sprintf("%s (now at %s) changed: %s", what, p, d)}
	}
	return nil
}

func (e *env) confRootOwned() []string {
	var st unix.Stat_t
	if err := unix.Lstat(e.conf, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG || st.Uid != 0 || st.Mode&0o7777 != e.confMode&0o7777 {
		return []string{fmt.Sprintf("opencryptoki.conf is not root's regular file of mode %o any more", e.confMode&0o7777)}
	}
	return nil
}

// checkMigrated: after a reported success the live datastore is the copy root built.
func (e *env) checkMigrated() []string {
	var v []string
	var st unix.Stat_t
	if err := unix.Lstat(e.ds, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return []string{fmt.Sprintf("after success %s is not a directory", e.ds)}
	}
	if st.Uid != 0 {
		v = append(v, fmt.Sprintf("after success the live datastore is owned by uid %d (the member's directory)", st.Uid))
	}
	if uint64(st.Ino) == e.origIno {
		v = append(v, "after success the live datastore is still the original inode")
	}
	snap := snapshot(e.t, e.ds)
	if l, ok := snap["NVTOK.DAT"]; !ok || !strings.Contains(l, fmt.Sprintf("size=%d ", nvNewSize)) {
		v = append(v, fmt.Sprintf("after success NVTOK.DAT is not the 3.12 one: %q", l))
	}
	var keys []string
	for k := range snap {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, rel := range keys {
		_, uid, _ := parseLine(snap[rel])
		if uid != 0 {
			v = append(v, fmt.Sprintf("after success %s in the live datastore is owned by uid %d", rel, uid))
		}
		if o, ok := e.origSnap[rel]; ok {
			if w := widens(o, snap[rel]); w != "" {
				v = append(v, fmt.Sprintf("%s: %s (%s => %s)", rel, w, o, snap[rel]))
			}
		}
	}
	if r := e.plan(); r.code != 0 || r.doc["changed"] != false {
		v = append(v, fmt.Sprintf("a follow-up plan does not say changed:false: %s", r))
	}
	return append(v, e.confRootOwned()...)
}
