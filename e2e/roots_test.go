//go:build linux

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ocktools/pkcstok-migrate/e2e/ockroot"
	"golang.org/x/sys/unix"
)

// Helpers of the suites that run the real openCryptoki in cached Debian roots (ockroot).

// gateRoots decides whether a root-based suite runs, like gate: PKCSTOK_E2E=1 or CI=true runs
// it; a missing root or privilege skips it outside CI and fails it in CI (make test sets
// CI=true: nothing skips there).
func gateRoots(t *testing.T, specs ...ockroot.Spec) {
	t.Helper()
	if r := os.Getenv("PKCSTOK_E2E_SKIP"); r != "" {
		t.Skipf("end-to-end suite skipped: %s", r)
	}
	on, ci := os.Getenv("PKCSTOK_E2E"), os.Getenv("CI") == "true"
	if on == "0" || (on == "" && !ci) {
		t.Skip("real-openCryptoki suites not requested: run as root with PKCSTOK_E2E=1 after make setup (see e2e/README.md)")
	}
	var miss []string
	for _, s := range specs {
		if m := ockroot.Missing(s); m != "" {
			miss = append(miss, m)
		}
	}
	if _, err := exec.LookPath("go"); err != nil && os.Getenv("PKCSTOK_E2E_BIN") == "" {
		miss = append(miss, "go is not on PATH (needed to build the tool)")
	}
	if len(miss) > 0 {
		if ci {
			t.Fatalf("cannot run (CI=true, so this fails instead of skipping): %s", strings.Join(miss, "; "))
		}
		t.Skipf("skipped: %s", strings.Join(miss, "; "))
	}
}

// openRoot opens a session on spec, closed when the test ends.
func openRoot(t *testing.T, spec ockroot.Spec) *ockroot.Root {
	t.Helper()
	r, err := ockroot.Open(spec)
	if err != nil {
		t.Fatalf("open root %s: %v", spec.Name(), err)
	}
	r.Log = t.Logf
	t.Cleanup(func() {
		if err := r.Close(); err != nil {
			t.Errorf("close root %s: %v", spec.Name(), err)
		}
	})
	return r
}

var (
	buildMu    sync.Mutex
	builtTools = map[string]string{} // GOARCH -> binary
	buildDir   string
)

// toolFor builds cmd/pkcstok-migrate statically (CGO_ENABLED=0) for goarch, once per test
// process. PKCSTOK_E2E_BIN (amd64) and PKCSTOK_E2E_BIN_<GOARCH> use prebuilt binaries.
func toolFor(t *testing.T, goarch string) string {
	t.Helper()
	if b := os.Getenv("PKCSTOK_E2E_BIN_" + strings.ToUpper(goarch)); b != "" {
		return b
	}
	if b := os.Getenv("PKCSTOK_E2E_BIN"); b != "" && goarch == "amd64" {
		return b
	}
	buildMu.Lock()
	defer buildMu.Unlock()
	if b, ok := builtTools[goarch]; ok {
		return b
	}
	if buildDir == "" {
		d, err := os.MkdirTemp("", "pkcstok-e2e-bin-")
		if err != nil {
			t.Fatal(err)
		}
		buildDir = d // removed by TestMain
	}
	bin := filepath.Join(buildDir, "pkcstok-migrate-"+goarch)
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/pkcstok-migrate")
	cmd.Dir = moduleRoot(t)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+goarch)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("GOARCH=%s go build ./cmd/pkcstok-migrate: %v\n%s", goarch, err, out)
	}
	builtTools[goarch] = bin
	return bin
}

func TestMain(m *testing.M) {
	printRootVersions()
	code := m.Run()
	tallyMu.Lock()
	n := len(tally)
	tallyMu.Unlock()
	if n > 0 {
		fmt.Print(tallyReport())
	}
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	ockroot.CloseAll(os.Stderr)
	os.Exit(code)
}

// rootTool is our binary installed in a root, run there with chroot (its /proc scan, group
// lookup and /dev/shm are the root's).
type rootTool struct {
	r      *ockroot.Root
	path   string // inside the root
	native bool   // a host-architecture binary in a foreign root: no qemu
	pins   [][]byte
	label  string // for logs: "ours amd64", "ours s390x"
}

func installTool(t *testing.T, r *ockroot.Root, goarch string, pins ...string) rootTool {
	t.Helper()
	p, err := r.Install(toolFor(t, goarch), "pkcstok-migrate-"+goarch)
	if err != nil {
		t.Fatal(err)
	}
	tl := rootTool{r: r, path: p, native: goarch == "amd64", label: "pkcstok-migrate " + goarch}
	for _, pin := range pins {
		tl.pins = append(tl.pins, []byte(pin))
	}
	return tl
}

// run is `pkcstok-migrate <op> --request -` with req (a cliRequest or a cliHostRequest) as
// JSON on stdin: PINs reach the tool only there.
func (tl rootTool) run(t *testing.T, op string, req any, extra ...string) toolRun {
	t.Helper()
	body, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	return tl.runArgs(t, body, append([]string{op, "--request", "-"}, extra...)...)
}

