//go:build linux

// Package bench races pkcstok-migrate against the real upstream pkcstok_migrate (Debian
// testing's opencryptoki 3.27, run chrooted in the cached root of the real-openCryptoki suites)
// and against `cp -a` of the same repository (the floor: each file read and created once), on
// the host file system and on a loop-mounted XFS, and counts what does not depend
// on how loaded the machine is: system calls, bytes read and bytes written per object, and
// the time each kind of system call took on each file system. `make bench` runs it and writes
// bench/RESULTS.md; it is not part of `make test` (it asserts nothing about time).
//
// Protocol: every fresh copy of every run (all sizes, file systems, rounds, tools, strace
// runs) is made before the first timed run; then, per size, round after round, each file
// system in turn runs ours, upstream and cp -a in an order that rotates with the round; a
// sync (untimed) before each run; nothing is deleted until the end.
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
	wall, user, sys     time.Duration
	maxRSS              int64         // KiB
	inBlocks, outBlocks int64         // ru_inblock, ru_oublock: 512-byte blocks the block layer read and wrote for it
	left                time.Duration // the sync(2) right after the run: what it left to write back
}

// The three contenders.
const (
	toolOurs     = "ours"
	toolUpstream = "upstream"
	toolCp       = "cp -a"
)

var tools = []string{toolOurs, toolUpstream, toolCp}

// fsys is one file system the race runs on.
type fsys struct {
	name   string // "ext4 (host)", "xfs (loop)"
	dir    string // bench work directory on it (data, runs)
	inRoot string // where dir is bind-mounted inside the upstream root
	kind   string // fsType(dir)
	mount  string // the loop mount to undo at the end, "" for the host
}

// bench holds the state of one `make bench` session.
type bench struct {
	ours    string // our binary
	root    *ockroot.Root
	parts   []string // BENCH_PARTS: "single" (one slot), "host" (four slots)
	fss     []*fsys
	sizes   []int
	rounds  int
	results map[string]*sizeResult // key: fs name + "/" + size
	host    *hostBench
}

// part reports whether BENCH_PARTS (default: both) asks for the part name.
func (bs *bench) part(name string) bool {
	for _, p := range bs.parts {
		if p == name {
			return true
		}
	}
	return false
}

// sizeResult is what one file system and one size gave.
type sizeResult struct {
	fs    *fsys
	n     int
	runs  map[string][]run
	plan  []run
	count map[string]*counted // strace figures per tool
}

// counted is what the strace runs of one tool gave.
type counted struct {
	sys           sysCount
	read, written int64
}

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func key(fs *fsys, n int) string { return fs.name + "/" + strconv.Itoa(n) }

// BenchmarkSideBySide runs the whole protocol once (BENCH_ROUNDS rounds, default 3), whatever
// b.N is: go test calls a benchmark with b.N = 1 first, and the protocol is not a loop body.
func BenchmarkSideBySide(b *testing.B) {
	if done {
		return
	}
	done = true
	bs := setup(b)
	bs.prepare(b)
	if bs.part("host") {
		bs.host.prepare(b, bs)
	}
	for _, n := range bs.sizes {
		for r := 0; r < bs.rounds; r++ {
			for _, fs := range bs.fss {
				res := bs.results[key(fs, n)]
				for k := 0; k < len(tools); k++ {
					tool := tools[(k+r)%len(tools)]
					res.runs[tool] = append(res.runs[tool], bs.runTool(b, tool, fs, n, r))
				}
			}
		}
	}
	for _, n := range bs.sizes {
		for _, fs := range bs.fss {
			res := bs.results[key(fs, n)]
			for r := 0; r < bs.rounds; r++ {
				res.plan = append(res.plan, bs.runPlan(b, fs, n))
			}
			for _, tool := range tools {
				res.count[tool] = bs.countTool(b, tool, fs, n)
			}
			o, u, c := median(res.runs[toolOurs]), median(res.runs[toolUpstream]), median(res.runs[toolCp])
			b.Logf("%s n=%d: ours %.3f s, upstream %.3f s (%.2fx), cp -a %.3f s", fs.name, n, o.wall.Seconds(), u.wall.Seconds(), o.wall.Seconds()/u.wall.Seconds(), c.wall.Seconds())
		}
	}
	if bs.part("host") {
		bs.host.race(b, bs)
	}
	if err := bs.writeResults(); err != nil {
		b.Fatal(err)
	}
}

var done bool

