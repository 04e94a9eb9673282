package repofs

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func isRoot() bool { return os.Geteuid() == 0 }

func mustWrite(t *testing.T, p string, data string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(data), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
}

func mustOpen(t *testing.T, p string) *Dir {
	t.Helper()
	d, err := OpenDir(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// otherGID returns a GID different from the current one, from /etc/group, or -1.
func otherGID(t *testing.T) int {
	f, err := os.Open("/etc/group")
	if err != nil {
		return -1
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		parts := strings.Split(sc.Text(), ":")
		if len(parts) < 3 {
			continue
		}
		gid, err := strconv.Atoi(parts[2])
		if err == nil && gid != 0 && gid != os.Getgid() && gid < 60000 {
			return gid
		}
	}
	return -1
}

// testGIDs are the token groups exercised: the current GID and, as root, another one.
func testGIDs(t *testing.T) []int {
	gids := []int{os.Getgid()}
	if isRoot() {
		if g := otherGID(t); g >= 0 {
			gids = append(gids, g)
		}
	}
	return gids
}

func TestOpenDir(t *testing.T) {
	root := t.TempDir()
	mustWrite(t, filepath.Join(root, "f"), "x", 0o644)
	os.Mkdir(filepath.Join(root, "d"), 0o755)
	os.Symlink(filepath.Join(root, "d"), filepath.Join(root, "l"))

	if _, err := OpenDir(filepath.Join(root, "l")); !errors.Is(err, ErrSymlink) {
		t.Errorf("symlink: got %v, want ErrSymlink", err)
	}
	if _, err := OpenDir(filepath.Join(root, "f")); !errors.Is(err, errNotDir) {
		t.Errorf("file: got %v, want errNotDir", err)
	}
	if _, err := OpenDir(filepath.Join(root, "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing: got %v, want fs.ErrNotExist", err)
	}
	d := mustOpen(t, filepath.Join(root, "d"))
	if d.Path() != filepath.Join(root, "d") || d.Fd() < 0 {
		t.Errorf("Path/Fd: %q %d", d.Path(), d.Fd())
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestReadFile(t *testing.T) {
	root := t.TempDir()
	mustWrite(t, filepath.Join(root, "TOK_OBJ", "OB000001"), "object", 0o600)
	mustWrite(t, filepath.Join(root, "NVTOK.DAT"), "nv", 0o600)
	mustWrite(t, filepath.Join(root, "empty"), "", 0o600)
	outside := t.TempDir()
	mustWrite(t, filepath.Join(outside, "secret"), "secret", 0o600)
	os.Symlink(filepath.Join(outside, "secret"), filepath.Join(root, "TOK_OBJ", "OBLINK01"))
	os.Symlink(outside, filepath.Join(root, "LINKDIR"))
	d := mustOpen(t, root)

	if b, err := d.ReadFile("TOK_OBJ/OB000001"); err != nil || string(b) != "object" {
		t.Errorf("ReadFile: %q %v", b, err)
	}
	if b, err := d.ReadFile("empty"); err != nil || len(b) != 0 {
		t.Errorf("empty: %q %v", b, err)
	}
	sub, err := d.OpenSubdir("TOK_OBJ")
	if err != nil {
		t.Fatal(err)
	}
	if b, err := sub.ReadFile("OB000001"); err != nil || string(b) != "object" {
		t.Errorf("subdir ReadFile: %q %v", b, err)
	}
	sub.Close()

	for _, name := range []string{"TOK_OBJ/OBLINK01", "LINKDIR/secret"} {
		if _, err := d.ReadFile(name); !errors.Is(err, ErrSymlink) {
			t.Errorf("%s: got %v, want ErrSymlink", name, err)
		} else if !strings.Contains(err.Error(), root) {
			t.Errorf("%s: error lacks the path: %v", name, err)
		}
	}
	if _, err := d.OpenSubdir("LINKDIR"); !errors.Is(err, ErrSymlink) {
		t.Errorf("OpenSubdir symlink: %v", err)
	}
	if _, err := d.ReadFile("TOK_OBJ/missing"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing: got %v", err)
	}
	if _, err := d.ReadFile("nodir/missing"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing dir: got %v", err)
	}
	if _, err := d.ReadFile("TOK_OBJ"); !errors.Is(err, ErrNotRegular) {
		t.Errorf("directory: got %v", err)
	}
	if _, err := d.ReadFile("NVTOK.DAT/x"); err == nil {
		t.Errorf("file as directory: no error")
	}
	for _, bad := range []string{"", "/etc/passwd", "../x", "TOK_OBJ/../NVTOK.DAT", "./NVTOK.DAT", "TOK_OBJ//OB000001", "TOK_OBJ/", "a\x00b"} {
		if _, err := d.ReadFile(bad); !errors.Is(err, errBadName) {
			t.Errorf("%q: got %v, want errBadName", bad, err)
		}
	}
}

func TestReadFileFIFODoesNotHang(t *testing.T) {
	root := t.TempDir()
	if err := unix.Mkfifo(filepath.Join(root, "fifo"), 0o600); err != nil {
		t.Skip("mkfifo:", err)
	}
	d := mustOpen(t, root)
	done := make(chan error, 1)
	go func() { _, err := d.ReadFile("fifo"); done <- err }()
	select {
	case err := <-done:
		if !errors.Is(err, ErrNotRegular) {
			t.Errorf("fifo: got %v, want ErrNotRegular", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ReadFile on a FIFO hangs")
	}
}

func TestReadFileDevice(t *testing.T) {
	if !isRoot() {
		t.Skip("mknod needs root")
	}
	root := t.TempDir()
	// A character device with the numbers of /dev/null.
	if err := unix.Mknod(filepath.Join(root, "null"), unix.S_IFCHR|0o600, int(unix.Mkdev(1, 3))); err != nil {
		t.Skip("mknod:", err)
	}
	d := mustOpen(t, root)
	if _, err := d.ReadFile("null"); !errors.Is(err, ErrNotRegular) {
		t.Errorf("device: got %v, want ErrNotRegular", err)
	}
	if err := d.WriteFile("null", []byte("x"), Perm{GID: -1}); !errors.Is(err, ErrNotRegular) {
		t.Errorf("WriteFile over device: got %v", err)
	}
}

func TestReadFileTooLarge(t *testing.T) {
	root := t.TempDir()
	f, err := os.Create(filepath.Join(root, "big"))
	if err != nil {
		t.Fatal(err)
	}
	// Sparse: no disk space used.
	if err := f.Truncate(maxFileSize + 1); err != nil {
		t.Fatal(err)
	}
	f.Close()
	d := mustOpen(t, root)
	if _, err := d.ReadFile("big"); !errors.Is(err, ErrTooLarge) {
		t.Errorf("got %v, want ErrTooLarge", err)
	}
	if err := CopyTreeWith(d, mustOpen(t, t.TempDir()), "copy", Perm{GID: -1}, CopyOptions{}); !errors.Is(err, ErrTooLarge) {
		t.Errorf("CopyTree: got %v, want ErrTooLarge", err)
	}
}

func TestLstatAndReadDirNames(t *testing.T) {
	root := t.TempDir()
	mustWrite(t, filepath.Join(root, "b"), "12345", 0o640)
	mustWrite(t, filepath.Join(root, "a", "x"), "", 0o600)
	os.Symlink("b", filepath.Join(root, "l"))
	d := mustOpen(t, root)

	i, err := d.Lstat("b")
	if err != nil || !i.IsRegular() || i.Size != 5 || i.Perm() != 0o640 || i.Name != "b" {
		t.Errorf("Lstat b: %+v %v", i, err)
	}
	if i, err := d.Lstat("l"); err != nil || !i.isSymlink() {
		t.Errorf("Lstat l: %+v %v", i, err)
	}
	if i, err := d.Lstat("."); err != nil || !i.IsDir() {
		t.Errorf("Lstat .: %+v %v", i, err)
	}
	if _, err := d.Lstat("l/x"); !errors.Is(err, ErrSymlink) {
		t.Errorf("Lstat through symlink to file: %v", err)
	}
	if _, err := d.Lstat("nope"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Lstat missing: %v", err)
	}
	names, err := d.ReadDirNames(".")
	if err != nil || strings.Join(names, ",") != "a,b,l" {
		t.Errorf("ReadDirNames: %v %v", names, err)
	}
	// Listing twice gives the same answer (the handle's offset is not used up).
	names, _ = d.ReadDirNames(".")
	if len(names) != 3 {
		t.Errorf("second ReadDirNames: %v", names)
	}
	if names, err := d.ReadDirNames("a"); err != nil || len(names) != 1 {
		t.Errorf("ReadDirNames a: %v %v", names, err)
	}
}

func TestWriteFile(t *testing.T) {
	for _, gid := range testGIDs(t) {
		t.Run(fmt.Sprint("gid", gid), func(t *testing.T) {
			root := t.TempDir()
			d := mustOpen(t, root)
			p := Perm{GID: gid}
			if err := d.WriteFile("new", []byte("hello"), p); err != nil {
				t.Fatal(err)
			}
			checkPerm(t, filepath.Join(root, "new"), 0o660, gid)
			// Overwrite a longer existing file with odd bits: truncated, mode exact.
			mustWrite(t, filepath.Join(root, "old"), "a much longer content", 0o644)
			unix.Chmod(filepath.Join(root, "old"), 0o4755)
			if err := d.WriteFile("old", []byte("short"), p); err != nil {
				t.Fatal(err)
			}
			if b, _ := os.ReadFile(filepath.Join(root, "old")); string(b) != "short" {
				t.Errorf("content %q", b)
			}
			checkPerm(t, filepath.Join(root, "old"), 0o660, gid)
		})
	}
}

func TestWriteFileRefusals(t *testing.T) {
	root := t.TempDir()
	outside := t.TempDir()
	mustWrite(t, filepath.Join(outside, "target"), "keep", 0o600)
	os.Symlink(filepath.Join(outside, "target"), filepath.Join(root, "link"))
	os.Symlink(outside, filepath.Join(root, "linkdir"))
	d := mustOpen(t, root)
	if err := d.WriteFile("link", []byte("evil"), Perm{GID: -1}); !errors.Is(err, ErrSymlink) {
		t.Errorf("symlink: got %v", err)
	}
	if err := d.WriteFile("linkdir/target", []byte("evil"), Perm{GID: -1}); !errors.Is(err, ErrSymlink) {
		t.Errorf("symlink dir: got %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(outside, "target")); string(b) != "keep" {
		t.Errorf("target changed: %q", b)
	}
	if err := unix.Mkfifo(filepath.Join(root, "fifo"), 0o600); err == nil {
		if err := d.WriteFile("fifo", []byte("x"), Perm{GID: -1}); !errors.Is(err, ErrNotRegular) {
			t.Errorf("fifo: got %v", err)
		}
	}
	// A hard-linked file: the other name keeps its content.
	mustWrite(t, filepath.Join(root, "orig"), "original", 0o600)
	if err := d.Link("orig", "twin"); err != nil {
		t.Fatal(err)
	}
	if err := d.WriteFile("twin", []byte("new"), Perm{GID: -1}); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "orig")); string(b) != "original" {
		t.Errorf("write through hard link changed the other name: %q", b)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "twin")); string(b) != "new" {
		t.Errorf("twin: %q", b)
	}
	if err := d.Link("link", "x"); !errors.Is(err, ErrSymlink) {
		t.Errorf("Link symlink: %v", err)
	}
}

func checkPerm(t *testing.T, p string, mode uint32, gid int) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		t.Fatal(err)
	}
	if st.Mode&0o7777 != mode {
		t.Errorf("%s: mode %o, want %o", p, st.Mode&0o7777, mode)
	}
	if gid >= 0 && int(st.Gid) != gid {
		t.Errorf("%s: gid %d, want %d", p, st.Gid, gid)
	}
	if isRoot() && st.Uid != 0 {
		t.Errorf("%s: uid %d, want 0", p, st.Uid)
	}
}

func TestMkdirSetPerm(t *testing.T) {
	root := t.TempDir()
	d := mustOpen(t, root)
	gid := os.Getgid()
	if err := d.Mkdir("sub", Perm{GID: gid}); err != nil {
		t.Fatal(err)
	}
	checkPerm(t, filepath.Join(root, "sub"), 0o770, gid)
	if err := d.Mkdir("sub", Perm{GID: gid}); !errors.Is(err, fs.ErrExist) {
		t.Errorf("Mkdir existing: %v", err)
	}
	mustWrite(t, filepath.Join(root, "f"), "x", 0o755)
	if err := d.setPerm("f", Perm{GID: gid}); err != nil {
		t.Fatal(err)
	}
	checkPerm(t, filepath.Join(root, "f"), 0o660, gid)
	os.Chmod(root, 0o1777)
	if err := d.setPerm(".", Perm{GID: gid}); err != nil {
		t.Fatal(err)
	}
	checkPerm(t, root, 0o770, gid)
	os.Chmod(root, 0o755)
	os.Symlink("f", filepath.Join(root, "l"))
	if err := d.setPerm("l", Perm{GID: gid}); !errors.Is(err, ErrSymlink) {
		t.Errorf("setPerm symlink: %v", err)
	}
}

// makeRepo builds a small repository-like tree with 0644/0755 modes.
func makeRepo(t *testing.T, root string) {
	mustWrite(t, filepath.Join(root, "NVTOK.DAT"), strings.Repeat("n", 232), 0o644)
	mustWrite(t, filepath.Join(root, "MK_SO"), strings.Repeat("s", 48), 0o644)
	mustWrite(t, filepath.Join(root, "MK_USER"), strings.Repeat("u", 48), 0o644)
	mustWrite(t, filepath.Join(root, "TOK_OBJ", "OBJ.IDX"), "00000000\n10000000\n", 0o644)
	mustWrite(t, filepath.Join(root, "TOK_OBJ", "00000000"), "obj0", 0o644)
	mustWrite(t, filepath.Join(root, "TOK_OBJ", "10000000"), "", 0o644)
	mustWrite(t, filepath.Join(root, ".hidden", "deep", "file"), "deep", 0o600)
	os.Chmod(filepath.Join(root, "TOK_OBJ"), 0o755)
}

func TestCopyTree(t *testing.T) {
	for _, gid := range testGIDs(t) {
		t.Run(fmt.Sprint("gid", gid), func(t *testing.T) {
			base := t.TempDir()
			srcPath := filepath.Join(base, "swtok")
			makeRepo(t, srcPath)
			src := mustOpen(t, srcPath)
			parent := mustOpen(t, base)
			var seen []string
			err := CopyTreeWith(src, parent, "swtok_PKCSTOK_MIGRATE_TMP", Perm{GID: gid}, CopyOptions{OnFile: func(rel string) { seen = append(seen, rel) }})
			if err != nil {
				t.Fatal(err)
			}
			dst := filepath.Join(base, "swtok_PKCSTOK_MIGRATE_TMP")
			var files int
			filepath.Walk(srcPath, func(p string, info os.FileInfo, err error) error {
				if err != nil {
					t.Fatal(err)
				}
				rel, _ := filepath.Rel(srcPath, p)
				q := filepath.Join(dst, rel)
				if info.IsDir() {
					checkPerm(t, q, 0o770, gid)
					return nil
				}
				files++
				checkPerm(t, q, 0o660, gid)
				a, _ := os.ReadFile(p)
				b, err := os.ReadFile(q)
				if err != nil || !bytes.Equal(a, b) {
					t.Errorf("%s: content differs (%v)", rel, err)
				}
				return nil
			})
			if files != 7 || len(seen) != files {
				t.Errorf("files %d, callbacks %v", files, seen)
			}
			// The source is untouched.
			checkPerm(t, filepath.Join(srcPath, "NVTOK.DAT"), 0o644, -1)
			if err := CopyTreeWith(src, parent, "swtok_PKCSTOK_MIGRATE_TMP", Perm{GID: gid}, CopyOptions{}); !errors.Is(err, fs.ErrExist) {
				t.Errorf("existing destination: %v", err)
			}
			if _, err := os.Stat(filepath.Join(dst, "NVTOK.DAT")); err != nil {
				t.Errorf("existing destination was damaged: %v", err)
			}
		})
	}
}

func TestCopyTreeRefusesSpecialsAndCleansUp(t *testing.T) {
	cases := map[string]func(t *testing.T, src string){
		"symlink-top": func(t *testing.T, src string) {
			os.Symlink("/etc/passwd", filepath.Join(src, "zz-link"))
		},
		"symlink-deep": func(t *testing.T, src string) {
			os.Symlink("00000000", filepath.Join(src, "TOK_OBJ", "zz-link"))
		},
		"symlink-dir": func(t *testing.T, src string) {
			os.Symlink(t.TempDir(), filepath.Join(src, "TOK_OBJ", "linkdir"))
		},
		"dangling-symlink": func(t *testing.T, src string) {
			os.Symlink("/nonexistent", filepath.Join(src, "TOK_OBJ", "dangling"))
		},
		"fifo": func(t *testing.T, src string) {
			if err := unix.Mkfifo(filepath.Join(src, "TOK_OBJ", "zz-fifo"), 0o600); err != nil {
				t.Skip(err)
			}
		},
		"socket": func(t *testing.T, src string) {
			if err := unix.Mknod(filepath.Join(src, "zz-sock"), unix.S_IFSOCK|0o600, 0); err != nil {
				t.Skip(err)
			}
		},
	}
	for name, setup := range cases {
		t.Run(name, func(t *testing.T) {
			base := t.TempDir()
			srcPath := filepath.Join(base, "swtok")
			makeRepo(t, srcPath)
			setup(t, srcPath)
			want := ErrSymlink
			if name == "fifo" || name == "socket" {
				want = ErrNotRegular
			}
			done := make(chan error, 1)
			go func() {
				done <- CopyTreeWith(mustOpen(t, srcPath), mustOpen(t, base), "tmp", Perm{GID: -1}, CopyOptions{})
			}()
			select {
			case err := <-done:
				if !errors.Is(err, want) {
					t.Fatalf("got %v, want %v", err, want)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("CopyTreeWith hangs")
			}
			if _, err := os.Lstat(filepath.Join(base, "tmp")); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("partial copy left behind: %v", err)
			}
			if _, err := os.Stat(filepath.Join(srcPath, "TOK_OBJ", "00000000")); err != nil {
				t.Errorf("source damaged: %v", err)
			}
		})
	}
}

func TestCopyTreeIntoItself(t *testing.T) {
	base := t.TempDir()
	makeRepo(t, base)
	d := mustOpen(t, base)
	if err := CopyTreeWith(d, d, "copy", Perm{GID: -1}, CopyOptions{}); err == nil {
		t.Fatal("copying a directory into itself succeeded")
	}
	if _, err := os.Lstat(filepath.Join(base, "copy")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("partial copy left behind: %v", err)
	}
}

func TestExchange(t *testing.T) {
	base := t.TempDir()
	mustWrite(t, filepath.Join(base, "a", "which"), "a", 0o600)
	mustWrite(t, filepath.Join(base, "b", "which"), "b", 0o600)
	d := mustOpen(t, base)
	if err := d.Exchange("a", "b"); err != nil {
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) {
			t.Skip("RENAME_EXCHANGE not supported here:", err)
		}
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(base, "a", "which")); string(b) != "b" {
		t.Errorf("a holds %q", b)
	}
	if b, _ := os.ReadFile(filepath.Join(base, "b", "which")); string(b) != "a" {
		t.Errorf("b holds %q", b)
	}
	if err := d.Exchange("a", "missing"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("exchange with missing: %v", err)
	}
}

func TestRenameRemove(t *testing.T) {
	base := t.TempDir()
	mustWrite(t, filepath.Join(base, "repo", "f"), "x", 0o600)
	os.Mkdir(filepath.Join(base, "repo_BAK"), 0o700)
	d := mustOpen(t, base)
	if err := d.RenameNoReplace("repo", "repo_BAK"); !errors.Is(err, fs.ErrExist) {
		t.Errorf("RenameNoReplace onto existing: %v", err)
	}
	if _, err := os.Stat(filepath.Join(base, "repo", "f")); err != nil {
		t.Errorf("source gone: %v", err)
	}
	if err := d.Remove("repo_BAK"); err != nil {
		t.Fatal(err)
	}
	if err := d.RenameNoReplace("repo", "repo_BAK"); err != nil {
		t.Fatal(err)
	}
	if err := d.Rename("repo_BAK/f", "g"); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(base, "g")); err != nil || string(b) != "x" {
		t.Errorf("g: %q %v", b, err)
	}
	if err := d.Remove("g"); err != nil {
		t.Fatal(err)
	}
	if err := d.Remove("g"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Remove missing: %v", err)
	}
	if err := d.Sync(); err != nil {
		t.Error(err)
	}
	if err := d.Syncfs(); err != nil {
		t.Error(err)
	}
}

