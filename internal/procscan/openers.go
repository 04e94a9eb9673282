package procscan

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

var (
	errNotDir = unix.ENOTDIR
	errESRCH  = unix.ESRCH
	ioEOF     = io.EOF
)

// opener is one process that uses something below the directory.
type opener struct {
	PID  int    `json:"pid"`
	Comm string `json:"comm"`
	What string `json:"what"` // "fd 3 -> /path", "cwd -> /path", "root", "mmap /path"
}

// Openers returns the PIDs of processes other than the caller that hold a file of dir (or
// below it) open, sorted: the open-files check of apply.
//
// On the real /proc (procRoot "" or "/proc") it first asks the kernel, file by file, through
// a write lease (lease.go): a cost that grows with the repository, not with the processes of
// the host. Only when a lease is refused does it scan /proc (findOpeners) to name who holds
// the file; when the scan names nobody and the lease is still refused, the file is open in a
// process /proc does not show (another PID namespace, another hard link of the file): an
// error wrapping ErrOpenUnnamed, never "not in use". Where leases cannot answer (a file
// system without them, fs.leases-enable 0, a bound of the walk), it scans /proc (findOpeners).
// A fake procRoot (tests) is always scanned.
//
// What the lease path does not see (the /proc scan does): a process whose working or root directory
// is inside dir, or that holds only a directory (or O_PATH) descriptor there, and no file
// open (directories cannot be leased). SECURITY.md lists it.
func Openers(procRoot string, dir string) ([]int, error) {
	if useLeases && realProc(procRoot) {
		busy, err := busyFiles(dir)
		if err == nil {
			if len(busy) == 0 {
				return nil, nil
			}
			pids, serr := scanPIDs(procRoot, dir)
			if len(pids) > 0 {
				return pids, serr
			}
			// Nobody named: a transient open that is gone, or one /proc cannot show. Ask the
			// kernel again for the files it refused.
			still, err := stillBusy(busy)
			if err == nil && len(still) == 0 {
				return nil, serr
			}
			if err != nil {
				still = busy
			}
			return nil, fmt.Errorf("%w: %s (its write lease is refused; no process in %s holds it under %s)",
				ErrOpenUnnamed, describeFiles(still), procRootName(procRoot), dir)
		}
		// Leases cannot tell: the scan answers.
	}
	return scanPIDs(procRoot, dir)
}

// scanPIDs is findOpeners reduced to the sorted, unique PIDs.
func scanPIDs(procRoot, dir string) ([]int, error) {
	list, err := findOpeners(procRoot, dir)
	seen := map[int]bool{}
	var pids []int
	for _, o := range list {
		if !seen[o.PID] {
			seen[o.PID] = true
			pids = append(pids, o.PID)
		}
	}
	sort.Ints(pids)
	return pids, err
}

// stillBusy takes the lease on each of the files again.
func stillBusy(files []string) ([]string, error) {
	var out []string
	for _, p := range files {
		fd, err := unix.Open(filepath.Dir(p), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, err
		}
		busy, err := leaseFile(fd, filepath.Base(p))
		unix.Close(fd)
		if err != nil {
			return nil, err
		}
		if busy {
			out = append(out, p)
		}
	}
	return out, nil
}

func describeFiles(files []string) string {
	if len(files) > 3 {
		return fmt.Sprintf("%s and %d more", strings.Join(files[:3], ", "), len(files)-3)
	}
	return strings.Join(files, ", ")
}

func procRootName(procRoot string) string {
	if procRoot == "" {
		return defaultProcRoot
	}
	return procRoot
}

// findOpeners scans every /proc/<pid> (fd/*, cwd, root and maps) for paths equal to dir or
// below it. dir is compared both as given (made absolute and cleaned) and with symlinks
// resolved, since /proc shows resolved paths. The caller's own process is skipped.
// Processes that vanish during the scan are skipped; other errors while reading a process
// (which should not happen as root) are collected into an error wrapping ErrIncomplete,
// returned together with everything found.
func findOpeners(procRoot string, dir string) ([]opener, error) {
	if procRoot == "" {
		procRoot = defaultProcRoot
	}
	prefixes, err := dirSpellings(dir)
	if err != nil {
		return nil, err
	}
	pids, err := listPIDs(procRoot)
	if err != nil {
		return nil, fmt.Errorf("%w: list %s: %v", ErrIncomplete, procRoot, err)
	}
	self := os.Getpid()
	var found []opener
	var unreadable []string
	var first error
	for _, pid := range pids {
		if pid == self {
			continue
		}
		hits, err := scanProcess(procRoot, pid, prefixes)
		found = append(found, hits...)
		if err != nil {
			unreadable = append(unreadable, strconv.Itoa(pid))
			if first == nil {
				first = err
			}
		}
	}
	if len(unreadable) > 0 {
		// One line, whatever the number of descriptors: the PIDs and the first cause.
		return found, fmt.Errorf("%w: pid %s (first: %v)", ErrIncomplete, strings.Join(unreadable, ", "), first)
	}
	return found, nil
}