func setup(b *testing.B) *bench {
	if os.Geteuid() != 0 {
		b.Fatal("bench: must run as root (the tools chown to the token group; mount)")
	}
	for _, p := range []string{"strace", "/usr/bin/time", "chroot", "cp"} {
		if _, err := exec.LookPath(p); err != nil {
			b.Fatalf("bench: %s missing (make setup)", p)
		}
	}
	if m := ockroot.Missing(ockroot.Testing); m != "" {
		b.Fatalf("bench: %s", m)
	}
	bs := &bench{results: map[string]*sizeResult{}, parts: strings.Fields(env("BENCH_PARTS", "single host"))}
	for _, p := range bs.parts {
		if p != "single" && p != "host" {
			b.Fatalf("BENCH_PARTS: %q (single, host)", p)
		}
	}
	for _, f := range strings.Split(env("BENCH_SIZES", "1000,10000"), ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			b.Fatalf("BENCH_SIZES: bad size %q", f)
		}
		bs.sizes = append(bs.sizes, n)
	}
	rounds, err := strconv.Atoi(env("BENCH_ROUNDS", "3"))
	if err != nil || rounds < 1 {
		b.Fatalf("BENCH_ROUNDS: %q", os.Getenv("BENCH_ROUNDS"))
	}
	bs.rounds = rounds
	base, err := filepath.Abs(env("BENCH_DIR", "../.cache/bench"))
	if err != nil {
		b.Fatal(err)
	}
	if err := os.MkdirAll(base, 0o755); err != nil {
		b.Fatal(err)
	}
	bs.ours = filepath.Join(base, "pkcstok-migrate")
	if out, err := exec.Command("go", "build", "-o", bs.ours, "../cmd/pkcstok-migrate").CombinedOutput(); err != nil {
		b.Fatalf("build: %v\n%s", err, out)
	}
	r, err := ockroot.Open(ockroot.Testing)
	if err != nil {
		b.Fatal(err)
	}
	bs.root = r
	b.Cleanup(bs.cleanup)
	fsNames := strings.Fields(env("BENCH_FS", "host xfs"))
	if !bs.part("single") {
		fsNames = nil
	}
	for _, name := range fsNames {
		fs := &fsys{}
		switch name {
		case "host":
			fs.dir = filepath.Join(base, "host")
		case "xfs":
			fs.dir = bs.loopXFS(b, base)
			fs.mount = fs.dir
		default:
			b.Fatalf("BENCH_FS: %q (host, xfs)", name)
		}
		if err := os.MkdirAll(filepath.Join(fs.dir, "runs"), 0o755); err != nil {
			b.Fatal(err)
		}
		fs.kind = fsType(fs.dir)
		fs.name = fs.kind
		if name == "xfs" {
			fs.name = "xfs (loop)"
		} else {
			fs.name = fs.kind + " (host)"
		}
		fs.inRoot = "/bench-" + name
		bs.bindIntoRoot(b, fs.dir, fs.inRoot)
		bs.fss = append(bs.fss, fs)
	}
	if bs.part("host") {
		bs.host = newHostBench(b, bs, base)
	}
	return bs
}

// bindIntoRoot bind-mounts dir at inRoot inside the upstream root, until the end.
func (bs *bench) bindIntoRoot(b *testing.B, dir, inRoot string) {
	mp := bs.root.Path(inRoot)
	if err := os.MkdirAll(mp, 0o755); err != nil {
		b.Fatal(err)
	}
	if err := unix.Mount(dir, mp, "", unix.MS_BIND, ""); err != nil {
		b.Fatalf("bind %s into the root: %v", dir, err)
	}
	b.Cleanup(func() { _ = unix.Unmount(mp, unix.MNT_DETACH) })
}

// loopXFS makes a new XFS on a sparse image (BENCH_XFS_SIZE, default 8G) and mounts it.
func (bs *bench) loopXFS(b *testing.B, base string) string {
	img, mp := filepath.Join(base, "xfs.img"), filepath.Join(base, "xfs")
	_ = unix.Unmount(mp, unix.MNT_DETACH) // a run stopped before its cleanup
	os.Remove(img)
	if err := os.MkdirAll(mp, 0o755); err != nil {
		b.Fatal(err)
	}
	for _, argv := range [][]string{
		{"truncate", "-s", env("BENCH_XFS_SIZE", "8G"), img},
		{"mkfs.xfs", "-q", "-f", img},
		{"mount", "-o", "loop", img, mp},
	} {
		if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
			b.Fatalf("%v: %v\n%s (xfsprogs: make setup)", argv, err, out)
		}
	}
	return mp
}