func TestRemoveAllDoesNotFollowSymlinks(t *testing.T) {
	base := t.TempDir()
	outside := t.TempDir()
	mustWrite(t, filepath.Join(outside, "keys", "precious"), "keep me", 0o600)
	mustWrite(t, filepath.Join(outside, "file"), "keep me too", 0o600)
	tmp := filepath.Join(base, "repo_PKCSTOK_MIGRATE_TMP")
	mustWrite(t, filepath.Join(tmp, "TOK_OBJ", "x"), "x", 0o600)
	os.Symlink(filepath.Join(outside, "keys"), filepath.Join(tmp, "dirlink"))
	os.Symlink(filepath.Join(outside, "keys"), filepath.Join(tmp, "TOK_OBJ", "deeplink"))
	os.Symlink(filepath.Join(outside, "file"), filepath.Join(tmp, "filelink"))
	os.Chmod(filepath.Join(tmp, "TOK_OBJ"), 0) // root ignores this; non-root cannot list: chmod back
	os.Chmod(filepath.Join(tmp, "TOK_OBJ"), 0o700)
	// A symlink as the top entry itself.
	os.Symlink(filepath.Join(outside, "keys"), filepath.Join(base, "toplink"))
	d := mustOpen(t, base)

	if err := d.RemoveAll("repo_PKCSTOK_MIGRATE_TMP"); err != nil {
		t.Fatal(err)
	}
	if err := d.RemoveAll("toplink"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(tmp); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("tmp still there: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(base, "toplink")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("toplink still there: %v", err)
	}
	for _, p := range []string{filepath.Join(outside, "keys", "precious"), filepath.Join(outside, "file")} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("symlink target removed: %v", err)
		}
	}
	if err := d.RemoveAll("missing"); err != nil {
		t.Errorf("missing: %v", err)
	}
	if err := d.RemoveAll("missing/deeper"); err != nil {
		t.Errorf("missing parent: %v", err)
	}
	os.Symlink(outside, filepath.Join(base, "via"))
	if err := d.RemoveAll("via/keys"); !errors.Is(err, ErrSymlink) {
		t.Errorf("RemoveAll through a symlinked parent: %v", err)
	}
	if _, err := os.Stat(filepath.Join(outside, "keys", "precious")); err != nil {
		t.Errorf("removed through symlinked parent: %v", err)
	}
	if err := d.RemoveAll("."); !errors.Is(err, errBadName) {
		t.Errorf("RemoveAll(.): %v", err)
	}
}

