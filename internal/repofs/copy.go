package repofs

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"path"
	"runtime"
	"sync"

	"github.com/ocktools/pkcstok-migrate/internal/parallel"
	"golang.org/x/sys/unix"
)

// CopyTree copies the directory src to parent/dstName, which must not exist yet (an
// existing entry gives an error satisfying errors.Is(err, fs.ErrExist) and is left alone).
//
// This is the working-copy step of token-format.md §8.5: the new directory is created with
// mode 0 and then given the set_perm rule p, as is every directory below it; every regular
// file is created with mode 0600, given the set_perm rule and filled with the source's
// content (one read of the whole file, one write). Owners, times and xattrs are not kept.
// Entry types are decided with a non-following stat, never the directory-entry type. A
// symlink anywhere gives ErrSymlink, a FIFO, device or socket ErrNotRegular, a file over
// MaxFileSize ErrTooLarge; on any error the partial copy is removed. Nothing is fsynced:
// call Syncfs (or Sync) on the result once.
//
// onFile, when not nil, is called after each regular file is copied with its
// slash-separated path relative to src.
func CopyTree(src *Dir, parent *Dir, dstName string, p Perm, onFile func(rel string)) error {
	return CopyTreeWith(src, parent, dstName, p, CopyOptions{OnFile: onFile})
}

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
	// Workers is how many files of a directory are copied at once; 0 or 1 copies one file
	// at a time. File creation is system-call bound, so a few workers hide its latency.
	Workers int
}

// CopyTreeWith is CopyTree with options: each file is still read once and written once
// (through Transform when given), so a copy that also converts files needs no second pass.
func CopyTreeWith(src *Dir, parent *Dir, dstName string, p Perm, o CopyOptions) error {
	pfd, base, release, err := parent.walkParent(dstName)
	if err != nil {
		return fmt.Errorf("copy %s to %s: %w", src.path, parent.join(dstName), err)
	}
	defer release()
	display := parent.join(dstName)
	dfd, err := mkdirPerm(pfd, base, display, p)
	if err != nil {
		return fmt.Errorf("copy %s: %w", src.path, err)
	}
	var root unix.Stat_t
	if serr := unix.Fstat(dfd, &root); serr != nil {
		err = pathErr("stat", display, serr)
	} else {
		c := &copier{perm: p, onFile: o.OnFile, transform: o.Transform, workers: o.Workers, rootDev: uint64(root.Dev), rootIno: uint64(root.Ino)}
		err = c.copyDir(src.fd, dfd, src.path, display, "", 0)
	}
	unix.Close(dfd)
	if err != nil {
		// dstName did not exist before (mkdir succeeded), so everything below it is ours.
		if rerr := removeAllAt(pfd, base, display, 0); rerr != nil {
			return fmt.Errorf("%w (removing the partial copy %s failed too: %v)", err, display, rerr)
		}
		return err
	}
	return nil
}

type copier struct {
	perm      Perm
	onFile    func(string)
	transform func(string, []byte) ([]byte, error)
	workers   int
	rootDev   uint64
	rootIno   uint64
	onFileMu  sync.Mutex
}

// fileJob is one regular file of a directory being copied: only what the copy needs of its
// stat, so a directory of 100,000 objects costs little memory.
// batchSize is how many directory entries CopyTree and TreeDigest handle at a time.
const batchSize = 1024

type fileJob struct {
	name     string
	dev, ino uint64
}

func (c *copier) copyDir(sfd, dfd int, srcDisplay, dstDisplay, rel string, depth int) error {
	if depth >= maxDepth {
		return fmt.Errorf("copy %s: directory tree deeper than %d levels", srcDisplay, maxDepth)
	}
	var st unix.Stat_t
	if err := unix.Fstat(sfd, &st); err != nil {
		return pathErr("stat", srcDisplay, err)
	}
	if uint64(st.Dev) == c.rootDev && uint64(st.Ino) == c.rootIno {
		return fmt.Errorf("copy %s: the destination lies inside the source", srcDisplay)
	}
	names, err := readNamesFd(sfd, srcDisplay)
	if err != nil {
		return err
	}
	// Regular files are copied (in parallel with Workers > 1), subdirectories after them in
	// name order.
	// Files go in batches, so a directory of 100,000 objects never holds them all.
	var dirs []string
	files := make([]fileJob, 0, min(len(names), batchSize))
	for start := 0; start < len(names); start += batchSize {
		files = files[:0]
		for _, n := range names[start:min(start+batchSize, len(names))] {
			sp := path.Join(srcDisplay, n)
			if err := unix.Fstatat(sfd, n, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				return pathErr("lstat", sp, err)
			}
			switch st.Mode & unix.S_IFMT {
			case unix.S_IFDIR:
				dirs = append(dirs, n)
			case unix.S_IFREG:
				files = append(files, fileJob{name: n, dev: uint64(st.Dev), ino: uint64(st.Ino)})
			case unix.S_IFLNK:
				return fmt.Errorf("copy %s: %w", sp, ErrSymlink)
			default:
				return fmt.Errorf("copy %s: %w", sp, ErrNotRegular)
			}
		}
		if err := c.copyFiles(sfd, dfd, srcDisplay, dstDisplay, rel, files); err != nil {
			return err
		}
	}
	names, files = nil, nil
	for _, n := range dirs {
		sp, dp := path.Join(srcDisplay, n), path.Join(dstDisplay, n)
		if err := unix.Fstatat(sfd, n, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return pathErr("lstat", sp, err)
		}
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			return fmt.Errorf("copy %s: %w", sp, ErrChanged)
		}
		if err := c.copySubdir(sfd, dfd, n, &st, sp, dp, relJoin(rel, n), depth); err != nil {
			return err
		}
	}
	return nil
}