func (bs *bench) cleanup() {
	if bs.root != nil {
		bs.root.Close()
	}
	for _, fs := range bs.fss {
		// Deleted only now: on ext4 without a journal, freeing many inodes makes file
		// creation slow for minutes after, which would skew the runs that follow a delete.
		if os.Getenv("BENCH_KEEP") == "" {
			os.RemoveAll(filepath.Join(fs.dir, "runs"))
		}
		if fs.mount != "" && os.Getenv("BENCH_KEEP") == "" {
			_ = unix.Unmount(fs.mount, unix.MNT_DETACH)
			os.Remove(filepath.Join(filepath.Dir(fs.mount), "xfs.img"))
		}
	}
	if bs.host != nil && os.Getenv("BENCH_KEEP") == "" {
		os.RemoveAll(filepath.Join(bs.host.dir, "runs"))
	}
}

// data is the old-format repository with n objects on fs (made once per file system).
func (bs *bench) data(b *testing.B, fs *fsys, n int) string {
	d := filepath.Join(fs.dir, "data", fmt.Sprintf("n%d", n))
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

// copies are the fresh copies made before the first timed run, taken in order.
var copies = map[string][]string{}

func copyKey(fs *fsys, n int, tag string) string { return key(fs, n) + "/" + tag }

// prepare makes the data and every fresh copy of the session, then syncs.
func (bs *bench) prepare(b *testing.B) {
	for _, fs := range bs.fss {
		for _, n := range bs.sizes {
			bs.results[key(fs, n)] = &sizeResult{fs: fs, n: n, runs: map[string][]run{}, count: map[string]*counted{}}
			data := bs.data(b, fs, n)
			need := map[string]int{
				"ours": bs.rounds, "upstream": bs.rounds, // timed
				"ours-strace": 1, "ours-io": 1, "upstream-strace": 1, "upstream-io": 1, // counted
			}
			for tag, k := range need {
				for i := 0; i < k; i++ {
					dst := filepath.Join(fs.dir, "runs", fmt.Sprintf("n%d-%s-%d", n, tag, i))
					os.RemoveAll(dst)
					// Never a reflink: on XFS (reflink=1, mkfs.xfs's default) cp -a clones, and
					// a clone starts with none of its pages cached, while ext4's copy
					// (copy_file_range) leaves them cached: the tools would read from the disk
					// on XFS only (80,000 blocks for 10,000 objects, measured with ru_inblock).
					if out, err := exec.Command("cp", "-a", "--reflink=never", data, dst).CombinedOutput(); err != nil {
						b.Fatalf("copy: %v %s", err, out)
					}
					copies[copyKey(fs, n, tag)] = append(copies[copyKey(fs, n, tag)], dst)
				}
			}
		}
	}
	syscall.Sync()
}

// take returns the next fresh copy for tag.
func take(b *testing.B, fs *fsys, n int, tag string) string {
	k := copyKey(fs, n, tag)
	if len(copies[k]) == 0 {
		b.Fatalf("no fresh copy left for %s", k)
	}
	d := copies[k][0]
	copies[k] = copies[k][1:]
	return d
}

// cpDst is a new, not yet existing name for cp -a's copy.
func cpDst(fs *fsys, n int, tag string) string {
	return filepath.Join(fs.dir, "runs", fmt.Sprintf("n%d-%s-%d", n, tag, time.Now().UnixNano()))
}

func request(d string) []byte {
	return fmt.Appendf(nil, `{"slot":%d,"datastore":%q,"confdir":%q,"so_pin":%q,"user_pin":%q}`, slot, d+"/swtok", d+"/conf", soPIN, userPIN)
}

// argv is the command line and stdin of one run of tool on the repository d (for cp -a: the
// copy of d's repository to a new name).
func (bs *bench) argv(tool string, fs *fsys, n int, d string) ([]string, func() io.Reader, []string) {
	switch tool {
	case toolOurs:
		return []string{bs.ours, "apply", "--request", "-"}, func() io.Reader { return bytes.NewReader(request(d)) }, os.Environ()
	case toolUpstream:
		in := filepath.Join(fs.inRoot, strings.TrimPrefix(d, fs.dir))
		return []string{"chroot", bs.root.Dir, "/usr/sbin/pkcstok_migrate", "-s", strconv.Itoa(slot), "-d", in + "/swtok", "-c", in + "/conf"},
			func() io.Reader { return strings.NewReader("y\n" + soPIN + "\n" + userPIN + "\n") }, rootEnv
	default:
		// The floor reads and creates each file once: no reflink (which on XFS copies no data).
		return []string{"cp", "-a", "--reflink=never", filepath.Join(bs.data(nil, fs, n), "swtok"), cpDst(fs, n, "cp")}, func() io.Reader { return nil }, os.Environ()
	}
}

// runTool is one timed run.
func (bs *bench) runTool(b *testing.B, tool string, fs *fsys, n, round int) run {
	d := ""
	if tool != toolCp {
		d = take(b, fs, n, tool)
	}
	argv, stdin, envv := bs.argv(tool, fs, n, d)
	syscall.Sync()
	r, out := timed(b, argv, stdin(), envv, nil, tool)
	if tool == toolUpstream && !bytes.Contains(out, []byte("pkcstok_migrate finished successfully")) {
		b.Fatalf("upstream did not finish successfully:\n%s", tail(out))
	}
	// What the run left dirty: ours makes the working copy durable before it switches it in
	// (syncfs), upstream and cp -a never sync, so their write-back happens after their clock
	// stops. Timed apart, never added to the run's time.
	start := time.Now()
	syscall.Sync()
	r.left = time.Since(start)
	return r
}

// runPlan times our plan on the data itself (plan reads, it does not write).
func (bs *bench) runPlan(b *testing.B, fs *fsys, n int) run {
	d := bs.data(b, fs, n)
	syscall.Sync()
	r, _ := timed(b, []string{bs.ours, "plan", "--request", "-"}, bytes.NewReader(request(d)), os.Environ(), func(code int) bool { return code == 2 }, "plan") // 2: changes to make
	return r
}

// rootEnv is the fixed environment commands get in the root (as ockroot gives them).
var rootEnv = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "LANG=C.UTF-8"}

