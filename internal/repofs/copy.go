package repofs

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"path"

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
		c := &copier{perm: p, onFile: onFile, rootDev: uint64(root.Dev), rootIno: uint64(root.Ino)}
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
	perm    Perm
	onFile  func(string)
	buf     []byte
	rootDev uint64
	rootIno uint64
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
	for _, n := range names {
		sp, dp := path.Join(srcDisplay, n), path.Join(dstDisplay, n)
		r := n
		if rel != "" {
			r = rel + "/" + n
		}
		if err := unix.Fstatat(sfd, n, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return pathErr("lstat", sp, err)
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			if err := c.copySubdir(sfd, dfd, n, &st, sp, dp, r, depth); err != nil {
				return err
			}
		case unix.S_IFREG:
			if err := c.copyFile(sfd, dfd, n, &st, sp, dp); err != nil {
				return err
			}
			if c.onFile != nil {
				c.onFile(r)
			}
		case unix.S_IFLNK:
			return fmt.Errorf("copy %s: %w", sp, ErrSymlink)
		default:
			return fmt.Errorf("copy %s: %w", sp, ErrNotRegular)
		}
	}
	return nil
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

func (c *copier) copyFile(sfd, dfd int, name string, st *unix.Stat_t, sp, dp string) error {
	data, err := readWhole(sfd, name, st, sp, &c.buf)
	if err != nil {
		return err
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
// file is read once. A symlink gives ErrSymlink and a special file ErrNotRegular, so a
// digest always describes plain files and directories only.
//
// Any change of a file's content, a file's or directory's mode, or the set of names changes
// the digest.
func TreeDigest(d *Dir, h hash.Hash) error {
	h.Write([]byte("repofs tree digest v1\x00"))
	t := &digester{h: h, fh: sha256.New()}
	var st unix.Stat_t
	if err := unix.Fstat(d.fd, &st); err != nil {
		return pathErr("stat", d.path, err)
	}
	t.record(".", &st, nil)
	return t.walk(d.fd, d.path, "", 0)
}

type digester struct {
	h   hash.Hash
	fh  hash.Hash
	buf []byte
	sum []byte
}

// record writes one entry: type byte, mode, size, path length, path, [content hash].
func (t *digester) record(rel string, st *unix.Stat_t, content []byte) {
	var hdr [1 + 4 + 8 + 4]byte
	typ := byte('d')
	size := uint64(0) // a directory's size depends on the file system, not on its content
	if st.Mode&unix.S_IFMT == unix.S_IFREG {
		typ = 'f'
		size = uint64(len(content))
	}
	hdr[0] = typ
	binary.BigEndian.PutUint32(hdr[1:], st.Mode&0o7777)
	binary.BigEndian.PutUint64(hdr[5:], size)
	binary.BigEndian.PutUint32(hdr[13:], uint32(len(rel)))
	t.h.Write(hdr[:])
	t.h.Write([]byte(rel))
	if typ == 'f' {
		t.fh.Reset()
		t.fh.Write(content)
		t.sum = t.fh.Sum(t.sum[:0])
		t.h.Write(t.sum)
	}
}

func (t *digester) walk(dirfd int, display, rel string, depth int) error {
	if depth >= maxDepth {
		return fmt.Errorf("digest %s: directory tree deeper than %d levels", display, maxDepth)
	}
	names, err := readNamesFd(dirfd, display)
	if err != nil {
		return err
	}
	var st unix.Stat_t
	for _, n := range names {
		p := path.Join(display, n)
		r := n
		if rel != "" {
			r = rel + "/" + n
		}
		if err := unix.Fstatat(dirfd, n, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return pathErr("lstat", p, err)
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			fd, err := openRetry(dirfd, n, dirOpenFlags, 0)
			if err != nil {
				return pathErr("open directory", p, openDirErr(dirfd, n, err))
			}
			if err := sameFile(fd, &st); err != nil {
				unix.Close(fd)
				return pathErr("open directory", p, err)
			}
			t.record(r, &st, nil)
			err = t.walk(fd, p, r, depth+1)
			unix.Close(fd)
			if err != nil {
				return err
			}
		case unix.S_IFREG:
			data, err := readWhole(dirfd, n, &st, p, &t.buf)
			if err != nil {
				return err
			}
			t.record(r, &st, data)
		case unix.S_IFLNK:
			return fmt.Errorf("digest %s: %w", p, ErrSymlink)
		default:
			return fmt.Errorf("digest %s: %w", p, ErrNotRegular)
		}
	}
	return nil
}
