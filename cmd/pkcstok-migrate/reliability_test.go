package main

// The reliability suite: it tries to break the safety promises of apply.
//
//   - faults: apply is stopped before every step it takes (every file written, every sync, every
//     rename, every step of the conf write), once by an injected error and once by SIGKILL of the
//     child process; the repository must then be the untouched original or the complete
//     migrated one, and a second apply must converge with every object's clear bytes intact.
//   - never_missing: the repository path is stat'ed in a tight loop during an apply.
//   - disk_full, hostile, concurrency, secrets: see reliability_hostile_test.go.
//
// Every child runs a binary built with -tags faultinject; every stream of every child is
// searched for the PINs. The figures are logged at the end of TestReliability (go test -v).

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	json "github.com/goccy/go-json"
	"golang.org/x/sys/unix"

	"github.com/ocktools/pkcstok-migrate/contract"
	"github.com/ocktools/pkcstok-migrate/internal/conf"
	"github.com/ocktools/pkcstok-migrate/internal/layout"
	"github.com/ocktools/pkcstok-migrate/internal/repofs"
	"github.com/ocktools/pkcstok-migrate/tokens"
	"github.com/ocktools/pkcstok-migrate/tokens/tokentest"
)

// figures are the counts the suite reports.
type figures struct {
	stepsInterrupted atomic.Int64 // fault runs that stopped at their step (both modes)
	errorsInjected   atomic.Int64 // ... of which by an injected error
	killsSurvived    atomic.Int64 // SIGKILLed runs after which every check passed
	badInputs        atomic.Int64 // hostile inputs tried
	diskFull         atomic.Int64 // applies on a nearly full tmpfs
	objectsChecked   atomic.Int64 // object decryptions compared with the original clear bytes
	objectsLost      atomic.Int64 // objects missing or differing after a run (must stay 0)
	childRuns        atomic.Int64 // child processes started
	procReads        atomic.Int64 // /proc/<pid>/{cmdline,environ} reads of running children
	stats            atomic.Int64 // stats of the repository path during applies
}

type harness struct {
	bin      string // pkcstok-migrate built with -tags faultinject
	proc     string // empty fake /proc: no pkcsslotd, no openers
	pidfiles string // does not exist
	tmpl     string // directory of generated template repositories
	scratch  string // a private tmpfs when root may mount one, else ""
	fig      figures

	mu    sync.Mutex
	gens  map[string]*token // generated templates by key
	keys  map[string]*tokens.Keys
	genMu map[string]*sync.Mutex
}

func TestReliability(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the reliability suite runs apply, which needs root (it sets the token group)")
	}
	if _, err := repofs.LookupGroup("pkcs11"); err != nil {
		t.Skipf("group pkcs11: %v (create it with groupadd -r pkcs11)", err)
	}
	start := time.Now()
	h := newHarness(t)
	t.Run("faults", h.testFaults)
	t.Run("rollback_faults", h.testRollbackFaults)
	t.Run("never_missing", h.testNeverMissing)
	t.Run("disk_full", h.testDiskFull)
	t.Run("hostile", h.testHostile)
	t.Run("concurrency", h.testConcurrency)
	t.Run("secrets", h.testSecrets)
	f := &h.fig
	t.Logf("FIGURES: steps interrupted %d (%d by error, %d by SIGKILL), kills survived %d, bad inputs tried %d, disk-full runs %d, "+
		"objects checked %d, objects lost %d, child runs %d, /proc reads %d, path stats %d, %.0fs",
		f.stepsInterrupted.Load(), f.errorsInjected.Load(), f.stepsInterrupted.Load()-f.errorsInjected.Load(),
		f.killsSurvived.Load(), f.badInputs.Load(), f.diskFull.Load(), f.objectsChecked.Load(), f.objectsLost.Load(),
		f.childRuns.Load(), f.procReads.Load(), f.stats.Load(), time.Since(start).Seconds())
	if n := f.objectsLost.Load(); n != 0 {
		t.Errorf("%d objects lost", n)
	}
}

