//go:build linux

package e2e

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Fixed paths of Debian's opencryptoki 3.8.1 (compiled in; neither pkcsslotd nor the token
// library can be pointed elsewhere: there is no OCK_CONFIG-like variable in 3.8.1, and its
// PKCS_APP_STORE variable is broken: the library then reads and writes NVTOK.DAT and MK_SO
// in "/").
const (
	slotID      = 3
	confDir     = "/etc/opencryptoki"
	confName    = "opencryptoki.conf"
	confPath    = confDir + "/" + confName
	configPath  = "/var/lib/opencryptoki" // CONFIG_PATH: data stores are CONFIG_PATH/<tokname>
	lockDir     = "/var/lock/opencryptoki"
	logDir      = "/var/log/opencryptoki"
	slotdPID    = "/var/run/pkcsslotd.pid" // 3.8.1; 3.12+ uses /run/opencryptoki/pkcsslotd.pid
	slotdSocket = "/var/run/pkcsslotd.socket"
	shmDir      = "/dev/shm"
	slotdBin    = "/usr/sbin/pkcsslotd"
	pkcsconfBin = "/usr/sbin/pkcsconf"
	p11toolBin  = "/usr/bin/pkcs11-tool"
	tokenGroup  = "pkcs11"
)

// p11Module finds the openCryptoki PKCS#11 API library of the installed package.
func p11Module() string {
	m, _ := filepath.Glob("/usr/lib/*/pkcs11/libopencryptoki.so")
	if len(m) == 0 {
		return ""
	}
	return m[0]
}

// prerequisites returns what is missing for the suite, or "".
func prerequisites() string {
	var miss []string
	if os.Geteuid() != 0 {
		miss = append(miss, "must run as root (pkcsslotd, pkcsconf and pkcstok-migrate need it)")
	}
	for _, f := range []string{slotdBin, pkcsconfBin, p11toolBin} {
		if _, err := os.Stat(f); err != nil {
			miss = append(miss, f+" is missing (apt-get install -y opencryptoki opensc, or e2e/install.sh)")
		}
	}
	if p11Module() == "" {
		miss = append(miss, "/usr/lib/<triplet>/pkcs11/libopencryptoki.so is missing (package opencryptoki)")
	}
	if _, err := user.LookupGroup(tokenGroup); err != nil {
		miss = append(miss, "group pkcs11 is missing (created by the opencryptoki package)")
	}
	if _, err := os.Stat("/var/lock/"); err != nil {
		miss = append(miss, "/var/lock (/run/lock) is missing: mkdir -p /run/lock")
	}
	if _, err := exec.LookPath("go"); err != nil && os.Getenv("PKCSTOK_E2E_BIN") == "" {
		miss = append(miss, "go is not on PATH (needed to build the tool; or set PKCSTOK_E2E_BIN)")
	}
	return strings.Join(miss, "; ")
}

// ---------------------------------------------------------------------------------------
// Tree snapshots: what a directory holds, to prove that something was left alone or restored.

type entry struct {
	Mode     fs.FileMode
	UID, GID uint32
	Size     int64
	MTime    int64 // files only; directories change mtime whenever an entry comes or goes
	SHA256   string
	Link     string
	Data     []byte // kept only when asked for
}

func (e entry) String() string {
	s := fmt.Sprintf("%v uid=%d gid=%d", e.Mode, e.UID, e.GID)
	if e.Mode.IsRegular() {
		s += fmt.Sprintf(" size=%d sha256=%.12s", e.Size, e.SHA256)
	}
	if e.Link != "" {
		s += " -> " + e.Link
	}
	return s
}

type tree map[string]entry // relative path ("." for the root) -> entry

// snapshot walks root without following symlinks. A missing root gives an empty tree.
// skip (may be nil) leaves out top-level names.
func snapshot(root string, keepData bool, skip func(top string) bool) (tree, error) {
	t := tree{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == root && errors.Is(err, fs.ErrNotExist) {
				return fs.SkipAll
			}
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if skip != nil && rel != "." && !strings.Contains(rel, "/") && skip(rel) {
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		e := entry{Mode: fi.Mode(), UID: st.Uid, GID: st.Gid}
		switch {
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(b)
			e.Size, e.SHA256, e.MTime = int64(len(b)), hex.EncodeToString(sum[:]), st.Mtim.Nano()
			if keepData {
				e.Data = b
			}
		case fi.Mode()&fs.ModeSymlink != 0:
			e.Link, _ = os.Readlink(p)
		}
		t[rel] = e
		return nil
	})
	return t, err
}

