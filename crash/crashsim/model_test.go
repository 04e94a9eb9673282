package crashsim

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// tb writes strace -f -y -xx lines for a process whose model root is /r.
type tb struct{ lines []string }

func fdArg(fd int, p string) string { return fmt.Sprintf("%d<%s>", fd, hx(p)) }

func (b *tb) add(format string, args ...any) *tb {
	b.lines = append(b.lines, "42 "+fmt.Sprintf(format, args...))
	return b
}

func (b *tb) openat(dirfd int, dir, name, flags string, mode int, ret int, retPath string) *tb {
	d := "AT_FDCWD<" + hx("/") + ">"
	if dirfd >= 0 {
		d = fdArg(dirfd, dir)
	}
	m := ""
	if mode >= 0 {
		m = fmt.Sprintf(", %#o", mode)
		if mode == 0 {
			m = ", 000"
		}
	}
	return b.add(`openat(%s, "%s", %s%s) = %s`, d, hx(name), flags, m, fdArg(ret, retPath))
}

func (b *tb) write(fd int, p, data string) *tb {
	return b.add(`write(%s, "%s", %d) = %d`, fdArg(fd, p), hx(data), len(data), len(data))
}

func (b *tb) call(name string, fd int, p string, rest string) *tb {
	if rest != "" {
		rest = ", " + rest
	}
	return b.add(`%s(%s%s) = 0`, name, fdArg(fd, p), rest)
}

func (b *tb) str(s string) string { return `"` + hx(s) + `"` }

