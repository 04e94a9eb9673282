//go:build linux

// Package ockroot runs the real openCryptoki of a cached Debian root, made by e2e/mkroot.sh
// (`make setup`), without touching the host's /etc/opencryptoki or /var/lib/opencryptoki.
//
// Each Open mounts a private overlay on top of the cached root (the cache itself is never
// written, so several suites and engineers can use one root at a time) and proc inside it.
// pkcsslotd runs as the root's pkcsslotd user, pkcsconf, pkcs11-tool and the tool under test
// as root, all chrooted; a foreign-architecture root (s390x) runs them through its copy of
// qemu-user. Close stops the daemons it started and removes every mount; so does SIGINT or
// SIGTERM, and a later Open removes what a killed process left behind.
package ockroot

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Spec names a cached root: <cache>/<Suite>-<Arch>, or <cache>/<Suite>-<Arch>-<Variant>.
type Spec struct{ Suite, Arch, Variant string }

// The roots `make setup` builds.
var (
	Trixie      = Spec{Suite: "trixie", Arch: "amd64"}   // opencryptoki 3.23, opensc, dpkg, man-db
	TrixieS390x = Spec{Suite: "trixie", Arch: "s390x"}   // opencryptoki 3.23 s390x, run under qemu
	Bookworm    = Spec{Suite: "bookworm", Arch: "amd64"} // opencryptoki 3.8.1

	// testing: openCryptoki 3.27, the newest upstream release, on the four architectures our
	// users run; all but amd64 under qemu.
	Testing        = Spec{Suite: "testing", Arch: "amd64"}
	TestingS390x   = Spec{Suite: "testing", Arch: "s390x"}
	TestingPPC64el = Spec{Suite: "testing", Arch: "ppc64el"}
	TestingARM64   = Spec{Suite: "testing", Arch: "arm64"}

	// TestingFIPS is testing amd64 with Debian's OpenSSL FIPS provider installed
	// (openssl-provider-fips, `openssl fipsinstall`) and OpenSSL's standard FIPS configuration
	// as /etc/ssl/openssl.cnf (providers fips and base, default_properties = fips=yes);
	// Debian's own openssl.cnf is /etc/ssl/openssl.cnf.dist (e2e/mkroot.sh, variant fips).
	TestingFIPS = Spec{Suite: "testing", Arch: "amd64", Variant: "fips"}
)

// All is every root `make setup` builds.
var All = []Spec{Trixie, TrixieS390x, Bookworm, Testing, TestingS390x, TestingPPC64el, TestingARM64, TestingFIPS}

// GoArch is the GOARCH of the root's Debian architecture (ppc64el is Go's ppc64le).
func (s Spec) GoArch() string {
	if s.Arch == "ppc64el" {
		return "ppc64le"
	}
	return s.Arch
}

// BigEndian reports whether the root's architecture is big-endian (of ours: s390x only).
func (s Spec) BigEndian() bool { return s.Arch == "s390x" }

// Name is the root's directory name.
func (s Spec) Name() string {
	if s.Variant != "" {
		return s.Suite + "-" + s.Arch + "-" + s.Variant
	}
	return s.Suite + "-" + s.Arch
}

// StampName is the file in a root's top directory that mkroot.sh writes last.
const StampName = ".pkcstok-root"

// Stamp is what mkroot.sh recorded about a root.
type Stamp struct {
	Suite, Arch, Packages string
	GID, SlotdUID         int
	Versions              map[string]string // package -> Debian version
	Fallback              string            // packages taken from testing, if any
}