// countTool runs tool twice more under strace: -c -w -f (calls and the wall-clock time each
// kind took) and -e trace of the reads and writes (the bytes they moved).
func (bs *bench) countTool(b *testing.B, tool string, fs *fsys, n int) *counted {
	c := &counted{}
	tag := strings.ReplaceAll(tool, " ", "")
	d := ""
	if tool != toolCp {
		d = take(b, fs, n, tool+"-strace")
	}
	argv, stdin, envv := bs.argv(tool, fs, n, d)
	sumFile := filepath.Join(fs.dir, "runs", fmt.Sprintf("n%d-%s.strace-c", n, tag))
	syscall.Sync()
	cmd := exec.Command("strace", append([]string{"-f", "-c", "-w", "-o", sumFile}, argv...)...)
	cmd.Stdin, cmd.Env = stdin(), envv
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("strace %s: %v\n%s", tool, err, tail(out))
	}
	var err error
	if c.sys, err = parseStraceC(sumFile); err != nil {
		b.Fatal(err)
	}
	if tool != toolCp {
		d = take(b, fs, n, tool+"-io")
	}
	argv, stdin, envv = bs.argv(tool, fs, n, d)
	trFile := filepath.Join(fs.dir, "runs", fmt.Sprintf("n%d-%s.strace-io", n, tag))
	syscall.Sync()
	cmd = exec.Command("strace", append([]string{"-f", "-qq", "-s", "0", "-e", "trace=read,pread64,getdents64,write,pwrite64,writev,copy_file_range,sendfile", "-o", trFile}, argv...)...)
	cmd.Stdin, cmd.Env = stdin(), envv
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("strace %s: %v\n%s", tool, err, tail(out))
	}
	if c.read, c.written, err = bytesMoved(trFile); err != nil {
		b.Fatal(err)
	}
	return c
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
	cmd := exec.Command("/usr/bin/time", append([]string{"-f", "%I %O %M", "-o", f.Name()}, argv...)...)
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
		if len(fields) >= 3 {
			r.inBlocks, _ = strconv.ParseInt(fields[len(fields)-3], 10, 64)
			r.outBlocks, _ = strconv.ParseInt(fields[len(fields)-2], 10, 64)
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

// sysCount is a strace -c summary split into file-system calls and the rest; runtime are the
// Go runtime's own (scheduler, memory, signals), counted apart. secs is the time of each kind
// (strace -w: wall-clock, from entry to exit).
type sysCount struct {
	fs, other, runtime int
	byName             map[string]int
	secs               map[string]float64
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
	"readlinkat": true, "access": true, "faccessat2": true, "writev": true, "copy_file_range": true,
	"sendfile": true, "fadvise64": true, "fgetxattr": true, "flistxattr": true, "fsetxattr": true, "utimensat": true,
	"futimesat": true, "statfs": true, "fstatfs": true, "openat2": true,
}

var straceLine = regexp.MustCompile(`^\s*[\d.]+\s+([\d.]+)\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)\s*$`)

func parseStraceC(path string) (sysCount, error) {
	f, err := os.Open(path)
	if err != nil {
		return sysCount{}, err
	}
	defer f.Close()
	c := sysCount{byName: map[string]int{}, secs: map[string]float64{}}
	s := bufio.NewScanner(f)
	for s.Scan() {
		m := straceLine.FindStringSubmatch(s.Text())
		if m == nil || m[3] == "total" {
			continue
		}
		n, _ := strconv.Atoi(m[2])
		secs, _ := strconv.ParseFloat(m[1], 64)
		c.byName[m[3]] += n
		c.secs[m[3]] += secs
		switch {
		case runtimeCalls[m[3]]:
			c.runtime += n
		case fsCalls[m[3]]:
			c.fs += n
		default:
			c.other += n
		}
	}
	return c, s.Err()
}

// bytesMoved sums what the reads (read, pread64, getdents64) and the writes (write,
// pwrite64, writev, copy_file_range, sendfile) returned in an strace -e trace file. A call
// that another thread's interrupted is split over two lines, "name(... <unfinished ...>" and
// "<... name resumed>...) = N": the second carries its result.
func bytesMoved(path string) (read, written int64, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, 0, err
	}
	const calls = `(read|pread64|getdents64|write|pwrite64|writev|copy_file_range|sendfile)`
	ret := regexp.MustCompile(`(?m)(?:\b` + calls + `\(.*\)|<\.\.\. ` + calls + ` resumed>.*)\s+=\s+(\d+)`)
	for _, m := range ret.FindAllSubmatch(b, -1) {
		n, _ := strconv.ParseInt(string(m[3]), 10, 64)
		name := m[1]
		if name == nil {
			name = m[2]
		}
		switch string(name) {
		case "read", "pread64", "getdents64":
			read += n
		default:
			written += n
		}
	}
	return read, written, nil
}