// dirSpellings gives the absolute cleaned dir and its symlink-resolved form.
func dirSpellings(dir string) ([]string, error) {
	if dir == "" {
		return nil, fmt.Errorf("openers: empty directory name")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("openers: %w", err)
	}
	out := []string{abs}
	if real, err := filepath.EvalSymlinks(abs); err == nil && real != abs {
		out = append(out, real)
	}
	return out, nil
}

// under reports whether p (a path read from /proc) is one of the dirs or below it. A
// " (deleted)" suffix the kernel adds for unlinked files does not matter: the prefix test
// still matches.
func under(p string, dirs []string) bool {
	for _, d := range dirs {
		if d == "/" {
			return strings.HasPrefix(p, "/")
		}
		if p == d || strings.HasPrefix(p, d+"/") || p == d+" (deleted)" {
			return true
		}
	}
	return false
}

// scanProcess checks one process. A vanished process gives no hits and no error.
func scanProcess(procRoot string, pid int, dirs []string) ([]opener, error) {
	base := filepath.Join(procRoot, strconv.Itoa(pid))
	comm := ""
	if b, err := readSmall(filepath.Join(base, "comm"), 4096); err == nil {
		comm = strings.TrimRight(string(b), "\n")
	}
	var hits []opener
	var errs []string
	note := func(err error) {
		if err != nil && !vanished(err) {
			errs = append(errs, err.Error())
		}
	}

	for _, l := range []string{"cwd", "root"} {
		t, err := os.Readlink(filepath.Join(base, l))
		if err != nil {
			note(err)
			continue
		}
		if under(t, dirs) {
			hits = append(hits, opener{PID: pid, Comm: comm, What: l + " -> " + t})
		}
	}

	// The descriptors are listed a batch at a time and only the first maxFDHits under dirs
	// are kept: a process may hold a million descriptors (its RLIMIT_NOFILE), and naming it
	// takes one.
	fdDir := filepath.Join(base, "fd")
	if f, err := os.Open(fdDir); err != nil {
		note(err)
	} else {
		var fdHits []opener
		for {
			names, err := f.Readdirnames(fdBatch)
			for _, n := range names {
				t, err := os.Readlink(filepath.Join(fdDir, n))
				if err != nil {
					note(err)
					continue
				}
				if under(t, dirs) && len(fdHits) < maxFDHits {
					fdHits = append(fdHits, opener{PID: pid, Comm: comm, What: "fd " + n + " -> " + t})
				}
			}
			if err != nil {
				if !errors.Is(err, io.EOF) {
					note(err)
				}
				break
			}
		}
		f.Close()
		sort.Slice(fdHits, func(i, j int) bool { return numLess(fdNum(fdHits[i].What), fdNum(fdHits[j].What)) })
		hits = append(hits, fdHits...)
	}

	if err := scanMaps(filepath.Join(base, "maps"), dirs, func(p string) {
		hits = append(hits, opener{PID: pid, Comm: comm, What: "mmap " + p})
	}); err != nil {
		note(err)
	}

	if len(errs) > 0 {
		if len(errs) == 1 {
			return hits, errors.New(errs[0])
		}
		return hits, fmt.Errorf("%s (and %d more)", errs[0], len(errs)-1)
	}
	return hits, nil
}

// fdBatch is how many names of /proc/PID/fd scanProcess reads at a time, and maxFDHits how many
// of a process's descriptors below the directory it reports.
const (
	fdBatch   = 1024
	maxFDHits = 64
)

// fdNum is the descriptor number of an opener.What "fd N -> path".
func fdNum(what string) string {
	n, _, _ := strings.Cut(strings.TrimPrefix(what, "fd "), " ")
	return n
}

func numLess(a, b string) bool {
	x, ex := strconv.Atoi(a)
	y, ey := strconv.Atoi(b)
	if ex == nil && ey == nil {
		return x < y
	}
	return a < b
}

// scanMaps calls hit once per distinct mapped path below dirs. A maps line is
// "start-end perms offset dev inode   path"; the path (which may contain blanks) starts
// after the fifth field.
func scanMaps(name string, dirs []string, hit func(string)) error {
	f, err := os.Open(name)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil // a fake tree without maps, or a vanished process
		}
		return err
	}
	defer f.Close()
	seen := map[string]bool{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		p := mapsPath(sc.Bytes())
		if p == "" || seen[p] || !under(p, dirs) {
			continue
		}
		seen[p] = true
		hit(p)
	}
	if err := sc.Err(); err != nil {
		return readErr(name, err)
	}
	return nil
}

func mapsPath(line []byte) string {
	rest := line
	for i := 0; i < 5; i++ {
		rest = bytes.TrimLeft(rest, " ")
		j := bytes.IndexByte(rest, ' ')
		if j < 0 {
			return ""
		}
		rest = rest[j:]
	}
	rest = bytes.TrimLeft(rest, " ")
	if len(rest) == 0 || rest[0] != '/' {
		return ""
	}
	return string(rest)
}