// ReadStamp reads dir's stamp.
func ReadStamp(dir string) (*Stamp, error) {
	b, err := os.ReadFile(filepath.Join(dir, StampName))
	if err != nil {
		return nil, err
	}
	st := &Stamp{Versions: map[string]string{}, GID: -1, SlotdUID: -1}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "version "); ok {
			if p, ver, ok := strings.Cut(v, " "); ok {
				st.Versions[p] = ver
			}
			continue
		}
		if v, ok := strings.CutPrefix(line, "fallback from testing: "); ok {
			st.Fallback = strings.TrimSpace(v)
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		switch k {
		case "suite":
			st.Suite = v
		case "arch":
			st.Arch = v
		case "packages":
			st.Packages = v
		case "pkcs11_gid":
			st.GID, err = strconv.Atoi(v)
		case "pkcsslotd_uid":
			st.SlotdUID, err = strconv.Atoi(v)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %s: %w", filepath.Join(dir, StampName), line, err)
		}
	}
	if st.GID < 0 || st.SlotdUID < 0 || st.Versions["opencryptoki"] == "" {
		return nil, fmt.Errorf("%s: incomplete", filepath.Join(dir, StampName))
	}
	return st, nil
}

// CacheDir is $PKCSTOK_ROOTS, else <module root>/.cache/roots (as in mkroot.sh), with its
// symlinks resolved: /proc/PID/root names a session's real path, and a cache reached through a
// symlink (a worktree's .cache) must compare equal to it, or no daemon of the session is
// recognised as its own.
func CacheDir() (string, error) {
	if d := os.Getenv("PKCSTOK_ROOTS"); d != "" {
		return resolved(filepath.Abs(d))
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := wd; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return resolved(filepath.Join(d, ".cache", "roots"), nil)
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("no go.mod above %s: set PKCSTOK_ROOTS", wd)
		}
	}
}

// resolved is dir with its symlinks resolved, or dir as it is while it does not exist.
func resolved(dir string, err error) (string, error) {
	if err != nil {
		return "", err
	}
	if r, err := filepath.EvalSymlinks(dir); err == nil {
		return r, nil
	}
	return dir, nil
}

// Missing says what keeps spec from opening ("" when nothing does).
func Missing(spec Spec) string {
	var miss []string
	if os.Geteuid() != 0 {
		miss = append(miss, "must run as root (mount, chroot)")
	}
	cache, err := CacheDir()
	if err != nil {
		return err.Error()
	}
	dir := filepath.Join(cache, spec.Name())
	if _, err := ReadStamp(dir); err != nil {
		miss = append(miss, fmt.Sprintf("root %s is not built (%v): run make setup", dir, err))
	}
	return strings.Join(miss, "; ")
}

// Root is one session on a cached root: the overlay at Dir is private to it.
type Root struct {
	Spec
	Stamp *Stamp
	Dir   string // what chroot enters (the overlay mount point, or a copy)
	Base  string // the cached root below it
	work  string // session directory: upper, work, root, owner
	qemu  string // qemu-user inside the root, "" for a native root
	Log   func(format string, args ...any)

	mu      sync.Mutex
	mounts  []string // innermost last
	daemons []int
	closed  bool
	done    chan struct{} // closed when Close has finished
}

var (
	openMu   sync.Mutex
	open     = map[*Root]bool{}
	opening  sync.WaitGroup // Opens between registration and their mounts
	shutting bool           // a signal arrived: no more Open
	sigOnce  sync.Once
	reaper   sync.Once
)

