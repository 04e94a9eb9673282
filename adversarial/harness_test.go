package adversarial

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ocktools/pkcstok-migrate/tokens"
	"github.com/ocktools/pkcstok-migrate/tokens/tokentest"
)

const (
	advUser   = "pkcstok-adv"
	tokGroup  = "pkcs11"
	slot      = 3
	soPIN     = "Adv#SO-pin-4471"
	userPIN   = "Adv#US-pin-9902"
	nvNewSize = 592

	opTimeout   = 45 * time.Second
	fifoTimeout = 10 * time.Second
)

// suite is what every attack shares: the two binaries, the attacker's credentials, the
// empty /proc the pkcsslotd check is pointed at.
type suite struct {
	bin, attacker  string
	base           string
	uid, gid       int
	proc, pidfile  string
	hardlinkSysctl string // the original fs.protected_hardlinks, restored at the end
}

// env is one run's host layout (see README.md, "The layout").
type env struct {
	s       *suite
	t       *testing.T
	dir     string // per-run root, 0755
	state   string // root:pkcs11 0770, like /var/lib/opencryptoki
	ds      string // state/swtok
	confdir string
	conf    string
	shared  string // root:pkcs11 2770: a directory the member may write
	rootdir string // root 0700: root's own PIN files and plans
	objects []string

	victims []*victim
	strays  map[string]bool // rel paths below ds root placed itself (mode rule only)

	// first: the repository and conf right after the layout was built; orig: when the victim
	// operation starts (after the attack's setup and the attacker's one-shot steps).
	firstIno  uint64
	firstSnap map[string]string
	origIno   uint64
	origSnap  map[string]string
	origConf  []byte
	confMode  uint32

	extraEnv []string
	cleanups []func()

	applied map[string]any // the result of an apply an attack's setup ran
}

type victim struct {
	name     string
	dev, ino uint64
	snap     map[string]string // relative to the victim (a file: one entry ".")
	secret   []byte
}

// runRes is one run of the binary as root.
type runRes struct {
	args     []string
	code     int
	timedOut bool
	stdout   []byte
	stderr   []byte
	doc      map[string]any
	errCode  string
	errMsg   string
	maxRSSKB int64
	peakTmp  int64 // largest size in bytes the working copy reached (attack 6)
	dur      time.Duration
}

func (r *runRes) String() string {
	out := string(r.stdout)
	if len(out) > 600 {
		out = out[:600] + "…"
	}
	errs := string(r.stderr)
	if len(errs) > 300 {
		errs = errs[:300] + "…"
	}
	return fmt.Sprintf("%v: exit %d timeout=%v (%v) stdout=%q stderr=%q", r.args, r.code, r.timedOut, r.dur.Round(time.Millisecond), out, errs)
}

func (r *runRes) success() bool {
	return r.code == 0 && !r.timedOut && r.doc["changed"] == true && r.doc["verified"] == true
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func mustRun(t testing.TB, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
}

// prerequisite fails under CI=true and skips otherwise.
func prerequisite(t *testing.T, format string, a ...any) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("adversarial: "+format+" (CI=true: a missing prerequisite fails)", a...)
	}
	t.Skipf("adversarial: "+format, a...)
}