func newHarness(t *testing.T) *harness {
	dir := t.TempDir()
	h := &harness{
		bin:      filepath.Join(dir, "pkcstok-migrate"),
		proc:     filepath.Join(dir, "proc"),
		pidfiles: filepath.Join(dir, "none.pid"),
		tmpl:     filepath.Join(dir, "templates"),
		gens:     map[string]*token{},
		keys:     map[string]*tokens.Keys{},
		genMu:    map[string]*sync.Mutex{},
	}
	for _, d := range []string{h.proc, h.tmpl} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// The fault matrix runs on a private tmpfs when it can: its children syncfs after every
	// copy, and on a shared disk that waits for everything other processes wrote meanwhile.
	// Kill semantics (SIGKILL, not power loss) do not depend on the file system; the other
	// tests and the testscripts run on the ordinary disk.
	scratch := filepath.Join(dir, "scratch")
	if err := os.Mkdir(scratch, 0o755); err == nil {
		if err := unix.Mount("tmpfs", scratch, "tmpfs", 0, "size=512m,mode=0755"); err == nil {
			h.scratch = scratch
			t.Cleanup(func() { unix.Unmount(scratch, unix.MNT_DETACH) })
		} else {
			t.Logf("no private tmpfs (%v): the fault matrix runs on the ordinary disk", err)
		}
	}
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(out)))
	cmd := exec.Command("go", "build", "-tags", "faultinject", "-o", h.bin, "./cmd/pkcstok-migrate")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build -tags faultinject: %v\n%s", err, out)
	}
	return h
}

// token is one repository with its conf, in a directory of its own.
type token struct {
	root    string // holds swtok/ and conf/
	ds      string // root/swtok
	confdir string // root/conf
	slot    int
	so      string
	user    string
	objects map[string]string // object file -> hex SHA-256 of its clear (flattened) bytes
}