// Open mounts a private overlay of spec's cached root and proc inside it.
func Open(spec Spec) (*Root, error) {
	cache, err := CacheDir()
	if err != nil {
		return nil, err
	}
	base := filepath.Join(cache, spec.Name())
	st, err := ReadStamp(base)
	if err != nil {
		return nil, fmt.Errorf("root %s: %w (run make setup)", base, err)
	}
	runDir := filepath.Join(filepath.Dir(cache), "run")
	if err := os.MkdirAll(runDir, 0o755); err != nil {
		return nil, err
	}
	removeStale(runDir)
	work, err := os.MkdirTemp(runDir, spec.Name()+"-")
	if err != nil {
		return nil, err
	}
	r := &Root{Spec: spec, Stamp: st, Base: base, work: work, Log: func(string, ...any) {}, done: make(chan struct{})}
	if err := os.WriteFile(filepath.Join(work, "owner"), []byte(selfOwner()), 0o644); err != nil {
		os.RemoveAll(work)
		return nil, err
	}
	sigOnce.Do(closeOnSignal)
	reaper.Do(func() {
		// Daemonised pkcsslotd processes are re-parented to this process, which reaps them as
		// soon as they stop: a zombie named pkcsslotd counts as running for the tool's check.
		_ = unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
	})
	openMu.Lock()
	if shutting {
		openMu.Unlock()
		os.RemoveAll(work)
		return nil, fmt.Errorf("open %s: shutting down", spec.Name())
	}
	open[r] = true
	opening.Add(1)
	openMu.Unlock()
	defer opening.Done()

	if err := r.mountRoot(); err != nil {
		r.Close()
		return nil, err
	}
	if err := r.mount("proc", filepath.Join(r.Dir, "proc"), "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		r.Close()
		return nil, fmt.Errorf("mount proc in %s: %w", r.Dir, err)
	}
	if spec.Arch != "amd64" {
		m, _ := filepath.Glob(filepath.Join(r.Dir, "usr/bin/qemu-*-static"))
		if len(m) != 1 {
			r.Close()
			return nil, fmt.Errorf("root %s: no usr/bin/qemu-*-static (run make setup)", base)
		}
		r.qemu = "/" + strings.TrimPrefix(m[0], r.Dir+"/")
	}
	return r, nil
}

// mountRoot mounts the overlay; where overlayfs is not available it copies the root instead.
func (r *Root) mountRoot() error {
	upper, wk, dir := filepath.Join(r.work, "upper"), filepath.Join(r.work, "work"), filepath.Join(r.work, "root")
	for _, d := range []string{upper, wk, dir} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return err
		}
	}
	opts := "lowerdir=" + r.Base + ",upperdir=" + upper + ",workdir=" + wk
	if err := r.mount("overlay", dir, "overlay", 0, opts); err == nil {
		r.Dir = dir
		return nil
	} else {
		r.Log("overlayfs unavailable (%v): copying %s", err, r.Base)
	}
	out, err := exec.Command("cp", "-a", "--reflink=auto", r.Base+"/.", dir).CombinedOutput()
	if err != nil {
		return fmt.Errorf("copy %s: %v: %s", r.Base, err, out)
	}
	r.Dir = dir
	return nil
}

func (r *Root) mount(src, target, fstype string, flags uintptr, data string) error {
	if err := unix.Mount(src, target, fstype, flags, data); err != nil {
		return err
	}
	r.mu.Lock()
	r.mounts = append(r.mounts, target)
	r.mu.Unlock()
	return nil
}

// Path is the host path of an absolute path inside the root. Symlinks in the root are not
// resolved: use it for paths the suite made itself.
func (r *Root) Path(p string) string { return filepath.Join(r.Dir, p) }

// Triplet is the root's multiarch directory name.
func (r *Root) Triplet() string {
	switch r.Arch {
	case "amd64":
		return "x86_64-linux-gnu"
	case "s390x":
		return "s390x-linux-gnu"
	case "arm64":
		return "aarch64-linux-gnu"
	case "ppc64el":
		return "powerpc64le-linux-gnu"
	}
	return r.Arch + "-linux-gnu"
}

// Module is the openCryptoki PKCS#11 library inside the root.
func (r *Root) Module() string { return "/usr/lib/" + r.Triplet() + "/pkcs11/libopencryptoki.so" }

// Version is the root's opencryptoki version ("3.23.0+dfsg-0.3+deb13u1").
func (r *Root) Version() string { return r.Stamp.Versions["opencryptoki"] }

// Since312 reports whether the root's openCryptoki is 3.12 or later (it then runs pkcsslotd as
// the pkcsslotd user and keeps its PID file in /run/opencryptoki).
func (r *Root) Since312() bool {
	v := r.Version()
	maj, rest, _ := strings.Cut(v, ".")
	min, _, _ := strings.Cut(rest, ".")
	a, _ := strconv.Atoi(maj)
	b, _ := strconv.Atoi(min)
	return a > 3 || (a == 3 && b >= 12)
}

// Emulated reports whether commands run through qemu-user.
func (r *Root) Emulated() bool { return r.qemu != "" }