// diff lists the differences between two trees (content, mode, owners; mtimes when withTimes).
func diff(before, after tree, withTimes bool) []string {
	var out []string
	for p, b := range before {
		a, ok := after[p]
		switch {
		case !ok:
			out = append(out, "missing "+p+" ("+b.String()+")")
		case a.Mode != b.Mode || a.UID != b.UID || a.GID != b.GID || a.SHA256 != b.SHA256 || a.Link != b.Link:
			out = append(out, fmt.Sprintf("changed %s: %s -> %s", p, b, a))
		case withTimes && a.MTime != b.MTime:
			out = append(out, fmt.Sprintf("mtime changed %s", p))
		}
	}
	for p, a := range after {
		if _, ok := before[p]; !ok {
			out = append(out, "new "+p+" ("+a.String()+")")
		}
	}
	sort.Strings(out)
	return out
}

// ---------------------------------------------------------------------------------------
// The sandbox: everything the suite changes outside its own temporary directory, recorded
// before and put back afterwards (always, from t.Cleanup or on SIGINT/SIGTERM).

type sandbox struct {
	t       *testing.T
	tmp     string // the suite's temporary directory (removed last)
	saveDir string // <tmp>/saved: original files moved aside
	tokname string // the slot's tokname: the data store is configPath/tokname
	ds      string // configPath/tokname

	confBefore, libBefore tree
	lockExisted           bool
	lockBefore            tree
	logExisted            bool
	logBefore             tree
	shmBefore             map[string]bool
	pidFileBefore         []byte // nil: there was no pid file
	socketExisted         bool
	moved                 []string // names in confDir moved aside into saveDir/etc

	mu      sync.Mutex
	daemons []int // PIDs of the pkcsslotd processes this suite started
	done    bool
}