// medianLeft is the median of the syncs after the runs; medianDurable that of each run's
// time plus its sync.
func medianLeft(rs []run) time.Duration {
	return medianOf(rs, func(r run) time.Duration { return r.left })
}

func medianDurable(rs []run) time.Duration {
	return medianOf(rs, func(r run) time.Duration { return r.wall + r.left })
}

func medianOf(rs []run, f func(run) time.Duration) time.Duration {
	var a []time.Duration
	for _, r := range rs {
		a = append(a, f(r))
	}
	if len(a) == 0 {
		return 0
	}
	sort.Slice(a, func(i, j int) bool { return a[i] < a[j] })
	return a[(len(a)-1)/2]
}

func medianBlocks(rs []run) (in, out int64) {
	var a, b []int64
	for _, r := range rs {
		a, b = append(a, r.inBlocks), append(b, r.outBlocks)
	}
	if len(a) == 0 {
		return 0, 0
	}
	sort.Slice(a, func(i, j int) bool { return a[i] < a[j] })
	sort.Slice(b, func(i, j int) bool { return b[i] < b[j] })
	return a[(len(a)-1)/2], b[(len(b)-1)/2]
}

func median(rs []run) run {
	if len(rs) == 0 {
		return run{}
	}
	s := append([]run(nil), rs...)
	sort.Slice(s, func(i, j int) bool { return s[i].wall < s[j].wall })
	return s[(len(s)-1)/2]
}

var loadStart = func() string { b, _ := os.ReadFile("/proc/loadavg"); return strings.TrimSpace(string(b)) }()

// rows writes a table row for each file system and size: the two cells naming it, then
// those row returns.
func (bs *bench) rows(w *bytes.Buffer, row func(r *sizeResult) string) {
	for _, fs := range bs.fss {
		for _, n := range bs.sizes {
			fmt.Fprintf(w, "| %s | %d |%s\n", fs.name, n, row(bs.results[key(fs, n)]))
		}
	}
}

// The parts of RESULTS.md, each after its marker line: the single-slot race, the host's
// downtime, and NOTES.md. A part that BENCH_PARTS left out keeps its text from the file.
const (
	markSingle = "<!-- bench: single slot -->"
	markHost   = "<!-- bench: host -->"
	markNotes  = "<!-- bench: notes -->"
)

var marks = []string{markSingle, markHost, markNotes}