// Command is argv run chrooted in the root as root (asSlotd: as the pkcsslotd user, group
// pkcs11), through qemu for a foreign root unless native is set (a static binary of the host's
// architecture). The environment is a fixed minimal one, not the host's.
func (r *Root) Command(ctx context.Context, asSlotd, native bool, argv ...string) *exec.Cmd {
	args := argv
	if r.qemu != "" && !native {
		args = append([]string{r.qemu}, argv...)
	}
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Dir = "/"
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "LANG=C.UTF-8"}
	attr := &syscall.SysProcAttr{Chroot: r.Dir}
	if asSlotd {
		// = chroot --userspec=UID:GID ROOT [qemu] /usr/sbin/pkcsslotd
		attr.Credential = &syscall.Credential{Uid: uint32(r.Stamp.SlotdUID), Gid: uint32(r.Stamp.GID), Groups: []uint32{uint32(r.Stamp.GID)}}
	}
	cmd.SysProcAttr = attr
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// Result is one finished command.
type Result struct {
	Argv           []string
	Code           int
	Stdout, Stderr []byte
}

func (res *Result) String() string {
	return fmt.Sprintf("%s: exit %d\nstdout: %s\nstderr: %s", strings.Join(Redact(res.Argv), " "), res.Code, res.Stdout, res.Stderr)
}

// pinFlags take a PIN as their next argument in pkcsconf (-S, -n, -U) and pkcs11-tool
// (--pin, --so-pin, --new-pin).
var pinFlags = map[string]bool{"-S": true, "-n": true, "-U": true, "--pin": true, "--so-pin": true, "--new-pin": true}

// Redact returns argv with the PIN arguments of pkcsconf and pkcs11-tool replaced by "***",
// for messages and logs (the programs under test never get a PIN on their command line).
func Redact(argv []string) []string {
	out := append([]string(nil), argv...)
	for i := 0; i+1 < len(out); i++ {
		if pinFlags[out[i]] {
			out[i+1] = "***"
			i++
		}
	}
	return out
}

// Run runs argv as root in the root (see Command) with stdin, and returns its output. A
// non-zero exit is not an error (see Result.Code); failing to start or a timeout is.
func (r *Root) Run(ctx context.Context, stdin []byte, native bool, argv ...string) (*Result, error) {
	return r.run(ctx, r.Command(ctx, false, native, argv...), stdin, argv)
}

// run runs cmd (made by Command for argv) with stdin and returns its output, as Run says.
func (r *Root) run(ctx context.Context, cmd *exec.Cmd, stdin []byte, argv []string) (*Result, error) {
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	err := cmd.Run()
	res := &Result{Argv: argv, Stdout: so.Bytes(), Stderr: se.Bytes()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee) && ctx.Err() == nil:
		res.Code = ee.ExitCode()
	default:
		return res, fmt.Errorf("%s in %s: %w", strings.Join(Redact(argv), " "), r.Name(), err)
	}
	return res, nil
}

// MustRun is Run that also fails on a non-zero exit.
func (r *Root) MustRun(ctx context.Context, stdin []byte, argv ...string) ([]byte, error) {
	res, err := r.Run(ctx, stdin, false, argv...)
	if err != nil {
		return nil, err
	}
	if res.Code != 0 {
		return res.Stdout, fmt.Errorf("in %s: %s", r.Name(), res)
	}
	return res.Stdout, nil
}

// WriteConf writes /etc/opencryptoki/opencryptoki.conf: root:pkcs11 0640, like the package.
func (r *Root) WriteConf(conf []byte) error {
	return r.WriteFile("/etc/opencryptoki/opencryptoki.conf", conf, 0o640, 0, r.Stamp.GID)
}

// WriteFile writes an absolute path of the root with mode, owner and group.
func (r *Root) WriteFile(p string, b []byte, mode os.FileMode, uid, gid int) error {
	hp := r.Path(p)
	if err := os.WriteFile(hp, b, mode); err != nil {
		return err
	}
	if err := os.Chown(hp, uid, gid); err != nil {
		return err
	}
	return os.Chmod(hp, mode)
}

