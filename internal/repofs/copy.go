package repofs

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"fmt"
	"hash"
	"os"
	"path"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"
)

// CopyOptions tune CopyTreeWith.
type CopyOptions struct {
	// OnFile, when not nil, is called after each regular file is copied with its
	// slash-separated path relative to src (never from two goroutines at once).
	OnFile func(rel string)
	// Transform, when not nil, is given each regular file's slash-separated path relative
	// to src and its content, and returns what to write in the copy instead (data itself
	// to copy the file as is). data is only valid during the call. An error stops the copy
	// and is returned wrapped (errors.As finds it). With Workers > 1 it is called from
	// several goroutines at once.
	Transform func(rel string, data []byte) ([]byte, error)
	// Verify, when not nil, is given each file's path and the bytes read back from the new
	// file (through the descriptor it was written with, before it is closed), after the copy
	// checked that they are the bytes it wrote; an error stops the copy like a Transform
	// error.
	Verify func(rel string, written []byte) error
	// SrcDigest and DstDigest, when not nil, receive what TreeDigest would write for the
	// source and for the finished copy, without reading either again. DstDigest describes
	// the copy's root with mode RootMode: the mode it has once in place.
	SrcDigest, DstDigest hash.Hash
	// RootMode is the permission bits the copy's root will have once in place (the caller
	// gives them); 0 means DirMode.
	RootMode uint32
	// Defer, when not nil, names files whose Transform (and so their writing) waits until
	// the rest of their directory, subdirectories included, is copied: files whose new
	// content is still being computed while the others are copied. They are read (and
	// digested) in their turn like the others; their content is kept until then.
	Defer func(rel string) bool
	// BeforeDeferred, when not nil, is called once, before the first deferred file is written
	// (everything else of its directory, subdirectories included, is written by then).
	BeforeDeferred func()
	// Workers is how many files of a directory are copied at once; 0 or 1 copies one file
	// at a time.
	Workers int
	// Mode, when not nil, gives the permission bits of the copy of e, a file or a directory
	// below the root (the source's mode, owner and group are in e); nil gives every file
	// FileMode and every directory DirMode. An error stops the copy.
	Mode func(e Entry) (uint32, error)
	// Skip, when not nil, names regular files that are read (and go into SrcDigest) but are
	// not copied; DstDigest does not describe them.
	Skip func(e Entry) bool
	// Exclude, when not nil, is Visitor.Exclude for the walk of the source: such entries are
	// neither read nor copied nor in either digest.
	Exclude func(rel string) bool
}

// CopyTreeWith copies the directory src to parent/dstName, which must not exist yet (an
// existing entry gives an error satisfying errors.Is(err, fs.ErrExist) and is left alone): it
// creates parent/dstName, fills it with CopyTreeInto and then gives it mode DirMode.
//
// This is the working-copy step of doc/format.md §8.5 with the set_perm rule p (§1.4): in
// the end every directory of the copy is exactly 0770 and every file exactly 0660 (unless
// o.Mode says otherwise), with group p.GID. Owners, times and xattrs are not kept. A symlink
// anywhere gives ErrSymlink, a FIFO, device or socket ErrNotRegular, a file over maxFileSize
// ErrTooLarge; on any error the partial copy is removed. Nothing is fsynced: call Syncfs (or
// Sync) on the result once.
func CopyTreeWith(src *Dir, parent *Dir, dstName string, p Perm, o CopyOptions) error {
	pfd, base, release, err := parent.walkParent(dstName, "mkdir")
	if err != nil {
		return err
	}
	defer release()
	display := parent.join(dstName)
	fd, err := mkdirOpen(pfd, base, display)
	if err != nil {
		return err
	}
	dst := &Dir{fd: fd, path: display}
	defer dst.Close()
	err = prepareRoot(dst, p)
	if err == nil {
		err = CopyTreeInto(src, dst, p, o)
	}
	if err == nil {
		err = dst.Chmod(DirMode)
	}
	if err != nil {
		// dstName did not exist before (mkdir succeeded), so everything below it is ours.
		if rerr := removeAllAt(pfd, base, display, 0, 0); rerr != nil {
			return fmt.Errorf("%w (removing the partial copy failed too: %v)", err, rerr) // rerr names the path
		}
	}
	return err
}