func newSuite(t *testing.T) *suite {
	if os.Geteuid() != 0 {
		prerequisite(t, "must run as root (it creates a user and runs the tool as root)")
	}
	for _, tool := range []string{"useradd", "userdel", "groupadd", "go"} {
		if _, err := exec.LookPath(tool); err != nil {
			prerequisite(t, "%s not found: %v", tool, err)
		}
	}
	lockSuite(t)
	base, err := os.MkdirTemp("", "pkcstok-adv-")
	must(t, err)
	must(t, os.Chmod(base, 0o755)) // the member must reach the layout below it
	s := &suite{base: base, proc: filepath.Join(base, "proc"), pidfile: filepath.Join(base, "none.pid")}
	t.Cleanup(func() {
		if err := os.RemoveAll(base); err != nil {
			t.Errorf("remove %s: %v", base, err)
		}
	})
	must(t, os.Mkdir(s.proc, 0o755))
	must(t, os.Mkdir(filepath.Join(base, "bin"), 0o755))

	if _, err := user.LookupGroup(tokGroup); err != nil {
		// make setup creates it; left in place like make setup's.
		mustRun(t, "groupadd", "--system", tokGroup)
	}
	g, err := user.LookupGroup(tokGroup)
	must(t, err)
	s.gid, _ = strconv.Atoi(g.Gid)
	if _, err := user.Lookup(advUser); err == nil {
		// Left by a run that was killed before its cleanup.
		mustRun(t, "userdel", advUser)
	}
	mustRun(t, "useradd", "-M", "-N", "-g", tokGroup, "-d", "/nonexistent", "-s", "/usr/sbin/nologin", advUser)
	t.Cleanup(func() {
		if out, err := exec.Command("userdel", advUser).CombinedOutput(); err != nil {
			t.Errorf("userdel %s: %v\n%s", advUser, err, out)
		}
	})
	u, err := user.Lookup(advUser)
	must(t, err)
	s.uid, _ = strconv.Atoi(u.Uid)

	if b, err := os.ReadFile("/proc/sys/fs/protected_hardlinks"); err == nil {
		s.hardlinkSysctl = strings.TrimSpace(string(b))
		t.Cleanup(func() { s.setHardlinks(t, s.hardlinkSysctl) })
	}

	gomod, err := exec.Command("go", "env", "GOMOD").Output()
	must(t, err)
	root := filepath.Dir(strings.TrimSpace(string(gomod)))
	s.bin = filepath.Join(base, "bin", "pkcstok-migrate")
	s.attacker = filepath.Join(base, "bin", "attacker")
	for _, b := range []struct{ out, pkg, tags string }{
		// faultinject: only for PKCSTOK_MIGRATE_PROC/PIDFILES (the pkcsslotd check pointed
		// at an empty /proc, so a pkcsslotd another suite runs on this host does not matter).
		{s.bin, "./cmd/pkcstok-migrate", "faultinject"},
		{s.attacker, "./adversarial/attacker", ""},
	} {
		args := []string{"build", "-o", b.out}
		if b.tags != "" {
			args = append(args, "-tags", b.tags)
		}
		cmd := exec.Command("go", append(args, b.pkg)...)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", b.pkg, err, out)
		}
	}
	return s
}

// lockSuite serializes suites on one host (the user name is fixed; other worktrees may run
// make test at the same time) and then removes what a suite killed before its cleanup left.
func lockSuite(t *testing.T) {
	f, err := os.OpenFile(filepath.Join(os.TempDir(), "pkcstok-adversarial.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	must(t, err)
	deadline := time.Now().Add(4 * time.Minute)
	for unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) != nil {
		if time.Now().After(deadline) {
			t.Fatalf("another adversarial suite holds %s", f.Name())
		}
		time.Sleep(time.Second)
	}
	t.Cleanup(func() { f.Close() })
	stale, _ := filepath.Glob(filepath.Join(os.TempDir(), "pkcstok-adv-*"))
	for _, d := range stale {
		if st, err := os.Lstat(d); err == nil && st.IsDir() {
			t.Logf("removing %s, left by a suite that was killed", d)
			_ = os.RemoveAll(d)
		}
	}
}

func (s *suite) setHardlinks(t testing.TB, v string) bool {
	if v == "" {
		return false
	}
	if err := os.WriteFile("/proc/sys/fs/protected_hardlinks", []byte(v+"\n"), 0o644); err != nil {
		t.Logf("cannot set fs.protected_hardlinks=%s: %v", v, err)
		return false
	}
	return true
}

// layout builds the host layout for one run of an attack.
type layoutOpts struct {
	objects    int
	label      string
	confGroupW bool // the conf dir (mis)configured root:pkcs11 0775
}

func (s *suite) newEnv(t *testing.T, name string, run int, lo layoutOpts) *env {
	e := &env{s: s, t: t, dir: filepath.Join(s.base, fmt.Sprintf("%s-%d", name, run)), strays: map[string]bool{}}
	must(t, os.Mkdir(e.dir, 0o755))
	e.state = filepath.Join(e.dir, "state")
	e.ds = filepath.Join(e.state, "swtok")
	e.confdir = filepath.Join(e.dir, "conf")
	e.conf = filepath.Join(e.confdir, "opencryptoki.conf")
	e.shared = filepath.Join(e.dir, "shared")
	e.rootdir = filepath.Join(e.dir, "root")

	mkdir := func(p string, mode os.FileMode, gid int) {
		must(t, os.Mkdir(p, 0o700))
		must(t, os.Chown(p, 0, gid))
		must(t, os.Chmod(p, mode))
	}
	mkdir(e.state, 0o770, s.gid)
	mkdir(e.shared, 0o770|os.ModeSetgid, s.gid)
	mkdir(e.rootdir, 0o700, 0)
	if lo.confGroupW {
		mkdir(e.confdir, 0o775, s.gid)
	} else {
		mkdir(e.confdir, 0o755, 0)
	}
	n := lo.objects
	if n == 0 {
		n = 5
	}
	label := lo.label
	if label == "" {
		label = "adversarial"
	}
	gen, err := tokentest.WriteOld(e.ds, tokentest.Options{Type: tokens.TypeSoft, SOPIN: soPIN, UserPIN: userPIN, N: n, Seed: int64(run + 1), Label: label})
	must(t, err)
	for _, o := range gen.Objects {
		e.objects = append(e.objects, o.Name)
	}
	must(t, filepath.WalkDir(e.ds, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, 0, s.gid)
	}))
	c, err := tokentest.OldConf(slot, tokens.TypeSoft)
	must(t, err)
	must(t, os.WriteFile(e.conf, c, 0o644))
	must(t, os.Chmod(e.conf, 0o644))
	for _, f := range []struct{ name, pin string }{{"so.pin", soPIN}, {"user.pin", userPIN}} {
		must(t, os.WriteFile(filepath.Join(e.rootdir, f.name), []byte(f.pin+"\n"), 0o600))
	}

	// Victims: a root-only directory in the state dir (the member can rename it: the state
	// dir is group-writable) and a root 0600 file outside (a symlink or hard-link target).
	vault := filepath.Join(e.state, "vault")
	mkdir(vault, 0o700, 0)
	e.writeSecret(filepath.Join(vault, "key"))
	victims := filepath.Join(e.dir, "victims")
	mkdir(victims, 0o755, 0)
	secret := filepath.Join(victims, "secret")
	e.writeSecret(secret)
	e.addVictim("vault (root 0700 dir in the state dir)", vault, filepath.Join(vault, "key"))
	e.addVictim("secret (root 0600 file outside)", secret, secret)

	e.firstIno = inode(t, e.ds)
	e.firstSnap = snapshot(t, e.ds)
	return e
}

