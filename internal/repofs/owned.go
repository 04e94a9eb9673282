package repofs

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// The tool works in directories that members of the token group can write (SECURITY.md):
// they can rename, replace and plant entries there at any moment. The functions here are how
// it makes entries that are provably its own, and touches nothing else:
//
//   - CreatePrivate and MkdirPrivate make new entries (O_EXCL / mkdir: never an existing one)
//     that only the tool's own user can enter or change;
//   - ReadPrivate believes a file only when it is such an entry: a regular file of the tool's
//     user, no access for anyone else, one link;
//   - RemoveIfSame and Same compare the identity (device and inode) of a name with the one
//     the tool holds open, so nothing is removed or switched by name alone.

// ErrNotOwn is wrapped by ReadPrivate and OwnDir when an entry is not one the tool made: owned
// by another user, accessible by group or others, or hard-linked.
var ErrNotOwn = errors.New("not an entry this tool made")

// Same reports whether two descriptions are of the same file (device and inode).
func Same(a, b Info) bool { return a.Dev == b.Dev && a.Ino == b.Ino }

// CreatePrivate creates the regular file name below d, which must not exist (O_EXCL; an
// existing entry, a symlink included, gives an error satisfying errors.Is(err, fs.ErrExist)),
// with mode 0600 whatever the umask, and writes data. No fsync. The Info describes the file
// created (for RemoveIfSame).
func (d *Dir) CreatePrivate(name string, data []byte) (Info, error) {
	return d.createPrivate(name, data, false)
}

// CreatePrivateDurable is CreatePrivate with the file's content fsynced before it is closed:
// for a file whose name a later directory fsync makes durable and whose content must then be
// there too.
func (d *Dir) CreatePrivateDurable(name string, data []byte) (Info, error) {
	return d.createPrivate(name, data, true)
}