func (b *tb) sim(t *testing.T, initial *Tree) *Sim {
	t.Helper()
	calls, err := ParseTrace(strings.NewReader(strings.Join(b.lines, "\n") + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := Replay(calls, initial, Options{Root: "/r", Umask: 0o022})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// base is /r with conf (a file "old") and dir d.
func base() *Tree {
	return &Tree{Root: Attr{Mode: 0o755}, Entries: []Entry{
		{Path: "conf", Kind: File, Attr: Attr{Mode: 0o644}, Data: []byte("old"), Ino: 1},
		{Path: "d", Kind: Dir, Attr: Attr{Mode: 0o770, GID: 105}, Ino: 2},
	}}
}

// states returns the strict and lenient tree of every cut.
func states(t *testing.T, s *Sim) (strict, lenient []*Tree) {
	t.Helper()
	err := s.Cuts(func(c *Cut) (bool, error) {
		st, err := c.Strict()
		if err != nil {
			return false, err
		}
		le, err := c.Lenient()
		if err != nil {
			return false, err
		}
		strict, lenient = append(strict, st), append(lenient, le)
		return true, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return strict, lenient
}

func content(t *Tree, p string) string {
	e := t.Lookup(p)
	if e == nil {
		return "<missing>"
	}
	if e.Kind == Dir {
		return "<dir>"
	}
	return string(e.Data)
}

// The conf write of internal/conf: temp file, fsync, hard-link backup, rename, fsync dir.
func confWrite(b *tb, syncFile, syncDir bool) *tb {
	b.openat(-1, "", "/r", "O_RDONLY|O_DIRECTORY", -1, 3, "/r")
	b.openat(3, "/r", "conf_new", "O_WRONLY|O_CREAT|O_EXCL|O_NOFOLLOW|O_CLOEXEC", 0o600, 4, "/r/conf_new")
	b.write(4, "/r/conf_new", "new")
	b.call("fchmod", 4, "/r/conf_new", "0644")
	if syncFile {
		b.call("fsync", 4, "/r/conf_new", "")
	}
	b.call("close", 4, "/r/conf_new", "")
	b.add(`linkat(%s, %s, %s, %s, 0) = 0`, fdArg(3, "/r"), b.str("conf"), fdArg(3, "/r"), b.str("conf_BAK"))
	b.add(`renameat(%s, %s, %s, %s) = 0`, fdArg(3, "/r"), b.str("conf_new"), fdArg(3, "/r"), b.str("conf"))
	if syncDir {
		b.call("fsync", 3, "/r", "")
	}
	return b
}

func TestStrictKeepsOnlyWhatBarriersCovered(t *testing.T) {
	for _, c := range []struct {
		syncFile, syncDir bool
		endStrict         string // the conf a power cut right after the run leaves
	}{
		{true, true, "new"},
		{false, true, ""},     // the rename is durable, the content is not: an empty conf
		{true, false, "old"},  // nothing of the directory is durable
		{false, false, "old"}, // nothing at all
	} {
		t.Run(fmt.Sprintf("file=%v,dir=%v", c.syncFile, c.syncDir), func(t *testing.T) {
			s := confWrite(&tb{}, c.syncFile, c.syncDir).sim(t, base())
			strict, lenient := states(t, s)
			last := len(strict) - 1
			if got := content(strict[last], "conf"); got != c.endStrict {
				t.Errorf("strict end: conf %q, want %q", got, c.endStrict)
			}
			if got := content(lenient[last], "conf"); got != "new" {
				t.Errorf("lenient end: conf %q", got)
			}
			final, _ := s.Final()
			if d := final.Diff(lenient[last]); len(d) > 0 {
				t.Errorf("lenient end differs from the final tree: %v", d)
			}
			if got := content(strict[0], "conf"); got != "old" || len(strict[0].Diff(base())) > 0 {
				t.Errorf("cut 0 is not the initial tree: %v", strict[0].Diff(base()))
			}
			// The backup is the original inode: a hard link, durable with the directory.
			if c.syncDir {
				if bak := strict[last].Lookup("conf_BAK"); bak == nil || string(bak.Data) != "old" {
					t.Errorf("conf_BAK: %+v", bak)
				}
			}
		})
	}
}

func TestMixIsAPrefixOfEachAspect(t *testing.T) {
	s := confWrite(&tb{}, true, true).sim(t, base())
	// Cut after the rename, before the directory fsync: pending in /r are the create of
	// conf_new, the link and the rename, in that order. Every mix must be one of the four
	// prefixes of that list; the file itself is durable.
	seen := map[string]bool{}
	err := s.Cuts(func(c *Cut) (bool, error) {
		if c.K != len(s.Ops)-1 {
			return true, nil
		}
		for seed := int64(0); seed < 200; seed++ {
			m, err := c.Mix(seed)
			if err != nil {
				return false, err
			}
			again, _ := c.Mix(seed)
			if m.Hash() != again.Hash() {
				return false, errors.New("the same seed gave two states")
			}
			key := fmt.Sprintf("new=%s bak=%s conf=%s", content(m, "conf_new"), content(m, "conf_BAK"), content(m, "conf"))
			seen[key] = true
		}
		return false, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{
		"new=<missing> bak=<missing> conf=old": true, // nothing
		"new=new bak=<missing> conf=old":       true, // create
		"new=new bak=old conf=old":             true, // create, link
		"new=<missing> bak=old conf=new":       true, // create, link, rename
	}
	for k := range seen {
		if !want[k] {
			t.Errorf("a mix that is no prefix: %s", k)
		}
	}
	if len(seen) != len(want) {
		t.Errorf("mixes gave %d of the %d prefixes: %v", len(seen), len(want), seen)
	}
}

func TestExchangeSyncfsAndModes(t *testing.T) {
	b := &tb{}
	b.openat(-1, "", "/r", "O_RDONLY|O_DIRECTORY", -1, 3, "/r")
	b.add(`mkdirat(%s, %s, 000) = 0`, fdArg(3, "/r"), b.str("t"))
	b.openat(3, "/r", "t", "O_RDONLY|O_DIRECTORY", -1, 5, "/r/t")
	b.call("fchown", 5, "/r/t", "-1, 105")
	b.call("fchmod", 5, "/r/t", "0770")
	b.openat(5, "/r/t", "f", "O_WRONLY|O_CREAT|O_EXCL", 0o666, 6, "/r/t/f")
	b.write(6, "/r/t/f", "abc")
	b.call("syncfs", 5, "/r/t", "")
	b.add(`renameat2(%s, %s, %s, %s, RENAME_EXCHANGE) = 0`, fdArg(3, "/r"), b.str("d"), fdArg(3, "/r"), b.str("t"))
	b.call("fsync", 3, "/r", "")
	s := b.sim(t, base())
	strict, _ := states(t, s)
	// Before the syncfs nothing of the new directory is durable.
	if e := strict[5].Lookup("t"); e != nil {
		t.Errorf("t durable before any barrier: %+v", e)
	}
	// After it, everything: mode less umask for the file, the chmod for the directory.
	after := strict[6]
	if e := after.Lookup("t/f"); e == nil || string(e.Data) != "abc" || e.Mode != 0o644 {
		t.Errorf("t/f after syncfs: %+v", e)
	}
	if e := after.Lookup("t"); e == nil || e.Mode != 0o770 || e.GID != 105 {
		t.Errorf("t after syncfs: %+v", e)
	}
	last := strict[len(strict)-1]
	if content(last, "d/f") != "abc" || last.Lookup("t/f") != nil {
		t.Errorf("exchange not durable after the directory fsync: %v", last.Entries)
	}
	if strict[len(strict)-2].Lookup("d/f") != nil {
		t.Errorf("exchange durable before the directory fsync")
	}
}

func TestFdatasyncSparesMetadata(t *testing.T) {
	b := &tb{}
	b.openat(-1, "", "/r/conf", "O_WRONLY|O_TRUNC", -1, 3, "/r/conf")
	b.write(3, "/r/conf", "xy")
	b.call("fchmod", 3, "/r/conf", "0600")
	b.call("fdatasync", 3, "/r/conf", "")
	strict, _ := states(t, b.sim(t, base()))
	e := strict[len(strict)-1].Lookup("conf")
	if string(e.Data) != "xy" || e.Mode != 0o644 {
		t.Errorf("after fdatasync: %q %04o, want the data and the old mode", e.Data, e.Mode)
	}
}

func TestOffsetsDupAppendPwrite(t *testing.T) {
	b := &tb{}
	b.openat(-1, "", "/r/conf", "O_WRONLY|O_TRUNC", -1, 3, "/r/conf")
	b.write(3, "/r/conf", "ab")
	b.add(`dup(%s) = 4<%s>`, fdArg(3, "/r/conf"), hx("/r/conf"))
	b.write(4, "/r/conf", "cd") // shares the offset: at 2
	b.add(`pwrite64(%s, "%s", 1, 0) = 1`, fdArg(3, "/r/conf"), hx("X"))
	b.add(`lseek(%s, 1, SEEK_SET) = 1`, fdArg(3, "/r/conf"))
	b.write(3, "/r/conf", "Y")
	b.openat(-1, "", "/r/conf", "O_WRONLY|O_APPEND", -1, 5, "/r/conf")
	b.write(5, "/r/conf", "Z")
	b.call("ftruncate", 5, "/r/conf", "6")
	final, err := b.sim(t, base()).Final()
	if err != nil {
		t.Fatal(err)
	}
	if got := content(final, "conf"); got != "XYcdZ\x00" {
		t.Errorf("conf %q", got)
	}
}

func TestReadsMoveTheOffset(t *testing.T) {
	b := &tb{}
	b.openat(-1, "", "/r/conf", "O_RDWR", -1, 3, "/r/conf")
	b.add(`read(0x3, 0x7ffc65ac40a8, 0x1) = 0x1`) // strace -e raw=read: no buffer
	b.write(3, "/r/conf", "X")
	b.add(`read(0, 0xc000012345, 0x1000) = 0x9`) // standard input: outside the model
	b.add(`preadv2(0x3, 0xc000010000, 0x1, 0, 0) = 0x1`)
	b.add(`preadv2(0x3, 0xc000010000, 0x1, 0xffffffffffffffff, 0) = 0x1`)
	b.add(`pwritev2(%s, [{iov_base="%s", iov_len=1}], 1, -1, 0) = 1`, fdArg(3, "/r/conf"), hx("Y"))
	final, err := b.sim(t, base()).Final()
	if err != nil {
		t.Fatal(err)
	}
	// read 1, write X at 1, pread at 0 (no move), preadv2 at -1 reads 1, pwritev2 at -1.
	if got := content(final, "conf"); got != "oXdY" {
		t.Errorf("conf %q, want oXdY", got)
	}
}

func TestUmaskCalls(t *testing.T) {
	b := &tb{}
	b.openat(-1, "", "/r/a", "O_WRONLY|O_CREAT|O_EXCL", 0o666, 3, "/r/a")
	b.add(`umask(077) = 022`)
	b.add(`umask(007) = 077`)
	b.openat(-1, "", "/r/b", "O_WRONLY|O_CREAT|O_EXCL", 0o666, 4, "/r/b")
	final, _ := b.sim(t, base()).Final()
	if a, bb := final.Lookup("a"), final.Lookup("b"); a.Mode != 0o644 || bb.Mode != 0o660 {
		t.Errorf("modes %04o %04o, want 0644 (umask 022) and 0660 (umask 007)", a.Mode, bb.Mode)
	}
}

func TestSetgidDirectoryAndChown(t *testing.T) {
	initial := base()
	initial.Entries[1].Mode = 0o2770
	b := &tb{}
	b.openat(-1, "", "/r/d/f", "O_WRONLY|O_CREAT|O_EXCL", 0o4755, 3, "/r/d/f")
	b.add(`mkdirat(AT_FDCWD<%s>, "%s", 0777) = 0`, hx("/"), hx("/r/d/s"))
	b.call("fchown", 3, "/r/d/f", "7, -1")
	final, _ := b.sim(t, initial).Final()
	if e := final.Lookup("d/f"); e.GID != 105 || e.UID != 7 || e.Mode != 0o755 {
		t.Errorf("d/f: %+v (group of the setgid directory, setuid cleared by chown)", e.Attr)
	}
	if e := final.Lookup("d/s"); e.GID != 105 || e.Mode != 0o2755 {
		t.Errorf("d/s: %+v (inherits group and setgid)", e.Attr)
	}
}

func TestReplayIgnoresOutsideAndRefusesWhatItCannotModel(t *testing.T) {
	b := &tb{}
	b.openat(-1, "", "/etc/x", "O_WRONLY|O_CREAT", 0o644, 3, "/etc/x")
	b.write(3, "/etc/x", "outside")
	b.write(1, "pipe:[7]", "stdout")
	b.add(`unlinkat(%s, "%s", 0) = 0`, fdArg(9, "/dev/shm"), hx("seg"))
	b.add(`renameat(AT_FDCWD<%s>, "%s", AT_FDCWD<%s>, "%s") = 0`, hx("/"), hx("/etc/a"), hx("/"), hx("/etc/b"))
	b.add(`unlinkat(%s, "%s", 0) = -1 ENOENT (No such file or directory)`, fdArg(9, "/r"), hx("none"))
	s := b.sim(t, base())
	if len(s.Ops) != 0 {
		t.Errorf("ops outside the root: %v", s.Ops)
	}

	bad := map[string]string{
		"rename out of the model":  fmt.Sprintf(`42 renameat(AT_FDCWD<%s>, "%s", AT_FDCWD<%s>, "%s") = 0`, hx("/"), hx("/r/conf"), hx("/"), hx("/etc/conf")),
		"fallocate inside":         fmt.Sprintf(`42 fallocate(%s, 0, 0, 4096) = 0`, fdArg(3, "/r/conf")),
		"symlink inside":           fmt.Sprintf(`42 symlinkat("%s", AT_FDCWD<%s>, "%s") = 0`, hx("x"), hx("/"), hx("/r/l")),
		"truncated buffer":         fmt.Sprintf(`42 openat(AT_FDCWD<%s>, "%s", O_WRONLY) = %s`+"\n"+`42 write(%s, "%s"..., 10) = 10`, hx("/"), hx("/r/conf"), fdArg(3, "/r/conf"), fdArg(3, "/r/conf"), hx("abc")),
		"unlink of a missing name": fmt.Sprintf(`42 unlinkat(AT_FDCWD<%s>, "%s", 0) = 0`, hx("/"), hx("/r/nothere")),
		"descriptor not in model":  fmt.Sprintf(`42 openat(AT_FDCWD<%s>, "%s", O_RDONLY) = %s`, hx("/"), hx("/r/conf"), fdArg(3, "/r/d")),
		"O_TMPFILE":                fmt.Sprintf(`42 openat(AT_FDCWD<%s>, "%s", O_RDWR|O_TMPFILE, 0600) = %s`, hx("/"), hx("/r/d"), fdArg(3, "/r/d/#1 (deleted)")),
		"unknown result inside":    fmt.Sprintf(`42 openat(AT_FDCWD<%s>, "%s", O_WRONLY) = %s`+"\n"+`42 write(%s, "%s", 1) = ?`, hx("/"), hx("/r/conf"), fdArg(3, "/r/conf"), fdArg(3, "/r/conf"), hx("a")),
	}
	for name, tr := range bad {
		calls, err := ParseTrace(strings.NewReader(tr + "\n"))
		if err != nil {
			t.Errorf("%s: parse: %v", name, err)
			continue
		}
		if _, err := Replay(calls, base(), Options{Root: "/r"}); err == nil {
			t.Errorf("%s: replayed without complaint", name)
		} else if !errors.Is(err, errUnsupported) && !errors.Is(err, errModel) {
			t.Errorf("%s: %v is neither unsupported nor a divergence", name, err)
		}
	}
}

func TestSnapshotMaterializeRoundTrip(t *testing.T) {
	uid, gid := os.Getuid(), os.Getgid()
	tr := &Tree{Root: Attr{Mode: 0o750, UID: uid, GID: gid}, Entries: []Entry{
		{Path: "a", Kind: Dir, Attr: Attr{Mode: 0o500, UID: uid, GID: gid}, Ino: 1},
		{Path: "a/x", Kind: File, Attr: Attr{Mode: 0o600, UID: uid, GID: gid}, Data: []byte("x"), Ino: 2},
		{Path: "a-b", Kind: File, Attr: Attr{Mode: 0o000, UID: uid, GID: gid}, Data: []byte{}, Ino: 3},
		{Path: "h", Kind: File, Attr: Attr{Mode: 0o600, UID: uid, GID: gid}, Data: []byte("x"), Ino: 2},
	}}
	sortEntries(tr.Entries)
	dst := filepath.Join(t.TempDir(), "m")
	if err := tr.Materialize(dst); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(filepath.Join(dst, "a"), 0o700) })
	got, err := Snapshot(dst)
	if err != nil {
		t.Fatal(err)
	}
	if d := tr.Diff(got); len(d) > 0 || got.Hash() != tr.Hash() {
		t.Errorf("round trip: %v", d)
	}
	if got.Lookup("h").Ino != got.Lookup("a/x").Ino {
		t.Errorf("hard link lost")
	}
	if err := tr.Materialize(dst); err == nil {
		t.Errorf("materialized over an existing directory")
	}
	os.Symlink("a", filepath.Join(dst, "l"))
	if _, err := Snapshot(dst); err == nil {
		t.Errorf("snapshot took a symlink")
	}
}

func TestWithoutBarrier(t *testing.T) {
	s := confWrite(&tb{}, true, true).sim(t, base())
	fsyncFile := -1
	for i, o := range s.Ops {
		if o.Kind == OpFsync && o.Path == "conf_new" {
			fsyncFile = i
		}
	}
	if _, err := s.WithoutBarrier(0); err == nil {
		t.Errorf("dropped a change, not a barrier")
	}
	w, err := s.WithoutBarrier(fsyncFile)
	if err != nil {
		t.Fatal(err)
	}
	strict, _ := states(t, w)
	if got := content(strict[len(strict)-1], "conf"); got != "" {
		t.Errorf("without the file's fsync the strict end state has conf %q, want it empty", got)
	}
	if len(w.Ops) != len(s.Ops)-1 {
		t.Errorf("%d ops", len(w.Ops))
	}
}

// A rename or exchange between two directories (the in-place switch) is one
// transaction of both: every crash state has it in both directories or in neither, and only
// with what each directory had before it.
func TestCrossDirectoryRenameIsAtomic(t *testing.T) {
	initial := base()
	initial.Entries = append(initial.Entries, Entry{Path: "d/conf", Kind: File, Attr: Attr{Mode: 0o644}, Data: []byte("new"), Ino: 3})
	b := &tb{}
	b.openat(-1, "", "/r/d/x", "O_WRONLY|O_CREAT|O_EXCL", 0o644, 3, "/r/d/x")
	b.add(`renameat2(AT_FDCWD<%s>, "%s", AT_FDCWD<%s>, "%s", RENAME_EXCHANGE) = 0`, hx("/"), hx("/r/d/conf"), hx("/"), hx("/r/conf"))
	b.add(`renameat2(AT_FDCWD<%s>, "%s", AT_FDCWD<%s>, "%s", RENAME_NOREPLACE) = 0`, hx("/"), hx("/r/d/x"), hx("/"), hx("/r/x"))
	sim := b.sim(t, initial)
	final, err := sim.Final()
	if err != nil {
		t.Fatal(err)
	}
	if e := final.Lookup("conf"); e == nil || string(e.Data) != "new" {
		t.Fatalf("conf after the exchange: %+v", e)
	}
	if e := final.Lookup("d/conf"); e == nil || string(e.Data) != "old" {
		t.Fatalf("d/conf after the exchange: %+v", e)
	}
	if final.Lookup("x") == nil || final.Lookup("d/x") != nil {
		t.Fatalf("x was not moved out of d")
	}
	seen := map[string]bool{}
	err = sim.Cuts(func(c *Cut) (bool, error) {
		for seed := int64(0); seed < 40; seed++ {
			st, err := c.Mix(seed)
			if err != nil {
				return false, err
			}
			top, in := st.Lookup("conf"), st.Lookup("d/conf")
			if top == nil || in == nil || string(top.Data) == string(in.Data) {
				return false, fmt.Errorf("cut %d: the exchange is half done: %+v %+v", c.K, top, in)
			}
			x, dx := st.Lookup("x"), st.Lookup("d/x")
			if x != nil && dx != nil {
				return false, fmt.Errorf("cut %d: x in both directories", c.K)
			}
			if x != nil && string(top.Data) != "new" {
				return false, fmt.Errorf("cut %d: the later rename survived without the exchange before it in d", c.K)
			}
			seen[fmt.Sprintf("%s %v %v", top.Data, x != nil, dx != nil)] = true
		}
		return true, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"old false false", "new false true", "new true false"} {
		if !seen[want] {
			t.Errorf("no crash state %q among %v", want, seen)
		}
	}
}
