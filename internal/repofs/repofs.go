// Package repofs holds every file-system operation on a token repository.
//
// All work goes through directory handles (Dir): every path component below a Dir is
// opened with O_NOFOLLOW, so a symlink anywhere inside a repository is refused rather than
// followed (the CWE-59 hardening of upstream pkcstok_migrate, doc/format.md §9.3). Only
// the path given to OpenDir itself is resolved by the kernel the ordinary way for its
// leading components; its last component must not be a symlink.
//
// Names passed to Dir methods are slash-separated and relative ("TOK_OBJ/OBJ.IDX"). Empty,
// "." and ".." components and absolute names are refused, except that the whole name "."
// means the directory itself where that makes sense (Lstat, ReadDirNames, OpenSubdir).
package repofs

import (
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strings"

	"golang.org/x/sys/unix"
)

// Typed errors. They are always wrapped with the path concerned; use errors.Is.
var (
	ErrSymlink       = errors.New("refusing to follow symlink")
	ErrNotRegular    = errors.New("not a regular file")
	errNotDir        = errors.New("not a directory")
	ErrLocked        = errors.New("locked by another process")
	errGroupNotFound = errors.New("group not found")
	ErrTooLarge      = errors.New("file too large")
	errBadName       = errors.New("invalid file name")
	ErrChanged       = errors.New("file changed while being read")
	ErrHardLinked    = errors.New("hard-linked file (more than one link): refusing to read it")
)

// maxFileSize is the largest file ReadFile, CopyTreeWith and TreeDigest accept. Repository
// files are tiny (objects are a few KiB); the cap keeps a damaged or hostile repository
// from making the tool allocate huge buffers.
const maxFileSize = 64 << 20

const (
	dirOpenFlags  = unix.O_RDONLY | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC
	fileReadFlags = unix.O_RDONLY | unix.O_NOFOLLOW | unix.O_NONBLOCK | unix.O_CLOEXEC | unix.O_NOCTTY
)

// Dir is an open directory. All operations are *at system calls relative to its file
// descriptor, so renaming or replacing the directory's path afterwards does not redirect
// them. A Dir is safe for concurrent use by several goroutines except for Close.
type Dir struct {
	fd   int
	path string
}

// OpenDir opens the directory at path. The last component must be a real directory, not a
// symlink (ErrSymlink) and not anything else (errNotDir).
func OpenDir(p string) (*Dir, error) {
	if p == "" {
		return nil, fmt.Errorf("open directory %q: %w", p, errBadName)
	}
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		return nil, pathErr("open directory", p, err)
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFLNK:
		return nil, pathErr("open directory", p, ErrSymlink)
	case unix.S_IFDIR:
	default:
		return nil, pathErr("open directory", p, errNotDir)
	}
	fd, err := openRetry(unix.AT_FDCWD, p, dirOpenFlags, 0)
	if err != nil {
		if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) {
			// Replaced between Lstat and open.
			return nil, pathErr("open directory", p, classify(unix.AT_FDCWD, p, errNotDir))
		}
		return nil, pathErr("open directory", p, err)
	}
	return &Dir{fd: fd, path: p}, nil
}

// Close closes the directory (and so releases a lock taken with TryLock).
func (d *Dir) Close() error {
	if d == nil || d.fd < 0 {
		return nil
	}
	err := unix.Close(d.fd)
	d.fd = -1
	if err != nil {
		return pathErr("close", d.path, err)
	}
	return nil
}

// Path is the path the directory was opened with (for messages only).
func (d *Dir) Path() string { return d.path }

// Fd is the directory's file descriptor. It stays owned by d.
func (d *Dir) Fd() int { return d.fd }

// join gives the display path of name inside d.
func (d *Dir) join(name string) string {
	if name == "." {
		return d.path
	}
	return path.Join(d.path, name)
}

// splitName validates a relative slash-separated name and returns its components.
func splitName(name string) ([]string, error) {
	if name == "" || strings.HasPrefix(name, "/") {
		return nil, errBadName
	}
	parts := strings.Split(name, "/")
	for _, c := range parts {
		if c == "" || c == "." || c == ".." || strings.IndexByte(c, 0) >= 0 {
			return nil, errBadName
		}
	}
	return parts, nil
}

// walkParent opens every directory component of name but the last (never following
// symlinks) and returns the descriptor of the parent, the last component and a function that
// releases the parent descriptor when it is not d's own. Its error is an *fs.PathError with
// op, the operation the caller was asked for: the path is name for an invalid name
// (errBadName), else the directory component that could not be opened.
func (d *Dir) walkParent(name, op string) (int, string, func(), error) {
	parts, err := splitName(name)
	if err != nil {
		return -1, "", nil, pathErr(op, d.join(name), err)
	}
	fd := d.fd
	release := func() {}
	for i, c := range parts[:len(parts)-1] {
		nfd, err := openRetry(fd, c, dirOpenFlags, 0)
		if err != nil {
			err = openDirErr(fd, c, err)
			release()
			return -1, "", nil, pathErr(op, d.join(strings.Join(parts[:i+1], "/")), err)
		}
		release()
		cur := nfd
		fd = nfd
		release = func() { unix.Close(cur) }
	}
	return fd, parts[len(parts)-1], release, nil
}

// openDirErr turns the error of an O_DIRECTORY|O_NOFOLLOW open into ErrSymlink or
// errNotDir when the kernel's ELOOP/ENOTDIR hides which case it is.
func openDirErr(dirfd int, name string, err error) error {
	if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) {
		return classify(dirfd, name, errNotDir)
	}
	return err
}

// classify looks at name with a non-following stat and returns ErrSymlink for a symlink,
// otherwise def.
func classify(dirfd int, name string, def error) error {
	var st unix.Stat_t
	if unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK {
		return ErrSymlink
	}
	return def
}

// openRetry is openat that retries on EINTR.
func openRetry(dirfd int, name string, flags int, mode uint32) (int, error) {
	for {
		fd, err := unix.Openat(dirfd, name, flags, mode)
		if err == unix.EINTR {
			continue
		}
		return fd, err
	}
}

// pathErr is the error of op on the path p: an *fs.PathError, which errors.Is sees through to
// err, so both the errno and the matching fs error match (fs.ErrNotExist and so on;
// syscall.Errno implements Is for those). err must not name p itself: each error names its
// path once.
func pathErr(op, p string, err error) error {
	return &fs.PathError{Op: op, Path: p, Err: err}
}

// OpenSubdir opens the directory name below d. Every component is opened with O_NOFOLLOW.
// name "." opens d itself again (a new file description).
func (d *Dir) OpenSubdir(name string) (*Dir, error) {
	if name == "." {
		fd, err := openRetry(d.fd, ".", dirOpenFlags, 0)
		if err != nil {
			return nil, pathErr("open directory", d.path, err)
		}
		return &Dir{fd: fd, path: d.path}, nil
	}
	pfd, base, release, err := d.walkParent(name, "open directory")
	if err != nil {
		return nil, err
	}
	defer release()
	fd, err := openRetry(pfd, base, dirOpenFlags, 0)
	if err != nil {
		return nil, pathErr("open directory", d.join(name), openDirErr(pfd, base, err))
	}
	return &Dir{fd: fd, path: d.join(name)}, nil
}