// root returns an empty directory for one token, on the private tmpfs when there is one.
func (h *harness) root(t testing.TB) string {
	t.Helper()
	if h.scratch == "" {
		return t.TempDir()
	}
	d, err := os.MkdirTemp(h.scratch, "case")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

func (tk *token) request(extra map[string]any) []byte {
	m := map[string]any{"slot": tk.slot, "datastore": tk.ds, "confdir": tk.confdir, "so_pin": tk.so, "user_pin": tk.user}
	for k, v := range extra {
		if v == nil {
			delete(m, k)
		} else {
			m[k] = v
		}
	}
	b, _ := json.Marshal(m)
	return b
}

// secrets are the byte strings that must never show: the PINs, raw and in hex.
func (tk *token) secrets() []string {
	var s []string
	for _, p := range []string{tk.so, tk.user} {
		s = append(s, p, hex.EncodeToString([]byte(p)), strings.ToUpper(hex.EncodeToString([]byte(p))))
	}
	return s
}

type fixtureJSON struct {
	SlotID  int    `json:"slot_id"`
	SOPIN   string `json:"so_pin"`
	UserPIN string `json:"user_pin"`
	Objects []struct {
		File        string `json:"file"`
		ClearSHA256 string `json:"clear_sha256"`
	} `json:"objects"`
}

// fixtureToken copies fixture name's before/ into a new temp dir (modes 0660/0770, group pkcs11).
func fixtureToken(t testing.TB, name string) *token {
	t.Helper()
	return fixtureTokenIn(t, name, t.TempDir())
}

func fixtureTokenIn(t testing.TB, name, root string) *token {
	t.Helper()
	src := filepath.Join(fixtures, name)
	b, err := os.ReadFile(filepath.Join(src, "fixture.json"))
	if err != nil {
		t.Fatal(err)
	}
	var fx fixtureJSON
	if err := json.Unmarshal(b, &fx); err != nil {
		t.Fatal(err)
	}
	if err := copyFixture(filepath.Join(src, "before"), root); err != nil {
		t.Fatal(err)
	}
	tk := &token{root: root, ds: filepath.Join(root, "swtok"), confdir: filepath.Join(root, "conf"), slot: fx.SlotID,
		so: fx.SOPIN, user: fx.UserPIN, objects: map[string]string{}}
	for _, o := range fx.Objects {
		tk.objects[o.File] = o.ClearSHA256
	}
	return tk
}

// genSpec describes a generated old-format token.
type genSpec struct {
	typ  tokens.Type
	mk88 bool
	n    int
}

func (g genSpec) key() string { return fmt.Sprintf("%s-mk88=%v-%d", g.typ, g.mk88, g.n) }

// generated returns a fresh copy of a generated token; the template is written once per run.
func (h *harness) generated(t testing.TB, g genSpec) *token {
	t.Helper()
	return h.generatedIn(t, g, t.TempDir())
}

func (h *harness) generatedIn(t testing.TB, g genSpec, root string) *token {
	t.Helper()
	h.mu.Lock()
	m := h.genMu[g.key()]
	if m == nil {
		m = &sync.Mutex{}
		h.genMu[g.key()] = m
	}
	h.mu.Unlock()
	m.Lock()
	h.mu.Lock()
	tmpl := h.gens[g.key()]
	h.mu.Unlock()
	if tmpl == nil {
		root := filepath.Join(h.tmpl, g.key())
		tmpl = &token{root: root, ds: filepath.Join(root, "swtok"), confdir: filepath.Join(root, "conf"), slot: 3,
			so: "S0-rel#PIN-7781", user: "Us-rel#PIN-4410", objects: map[string]string{}}
		gen, err := tokentest.WriteOld(tmpl.ds, tokentest.Options{Type: g.typ, MK88: g.mk88, SOPIN: tmpl.so, UserPIN: tmpl.user,
			N: g.n, Seed: int64(g.n), Label: "reliability " + g.typ.String()})
		if err != nil {
			m.Unlock()
			t.Fatalf("generate %s: %v", g.key(), err)
		}
		for _, o := range gen.Objects {
			tmpl.objects[o.Name] = hex.EncodeToString(o.ClearSHA256[:])
		}
		c, err := tokentest.OldConf(3, g.typ)
		if err == nil {
			err = os.MkdirAll(tmpl.confdir, 0o755)
		}
		if err == nil {
			err = os.WriteFile(filepath.Join(tmpl.confdir, layout.ConfName), c, 0o644)
		}
		if err != nil {
			m.Unlock()
			t.Fatal(err)
		}
		h.mu.Lock()
		h.gens[g.key()] = tmpl
		h.mu.Unlock()
	}
	m.Unlock()
	if out, err := exec.Command("cp", "-a", tmpl.root+"/.", root).CombinedOutput(); err != nil {
		t.Fatalf("cp -a: %v\n%s", err, out)
	}
	tk := *tmpl
	tk.root, tk.ds, tk.confdir = root, filepath.Join(root, "swtok"), filepath.Join(root, "conf")
	return &tk
}

// childResult is what one run of the binary did.
type childResult struct {
	code     int // exit status; -1 when killed by a signal
	signal   syscall.Signal
	timedOut bool
	stdout   []byte
	stderr   []byte
	errCode  string // error.code of the JSON error document, if any
	errMsg   string
	dur      time.Duration
}

func (r *childResult) String() string {
	return fmt.Sprintf("exit %d signal %v timeout %v after %v\nstdout: %s\nstderr: %s", r.code, r.signal, r.timedOut, r.dur.Round(time.Millisecond), r.stdout, r.stderr)
}

// childEnv is a minimal environment with the pkcsslotd check pointed at an empty /proc.
func (h *harness) childEnv(extra ...string) []string {
	return append([]string{"PATH=" + os.Getenv("PATH"), "PKCSTOK_MIGRATE_PROC=" + h.proc, "PKCSTOK_MIGRATE_PIDFILES=" + h.pidfiles}, extra...)
}

// command prepares a child; start it with h.start or run it with h.run.
func (h *harness) command(ctx context.Context, stdin []byte, env []string, args ...string) (*exec.Cmd, *bytes.Buffer, *bytes.Buffer) {
	cmd := exec.CommandContext(ctx, h.bin, args...)
	cmd.Env = h.childEnv(env...)
	cmd.Stdin = bytes.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 5 * time.Second
	return cmd, &stdout, &stderr
}

// finish waits for cmd and checks its output for tk's secrets.
func (h *harness) finish(t testing.TB, tk *token, ctx context.Context, cmd *exec.Cmd, stdout, stderr *bytes.Buffer, started time.Time) *childResult {
	t.Helper()
	err := cmd.Wait()
	r := &childResult{stdout: stdout.Bytes(), stderr: stderr.Bytes(), dur: time.Since(started), timedOut: ctx.Err() != nil}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			r.signal = ws.Signal()
		}
	default:
		t.Fatalf("%s: %v", cmd.Args, err)
	}
	var doc struct {
		Error struct{ Code, Message string } `json:"error"`
	}
	if json.Unmarshal(r.stdout, &doc) == nil {
		r.errCode, r.errMsg = doc.Error.Code, doc.Error.Message
	}
	if tk != nil {
		noSecrets(t, tk, fmt.Sprintf("stdout of %v", cmd.Args[1:]), r.stdout)
		noSecrets(t, tk, fmt.Sprintf("stderr of %v", cmd.Args[1:]), r.stderr)
	}
	return r
}

