//go:build linux

package bench

// The host's downtime: four slots of four token types (ICA, CCA, Soft, EP11) in one
// opencryptoki.conf, BENCH_HOST_OBJECTS objects each (default 1,000), migrated while
// pkcsslotd is stopped. Ours migrates them in one `apply --slots 1,2,3,4` run; upstream's
// pkcstok_migrate takes one slot a run, so it runs four times, and opencryptoki.conf_BAK,
// which it refuses to overwrite, is removed between its runs. The downtime of each is the wall
// time from the start of its first command to the end of its last: the time between stopping
// pkcsslotd and starting it again.
//
// Protocol: the host is generated once (pkcstok-gentoken, one Soft-format repository under
// each slot's directory, different PINs per slot); every fresh copy of it (conf and state) is
// made before the first timed run of the session; BENCH_HOST_ROUNDS rounds, ours and upstream
// alternating which goes first; a sync (untimed) before each tool's commands and timed apart
// after them; nothing deleted until the end but upstream's conf backup between its runs.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// hostSlot is one slot of the host's opencryptoki.conf.
type hostSlot struct {
	slot  int
	stdll string
	dir   string // its repository under the state directory (no tokname)
	typ   string
	extra string // a further line of the slot's block
}

var hostSlots = []hostSlot{
	{1, "libpkcs11_ica.so", "lite", "ICA", ""},
	{2, "libpkcs11_cca.so", "ccatok", "CCA", "confname = ccatok.conf"},
	{3, "libpkcs11_sw.so", "swtok", "Soft", ""},
	{4, "libpkcs11_ep11.so", "ep11tok", "EP11", "confname = ep11tok.conf"},
}

// Test data only: each slot has PINs of its own.
func hostSOPIN(slot int) string   { return fmt.Sprintf("SOpin-%d", slot) }
func hostUserPIN(slot int) string { return fmt.Sprintf("usrpin-%d", slot) }

// hostBench is the host part of a session.
type hostBench struct {
	dir    string // its bench directory on the host file system (data, pins, runs)
	inRoot string // where dir is bind-mounted inside the upstream root
	kind   string // fsType(dir)
	gen    string // the pkcstok-gentoken binary
	data   string // the host as generated: conf/, state/
	pins   string // so-N, user-N (mode 0600)
	n      int    // objects per slot
	rounds int
	nice   string // BENCH_HOST_NICE: the niceness every timed command runs at, "" as started
	copies map[string][]string
	runs   map[string][]hostRun
	count  map[string]*counted

	when               time.Time
	loadStart, loadEnd string
	elapsed            time.Duration // the timed rounds, syncs and all
	copying, counting  time.Duration // making the fresh copies; the strace runs
	others             float64       // cores other processes kept busy, on average, during them
}

// hostRun is one tool's migration of the host: its commands' resource use added up (peak RSS:
// the largest of them), each command's wall time, and the downtime.
type hostRun struct {
	run
	downtime time.Duration
	steps    []time.Duration
}

// hostCmd is one command of a tool's migration of a host.
type hostCmd struct {
	argv  []string
	stdin string
	env   []string
	check func(out []byte) error // its output says it succeeded
	after func() error           // what the operator does before the next command
}

func newHostBench(b *testing.B, bs *bench, base string) *hostBench {
	h := &hostBench{dir: filepath.Join(base, "hostslots"), inRoot: "/bench-hostslots",
		copies: map[string][]string{}, runs: map[string][]hostRun{}, count: map[string]*counted{}}
	var err error
	if h.n, err = strconv.Atoi(env("BENCH_HOST_OBJECTS", "1000")); err != nil || h.n < 1 {
		b.Fatalf("BENCH_HOST_OBJECTS: %q", os.Getenv("BENCH_HOST_OBJECTS"))
	}
	if h.rounds, err = strconv.Atoi(env("BENCH_HOST_ROUNDS", "30")); err != nil || h.rounds < 1 {
		b.Fatalf("BENCH_HOST_ROUNDS: %q", os.Getenv("BENCH_HOST_ROUNDS"))
	}
	if h.nice = os.Getenv("BENCH_HOST_NICE"); h.nice != "" {
		if _, err := strconv.Atoi(h.nice); err != nil {
			b.Fatalf("BENCH_HOST_NICE: %q", h.nice)
		}
	}
	if err := os.MkdirAll(filepath.Join(h.dir, "runs"), 0o755); err != nil {
		b.Fatal(err)
	}
	h.kind = fsType(h.dir)
	h.gen = filepath.Join(base, "pkcstok-gentoken")
	if out, err := exec.Command("go", "build", "-o", h.gen, "../cmd/pkcstok-gentoken").CombinedOutput(); err != nil {
		b.Fatalf("build: %v\n%s", err, out)
	}
	bs.bindIntoRoot(b, h.dir, h.inRoot)
	return h
}

