//go:build linux

// Package bench races pkcstok-migrate against the real upstream pkcstok_migrate (the Debian 13
// package's, run in the cached root of the real-openCryptoki suites) on fresh copies of the
// same repositories, and counts what does not depend on how loaded the machine is: system
// calls and bytes read per object. `make bench` runs it and writes bench/RESULTS.md; it is not
// part of `make test` (it asserts nothing about time).
package bench

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ocktools/pkcstok-migrate/e2e/ockroot"
	"github.com/ocktools/pkcstok-migrate/tokens"
	"github.com/ocktools/pkcstok-migrate/tokens/tokentest"
)

const (
	soPIN   = "sopin123" // test data only
	userPIN = "user1234"
	slot    = 3
)

// run is one timed run of one tool.
type run struct {
	wall, user, sys time.Duration
	maxRSS          int64 // KiB
}

// bench holds the state of one `make bench` session.
type bench struct {
	dir     string // bench work directory on the host (data, runs)
	ours    string // our binary
	root    *ockroot.Root
	inRoot  string // where dir is bind-mounted inside the root
	results map[string]*sizeResult
	order   []int
}

type sizeResult struct {
	n                  int
	ours, upstream     []run
	plan               []run
	oursSys, upSys     sysCount
	oursRead, upRead   int64
	oursExit, upExit   int
	upstreamStdoutTail string
}

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func sizes(b *testing.B) []int {
	var out []int
	for _, f := range strings.Split(env("BENCH_SIZES", "1000,10000,100000"), ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 0 {
			b.Fatalf("BENCH_SIZES: bad size %q", f)
		}
		out = append(out, n)
	}
	return out
}

// BenchmarkSideBySide: for each size, b.N rounds; each round migrates one fresh copy with
// ours and one with upstream's, in alternating order. Run with -benchtime=3x (make bench).
func BenchmarkSideBySide(b *testing.B) {
	bs := setup(b)
	for _, n := range sizes(b) {
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) {
			data := bs.data(b, n)
			// go test runs a sub-benchmark once with b.N = 1 before the -benchtime runs: the
			// last run of a size is the one reported.
			res := &sizeResult{n: n}
			if _, seen := bs.results[fmt.Sprint(n)]; !seen {
				bs.order = append(bs.order, n)
			}
			bs.results[fmt.Sprint(n)] = res
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				first, second := bs.runOurs, bs.runUpstream
				if i%2 == 1 {
					first, second = second, first
				}
				first(b, data, res, i)
				second(b, data, res, i)
			}
			b.StopTimer()
			// The plan alone (ours), on a fresh copy.
			for i := 0; i < b.N; i++ {
				res.plan = append(res.plan, bs.runPlan(b, data, i))
			}
			// What does not drift: system calls and bytes read, once per tool.
			res.oursSys, res.oursRead = bs.countOurs(b, data)
			res.upSys, res.upRead = bs.countUpstream(b, data)
			o, u := median(res.ours), median(res.upstream)
			b.ReportMetric(o.wall.Seconds(), "ours-s")
			b.ReportMetric(u.wall.Seconds(), "upstream-s")
			b.ReportMetric(o.wall.Seconds()/u.wall.Seconds(), "ratio")
			b.ReportMetric(float64(o.maxRSS)/1024, "ours-peakRSS-MiB")
			if n > 0 {
				b.ReportMetric(float64(res.oursSys.fs+res.oursSys.other)/float64(n), "ours-syscalls/obj")
				b.ReportMetric(float64(res.upSys.fs+res.upSys.other)/float64(n), "upstream-syscalls/obj")
			}
		})
	}
	if err := bs.writeResults(); err != nil {
		b.Fatal(err)
	}
}