func TestTryLock(t *testing.T) {
	base := t.TempDir()
	a := mustOpen(t, base)
	if err := a.TryLock(); err != nil {
		t.Fatal(err)
	}
	b := mustOpen(t, base)
	if err := b.TryLock(); !errors.Is(err, ErrLocked) {
		t.Fatalf("second lock: got %v, want ErrLocked", err)
	}
	// Another process sees it too.
	if flock, err := exec.LookPath("flock"); err == nil {
		out, err := exec.Command(flock, "-n", "-x", base, "true").CombinedOutput()
		if err == nil {
			t.Errorf("flock(1) got the lock while we hold it: %s", out)
		}
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.TryLock(); err != nil {
		t.Fatalf("lock after release: %v", err)
	}
	if err := b.TryLock(); err != nil {
		t.Fatalf("relocking own lock: %v", err)
	}
}

func TestLookupGroup(t *testing.T) {
	if gid, err := LookupGroup("root"); err != nil || gid != 0 {
		t.Errorf("root: %d %v", gid, err)
	}
	if _, err := LookupGroup("no-such-group-pkcstok"); !errors.Is(err, errGroupNotFound) {
		t.Errorf("unknown: %v", err)
	}
	if _, err := LookupGroup(""); !errors.Is(err, errGroupNotFound) {
		t.Errorf("empty: %v", err)
	}
}

func digest(t *testing.T, p string) string {
	t.Helper()
	d, err := OpenDir(p)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	h := sha256.New()
	if err := TreeDigest(d, h); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", h.Sum(nil))
}

func TestTreeDigest(t *testing.T) {
	base := t.TempDir()
	makeRepo(t, base)
	d0 := digest(t, base)
	if d1 := digest(t, base); d1 != d0 {
		t.Fatal("digest not stable")
	}
	// Times do not matter.
	os.Chtimes(filepath.Join(base, "MK_SO"), time.Unix(1, 0), time.Unix(1, 0))
	if digest(t, base) != d0 {
		t.Error("digest depends on times")
	}
	change := func(what string, f func(), undo func()) {
		f()
		if digest(t, base) == d0 {
			t.Errorf("%s does not change the digest", what)
		}
		undo()
		if digest(t, base) != d0 {
			t.Errorf("undoing %s does not restore the digest", what)
		}
	}
	obj := filepath.Join(base, "TOK_OBJ", "00000000")
	change("one byte", func() { os.WriteFile(obj, []byte("obj1"), 0) }, func() { os.WriteFile(obj, []byte("obj0"), 0) })
	change("file mode", func() { os.Chmod(obj, 0o600) }, func() { os.Chmod(obj, 0o644) })
	change("dir mode", func() { os.Chmod(filepath.Join(base, "TOK_OBJ"), 0o700) }, func() { os.Chmod(filepath.Join(base, "TOK_OBJ"), 0o755) })
	change("new empty file", func() { os.WriteFile(filepath.Join(base, "TOK_OBJ", "OBNEW"), nil, 0o644) }, func() { os.Remove(filepath.Join(base, "TOK_OBJ", "OBNEW")) })
	change("rename", func() { os.Rename(obj, obj+"x") }, func() { os.Rename(obj+"x", obj) })
	change("appended byte", func() { os.WriteFile(obj, []byte("obj0\x00"), 0) }, func() { os.WriteFile(obj, []byte("obj0"), 0) })

	os.Symlink("NVTOK.DAT", filepath.Join(base, "link"))
	dd := mustOpen(t, base)
	if err := TreeDigest(dd, sha256.New()); !errors.Is(err, ErrSymlink) {
		t.Errorf("symlink: %v", err)
	}
}

func BenchmarkCopyTree(b *testing.B) {
	const n = 10000
	base := b.TempDir()
	src := filepath.Join(base, "src")
	if err := os.MkdirAll(filepath.Join(src, "TOK_OBJ"), 0o755); err != nil {
		b.Fatal(err)
	}
	content := bytes.Repeat([]byte{0xA5}, 300)
	for i := 0; i < n; i++ {
		if err := os.WriteFile(filepath.Join(src, "TOK_OBJ", fmt.Sprintf("OB%06d", i)), content, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	sd, err := OpenDir(src)
	if err != nil {
		b.Fatal(err)
	}
	defer sd.Close()
	pd, err := OpenDir(base)
	if err != nil {
		b.Fatal(err)
	}
	defer pd.Close()
	p := Perm{GID: os.Getgid()}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := CopyTreeWith(sd, pd, "dst", p, CopyOptions{}); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if err := pd.RemoveAll("dst"); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/n, "ns/file")
}

// The copy's DstDigest is what TreeDigest of the finished copy gives and SrcDigest what it
// gives of the source, though neither is read again; Verify sees exactly the bytes written;
// Transform output is what lands; every file under a 0022 umask still gets 0660 and the
// token group, and no directory keeps the setgid bit used during the copy.
func TestCopyTreeDigestsAndVerify(t *testing.T) {
	for _, gid := range testGIDs(t) {
		t.Run(fmt.Sprint("gid", gid), func(t *testing.T) {
			base := t.TempDir()
			srcPath := filepath.Join(base, "swtok")
			makeRepo(t, srcPath)
			src := mustOpen(t, srcPath)
			parent := mustOpen(t, base)
			srcH, dstH := sha256.New(), sha256.New()
			verified := map[string][]byte{}
			var vmu = make(chan struct{}, 1)
			var transformed []string
			err := CopyTreeWith(src, parent, "tmp", Perm{GID: gid}, CopyOptions{
				Workers:   4,
				SrcDigest: srcH,
				DstDigest: dstH,
				// NVTOK.DAT's new content is known last: written after the rest.
				Defer: func(rel string) bool { return rel == "NVTOK.DAT" },
				Transform: func(rel string, data []byte) ([]byte, error) {
					vmu <- struct{}{}
					transformed = append(transformed, rel)
					<-vmu
					if rel == "NVTOK.DAT" {
						return []byte("new token data"), nil
					}
					return data, nil
				},
				Verify: func(rel string, w []byte) error {
					vmu <- struct{}{}
					verified[rel] = bytes.Clone(w)
					<-vmu
					return nil
				},
			})
			if err != nil {
				t.Fatal(err)
			}
			want := sha256.New()
			if err := TreeDigest(src, want); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(srcH.Sum(nil), want.Sum(nil)) {
				t.Error("SrcDigest differs from TreeDigest of the source")
			}
			dst := mustOpen(t, filepath.Join(base, "tmp"))
			want.Reset()
			if err := TreeDigest(dst, want); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(dstH.Sum(nil), want.Sum(nil)) {
				t.Error("DstDigest differs from TreeDigest of the finished copy")
			}
			if got := string(verified["NVTOK.DAT"]); got != "new token data" {
				t.Errorf("Verify saw %q for NVTOK.DAT", got)
			}
			if len(verified) != 7 {
				t.Errorf("Verify saw %d files, want 7", len(verified))
			}
			if len(transformed) != 7 || transformed[6] != "NVTOK.DAT" {
				t.Errorf("transformed %q: the deferred NVTOK.DAT must come last", transformed)
			}
			b, _ := os.ReadFile(filepath.Join(base, "tmp", "NVTOK.DAT"))
			if string(b) != "new token data" {
				t.Errorf("NVTOK.DAT in the copy: %q", b)
			}
			filepath.Walk(filepath.Join(base, "tmp"), func(p string, info os.FileInfo, err error) error {
				if err != nil {
					t.Fatal(err)
				}
				if info.IsDir() {
					checkPerm(t, p, 0o770, gid)
				} else {
					checkPerm(t, p, 0o660, gid)
				}
				return nil
			})
		})
	}
}

// A Verify error stops the copy and removes it.
func TestCopyTreeVerifyFails(t *testing.T) {
	base := t.TempDir()
	makeRepo(t, filepath.Join(base, "swtok"))
	src := mustOpen(t, filepath.Join(base, "swtok"))
	parent := mustOpen(t, base)
	boom := errors.New("does not decrypt")
	err := CopyTreeWith(src, parent, "tmp", Perm{GID: os.Getgid()}, CopyOptions{Verify: func(rel string, w []byte) error {
		if strings.HasPrefix(rel, "TOK_OBJ/") {
			return boom
		}
		return nil
	}})
	if !errors.Is(err, boom) {
		t.Fatalf("err %v", err)
	}
	if _, err := os.Lstat(filepath.Join(base, "tmp")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("partial copy left behind: %v", err)
	}
}

// TestWalkKeepsAccessTimes: reading a repository (the plan's scan, the copy) leaves its
// files' access times as they were, also where relatime would update them (atime older than
// mtime).
func TestWalkKeepsAccessTimes(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "NVTOK.DAT")
	mustWrite(t, f, "token", 0o600)
	old := time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC)
	if err := os.Chtimes(f, old, time.Now()); err != nil {
		t.Fatal(err)
	}
	d, err := OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	read := 0
	err = Walk(d, Visitor{File: func(e Entry, _ any, data []byte) (any, error) {
		read++
		if string(data) != "token" {
			t.Errorf("read %q", data)
		}
		return nil, nil
	}})
	if err != nil || read != 1 {
		t.Fatalf("walk: %v, %d files read", err, read)
	}
	var st unix.Stat_t
	if err := unix.Stat(f, &st); err != nil {
		t.Fatal(err)
	}
	if st.Atim.Sec != old.Unix() {
		t.Errorf("atime %v after the walk, want %v", time.Unix(st.Atim.Sec, 0).UTC(), old)
	}
}