func (d *Dir) createPrivate(name string, data []byte, durable bool) (Info, error) {
	pfd, base, release, err := d.walkParent(name, "create")
	if err != nil {
		return Info{}, err
	}
	defer release()
	display := d.join(name)
	fd, err := openRetry(pfd, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NOCTTY, 0o600)
	if err != nil {
		return Info{}, pathErr("create", display, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return Info{}, pathErr("stat", display, err)
	}
	info := infoFrom(base, &st)
	err = unix.Fchmod(fd, 0o600)
	if err == nil {
		err = writeFull(fd, data)
	}
	if err == nil && durable {
		err = unix.Fsync(fd)
	}
	if cerr := unix.Close(fd); err == nil {
		err = cerr
	}
	if err != nil {
		// The file is this call's (O_EXCL): it goes again, if it still is at name.
		_ = d.RemoveIfSame(name, info)
		return Info{}, pathErr("create", display, err)
	}
	return info, nil
}

// ReadPrivate reads the file name below d only if it is one the tool could have made with
// CreatePrivate: a regular file (never a symlink; opened non-blocking, so a FIFO cannot hang)
// owned by the effective user, with no permission bit for group or others and one link.
// Otherwise the error wraps ErrNotOwn (or ErrSymlink, ErrNotRegular, fs.ErrNotExist). The
// returned Info describes the open file.
func (d *Dir) ReadPrivate(name string) ([]byte, Info, error) {
	pfd, base, release, err := d.walkParent(name, "open")
	if err != nil {
		return nil, Info{}, err
	}
	defer release()
	display := d.join(name)
	fd, err := openRetry(pfd, base, fileReadFlags, 0)
	if err != nil {
		if errors.Is(err, unix.ELOOP) {
			err = classify(pfd, base, err)
		}
		return nil, Info{}, pathErr("open", display, err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, Info{}, pathErr("stat", display, err)
	}
	info := infoFrom(base, &st)
	if !info.IsRegular() {
		return nil, info, pathErr("read", display, ErrNotRegular)
	}
	if err := ownEntry(info); err != nil {
		return nil, info, pathErr("read", display, err)
	}
	if st.Size > maxFileSize {
		return nil, info, pathErr("read", display, fmt.Errorf("%d bytes: %w", st.Size, ErrTooLarge))
	}
	buf := make([]byte, st.Size)
	if err := readFull(fd, buf); err != nil {
		return nil, info, pathErr("read", display, err)
	}
	return buf, info, nil
}

// ownEntry checks that info describes an entry only the effective user can use: its owner,
// mode bits for the owner only, and (for a file) a single link.
func ownEntry(info Info) error {
	if info.UID != os.Geteuid() {
		return fmt.Errorf("owned by uid %d: %w", info.UID, ErrNotOwn)
	}
	if info.Perm()&0o077 != 0 {
		return fmt.Errorf("mode %04o gives group or others access: %w", info.Perm(), ErrNotOwn)
	}
	if !info.IsDir() && info.Nlink != 1 {
		return fmt.Errorf("%d hard links: %w", info.Nlink, ErrNotOwn)
	}
	return nil
}

// privateDirMode is the mode of a directory MkdirPrivate makes: the owner only, with the
// setgid bit when a group is given so that what is created inside gets that group.
func privateDirMode(gid int) uint32 {
	if gid < 0 {
		return 0o700
	}
	return 0o700 | unix.S_ISGID
}

// MkdirPrivate creates the directory name below d, which must not exist, with mode 0 and
// gives it group gid (gid < 0: left alone) and privateDirMode: no one but the effective user
// can enter it, so nothing below it can be changed by anyone else until its mode is widened
// through the returned handle (Chmod).
func (d *Dir) MkdirPrivate(name string, gid int) (*Dir, error) {
	pfd, base, release, err := d.walkParent(name, "mkdir")
	if err != nil {
		return nil, err
	}
	defer release()
	display := d.join(name)
	fd, err := mkdirOpen(pfd, base, display)
	if err != nil {
		return nil, err
	}
	// A default ACL of the parent is inherited by what is made in it: its entries (say
	// user:nobody:rwx) would reach every file of the copy beside the mode. The new directory
	// loses them, so nothing below it inherits any.
	if err := dropACLs(fd); err != nil {
		unix.Close(fd)
		return nil, pathErr("remove inherited ACLs of", display, err)
	}
	if gid >= 0 {
		if err := unix.Fchown(fd, -1, gid); err != nil {
			unix.Close(fd)
			return nil, pathErr("chown", display, err)
		}
	}
	if err := unix.Fchmod(fd, privateDirMode(gid)); err != nil {
		unix.Close(fd)
		return nil, pathErr("chmod", display, err)
	}
	return &Dir{fd: fd, path: display}, nil
}

// mkdirOpen creates base in pfd with mode 0 and opens it, checking that the directory opened
// is the one created.
func mkdirOpen(pfd int, base, display string) (int, error) {
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
	// Another directory renamed to base between the mkdir and the stat would pass the check
	// above: the one just made has mode 0 and the effective user as owner, which nobody else
	// can give a directory (an empty mode-0 one of root's is all a rename could bring, and
	// nothing is lost by filling that). The setgid bit is inherited from a setgid parent.
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Mode&0o7777&^unix.S_ISGID != 0 || int(st.Uid) != os.Geteuid() {
		unix.Close(fd)
		return -1, pathErr("mkdir", display, fmt.Errorf("another directory was put there meanwhile: %w", ErrChanged))
	}
	return fd, nil
}

// OwnDir opens the directory name below d only if it is one only the effective user can use
// (see ReadPrivate; ErrNotOwn otherwise).
func (d *Dir) OwnDir(name string) (*Dir, error) {
	sub, err := d.OpenSubdir(name)
	if err != nil {
		return nil, err
	}
	info, err := sub.Lstat(".")
	if err == nil {
		if oerr := ownEntry(info); oerr != nil {
			err = pathErr("open directory", sub.path, oerr)
		}
	}
	if err != nil {
		sub.Close()
		return nil, err
	}
	return sub, nil
}

// Chmod sets the permission bits of the directory itself through its descriptor.
func (d *Dir) Chmod(mode uint32) error {
	if err := unix.Fchmod(d.fd, mode); err != nil {
		return pathErr("chmod", d.path, err)
	}
	return nil
}

// RemoveIfSame removes the entry name below d (a file, or an empty directory) only if it is
// the file want describes (device and inode); another entry at that name gives ErrChanged and
// is left alone. A missing name gives an error satisfying errors.Is(err, fs.ErrNotExist).
func (d *Dir) RemoveIfSame(name string, want Info) error { return d.remove(name, &want) }

// dropACLs removes the access and default POSIX ACLs of the open directory fd (those it
// inherited from its parent's default ACL); a file system without ACLs, or a directory without
// them, is fine.
func dropACLs(fd int) error {
	for _, name := range []string{"system.posix_acl_default", "system.posix_acl_access"} {
		if err := unix.Fremovexattr(fd, name); err != nil && err != unix.ENODATA && err != unix.EOPNOTSUPP && err != unix.ENOTSUP {
			return err
		}
	}
	return nil
}
