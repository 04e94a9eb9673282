package procscan

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The test binary is also the child that holds files open: PKCSTOK_PROCSCAN_HOLD=mode names
// what it does with the file in its first argument (ro, rw: an open descriptor; mmap: a
// mapping, the descriptor closed; cwd: its working directory), then it says "ready" and waits
// for its stdin to close.
func TestMain(m *testing.M) {
	if mode := os.Getenv("PKCSTOK_PROCSCAN_HOLD"); mode != "" {
		os.Exit(holdChild(mode, os.Args[len(os.Args)-1]))
	}
	os.Exit(m.Run())
}

var keep []any // what the child must not let the collector close

func holdChild(mode, path string) int {
	switch mode {
	case "ro", "rw":
		flag := os.O_RDONLY
		if mode == "rw" {
			flag = os.O_RDWR
		}
		f, err := os.OpenFile(path, flag, 0)
		if err != nil {
			fmt.Println(err)
			return 1
		}
		keep = append(keep, f)
	case "mmap":
		f, err := os.Open(path)
		if err != nil {
			fmt.Println(err)
			return 1
		}
		b, err := unix.Mmap(int(f.Fd()), 0, 1, unix.PROT_READ, unix.MAP_SHARED)
		if err != nil {
			fmt.Println(err)
			return 1
		}
		f.Close() // only the mapping keeps the file
		keep = append(keep, b)
	case "cwd":
		if err := os.Chdir(path); err != nil {
			fmt.Println(err)
			return 1
		}
	}
	fmt.Println("ready")
	bufio.NewReader(os.Stdin).ReadString('\n') // until the parent closes it
	return 0
}

// hold starts a child that holds path as mode says, and returns its PID once it does.
func hold(t *testing.T, mode, path string) int {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$", path)
	cmd.Env = append(os.Environ(), "PKCSTOK_PROCSCAN_HOLD="+mode)
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		in.Close()
		cmd.Wait()
	})
	line, _ := bufio.NewReader(out).ReadString('\n')
	if line != "ready\n" {
		t.Fatalf("child %s %s: %q", mode, path, line)
	}
	return cmd.Process.Pid
}

// leaseRepo is a small repository: the top-level files and two objects.
func leaseRepo(t *testing.T) string {
	t.Helper()
	repo := filepath.Join(t.TempDir(), "repo")
	if err := os.MkdirAll(filepath.Join(repo, "TOK_OBJ"), 0o770); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"NVTOK.DAT", "MK_SO", "MK_USER", "TOK_OBJ/OBJ.IDX", "TOK_OBJ/OB000001", "TOK_OBJ/OB000002"} {
		if err := os.WriteFile(filepath.Join(repo, n), []byte("some bytes of "+n), 0o660); err != nil {
			t.Fatal(err)
		}
	}
	return repo
}

func needLeases(t *testing.T, dir string) {
	t.Helper()
	if _, err := busyFiles(dir); err != nil {
		var sfs unix.Statfs_t
		listed := unix.Statfs(dir, &sfs) == nil && leaseFileSystems[int64(sfs.Type)]
		if listed && os.Getenv("CI") == "true" && os.Geteuid() == 0 {
			t.Fatalf("write leases unavailable on %s: %v", dir, err)
		}
		t.Skipf("write leases unavailable on %s (%v): the scan answers there", dir, err)
	}
}

// A process holding a file of the repository read-only, read-write or only as a memory
// mapping is found by its refused lease and named by the scan; once it is gone, nothing is.
func TestOpenersLeaseFindsHolders(t *testing.T) {
	repo := leaseRepo(t)
	needLeases(t, repo)
	for _, mode := range []string{"ro", "rw", "mmap"} {
		t.Run(mode, func(t *testing.T) {
			obj := filepath.Join(repo, "TOK_OBJ", "OB000002")
			busy, err := busyFiles(repo)
			if err != nil || len(busy) != 0 {
				t.Fatalf("before: busy %v, %v", busy, err)
			}
			pid := hold(t, mode, obj)
			busy, err = busyFiles(repo)
			if err != nil || len(busy) != 1 || busy[0] != obj {
				t.Fatalf("busy %v, %v; want [%s]", busy, err, obj)
			}
			pids, err := Openers("/proc", repo)
			if err != nil && !errors.Is(err, ErrIncomplete) {
				t.Fatal(err)
			}
			if !contains(pids, pid) {
				t.Fatalf("holder %d (%s) not reported: %v", pid, mode, pids)
			}
		})
	}
	// Every child is gone (t.Run's cleanups ran): no lease is refused, nobody is reported.
	pids, err := Openers("/proc", repo)
	if err != nil || len(pids) != 0 {
		t.Fatalf("after the holders left: %v, %v", pids, err)
	}
}