func (e *env) writeSecret(p string) {
	b := make([]byte, 64)
	_, _ = rand.Read(b)
	copy(b, "VICTIM-SECRET:")
	must(e.t, os.WriteFile(p, b, 0o600))
	must(e.t, os.Chmod(p, 0o600))
}

func (e *env) addVictim(name, path, secretFile string) {
	var st unix.Stat_t
	must(e.t, unix.Lstat(path, &st))
	sec, err := os.ReadFile(secretFile)
	must(e.t, err)
	e.victims = append(e.victims, &victim{name: name, dev: uint64(st.Dev), ino: uint64(st.Ino), snap: snapshot(e.t, path), secret: sec})
}

func (e *env) p(rel string) string {
	r := strings.NewReplacer("{state}", e.state, "{ds}", e.ds, "{conf}", e.confdir, "{shared}", e.shared,
		"{root}", e.rootdir, "{dir}", e.dir, "{obj0}", e.objects[0])
	return r.Replace(rel)
}

// ---- running things ----

// attackerCmd prepares the attacker program with the member's credentials.
//
// SysProcAttr.Credential rather than setpriv or runuser: the child gets exactly her uid, her
// primary group and [pkcs11] as its only supplementary group (none of root's), with no PAM
// session, no shell and no extra process in between whose exit could hide hers; Setpgid and
// Pdeathsig make sure she dies with the test.
func (e *env) attackerCmd(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, e.s.attacker, args...)
	cmd.Env = []string{"PATH=/usr/bin:/bin"}
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: &syscall.Credential{Uid: uint32(e.s.uid), Gid: uint32(e.s.gid), Groups: []uint32{uint32(e.s.gid)}},
		Setpgid:    true,
		Pdeathsig:  syscall.SIGKILL,
	}
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// oneShot runs one attacker step to completion.
func (e *env) oneShot(stdin []byte, args ...string) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := e.attackerCmd(ctx, args...)
	cmd.Stdin = bytes.NewReader(stdin)
	if out, err := cmd.CombinedOutput(); err != nil {
		e.t.Fatalf("attacker %v: %v\n%s", args, err, out)
	}
}

// racer is a looping attacker running beside root's operation.
type racer struct {
	cmd    *exec.Cmd
	out    *bytes.Buffer
	cancel context.CancelFunc
	mu     sync.Mutex
	read   chan struct{} // closed when all her output is read
}

