// Package repofs holds every file-system operation on a token repository.
//
// All work goes through directory handles (Dir): every path component below a Dir is
// opened with O_NOFOLLOW, so a symlink anywhere inside a repository is refused rather than
// followed (the CWE-59 hardening of upstream pkcstok_migrate, token-format.md §9.3). Only
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
	"os"
	"os/user"
	"path"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Typed errors. They are always wrapped with the path concerned; use errors.Is.
var (
	ErrSymlink       = errors.New("refusing to follow symlink")
	ErrNotRegular    = errors.New("not a regular file")
	ErrNotDir        = errors.New("not a directory")
	ErrLocked        = errors.New("locked by another process")
	ErrGroupNotFound = errors.New("group not found")
	ErrTooLarge      = errors.New("file too large")
	ErrBadName       = errors.New("invalid file name")
	ErrChanged       = errors.New("file changed while being read")
)

// MaxFileSize is the largest file ReadFile, CopyTree and TreeDigest accept. Repository
// files are tiny (objects are a few KiB); the cap keeps a damaged or hostile repository
// from making the tool allocate huge buffers.
const MaxFileSize = 64 << 20

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
// symlink (ErrSymlink) and not anything else (ErrNotDir).
func OpenDir(p string) (*Dir, error) {
	if p == "" {
		return nil, fmt.Errorf("open directory %q: %w", p, ErrBadName)
	}
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		return nil, pathErr("open directory", p, err)
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFLNK:
		return nil, fmt.Errorf("open directory %s: %w", p, ErrSymlink)
	case unix.S_IFDIR:
	default:
		return nil, fmt.Errorf("open directory %s: %w", p, ErrNotDir)
	}
	fd, err := openRetry(unix.AT_FDCWD, p, dirOpenFlags, 0)
	if err != nil {
		if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) {
			// Replaced between Lstat and open.
			return nil, fmt.Errorf("open directory %s: %w", p, classify(unix.AT_FDCWD, p, ErrNotDir))
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
		return nil, ErrBadName
	}
	parts := strings.Split(name, "/")
	for _, c := range parts {
		if c == "" || c == "." || c == ".." || strings.IndexByte(c, 0) >= 0 {
			return nil, ErrBadName
		}
	}
	return parts, nil
}

// walkParent opens every directory component of name but the last (never following
// symlinks) and returns the descriptor of the parent, the last component and a function that
// releases the parent descriptor when it is not d's own.
func (d *Dir) walkParent(name string) (int, string, func(), error) {
	parts, err := splitName(name)
	if err != nil {
		return -1, "", nil, err
	}
	fd := d.fd
	release := func() {}
	for i, c := range parts[:len(parts)-1] {
		nfd, err := openRetry(fd, c, dirOpenFlags, 0)
		if err != nil {
			err = openDirErr(fd, c, err)
			release()
			return -1, "", nil, fmt.Errorf("%s: %w", strings.Join(parts[:i+1], "/"), err)
		}
		release()
		cur := nfd
		fd = nfd
		release = func() { unix.Close(cur) }
	}
	return fd, parts[len(parts)-1], release, nil
}

// openDirErr turns the error of an O_DIRECTORY|O_NOFOLLOW open into ErrSymlink or
// ErrNotDir when the kernel's ELOOP/ENOTDIR hides which case it is.
func openDirErr(dirfd int, name string, err error) error {
	if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) {
		return classify(dirfd, name, ErrNotDir)
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

// pathErr wraps a system-call error with the operation and path, keeping errors.Is working
// for both the errno and the matching fs error (fs.ErrNotExist and so on; syscall.Errno
// implements Is for those).
func pathErr(op, p string, err error) error {
	return fmt.Errorf("%s %s: %w", op, p, err)
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
	pfd, base, release, err := d.walkParent(name)
	if err != nil {
		return nil, fmt.Errorf("open directory %s: %w", d.join(name), err)
	}
	defer release()
	fd, err := openRetry(pfd, base, dirOpenFlags, 0)
	if err != nil {
		return nil, pathErr("open directory", d.join(name), openDirErr(pfd, base, err))
	}
	return &Dir{fd: fd, path: d.join(name)}, nil
}

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
func writeFull(fd int, data []byte) error {
	for off := 0; off < len(data); {
		n, err := unix.Write(fd, data[off:])
		if err == unix.EINTR || err == unix.EAGAIN {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			return unix.EIO
		}
		off += n
	}
	return nil
}

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

// Perm is the set_perm rule of token-format.md §1.4: directories get exactly mode 0770 and
// everything else exactly 0660 (setuid, setgid and sticky cleared), the group becomes GID,
// the owner is never changed. chmod and chown are only issued when something differs.
//
// GID is the token group from LookupGroup. The zero value means group 0 (root), which the
// token library would refuse for an ordinary user: always fill GID in. A negative GID
// leaves the group alone (tests run without root).
type Perm struct {
	GID int
}

// Mode bits the set_perm rule gives.
const (
	DirMode  = 0o770
	FileMode = 0o660
)

// apply applies the rule to an open descriptor.
func (p Perm) apply(fd int, display string) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return pathErr("stat", display, err)
	}
	want := uint32(FileMode)
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		want = DirMode
	}
	// chown first: changing the group of a file can clear its setgid bit, and the final
	// mode must be exact.
	if p.GID >= 0 && int(st.Gid) != p.GID {
		if err := unix.Fchown(fd, -1, p.GID); err != nil {
			return pathErr("chown", display, err)
		}
		if err := unix.Fstat(fd, &st); err != nil {
			return pathErr("stat", display, err)
		}
	}
	if st.Mode&0o7777 != want {
		if err := unix.Fchmod(fd, want); err != nil {
			return pathErr("chmod", display, err)
		}
	}
	return nil
}