// A file open under another name (a hard link outside the repository) cannot be named by the
// scan; the refused lease still fails the check closed.
func TestOpenersLeaseUnnamedFailsClosed(t *testing.T) {
	repo := leaseRepo(t)
	needLeases(t, repo)
	other := filepath.Join(filepath.Dir(repo), "elsewhere")
	if err := os.Link(filepath.Join(repo, "MK_SO"), other); err != nil {
		t.Skip("no hard links here:", err)
	}
	hold(t, "ro", other)
	pids, err := Openers("/proc", repo)
	if !errors.Is(err, ErrOpenUnnamed) || len(pids) != 0 {
		t.Fatalf("got %v, %v; want ErrOpenUnnamed", pids, err)
	}
	t.Logf("error: %v", err)
}

// The caller's own descriptors do not count as someone else's... but a lease cannot tell
// them apart: the check must then fail closed too, never report "not in use" wrongly. (apply
// holds only directories open when it checks.)
func TestOpenersLeaseOwnDescriptor(t *testing.T) {
	repo := leaseRepo(t)
	needLeases(t, repo)
	f, err := os.Open(filepath.Join(repo, "NVTOK.DAT"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := Openers("/proc", repo); !errors.Is(err, ErrOpenUnnamed) {
		t.Fatalf("own descriptor: %v, want ErrOpenUnnamed", err)
	}
}

// Where leases cannot answer (a file system without them, leases disabled), the scan does, and
// finds what it always found, a working directory inside included.
func TestOpenersLeaseFallsBackToScan(t *testing.T) {
	repo := leaseRepo(t)
	holder := hold(t, "ro", filepath.Join(repo, "MK_USER"))
	inCwd := hold(t, "cwd", filepath.Join(repo, "TOK_OBJ"))

	check := func(t *testing.T) {
		t.Helper()
		if _, err := busyFiles(repo); !errors.Is(err, errLeaseUnsupported) {
			t.Fatalf("busyFiles: %v, want errLeaseUnsupported", err)
		}
		pids, err := Openers("/proc", repo)
		if err != nil && !errors.Is(err, ErrIncomplete) {
			t.Fatal(err)
		}
		if !contains(pids, holder) || !contains(pids, inCwd) {
			t.Fatalf("scan fallback: %v, want %d and %d", pids, holder, inCwd)
		}
	}
	for _, errno := range []syscall.Errno{unix.EINVAL, unix.ENOLCK, unix.EOPNOTSUPP, unix.EACCES} {
		t.Run(errno.Error(), func(t *testing.T) {
			old := setLease
			setLease = func(int, int) error { return errno }
			defer func() { setLease = old }()
			check(t)
		})
	}
	t.Run("file system not listed", func(t *testing.T) {
		old := leaseFileSystems
		leaseFileSystems = map[int64]bool{}
		defer func() { leaseFileSystems = old }()
		check(t)
	})
	t.Run("leases-enable=0", func(t *testing.T) {
		sysctl := filepath.Join(t.TempDir(), "leases-enable")
		os.WriteFile(sysctl, []byte("0\n"), 0o644)
		old := leasesEnabledFile
		leasesEnabledFile = sysctl
		defer func() { leasesEnabledFile = old }()
		check(t)
	})
}

// The residual SECURITY.md names: with every file's lease granted, a process whose working
// directory is inside (and that holds no file) is not reported.
func TestOpenersLeaseResidualDirectories(t *testing.T) {
	repo := leaseRepo(t)
	needLeases(t, repo)
	pid := hold(t, "cwd", filepath.Join(repo, "TOK_OBJ"))
	pids, err := Openers("/proc", repo)
	if err != nil {
		t.Fatal(err)
	}
	if contains(pids, pid) {
		t.Fatalf("a working directory is found by leases? update SECURITY.md (%v)", pids)
	}
	list, _ := findOpeners("/proc", repo)
	found := false
	for _, o := range list {
		found = found || o.PID == pid
	}
	if !found {
		t.Fatalf("the scan does not find the working directory: %+v", list)
	}
}

// A symlink, a FIFO and a subdirectory in the repository do not stop the lease walk or hang it.
func TestOpenersLeaseOddEntries(t *testing.T) {
	repo := leaseRepo(t)
	needLeases(t, repo)
	os.Symlink("/etc/passwd", filepath.Join(repo, "link"))
	if err := unix.Mkfifo(filepath.Join(repo, "TOK_OBJ", "fifo"), 0o660); err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(repo, "a", "b"), 0o770)
	os.WriteFile(filepath.Join(repo, "a", "b", "deep"), []byte("x"), 0o660)
	busy, err := busyFiles(repo)
	if err != nil || len(busy) != 0 {
		t.Fatalf("busy %v, %v", busy, err)
	}
	pid := hold(t, "rw", filepath.Join(repo, "a", "b", "deep"))
	pids, err := Openers("/proc", repo)
	if (err != nil && !errors.Is(err, ErrIncomplete)) || !contains(pids, pid) {
		t.Fatalf("deep holder: %v, %v", pids, err)
	}
}

// A measurement, not a timed assert: it prints. With PKCSTOK_PROCSCAN_MEASURE=2000 it starts
// that many idle processes holding 5 open files each (outside the repository) and times the
// open-files check (Openers, by leases), the /proc scan (findOpeners) and SlotdRunning before
// and after. Run it in a fresh PID
// namespace so the host's processes do not count:
//
//	unshare --pid --fork --mount-proc env PKCSTOK_PROCSCAN_MEASURE=2000 go test -run Measure -v ./internal/procscan
func TestMeasureOpenersCost(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("PKCSTOK_PROCSCAN_MEASURE"))
	if n <= 0 {
		t.Skip("PKCSTOK_PROCSCAN_MEASURE=<processes> not set")
	}
	objects := 3
	if v, _ := strconv.Atoi(os.Getenv("PKCSTOK_PROCSCAN_OBJECTS")); v > 0 {
		objects = v
	}
	repo := filepath.Join(t.TempDir(), "repo")
	os.MkdirAll(filepath.Join(repo, "TOK_OBJ"), 0o770)
	for _, n := range []string{"NVTOK.DAT", "MK_SO", "MK_USER", "TOK_OBJ/OBJ.IDX"} {
		os.WriteFile(filepath.Join(repo, n), []byte(n), 0o660)
	}
	for i := 0; i < objects; i++ {
		os.WriteFile(filepath.Join(repo, "TOK_OBJ", fmt.Sprintf("OB%06d", i)), []byte("object"), 0o660)
	}
	var held []*os.File
	for i := 0; i < 5; i++ {
		f, err := os.Create(filepath.Join(t.TempDir(), fmt.Sprintf("held%d", i)))
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, f)
	}
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep")
	}
	// Wall and CPU time (user+system of this process), medians of 7: on a shared machine the
	// wall time includes waiting for a core, the CPU time much less so.
	type cost struct{ wall, cpu time.Duration }
	cpuNow := func() time.Duration {
		var ru unix.Rusage
		unix.Getrusage(unix.RUSAGE_SELF, &ru)
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	timeIt := func(f func()) cost {
		var ws, cs []time.Duration
		for i := 0; i < 7; i++ {
			c, s := cpuNow(), time.Now()
			f()
			ws, cs = append(ws, time.Since(s)), append(cs, cpuNow()-c)
		}
		sort.Slice(ws, func(i, j int) bool { return ws[i] < ws[j] })
		sort.Slice(cs, func(i, j int) bool { return cs[i] < cs[j] })
		return cost{ws[len(ws)/2], cs[len(cs)/2]}
	}
	measure := func(label string) {
		if os.Getenv("PKCSTOK_PROCSCAN_ONLY") != "" {
			return
		}
		procs, _ := listPIDs("/proc")
		lease := timeIt(func() {
			if pids, err := Openers("/proc", repo); err != nil || len(pids) != 0 {
				t.Fatalf("Openers: %v %v", pids, err)
			}
		})
		scan := timeIt(func() { findOpeners("/proc", repo) })
		slotd := timeIt(func() {
			if pids, err := SlotdRunning("/proc", nil); err != nil || len(pids) != 0 {
				t.Fatalf("SlotdRunning: %v %v", pids, err)
			}
		})
		t.Logf("| %s | %d | %d | %.2f / %.2f | %.2f / %.2f | %.2f / %.2f |", label, len(procs), objects+4,
			ms(lease.wall), ms(lease.cpu), ms(scan.wall), ms(scan.cpu), ms(slotd.wall), ms(slotd.cpu))
	}
	t.Logf("| processes | in /proc | files | Openers (leases) ms wall / CPU | findOpeners (scan) ms wall / CPU | SlotdRunning ms wall / CPU |")
	measure("alone")
	var cmds []*exec.Cmd
	defer func() {
		for _, c := range cmds {
			c.Process.Kill()
		}
		for _, c := range cmds {
			c.Wait()
		}
	}()
	for i := 0; i < n; i++ {
		c := exec.Command(sleep, "3600")
		c.ExtraFiles = held
		if err := c.Start(); err != nil {
			t.Fatalf("process %d: %v", i, err)
		}
		cmds = append(cmds, c)
	}
	time.Sleep(time.Second) // every exec done
	if only := os.Getenv("PKCSTOK_PROCSCAN_ONLY"); only != "" {
		// For strace -c -f: 10 runs of one check ("none": the baseline of the spawning).
		for i := 0; i < 10; i++ {
			switch only {
			case "openers":
				Openers("/proc", repo)
			case "scan":
				findOpeners("/proc", repo)
			case "slotd":
				SlotdRunning("/proc", nil)
			}
		}
		return
	}
	measure(fmt.Sprintf("+%d idle, 5 files each", n))
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// PKCSTOK_LEASE_DIR=<a repository made beforehand> runs the holders against it: for a
// repository in an overlay's lower layer, which a test cannot create through the overlay.
func TestOpenersLeaseOnGivenRepository(t *testing.T) {
	repo := os.Getenv("PKCSTOK_LEASE_DIR")
	if repo == "" {
		t.Skip("PKCSTOK_LEASE_DIR not set")
	}
	_, lerr := busyFiles(repo)
	if lerr != nil {
		t.Logf("leases cannot tell on %s (%v): the scan must find every holder", repo, lerr)
	}
	for _, mode := range []string{"ro", "mmap", "rw"} {
		t.Run(mode, func(t *testing.T) {
			obj := filepath.Join(repo, "MK_SO")
			pid := hold(t, mode, obj)
			if busy, err := busyFiles(repo); lerr == nil && (err != nil || len(busy) != 1) {
				t.Fatalf("busy %v, %v", busy, err)
			}
			pids, err := Openers("/proc", repo)
			if (err != nil && !errors.Is(err, ErrIncomplete)) || !contains(pids, pid) {
				t.Fatalf("holder %d: %v %v", pid, pids, err)
			}
		})
	}
	if busy, err := busyFiles(repo); lerr == nil && (err != nil || len(busy) != 0) {
		t.Fatalf("after: %v %v", busy, err)
	}
}

// The lease walk counts a directory's names as it reads them before it leases any file of it,
// then leases them a batch at a time: a directory over leaseMaxEntries is left (the scan
// answers) after that many names were read, none of its files leased, its listing never held;
// within the bound every file is leased once.
func TestLeaseWalkBoundedWhileListing(t *testing.T) {
	defer func(b int) { leaseMaxEntries = b }(leaseMaxEntries)
	leaseMaxEntries = 1500
	repo := t.TempDir()
	objs := filepath.Join(repo, "TOK_OBJ")
	if err := os.Mkdir(objs, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(repo, "NVTOK.DAT"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	const n = 3000 // about three batches
	for i := 0; i < n; i++ {
		if err := os.WriteFile(filepath.Join(objs, fmt.Sprintf("E%07d", i)), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var leases atomic.Int64 // leaseFiles leases on several cores
	defer func(f func(int, int) error) { setLease = f }(setLease)
	setLease = func(fd, typ int) error { leases.Add(1); return nil }
	busy, err := busyFiles(repo)
	if !errors.Is(err, errLeaseUnsupported) || busy != nil {
		t.Fatalf("busyFiles: %v, %v; want errLeaseUnsupported (the bound)", busy, err)
	}
	if n := leases.Load(); n > 1 {
		t.Errorf("%d files were leased (only NVTOK.DAT is outside the directory over the bound)", n)
	}
	leaseMaxEntries = n + 2
	leases.Store(0)
	if busy, err := busyFiles(repo); err != nil || len(busy) != 0 || leases.Load() != n+1 {
		t.Errorf("busyFiles within the bound: %v, %v after %d leases, want none busy after %d", busy, err, leases.Load(), n+1)
	}
}