// hostConf is the host's opencryptoki.conf before the migration.
func hostConf() []byte {
	var w bytes.Buffer
	fmt.Fprintf(&w, "version opencryptoki-3.11\n")
	for _, s := range hostSlots {
		fmt.Fprintf(&w, "\nslot %d\n{\n    stdll = %s\n", s.slot, s.stdll)
		if s.extra != "" {
			fmt.Fprintf(&w, "    %s\n", s.extra)
		}
		fmt.Fprintf(&w, "}\n")
	}
	return w.Bytes()
}

// generate writes the host once: the conf and, under each slot's directory, an old-format
// Soft repository of n objects with the slot's PINs, as pkcstok-gentoken writes it.
func (h *hostBench) generate(b *testing.B) {
	h.data = filepath.Join(h.dir, "data", fmt.Sprintf("n%d", h.n))
	done := h.data + ".done"
	if _, err := os.Stat(done); err == nil {
		return
	}
	os.RemoveAll(h.data)
	if err := os.MkdirAll(filepath.Join(h.data, "conf"), 0o755); err != nil {
		b.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(h.data, "state"), 0o775); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(h.data, "conf", "opencryptoki.conf"), hostConf(), 0o644); err != nil {
		b.Fatal(err)
	}
	for _, s := range hostSlots {
		argv := []string{"-dir", filepath.Join(h.data, "state", s.dir), "-n", strconv.Itoa(h.n), "-type", "soft",
			"-so-pin", hostSOPIN(s.slot), "-user-pin", hostUserPIN(s.slot), "-seed", strconv.Itoa(100 + s.slot),
			"-names", "mkstemp", "-label", fmt.Sprintf("host slot %d", s.slot)}
		if out, err := exec.Command(h.gen, argv...).CombinedOutput(); err != nil {
			b.Fatalf("pkcstok-gentoken: %v\n%s", err, out)
		}
	}
	// Group pkcs11 as a real state directory has it (both tools want it).
	if out, err := exec.Command("chgrp", "-R", "pkcs11", filepath.Join(h.data, "state")).CombinedOutput(); err != nil {
		b.Fatalf("chgrp: %v %s", err, out)
	}
	if err := os.WriteFile(done, nil, 0o644); err != nil {
		b.Fatal(err)
	}
}

// prepare generates the host, writes the PIN files and makes every fresh copy of the host
// part, then syncs.
func (h *hostBench) prepare(b *testing.B, bs *bench) {
	start := time.Now()
	defer func() { h.copying = time.Since(start) }()
	h.generate(b)
	h.pins = filepath.Join(h.dir, "pins")
	if err := os.MkdirAll(h.pins, 0o700); err != nil {
		b.Fatal(err)
	}
	for _, s := range hostSlots {
		for name, pin := range map[string]string{"so": hostSOPIN(s.slot), "user": hostUserPIN(s.slot)} {
			if err := os.WriteFile(filepath.Join(h.pins, fmt.Sprintf("%s-%d", name, s.slot)), []byte(pin+"\n"), 0o600); err != nil {
				b.Fatal(err)
			}
		}
	}
	need := map[string]int{toolOurs: h.rounds, toolUpstream: h.rounds,
		"ours-strace": 1, "ours-io": 1, "upstream-strace": 1, "upstream-io": 1}
	for tag, k := range need {
		for i := 0; i < k; i++ {
			dst := filepath.Join(h.dir, "runs", fmt.Sprintf("n%d-%s-%d", h.n, tag, i))
			os.RemoveAll(dst)
			if out, err := exec.Command("cp", "-a", "--reflink=never", h.data, dst).CombinedOutput(); err != nil {
				b.Fatalf("copy: %v %s", err, out)
			}
			h.copies[tag] = append(h.copies[tag], dst)
		}
	}
	syscall.Sync()
}

