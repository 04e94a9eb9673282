package repofs

import (
	"errors"
	"fmt"
	"io/fs"

	"golang.org/x/sys/unix"
)

// RemoveTreeIfSame removes the directory name below d and everything beneath it, but only if
// name is the directory want describes (device and inode). Nothing is removed by name alone:
// the directory is first moved into scratch, a new directory below d that only the effective
// user can enter (MkdirPrivate), and its identity is checked there, where nobody else can
// rename anything in its place. Another entry that had been put at name meanwhile is moved
// back and left alone (ErrChanged). The tree is then removed through directory descriptors,
// never following a symlink and never entering another file system mounted inside it, and
// scratch goes last. A missing name gives an error satisfying errors.Is(err, fs.ErrNotExist).
//
// scratch must not exist, unless it is an empty or half-removed one of the effective user's
// own (left by a run that was stopped): then what is in it is removed first.
func (d *Dir) RemoveTreeIfSame(name string, want Info, scratch string) error {
	display := d.join(name)
	cur, err := d.Lstat(name)
	if err != nil {
		return err
	}
	if !Same(cur, want) || !cur.IsDir() {
		return pathErr("remove", display, fmt.Errorf("another entry is there now: %w", ErrChanged))
	}
	if err := d.clearScratch(scratch); err != nil {
		return err
	}
	sc, err := d.MkdirPrivate(scratch, -1)
	if err != nil {
		return err
	}
	defer sc.Close()
	const inside = "tree"
	if err := d.RenameNoReplaceTo(name, sc, inside); err != nil {
		_ = d.remove(scratch, nil)
		return err
	}
	moved, err := sc.Lstat(inside)
	if err != nil {
		return err
	}
	if !Same(moved, want) {
		// Swapped in between the check and the rename: not ours to remove.
		if rerr := sc.RenameNoReplaceTo(inside, d, name); rerr != nil {
			return pathErr("remove", display, fmt.Errorf("another entry was put there meanwhile, and it could not be moved back: %v: %w", rerr, ErrChanged))
		}
		_ = d.remove(scratch, nil)
		return pathErr("remove", display, fmt.Errorf("another entry was put there meanwhile (left in place): %w", ErrChanged))
	}
	if err := removeAllAt(sc.fd, inside, display, 0, want.Dev); err != nil {
		return err
	}
	return d.remove(scratch, nil)
}

// clearScratch removes a scratch directory a stopped RemoveTreeIfSame left, if it is one of
// the effective user's own (ErrNotOwn otherwise); a missing one is fine.
func (d *Dir) clearScratch(scratch string) error {
	sc, err := d.OwnDir(scratch)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	info, err := sc.Lstat(".")
	sc.Close()
	if err != nil {
		return err
	}
	pfd, base, release, err := d.walkParent(scratch, "remove")
	if err != nil {
		return err
	}
	defer release()
	if err := removeAllAt(pfd, base, d.join(scratch), 0, info.Dev); err != nil && !errors.Is(err, unix.ENOENT) {
		return err
	}
	return nil
}
