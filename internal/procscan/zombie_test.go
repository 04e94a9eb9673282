package procscan

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// A pkcsslotd that has exited but is not yet reaped (a zombie) holds nothing open: it must
// not block a migration.
func TestZombieSlotdIsNotRunning(t *testing.T) {
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep binary")
	}
	b, err := os.ReadFile(sleep)
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), slotdName)
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "0")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	pid := cmd.Process.Pid
	pidFile := filepath.Join(t.TempDir(), "pkcsslotd.pid")
	os.WriteFile(pidFile, []byte(itoa(pid)+"\n"), 0o644)
	// Not reaped yet: wait until the kernel shows it as a zombie.
	deadline := time.Now().Add(5 * time.Second)
	for {
		st, _ := os.ReadFile(filepath.Join("/proc", itoa(pid), "stat"))
		if len(st) > 0 && zombie(st) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("child did not become a zombie")
		}
		time.Sleep(10 * time.Millisecond)
	}
	pids, err := SlotdRunning("/proc", []string{pidFile})
	for _, p := range pids {
		if p == pid {
			t.Fatalf("zombie pid %d counted as running (err %v)", pid, err)
		}
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

func zombie(st []byte) bool {
	for i := len(st) - 1; i >= 0; i-- {
		if st[i] == ')' {
			return i+2 < len(st) && st[i+2] == 'Z'
		}
	}
	return false
}
