package repofs

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

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

// Perm is the set_perm rule of doc/format.md §1.4: directories get exactly mode 0770 and
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

// setPerm applies the set_perm rule to the existing directory or regular file name below d
// ("." for d itself). Symlinks and special files are refused.
func (d *Dir) setPerm(name string, p Perm) error {
	if name == "." {
		return p.apply(d.fd, d.path)
	}
	pfd, base, release, err := d.walkParent(name, "set permissions of")
	if err != nil {
		return err
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
		return pathErr("set permissions of", d.join(name), ErrSymlink)
	default:
		return pathErr("set permissions of", d.join(name), ErrNotRegular)
	}
	fd, err := openRetry(pfd, base, flags, 0)
	if err != nil {
		return pathErr("open", d.join(name), classify(pfd, base, err))
	}
	defer unix.Close(fd)
	if err := sameFile(fd, &st); err != nil {
		return pathErr("set permissions of", d.join(name), err)
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
	pfd, base, release, err := d.walkParent(name, "write")
	if err != nil {
		return err
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
			return pathErr("write", display, ErrSymlink)
		default:
			return pathErr("write", display, ErrNotRegular)
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
		return pathErr("write", display, ErrNotRegular)
	}
	if st.Nlink > 1 {
		return pathErr("write", display, fmt.Errorf("hard link appeared: %w", ErrChanged))
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
	pfd, base, release, err := d.walkParent(name, "mkdir")
	if err != nil {
		return err
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
	fd, err := mkdirOpen(pfd, base, display)
	if err != nil {
		return -1, err
	}
	if err := p.apply(fd, display); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}