// splitParts returns the text after each marker of old, up to the next marker.
func splitParts(old string) map[string]string {
	parts := map[string]string{}
	for _, m := range marks {
		i := strings.Index(old, m+"\n")
		if i < 0 {
			continue
		}
		rest := old[i+len(m)+1:]
		end := len(rest)
		for _, o := range marks {
			if j := strings.Index(rest, o+"\n"); j >= 0 && j < end {
				end = j
			}
		}
		parts[m] = rest[:end]
	}
	return parts
}

// machine is the line naming the CPU, the cores, the kernel and Go.
func machine() string {
	cpu := "?"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		if m := regexp.MustCompile(`(?m)^model name\s*:\s*(.*)$`).FindSubmatch(b); m != nil {
			cpu = string(m[1])
		}
	}
	var uts unix.Utsname
	_ = unix.Uname(&uts)
	return fmt.Sprintf("CPU: %s, %d cores; kernel %s; %s, CGO_ENABLED=0", cpu, runtime.NumCPU(), unix.ByteSliceToString(uts.Release[:]), runtime.Version())
}

// writeResults writes BENCH_RESULTS: the parts this session ran, the others as the file had
// them, and NOTES.md.
func (bs *bench) writeResults() error {
	path := env("BENCH_RESULTS", "")
	if path == "" {
		return nil
	}
	old, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	parts := splitParts(string(old))
	if bs.part("single") {
		var w bytes.Buffer
		bs.writeSingle(&w)
		parts[markSingle] = w.String()
	}
	if bs.part("host") {
		var w bytes.Buffer
		bs.writeHost(&w)
		parts[markHost] = w.String()
	}
	if notes, err := os.ReadFile("NOTES.md"); err == nil {
		parts[markNotes] = string(notes)
	}
	var w bytes.Buffer
	fmt.Fprintf(&w, "# pkcstok-migrate benchmark results\n")
	for _, m := range marks {
		// A blank line on each side of a marker: it ends the table before it.
		if p := strings.Trim(parts[m], "\n"); p != "" {
			fmt.Fprintf(&w, "\n%s\n\n%s\n", m, p)
		} else {
			fmt.Fprintf(&w, "\n%s\n", m)
		}
	}
	return os.WriteFile(path, w.Bytes(), 0o644)
}