// SetPerm applies the set_perm rule to the existing directory or regular file name below d
// ("." for d itself). Symlinks and special files are refused.
func (d *Dir) SetPerm(name string, p Perm) error {
	if name == "." {
		return p.apply(d.fd, d.path)
	}
	pfd, base, release, err := d.walkParent(name)
	if err != nil {
		return fmt.Errorf("set permissions of %s: %w", d.join(name), err)
	}
	defer release()
	var st unix.Stat_t
	if err := unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return pathErr("lstat", d.join(name), err)
	}
	flags := fileReadFlags
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		flags = dirOpenFlags
	case unix.S_IFREG:
	case unix.S_IFLNK:
		return fmt.Errorf("set permissions of %s: %w", d.join(name), ErrSymlink)
	default:
		return fmt.Errorf("set permissions of %s: %w", d.join(name), ErrNotRegular)
	}
	fd, err := openRetry(pfd, base, flags, 0)
	if err != nil {
		return pathErr("open", d.join(name), classify(pfd, base, err))
	}
	defer unix.Close(fd)
	if err := sameFile(fd, &st); err != nil {
		return fmt.Errorf("set permissions of %s: %w", d.join(name), err)
	}
	return p.apply(fd, d.join(name))
}

// sameFile checks that fd still is the inode described by st (nothing was swapped in
// between a stat and an open).
func sameFile(fd int, st *unix.Stat_t) error {
	var now unix.Stat_t
	if err := unix.Fstat(fd, &now); err != nil {
		return err
	}
	if now.Dev != st.Dev || now.Ino != st.Ino || now.Mode&unix.S_IFMT != st.Mode&unix.S_IFMT {
		return ErrChanged
	}
	return nil
}

// WriteFile creates or truncates the regular file name below d and writes data. A new file is
// created with mode 0600, then the set_perm rule is applied (§1.4). A symlink at name gives
// ErrSymlink and a special file ErrNotRegular; neither is touched. A file with several hard
// links is unlinked first and created anew, so the other names keep their content. No fsync:
// the caller batches durability with Syncfs or Sync.
func (d *Dir) WriteFile(name string, data []byte, p Perm) error {
	pfd, base, release, err := d.walkParent(name)
	if err != nil {
		return fmt.Errorf("write %s: %w", d.join(name), err)
	}
	defer release()
	display := d.join(name)

	var st unix.Stat_t
	err = unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW)
	switch {
	case err == nil:
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			if st.Nlink > 1 {
				if err := unix.Unlinkat(pfd, base, 0); err != nil {
					return pathErr("unlink hard-linked", display, err)
				}
			}
		case unix.S_IFLNK:
			return fmt.Errorf("write %s: %w", display, ErrSymlink)
		default:
			return fmt.Errorf("write %s: %w", display, ErrNotRegular)
		}
	case errors.Is(err, unix.ENOENT):
	default:
		return pathErr("lstat", display, err)
	}

	fd, err := openRetry(pfd, base, unix.O_WRONLY|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC|unix.O_NOCTTY, 0o600)
	if err != nil {
		if errors.Is(err, unix.ELOOP) {
			err = classify(pfd, base, err)
		}
		return pathErr("create", display, err)
	}
	closed := false
	defer func() {
		if !closed {
			unix.Close(fd)
		}
	}()
	if err := unix.Fstat(fd, &st); err != nil {
		return pathErr("stat", display, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return fmt.Errorf("write %s: %w", display, ErrNotRegular)
	}
	if st.Nlink > 1 {
		return fmt.Errorf("write %s: hard link appeared: %w", display, ErrChanged)
	}
	if st.Size != 0 {
		if err := unix.Ftruncate(fd, 0); err != nil {
			return pathErr("truncate", display, err)
		}
	}
	if err := p.apply(fd, display); err != nil {
		return err
	}
	if err := writeFull(fd, data); err != nil {
		return pathErr("write", display, err)
	}
	closed = true
	if err := unix.Close(fd); err != nil {
		return pathErr("close", display, err)
	}
	return nil
}