func setup(b *testing.B) *bench {
	if os.Geteuid() != 0 {
		b.Fatal("bench: must run as root (the tools chown to the token group)")
	}
	for _, p := range []string{"strace", "/usr/bin/time", "chroot"} {
		if _, err := exec.LookPath(p); err != nil {
			b.Fatalf("bench: %s missing (make setup)", p)
		}
	}
	if m := ockroot.Missing(ockroot.Trixie); m != "" {
		b.Fatalf("bench: %s", m)
	}
	dir, err := filepath.Abs(env("BENCH_DIR", "../.cache/bench"))
	if err != nil {
		b.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "runs"), 0o755); err != nil {
		b.Fatal(err)
	}
	bs := &bench{dir: dir, results: map[string]*sizeResult{}}
	bs.ours = filepath.Join(dir, "pkcstok-migrate")
	if out, err := exec.Command("go", "build", "-o", bs.ours, "../cmd/pkcstok-migrate").CombinedOutput(); err != nil {
		b.Fatalf("build: %v\n%s", err, out)
	}
	r, err := ockroot.Open(ockroot.Trixie)
	if err != nil {
		b.Fatal(err)
	}
	bs.root = r
	bs.inRoot = "/bench"
	mp := r.Path(bs.inRoot)
	if err := os.MkdirAll(mp, 0o755); err != nil {
		b.Fatal(err)
	}
	if err := unix.Mount(dir, mp, "", unix.MS_BIND, ""); err != nil {
		b.Fatalf("bind %s into the root: %v", dir, err)
	}
	b.Cleanup(func() {
		_ = unix.Unmount(mp, unix.MNT_DETACH)
		r.Close()
		// Deleted only now: on ext4 without a journal, freeing many inodes makes file creation
		// slow for minutes after, which would skew the runs that follow a delete.
		if os.Getenv("BENCH_KEEP") == "" {
			os.RemoveAll(filepath.Join(dir, "runs"))
		}
	})
	return bs
}

// data returns the old-format repository with n objects (made once, kept in BENCH_DIR/data).
func (bs *bench) data(b *testing.B, n int) string {
	d := filepath.Join(bs.dir, "data", fmt.Sprintf("n%d", n))
	if _, err := os.Stat(filepath.Join(d, "swtok", "NVTOK.DAT")); err == nil {
		return d
	}
	os.RemoveAll(d)
	if _, err := tokentest.WriteOldWithConf(d, slot, tokentest.Options{Type: tokens.TypeSoft, SOPIN: soPIN, UserPIN: userPIN, N: n, Seed: 7, NameStyle: tokentest.NameMkstemp}); err != nil {
		b.Fatal(err)
	}
	// Group pkcs11 as a real token has it (both tools want it).
	if out, err := exec.Command("chgrp", "-R", "pkcs11", filepath.Join(d, "swtok")).CombinedOutput(); err != nil {
		b.Fatalf("chgrp: %v %s", err, out)
	}
	return d
}

// fresh copies data to a new run directory and returns it.
func (bs *bench) fresh(b *testing.B, data, tag string) string {
	dst := filepath.Join(bs.dir, "runs", fmt.Sprintf("%s-%s-%d", filepath.Base(data), tag, time.Now().UnixNano()))
	if out, err := exec.Command("cp", "-a", data, dst).CombinedOutput(); err != nil {
		b.Fatalf("copy: %v %s", err, out)
	}
	syscall.Sync()
	return dst
}

func request(d string) []byte {
	return fmt.Appendf(nil, `{"slot":%d,"datastore":%q,"confdir":%q,"so_pin":%q,"user_pin":%q}`, slot, d+"/swtok", d+"/conf", soPIN, userPIN)
}

