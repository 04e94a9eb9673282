package repofs

import (
	"fmt"

	"golang.org/x/sys/unix"
)

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

// ExchangeWith atomically swaps the entry a below d with the entry b below other (both on
// one file system; renameat2 RENAME_EXCHANGE).
func (d *Dir) ExchangeWith(a string, other *Dir, b string) error {
	return d.rename2To(a, other, b, unix.RENAME_EXCHANGE, "exchange")
}

// RenameNoReplaceTo renames a below d to b below other, failing with an error satisfying
// errors.Is(err, fs.ErrExist) when b exists.
func (d *Dir) RenameNoReplaceTo(a string, other *Dir, b string) error {
	return d.rename2To(a, other, b, unix.RENAME_NOREPLACE, "rename")
}

func (d *Dir) rename2(a, b string, flags uint, op string) error {
	return d.rename2To(a, d, b, flags, op)
}

func (d *Dir) rename2To(a string, other *Dir, b string, flags uint, op string) error {
	pa, ba, ra, err := d.walkParent(a, op)
	if err != nil {
		return err
	}
	defer ra()
	pb, bb, rb, err := other.walkParent(b, op)
	if err != nil {
		return err
	}
	defer rb()
	for {
		err = unix.Renameat2(pa, ba, pb, bb, flags)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("%s %s to %s: %w", op, d.join(a), other.join(b), err)
	}
	return nil
}

// Link makes new a hard link to old (both below d). old must be a regular file.
func (d *Dir) Link(oldName, newName string) error {
	pa, ba, ra, err := d.walkParent(oldName, "link")
	if err != nil {
		return err
	}
	defer ra()
	pb, bb, rb, err := d.walkParent(newName, "link")
	if err != nil {
		return err
	}
	defer rb()
	var st unix.Stat_t
	if err := unix.Fstatat(pa, ba, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return pathErr("lstat", d.join(oldName), err)
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
	case unix.S_IFLNK:
		return pathErr("link", d.join(oldName), ErrSymlink)
	default:
		return pathErr("link", d.join(oldName), ErrNotRegular)
	}
	// Flags 0: linkat does not follow a symlink in old.
	if err := unix.Linkat(pa, ba, pb, bb, 0); err != nil {
		return fmt.Errorf("link %s to %s: %w", d.join(oldName), d.join(newName), err)
	}
	return nil
}