// Install copies the host file bin to /usr/local/bin/<name> in the root (0755) and returns the
// path inside the root.
func (r *Root) Install(bin, name string) (string, error) {
	b, err := os.ReadFile(bin)
	if err != nil {
		return "", err
	}
	p := "/usr/local/bin/" + name
	if err := os.MkdirAll(r.Path("/usr/local/bin"), 0o755); err != nil {
		return "", err
	}
	return p, r.WriteFile(p, b, 0o755, 0, 0)
}

// ---------------------------------------------------------------------------------------
// pkcsslotd

func (r *Root) pidFile() string {
	if r.Since312() {
		return "/run/opencryptoki/pkcsslotd.pid"
	}
	return "/run/pkcsslotd.pid" // 3.8.1: /var/run/pkcsslotd.pid, var/run -> ../run
}

func (r *Root) socket() string {
	if r.Since312() {
		return "/run/opencryptoki/pkcsslotd.socket"
	}
	return "/run/pkcsslotd.socket"
}

// ErrSlotdExited: pkcsslotd refused to start (its first process exited with a status other
// than 0, and no daemon came up); the error carries its log.
var ErrSlotdExited = errors.New("refused to start")

// StartSlotd starts the root's pkcsslotd (it daemonises) and returns the daemon's PID once its
// socket exists. 3.12+ runs as the pkcsslotd user (started as root it re-executes itself,
// which fails under qemu-user without binfmt_misc), 3.8.1 as root.
func (r *Root) StartSlotd(ctx context.Context) (int, error) {
	r.mu.Lock()
	closed := r.closed
	r.mu.Unlock()
	if closed {
		return 0, fmt.Errorf("%s: closed", r.Name())
	}
	os.Remove(r.Path(r.pidFile()))
	logf, err := os.CreateTemp(r.work, "pkcsslotd-*.log")
	if err != nil {
		return 0, err
	}
	defer logf.Close()
	cmd := r.Command(ctx, r.Since312(), false, "/usr/sbin/pkcsslotd")
	// Files, not pipes: the daemon inherits them and would keep a pipe open.
	cmd.Stdout, cmd.Stderr = logf, logf
	runErr := cmd.Run()
	deadline := time.Now().Add(60 * time.Second)
	// pkcsslotd forks once it is up and its first process exits 0: an exit status other
	// than 0 is its refusal to start (a token directory it cannot use, a broken conf), told
	// in its log. A moment's grace for a daemon that did fork, then no 60 s wait for it.
	exited := time.Now().Add(5 * time.Second)
	for {
		b, _ := os.ReadFile(r.Path(r.pidFile()))
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 0 && r.owns(pid) {
			r.mu.Lock()
			if r.closed { // closed meanwhile (signal): this daemon is not to outlive it
				r.mu.Unlock()
				stopPID(pid, func() bool { return r.owns(pid) }, 5*time.Second)
				return 0, fmt.Errorf("%s: closed while pkcsslotd started", r.Name())
			}
			r.daemons = append(r.daemons, pid)
			r.mu.Unlock()
			for time.Now().Before(deadline) {
				if _, err := os.Stat(r.Path(r.socket())); err == nil {
					r.Log("%s: pkcsslotd %s started, pid %d", r.Name(), r.Version(), pid)
					return pid, nil
				}
				time.Sleep(20 * time.Millisecond)
			}
			return pid, fmt.Errorf("%s: pkcsslotd %d runs but %s never appeared", r.Name(), pid, r.socket())
		}
		if runErr != nil && time.Now().After(exited) {
			out, _ := os.ReadFile(logf.Name())
			return 0, fmt.Errorf("%s: pkcsslotd %w (%v): %s", r.Name(), ErrSlotdExited, runErr, out)
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			out, _ := os.ReadFile(logf.Name())
			return 0, fmt.Errorf("%s: pkcsslotd did not come up (exit: %v, pid file %q): %s", r.Name(), runErr, b, out)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// owns: pid is alive and chrooted into this root.
func (r *Root) owns(pid int) bool {
	root, err := os.Readlink(fmt.Sprintf("/proc/%d/root", pid))
	return err == nil && root == r.Dir && alive(pid)
}

// StopSlotd stops a daemon this root started: SIGTERM, wait (reaping it), SIGKILL after 30 s.
func (r *Root) StopSlotd(pid int) error {
	r.mu.Lock()
	for i, p := range r.daemons {
		if p == pid {
			r.daemons = append(r.daemons[:i], r.daemons[i+1:]...)
			break
		}
	}
	r.mu.Unlock()
	return stopPID(pid, func() bool { return r.owns(pid) }, 30*time.Second)
}

// Daemons lists the pkcsslotd PIDs this root started and has not stopped.
func (r *Root) Daemons() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]int(nil), r.daemons...)
}

