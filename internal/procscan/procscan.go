// Package procscan answers questions about other processes by reading /proc: is pkcsslotd
// running (doc/format.md §8.3, but failing closed), which processes hold files below a
// directory open, and which shared-memory segment belongs to a repository (§8.5).
//
// Every function takes the proc root ("/proc" in production) so tests can use a fake tree.
package procscan

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// defaultPIDFiles are the pkcsslotd PID files checked when SlotdRunning gets nil:
// openCryptoki's current location, the AIX one, and the one Debian's 3.8.1 uses.
var defaultPIDFiles = []string{
	"/run/opencryptoki/pkcsslotd.pid",
	"/var/run/opencryptoki/pkcsslotd.pid",
	"/var/run/pkcsslotd.pid",
}

// defaultProcRoot is the real proc file system.
const defaultProcRoot = "/proc"

// slotdName is what identifies the daemon in a process's argv[0] or comm.
const slotdName = "pkcsslotd"

// errUndetermined means /proc could not be read well enough to rule out a running
// pkcsslotd (or to list every opener). Callers must treat it as "the daemon may run".
var errUndetermined = errors.New("cannot tell whether pkcsslotd runs")

// ErrIncomplete means some processes could not be inspected by Openers.
var ErrIncomplete = errors.New("some processes could not be inspected")

// evidence is one finding of checkSlotd.
type evidence struct {
	PID    int    `json:"pid"`
	Source string `json:"source"` // a PID file path, or "proc"
	Detail string `json:"detail"` // what was seen, e.g. the argv[0]
}

func (e evidence) String() string {
	return fmt.Sprintf("pid %d (%s): %s", e.PID, e.Source, e.Detail)
}

// slotdStatus is the result of checkSlotd.
type slotdStatus struct {
	PIDs     []int      // processes taken as a running pkcsslotd, sorted, unique
	Evidence []evidence // why each PID counts, plus notes on PID files
}

// Running reports whether any pkcsslotd process was found.
func (s slotdStatus) Running() bool { return len(s.PIDs) > 0 }

// SlotdRunning reports the PIDs of running pkcsslotd processes (empty: not running). It
// fails closed, unlike the reference (§8.3): see checkSlotd. A non-nil error means the
// answer is unknown and the caller must act as if the daemon runs. pidFiles nil means
// defaultPIDFiles; procRoot "" means defaultProcRoot.
func SlotdRunning(procRoot string, pidFiles []string) ([]int, error) {
	st, err := checkSlotd(procRoot, pidFiles)
	return st.PIDs, err
}

// checkSlotd looks for pkcsslotd in two independent ways:
//
//  1. Each PID file: the first line, with surrounding blanks ignored (so "123 \n" counts,
//     where the reference gives up), names a PID. If /proc/PID exists and its argv[0]
//     (cmdline up to the first NUL and first blank, base name) or its comm contains
//     "pkcsslotd", it runs. If /proc/PID exists but neither cmdline nor comm can be read,
//     it counts as running too. A missing PID file, garbage in it or a PID without a /proc
//     entry (stale file) is no evidence either way.
//  2. A scan of every /proc/<pid>: any process whose argv[0] base name or comm contains
//     "pkcsslotd" runs. Processes that vanish during the scan are skipped; processes that
//     exist but cannot be read at all, or a /proc that cannot be listed, give
//     errUndetermined.
func checkSlotd(procRoot string, pidFiles []string) (slotdStatus, error) {
	if procRoot == "" {
		procRoot = defaultProcRoot
	}
	if pidFiles == nil {
		pidFiles = defaultPIDFiles
	}
	var st slotdStatus
	found := map[int]bool{}
	add := func(e evidence) {
		st.Evidence = append(st.Evidence, e)
		if e.PID > 0 && !found[e.PID] {
			found[e.PID] = true
			st.PIDs = append(st.PIDs, e.PID)
		}
	}

	var odd []string
	for _, pf := range pidFiles {
		pid, note, undetermined := readPIDFile(pf)
		if undetermined {
			odd = append(odd, pf)
		}
		if pid <= 0 {
			if note != "" {
				st.Evidence = append(st.Evidence, evidence{Source: pf, Detail: note})
			}
			continue
		}
		switch v, detail := inspect(procRoot, pid); v {
		case verdictSlotd:
			add(evidence{PID: pid, Source: pf, Detail: detail})
		case verdictUnreadable:
			add(evidence{PID: pid, Source: pf, Detail: "process exists but cannot be inspected: " + detail})
		case verdictGone:
			st.Evidence = append(st.Evidence, evidence{PID: pid, Source: pf, Detail: "stale PID file: no such process"})
		case verdictOther:
			st.Evidence = append(st.Evidence, evidence{PID: pid, Source: pf, Detail: "PID file names another program: " + detail})
		}
	}

	pids, err := listPIDs(procRoot)
	if err != nil {
		sortStatus(&st)
		return st, fmt.Errorf("%w: list %s: %v", errUndetermined, procRoot, err)
	}
	var unreadable []string
	for _, pid := range pids {
		if found[pid] {
			continue
		}
		switch v, detail := inspectScan(procRoot, pid); v {
		case verdictSlotd:
			add(evidence{PID: pid, Source: "proc", Detail: detail})
		case verdictUnreadable:
			unreadable = append(unreadable, fmt.Sprintf("%d (%s)", pid, detail))
		}
	}
	sortStatus(&st)
	if len(odd) > 0 && !st.Running() {
		return st, fmt.Errorf("%w: %s: not a regular file", errUndetermined, strings.Join(odd, ", "))
	}
	if len(unreadable) > 0 && !st.Running() {
		return st, fmt.Errorf("%w: cannot inspect process(es) %s", errUndetermined, strings.Join(unreadable, ", "))
	}
	return st, nil
}

