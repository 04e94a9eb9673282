package repofs

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestErrorsNameThePathOnce: a failure is one *fs.PathError naming its path once, with the
// errno or sentinel still found by errors.Is.
func TestErrorsNameThePathOnce(t *testing.T) {
	root := t.TempDir()
	if err := os.Mkdir(filepath.Join(root, "real"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("real", filepath.Join(root, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("big", filepath.Join(root, "filelink")); err != nil {
		t.Fatal(err)
	}
	big, err := os.Create(filepath.Join(root, "big"))
	if err != nil {
		t.Fatal(err)
	}
	if err := big.Truncate(maxFileSize + 1); err != nil { // sparse: no disk used
		t.Fatal(err)
	}
	big.Close()
	d, err := OpenDir(root)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	closed, err := OpenDir(filepath.Join(root, "real"))
	if err != nil {
		t.Fatal(err)
	}
	closed.Close()

	for _, c := range []struct {
		name string
		run  func() error
		path string
		is   error
	}{
		{"missing file", func() error { _, err := d.ReadFile("missing"); return err }, filepath.Join(root, "missing"), fs.ErrNotExist},
		{"missing parent", func() error { _, err := d.ReadFile("nodir/x"); return err }, filepath.Join(root, "nodir"), fs.ErrNotExist},
		{"symlink file", func() error { _, err := d.ReadFile("filelink"); return err }, filepath.Join(root, "filelink"), ErrSymlink},
		{"symlink parent", func() error { _, err := d.ReadFile("link/x"); return err }, filepath.Join(root, "link"), ErrSymlink},
		{"symlink directory", func() error { _, err := OpenDir(filepath.Join(root, "link")); return err }, filepath.Join(root, "link"), ErrSymlink},
		{"too large", func() error { _, err := d.ReadFile("big"); return err }, filepath.Join(root, "big"), ErrTooLarge},
		{"remove missing", func() error { return d.Remove("nodir/x") }, filepath.Join(root, "nodir"), fs.ErrNotExist},
		{"write through symlink", func() error { return d.WriteFile("filelink", nil, Perm{GID: -1}) }, filepath.Join(root, "filelink"), ErrSymlink},
		{"sync closed", closed.Sync, filepath.Join(root, "real"), nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := c.run()
			if err == nil {
				t.Fatal("no error")
			}
			msg := err.Error()
			if n := strings.Count(msg, c.path); n != 1 {
				t.Errorf("%q names %s %d times, want once", msg, c.path, n)
			}
			var pe *fs.PathError
			if !errors.As(err, &pe) || pe.Path != c.path {
				t.Errorf("%q: not an *fs.PathError for %s", msg, c.path)
			} else if errors.As(pe.Err, new(*fs.PathError)) {
				t.Errorf("%q: a path error inside a path error", msg)
			}
			if c.is != nil && !errors.Is(err, c.is) {
				t.Errorf("%q: errors.Is(err, %v) is false", msg, c.is)
			}
		})
	}
}
