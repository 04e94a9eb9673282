package repofs

import (
	"errors"
	"fmt"
	"io/fs"
	"path"

	"golang.org/x/sys/unix"
)

// ReadFile reads the regular file name below d, a file of a repository. Symlinks in any
// component give ErrSymlink; FIFOs, devices and sockets give ErrNotRegular (the file is opened
// non-blocking, so a FIFO cannot hang); a file with more than one link gives ErrHardLinked and
// a file over maxFileSize ErrTooLarge, both decided by fstat of the open descriptor before a
// byte is read; a missing file gives an error for which errors.Is(err, fs.ErrNotExist) holds.
// It implements tokens.FS.
func (d *Dir) ReadFile(name string) ([]byte, error) {
	return d.readFile(name, false)
}

// ReadFileAnyLinks is ReadFile for the files of a directory only trusted users can write (the
// conf directory), where a second link is the tool's own: opencryptoki.conf_BAK and
// opencryptoki.conf_ROLLED_BACK are made as hard links of opencryptoki.conf, and a run stopped
// between the link and the rename leaves both names on one file. Never for a repository.
func (d *Dir) ReadFileAnyLinks(name string) ([]byte, error) {
	return d.readFile(name, true)
}

func (d *Dir) readFile(name string, anyLinks bool) ([]byte, error) {
	pfd, base, release, err := d.walkParent(name, "open")
	if err != nil {
		return nil, err
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
	if anyLinks {
		st.Nlink = 1
	}
	if err := checkReadable(&st, d.join(name)); err != nil {
		return nil, err
	}
	buf := make([]byte, st.Size)
	if err := readFull(fd, buf); err != nil {
		return nil, pathErr("read", d.join(name), err)
	}
	return buf, nil
}

// checkReadable is what a repository file must be, from the fstat of its open descriptor,
// before a byte of it is read: a regular file (ErrNotRegular), with one link (ErrHardLinked:
// a member of the token group may hard-link any file she can name into the repository where
// fs.protected_hardlinks is 0, root's own files included, and nothing the tool or the token
// library makes in a repository has a second link), of at most maxFileSize (ErrTooLarge). The
// error names the file by its path and says what its metadata shows, nothing of its content.
func checkReadable(st *unix.Stat_t, display string) error {
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFREG:
		return pathErr("read", display, ErrNotRegular)
	case st.Nlink > 1:
		return &fs.PathError{Op: "read", Path: display, Err: fmt.Errorf("%d links: %w", st.Nlink, ErrHardLinked)}
	case st.Size > maxFileSize:
		return pathErr("read", display, fmt.Errorf("%d bytes: %w", st.Size, ErrTooLarge))
	}
	return nil
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

// IsDir, IsRegular and isSymlink test the file type.
func (i Info) IsDir() bool     { return i.Type() == unix.S_IFDIR }
func (i Info) IsRegular() bool { return i.Type() == unix.S_IFREG }
func (i Info) isSymlink() bool { return i.Type() == unix.S_IFLNK }

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
	pfd, base, release, err := d.walkParent(name, "lstat")
	if err != nil {
		return Info{}, err
	}
	defer release()
	if err := unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return Info{}, pathErr("lstat", d.join(name), err)
	}
	return infoFrom(base, &st), nil
}

// ReadDirNames lists the directory name below d ("." for d itself), sorted, without "."
// and "..". Like every listing of the tool it is bounded: a directory of more than
// MaxTreeEntries names gives ErrTooLarge once that many were read (listDir).
func (d *Dir) ReadDirNames(name string) ([]string, error) {
	sub, err := d.OpenSubdir(name)
	if err != nil {
		return nil, err
	}
	names, err := sub.readNames()
	sub.Close()
	return names, err
}

// readNames lists d through a fresh descriptor, leaving d's own offset alone.
func (d *Dir) readNames() ([]string, error) {
	ents, err := listDir(d.fd, d.path, nil)
	if err != nil {
		return nil, err
	}
	names := make([]string, len(ents))
	for i, e := range ents {
		names[i] = e.Name
	}
	return names, nil
}