func sortStatus(st *slotdStatus) { sort.Ints(st.PIDs) }

// readPIDFile returns the PID named by the file's first line, or 0 and a note on why
// there is none ("" when the file simply does not exist). undetermined is set when the path
// is a symlink, FIFO, socket or device: nothing pkcsslotd writes, so the check cannot tell.
// The file is opened non-blocking and without following a symlink, and fstat decides
// before anything is read, so such a file never hangs the check.
func readPIDFile(name string) (pid int, note string, undetermined bool) {
	fd, err := unix.Open(name, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
	for errors.Is(err, unix.EINTR) {
		fd, err = unix.Open(name, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
	}
	if err != nil {
		switch {
		case errors.Is(err, unix.ENOENT), errors.Is(err, unix.ENOTDIR):
			return 0, "", false
		case errors.Is(err, unix.ELOOP):
			return 0, "PID file is a symlink", true
		case errors.Is(err, unix.ENXIO):
			return 0, "PID file is a socket", true
		}
		return 0, "cannot read PID file: " + err.Error(), false
	}
	f := os.NewFile(uintptr(fd), name)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		f.Close()
		return 0, "cannot read PID file: " + err.Error(), false
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
	case unix.S_IFDIR:
		f.Close()
		return 0, "cannot read PID file: is a directory", false
	default:
		f.Close()
		return 0, "PID file is not a regular file", true
	}
	defer f.Close()
	buf := make([]byte, 128)
	n, err := readUpTo(f, buf)
	if err != nil {
		return 0, "cannot read PID file: " + err.Error(), false
	}
	line := string(buf[:n])
	if i := strings.IndexByte(line, '\n'); i >= 0 {
		line = line[:i]
	}
	pid, ok := parsePID(line)
	if !ok {
		return 0, fmt.Sprintf("PID file does not hold a PID: %q", line), false
	}
	return pid, "", false
}

// parsePID accepts a decimal PID with optional surrounding blanks and a leading '+'.
func parsePID(s string) (int, bool) {
	s = strings.Trim(s, " \t\r\x00")
	s = strings.TrimPrefix(s, "+")
	if s == "" || len(s) > 10 {
		return 0, false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	pid, err := strconv.Atoi(s)
	if err != nil || pid <= 0 {
		return 0, false
	}
	return pid, true
}

type verdict int

const (
	verdictGone       verdict = iota // no /proc entry
	verdictOther                     // some other program
	verdictSlotd                     // looks like pkcsslotd
	verdictUnreadable                // exists but neither cmdline nor comm readable
)

// inspect decides what process pid is. The common case (the scan of every process) costs
// two reads: /proc/PID/stat, which gives the state (a zombie does not count), whether it is a
// kernel thread and the comm (the same task name /proc/PID/comm shows), then cmdline, skipped
// for kernel threads (theirs is always empty). Where stat cannot be read or parsed (a fake
// tree without it, a process vanishing), inspectSlow decides from comm and cmdline alone.
func inspect(procRoot string, pid int) (verdict, string) {
	dir := procRoot + "/" + strconv.Itoa(pid)
	bufs := scanBufs.Get().(*inspectBufs)
	defer scanBufs.Put(bufs)
	st, err := readOnce(dir+"/stat", bufs.stat[:])
	if err != nil {
		return inspectSlow(dir)
	}
	comm, state, flags, ok := parseStat(st)
	if !ok {
		return inspectSlow(dir)
	}
	// A zombie has exited and holds no files; it stays until its parent reaps it (a
	// detached pkcsslotd: until init does), so it does not count as running.
	if state == 'Z' || state == 'X' {
		return verdictGone, ""
	}
	if flags&pfKthread == 0 {
		cmd, cerr := readOnce(dir+"/cmdline", bufs.cmdline[:])
		if cerr == nil {
			if v, d, hit := slotdArgv(cmd); hit {
				return v, d
			}
		}
		if strings.Contains(comm, slotdName) {
			return verdictSlotd, "comm " + strconv.Quote(comm)
		}
		return verdictOther, "argv[0] " + strconv.Quote(argv0(cmd))
	}
	if strings.Contains(comm, slotdName) {
		return verdictSlotd, "comm " + strconv.Quote(comm)
	}
	return verdictOther, "kernel thread " + strconv.Quote(comm)
}

// inspectScan is inspect for the scan of every process, where only verdictSlotd and
// verdictUnreadable count: comm and cmdline first (comm is the cheapest file of a process
// to read, about half of stat), stat only for a process that looks like pkcsslotd, to
// tell a zombie. Same verdicts as inspect for what the scan keeps.
func inspectScan(procRoot string, pid int) (verdict, string) {
	dir := procRoot + "/" + strconv.Itoa(pid)
	bufs := scanBufs.Get().(*inspectBufs)
	defer scanBufs.Put(bufs)
	commb, err := readOnce(dir+"/comm", bufs.stat[:])
	if err != nil {
		return inspectSlow(dir)
	}
	comm := strings.TrimRight(string(commb), "\n")
	cmd, cerr := readOnce(dir+"/cmdline", bufs.cmdline[:])
	v, d, hit := verdictOther, "", false
	if cerr == nil {
		v, d, hit = slotdArgv(cmd)
	}
	if !hit && strings.Contains(comm, slotdName) {
		v, d, hit = verdictSlotd, "comm "+strconv.Quote(comm), true
	}
	if !hit {
		return verdictOther, ""
	}
	// A zombie has exited and holds no files: not running.
	if st, err := readSmall(dir+"/stat", 4096); err == nil {
		if i := bytes.LastIndexByte(st, ')'); i >= 0 && i+2 < len(st) && (st[i+2] == 'Z' || st[i+2] == 'X') {
			return verdictGone, ""
		}
	}
	return v, d
}

// pfKthread is PF_KTHREAD in the flags field of /proc/PID/stat.
const pfKthread = 0x00200000

// parseStat returns the comm, the state and the flags of a /proc/PID/stat line
// ("pid (comm) S ppid pgrp session tty_nr tpgid flags ..."; the comm may hold blanks and
// parentheses, so it ends at the last ')').
func parseStat(b []byte) (comm string, state byte, flags uint64, ok bool) {
	i := bytes.IndexByte(b, '(')
	j := bytes.LastIndexByte(b, ')')
	if i < 0 || j < i || j+2 >= len(b) {
		return "", 0, 0, false
	}
	f := strings.Fields(string(b[j+1:]))
	if len(f) < 7 || len(f[0]) != 1 {
		return "", 0, 0, false
	}
	flags, err := strconv.ParseUint(f[6], 10, 64)
	if err != nil {
		return "", 0, 0, false
	}
	return string(b[i+1 : j]), f[0][0], flags, true
}

// slotdArgv looks for pkcsslotd in a cmdline: its argv[0], or the program a qemu-user
// emulator runs.
func slotdArgv(cmd []byte) (verdict, string, bool) {
	if a0 := argv0(cmd); a0 != "" && strings.Contains(path.Base(a0), slotdName) {
		return verdictSlotd, "argv[0] " + strconv.Quote(a0), true
	}
	if prog := emulated(cmd); prog != "" {
		return verdictSlotd, "run by the emulator " + strconv.Quote(argv0(cmd)) + ": " + strconv.Quote(prog), true
	}
	return verdictOther, "", false
}

// inspectSlow is inspect from the files one by one: the directory, stat for the state,
// cmdline, comm.
func inspectSlow(dir string) (verdict, string) {
	if _, err := os.Lstat(dir); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return verdictGone, ""
		}
		return verdictUnreadable, err.Error()
	}
	if st, err := readSmall(filepath.Join(dir, "stat"), 4096); err == nil {
		if i := bytes.LastIndexByte(st, ')'); i >= 0 && i+2 < len(st) && (st[i+2] == 'Z' || st[i+2] == 'X') {
			return verdictGone, ""
		}
	}
	var reasons []string
	readable := false
	cmd, cerr := readSmall(filepath.Join(dir, "cmdline"), 64<<10)
	if cerr == nil {
		readable = true
		if v, d, hit := slotdArgv(cmd); hit {
			return v, d
		}
	} else {
		reasons = append(reasons, cerr.Error())
	}
	comm, merr := readSmall(filepath.Join(dir, "comm"), 4096)
	if merr == nil {
		readable = true
		c := strings.TrimRight(string(comm), "\n")
		if strings.Contains(c, slotdName) {
			return verdictSlotd, "comm " + strconv.Quote(c)
		}
	} else {
		reasons = append(reasons, merr.Error())
	}
	if readable {
		return verdictOther, "argv[0] " + strconv.Quote(argv0(cmd))
	}
	if vanished(cerr) && vanished(merr) {
		return verdictGone, ""
	}
	return verdictUnreadable, strings.Join(reasons, "; ")
}