func newSandbox(t *testing.T) *sandbox {
	t.Helper()
	tmp, err := os.MkdirTemp("", "pkcstok-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("temporary directory %s (originals moved aside are in %s/saved)", tmp, tmp)
	var rnd [4]byte
	rand.Read(rnd[:])
	s := &sandbox{t: t, tmp: tmp, saveDir: filepath.Join(tmp, "saved"), tokname: "e2etok" + hex.EncodeToString(rnd[:])}
	s.ds = filepath.Join(configPath, s.tokname)
	if err := os.MkdirAll(filepath.Join(s.saveDir, "etc"), 0o700); err != nil {
		t.Fatal(err)
	}

	// Refuse to touch a system where pkcsslotd already runs: it is not ours to stop.
	if pids := runningSlotds(); len(pids) > 0 {
		os.RemoveAll(tmp)
		t.Fatalf("pkcsslotd already runs (pid %v): stop it first; this suite starts and stops its own", pids)
	}

	mine := func(top string) bool { return strings.HasPrefix(top, s.tokname) }
	must := func(tr tree, err error) tree {
		if err != nil {
			os.RemoveAll(tmp)
			t.Fatalf("snapshot: %v", err)
		}
		return tr
	}
	s.confBefore = must(snapshot(confDir, false, nil))
	s.libBefore = must(snapshot(configPath, false, mine))
	_, err = os.Lstat(lockDir)
	s.lockExisted = err == nil
	s.lockBefore = must(snapshot(lockDir, false, nil))
	_, err = os.Lstat(logDir)
	s.logExisted = err == nil
	s.logBefore = must(snapshot(logDir, false, nil))
	s.shmBefore = map[string]bool{}
	if ents, err := os.ReadDir(shmDir); err == nil {
		for _, e := range ents {
			s.shmBefore[e.Name()] = true
		}
	}
	if b, err := os.ReadFile(slotdPID); err == nil {
		s.pidFileBefore = b
	}
	_, err = os.Lstat(slotdSocket)
	s.socketExisted = err == nil
	if _, err := os.Lstat(s.ds); err == nil {
		os.RemoveAll(tmp)
		t.Fatalf("%s exists already", s.ds)
	}

	// From here on the system is changed: restore it whatever happens.
	t.Cleanup(s.restore)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() {
		if _, ok := <-sig; ok {
			fmt.Fprintln(os.Stderr, "e2e: interrupted: restoring the system")
			// Let a running command finish (bounded), then keep every later one from starting:
			// cmdMu is never released again, the process exits below.
			for end := time.Now().Add(2 * time.Minute); !cmdMu.TryLock() && time.Now().Before(end); {
				time.Sleep(50 * time.Millisecond)
			}
			s.restore()
			os.Exit(1)
		}
	}()
	t.Cleanup(func() { signal.Stop(sig); close(sig) })

	// Move aside the conf and anything the tool would trip over (earlier backups).
	for _, n := range []string{confName, confName + "_BAK", confName + "_new", confName + "_ROLLED_BACK"} {
		src := filepath.Join(confDir, n)
		if _, err := os.Lstat(src); err != nil {
			continue
		}
		if err := moveFile(src, filepath.Join(s.saveDir, "etc", n)); err != nil {
			t.Fatalf("save %s: %v", src, err)
		}
		s.moved = append(s.moved, n)
	}
	return s
}

// restore puts the system back. It runs once; errors are reported, not fatal, so that every
// step runs.
func (s *sandbox) restore() {
	s.mu.Lock()
	if s.done {
		s.mu.Unlock()
		return
	}
	s.done = true
	daemons := append([]int(nil), s.daemons...)
	s.mu.Unlock()
	t := s.t
	report := func(format string, args ...any) {
		// t.Errorf must not be called after the test has finished (signal path): fall back to stderr.
		defer func() {
			if recover() != nil {
				fmt.Fprintf(os.Stderr, "e2e restore: "+format+"\n", args...)
			}
		}()
		t.Errorf("restore: "+format, args...)
	}

	// 1. Daemons we started, by PID; then their SysV shared memory.
	for _, pid := range daemons {
		if err := stopPID(pid, 30*time.Second); err != nil {
			report("stop pkcsslotd %d: %v", pid, err)
		}
	}
	removeSysVShm(daemons, report)
	if pids := runningSlotds(); len(pids) > 0 {
		report("pkcsslotd still running after cleanup: %v", pids)
	}

	// 2. Data store and its siblings (<tokname>, _BAK, _PKCSTOK_MIGRATE_TMP, _ROLLED_BACK, journal).
	if ents, err := os.ReadDir(configPath); err == nil {
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), s.tokname) {
				if err := os.RemoveAll(filepath.Join(configPath, e.Name())); err != nil {
					report("%v", err)
				}
			}
		}
	}
	// 3. Token shared memory (POSIX) made by the token library for this data store.
	if ents, err := os.ReadDir(shmDir); err == nil {
		for _, e := range ents {
			if !s.shmBefore[e.Name()] && strings.HasPrefix(e.Name(), "var.lib.opencryptoki.") {
				if err := os.Remove(filepath.Join(shmDir, e.Name())); err != nil {
					report("%v", err)
				}
			}
		}
	}
	// 4. Lock and log directories.
	restoreDir(lockDir, s.lockExisted, s.lockBefore, report)
	restoreDir(logDir, s.logExisted, s.logBefore, report)
	// 5. pkcsslotd's pid file and socket.
	if s.pidFileBefore == nil {
		if err := os.Remove(slotdPID); err != nil && !errors.Is(err, fs.ErrNotExist) {
			report("%v", err)
		}
	} else if b, _ := os.ReadFile(slotdPID); !bytes.Equal(b, s.pidFileBefore) {
		if err := os.WriteFile(slotdPID, s.pidFileBefore, 0o644); err != nil {
			report("%v", err)
		}
	}
	if !s.socketExisted {
		if err := os.Remove(slotdSocket); err != nil && !errors.Is(err, fs.ErrNotExist) {
			report("%v", err)
		}
	}
	// 6. The conf directory: remove what the suite and the tool made, move the originals back.
	if ents, err := os.ReadDir(confDir); err == nil {
		for _, e := range ents {
			if _, ok := s.confBefore[e.Name()]; ok || !strings.HasPrefix(e.Name(), confName) {
				continue
			}
			if err := os.RemoveAll(filepath.Join(confDir, e.Name())); err != nil {
				report("%v", err)
			}
		}
	}
	for _, n := range s.moved {
		dst := filepath.Join(confDir, n)
		if err := os.RemoveAll(dst); err != nil {
			report("%v", err)
		}
		if err := moveFile(filepath.Join(s.saveDir, "etc", n), dst); err != nil {
			report("put back %s: %v (the original is in %s)", dst, err, s.saveDir)
			s.tmp = "" // keep it for a human
		}
	}

	// 7. Prove it: the conf directory and CONFIG_PATH are as before (files byte for byte).
	if after, err := snapshot(confDir, false, nil); err != nil {
		report("%v", err)
	} else if d := diff(s.confBefore, after, true); len(d) > 0 {
		report("%s differs from before the suite:\n  %s", confDir, strings.Join(d, "\n  "))
	}
	if after, err := snapshot(configPath, false, nil); err != nil {
		report("%v", err)
	} else if d := diff(s.libBefore, after, true); len(d) > 0 {
		report("%s differs from before the suite:\n  %s", configPath, strings.Join(d, "\n  "))
	}
	if s.tmp != "" {
		if err := os.RemoveAll(s.tmp); err != nil {
			report("%v", err)
		}
	}
}