func stopPID(pid int, ours func() bool, wait time.Duration) error {
	if !ours() {
		reap(pid)
		return nil
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		return err
	}
	deadline, killed := time.Now().Add(wait), false
	for {
		reap(pid)
		if !alive(pid) {
			reap(pid)
			if killed {
				return fmt.Errorf("pid %d ignored SIGTERM for %v and was killed", pid, wait)
			}
			return nil
		}
		if time.Now().After(deadline) {
			if killed {
				return fmt.Errorf("pid %d still alive after SIGKILL", pid)
			}
			syscall.Kill(pid, syscall.SIGKILL)
			killed, deadline = true, time.Now().Add(5*time.Second)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func reap(pid int) {
	var ws unix.WaitStatus
	unix.Wait4(pid, &ws, unix.WNOHANG, nil)
}

// alive: /proc/pid exists and is not a zombie.
func alive(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 || i+2 >= len(stat) {
		return false
	}
	return stat[i+2] != 'Z' && stat[i+2] != 'X'
}

// ---------------------------------------------------------------------------------------
// Closing

// Close stops the daemons, kills anything else still running in the root, unmounts proc and
// the overlay and removes the session directory. It is safe to call twice and from two
// goroutines: a second call waits for the first to finish.
func (r *Root) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		<-r.done
		return nil
	}
	r.closed = true
	daemons := append([]int(nil), r.daemons...)
	r.daemons = nil
	mounts := append([]string(nil), r.mounts...)
	r.mu.Unlock()
	defer func() {
		openMu.Lock()
		delete(open, r)
		openMu.Unlock()
		close(r.done)
	}()

	var errs []error
	for _, pid := range daemons {
		if err := stopPID(pid, func() bool { return r.owns(pid) }, 30*time.Second); err != nil {
			errs = append(errs, fmt.Errorf("stop pkcsslotd %d: %w", pid, err))
		}
	}
	if r.Dir != "" {
		killChrooted(r.Dir)
	}
	errs = append(errs, unmountAll(mounts)...)
	if busy := mountsUnder(r.work); len(busy) > 0 {
		errs = append(errs, fmt.Errorf("still mounted, %s kept: %s", r.work, strings.Join(busy, " ")))
	} else if err := os.RemoveAll(r.work); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func unmountAll(mounts []string) []error {
	var errs []error
	for i := len(mounts) - 1; i >= 0; i-- {
		m := mounts[i]
		var err error
		for try := 0; try < 50; try++ {
			if err = unix.Unmount(m, 0); err == nil || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
				err = nil
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil {
			if e2 := unix.Unmount(m, unix.MNT_DETACH); e2 != nil {
				errs = append(errs, fmt.Errorf("unmount %s: %v (lazy: %v)", m, err, e2))
			}
		}
	}
	return errs
}

// killChrooted SIGKILLs every process whose root is dir (a killed suite's leftovers).
func killChrooted(dir string) {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		if root, err := os.Readlink("/proc/" + e.Name() + "/root"); err == nil && root == dir && alive(pid) {
			syscall.Kill(pid, syscall.SIGKILL)
			pids = append(pids, pid)
		}
	}
	for _, pid := range pids {
		for i := 0; i < 100 && alive(pid); i++ {
			reap(pid)
			time.Sleep(20 * time.Millisecond)
		}
		reap(pid)
	}
}

// mountsUnder lists mount points at or below dir.
func mountsUnder(dir string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fl := strings.Fields(sc.Text())
		if len(fl) < 5 {
			continue
		}
		mp := unescapeMount(fl[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	return out
}

func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// selfOwner identifies this process across PID reuse and PID namespaces: "pid starttime
// pid:[inode]", the PID as this process's namespace numbers it and that namespace.
func selfOwner() string {
	o := ownerOf(os.Getpid())
	if o == "" {
		return ""
	}
	return o + " " + pidNS()
}

// initPIDNS is the initial PID namespace (the kernel's PROC_PID_INIT_INO), the one an owner
// record without a namespace was written in.
const initPIDNS = "pid:[4026531836]"

func pidNS() string {
	ns, err := os.Readlink("/proc/self/ns/pid")
	if err != nil {
		return initPIDNS
	}
	return ns
}

// staleAfter is how old a session of another PID namespace must be before it is taken for
// stale: its PID cannot be checked from here (make bench runs in a PID namespace of its own,
// for at most 3 hours).
const staleAfter = 24 * time.Hour

func ownerOf(pid int) string {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return ""
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 20 {
		return ""
	}
	return strconv.Itoa(pid) + " " + f[19] // field 22: starttime
}

// removeStale unmounts and removes sessions whose process is gone (killed hard, timed out).
func removeStale(runDir string) {
	ents, _ := os.ReadDir(runDir)
	for _, e := range ents {
		work := filepath.Join(runDir, e.Name())
		b, err := os.ReadFile(filepath.Join(work, "owner"))
		if err != nil {
			continue
		}
		f := strings.Fields(string(b))
		ns := initPIDNS
		switch len(f) {
		case 2:
		case 3:
			ns = f[2]
		default:
			continue
		}
		if ns != pidNS() {
			// Its PID means another process here, or none: a session of another namespace
			// is left alone until it is old.
			if fi, err := os.Stat(filepath.Join(work, "owner")); err != nil || time.Since(fi.ModTime()) < staleAfter {
				continue
			}
		} else if pid, _ := strconv.Atoi(f[0]); pid > 0 && ownerOf(pid) == f[0]+" "+f[1] {
			continue // still running
		}
		Cleanup(work)
	}
}

// Cleanup removes a session directory left behind: processes chrooted in it, its mounts
// (innermost first), then the directory. make clean does the same from the shell.
func Cleanup(work string) error {
	killChrooted(filepath.Join(work, "root"))
	m := mountsUnder(work)
	// Deeper mount points first.
	for i := 0; i < len(m); i++ {
		for j := i + 1; j < len(m); j++ {
			if len(m[j]) > len(m[i]) {
				m[i], m[j] = m[j], m[i]
			}
		}
	}
	for _, p := range m {
		if err := unix.Unmount(p, 0); err != nil {
			unix.Unmount(p, unix.MNT_DETACH)
		}
	}
	if busy := mountsUnder(work); len(busy) > 0 {
		return fmt.Errorf("%s: still mounted: %s", work, strings.Join(busy, " "))
	}
	return os.RemoveAll(work)
}

// closeOnSignal closes every open root on SIGINT/SIGTERM, then exits 1.
func closeOnSignal() {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() {
		s := <-sig
		fmt.Fprintf(os.Stderr, "ockroot: %v: stopping daemons and unmounting roots\n", s)
		openMu.Lock()
		shutting = true
		openMu.Unlock()
		opening.Wait()
		CloseAll(os.Stderr)
		os.Exit(1)
	}()
}

// CloseAll closes every root this process opened; errors go to w.
func CloseAll(w io.Writer) {
	openMu.Lock()
	var rs []*Root
	for r := range open {
		rs = append(rs, r)
	}
	openMu.Unlock()
	for _, r := range rs {
		if err := r.Close(); err != nil {
			fmt.Fprintf(w, "ockroot: close %s: %v\n", r.Name(), err)
		}
	}
}