// Mkdir creates the directory name below d with mode 0 and then applies the set_perm rule
// (§1.4). An existing entry gives an error satisfying errors.Is(err, fs.ErrExist).
func (d *Dir) Mkdir(name string, p Perm) error {
	pfd, base, release, err := d.walkParent(name)
	if err != nil {
		return fmt.Errorf("mkdir %s: %w", d.join(name), err)
	}
	defer release()
	fd, err := mkdirPerm(pfd, base, d.join(name), p)
	if err != nil {
		return err
	}
	unix.Close(fd)
	return nil
}

// mkdirPerm creates base in pfd with mode 0, opens it, applies p and returns the open
// descriptor.
func mkdirPerm(pfd int, base, display string, p Perm) (int, error) {
	if err := unix.Mkdirat(pfd, base, 0); err != nil {
		return -1, pathErr("mkdir", display, err)
	}
	var made unix.Stat_t
	if err := unix.Fstatat(pfd, base, &made, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return -1, pathErr("lstat", display, err)
	}
	fd, err := openRetry(pfd, base, dirOpenFlags, 0)
	if errors.Is(err, unix.EACCES) {
		// Without root (CAP_DAC_OVERRIDE) a mode-0 directory cannot be opened: give the
		// owner access first. Production runs as root and never gets here.
		if cerr := unix.Fchmodat(pfd, base, 0o700, 0); cerr != nil {
			return -1, pathErr("chmod", display, cerr)
		}
		fd, err = openRetry(pfd, base, dirOpenFlags, 0)
	}
	if err != nil {
		return -1, pathErr("open directory", display, openDirErr(pfd, base, err))
	}
	if err := sameFile(fd, &made); err != nil {
		unix.Close(fd)
		return -1, pathErr("open directory", display, err)
	}
	if err := p.apply(fd, display); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// Rename renames old to new (both below d), replacing new if it exists, as rename(2).
func (d *Dir) Rename(oldName, newName string) error {
	return d.rename2(oldName, newName, 0, "rename")
}

// RenameNoReplace renames old to new but fails with an error satisfying
// errors.Is(err, fs.ErrExist) when new exists (renameat2 RENAME_NOREPLACE). Use it whenever
// the target must not be clobbered, for example when moving a repository to its _BAK name.
func (d *Dir) RenameNoReplace(oldName, newName string) error {
	return d.rename2(oldName, newName, unix.RENAME_NOREPLACE, "rename")
}

// Exchange atomically swaps the entries a and b below d (renameat2 RENAME_EXCHANGE). Both
// must exist. Neither path is missing at any moment.
func (d *Dir) Exchange(a, b string) error {
	return d.rename2(a, b, unix.RENAME_EXCHANGE, "exchange")
}

func (d *Dir) rename2(a, b string, flags uint, op string) error {
	pa, ba, ra, err := d.walkParent(a)
	if err != nil {
		return fmt.Errorf("%s %s: %w", op, d.join(a), err)
	}
	defer ra()
	pb, bb, rb, err := d.walkParent(b)
	if err != nil {
		return fmt.Errorf("%s %s: %w", op, d.join(b), err)
	}
	defer rb()
	for {
		err = unix.Renameat2(pa, ba, pb, bb, flags)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("%s %s to %s: %w", op, d.join(a), d.join(b), err)
	}
	return nil
}

// Link makes new a hard link to old (both below d). old must be a regular file.
func (d *Dir) Link(oldName, newName string) error {
	pa, ba, ra, err := d.walkParent(oldName)
	if err != nil {
		return fmt.Errorf("link %s: %w", d.join(oldName), err)
	}
	defer ra()
	pb, bb, rb, err := d.walkParent(newName)
	if err != nil {
		return fmt.Errorf("link %s: %w", d.join(newName), err)
	}
	defer rb()
	var st unix.Stat_t
	if err := unix.Fstatat(pa, ba, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return pathErr("lstat", d.join(oldName), err)
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
	case unix.S_IFLNK:
		return fmt.Errorf("link %s: %w", d.join(oldName), ErrSymlink)
	default:
		return fmt.Errorf("link %s: %w", d.join(oldName), ErrNotRegular)
	}
	// Flags 0: linkat does not follow a symlink in old.
	if err := unix.Linkat(pa, ba, pb, bb, 0); err != nil {
		return fmt.Errorf("link %s to %s: %w", d.join(oldName), d.join(newName), err)
	}
	return nil
}

// Remove removes the file, symlink or empty directory name below d.
func (d *Dir) Remove(name string) error {
	pfd, base, release, err := d.walkParent(name)
	if err != nil {
		return fmt.Errorf("remove %s: %w", d.join(name), err)
	}
	defer release()
	var st unix.Stat_t
	if err := unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return pathErr("remove", d.join(name), err)
	}
	flags := 0
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		flags = unix.AT_REMOVEDIR
	}
	if err := unix.Unlinkat(pfd, base, flags); err != nil {
		return pathErr("remove", d.join(name), err)
	}
	return nil
}