// timed runs argv with stdin under /usr/bin/time and returns its wall time and its resource
// usage, and its output. The peak RSS comes from GNU time, which forks the tool from its own
// small address space: a direct child of this (large) test process would count this process's
// RSS as its own (Linux keeps the pre-exec peak of a vfork'ed child in ru_maxrss).
func timed(b *testing.B, argv []string, stdin io.Reader, env []string, okExit func(int) bool, what string) (run, []byte) {
	f, err := os.CreateTemp("", "bench-time-*")
	if err != nil {
		b.Fatal(err)
	}
	f.Close()
	defer os.Remove(f.Name())
	cmd := exec.Command("/usr/bin/time", append([]string{"-f", "%M", "-o", f.Name()}, argv...)...)
	cmd.Stdin, cmd.Env = stdin, env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	b.StartTimer()
	start := time.Now()
	err = cmd.Run()
	wall := time.Since(start)
	b.StopTimer()
	if err != nil && (okExit == nil || !okExit(cmd.ProcessState.ExitCode())) {
		b.Fatalf("%s: %v\n%s", what, err, tail(out.Bytes()))
	}
	ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	r := run{wall: wall, user: time.Duration(ru.Utime.Nano()), sys: time.Duration(ru.Stime.Nano())}
	if t, err := os.ReadFile(f.Name()); err == nil {
		fields := strings.Fields(string(t))
		if len(fields) > 0 {
			r.maxRSS, _ = strconv.ParseInt(fields[len(fields)-1], 10, 64)
		}
	}
	return r, out.Bytes()
}

func tail(b []byte) string {
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

func (bs *bench) runOurs(b *testing.B, data string, res *sizeResult, i int) {
	d := bs.fresh(b, data, "ours")
	r, _ := timed(b, []string{bs.ours, "apply", "--request", "-"}, bytes.NewReader(request(d)), os.Environ(), nil, "ours")
	res.ours = append(res.ours, r)
}

func (bs *bench) runPlan(b *testing.B, data string, i int) run {
	d := bs.fresh(b, data, "plan")
	r, _ := timed(b, []string{bs.ours, "plan", "--request", "-"}, bytes.NewReader(request(d)), os.Environ(), func(code int) bool { return code == 2 }, "plan") // 2: changes to make
	return r
}

// upstreamArgv is upstream's pkcstok_migrate chrooted in the trixie root on d (a directory
// below bs.dir); it answers y and both PINs on stdin (upstreamStdin).
func (bs *bench) upstreamArgv(d string) []string {
	in := filepath.Join(bs.inRoot, strings.TrimPrefix(d, bs.dir))
	return []string{"chroot", bs.root.Dir, "/usr/sbin/pkcstok_migrate", "-s", strconv.Itoa(slot), "-d", in + "/swtok", "-c", in + "/conf"}
}

func upstreamStdin() io.Reader { return strings.NewReader("y\n" + soPIN + "\n" + userPIN + "\n") }

// rootEnv is the fixed environment commands get in the root (as ockroot gives them).
var rootEnv = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "LANG=C.UTF-8"}

func (bs *bench) runUpstream(b *testing.B, data string, res *sizeResult, i int) {
	d := bs.fresh(b, data, "upstream")
	r, out := timed(b, bs.upstreamArgv(d), upstreamStdin(), rootEnv, nil, "upstream pkcstok_migrate")
	if !bytes.Contains(out, []byte("pkcstok_migrate finished successfully")) {
		b.Fatalf("upstream did not finish successfully:\n%s", tail(out))
	}
	res.upstream = append(res.upstream, r)
}

// sysCount is a strace -c summary split into file-system calls and the rest; runtime are the
// Go runtime's own (scheduler, memory, signals), counted apart.
type sysCount struct {
	fs, other, runtime int
	byName             map[string]int
}

var runtimeCalls = map[string]bool{
	"futex": true, "nanosleep": true, "epoll_pwait": true, "epoll_ctl": true, "epoll_create1": true,
	"sched_yield": true, "rt_sigaction": true, "rt_sigprocmask": true, "rt_sigreturn": true,
	"sigaltstack": true, "tgkill": true, "getpid": true, "gettid": true, "mmap": true, "munmap": true,
	"madvise": true, "mprotect": true, "clone": true, "clone3": true, "set_robust_list": true,
	"sched_getaffinity": true, "arch_prctl": true, "prlimit64": true, "rseq": true, "eventfd2": true,
	"pipe2": true, "fcntl": true, "exit_group": true, "exit": true, "brk": true, "set_tid_address": true,
}