// runArgs is `pkcstok-migrate args...` with stdin (may be nil). An unexpected
// slot_daemon_running (another engineer's pkcsslotd on this machine: the tool's check sees
// every process) is retried for up to two minutes.
func (tl rootTool) runArgs(t *testing.T, stdin []byte, args ...string) toolRun {
	t.Helper()
	args = append([]string{tl.path}, args...)
	deadline := time.Now().Add(2 * time.Minute)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		start := time.Now()
		res, err := tl.r.Run(ctx, stdin, tl.native, args...)
		cancel()
		if err != nil {
			t.Fatalf("%s: %v", tl.label, err)
		}
		r := toolRun{args: append([]string{tl.label}, args[1:]...), code: res.Code, stdout: res.Stdout, stderr: res.Stderr}
		for _, pin := range tl.pins {
			if bytes.Contains(r.stdout, pin) || bytes.Contains(r.stderr, pin) {
				t.Errorf("%s: a PIN appears in the output", strings.Join(r.args, " "))
			}
		}
		if r.errorCode() == "slot_daemon_running" && len(tl.r.Daemons()) == 0 && time.Now().Before(deadline) {
			t.Logf("%s: slot_daemon_running although no daemon of this suite runs; pkcsslotd processes on the machine: %s; retrying in 5 s",
				strings.Join(r.args, " "), psSlotd())
			time.Sleep(5 * time.Second)
			continue
		}
		t.Logf("%s in %s: exit %d (%v)", strings.Join(r.args, " "), tl.r.Name(), r.code, time.Since(start).Round(time.Millisecond))
		return r
	}
}

// psSlotd describes the pkcsslotd processes (qemu ones included) running on the machine.
func psSlotd() string {
	var out []string
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		cmd, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil || !bytes.Contains(cmd, []byte("pkcsslotd")) {
			continue
		}
		root, _ := os.Readlink("/proc/" + e.Name() + "/root")
		out = append(out, fmt.Sprintf("pid %s %q root %s", e.Name(), bytes.ReplaceAll(bytes.TrimRight(cmd, "\x00"), []byte{0}, []byte{' '}), root))
	}
	if len(out) == 0 {
		return "none"
	}
	return strings.Join(out, "; ")
}

// ---------------------------------------------------------------------------------------
// Repositories moved between roots and the host

// copyRepo copies the directory tree src to dst (which must not exist), keeping modes, owners
// and file times; it refuses anything but directories and regular files.
func copyRepo(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			if err := os.Mkdir(target, 0o700); err != nil {
				return err
			}
		case unix.S_IFREG:
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			if err := os.WriteFile(target, b, 0o600); err != nil {
				return err
			}
			if err := os.Chtimes(target, time.Unix(st.Atim.Unix()), time.Unix(st.Mtim.Unix())); err != nil {
				return err
			}
		default:
			return fmt.Errorf("%s: not a directory or regular file", p)
		}
		if err := os.Lchown(target, int(st.Uid), int(st.Gid)); err != nil {
			return err
		}
		return unix.Chmod(target, st.Mode&0o7777)
	})
}

// setTokenPerms gives a repository what the token library makes: root:<gid>, directories
// 0770, files 0660 (git keeps neither owners nor modes of the fixtures).
func setTokenPerms(dir string, gid int) error {
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		mode := os.FileMode(0o660)
		if d.IsDir() {
			mode = 0o770
		}
		if err := os.Lchown(p, 0, gid); err != nil {
			return err
		}
		return os.Chmod(p, mode)
	})
}

// slotConf is a conf with one slot (no tokversion unless given).
func slotConf(version string, slot int, stdll, tokname, tokversion string) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "version opencryptoki-%s\n\nslot %d\n{\nstdll = %s\n", version, slot, stdll)
	if tokname != "" {
		fmt.Fprintf(&b, "tokname = %s\n", tokname)
	}
	if tokversion != "" {
		fmt.Fprintf(&b, "tokversion = %s\n", tokversion)
	}
	b.WriteString("}\n")
	return []byte(b.String())
}

// startSlotd starts the root's pkcsslotd and returns a stop function that fails the test if
// the daemon does not stop.
func startSlotd(t *testing.T, r *ockroot.Root) func() {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pid, err := r.StartSlotd(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return func() {
		t.Helper()
		if err := r.StopSlotd(pid); err != nil {
			t.Fatalf("%s: stop pkcsslotd %d: %v", r.Name(), pid, err)
		}
	}
}

// readRepoIn reads a repository of a root with our reader (tokens + repofs) on the host.
func readRepoIn(t *testing.T, r *ockroot.Root, ds string, so, user string) *readRepo {
	t.Helper()
	return readRepository(t, r.Path(ds), []byte(so), []byte(user))
}

// printRootVersions prints, once at the start, the versions of the libraries in every root
// `make setup` built (from the roots' stamps), when the root-based suites are requested.
func printRootVersions() {
	if os.Getenv("PKCSTOK_E2E") != "1" && os.Getenv("CI") != "true" {
		return
	}
	cache, err := ockroot.CacheDir()
	if err != nil {
		return
	}
	var b strings.Builder
	for _, s := range ockroot.All {
		st, err := ockroot.ReadStamp(filepath.Join(cache, s.Name()))
		if err != nil {
			fmt.Fprintf(&b, "  %-19s not built (%v)\n", s.Name(), err)
			continue
		}
		fmt.Fprintf(&b, "  %-19s opencryptoki %-26s opensc %-14s libc6 %s\n", s.Name(), st.Versions["opencryptoki"], st.Versions["opensc"], st.Versions["libc6"])
	}
	fmt.Printf("openCryptoki roots in %s:\n%s", cache, b.String())
}
