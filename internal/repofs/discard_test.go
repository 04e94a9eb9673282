package repofs

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestRemoveTreeIfSame(t *testing.T) {
	root := t.TempDir()
	mk := func(name string) Info {
		t.Helper()
		if err := os.MkdirAll(filepath.Join(root, name, "sub"), 0o770); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, name, "sub", "f"), []byte("x"), 0o660); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink("/etc/passwd", filepath.Join(root, name, "link")); err != nil {
			t.Fatal(err)
		}
		d, err := OpenDir(root)
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		info, err := d.Lstat(name)
		if err != nil {
			t.Fatal(err)
		}
		return info
	}
	bak := mk("bak")
	other := mk("other")
	d, err := OpenDir(root)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()

	// Another directory at the name: refused, nothing moved.
	os.Rename(filepath.Join(root, "bak"), filepath.Join(root, "moved"))
	os.Rename(filepath.Join(root, "other"), filepath.Join(root, "bak"))
	if err := d.RemoveTreeIfSame("bak", bak, "scratch"); !errors.Is(err, ErrChanged) {
		t.Fatalf("another directory at the name: %v", err)
	}
	if info, err := d.Lstat("bak"); err != nil || !Same(info, other) {
		t.Fatalf("the other directory was moved: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(root, "scratch")); err == nil {
		t.Error("scratch left behind")
	}
	os.Rename(filepath.Join(root, "bak"), filepath.Join(root, "other"))
	os.Rename(filepath.Join(root, "moved"), filepath.Join(root, "bak"))

	// A scratch directory a stopped run left (root's own) is emptied first; one of anyone
	// else's, or open to others, is refused.
	if err := os.MkdirAll(filepath.Join(root, "scratch", "tree", "x"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := d.RemoveTreeIfSame("bak", bak, "scratch"); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"bak", "scratch"} {
		if _, err := os.Lstat(filepath.Join(root, n)); err == nil {
			t.Errorf("%s is still there", n)
		}
	}
	if _, err := os.Stat("/etc/passwd"); err != nil {
		t.Errorf("followed the symlink: %v", err)
	}
	if err := os.Mkdir(filepath.Join(root, "scratch"), 0o770); err != nil {
		t.Fatal(err)
	}
	if err := d.RemoveTreeIfSame("other", other, "scratch"); !errors.Is(err, ErrNotOwn) {
		t.Errorf("a scratch directory open to others: %v", err)
	}
	if _, err := d.Lstat("other"); err != nil {
		t.Errorf("other was removed: %v", err)
	}
}
