package procscan

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// fakeProc builds a fake /proc tree.
type fakeProc struct {
	t    *testing.T
	root string
}

func newFakeProc(t *testing.T) *fakeProc {
	root := filepath.Join(t.TempDir(), "proc")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	// Non-PID entries a real /proc has.
	os.WriteFile(filepath.Join(root, "uptime"), []byte("1 1\n"), 0o644)
	os.Mkdir(filepath.Join(root, "sys"), 0o755)
	os.Symlink("1", filepath.Join(root, "self"))
	return &fakeProc{t: t, root: root}
}

// proc adds a process with the given argv and comm ("" comm: none written).
func (f *fakeProc) proc(pid int, argv []string, comm string) string {
	dir := filepath.Join(f.root, strconv.Itoa(pid))
	if err := os.MkdirAll(filepath.Join(dir, "fd"), 0o755); err != nil {
		f.t.Fatal(err)
	}
	cmd := ""
	for _, a := range argv {
		cmd += a + "\x00"
	}
	os.WriteFile(filepath.Join(dir, "cmdline"), []byte(cmd), 0o444)
	if comm != "" {
		os.WriteFile(filepath.Join(dir, "comm"), []byte(comm+"\n"), 0o444)
	}
	return dir
}

func pidFile(t *testing.T, content string) string {
	p := filepath.Join(t.TempDir(), "pkcsslotd.pid")
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestSlotdFake(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "none.pid")
	cases := []struct {
		name    string
		setup   func(f *fakeProc)
		pidfile string
		want    []int
		wantErr error
	}{
		{"pidfile names slotd", func(f *fakeProc) {
			f.proc(100, []string{"/usr/sbin/pkcsslotd"}, "pkcsslotd")
		}, "100\n", []int{100}, nil},
		{"blank after pid (reference says not running)", func(f *fakeProc) {
			// argv[0] does not say pkcsslotd, only comm does: still found via the pid file.
			f.proc(123, []string{"-"}, "pkcsslotd")
		}, "123 \n", []int{123}, nil},
		{"leading blanks and sign", func(f *fakeProc) {
			f.proc(77, []string{"pkcsslotd"}, "pkcsslotd")
		}, "  +77", []int{77}, nil},
		{"garbage pidfile no process", func(f *fakeProc) {
			f.proc(1, []string{"/sbin/init"}, "systemd")
		}, "garbage\n", nil, nil},
		{"empty pidfile", func(f *fakeProc) {}, "", nil, nil},
		{"NUL pidfile", func(f *fakeProc) {}, "\x00123\n", nil, nil},
		{"pidfile names another program", func(f *fakeProc) {
			f.proc(200, []string{"/bin/bash", "pkcsslotd"}, "bash")
		}, "200\n", nil, nil},
		{"stale pidfile", func(f *fakeProc) {
			f.proc(1, []string{"/sbin/init"}, "systemd")
		}, "300\n", nil, nil},
		{"stale pidfile but scan finds one", func(f *fakeProc) {
			f.proc(400, []string{"/usr/sbin/pkcsslotd"}, "pkcsslotd")
		}, "300\n", []int{400}, nil},
		{"no pidfile, scan finds one", func(f *fakeProc) {
			f.proc(1, []string{"/sbin/init"}, "systemd")
			f.proc(4242, []string{"pkcsslotd", "-f"}, "pkcsslotd")
		}, "", []int{4242}, nil},
		{"argv0 with blank", func(f *fakeProc) {
			f.proc(50, []string{"/usr/sbin/pkcsslotd --foreground"}, "x")
		}, "", []int{50}, nil},
		{"zombie: empty cmdline, comm matches", func(f *fakeProc) {
			f.proc(60, nil, "pkcsslotd")
		}, "", []int{60}, nil},
		{"pkcsslotd run through qemu-user explicitly (no binfmt_misc)", func(f *fakeProc) {
			f.proc(70, []string{"/usr/bin/qemu-s390x-static", "/usr/sbin/pkcsslotd"}, "qemu-s390x-stat")
		}, "70\n", []int{70}, nil},
		{"pkcsslotd run through qemu-user, found by the scan", func(f *fakeProc) {
			f.proc(71, []string{"qemu-s390x-static", "-L", "/", "/usr/sbin/pkcsslotd"}, "qemu-s390x-stat")
		}, "", []int{71}, nil},
		{"another program under qemu is not slotd", func(f *fakeProc) {
			f.proc(72, []string{"/usr/bin/qemu-s390x-static", "-E", "X=pkcsslotd", "/usr/bin/pkcsconf", "pkcsslotd"}, "qemu-s390x-stat")
		}, "", nil, nil},
		{"kernel thread and lookalikes are not slotd", func(f *fakeProc) {
			f.proc(2, nil, "kthreadd")
			f.proc(3, []string{"grep", "pkcsslotd"}, "grep")
			f.proc(4, []string{"/opt/pkcsslotd/bin/helper"}, "helper")
			f.proc(5, []string{"vi", "/etc/pkcsslotd.conf"}, "vi")
		}, "", nil, nil},
		{"pidfile process unreadable counts as running", func(f *fakeProc) {
			dir := f.proc(90, nil, "")
			os.Remove(filepath.Join(dir, "cmdline"))
			os.Mkdir(filepath.Join(dir, "cmdline"), 0o755) // reading gives EISDIR
			os.Mkdir(filepath.Join(dir, "comm"), 0o755)
		}, "90\n", []int{90}, nil},
		{"unreadable process in scan fails closed", func(f *fakeProc) {
			dir := f.proc(91, nil, "")
			os.Remove(filepath.Join(dir, "cmdline"))
			os.Mkdir(filepath.Join(dir, "cmdline"), 0o755)
			os.Mkdir(filepath.Join(dir, "comm"), 0o755)
		}, "", nil, errUndetermined},
		{"process without cmdline/comm vanished", func(f *fakeProc) {
			dir := f.proc(92, nil, "")
			os.Remove(filepath.Join(dir, "cmdline"))
		}, "92\n", nil, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newFakeProc(t)
			c.setup(f)
			files := []string{missing}
			if c.pidfile != "" || strings.Contains(c.name, "empty pidfile") {
				files = append(files, pidFile(t, c.pidfile))
			}
			pids, err := SlotdRunning(f.root, files)
			if c.wantErr != nil {
				if !errors.Is(err, c.wantErr) {
					t.Fatalf("err %v, want %v", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("err %v", err)
			}
			if !reflect.DeepEqual(pids, c.want) {
				t.Fatalf("pids %v, want %v", pids, c.want)
			}
			st, _ := checkSlotd(f.root, files)
			if st.Running() != (len(c.want) > 0) {
				t.Errorf("Running() = %v", st.Running())
			}
			for _, e := range st.Evidence {
				if e.String() == "" {
					t.Error("empty evidence")
				}
			}
		})
	}
}

func TestSlotdEvidence(t *testing.T) {
	f := newFakeProc(t)
	f.proc(100, []string{"/usr/sbin/pkcsslotd"}, "pkcsslotd")
	pf := pidFile(t, "100\n")
	st, err := checkSlotd(f.root, []string{pf})
	if err != nil {
		t.Fatal(err)
	}
	// Found by the pid file; the scan does not add it twice.
	if !reflect.DeepEqual(st.PIDs, []int{100}) || len(st.Evidence) != 1 || st.Evidence[0].Source != pf ||
		!strings.Contains(st.Evidence[0].Detail, "/usr/sbin/pkcsslotd") {
		t.Errorf("status %+v", st)
	}
}

func TestSlotdPIDFileUnreadable(t *testing.T) {
	f := newFakeProc(t)
	f.proc(1, []string{"/sbin/init"}, "systemd")
	dirAsPidfile := t.TempDir() // reading a directory fails
	st, err := checkSlotd(f.root, []string{dirAsPidfile})
	if err != nil || st.Running() {
		t.Fatalf("%+v %v", st, err)
	}
	if len(st.Evidence) != 1 || !strings.Contains(st.Evidence[0].Detail, "cannot read") {
		t.Errorf("no note about the unreadable PID file: %+v", st.Evidence)
	}
}

func TestSlotdProcMissingFailsClosed(t *testing.T) {
	_, err := SlotdRunning(filepath.Join(t.TempDir(), "noproc"), []string{})
	if !errors.Is(err, errUndetermined) {
		t.Fatalf("got %v, want errUndetermined", err)
	}
}

func TestSlotdDefaults(t *testing.T) {
	if len(defaultPIDFiles) != 3 || defaultPIDFiles[2] != "/var/run/pkcsslotd.pid" {
		t.Errorf("defaults %v", defaultPIDFiles)
	}
	f := newFakeProc(t)
	f.proc(1, []string{"/sbin/init"}, "systemd")
	if _, err := SlotdRunning(f.root, nil); err != nil {
		t.Errorf("defaults: %v", err)
	}
}

// startFake runs a copy of sleep named pkcsslotd (or another name) and returns it.
func startNamed(t *testing.T, name string, stdin *os.File, cwd string) *exec.Cmd {
	t.Helper()
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep binary")
	}
	bin := filepath.Join(t.TempDir(), name)
	data, err := os.ReadFile(sleep)
	if err != nil {
		t.Skip(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "60")
	cmd.Stdin = stdin
	cmd.Dir = cwd
	if err := cmd.Start(); err != nil {
		t.Skip("cannot run copied sleep:", err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	// Wait until exec has happened (cmdline shows the new program).
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", cmd.Process.Pid))
		if strings.HasPrefix(string(b), bin) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	return cmd
}

func contains(pids []int, pid int) bool {
	for _, p := range pids {
		if p == pid {
			return true
		}
	}
	return false
}

func TestSlotdRealProcess(t *testing.T) {
	if _, err := os.Stat("/proc/self/cmdline"); err != nil {
		t.Skip("no /proc")
	}
	cmd := startNamed(t, "pkcsslotd", nil, "")
	pid := cmd.Process.Pid
	pf := pidFile(t, fmt.Sprintf("%d\n", pid))

	pids, err := SlotdRunning("/proc", []string{pf})
	if err != nil || !contains(pids, pid) {
		t.Fatalf("pid file to a running fake daemon: %v %v", pids, err)
	}
	// Without the pid file the scan finds it.
	pids, err = SlotdRunning("/proc", []string{})
	if err != nil || !contains(pids, pid) {
		t.Fatalf("scan: %v %v", pids, err)
	}
	// "123 \n" style content still counts.
	pids, _ = SlotdRunning("/proc", []string{pidFile(t, fmt.Sprintf("%d \n", pid))})
	if !contains(pids, pid) {
		t.Fatalf("pid with trailing blank: %v", pids)
	}

	cmd.Process.Kill()
	cmd.Wait()
	// Stale pid file (the process is gone) and no daemon anywhere: not running.
	pids, err = SlotdRunning("/proc", []string{pf})
	if err != nil || contains(pids, pid) {
		t.Fatalf("after kill: %v %v", pids, err)
	}
}

func TestSlotdRealOtherProcess(t *testing.T) {
	if _, err := os.Stat("/proc/self/cmdline"); err != nil {
		t.Skip("no /proc")
	}
	cmd := startNamed(t, "not-the-daemon", nil, "")
	pf := pidFile(t, fmt.Sprintf("%d\n", cmd.Process.Pid))
	pids, err := SlotdRunning("/proc", []string{pf, pidFile(t, "garbage")})
	if err != nil || contains(pids, cmd.Process.Pid) {
		t.Fatalf("pid file pointing at another program: %v %v", pids, err)
	}
}

func TestOpenersFake(t *testing.T) {
	f := newFakeProc(t)
	dir := "/data/repo"
	add := func(pid int, setup func(d string)) {
		d := f.proc(pid, []string{"x"}, "x")
		os.Symlink("/", filepath.Join(d, "root"))
		os.Symlink("/home", filepath.Join(d, "cwd"))
		setup(d)
	}
	add(500, func(d string) { os.Symlink("/data/repo/TOK_OBJ/OB000001", filepath.Join(d, "fd", "3")) })
	add(501, func(d string) {
		os.Remove(filepath.Join(d, "cwd"))
		os.Symlink("/data/repo", filepath.Join(d, "cwd"))
	})
	add(502, func(d string) {
		os.WriteFile(filepath.Join(d, "maps"), []byte(
			"55d0c0000000-55d0c0001000 r--p 00000000 fd:01 123   /usr/bin/x\n"+
				"7f0000000000-7f0000001000 r--p 00000000 fd:01 456                        /data/repo/TOK_OBJ/with blank\n"+
				"7f0000001000-7f0000002000 rw-p 00000000 00:00 0 \n"+
				"7ffd00000000-7ffd00001000 rw-p 00000000 00:00 0                          [stack]\n"), 0o444)
	})
	add(503, func(d string) { os.Symlink("/data/repository2/x", filepath.Join(d, "fd", "4")) }) // prefix trap
	add(504, func(d string) { os.Symlink("/data/repo (deleted)", filepath.Join(d, "fd", "5")) })
	add(505, func(d string) {
		os.Remove(filepath.Join(d, "root"))
		os.Symlink("/data/repo/chroot", filepath.Join(d, "root"))
	})
	add(506, func(d string) { os.Symlink("socket:[1234]", filepath.Join(d, "fd", "0")) })
	add(os.Getpid(), func(d string) { os.Symlink("/data/repo/self", filepath.Join(d, "fd", "9")) })
	// A process that vanished halfway: only cmdline left.
	os.MkdirAll(filepath.Join(f.root, "507"), 0o755)

	list, err := findOpeners(f.root, dir)
	if err != nil {
		t.Fatal(err)
	}
	pids, err := Openers(f.root, dir)
	if err != nil {
		t.Fatal(err)
	}
	want := []int{500, 501, 502, 504, 505}
	if !reflect.DeepEqual(pids, want) {
		t.Fatalf("pids %v, want %v (%+v)", pids, want, list)
	}
	for _, o := range list {
		if o.PID == 502 && o.What != "mmap /data/repo/TOK_OBJ/with blank" {
			t.Errorf("maps hit %q", o.What)
		}
	}
}

func TestOpenersReal(t *testing.T) {
	if _, err := os.Stat("/proc/self/fd"); err != nil {
		t.Skip("no /proc")
	}
	base := t.TempDir()
	repo := filepath.Join(base, "repo")
	os.MkdirAll(filepath.Join(repo, "TOK_OBJ"), 0o755)
	obj := filepath.Join(repo, "TOK_OBJ", "OB000001")
	os.WriteFile(obj, []byte("x"), 0o600)
	other := filepath.Join(base, "repo2")
	os.Mkdir(other, 0o755)

	in, err := os.Open(obj)
	if err != nil {
		t.Fatal(err)
	}
	holder := startNamed(t, "holder", in, "")
	in.Close()
	inCwd := startNamed(t, "incwd", nil, filepath.Join(repo, "TOK_OBJ"))
	outside := startNamed(t, "outside", nil, other)

	pids, err := Openers("/proc", repo)
	if err != nil {
		t.Logf("incomplete scan (ignored here): %v", err)
	}
	if !contains(pids, holder.Process.Pid) {
		t.Errorf("process holding a file open not reported: %v", pids)
	}
	// A working directory is seen by the scan only (lease_test.go: the residual).
	useLeases = false
	defer func() { useLeases = true }()
	pids, err = Openers("/proc", repo)
	if err != nil {
		t.Logf("incomplete scan (ignored here): %v", err)
	}
	if !contains(pids, holder.Process.Pid) {
		t.Errorf("scan: process holding a file open not reported: %v", pids)
	}
	if !contains(pids, inCwd.Process.Pid) {
		t.Errorf("process with its cwd inside not reported: %v", pids)
	}
	if contains(pids, outside.Process.Pid) {
		t.Errorf("process in a sibling directory reported: %v", pids)
	}
	if contains(pids, os.Getpid()) {
		t.Errorf("own process reported")
	}
	// Through a symlinked spelling of the directory.
	link := filepath.Join(t.TempDir(), "link")
	os.Symlink(repo, link)
	pids, _ = Openers("/proc", link)
	if !contains(pids, holder.Process.Pid) {
		t.Errorf("symlinked spelling: %v", pids)
	}
}

func TestShmName(t *testing.T) {
	cases := map[string]string{
		"/var/lib/opencryptoki/swtok":    "/var.lib.opencryptoki.swtok",
		"/var/lib/opencryptoki/swtok/":   "/var.lib.opencryptoki.swtok",
		"/var/lib/opencryptoki/swtok///": "/var.lib.opencryptoki.swtok",
		"swtok":                          "/swtok",
		"a/b":                            "/a.b",
		"/":                              "",
		"":                               "",
	}
	for in, want := range cases {
		if got := ShmName(in); got != want {
			t.Errorf("ShmName(%q) = %q, want %q", in, got, want)
		}
	}
	if p := shmPath("/var.lib.opencryptoki.swtok"); p != "/dev/shm/var.lib.opencryptoki.swtok" {
		t.Errorf("shmPath %q", p)
	}
	if p := shmPath(""); p != "" {
		t.Errorf("shmPath empty %q", p)
	}
}

func TestShmNames(t *testing.T) {
	if got := ShmNames("/var/lib/opencryptoki/swtok/"); !reflect.DeepEqual(got, []string{"/var.lib.opencryptoki.swtok"}) {
		t.Errorf("plain: %v", got)
	}
	if got := ShmNames("/var/lib//opencryptoki/./swtok"); !reflect.DeepEqual(got, []string{"/var.lib..opencryptoki...swtok", "/var.lib.opencryptoki.swtok"}) {
		t.Errorf("odd spelling: %v", got)
	}
	wd, _ := os.Getwd()
	got := ShmNames("swtok")
	if !reflect.DeepEqual(got, []string{ShmName(filepath.Join(wd, "swtok"))}) {
		t.Errorf("relative: %v", got)
	}
	real := filepath.Join(t.TempDir(), "real")
	os.Mkdir(real, 0o755)
	link := filepath.Join(t.TempDir(), "link")
	os.Symlink(real, link)
	realResolved, _ := filepath.EvalSymlinks(real)
	got = ShmNames(filepath.Join(link, "swtok"))
	if len(got) != 2 || got[0] != ShmName(filepath.Join(link, "swtok")) || got[1] != ShmName(filepath.Join(realResolved, "swtok")) {
		t.Errorf("symlinked parent: %v", got)
	}
	// The datastore's own name is never resolved: a member may have put a symlink there.
	other := filepath.Join(real, "othertok")
	os.Mkdir(other, 0o755)
	ds := filepath.Join(real, "swtok")
	os.Symlink(other, ds)
	for _, n := range ShmNames(ds) {
		if strings.Contains(n, "othertok") {
			t.Errorf("ShmNames(%s) follows the datastore's own symlink: %v", ds, n)
		}
	}
}

// A FIFO, socket or symlink where a PID file belongs (a member of the token group may make
// one in /run/opencryptoki) must not hang the check; it cannot tell, so it fails closed.
func TestSlotdPIDFileNotRegularFailsClosedWithoutHanging(t *testing.T) {
	f := newFakeProc(t)
	f.proc(1, []string{"/sbin/init"}, "systemd")
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo.pid")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	regular := pidFile(t, "1\n")
	link := filepath.Join(dir, "link.pid")
	if err := os.Symlink(regular, link); err != nil {
		t.Fatal(err)
	}
	for _, pf := range []string{fifo, link} {
		done := make(chan error, 1)
		go func() {
			_, err := SlotdRunning(f.root, []string{pf})
			done <- err
		}()
		select {
		case err := <-done:
			if !errors.Is(err, errUndetermined) {
				t.Errorf("%s: got %v, want errUndetermined", filepath.Base(pf), err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: the PID file check hangs", filepath.Base(pf))
		}
	}
}

// A process holding thousands of descriptors below the directory is read a batch at a time
// and named by the first maxFDHits of them, in descriptor order.
func TestOpenersManyDescriptors(t *testing.T) {
	f := newFakeProc(t)
	d := f.proc(600, []string{"x"}, "x")
	const n = 3 * fdBatch
	for i := 0; i < n; i++ {
		if err := os.Symlink("/data/repo/TOK_OBJ/OB000001", filepath.Join(d, "fd", strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	list, err := findOpeners(f.root, "/data/repo")
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != maxFDHits {
		t.Fatalf("%d hits, want the first %d", len(list), maxFDHits)
	}
	for i := 1; i < len(list); i++ {
		if !numLess(fdNum(list[i-1].What), fdNum(list[i].What)) {
			t.Fatalf("hits out of descriptor order: %q before %q", list[i-1].What, list[i].What)
		}
	}
	if pids, err := Openers(f.root, "/data/repo"); err != nil || !reflect.DeepEqual(pids, []int{600}) {
		t.Errorf("Openers: %v, %v, want [600]", pids, err)
	}
}