// inspectBufs are the read buffers of one inspect, reused across the processes of a scan.
type inspectBufs struct {
	stat    [4096]byte
	cmdline [64 << 10]byte
}

var scanBufs = sync.Pool{New: func() any { return new(inspectBufs) }}

// readOnce reads a (proc) file into buf with as few reads as it takes: proc's stat and
// cmdline return everything that fits in one read, so a read that does not fill buf is the
// whole file. A full buf is read on until EOF or full, as readUpTo. The slice aliases buf.
func readOnce(name string, buf []byte) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	n, err := f.Read(buf)
	if err != nil && !errors.Is(err, ioEOF) {
		return nil, readErr(name, err)
	}
	if n == len(buf) {
		m, err := readUpTo(f, buf[n:])
		if err != nil {
			return nil, readErr(name, err)
		}
		n += m
	}
	return buf[:n], nil
}

// emulated returns the pkcsslotd a user-mode emulator runs (argv[0] a qemu-* binary given the
// program as an argument, as `qemu-s390x-static /usr/sbin/pkcsslotd`): its argv[0] and comm are
// the emulator's, not the daemon's. "" for anything else.
func emulated(cmdline []byte) string {
	args := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
	if len(args) < 2 || !strings.HasPrefix(path.Base(args[0]), "qemu-") {
		return ""
	}
	for i := 1; i < len(args); i++ {
		a := args[i]
		if strings.HasPrefix(a, "-") {
			if qemuValueOptions[strings.TrimLeft(a, "-")] {
				i++ // the option's value
			}
			continue
		}
		// The first argument that is not an option is the program.
		if strings.Contains(path.Base(a), slotdName) {
			return a
		}
		return ""
	}
	return ""
}