// run runs the binary with stdin and extra environment, killing it after timeout.
func (h *harness) run(t testing.TB, tk *token, timeout time.Duration, stdin []byte, env []string, args ...string) *childResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd, stdout, stderr := h.command(ctx, stdin, env, args...)
	started := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	h.fig.childRuns.Add(1)
	return h.finish(t, tk, ctx, cmd, stdout, stderr, started)
}

func (h *harness) apply(t testing.TB, tk *token, env ...string) *childResult {
	t.Helper()
	return h.run(t, tk, 2*time.Minute, tk.request(nil), env, "apply", "--request", "-")
}

func noSecrets(t testing.TB, tk *token, what string, b []byte) {
	t.Helper()
	for _, s := range tk.secrets() {
		if bytes.Contains(b, []byte(s)) {
			t.Errorf("%s contains a PIN (%d bytes of it)", what, len(s))
		}
	}
}

// noSecretsInTree searches every regular file below root for the PINs.
func noSecretsInTree(t testing.TB, tk *token, root string) {
	t.Helper()
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return nil
		}
		if info, err := d.Info(); err != nil || info.Size() > 4<<20 {
			return nil
		}
		b, err := os.ReadFile(p)
		if err == nil {
			noSecrets(t, tk, p, b)
		}
		return nil
	})
}

// snapshot describes every entry below root without following symlinks or opening special
// files: type and permissions, owner, and for regular files size, mtime and SHA-256, for
// symlinks the target, for devices the device number. Directory mtimes are left out (a run
// that creates and removes its working copy beside the repository changes its parent's).
func snapshot(t testing.TB, root string) map[string]string {
	t.Helper()
	m := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		line := fmt.Sprintf("%o %d:%d", st.Mode, st.Uid, st.Gid)
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			hs := sha256.New()
			_, err = f.WriteTo(hs)
			f.Close()
			if err != nil {
				return err
			}
			line += fmt.Sprintf(" %d %d.%09d %x", st.Size, st.Mtim.Sec, st.Mtim.Nsec, hs.Sum(nil))
		case unix.S_IFLNK:
			target, _ := os.Readlink(p)
			line += " -> " + target
		case unix.S_IFCHR, unix.S_IFBLK:
			line += fmt.Sprintf(" dev %d", st.Rdev)
		}
		m[rel] = line
		return nil
	})
	if err != nil {
		t.Fatalf("snapshot %s: %v", root, err)
	}
	return m
}

// snapDiff lists the differences of two snapshots ("" when equal).
func snapDiff(a, b map[string]string) string {
	var d []string
	for k, v := range a {
		if w, ok := b[k]; !ok {
			d = append(d, "- "+k+" "+v)
		} else if w != v {
			d = append(d, "~ "+k+" "+v+" => "+w)
		}
	}
	for k, v := range b {
		if _, ok := a[k]; !ok {
			d = append(d, "+ "+k+" "+v)
		}
	}
	sort.Strings(d)
	return strings.Join(d, "\n")
}

// withoutRoot drops the entry of the snapshot's root itself (its name differs once moved).
func withoutRoot(m map[string]string) map[string]string {
	c := make(map[string]string, len(m))
	for k, v := range m {
		if k != "." {
			c[k] = v
		}
	}
	return c
}