// prepareRoot gives a new copy's root the token group and the setgid bit while it is filled.
func prepareRoot(dst *Dir, p Perm) error {
	if p.GID >= 0 {
		if err := unix.Fchown(dst.fd, -1, p.GID); err != nil {
			return pathErr("chown", dst.path, err)
		}
	}
	return dst.Chmod((&copier{perm: p}).dirModeDuring())
}

// CopyTreeInto copies everything below src into dst, an empty directory the caller made and
// holds open; dst's own mode and group are the caller's (while files are created directly in
// it, it should carry the setgid bit and the token group, see MkdirPrivate). Every source file
// is read once (Walk: openat, fstat, one read, close) and every copy written once: created
// with its final mode and, because the directories of the copy carry the setgid bit until
// their last file is written, with the token group already (openat, write, close; pread with
// Verify). The setgid bit of the directories below dst is cleared when each is done. On an
// error what it created below dst is left there: the caller made dst and removes it.
func CopyTreeInto(src *Dir, dst *Dir, p Perm, o CopyOptions) error {
	root, err := dst.Lstat(".")
	if err != nil {
		return err
	}
	c := &copier{o: o, perm: p, fileChmod: umaskStrips(FileMode), root: root, dirModes: map[string]uint32{}}
	workers := o.Workers
	if workers <= 0 {
		workers = 1
	}
	v := Visitor{
		Workers: workers,
		Digest:  o.SrcDigest,
		Exclude: o.Exclude,
		Dir: func(e Entry, parentState any) (any, error) {
			if e.Rel == "." {
				return &copyDir{fd: dst.fd, display: dst.path, root: true}, nil
			}
			return c.mkSub(parentState.(*copyDir), e)
		},
		DirDone: func(e Entry, state any, err error) error {
			return c.dirDone(state, err)
		},
		File: c.file,
	}
	if o.DstDigest != nil {
		v.Record = c.record
	}
	err = Walk(src, v)
	if err == nil && o.DstDigest != nil {
		// Written in the digest's order only now: a deferred file's record is known last.
		digestStart(o.DstDigest)
		for _, r := range c.records {
			if r.w == nil {
				digestRecord(o.DstDigest, Entry{Rel: r.rel, Mode: unix.S_IFDIR | r.mode}, nil)
				continue
			}
			digestRecord(o.DstDigest, Entry{Rel: r.rel, Mode: unix.S_IFREG | r.w.mode, Size: r.w.size}, r.w.sum[:])
		}
	}
	return err
}

type copier struct {
	o          CopyOptions
	mu         sync.Mutex
	records    []dstRecord // DstDigest's records in order
	beforeOnce sync.Once
	deferred   map[*copyDir][]deferredFile
	perm       Perm
	fileChmod  bool // the umask strips bits of 0660: every new file needs an fchmod
	root       Info // the copy's root, the caller's
	onFileMu   sync.Mutex
	dirModes   map[string]uint32 // each directory's final mode, worked out once (dirMode)
}

// copyDir is the state of one directory of the copy.
type copyDir struct {
	fd      int
	display string
	root    bool   // the caller's directory: neither closed nor chmodded here
	mode    uint32 // the final permission bits
}

// dirMode is modeOf for a directory below the root, asked once per directory: the digest's
// record and the mkdir both need it, and CopyOptions.Mode may count what it is asked.
// Directories are visited by one goroutine.
func (c *copier) dirMode(e Entry) (uint32, error) {
	if m, ok := c.dirModes[e.Rel]; ok {
		return m, nil
	}
	m, err := c.modeOf(e)
	if err == nil {
		c.dirModes[e.Rel] = m
	}
	return m, err
}

// modeOf is the permission bits of the copy of e (CopyOptions.Mode).
func (c *copier) modeOf(e Entry) (uint32, error) {
	if c.o.Mode != nil {
		return c.o.Mode(e)
	}
	if e.Mode&unix.S_IFMT == unix.S_IFDIR {
		return DirMode, nil
	}
	return FileMode, nil
}

// dirModeDuring is the mode of the copy's directories while files are created in them: with
// the setgid bit, new files get the directory's group (the token group) without a chown each.
func (c *copier) dirModeDuring() uint32 {
	if c.perm.GID < 0 {
		return DirMode
	}
	return DirMode | unix.S_ISGID
}