// restoreDir removes what appeared in dir since before (the whole dir when it did not exist).
func restoreDir(dir string, existed bool, before tree, report func(string, ...any)) {
	if !existed {
		if err := os.RemoveAll(dir); err != nil {
			report("%v", err)
		}
		return
	}
	after, err := snapshot(dir, false, nil)
	if err != nil {
		report("%v", err)
		return
	}
	var fresh []string
	for p := range after {
		if _, ok := before[p]; !ok {
			fresh = append(fresh, p)
		}
	}
	sort.Strings(fresh) // parents before children: RemoveAll of a parent covers the rest
	for _, p := range fresh {
		if err := os.RemoveAll(filepath.Join(dir, p)); err != nil {
			report("%v", err)
		}
	}
}

// moveFile renames, or copies (content, mode, owners, times) and removes across devices.
func moveFile(src, dst string) error {
	err := os.Rename(src, dst)
	if err == nil || !errors.Is(err, syscall.EXDEV) {
		return err
	}
	var st unix.Stat_t
	if err := unix.Lstat(src, &st); err != nil {
		return err
	}
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	if err := os.WriteFile(dst, b, 0o600); err != nil {
		return err
	}
	if err := os.Chown(dst, int(st.Uid), int(st.Gid)); err != nil {
		return err
	}
	if err := os.Chmod(dst, fs.FileMode(st.Mode&0o777)|modeBits(st.Mode)); err != nil {
		return err
	}
	if err := os.Chtimes(dst, time.Unix(st.Atim.Unix()), time.Unix(st.Mtim.Unix())); err != nil {
		return err
	}
	return os.Remove(src)
}

func modeBits(m uint32) fs.FileMode {
	var f fs.FileMode
	if m&unix.S_ISUID != 0 {
		f |= fs.ModeSetuid
	}
	if m&unix.S_ISGID != 0 {
		f |= fs.ModeSetgid
	}
	if m&unix.S_ISVTX != 0 {
		f |= fs.ModeSticky
	}
	return f
}

// cmdMu is held while the suite runs an external command (pkcsslotd, pkcsconf, pkcs11-tool,
// pkcstok-migrate), so that a restore on SIGINT/SIGTERM does not race with one.
var cmdMu sync.Mutex

func guarded(f func() error) error {
	cmdMu.Lock()
	defer cmdMu.Unlock()
	return f()
}

// ---------------------------------------------------------------------------------------
// pkcsslotd

// runningSlotds lists live (not zombie) processes whose comm is pkcsslotd.
func runningSlotds() []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if isSlotd(pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// isSlotd: pid is a live pkcsslotd (a zombie counts as gone).
func isSlotd(pid int) bool {
	comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil || strings.TrimSpace(string(comm)) != "pkcsslotd" {
		return false
	}
	return alive(pid)
}

// alive: /proc/pid exists and is not a zombie.
func alive(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// "pid (comm) S ...": the state follows the last ')'.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 || i+2 >= len(stat) {
		return false
	}
	return stat[i+2] != 'Z' && stat[i+2] != 'X'
}

