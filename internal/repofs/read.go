package repofs

import (
	"errors"
	"fmt"
	"os"
	"path"
	"sort"

	"golang.org/x/sys/unix"
)

// ReadFile reads the regular file name below d. Symlinks in any component give ErrSymlink;
// FIFOs, devices and sockets give ErrNotRegular (the file is opened non-blocking, so a FIFO
// cannot hang); files over MaxFileSize give ErrTooLarge; a missing file gives an error for
// which errors.Is(err, fs.ErrNotExist) holds. It implements tokens.FS.
func (d *Dir) ReadFile(name string) ([]byte, error) {
	pfd, base, release, err := d.walkParent(name)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", d.join(name), err)
	}
	defer release()
	fd, err := openRetry(pfd, base, fileReadFlags, 0)
	if err != nil {
		if errors.Is(err, unix.ELOOP) {
			err = classify(pfd, base, err)
		}
		return nil, pathErr("open", d.join(name), err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, pathErr("stat", d.join(name), err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, fmt.Errorf("read %s: %w", d.join(name), ErrNotRegular)
	}
	if st.Size > MaxFileSize {
		return nil, fmt.Errorf("read %s: %d bytes: %w", d.join(name), st.Size, ErrTooLarge)
	}
	buf := make([]byte, st.Size)
	if err := readFull(fd, buf); err != nil {
		return nil, pathErr("read", d.join(name), err)
	}
	return buf, nil
}

// readFull fills buf from fd. Hitting end of file early means the file shrank after fstat.
func readFull(fd int, buf []byte) error {
	for off := 0; off < len(buf); {
		n, err := unix.Read(fd, buf[off:])
		if err == unix.EINTR || err == unix.EAGAIN {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			return fmt.Errorf("short read (%d of %d bytes): %w", off, len(buf), ErrChanged)
		}
		off += n
	}
	return nil
}

// writeFull writes all of data to fd.

// Info is what Lstat reports about one directory entry (the entry itself, never a symlink's
// target).
type Info struct {
	Name  string
	Mode  uint32 // st_mode: file type and permission bits
	Size  int64
	UID   int
	GID   int
	Nlink uint64
	Dev   uint64
	Ino   uint64
}

// Type is the file type bits (Mode & S_IFMT).
func (i Info) Type() uint32 { return i.Mode & unix.S_IFMT }

// Perm is the permission bits including setuid, setgid and sticky (Mode & 07777).
func (i Info) Perm() uint32 { return i.Mode & 0o7777 }

// IsDir, IsRegular and IsSymlink test the file type.
func (i Info) IsDir() bool     { return i.Type() == unix.S_IFDIR }
func (i Info) IsRegular() bool { return i.Type() == unix.S_IFREG }
func (i Info) IsSymlink() bool { return i.Type() == unix.S_IFLNK }

func infoFrom(name string, st *unix.Stat_t) Info {
	return Info{
		Name:  name,
		Mode:  st.Mode,
		Size:  st.Size,
		UID:   int(st.Uid),
		GID:   int(st.Gid),
		Nlink: uint64(st.Nlink),
		Dev:   uint64(st.Dev),
		Ino:   uint64(st.Ino),
	}
}

// Lstat describes name below d without following a symlink in its last component (a
// symlink in an earlier component gives ErrSymlink). "." describes d itself.
func (d *Dir) Lstat(name string) (Info, error) {
	var st unix.Stat_t
	if name == "." {
		if err := unix.Fstat(d.fd, &st); err != nil {
			return Info{}, pathErr("lstat", d.path, err)
		}
		return infoFrom(path.Base(d.path), &st), nil
	}
	pfd, base, release, err := d.walkParent(name)
	if err != nil {
		return Info{}, fmt.Errorf("lstat %s: %w", d.join(name), err)
	}
	defer release()
	if err := unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return Info{}, pathErr("lstat", d.join(name), err)
	}
	return infoFrom(base, &st), nil
}

// ReadDirNames lists the directory name below d ("." for d itself), sorted, without "."
// and "..".
func (d *Dir) ReadDirNames(name string) ([]string, error) {
	sub, err := d.OpenSubdir(name)
	if err != nil {
		return nil, err
	}
	names, err := sub.readNames()
	sub.Close()
	return names, err
}

// readNames lists d through a duplicate descriptor, leaving d's own offset alone.
func (d *Dir) readNames() ([]string, error) {
	return readNamesFd(d.fd, d.path)
}

// readNamesFd lists the directory open as dirfd through a fresh descriptor, sorted.
func readNamesFd(dirfd int, display string) ([]string, error) {
	fd, err := openRetry(dirfd, ".", dirOpenFlags, 0)
	if err != nil {
		return nil, pathErr("read directory", display, err)
	}
	f := os.NewFile(uintptr(fd), display)
	names, err := f.Readdirnames(-1)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("read directory %s: %w", display, err)
	}
	sort.Strings(names)
	return names, nil
}