func (e *env) startRacer(args ...string) *racer {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	cmd := e.attackerCmd(ctx, args...)
	r := &racer{cmd: cmd, out: &bytes.Buffer{}, cancel: cancel, read: make(chan struct{})}
	pr, pw, err := os.Pipe()
	must(e.t, err)
	cmd.Stdout, cmd.Stderr = pw, pw
	must(e.t, cmd.Start())
	pw.Close()
	ready := make(chan struct{})
	go func() {
		buf := make([]byte, 4096)
		once := false
		for {
			n, err := pr.Read(buf)
			r.mu.Lock()
			r.out.Write(buf[:n])
			got := bytes.Contains(r.out.Bytes(), []byte("ready\n"))
			r.mu.Unlock()
			if got && !once {
				once = true
				close(ready)
			}
			if err != nil {
				if !once {
					close(ready)
				}
				pr.Close()
				close(r.read)
				return
			}
		}
	}()
	select {
	case <-ready:
	case <-time.After(20 * time.Second):
		e.t.Fatalf("attacker %v did not start", args)
	}
	e.cleanups = append(e.cleanups, func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); cancel() })
	return r
}

// stop ends the racer (SIGTERM: she undoes her swaps) and returns her iterations.
func (r *racer) stop(t testing.TB) int {
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	err := r.cmd.Wait()
	r.cancel()
	<-r.read
	r.mu.Lock()
	out := r.out.String()
	r.mu.Unlock()
	n := -1
	for _, l := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(l, "iterations "); ok {
			n, _ = strconv.Atoi(v)
		}
	}
	if err != nil || n < 0 {
		t.Errorf("attacker %v: %v\n%s", r.cmd.Args[1:], err, out)
	}
	return n
}

func (e *env) childEnv() []string {
	env := []string{"PATH=" + os.Getenv("PATH"), "PKCSTOK_MIGRATE_PROC=" + e.s.proc}
	pid := "PKCSTOK_MIGRATE_PIDFILES=" + e.s.pidfile
	for _, x := range e.extraEnv {
		if strings.HasPrefix(x, "PKCSTOK_MIGRATE_PIDFILES=") {
			pid = x
		} else {
			env = append(env, x)
		}
	}
	return append(env, pid)
}

// run runs the binary as root; watch, when set, is polled while it runs.
func (e *env) run(timeout time.Duration, stdin []byte, watch func(*runRes), args ...string) *runRes {
	e.t.Helper()
	return e.runProgram(timeout, stdin, watch, e.s.bin, args...)
}

// runProgram runs prog as root, judged like the binary.
func (e *env) runProgram(timeout time.Duration, stdin []byte, watch func(*runRes), prog string, args ...string) *runRes {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, prog, args...)
	cmd.Env = e.childEnv()
	cmd.Dir = e.dir
	cmd.Stdin = bytes.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 5 * time.Second
	r := &runRes{args: args}
	start := time.Now()
	must(e.t, cmd.Start())
	done := make(chan struct{})
	var wg sync.WaitGroup
	if watch != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-done:
					return
				case <-time.After(20 * time.Millisecond):
					watch(r)
				}
			}
		}()
	}
	err := cmd.Wait()
	close(done)
	wg.Wait()
	r.dur = time.Since(start)
	r.timedOut = ctx.Err() != nil
	r.stdout, r.stderr = stdout.Bytes(), stderr.Bytes()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		r.code = -1
	}
	if cmd.ProcessState != nil {
		if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
			r.maxRSSKB = int64(ru.Maxrss)
		}
	}
	if json.Unmarshal(r.stdout, &r.doc) == nil {
		if em, ok := r.doc["error"].(map[string]any); ok {
			r.errCode, _ = em["code"].(string)
			r.errMsg, _ = em["message"].(string)
		}
	}
	return r
}

func (e *env) request(extra map[string]any) []byte {
	req := map[string]any{"slot": slot, "datastore": e.ds, "confdir": e.confdir, "so_pin": soPIN, "user_pin": userPIN}
	for k, v := range extra {
		if v == nil {
			delete(req, k)
		} else {
			req[k] = v
		}
	}
	b, _ := json.Marshal(req)
	return b
}

func (e *env) apply() *runRes {
	return e.run(opTimeout, e.request(nil), nil, "apply", "--request", "-")
}

func (e *env) plan() *runRes {
	return e.run(opTimeout, e.request(nil), nil, "plan", "--request", "-")
}