var fsCalls = map[string]bool{
	"openat": true, "open": true, "close": true, "read": true, "pread64": true, "write": true,
	"pwrite64": true, "fstat": true, "newfstatat": true, "statx": true, "lstat": true, "stat": true,
	"fchown": true, "fchmod": true, "fchownat": true, "fchmodat": true, "chown": true, "chmod": true,
	"lseek": true, "getdents64": true, "mkdir": true, "mkdirat": true, "rename": true, "renameat": true,
	"renameat2": true, "unlink": true, "unlinkat": true, "rmdir": true, "link": true, "linkat": true,
	"fsync": true, "fdatasync": true, "syncfs": true, "ftruncate": true, "flock": true, "ioctl": true,
	"readlinkat": true, "access": true, "faccessat2": true,
}

var straceLine = regexp.MustCompile(`^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)\s*$`)

func parseStraceC(path string) (sysCount, error) {
	f, err := os.Open(path)
	if err != nil {
		return sysCount{}, err
	}
	defer f.Close()
	c := sysCount{byName: map[string]int{}}
	s := bufio.NewScanner(f)
	for s.Scan() {
		m := straceLine.FindStringSubmatch(s.Text())
		if m == nil || m[2] == "total" {
			continue
		}
		n, _ := strconv.Atoi(m[1])
		c.byName[m[2]] += n
		switch {
		case runtimeCalls[m[2]]:
			c.runtime += n
		case fsCalls[m[2]]:
			c.fs += n
		default:
			c.other += n
		}
	}
	return c, s.Err()
}

// bytesRead sums what read, pread64 and getdents64 returned in an strace -e trace file.
func bytesRead(path string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	ret := regexp.MustCompile(`(?m)\b(?:read|pread64|getdents64)\(.*\)\s+=\s+(\d+)`)
	var sum int64
	for _, m := range ret.FindAllSubmatch(b, -1) {
		n, _ := strconv.ParseInt(string(m[1]), 10, 64)
		sum += n
	}
	return sum, nil
}

func (bs *bench) countOurs(b *testing.B, data string) (sysCount, int64) {
	d := bs.fresh(b, data, "ours-strace")
	sumFile := filepath.Join(bs.dir, "runs", filepath.Base(d)+".strace-c")
	cmd := exec.Command("strace", "-f", "-c", "-o", sumFile, bs.ours, "apply", "--request", "-")
	cmd.Stdin = bytes.NewReader(request(d))
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("strace ours: %v\n%s", err, tail(out))
	}
	c, err := parseStraceC(sumFile)
	if err != nil {
		b.Fatal(err)
	}
	d = bs.fresh(b, data, "ours-read")
	trFile := filepath.Join(bs.dir, "runs", filepath.Base(d)+".strace-read")
	cmd = exec.Command("strace", "-f", "-qq", "-s", "0", "-e", "trace=read,pread64,getdents64", "-o", trFile, bs.ours, "apply", "--request", "-")
	cmd.Stdin = bytes.NewReader(request(d))
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("strace ours: %v\n%s", err, tail(out))
	}
	n, err := bytesRead(trFile)
	if err != nil {
		b.Fatal(err)
	}
	return c, n
}

func (bs *bench) countUpstream(b *testing.B, data string) (sysCount, int64) {
	// strace runs on the host, tracing the chrooted upstream (it follows the exec).
	d := bs.fresh(b, data, "up-strace")
	sumFile := filepath.Join(bs.dir, "runs", filepath.Base(d)+".strace-c")
	cmd := exec.Command("strace", append([]string{"-f", "-c", "-o", sumFile}, bs.upstreamArgv(d)...)...)
	cmd.Stdin, cmd.Env = upstreamStdin(), rootEnv
	if out, err := cmd.CombinedOutput(); err != nil || !bytes.Contains(out, []byte("finished successfully")) {
		b.Fatalf("strace upstream: %v\n%s", err, tail(out))
	}
	c, err := parseStraceC(sumFile)
	if err != nil {
		b.Fatal(err)
	}
	d = bs.fresh(b, data, "up-read")
	trFile := filepath.Join(bs.dir, "runs", filepath.Base(d)+".strace-read")
	cmd = exec.Command("strace", append([]string{"-f", "-qq", "-s", "0", "-e", "trace=read,pread64,getdents64", "-o", trFile}, bs.upstreamArgv(d)...)...)
	cmd.Stdin, cmd.Env = upstreamStdin(), rootEnv
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("strace upstream: %v\n%s", err, tail(out))
	}
	n, err := bytesRead(trFile)
	if err != nil {
		b.Fatal(err)
	}
	return c, n
}