func (c *copier) mkSub(parent *copyDir, src Entry) (any, error) {
	if src.Dev == c.root.Dev && src.Ino == c.root.Ino {
		return nil, fmt.Errorf("copy %s: the destination lies inside the source", src.Rel)
	}
	mode, err := c.dirMode(src)
	if err != nil {
		return nil, err
	}
	display := path.Join(parent.display, src.Name)
	fd, err := c.mkdir(parent.fd, src.Name, display)
	if err != nil {
		return nil, err
	}
	return &copyDir{fd: fd, display: display, mode: mode}, nil
}

// mkdir creates name in pfd with mode 0, opens it and gives it the token group and the
// setgid bit.
func (c *copier) mkdir(pfd int, name, display string) (int, error) {
	fd, err := mkdirOpen(pfd, name, display)
	if err != nil {
		return -1, err
	}
	if c.perm.GID >= 0 {
		if err := unix.Fchown(fd, -1, c.perm.GID); err != nil {
			unix.Close(fd)
			return -1, pathErr("chown", display, err)
		}
	}
	if err := unix.Fchmod(fd, c.dirModeDuring()); err != nil {
		unix.Close(fd)
		return -1, pathErr("chmod", display, err)
	}
	return fd, nil
}

// dirDone writes the directory's deferred files, gives it its final mode (the setgid bit
// cleared) and closes it.
func (c *copier) dirDone(state any, werr error) error {
	d, ok := state.(*copyDir)
	if !ok || d == nil {
		return nil
	}
	c.mu.Lock()
	later := c.deferred[d]
	delete(c.deferred, d)
	c.mu.Unlock()
	if werr == nil && len(later) > 0 && c.o.BeforeDeferred != nil {
		c.beforeOnce.Do(c.o.BeforeDeferred)
	}
	if werr == nil {
		for _, f := range later {
			if _, werr = c.write(d, f.e, f.data, f.w); werr != nil {
				break
			}
		}
	}
	var err error
	if werr != nil {
		err = werr
	}
	if d.root {
		return err
	}
	if err == nil && c.dirModeDuring() != d.mode {
		if e := unix.Fchmod(d.fd, d.mode); e != nil {
			err = pathErr("chmod", d.display, e)
		}
	}
	unix.Close(d.fd)
	return err
}

// written is what the copy of one file holds, for DstDigest.
type written struct {
	size int64
	mode uint32
	sum  [sha256.Size]byte
}

// skipped is what File returns for a file CopyOptions.Skip names.
var skipped = &written{}

// dstRecord is one DstDigest record: a directory (w nil, its mode) or a file, whose w of a
// deferred file is filled when it is written.
type dstRecord struct {
	rel  string
	mode uint32
	w    *written
}

// deferredFile is a file (Defer) to write when its directory is done.
type deferredFile struct {
	e    Entry
	data []byte
	w    *written
}

func (c *copier) file(e Entry, dirState any, data []byte) (any, error) {
	d := dirState.(*copyDir)
	if c.o.Skip != nil && c.o.Skip(e) {
		return skipped, nil
	}
	if c.o.Defer != nil && c.o.Defer(e.Rel) {
		w := &written{}
		c.mu.Lock()
		if c.deferred == nil {
			c.deferred = map[*copyDir][]deferredFile{}
		}
		c.deferred[d] = append(c.deferred[d], deferredFile{e: e, data: bytes.Clone(data), w: w})
		c.mu.Unlock()
		return w, nil
	}
	return c.write(d, e, data, nil)
}

// write transforms, creates, writes, reads back, verifies and closes one file; w, when not
// nil, receives the size and hash of what was written.
func (c *copier) write(d *copyDir, e Entry, data []byte, w *written) (any, error) {
	dp := path.Join(d.display, e.Name)
	mode, err := c.modeOf(e)
	if err != nil {
		return nil, err
	}
	out := data
	if c.o.Transform != nil {
		if out, err = c.o.Transform(e.Rel, data); err != nil {
			return nil, pathErr("copy", e.Rel, err)
		}
	}
	flags := unix.O_WRONLY | unix.O_CREAT | unix.O_EXCL | unix.O_NOFOLLOW | unix.O_CLOEXEC | unix.O_NOCTTY
	if c.o.Verify != nil {
		flags = unix.O_RDWR | unix.O_CREAT | unix.O_EXCL | unix.O_NOFOLLOW | unix.O_CLOEXEC | unix.O_NOCTTY
	}
	fd, err := openRetry(d.fd, e.Name, flags, mode)
	if err != nil {
		return nil, pathErr("create", dp, err)
	}
	if err := c.fillFile(fd, e.Rel, dp, mode, out); err != nil {
		unix.Close(fd)
		return nil, err
	}
	if err := unix.Close(fd); err != nil {
		return nil, pathErr("close", dp, err)
	}
	if c.o.OnFile != nil {
		c.onFileMu.Lock()
		c.o.OnFile(e.Rel)
		c.onFileMu.Unlock()
	}
	if c.o.DstDigest == nil {
		return nil, nil
	}
	if w == nil {
		w = &written{}
	}
	w.size, w.mode, w.sum = int64(len(out)), mode, sha256.Sum256(out)
	return w, nil
}

