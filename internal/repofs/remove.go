package repofs

import (
	"errors"
	"fmt"
	"io/fs"
	"path"

	"golang.org/x/sys/unix"
)

// Remove removes the file, symlink or empty directory name below d.
func (d *Dir) Remove(name string) error { return d.remove(name, nil) }

// remove removes name below d; with want, only if name is the file want describes.
func (d *Dir) remove(name string, want *Info) error {
	pfd, base, release, err := d.walkParent(name, "remove")
	if err != nil {
		return err
	}
	defer release()
	var st unix.Stat_t
	if err := unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return pathErr("remove", d.join(name), err)
	}
	if want != nil && !Same(infoFrom(base, &st), *want) {
		return pathErr("remove", d.join(name), fmt.Errorf("another entry is there now: %w", ErrChanged))
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
	pfd, base, release, err := d.walkParent(name, "remove")
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return err
	}
	defer release()
	return removeAllAt(pfd, base, d.join(name), 0, 0)
}

const maxDepth = 256

// removeAllAt removes base below pfd and everything beneath it. With dev not 0, a directory on
// another device (a file system mounted inside the tree) is refused, not entered.
func removeAllAt(pfd int, base, display string, depth int, dev uint64) error {
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
	if dev != 0 && uint64(st.Dev) != dev {
		return pathErr("remove", display, fmt.Errorf("another file system is mounted there: %w", ErrChanged))
	}
	fd, err := openRetry(pfd, base, dirOpenFlags, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) {
			// Replaced by a symlink or file in between: remove that entry instead.
			return removeAllAt(pfd, base, display, depth+1, dev)
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
			if err := removeAllAt(fd, n, path.Join(display, n), depth+1, dev); err != nil {
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