func median(rs []run) run {
	if len(rs) == 0 {
		return run{}
	}
	s := append([]run(nil), rs...)
	sort.Slice(s, func(i, j int) bool { return s[i].wall < s[j].wall })
	return s[(len(s)-1)/2]
}

func (bs *bench) writeResults() error {
	path := env("BENCH_RESULTS", "")
	if path == "" {
		return nil
	}
	var w bytes.Buffer
	host, _ := os.Hostname()
	_ = host
	cpu := "?"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		if m := regexp.MustCompile(`(?m)^model name\s*:\s*(.*)$`).FindSubmatch(b); m != nil {
			cpu = string(m[1])
		}
	}
	var uts unix.Utsname
	_ = unix.Uname(&uts)
	load, _ := os.ReadFile("/proc/loadavg")
	fmt.Fprintf(&w, "# pkcstok-migrate benchmark results\n\n")
	fmt.Fprintf(&w, "Written by `make bench` (bench/sidebyside_test.go, `go test -bench SideBySide`) on %s UTC. Not run in CI; no test asserts a time.\n\n", time.Now().UTC().Format("2006-01-02 15:04"))
	fmt.Fprintf(&w, "## Machine and the upstream raced\n\n")
	fmt.Fprintf(&w, "- CPU: %s, %d cores; kernel %s; %s, CGO_ENABLED=0\n", cpu, runtime.NumCPU(), unix.ByteSliceToString(uts.Release[:]), runtime.Version())
	fmt.Fprintf(&w, "- upstream: `/usr/sbin/pkcstok_migrate` of Debian 13's opencryptoki %s (amd64), chrooted in the cached root of the real-openCryptoki suites; the repositories are bind-mounted, so both tools work on the same file system (%s)\n", bs.root.Version(), fsType(bs.dir))
	fmt.Fprintf(&w, "- load average at the end: %s", load)
	fmt.Fprintf(&w, "- protocol: per size, %d rounds; each round migrates one fresh `cp -a` copy with each tool, the order alternating; nothing is deleted until the end. Times are medians. PBKDF2-SHA512 (4 derivations of 100,000 iterations) is part of every run of ours; upstream derives them too.\n\n", len(bs.results[fmt.Sprint(bs.order[0])].ours))
	fmt.Fprintf(&w, "## Side by side: apply (ours) and pkcstok_migrate (upstream)\n\n")
	fmt.Fprintf(&w, "| objects | ours s | upstream s | ratio | ours user / sys s | upstream user / sys s | ours sys ms/obj | upstream sys ms/obj | ours peak RSS MiB | ours plan s |\n")
	fmt.Fprintf(&w, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, n := range bs.order {
		r := bs.results[fmt.Sprint(n)]
		o, u, p := median(r.ours), median(r.upstream), median(r.plan)
		per := func(d time.Duration) string {
			if n == 0 {
				return "–"
			}
			return fmt.Sprintf("%.4f", d.Seconds()*1000/float64(n))
		}
		fmt.Fprintf(&w, "| %d | %.2f | %.2f | %.2f | %.2f / %.2f | %.2f / %.2f | %s | %s | %.1f | %.2f |\n", n, o.wall.Seconds(), u.wall.Seconds(), o.wall.Seconds()/u.wall.Seconds(),
			o.user.Seconds(), o.sys.Seconds(), u.user.Seconds(), u.sys.Seconds(), per(o.sys), per(u.sys), float64(o.maxRSS)/1024, p.wall.Seconds())
	}
	fmt.Fprintf(&w, "\nEvery run (wall s, user s, sys s, peak RSS MiB):\n\n```\n")
	for _, n := range bs.order {
		r := bs.results[fmt.Sprint(n)]
		for i := range r.ours {
			fmt.Fprintf(&w, "n=%d round %d  ours %.2f %.2f %.2f %.1f   upstream %.2f %.2f %.2f %.1f\n", n, i+1,
				r.ours[i].wall.Seconds(), r.ours[i].user.Seconds(), r.ours[i].sys.Seconds(), float64(r.ours[i].maxRSS)/1024,
				r.upstream[i].wall.Seconds(), r.upstream[i].user.Seconds(), r.upstream[i].sys.Seconds(), float64(r.upstream[i].maxRSS)/1024)
		}
		for i, p := range r.plan {
			fmt.Fprintf(&w, "n=%d plan %d  ours %.2f %.2f %.2f %.1f\n", n, i+1, p.wall.Seconds(), p.user.Seconds(), p.sys.Seconds(), float64(p.maxRSS)/1024)
		}
	}
	fmt.Fprintf(&w, "```\n\n## What does not drift: system calls and bytes read per object\n\n")
	fmt.Fprintf(&w, "From `strace -f -c` (counts) and `strace -f -e trace=read,pread64,getdents64` (bytes returned) of one more run of each. \"runtime\" are the Go runtime's own calls (scheduler, memory, signals: futex, nanosleep, epoll, mmap, ...), which upstream (C) does not have.\n\n")
	fmt.Fprintf(&w, "| objects | ours file-system calls/obj | ours other/obj | ours runtime/obj | upstream file-system calls/obj | upstream other/obj | ours bytes read/obj | upstream bytes read/obj |\n|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, n := range bs.order {
		r := bs.results[fmt.Sprint(n)]
		if n == 0 {
			continue
		}
		f := float64(n)
		fmt.Fprintf(&w, "| %d | %.1f | %.2f | %.1f | %.1f | %.2f | %.0f | %.0f |\n", n, float64(r.oursSys.fs)/f, float64(r.oursSys.other)/f, float64(r.oursSys.runtime)/f,
			float64(r.upSys.fs)/f, float64(r.upSys.other+r.upSys.runtime)/f, float64(r.oursRead)/f, float64(r.upRead)/f)
	}
	for _, n := range bs.order {
		r := bs.results[fmt.Sprint(n)]
		fmt.Fprintf(&w, "\nCalls per object at %d objects, by name (ours | upstream):\n\n```\n", n)
		names := map[string]bool{}
		for k := range r.oursSys.byName {
			names[k] = true
		}
		for k := range r.upSys.byName {
			names[k] = true
		}
		var ks []string
		for k := range names {
			ks = append(ks, k)
		}
		sort.Slice(ks, func(i, j int) bool {
			return r.oursSys.byName[ks[i]]+r.upSys.byName[ks[i]] > r.oursSys.byName[ks[j]]+r.upSys.byName[ks[j]]
		})
		for _, k := range ks {
			fmt.Fprintf(&w, "%-18s %8.2f | %8.2f\n", k, float64(r.oursSys.byName[k])/float64(max(n, 1)), float64(r.upSys.byName[k])/float64(max(n, 1)))
		}
		fmt.Fprintf(&w, "```\n")
	}
	if notes, err := os.ReadFile("NOTES.md"); err == nil {
		fmt.Fprintf(&w, "\n%s", notes)
	}
	return os.WriteFile(path, w.Bytes(), 0o644)
}

func fsType(dir string) string {
	var st unix.Statfs_t
	if unix.Statfs(dir, &st) != nil {
		return "?"
	}
	switch st.Type {
	case unix.EXT4_SUPER_MAGIC:
		return "ext4"
	case unix.TMPFS_MAGIC:
		return "tmpfs"
	case unix.XFS_SUPER_MAGIC:
		return "xfs"
	}
	return fmt.Sprintf("0x%x", st.Type)
}