// startSlotd starts the real pkcsslotd (it daemonises) and returns the daemon's PID, read from
// its pid file and checked in /proc.
func (s *sandbox) startSlotd(t *testing.T) int {
	t.Helper()
	if pids := runningSlotds(); len(pids) > 0 {
		t.Fatalf("pkcsslotd already runs (pid %v) before the suite starts it", pids)
	}
	// Become a child subreaper: the daemonised pkcsslotd is then re-parented to this test
	// process, which reaps it at once when it stops. Otherwise it stays a zombie until PID 1
	// reaps it (about 1 s here, forever under an init that never reaps), and a zombie whose
	// comm is still "pkcsslotd" counts as running for the tool's fail-closed check.
	subreaperOnce.Do(func() {
		if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
			t.Logf("PR_SET_CHILD_SUBREAPER: %v (stopped daemons may linger as zombies)", err)
		}
	})
	// Files, not pipes, for the output: the daemon inherits them and would keep a pipe open.
	logf, err := os.CreateTemp(s.tmp, "pkcsslotd-*.log")
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(slotdBin)
	cmd.Stdout, cmd.Stderr = logf, logf
	runErr := guarded(cmd.Run)
	deadline := time.Now().Add(20 * time.Second)
	for {
		b, _ := os.ReadFile(slotdPID)
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 0 && isSlotd(pid) {
			s.mu.Lock()
			s.daemons = append(s.daemons, pid)
			s.mu.Unlock()
			// The socket appears once the daemon listens.
			for time.Now().Before(deadline) {
				if _, err := os.Stat(slotdSocket); err == nil {
					break
				}
				time.Sleep(50 * time.Millisecond)
			}
			t.Logf("pkcsslotd started, pid %d", pid)
			return pid
		}
		if time.Now().After(deadline) {
			out, _ := os.ReadFile(logf.Name())
			t.Fatalf("pkcsslotd did not come up (exit: %v, pid file %q): %s", runErr, b, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stopSlotd stops the daemon by its PID and checks that it is gone.
func (s *sandbox) stopSlotd(t *testing.T, pid int) {
	t.Helper()
	if err := stopPID(pid, 30*time.Second); err != nil {
		t.Fatalf("stop pkcsslotd %d: %v", pid, err)
	}
	s.mu.Lock()
	for i, p := range s.daemons {
		if p == pid {
			s.daemons = append(s.daemons[:i], s.daemons[i+1:]...)
			break
		}
	}
	s.mu.Unlock()
	removeSysVShm([]int{pid}, t.Errorf)
	if pids := runningSlotds(); len(pids) > 0 {
		t.Fatalf("pkcsslotd still runs after stopping %d: %v", pid, pids)
	}
	t.Logf("pkcsslotd %d stopped", pid)
}

var subreaperOnce sync.Once

// stopPID sends SIGTERM to pid (only while it is a pkcsslotd), waits, then SIGKILL.
func stopPID(pid int, wait time.Duration) error {
	if !isSlotd(pid) {
		return nil // already gone (or the PID is no longer a pkcsslotd: not ours to kill)
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		return err
	}
	deadline := time.Now().Add(wait)
	killed := false
	for {
		reap(pid)
		if !exists(pid) {
			break
		}
		if time.Now().After(deadline) {
			if alive(pid) && !killed && isSlotd(pid) {
				syscall.Kill(pid, syscall.SIGKILL)
				killed, deadline = true, time.Now().Add(5*time.Second)
				continue
			}
			if !alive(pid) {
				return fmt.Errorf("pid %d stopped but stays a zombie: nobody reaps it (run the suite under an init that reaps, e.g. docker --init)", pid)
			}
			return fmt.Errorf("pid %d still alive after SIGTERM and SIGKILL", pid)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if killed {
		return fmt.Errorf("pid %d ignored SIGTERM for %v and was killed", pid, wait)
	}
	return nil
}

// reap collects pid if it is a zombie child of this process (see PR_SET_CHILD_SUBREAPER).
func reap(pid int) {
	var ws unix.WaitStatus
	unix.Wait4(pid, &ws, unix.WNOHANG, nil)
}

// exists: /proc/pid exists (zombies included).
func exists(pid int) bool {
	_, err := os.Stat(fmt.Sprintf("/proc/%d", pid))
	return err == nil
}

// removeSysVShm removes the System V shared memory segments created by the given PIDs
// (pkcsslotd 3.8.1 removes its own on SIGTERM; this covers a killed daemon).
func removeSysVShm(pids []int, report func(string, ...any)) {
	if len(pids) == 0 {
		return
	}
	want := map[int]bool{}
	for _, p := range pids {
		want[p] = true
	}
	f, err := os.Open("/proc/sysvipc/shm")
	if err != nil {
		return
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Scan() // header
	for sc.Scan() {
		fl := strings.Fields(sc.Text())
		if len(fl) < 5 {
			continue
		}
		id, err1 := strconv.Atoi(fl[1])
		cpid, err2 := strconv.Atoi(fl[4])
		if err1 != nil || err2 != nil || !want[cpid] {
			continue
		}
		if _, err := unix.SysvShmCtl(id, unix.IPC_RMID, nil); err != nil && !errors.Is(err, unix.EINVAL) {
			report("remove SysV shm %d of pid %d: %v", id, cpid, err)
		}
	}
}