// checkMigrated opens dir as a 3.12 repository with tk's PINs and compares every object's
// clear bytes with the original's. It counts objects checked and lost.
func (h *harness) checkMigrated(tk *token, dir string) error {
	d, err := repofs.OpenDir(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	repo, err := tokens.Load(d)
	if err != nil {
		return fmt.Errorf("load: %w", err)
	}
	if repo.NV.Format != tokens.Format312 {
		return fmt.Errorf("NVTOK.DAT is %s, want 3.12", repo.NV.Format)
	}
	// Unlocking a 3.12 repository costs several PBKDF2 derivations: the keys of the same key
	// files (a repository checked twice) are derived once.
	kh := sha256.New()
	for _, b := range [][]byte{repo.MKSO, repo.MKUser, []byte(tk.so), []byte{0}, []byte(tk.user)} {
		kh.Write(b)
	}
	nv, _ := d.ReadFile("NVTOK.DAT")
	kh.Write(nv)
	kkey := string(kh.Sum(nil))
	h.mu.Lock()
	keys := h.keys[kkey]
	h.mu.Unlock()
	if keys == nil {
		keys, err = repo.Unlock([]byte(tk.so), []byte(tk.user))
		if err != nil {
			return fmt.Errorf("unlock: %w", err)
		}
		h.mu.Lock()
		h.keys[kkey] = keys
		h.mu.Unlock()
	}
	if len(repo.Index) != len(tk.objects) {
		return fmt.Errorf("OBJ.IDX lists %d objects, the original %d", len(repo.Index), len(tk.objects))
	}
	var lost []string
	for name, want := range tk.objects {
		h.fig.objectsChecked.Add(1)
		b, err := d.ReadFile("TOK_OBJ/" + name)
		if err != nil {
			lost = append(lost, fmt.Sprintf("%s: %v", name, err))
			continue
		}
		obj, err := tokens.DecodeObject(name, b, keys)
		if err != nil {
			lost = append(lost, fmt.Sprintf("%s: %v", name, err))
			continue
		}
		s := sha256.Sum256(obj.Clear)
		if obj.Format != tokens.Format312 || hex.EncodeToString(s[:]) != want {
			lost = append(lost, fmt.Sprintf("%s: format %s, clear bytes equal: %v", name, obj.Format, hex.EncodeToString(s[:]) == want))
		}
	}
	if len(lost) > 0 {
		h.fig.objectsLost.Add(int64(len(lost)))
		return fmt.Errorf("%d objects lost or damaged: %s", len(lost), strings.Join(lost, "; "))
	}
	return nil
}

var tokversion312 = regexp.MustCompile(`(?m)^[ \t]*tokversion[ \t]*=[ \t]*3\.12[ \t]*$`)

// checkConfMigrated: the conf parses, slot tk.slot has tokversion 3.12, written exactly once.
func checkConfMigrated(tk *token) error {
	b, err := os.ReadFile(filepath.Join(tk.confdir, layout.ConfName))
	if err != nil {
		return err
	}
	f, err := conf.Parse(layout.ConfName, b)
	if err != nil {
		return err
	}
	s, err := f.Slot(uint64(tk.slot))
	if err != nil {
		return err
	}
	if !s.TokVersionIs312() {
		return fmt.Errorf("slot %d: tokversion %q", tk.slot, s.TokVersion)
	}
	if n := len(tokversion312.FindAll(b, -1)); n != 1 {
		return fmt.Errorf("tokversion = 3.12 appears %d times:\n%s", n, b)
	}
	if n := strings.Count(string(b), "tokversion"); n != 1 {
		return fmt.Errorf("tokversion appears %d times:\n%s", n, b)
	}
	return nil
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

type faultToken struct {
	name string
	make func(t testing.TB) *token
}

func (h *harness) testFaults(t *testing.T) {
	toks := []faultToken{
		{"soft-mixed20", func(t testing.TB) *token { return fixtureTokenIn(t, "soft-mixed20", h.root(t)) }},
		{"cca-mk88-gen", func(t testing.TB) *token {
			return h.generatedIn(t, genSpec{typ: tokens.TypeCCA, mk88: true, n: 3}, h.root(t))
		}},
	}
	type fcase struct {
		tok        faultToken
		step, mode string
	}
	if testing.Short() {
		toks = toks[:1]
	}
	var cases []fcase
	for _, ft := range toks {
		tk := ft.make(t)
		steps := recordSteps(t, tk, h.proc, h.pidfiles)
		if err := h.checkMigrated(tk, tk.ds); err != nil {
			t.Fatalf("%s: in-process apply: %v", ft.name, err)
		}
		want := []string{"locked", "copy", "write NVTOK.DAT", "write MK_SO", "write MK_USER", "sync", "verify", "journal", "exchange",
			"backup", "journal_remove", "conf_edit", conf.StepTmpWritten, conf.StepTmpSynced, conf.StepBackupLinked, conf.StepRenamed, conf.StepDirSynced}
		for _, w := range want {
			if !contains(steps, w) {
				t.Errorf("%s: step %q never reached (steps %q)", ft.name, w, steps)
			}
		}
		nobj := 0
		for _, s := range steps {
			if strings.HasPrefix(s, "object ") {
				nobj++
			}
		}
		if nobj != len(tk.objects) {
			t.Errorf("%s: %d object steps for %d objects", ft.name, nobj, len(tk.objects))
		}
		t.Logf("%s: %d steps: %q", ft.name, len(steps), steps)
		objSeen := 0
		for _, s := range steps {
			if strings.HasPrefix(s, "object ") {
				objSeen++
				// -short: the first object only (the others are the same step on another file).
				if testing.Short() && objSeen > 1 {
					continue
				}
			}
			for _, mode := range []string{"error", "kill"} {
				cases = append(cases, fcase{ft, s, mode})
			}
		}
	}
	// Children wait on fsync most of the time: run a few at once.
	work := make(chan fcase)
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c := range work {
				t.Run(fmt.Sprintf("%s/%s/%s", c.tok.name, strings.ReplaceAll(c.step, " ", "_"), c.mode), func(t *testing.T) {
					h.faultCase(t, c.tok.make(t), c.step, c.mode)
				})
			}
		}()
	}
	for _, c := range cases {
		work <- c
	}
	close(work)
	wg.Wait()
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

// faultCase stops apply at step (mode "error" or "kill") and checks the state left behind,
// then converges with a second apply.
func (h *harness) faultCase(t *testing.T, tk *token, step, mode string) {
	origRepo := withoutRoot(snapshot(t, tk.ds))
	origConf, err := os.ReadFile(filepath.Join(tk.confdir, layout.ConfName))
	if err != nil {
		t.Fatal(err)
	}

	r := h.apply(t, tk, "PKCSTOK_MIGRATE_FAULT="+step+":"+mode)
	switch mode {
	case "kill":
		if r.signal != syscall.SIGKILL {
			t.Fatalf("fault %s:kill did not kill the run: %s", step, r)
		}
	case "error":
		if r.code != 1 || r.errCode != string(contract.CodeIO) || !strings.Contains(r.errMsg, "injected fault") {
			t.Fatalf("fault %s:error: want exit 1 with io_error \"injected fault\": %s", step, r)
		}
	}
	h.fig.stepsInterrupted.Add(1)
	if mode == "error" {
		h.fig.errorsInjected.Add(1)
	}

	// The repository path exists and is the original or the complete migrated repository.
	if fi, err := os.Lstat(tk.ds); err != nil || !fi.IsDir() {
		t.Fatalf("after %s:%s the repository path is not a directory: %v", step, mode, err)
	}
	state := "original"
	if d := snapDiff(origRepo, withoutRoot(snapshot(t, tk.ds))); d != "" {
		state = "migrated"
		if err := h.checkMigrated(tk, tk.ds); err != nil {
			t.Fatalf("after %s:%s the repository is neither the original nor migrated: %v\nchanges:\n%s", step, mode, err, d)
		}
		// The original must still be somewhere, byte for byte.
		found := false
		for _, where := range []string{tk.ds + layout.SuffixBak, tk.ds + layout.SuffixTmp} {
			if exists(where) && snapDiff(origRepo, withoutRoot(snapshot(t, where))) == "" {
				found = true
			}
		}
		if !found {
			t.Fatalf("after %s:%s the repository is migrated but the original is neither at _BAK nor at the working copy", step, mode)
		}
	}
	curConf, _ := os.ReadFile(filepath.Join(tk.confdir, layout.ConfName))
	if !bytes.Equal(curConf, origConf) {
		if err := checkConfMigrated(tk); err != nil {
			t.Fatalf("after %s:%s the conf is neither the original nor migrated: %v", step, mode, err)
		}
	} else if state == "migrated" {
		// The conf says 3.12 before the repository is switched: the token library refuses an
		// old repository under 3.12 without writing, but damages a 3.12 one under an old conf.
		t.Fatalf("after %s:%s the repository is migrated but the conf does not say 3.12", step, mode)
	}
	if mode == "error" && state != "migrated" && !bytes.Equal(curConf, origConf) {
		// A run that failed before its switch puts the conf back.
		t.Fatalf("after %s:%s the run failed before the switch but left the conf migrated", step, mode)
	}
	noSecretsInTree(t, tk, tk.root)

	// A second apply converges.
	r2 := h.apply(t, tk)
	if r2.code != 0 {
		t.Fatalf("after %s:%s (state %s) the second apply failed: %s", step, mode, state, r2)
	}
	h.checkFinal(t, tk, origRepo, origConf)
	if !t.Failed() && mode == "kill" {
		h.fig.killsSurvived.Add(1)
	}
}

// checkFinal: migrated repository and conf, the original kept byte for byte as _BAK and the
// original conf as opencryptoki.conf_BAK, no working copy, journal or temp conf left.
func (h *harness) checkFinal(t testing.TB, tk *token, origRepo map[string]string, origConf []byte) {
	t.Helper()
	if err := h.checkMigrated(tk, tk.ds); err != nil {
		t.Errorf("final repository: %v", err)
	}
	if err := checkConfMigrated(tk); err != nil {
		t.Errorf("final conf: %v", err)
	}
	if d := snapDiff(origRepo, withoutRoot(snapshot(t, tk.ds+layout.SuffixBak))); d != "" {
		t.Errorf("_BAK is not the original repository:\n%s", d)
	}
	if b, err := os.ReadFile(filepath.Join(tk.confdir, layout.ConfBakName)); err != nil || !bytes.Equal(b, origConf) {
		t.Errorf("opencryptoki.conf_BAK is not the original conf (%v)", err)
	}
	for _, p := range []string{tk.ds + layout.SuffixTmp, tk.ds + layout.SuffixJournal, filepath.Join(tk.confdir, conf.TempName)} {
		if exists(p) {
			t.Errorf("%s left behind", p)
		}
	}
	noSecretsInTree(t, tk, tk.root)
}

// testNeverMissing stats the repository path (and a file inside it, and the conf) in a tight
// loop while apply switches a large repository in.
func (h *harness) testNeverMissing(t *testing.T) {
	n := 2000
	if testing.Short() {
		n = 300
	}
	tk := h.generated(t, genSpec{typ: tokens.TypeSoft, n: n})
	origRepo := withoutRoot(snapshot(t, tk.ds))
	origConf, _ := os.ReadFile(filepath.Join(tk.confdir, layout.ConfName))
	var stop atomic.Bool
	var missing atomic.Int64
	var firstMissing atomic.Value
	var loops sync.WaitGroup
	paths := []string{tk.ds, filepath.Join(tk.ds, "NVTOK.DAT"), filepath.Join(tk.ds, "TOK_OBJ", "OBJ.IDX"), filepath.Join(tk.confdir, layout.ConfName)}
	loops.Add(1)
	go func() {
		defer loops.Done()
		var st unix.Stat_t
		for !stop.Load() {
			for _, p := range paths {
				h.fig.stats.Add(1)
				if err := unix.Stat(p, &st); err != nil {
					missing.Add(1)
					firstMissing.CompareAndSwap(nil, fmt.Sprintf("%s: %v", p, err))
				}
			}
		}
	}()
	before := h.fig.stats.Load()
	r := h.apply(t, tk)
	stop.Store(true)
	loops.Wait()
	if r.code != 0 {
		t.Fatalf("apply: %s", r)
	}
	t.Logf("%d stats during a %v apply of %d objects", h.fig.stats.Load()-before, r.dur.Round(time.Millisecond), n)
	if m := missing.Load(); m > 0 {
		t.Errorf("a path was missing %d times during apply; first: %v", m, firstMissing.Load())
	}
	h.checkFinal(t, tk, origRepo, origConf)
}

// testRollbackFaults stops rollback before each of its steps (error and SIGKILL): the
// repository path must hold the migrated or the original repository, neither may be lost, and
// a second rollback must bring back the original byte for byte.
func (h *harness) testRollbackFaults(t *testing.T) {
	for _, step := range []string{"rollback_exchange", "rollback_rename", "rollback_conf"} {
		for _, mode := range []string{"error", "kill"} {
			t.Run(step+"/"+mode, func(t *testing.T) {
				tk := fixtureTokenIn(t, "soft-small", h.root(t))
				origRepo := withoutRoot(snapshot(t, tk.ds))
				origConf, _ := os.ReadFile(filepath.Join(tk.confdir, layout.ConfName))
				if r := h.apply(t, tk); r.code != 0 {
					t.Fatalf("apply: %s", r)
				}
				migConf, _ := os.ReadFile(filepath.Join(tk.confdir, layout.ConfName))
				req := tk.request(map[string]any{"so_pin": nil, "user_pin": nil})
				r := h.run(t, tk, time.Minute, req, []string{"PKCSTOK_MIGRATE_FAULT=" + step + ":" + mode}, "rollback", "--request", "-")
				if mode == "kill" && r.signal != syscall.SIGKILL || mode == "error" && (r.code != 1 || !strings.Contains(r.errMsg, "injected fault")) {
					t.Fatalf("fault %s:%s did not stop rollback: %s", step, mode, r)
				}
				h.fig.stepsInterrupted.Add(1)
				if mode == "error" {
					h.fig.errorsInjected.Add(1)
				}
				if fi, err := os.Lstat(tk.ds); err != nil || !fi.IsDir() {
					t.Fatalf("the repository path is not a directory: %v", err)
				}
				if snapDiff(origRepo, withoutRoot(snapshot(t, tk.ds))) == "" {
					// Rolled back: the migrated repository is kept at _BAK or _ROLLED_BACK.
					if h.checkMigrated(tk, tk.ds+layout.SuffixBak) != nil && h.checkMigrated(tk, tk.ds+layout.SuffixRolledBack) != nil {
						t.Fatalf("the migrated repository is lost")
					}
				} else {
					if err := h.checkMigrated(tk, tk.ds); err != nil {
						t.Fatalf("the repository is neither original nor migrated: %v", err)
					}
					if d := snapDiff(origRepo, withoutRoot(snapshot(t, tk.ds+layout.SuffixBak))); d != "" {
						t.Fatalf("_BAK is not the original:\n%s", d)
					}
				}
				if b, _ := os.ReadFile(filepath.Join(tk.confdir, layout.ConfName)); !bytes.Equal(b, origConf) && !bytes.Equal(b, migConf) {
					t.Fatalf("the conf is neither the original nor the migrated one:\n%s", b)
				}
				if r := h.run(t, tk, time.Minute, req, nil, "rollback", "--request", "-"); r.code != 0 {
					t.Fatalf("second rollback: %s", r)
				}
				if d := snapDiff(origRepo, withoutRoot(snapshot(t, tk.ds))); d != "" {
					t.Errorf("after rollback the repository is not the original:\n%s", d)
				}
				if b, _ := os.ReadFile(filepath.Join(tk.confdir, layout.ConfName)); !bytes.Equal(b, origConf) {
					t.Errorf("after rollback the conf is not the original")
				}
				if err := h.checkMigrated(tk, tk.ds+layout.SuffixRolledBack); err != nil {
					t.Errorf("_ROLLED_BACK: %v", err)
				}
				if !t.Failed() && mode == "kill" {
					h.fig.killsSurvived.Add(1)
				}
			})
		}
	}
}