// RemoveAll removes name below d and everything beneath it. Symlinks are never followed:
// a symlink is removed, not its target. A missing name is fine. A missing parent component
// is fine too; a symlink as a parent component gives ErrSymlink.
func (d *Dir) RemoveAll(name string) error {
	pfd, base, release, err := d.walkParent(name)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("remove %s: %w", d.join(name), err)
	}
	defer release()
	return removeAllAt(pfd, base, d.join(name), 0)
}

const maxDepth = 256

func removeAllAt(pfd int, base, display string, depth int) error {
	var st unix.Stat_t
	if err := unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		return pathErr("lstat", display, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		if err := unix.Unlinkat(pfd, base, 0); err != nil && !errors.Is(err, unix.ENOENT) {
			return pathErr("remove", display, err)
		}
		return nil
	}
	if depth >= maxDepth {
		return fmt.Errorf("remove %s: directory tree deeper than %d levels", display, maxDepth)
	}
	fd, err := openRetry(pfd, base, dirOpenFlags, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) {
			// Replaced by a symlink or file in between: remove that entry instead.
			return removeAllAt(pfd, base, display, depth+1)
		}
		return pathErr("open directory", display, err)
	}
	sub := &Dir{fd: fd, path: display}
	defer sub.Close()
	for attempt := 0; ; attempt++ {
		names, err := sub.readNames()
		if err != nil {
			return err
		}
		for _, n := range names {
			if err := removeAllAt(fd, n, path.Join(display, n), depth+1); err != nil {
				return err
			}
		}
		err = unix.Unlinkat(pfd, base, unix.AT_REMOVEDIR)
		if err == nil || errors.Is(err, unix.ENOENT) {
			return nil
		}
		if (errors.Is(err, unix.ENOTEMPTY) || errors.Is(err, unix.EEXIST)) && attempt < 3 {
			continue // something was created meanwhile
		}
		return pathErr("remove directory", display, err)
	}
}

// Sync fsyncs the directory itself (making renames and creations in it durable).
func (d *Dir) Sync() error {
	if err := unix.Fsync(d.fd); err != nil {
		return pathErr("fsync", d.path, err)
	}
	return nil
}

// Syncfs flushes the whole file system that holds d (syncfs(2)): one call makes a
// freshly copied tree of many files durable.
func (d *Dir) Syncfs() error {
	if err := unix.Syncfs(d.fd); err != nil {
		return pathErr("syncfs", d.path, err)
	}
	return nil
}

// TryLock takes an exclusive flock on the directory itself without waiting. ErrLocked
// means another open file description (another process, or another OpenDir of the same
// directory) holds it. The lock lasts until d is closed. No lock file is created.
func (d *Dir) TryLock() error {
	for {
		err := unix.Flock(d.fd, unix.LOCK_EX|unix.LOCK_NB)
		switch {
		case err == nil:
			return nil
		case err == unix.EINTR:
			continue
		case errors.Is(err, unix.EWOULDBLOCK):
			return fmt.Errorf("lock %s: %w", d.path, ErrLocked)
		default:
			return pathErr("lock", d.path, err)
		}
	}
}

// LookupGroup returns the GID of the group name (through the system's group database).
// An unknown group gives ErrGroupNotFound.
func LookupGroup(name string) (int, error) {
	if name == "" {
		return -1, fmt.Errorf("group %q: %w", name, ErrGroupNotFound)
	}
	g, err := user.LookupGroup(name)
	if err != nil {
		var unknown user.UnknownGroupError
		if errors.As(err, &unknown) {
			return -1, fmt.Errorf("group %q: %w", name, ErrGroupNotFound)
		}
		return -1, fmt.Errorf("look up group %q: %w", name, err)
	}
	gid, err := strconv.Atoi(g.Gid)
	if err != nil || gid < 0 {
		return -1, fmt.Errorf("group %q has invalid gid %q", name, g.Gid)
	}
	return gid, nil
}