func relJoin(rel, n string) string {
	if rel == "" {
		return n
	}
	return rel + "/" + n
}

// copyFiles copies the regular files of one directory, spread over c.workers goroutines.
// The first error (in name order among the files that failed) is returned.
func (c *copier) copyFiles(sfd, dfd int, srcDisplay, dstDisplay, rel string, files []fileJob) error {
	one := func(f fileJob, buf *[]byte) error {
		st := unix.Stat_t{Dev: f.dev, Ino: f.ino}
		r := relJoin(rel, f.name)
		if err := c.copyFile(sfd, dfd, f.name, &st, path.Join(srcDisplay, f.name), path.Join(dstDisplay, f.name), r, buf); err != nil {
			return err
		}
		if c.onFile != nil {
			c.onFileMu.Lock()
			c.onFile(r)
			c.onFileMu.Unlock()
		}
		return nil
	}
	return parallel.Workers(len(files), c.workers, func() func(int) error {
		var buf []byte
		return func(i int) error { return one(files[i], &buf) }
	})
}

func (c *copier) copySubdir(sfd, dfd int, name string, st *unix.Stat_t, sp, dp, rel string, depth int) error {
	nsfd, err := openRetry(sfd, name, dirOpenFlags, 0)
	if err != nil {
		return pathErr("open directory", sp, openDirErr(sfd, name, err))
	}
	defer unix.Close(nsfd)
	if err := sameFile(nsfd, st); err != nil {
		return pathErr("open directory", sp, err)
	}
	ndfd, err := mkdirPerm(dfd, name, dp, c.perm)
	if err != nil {
		return err
	}
	defer unix.Close(ndfd)
	return c.copyDir(nsfd, ndfd, sp, dp, rel, depth+1)
}

func (c *copier) copyFile(sfd, dfd int, name string, st *unix.Stat_t, sp, dp, rel string, buf *[]byte) error {
	data, err := readWhole(sfd, name, st, sp, buf)
	if err != nil {
		return err
	}
	if c.transform != nil {
		if data, err = c.transform(rel, data); err != nil {
			return fmt.Errorf("copy %s: %w", sp, err)
		}
	}
	out, err := openRetry(dfd, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NOCTTY, 0o600)
	if err != nil {
		return pathErr("create", dp, err)
	}
	if err := c.perm.apply(out, dp); err != nil {
		unix.Close(out)
		return err
	}
	if err := writeFull(out, data); err != nil {
		unix.Close(out)
		return pathErr("write", dp, err)
	}
	if err := unix.Close(out); err != nil {
		return pathErr("close", dp, err)
	}
	return nil
}

// readWhole opens name in dirfd without following symlinks, checks that it is the regular
// file st describes and reads it whole into *buf (grown as needed, reused by the caller).
func readWhole(dirfd int, name string, st *unix.Stat_t, display string, buf *[]byte) ([]byte, error) {
	fd, err := openRetry(dirfd, name, fileReadFlags, 0)
	if err != nil {
		if errors.Is(err, unix.ELOOP) {
			err = classify(dirfd, name, err)
		}
		return nil, pathErr("open", display, err)
	}
	defer unix.Close(fd)
	var now unix.Stat_t
	if err := unix.Fstat(fd, &now); err != nil {
		return nil, pathErr("stat", display, err)
	}
	if now.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, fmt.Errorf("read %s: %w", display, ErrNotRegular)
	}
	if now.Dev != st.Dev || now.Ino != st.Ino {
		return nil, fmt.Errorf("read %s: %w", display, ErrChanged)
	}
	if now.Size > MaxFileSize {
		return nil, fmt.Errorf("read %s: %d bytes: %w", display, now.Size, ErrTooLarge)
	}
	n := int(now.Size)
	if cap(*buf) < n {
		*buf = make([]byte, n)
	}
	data := (*buf)[:n]
	if err := readFull(fd, data); err != nil {
		return nil, pathErr("read", display, err)
	}
	return data, nil
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
	h.Write([]byte("repofs tree digest v1\x00"))
	t := &digester{h: h, workers: runtime.GOMAXPROCS(0)}
	var st unix.Stat_t
	if err := unix.Fstat(d.fd, &st); err != nil {
		return pathErr("stat", d.path, err)
	}
	t.record(".", st.Mode, 'd', 0, nil)
	return t.walk(d.fd, d.path, "", 0)
}