func (e *env) rollback() *runRes {
	return e.run(opTimeout, e.request(map[string]any{"so_pin": nil, "user_pin": nil}), nil, "rollback", "--request", "-")
}

func (e *env) legacy(answer string) *runRes {
	return e.run(opTimeout, []byte(answer), nil, "-s", strconv.Itoa(slot), "-d", e.ds, "-c", e.confdir)
}

func (e *env) info(jsonOut bool) *runRes {
	return e.run(opTimeout, nil, nil, "info", "--confdir", e.confdir, "--state-dir", e.state, "--json="+strconv.FormatBool(jsonOut))
}

// cleanApply migrates without an attacker (setup of the rollback attacks).
func (e *env) cleanApply() {
	e.t.Helper()
	if r := e.apply(); !r.success() {
		e.t.Fatalf("setup apply: %s", r)
	}
}

// ---- looking at the file system ----

func inode(t testing.TB, p string) uint64 {
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		t.Fatalf("lstat %s: %v", p, err)
	}
	return uint64(st.Ino)
}

// snapshot describes every entry below root (root itself as "."), never following a symlink
// or opening a special file: type and permission bits, owner, and for regular files the size
// and SHA-256 (files over 1 MiB: size and blocks), for symlinks the target, for devices the
// device number. Directory times are left out.
func snapshot(t testing.TB, root string) map[string]string {
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
			if st.Size > 1<<20 {
				line += fmt.Sprintf(" size=%d blocks=%d", st.Size, st.Blocks)
				break
			}
			b, err := readNoFollow(p)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(b)
			line += fmt.Sprintf(" size=%d sha=%s", len(b), hex.EncodeToString(sum[:8]))
		case unix.S_IFLNK:
			target, _ := os.Readlink(p)
			line += " -> " + target
		case unix.S_IFCHR, unix.S_IFBLK:
			line += fmt.Sprintf(" rdev=%d", uint64(st.Rdev))
		}
		m[rel] = line
		return nil
	})
	if err != nil {
		t.Fatalf("snapshot %s: %v", root, err)
	}
	return m
}

func readNoFollow(p string) ([]byte, error) {
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), p)
	defer f.Close()
	var buf bytes.Buffer
	_, err = buf.ReadFrom(f)
	return buf.Bytes(), err
}

func snapDiff(want, got map[string]string) string {
	var d []string
	for k, v := range want {
		if g, ok := got[k]; !ok {
			d = append(d, "- "+k+" "+v)
		} else if g != v {
			d = append(d, fmt.Sprintf("~ %s %s => %s", k, v, g))
		}
	}
	for k, v := range got {
		if _, ok := want[k]; !ok {
			d = append(d, "+ "+k+" "+v)
		}
	}
	if len(d) > 8 {
		d = append(d[:8], fmt.Sprintf("… %d more", len(d)-8))
	}
	return strings.Join(d, "; ")
}

type found struct {
	path string
	st   unix.Stat_t
}

// walkAll lists every entry below root without following symlinks.
func walkAll(root string) []found {
	var all []found
	_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		var st unix.Stat_t
		if unix.Lstat(p, &st) == nil {
			all = append(all, found{p, st})
		}
		return nil
	})
	return all
}

func findIno(all []found, ino uint64) string {
	for _, f := range all {
		if uint64(f.st.Ino) == ino {
			return f.path
		}
	}
	return ""
}

// widens reports how the permissions of got let more users read or write than want's.
func widens(want, got string) string {
	wm, wu, wg := parseLine(want)
	gm, gu, gg := parseLine(got)
	switch {
	case gm&0o006&^wm != 0:
		return "others gained access"
	case gm&0o060 != 0 && (wm&0o060 == 0 || wg != gg) && wm&0o006 == 0:
		return "the group gained access"
	case gu != wu && gm&0o600 != 0 && wm&0o066 == 0:
		return "another owner"
	}
	return ""
}

func parseLine(l string) (mode uint32, uid, gid int) {
	f := strings.Fields(l)
	if len(f) < 2 {
		return 0, -1, -1
	}
	m, _ := strconv.ParseUint(f[0], 8, 32)
	ug := strings.SplitN(f[1], ":", 2)
	uid, _ = strconv.Atoi(ug[0])
	if len(ug) == 2 {
		gid, _ = strconv.Atoi(ug[1])
	}
	return uint32(m) & 0o7777, uid, gid
}