// qemuValueOptions are qemu-user's options that take a value (qemu-user(1)).
var qemuValueOptions = map[string]bool{
	"L": true, "s": true, "cpu": true, "E": true, "U": true, "0": true, "r": true, "B": true,
	"R": true, "d": true, "D": true, "p": true, "g": true, "seed": true, "trace": true, "plugin": true,
}

// argv0 is the cmdline up to the first NUL, then up to the first blank (as §8.3 step 4).
func argv0(cmdline []byte) string {
	s := string(cmdline)
	if i := strings.IndexByte(s, 0); i >= 0 {
		s = s[:i]
	}
	if i := strings.IndexAny(s, " \t"); i >= 0 {
		s = s[:i]
	}
	return s
}

// vanished reports an error that means the process went away.
func vanished(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, errESRCH)
}

// listPIDs lists the numeric entries of procRoot.
func listPIDs(procRoot string) ([]int, error) {
	f, err := os.Open(procRoot)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, err
	}
	pids := make([]int, 0, len(names))
	for _, n := range names {
		if pid, ok := parsePIDName(n); ok {
			pids = append(pids, pid)
		}
	}
	sort.Ints(pids)
	return pids, nil
}

func parsePIDName(n string) (int, bool) {
	if n == "" || len(n) > 10 {
		return 0, false
	}
	for _, c := range n {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	pid, err := strconv.Atoi(n)
	return pid, err == nil && pid > 0
}

// readSmall reads at most limit bytes of a (proc) file; proc files report size 0, so it
// reads until EOF.
func readSmall(name string, limit int) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	buf := make([]byte, limit)
	n, err := readUpTo(f, buf)
	if err != nil {
		return nil, readErr(name, err)
	}
	return buf[:n], nil
}

// readErr is err of reading the file name as an *fs.PathError: err itself when it is one
// already (what an *os.File returns), so the error names the file once.
func readErr(name string, err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return err
	}
	return &fs.PathError{Op: "read", Path: name, Err: err}
}

// readUpTo reads into buf until it is full or EOF.
func readUpTo(f *os.File, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := f.Read(buf[n:])
		n += m
		if err != nil {
			if errors.Is(err, ioEOF) {
				return n, nil
			}
			return n, err
		}
		if m == 0 {
			break
		}
	}
	return n, nil
}