type digester struct {
	h       hash.Hash
	workers int
}

// record writes one entry: type byte, mode, size, path length, path, [content hash].
// A directory's size is recorded as 0: it depends on the file system, not on the content.
func (t *digester) record(rel string, mode uint32, typ byte, size uint64, sum []byte) {
	var hdr [1 + 4 + 8 + 4]byte
	hdr[0] = typ
	binary.BigEndian.PutUint32(hdr[1:], mode&0o7777)
	binary.BigEndian.PutUint64(hdr[5:], size)
	binary.BigEndian.PutUint32(hdr[13:], uint32(len(rel)))
	t.h.Write(hdr[:])
	t.h.Write([]byte(rel))
	if typ == 'f' {
		t.h.Write(sum)
	}
}

// digestEntry is one name of a directory being digested: its stat, and for a regular file
// its size and content hash once read.
type digestEntry struct {
	name     string
	mode     uint32
	dev, ino uint64
	size     uint64
	sum      [sha256.Size]byte
}

func (t *digester) walk(dirfd int, display, rel string, depth int) error {
	if depth >= maxDepth {
		return fmt.Errorf("digest %s: directory tree deeper than %d levels", display, maxDepth)
	}
	names, err := readNamesFd(dirfd, display)
	if err != nil {
		return err
	}
	// Entries go in batches, so a directory of 100,000 objects never holds them all.
	for start := 0; start < len(names); start += batchSize {
		if err := t.walkBatch(dirfd, display, rel, depth, names[start:min(start+batchSize, len(names))]); err != nil {
			return err
		}
	}
	return nil
}

func (t *digester) walkBatch(dirfd int, display, rel string, depth int, names []string) error {
	entries := make([]digestEntry, len(names))
	var files []int
	var st unix.Stat_t
	for i, n := range names {
		p := path.Join(display, n)
		if err := unix.Fstatat(dirfd, n, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return pathErr("lstat", p, err)
		}
		entries[i] = digestEntry{name: n, mode: st.Mode, dev: uint64(st.Dev), ino: uint64(st.Ino)}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
		case unix.S_IFREG:
			files = append(files, i)
		case unix.S_IFLNK:
			return fmt.Errorf("digest %s: %w", p, ErrSymlink)
		default:
			return fmt.Errorf("digest %s: %w", p, ErrNotRegular)
		}
	}
	if err := t.hashFiles(dirfd, display, entries, files); err != nil {
		return err
	}
	for i := range entries {
		e := &entries[i]
		p := path.Join(display, e.name)
		r := relJoin(rel, e.name)
		if e.mode&unix.S_IFMT == unix.S_IFREG {
			t.record(r, e.mode, 'f', e.size, e.sum[:])
			continue
		}
		fd, err := openRetry(dirfd, e.name, dirOpenFlags, 0)
		if err != nil {
			return pathErr("open directory", p, openDirErr(dirfd, e.name, err))
		}
		st = unix.Stat_t{Dev: e.dev, Ino: e.ino, Mode: e.mode}
		if err := sameFile(fd, &st); err != nil {
			unix.Close(fd)
			return pathErr("open directory", p, err)
		}
		t.record(r, e.mode, 'd', 0, nil)
		err = t.walk(fd, p, r, depth+1)
		unix.Close(fd)
		if err != nil {
			return err
		}
	}
	return nil
}

// hashFiles reads and hashes the regular files entries[files[...]] of one directory,
// spread over t.workers goroutines; the first failing file in name order gives the error.
func (t *digester) hashFiles(dirfd int, display string, entries []digestEntry, files []int) error {
	one := func(e *digestEntry, fh hash.Hash, buf *[]byte) error {
		st := unix.Stat_t{Dev: e.dev, Ino: e.ino}
		data, err := readWhole(dirfd, e.name, &st, path.Join(display, e.name), buf)
		if err != nil {
			return err
		}
		e.size = uint64(len(data))
		fh.Reset()
		fh.Write(data)
		fh.Sum(e.sum[:0])
		return nil
	}
	return parallel.Workers(len(files), t.workers, func() func(int) error {
		fh := sha256.New()
		var buf []byte
		return func(k int) error { return one(&entries[files[k]], fh, &buf) }
	})
}