// writeSingle is the single-slot race: one repository, ours, upstream and cp -a.
func (bs *bench) writeSingle(w *bytes.Buffer) {
	load, _ := os.ReadFile("/proc/loadavg")
	var names []string
	for _, fs := range bs.fss {
		names = append(names, fs.name)
	}
	fmt.Fprintf(w, "Written by `make bench` (bench/sidebyside_test.go, `go test -bench SideBySide`) on %s UTC. Not run in CI; no test asserts a time.\n\n", time.Now().UTC().Format("2006-01-02 15:04"))
	fmt.Fprintf(w, "## Machine and the upstream raced\n\n")
	fmt.Fprintf(w, "- %s\n", machine())
	fmt.Fprintf(w, "- upstream: `/usr/sbin/pkcstok_migrate` of Debian testing's opencryptoki %s (amd64), chrooted in the cached root of the real-openCryptoki suites; each file system's bench directory is bind-mounted into it, so all three work on the same file system\n", bs.root.Version())
	fmt.Fprintf(w, "- file systems: %s (the XFS a new sparse image, `mkfs.xfs` defaults, `mount -o loop`)\n", strings.Join(names, ", "))
	fmt.Fprintf(w, "- load average (1, 5, 15 min) at the start: %s; at the end: %s (a shared machine: compare only figures of one table, taken alternating)\n", loadStart, strings.TrimSpace(string(load)))
	fmt.Fprintf(w, "- protocol: every fresh copy (`cp -a --reflink=never`) made before the first timed run; per size, %d rounds; in each round each file system in turn runs ours, upstream and `cp -a --reflink=never` (of the repository to a new name: every file read and created once), the order rotating with the round; `sync` (untimed) before each run; nothing deleted until the end. Times are medians. Ours includes PBKDF2-SHA512 (4 derivations of 100,000 iterations, about 75 ms of both cores), upstream derives them too.\n\n", bs.rounds)

	fmt.Fprintf(w, "## Side by side: apply (ours), pkcstok_migrate (upstream), cp -a (the floor)\n\n")
	fmt.Fprintf(w, "| file system | objects | ours s | upstream s | cp -a s | ours / upstream | ours / cp -a | ours user / sys s | upstream user / sys s | cp -a user / sys s | ours plan s |\n")
	fmt.Fprintf(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	bs.rows(w, func(r *sizeResult) string {
		o, u, c, p := median(r.runs[toolOurs]), median(r.runs[toolUpstream]), median(r.runs[toolCp]), median(r.plan)
		return fmt.Sprintf(" %.3f | %.3f | %.3f | **%.2f** | %.2f | %.2f / %.2f | %.2f / %.2f | %.2f / %.2f | %.3f |",
			o.wall.Seconds(), u.wall.Seconds(), c.wall.Seconds(), o.wall.Seconds()/u.wall.Seconds(), o.wall.Seconds()/c.wall.Seconds(),
			o.user.Seconds(), o.sys.Seconds(), u.user.Seconds(), u.sys.Seconds(), c.user.Seconds(), c.sys.Seconds(), p.wall.Seconds())
	})
	if len(bs.sizes) >= 2 {
		lo, hi := bs.sizes[0], bs.sizes[len(bs.sizes)-1]
		fmt.Fprintf(w, "\nPer-object cost: the wall time each tool adds per object between %d and %d objects ((t(%d) − t(%d)) / %d, medians), which leaves out the fixed costs (process start, PBKDF2, the chroot):\n\n", lo, hi, hi, lo, hi-lo)
		fmt.Fprintf(w, "| file system | ours µs/obj | upstream µs/obj | cp -a µs/obj | ours / cp -a | ours / upstream |\n|---|---:|---:|---:|---:|---:|\n")
		for _, fs := range bs.fss {
			per := func(tool string) float64 {
				a, z := median(bs.results[key(fs, lo)].runs[tool]), median(bs.results[key(fs, hi)].runs[tool])
				return (z.wall - a.wall).Seconds() * 1e6 / float64(hi-lo)
			}
			o, u, c := per(toolOurs), per(toolUpstream), per(toolCp)
			fmt.Fprintf(w, "| %s | %.1f | %.1f | %.1f | **%.2f** | %.2f |\n", fs.name, o, u, c, o/c, o/u)
		}
	}
	fmt.Fprintf(w, "\nMade durable: each run's time and then the `sync` right after it (timed apart, not in the table above), which writes back what the run left dirty. Ours makes its working copy durable before it switches it in (the crash safety `make crash` checks); upstream and `cp -a` never sync, so the run's wall time above leaves their write-back out:\n\n")
	fmt.Fprintf(w, "| file system | objects | ours s + sync s | upstream s + sync s | cp -a s + sync s | ours / upstream, both durable |\n|---|---:|---:|---:|---:|---:|\n")
	bs.rows(w, func(r *sizeResult) string {
		var cells string
		var tot [3]float64
		for i, t := range tools {
			tot[i] = medianDurable(r.runs[t]).Seconds()
			cells += fmt.Sprintf(" %.3f + %.3f |", median(r.runs[t]).wall.Seconds(), medianLeft(r.runs[t]).Seconds())
		}
		return cells + fmt.Sprintf(" **%.2f** |", tot[0]/tot[1])
	})
	fmt.Fprintf(w, "\nBlock I/O per object (the process's ru_inblock / ru_oublock in 512-byte blocks, medians of the timed runs; what the file system sent to the disk on the tool's behalf, including our syncfs; write-back the kernel does later is not in it): does not drift with the load.\n\n")
	fmt.Fprintf(w, "| file system | objects | ours in / out | upstream in / out | cp -a in / out |\n|---|---:|---:|---:|---:|\n")
	bs.rows(w, func(r *sizeResult) string {
		var cells string
		for _, t := range tools {
			in, out := medianBlocks(r.runs[t])
			cells += fmt.Sprintf(" %.2f / %.2f |", float64(in)/float64(r.n), float64(out)/float64(r.n))
		}
		return cells
	})
	fmt.Fprintf(w, "\nEvery run (wall s, user s, sys s, peak RSS MiB, the sync after it s), in the order run within a round:\n\n```\n")
	for _, n := range bs.sizes {
		for _, fs := range bs.fss {
			r := bs.results[key(fs, n)]
			for i := 0; i < bs.rounds; i++ {
				fmt.Fprintf(w, "%-11s n=%-6d round %d", fs.name, n, i+1)
				for k := range tools {
					t := tools[(k+i)%len(tools)]
					x := r.runs[t][i]
					fmt.Fprintf(w, "  %s %.3f %.2f %.2f %.1f +%.3f", t, x.wall.Seconds(), x.user.Seconds(), x.sys.Seconds(), float64(x.maxRSS)/1024, x.left.Seconds())
				}
				fmt.Fprintf(w, "\n")
			}
			for i, p := range r.plan {
				fmt.Fprintf(w, "%-11s n=%-6d plan %d  ours %.3f %.2f %.2f %.1f\n", fs.name, n, i+1, p.wall.Seconds(), p.user.Seconds(), p.sys.Seconds(), float64(p.maxRSS)/1024)
			}
		}
	}
	fmt.Fprintf(w, "```\n\n## What does not drift: system calls and bytes per object\n\n")
	fmt.Fprintf(w, "From `strace -f -c -w` (counts, and the wall-clock time of each kind of call) and `strace -f -e trace=read,pread64,getdents64,write,pwrite64,...` (bytes returned) of one more run of each, on its own fresh copy. \"runtime\" are the Go runtime's own calls (scheduler, memory, signals: futex, nanosleep, epoll, mmap, ...). Bytes written are what the write calls returned (the files' contents; the file system's own metadata is not in it).\n\n")
	fmt.Fprintf(w, "| file system | objects | ours fs calls/obj | ours runtime+other/obj | upstream fs calls/obj | upstream other/obj | cp -a fs calls/obj | cp -a other/obj | ours read B/obj | upstream read B/obj | cp -a read B/obj | ours written B/obj | upstream written B/obj | cp -a written B/obj |\n")
	fmt.Fprintf(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	bs.rows(w, func(r *sizeResult) string {
		f := float64(r.n)
		o, u, c := r.count[toolOurs], r.count[toolUpstream], r.count[toolCp]
		return fmt.Sprintf(" %.1f | %.1f | %.1f | %.2f | %.1f | %.2f | %.0f | %.0f | %.0f | %.0f | %.0f | %.0f |",
			float64(o.sys.fs)/f, float64(o.sys.runtime+o.sys.other)/f, float64(u.sys.fs)/f, float64(u.sys.other+u.sys.runtime)/f,
			float64(c.sys.fs)/f, float64(c.sys.other+c.sys.runtime)/f,
			float64(o.read)/f, float64(u.read)/f, float64(c.read)/f, float64(o.written)/f, float64(u.written)/f, float64(c.written)/f)
	})
	// Where the time goes, by kind of call, on each file system: the measurement of what
	// makes one file system cost more than another.
	hi := bs.sizes[len(bs.sizes)-1]
	for _, tool := range tools {
		fmt.Fprintf(w, "\n%s at %d objects, by kind of call: calls per object, then µs per call and total ms (strace -w wall-clock time of the call, strace's own overhead included) on each file system:\n\n", tool, hi)
		fmt.Fprintf(w, "| call |")
		for _, fs := range bs.fss {
			fmt.Fprintf(w, " %s calls/obj |", fs.name)
		}
		for _, fs := range bs.fss {
			fmt.Fprintf(w, " %s µs/call | %s ms |", fs.name, fs.name)
		}
		fmt.Fprintf(w, "\n|---|")
		for range bs.fss {
			fmt.Fprintf(w, "---:|---:|---:|")
		}
		fmt.Fprintf(w, "\n")
		total := map[string]float64{}
		for _, fs := range bs.fss {
			for k, v := range bs.results[key(fs, hi)].count[tool].sys.secs {
				total[k] += v
			}
		}
		var ks []string
		for k := range total {
			ks = append(ks, k)
		}
		sort.Slice(ks, func(i, j int) bool { return total[ks[i]] > total[ks[j]] })
		if len(ks) > 14 {
			ks = ks[:14]
		}
		sums := make([]float64, len(bs.fss))
		for _, k := range ks {
			fmt.Fprintf(w, "| %s |", k)
			for _, fs := range bs.fss {
				fmt.Fprintf(w, " %.2f |", float64(bs.results[key(fs, hi)].count[tool].sys.byName[k])/float64(hi))
			}
			for i, fs := range bs.fss {
				c := bs.results[key(fs, hi)].count[tool].sys
				us := 0.0
				if c.byName[k] > 0 {
					us = c.secs[k] * 1e6 / float64(c.byName[k])
				}
				sums[i] += c.secs[k]
				fmt.Fprintf(w, " %.1f | %.1f |", us, c.secs[k]*1000)
			}
			fmt.Fprintf(w, "\n")
		}
		fmt.Fprintf(w, "| (these, summed over threads) |")
		for range bs.fss {
			fmt.Fprintf(w, " |")
		}
		for i := range bs.fss {
			fmt.Fprintf(w, " | %.1f |", sums[i]*1000)
		}
		fmt.Fprintf(w, "\n")
	}
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
