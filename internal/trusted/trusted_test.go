package trusted

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ocktools/pkcstok-migrate/internal/repofs"
)

func TestWriteFileReplacesSymlinkAndIs0600(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(dir, "victim")
	if err := os.WriteFile(victim, []byte("precious"), 0o644); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "plan.json")
	if err := os.Symlink(victim, p); err != nil {
		t.Fatal(err)
	}
	old := unix.Umask(0)
	defer unix.Umask(old)
	if err := WriteFile(p, []byte("{}\n")); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(victim); string(b) != "precious" {
		t.Fatalf("symlink target overwritten: %q", b)
	}
	st, err := os.Lstat(p)
	if err != nil || !st.Mode().IsRegular() || st.Mode().Perm() != 0o600 {
		t.Fatalf("plan file: %v %v", st.Mode(), err)
	}
	names, _ := os.ReadDir(dir)
	if len(names) != 2 {
		t.Fatalf("left behind: %v", names)
	}
}

func TestWriteFileRemovesTempOnError(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "isdir")
	if err := os.Mkdir(p, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(p, []byte("x")); err == nil {
		t.Fatal("rename onto a directory succeeded")
	}
	names, _ := os.ReadDir(dir)
	if len(names) != 1 {
		t.Fatalf("temp file left: %v", names)
	}
}

func TestReadFileRefuses(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good")
	os.WriteFile(good, []byte("data"), 0o600)
	os.Chmod(good, 0o600)
	link := filepath.Join(dir, "link")
	os.Symlink(good, link)
	fifo := filepath.Join(dir, "fifo")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	gw := filepath.Join(dir, "gw")
	os.WriteFile(gw, []byte("data"), 0o600)
	os.Chmod(gw, 0o620)
	rules := Rules{Euid: os.Geteuid(), DenyPerm: 0o022, MaxSize: 3}
	for _, c := range []struct {
		path string
		want error
	}{{link, repofs.ErrSymlink}, {fifo, repofs.ErrNotRegular}, {gw, ErrMode}, {good, repofs.ErrTooLarge}} {
		if _, _, err := ReadFile(c.path, rules); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.path, err, c.want)
		}
	}
	rules.MaxSize = 0
	if b, info, err := ReadFile(good, rules); err != nil || string(b) != "data" || info.Mode != 0o600 {
		t.Fatalf("good: %q %v %v", b, info, err)
	}
	if os.Geteuid() == 0 {
		os.Chown(good, 1234, -1)
		if _, _, err := ReadFile(good, rules); !errors.Is(err, ErrOwner) {
			t.Fatalf("foreign owner: %v", err)
		}
	}
}