func (h *hostBench) take(b *testing.B, tag string) string {
	if len(h.copies[tag]) == 0 {
		b.Fatalf("no fresh copy of the host left for %s", tag)
	}
	d := h.copies[tag][0]
	h.copies[tag] = h.copies[tag][1:]
	return d
}

// commands are a tool's commands that migrate the host copy d, in order.
func (h *hostBench) commands(bs *bench, tool, d string) []hostCmd {
	if tool == toolOurs {
		var list []string
		for _, s := range hostSlots {
			list = append(list, strconv.Itoa(s.slot))
		}
		return []hostCmd{{
			argv: []string{bs.ours, "apply", "--slots", strings.Join(list, ","), "--confdir", d + "/conf", "--state-dir", d + "/state",
				"--so-pin-file", h.pins + "/so-{slot}", "--user-pin-file", h.pins + "/user-{slot}"},
			env:   os.Environ(),
			check: oursMigratedAll,
		}}
	}
	in := h.inRoot + strings.TrimPrefix(d, h.dir)
	var cmds []hostCmd
	for i, s := range hostSlots {
		c := hostCmd{
			argv: []string{"chroot", bs.root.Dir, "/usr/sbin/pkcstok_migrate", "-s", strconv.Itoa(s.slot),
				"-d", in + "/state/" + s.dir, "-c", in + "/conf", "-u", hostUserPIN(s.slot), "-p", hostSOPIN(s.slot)},
			stdin: "y\n",
			env:   rootEnv,
			check: func(out []byte) error {
				if !bytes.Contains(out, []byte("pkcstok_migrate finished successfully")) {
					return fmt.Errorf("upstream did not finish successfully")
				}
				return nil
			},
		}
		if i < len(hostSlots)-1 {
			// Its next run refuses while the backup of the conf exists.
			c.after = func() error { return os.Remove(d + "/conf/opencryptoki.conf_BAK") }
		}
		cmds = append(cmds, c)
	}
	return cmds
}