func (c *copier) fillFile(fd int, rel, dp string, mode uint32, out []byte) error {
	// Created with its mode: the umask may have taken bits away (with the token group the
	// directory's setgid bit gave the group; without one, tests without root, it is left).
	if c.fileChmod || mode != FileMode || c.perm.GID < 0 {
		if err := unix.Fchmod(fd, mode); err != nil {
			return pathErr("chmod", dp, err)
		}
	}
	if err := writeFull(fd, out); err != nil {
		return pathErr("write", dp, err)
	}
	if c.o.Verify == nil {
		return nil
	}
	// The file was created here (O_EXCL) and written once: its length is len(out).
	back := make([]byte, len(out))
	n, err := preadFull(fd, back)
	if err != nil {
		return pathErr("read back", dp, err)
	}
	if !bytes.Equal(back[:n], out) {
		return pathErr("copy", rel, fmt.Errorf("the %d bytes read back differ from the %d written: %w", n, len(out), ErrChanged))
	}
	if err := c.o.Verify(rel, back[:n]); err != nil {
		return pathErr("copy", rel, err)
	}
	return nil
}

// preadFull reads from offset 0 until buf is full or the end of the file.
func preadFull(fd int, buf []byte) (int, error) {
	off := 0
	for off < len(buf) {
		n, err := unix.Pread(fd, buf[off:], int64(off))
		if err == unix.EINTR || err == unix.EAGAIN {
			continue
		}
		if err != nil {
			return off, err
		}
		if n == 0 {
			break
		}
		off += n
	}
	return off, nil
}

// record keeps the copy's digest record of e (the final modes, the written content) in the
// digest's order; a deferred file's content is filled in when it is written.
func (c *copier) record(e Entry, res any) {
	if e.Mode&unix.S_IFMT == unix.S_IFDIR {
		mode := c.o.RootMode
		if mode == 0 {
			mode = DirMode
		}
		if e.Rel != "." {
			mode, _ = c.dirMode(e) // an error stops the copy when the directory is made
		}
		c.records = append(c.records, dstRecord{rel: e.Rel, mode: mode})
		return
	}
	if w := res.(*written); w != skipped {
		c.records = append(c.records, dstRecord{rel: e.Rel, w: w})
	}
}

// umaskStrips reports whether the process umask clears any bit of mode (read from
// /proc/self/status, so the umask is never changed, not even for a moment; when it cannot be
// read the answer is true and every file gets an explicit chmod).
func umaskStrips(mode uint32) bool {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return true
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := bytes.CutPrefix(s.Bytes(), []byte("Umask:")); ok {
			u, err := strconv.ParseUint(string(bytes.TrimSpace(v)), 8, 32)
			return err != nil || uint32(u)&mode != 0
		}
	}
	return true
}

// TreeDigest feeds a canonical description of the tree below d into h: for d itself and
// every entry beneath it, in depth-first order with each directory's names sorted, the
// relative path ("." for d), the type, the permission bits (mode & 07777), and for regular
// files the size and the SHA-256 of the content. Owners and times are not included. Each
// file is read once (the files of a directory by several goroutines at once; the result
// does not depend on it). A symlink gives ErrSymlink and a special file ErrNotRegular, so a
// digest always describes plain files and directories only.
//
// Any change of a file's content, a file's or directory's mode, or the set of names changes
// the digest.
func TreeDigest(d *Dir, h hash.Hash) error {
	return Walk(d, Visitor{Digest: h})
}

// TreeDigestExcluding is TreeDigest of the tree without the entries exclude names
// (Visitor.Exclude).
func TreeDigestExcluding(d *Dir, h hash.Hash, exclude func(rel string) bool) error {
	return Walk(d, Visitor{Digest: h, Exclude: exclude})
}
