package repofs

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// linkedCanary is what a file hard-linked into a repository holds in these tests: no error
// may quote it.
const linkedCanary = "HARDLINK-CANARY-7f3a"

// A repository file with a second link is refused before it is read, by every reader of a
// repository: ReadFile, Walk (and so TreeDigest and the plan's scan) and the copy, which
// leaves nothing behind. The error names the file by its path and carries none of its bytes.
func TestHardLinkedFileRefused(t *testing.T) {
	root := t.TempDir()
	repo := filepath.Join(root, "repo")
	makeRepo(t, repo)
	outside := filepath.Join(root, "secret")
	mustWrite(t, outside, linkedCanary+"\n", 0o600)
	for _, rel := range []string{"TOK_OBJ/OBJ.IDX", "TOK_OBJ/LINKED00"} {
		t.Run(strings.ReplaceAll(rel, "/", "_"), func(t *testing.T) {
			p := filepath.Join(repo, rel)
			os.Remove(p)
			if err := os.Link(outside, p); err != nil {
				t.Fatal(err)
			}
			defer os.Remove(p)
			d := mustOpen(t, repo)
			check := func(what string, err error) {
				t.Helper()
				if !errors.Is(err, ErrHardLinked) {
					t.Fatalf("%s: %v, want ErrHardLinked", what, err)
				}
				var pe *fs.PathError
				if !errors.As(err, &pe) || pe.Path != p {
					t.Errorf("%s: %v: want a *fs.PathError naming %s", what, err, p)
				}
				if strings.Contains(err.Error(), linkedCanary) {
					t.Errorf("%s: the error quotes the file: %v", what, err)
				}
			}
			_, err := d.ReadFile(rel)
			check("ReadFile", err)
			read := false
			err = Walk(d, Visitor{File: func(e Entry, _ any, data []byte) (any, error) {
				if e.Rel == rel {
					read = true
				}
				return nil, nil
			}})
			check("Walk", err)
			if read {
				t.Errorf("Walk handed the linked file to its visitor")
			}
			check("TreeDigest", TreeDigest(d, sha256.New()))
			parent := mustOpen(t, root)
			check("CopyTreeWith", CopyTreeWith(d, parent, "copy", Perm{GID: -1}, CopyOptions{}))
			if _, err := os.Lstat(filepath.Join(root, "copy")); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("the refused copy left %s: %v", filepath.Join(root, "copy"), err)
			}
		})
	}
	// The conf directory's own second links (opencryptoki.conf_BAK) are read.
	conf := filepath.Join(root, "conf")
	mustWrite(t, filepath.Join(conf, "opencryptoki.conf"), "version opencryptoki-3.12\n", 0o644)
	if err := os.Link(filepath.Join(conf, "opencryptoki.conf"), filepath.Join(conf, "opencryptoki.conf_BAK")); err != nil {
		t.Fatal(err)
	}
	cd := mustOpen(t, conf)
	if b, err := cd.ReadFileAnyLinks("opencryptoki.conf_BAK"); err != nil || string(b) != "version opencryptoki-3.12\n" {
		t.Errorf("ReadFileAnyLinks: %q, %v", b, err)
	}
	if _, err := cd.ReadFile("opencryptoki.conf"); !errors.Is(err, ErrHardLinked) {
		t.Errorf("ReadFile of a linked conf: %v, want ErrHardLinked", err)
	}
	// A directory's link count is not the rule: the walk of a repository with subdirectories
	// (nlink 3 and more) succeeds.
	os.Remove(filepath.Join(repo, "TOK_OBJ", "LINKED00"))
	mustWrite(t, filepath.Join(repo, "TOK_OBJ", "OBJ.IDX"), "", 0o660)
	if err := os.MkdirAll(filepath.Join(repo, "TOK_OBJ", "sub", "deeper"), 0o770); err != nil {
		t.Fatal(err)
	}
	if err := TreeDigest(mustOpen(t, repo), sha256.New()); err != nil {
		t.Errorf("a repository with subdirectories: %v", err)
	}
}

// listDir hands each name to admit as it reads it: a refusal ends the listing after that
// name, before the rest of the directory is read or held.
func TestListDirAdmitsWhileReading(t *testing.T) {
	dir := t.TempDir()
	const n, limit = 2000, 100
	for i := 0; i < n; i++ {
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("%0200d", i)), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	d := mustOpen(t, dir)
	calls := 0
	stop := errors.New("over the bound")
	_, err := listDir(d.Fd(), dir, func(string) (bool, error) {
		if calls++; calls > limit {
			return false, stop
		}
		return true, nil
	})
	if !errors.Is(err, stop) || calls != limit+1 {
		t.Fatalf("listDir: %v after %d names, want the admit error after %d", err, calls, limit+1)
	}
	// Names admit leaves out are not returned; the others come sorted.
	ents, err := listDir(d.Fd(), dir, func(name string) (bool, error) { return name[len(name)-1] == '7', nil })
	if err != nil || len(ents) != n/10 {
		t.Fatalf("listDir: %d entries, %v, want %d", len(ents), err, n/10)
	}
	for i := 1; i < len(ents); i++ {
		if ents[i-1].Name >= ents[i].Name || ents[i].Type != unix.DT_REG && ents[i].Type != unix.DT_UNKNOWN {
			t.Fatalf("entries %d, %d: %+v, %+v: not sorted regular files", i-1, i, ents[i-1], ents[i])
		}
	}
}

// A directory of more than MaxTreeEntries names is refused by the walk and by ReadDirNames
// once MaxTreeEntries+1 names were read, with ErrTooLarge naming the directory. (The bound is
// lowered here; make adversarial lists a million names against the real one.)
func TestDirectoryOverEntryBound(t *testing.T) {
	defer func(b int) { entryBound = b }(entryBound)
	entryBound = 2000
	repo := filepath.Join(t.TempDir(), "repo")
	objs := filepath.Join(repo, "TOK_OBJ")
	if err := os.MkdirAll(objs, 0o755); err != nil {
		t.Fatal(err)
	}
	for i := 0; i <= entryBound; i++ {
		if err := os.WriteFile(filepath.Join(objs, fmt.Sprintf("E%07d", i)), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	d := mustOpen(t, repo)
	files := 0
	err := Walk(d, Visitor{File: func(Entry, any, []byte) (any, error) { files++; return nil, nil }})
	var pe *fs.PathError
	if !errors.Is(err, ErrTooLarge) || !errors.As(err, &pe) || pe.Path != objs {
		t.Fatalf("Walk: %v, want ErrTooLarge naming %s", err, objs)
	}
	if files != 0 {
		t.Errorf("Walk read %d files of a directory over the bound", files)
	}
	if _, err := d.ReadDirNames("TOK_OBJ"); !errors.Is(err, ErrTooLarge) {
		t.Errorf("ReadDirNames: %v, want ErrTooLarge", err)
	}
	// Excluded names are not counted: TOK_OBJ and entryBound-1 files are within the bound.
	err = Walk(d, Visitor{Exclude: func(rel string) bool { return rel == "TOK_OBJ/E0000000" || rel == "TOK_OBJ/E0000001" }})
	if err != nil {
		t.Errorf("Walk without one name: %v", err)
	}
}