// oursMigratedAll checks that apply's result says every slot of the host was migrated.
func oursMigratedAll(out []byte) error {
	var res struct {
		Slots []struct {
			Slot    int    `json:"slot"`
			Outcome string `json:"outcome"`
		} `json:"slots"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		return fmt.Errorf("apply's result: %v", err)
	}
	if len(res.Slots) != len(hostSlots) {
		return fmt.Errorf("apply's result names %d slots, want %d", len(res.Slots), len(hostSlots))
	}
	for _, s := range res.Slots {
		if s.Outcome != "migrated" {
			return fmt.Errorf("slot %d: outcome %q", s.Slot, s.Outcome)
		}
	}
	return nil
}

// race runs the timed rounds, then each tool once more under strace (calls) and once more
// (bytes).
func (h *hostBench) race(b *testing.B, bs *bench) {
	if h.nice != "" {
		defer setAutogroupNice(b, h.nice)()
	}
	h.when = time.Now()
	h.loadStart = loadavg()
	busy0, self0 := cpuBusy(), ownCPU()
	start := time.Now()
	for r := 0; r < h.rounds; r++ {
		order := []string{toolOurs, toolUpstream}
		if r%2 == 1 {
			order = []string{toolUpstream, toolOurs}
		}
		for _, tool := range order {
			h.runs[tool] = append(h.runs[tool], h.runTool(b, bs, tool))
		}
	}
	h.elapsed = time.Since(start)
	h.others = ((cpuBusy() - busy0) - (ownCPU() - self0)).Seconds() / h.elapsed.Seconds()
	h.loadEnd = loadavg()
	start = time.Now()
	for _, tool := range []string{toolOurs, toolUpstream} {
		h.count[tool] = h.countTool(b, bs, tool)
	}
	h.counting = time.Since(start)
	o, u := medianDowntime(h.runs[toolOurs]), medianDowntime(h.runs[toolUpstream])
	b.Logf("host of %d slots x %d objects, %d rounds: ours %.3f s, upstream %.3f s (%.2fx)", len(hostSlots), h.n, h.rounds, o.Seconds(), u.Seconds(), o.Seconds()/u.Seconds())
}

// runTool is one timed migration of the host by tool, on a fresh copy.
func (h *hostBench) runTool(b *testing.B, bs *bench, tool string) hostRun {
	d := h.take(b, tool)
	cmds := h.commands(bs, tool, d)
	syscall.Sync()
	var hr hostRun
	start := time.Now()
	for _, c := range cmds {
		argv := c.argv
		if h.nice != "" {
			argv = append([]string{"nice", "-n", h.nice}, argv...)
		}
		r, out := timed(b, argv, strings.NewReader(c.stdin), c.env, nil, tool)
		if err := c.check(out); err != nil {
			b.Fatalf("%s: %v\n%s", tool, err, tail(out))
		}
		if c.after != nil {
			if err := c.after(); err != nil {
				b.Fatal(err)
			}
		}
		hr.steps = append(hr.steps, r.wall)
		hr.user += r.user
		hr.sys += r.sys
		hr.inBlocks += r.inBlocks
		hr.outBlocks += r.outBlocks
		hr.maxRSS = max(hr.maxRSS, r.maxRSS)
	}
	hr.downtime = time.Since(start)
	hr.wall = hr.downtime
	s := time.Now()
	syscall.Sync()
	hr.left = time.Since(s)
	return hr
}

// countTool runs tool's commands on two more fresh copies: under strace -f -c -w (calls, and
// the time of each kind), and under strace -e trace of the reads and writes (bytes); upstream's
// four runs added up.
func (h *hostBench) countTool(b *testing.B, bs *bench, tool string) *counted {
	c := &counted{sys: sysCount{byName: map[string]int{}, secs: map[string]float64{}}}
	tag := strings.ReplaceAll(tool, " ", "")
	for i, cmd := range h.commands(bs, tool, h.take(b, tool+"-strace")) {
		sumFile := filepath.Join(h.dir, "runs", fmt.Sprintf("n%d-%s-%d.strace-c", h.n, tag, i))
		h.straced(b, tool, cmd, []string{"-f", "-c", "-w", "-o", sumFile})
		s, err := parseStraceC(sumFile)
		if err != nil {
			b.Fatal(err)
		}
		c.sys.add(s)
	}
	for i, cmd := range h.commands(bs, tool, h.take(b, tool+"-io")) {
		trFile := filepath.Join(h.dir, "runs", fmt.Sprintf("n%d-%s-%d.strace-io", h.n, tag, i))
		h.straced(b, tool, cmd, []string{"-f", "-qq", "-s", "0", "-e", "trace=read,pread64,getdents64,write,pwrite64,writev,copy_file_range,sendfile", "-o", trFile})
		r, w, err := bytesMoved(trFile)
		if err != nil {
			b.Fatal(err)
		}
		c.read += r
		c.written += w
	}
	return c
}

func (h *hostBench) straced(b *testing.B, tool string, c hostCmd, opts []string) {
	cmd := exec.Command("strace", append(opts, c.argv...)...)
	cmd.Stdin, cmd.Env = strings.NewReader(c.stdin), c.env
	out, err := cmd.CombinedOutput()
	if err != nil {
		b.Fatalf("strace %s: %v\n%s", tool, err, tail(out))
	}
	if err := c.check(out); err != nil {
		b.Fatalf("strace %s: %v\n%s", tool, err, tail(out))
	}
	if c.after != nil {
		if err := c.after(); err != nil {
			b.Fatal(err)
		}
	}
}

func (c *sysCount) add(o sysCount) {
	c.fs += o.fs
	c.other += o.other
	c.runtime += o.runtime
	for k, v := range o.byName {
		c.byName[k] += v
	}
	for k, v := range o.secs {
		c.secs[k] += v
	}
}

// setAutogroupNice sets the niceness of this process's autogroup and returns what puts the old
// one back. With autogroups (kernel.sched_autogroup_enabled) the scheduler shares the cores
// between sessions first, so a command's own niceness counts only within its session.
func setAutogroupNice(b *testing.B, nice string) func() {
	const p = "/proc/self/autogroup"
	old, err := os.ReadFile(p)
	if err != nil {
		return func() {} // no autogroups: the commands' niceness is enough
	}
	f := strings.Fields(string(old)) // "/autogroup-N nice X"
	if err := os.WriteFile(p, []byte(nice), 0); err != nil {
		b.Fatalf("BENCH_HOST_NICE: %s: %v", p, err)
	}
	return func() {
		if len(f) == 3 {
			_ = os.WriteFile(p, []byte(f[2]), 0)
		}
	}
}

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	return strings.TrimSpace(string(b))
}

// cpuBusy is the CPU time all processes of the machine have used since boot (/proc/stat: every
// field but idle and iowait).
func cpuBusy() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	var ticks int64
	for i, v := range f[1:] {
		if i == 3 || i == 4 || i >= 8 { // idle, iowait; guest time is already in user
			continue
		}
		n, _ := strconv.ParseInt(v, 10, 64)
		ticks += n
	}
	return time.Duration(ticks) * time.Second / 100 // USER_HZ
}

// ownCPU is the CPU time of this process and of its children it has waited for.
func ownCPU() time.Duration {
	var t time.Duration
	for _, who := range []int{syscall.RUSAGE_SELF, syscall.RUSAGE_CHILDREN} {
		var ru syscall.Rusage
		if syscall.Getrusage(who, &ru) == nil {
			t += time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		}
	}
	return t
}

func medianDowntime(rs []hostRun) time.Duration {
	return quantile(rs, 0.5, func(r hostRun) float64 { return r.downtime.Seconds() }).dur()
}

type secs float64

func (s secs) dur() time.Duration { return time.Duration(float64(s) * float64(time.Second)) }

// quantile is the q-quantile of f over rs (nearest rank; the median of an even count is the
// lower middle one, as median() takes it).
func quantile(rs []hostRun, q float64, f func(hostRun) float64) secs {
	a := make([]float64, len(rs))
	for i, r := range rs {
		a[i] = f(r)
	}
	return secs(quantileOf(a, q))
}

func quantileOf(a []float64, q float64) float64 {
	if len(a) == 0 {
		return 0
	}
	a = append([]float64(nil), a...)
	sort.Float64s(a)
	i := int(q*float64(len(a)-1) + 0.5)
	if q == 0.5 {
		i = (len(a) - 1) / 2
	}
	return a[i]
}

// writeHost is the host part of RESULTS.md.
func (bs *bench) writeHost(w *bytes.Buffer) {
	h := bs.host
	ours, up := h.runs[toolOurs], h.runs[toolUpstream]
	down := func(r hostRun) float64 { return r.downtime.Seconds() }
	var names []string
	for _, s := range hostSlots {
		names = append(names, fmt.Sprintf("%d %s (`%s`, `%s`)", s.slot, s.typ, s.stdll, s.dir))
	}
	fmt.Fprintf(w, "\n## Host downtime: four slots in one run against one run a slot (%s)\n\n", h.when.UTC().Format("2006-01-02"))
	fmt.Fprintf(w, "Measured by `make bench` (bench/host_test.go; `BENCH_PARTS=host` runs this part alone), rounds from %s UTC. The downtime is the time pkcsslotd is stopped for the migration: from the start of the first migration command to the end of the last.\n\n", h.when.UTC().Format("2006-01-02 15:04"))
	fmt.Fprintf(w, "- %s\n", machine())
	fmt.Fprintf(w, "- a shared machine: load average (1, 5, 15 min) %s at the start of the rounds and %s at the end; other processes kept %.2f of the %d cores busy on average during the rounds (/proc/stat less this process and its children)\n", h.loadStart, h.loadEnd, h.others, runtime.NumCPU())
	fmt.Fprintf(w, "- the host: one opencryptoki.conf with slots %s; under each slot's directory an old-format Soft repository of %d objects written by `pkcstok-gentoken -type soft -names mkstemp`, with PINs of its own; %s file system (the bench directory), group pkcs11\n", strings.Join(names, ", "), h.n, h.kind)
	fmt.Fprintf(w, "- ours: `pkcstok-migrate apply --slots 1,2,3,4 --confdir C --state-dir S --so-pin-file P/so-{slot} --user-pin-file P/user-{slot}`, one run\n")
	fmt.Fprintf(w, "- upstream: `pkcstok_migrate -s N -d S/DIR -c C -u USERPIN -p SOPIN` with `y` on stdin, once per slot (Debian testing's opencryptoki %s, chrooted in the cached root, the bench directory bind-mounted into it), `opencryptoki.conf_BAK` removed after each run but the last (the next run refuses while it exists)\n", bs.root.Version())
	if h.nice != "" {
		fmt.Fprintf(w, "- every timed command run with `nice -n %s`, and the bench's autogroup set to that niceness during the rounds (BENCH_HOST_NICE): the tools get the cores before other sessions' processes; the disk and the file system's write-back are still shared\n", h.nice)
	}
	fmt.Fprintf(w, "- protocol: %d rounds, ours first in odd rounds and upstream first in even ones; every fresh copy of the host (`cp -a --reflink=never` of conf and state) made before the first timed run of the session; `sync` before each tool's commands (untimed) and timed apart after them; nothing deleted until the end but upstream's conf backup; the rounds took %.0f s, this part %.0f s in all (generating and copying the host %.0f s, the strace runs %.0f s)\n\n", h.rounds, h.elapsed.Seconds(), (h.copying + h.elapsed + h.counting).Seconds(), h.copying.Seconds(), h.counting.Seconds())

	var paired []float64 // ours / upstream within each round
	for i := range ours {
		if i < len(up) {
			paired = append(paired, ours[i].downtime.Seconds()/up[i].downtime.Seconds())
		}
	}
	med := float64(quantile(ours, 0.5, down)) / float64(quantile(up, 0.5, down))
	fmt.Fprintf(w, "| downtime, %d rounds | ours: one run | upstream: four runs | ours / upstream within a round |\n|---|---:|---:|---:|\n", h.rounds)
	fmt.Fprintf(w, "| median | %.3f s | %.3f s | %.2f |\n", quantile(ours, 0.5, down), quantile(up, 0.5, down), quantileOf(paired, 0.5))
	fmt.Fprintf(w, "| quartiles (25%%–75%%) | %.3f–%.3f s | %.3f–%.3f s | %.2f–%.2f |\n", quantile(ours, 0.25, down), quantile(ours, 0.75, down), quantile(up, 0.25, down), quantile(up, 0.75, down), quantileOf(paired, 0.25), quantileOf(paired, 0.75))
	fmt.Fprintf(w, "| min–max | %.3f–%.3f s | %.3f–%.3f s | %.2f–%.2f |\n\n", quantile(ours, 0, down), quantile(ours, 1, down), quantile(up, 0, down), quantile(up, 1, down), quantileOf(paired, 0), quantileOf(paired, 1))
	fmt.Fprintf(w, "Ratio of the medians, ours / upstream: **%.2f**. ", med)
	verdict := "missed"
	if med <= 0.25 {
		verdict = "met"
	}
	fmt.Fprintf(w, "Goal: ours at most 0.25× upstream's downtime: **%s** under this load.\n\n", verdict)

	fmt.Fprintf(w, "Resources of one migration of the host (medians of the timed runs; upstream's four processes added up, its peak RSS the largest of them; blocks are ru_oublock, 512 bytes, what the file system sent to the disk on the tool's behalf; the sync after it timed apart, not in the downtime):\n\n")
	fmt.Fprintf(w, "| | processes | user s | sys s | CPU (user + sys) s | peak RSS MiB | blocks written MiB | sync after s |\n|---|---:|---:|---:|---:|---:|---:|---:|\n")
	var cpu [2]float64
	for i, tool := range []string{toolOurs, toolUpstream} {
		rs := h.runs[tool]
		cpu[i] = float64(quantile(rs, 0.5, func(r hostRun) float64 { return (r.user + r.sys).Seconds() }))
		fmt.Fprintf(w, "| %s | %d | %.3f | %.3f | %.3f | %.1f | %.1f | %.3f |\n", tool, len(rs[0].steps),
			quantile(rs, 0.5, func(r hostRun) float64 { return r.user.Seconds() }),
			quantile(rs, 0.5, func(r hostRun) float64 { return r.sys.Seconds() }), cpu[i],
			float64(quantile(rs, 0.5, func(r hostRun) float64 { return float64(r.maxRSS) }))/1024,
			float64(quantile(rs, 0.5, func(r hostRun) float64 { return float64(r.outBlocks) }))*512/(1<<20),
			quantile(rs, 0.5, func(r hostRun) float64 { return r.left.Seconds() }))
	}
	fmt.Fprintf(w, "| ours / upstream | | | | **%.2f** | | | |\n", cpu[0]/cpu[1])
	fmt.Fprintf(w, "\nUpstream's runs one by one (medians): ")
	for i, s := range hostSlots {
		if i > 0 {
			fmt.Fprintf(w, ", ")
		}
		fmt.Fprintf(w, "slot %d %s %.3f s", s.slot, s.typ, quantile(up, 0.5, func(r hostRun) float64 { return r.steps[i].Seconds() }))
	}
	fmt.Fprintf(w, ".\n\n")

	fmt.Fprintf(w, "What does not drift with the load: system calls (`strace -f -c -w`) and bytes (`strace -f -e trace=read,pread64,getdents64,write,pwrite64,...`, what the calls returned) of one more migration of the host by each, on fresh copies; upstream's four runs added up, the `chroot` that starts each included. \"runtime\" are the Go runtime's own calls (futex, nanosleep, mmap, ...).\n\n")
	total := len(hostSlots) * h.n
	fmt.Fprintf(w, "| | system calls | file-system calls | runtime | other | bytes read | bytes written | calls / object | written B / object |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, tool := range []string{toolOurs, toolUpstream} {
		c := h.count[tool]
		all := c.sys.fs + c.sys.runtime + c.sys.other
		fmt.Fprintf(w, "| %s | %d | %d | %d | %d | %d | %d | %.1f | %.0f |\n", tool, all, c.sys.fs, c.sys.runtime, c.sys.other, c.read, c.written, float64(all)/float64(total), float64(c.written)/float64(total))
	}
	o, u := h.count[toolOurs], h.count[toolUpstream]
	fmt.Fprintf(w, "| ours / upstream | %.2f | %.2f | | | %.2f | %.2f | | |\n\n", float64(o.sys.fs+o.sys.runtime+o.sys.other)/float64(u.sys.fs+u.sys.runtime+u.sys.other), float64(o.sys.fs)/float64(u.sys.fs), float64(o.read)/float64(u.read), float64(o.written)/float64(u.written))
	for _, tool := range []string{toolOurs, toolUpstream} {
		sys := h.count[tool].sys
		var ks []string
		for k := range sys.byName {
			ks = append(ks, k)
		}
		sort.Slice(ks, func(i, j int) bool { return sys.secs[ks[i]] > sys.secs[ks[j]] })
		if len(ks) > 12 {
			ks = ks[:12]
		}
		fmt.Fprintf(w, "%s, the kinds of call that took longest (strace -w, summed over threads, strace's overhead included): ", tool)
		for i, k := range ks {
			if i > 0 {
				fmt.Fprintf(w, ", ")
			}
			fmt.Fprintf(w, "%s %d × %.0f ms", k, sys.byName[k], sys.secs[k]*1000)
		}
		fmt.Fprintf(w, ".\n\n")
	}
	fmt.Fprintf(w, "Every round (downtime s; user s, sys s, peak RSS MiB; the sync after it s; upstream's four runs s), in the order run:\n\n```\n")
	for i := 0; i < h.rounds; i++ {
		order := []string{toolOurs, toolUpstream}
		if i%2 == 1 {
			order = []string{toolUpstream, toolOurs}
		}
		fmt.Fprintf(w, "round %-3d", i+1)
		for _, t := range order {
			x := h.runs[t][i]
			fmt.Fprintf(w, "  %s %.3f %.2f %.2f %.1f +%.3f", t, x.downtime.Seconds(), x.user.Seconds(), x.sys.Seconds(), float64(x.maxRSS)/1024, x.left.Seconds())
			if len(x.steps) > 1 {
				var st []string
				for _, s := range x.steps {
					st = append(st, fmt.Sprintf("%.3f", s.Seconds()))
				}
				fmt.Fprintf(w, " [%s]", strings.Join(st, " "))
			}
		}
		fmt.Fprintf(w, "\n")
	}
	fmt.Fprintf(w, "```\n\n")
}
