package apply

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"

	"github.com/ocktools/pkcstok-migrate/contract"
	"github.com/ocktools/pkcstok-migrate/internal/layout"
	"github.com/ocktools/pkcstok-migrate/internal/repofs"
)

// The working copy lives beside the repository, in a directory the members of the token group
// can write (SECURITY.md). It is made so that it is provably this tool's: created new
// (mkdir), only root can enter it until it is switched in (repofs.MkdirPrivate), and its
// first entry is a marker naming the repository it is a copy of, which nobody else can
// write, move or forge there. Only such a directory is ever removed as a working copy; the
// marker goes, and the directory gets the token's mode, once it is switched in.

// markerContent names the repository by its name in the parent directory: the working copy
// never leaves that directory (moving a directory elsewhere needs write access to it, which
// only root has), and the names in one directory are unique.
func markerContent(ds string) []byte {
	return []byte("pkcstok-migrate working copy of " + filepath.Base(ds) + "\n")
}

// makeWorkingCopy creates the working copy name below pdir for the repository ds: a private
// directory with the token group (so that what is created in it gets that group) and the
// marker.
func makeWorkingCopy(pdir *repofs.Dir, name, ds string, gid int) (*repofs.Dir, repofs.Info, error) {
	wc, err := pdir.MkdirPrivate(name, gid)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil, repofs.Info{}, &contract.Error{Code: contract.CodeCorruptRepository, Message: fmt.Sprintf("%s appeared while apply ran: someone else creates entries in %s", pdir.Path()+"/"+name, pdir.Path()), Err: err}
		}
		return nil, repofs.Info{}, contract.Errorf(contract.CodeIO, "create the working copy: %w", err)
	}
	info, err := wc.Lstat(".")
	if err == nil {
		_, err = wc.CreatePrivate(layout.WorkingCopyMarker, markerContent(ds))
	}
	if err != nil {
		// Nothing but the empty directory, or it and the marker, was made.
		_ = wc.RemoveAll(layout.WorkingCopyMarker)
		_ = pdir.RemoveIfSame(name, info)
		wc.Close()
		return nil, repofs.Info{}, contract.Errorf(contract.CodeIO, "create the working copy: %w", err)
	}
	return wc, info, nil
}

// ownWorkingCopy opens name below pdir when it is a working copy of ds this tool made and has
// not switched in yet: a private directory of root's holding the marker, or an empty one
// (made, but the run stopped before the marker). Anything else gives nil and why not.
func ownWorkingCopy(pdir *repofs.Dir, name, ds string) (*repofs.Dir, error) {
	wc, err := pdir.OwnDir(name)
	if err != nil {
		return nil, err
	}
	names, err := wc.ReadDirNames(".")
	if err == nil && len(names) > 0 {
		var marker []byte
		// Only root can have put the marker there (the directory is root's and no one
		// else's); its content tells this repository's copy from another's, unless a power
		// cut took it (empty or zeros: the file was created, its data not yet durable).
		if marker, _, err = wc.ReadPrivate(layout.WorkingCopyMarker); err == nil && !bytes.Equal(marker, markerContent(ds)) && !allZero(marker) {
			err = fmt.Errorf("its marker is of another repository: %w", repofs.ErrNotOwn)
		}
	}
	if err != nil {
		wc.Close()
		return nil, err
	}
	return wc, nil
}

// removeWorkingCopy removes the working copy wc (open) at name below pdir: its contents
// through its descriptor, the marker last (a removal cut short leaves a copy that is still
// provably this tool's), then the directory, if name still is wc.
func removeWorkingCopy(pdir *repofs.Dir, name string, wc *repofs.Dir) error {
	info, err := wc.Lstat(".")
	if err != nil {
		return err
	}
	names, err := wc.ReadDirNames(".")
	if err != nil {
		return err
	}
	for _, n := range names {
		if n != layout.WorkingCopyMarker {
			if err := wc.RemoveAll(n); err != nil {
				return err
			}
		}
	}
	if err := wc.RemoveAll(layout.WorkingCopyMarker); err != nil {
		return err
	}
	return pdir.RemoveIfSame(name, info)
}

// clearLeftover removes the working copy a stopped run left at <ds>_PKCSTOK_MIGRATE_TMP, if it
// is one (ownWorkingCopy); anything else there is refused and left alone.
func clearLeftover(pdir *repofs.Dir, base, ds string) error {
	name := base + layout.SuffixTmp
	if _, err := pdir.Lstat(name); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	wc, err := ownWorkingCopy(pdir, name, ds)
	if err != nil {
		return &contract.Error{Code: contract.CodeCorruptRepository, Message: fmt.Sprintf("%s exists and is not a working copy this tool made (%v): nothing was touched; move it away after checking what it holds", ds+layout.SuffixTmp, err), Err: err}
	}
	defer wc.Close()
	if err := removeWorkingCopy(pdir, name, wc); err != nil {
		return contract.Errorf(contract.CodeIO, "remove the working copy %s a stopped run left: %w", ds+layout.SuffixTmp, err)
	}
	return nil
}

// settleWorkingCopy turns the switched-in working copy wc into an ordinary repository: its
// directory mode (the token's 0770, or narrower as the original's was: copyModes; the setgid
// bit cleared), no marker, both durable before the journal that would otherwise finish it
// goes.
func settleWorkingCopy(wc *repofs.Dir, mode uint32) error {
	if err := wc.Chmod(mode); err != nil {
		return err
	}
	// Durability: the mode before the marker goes (a crash may keep a directory's entries
	// and lose its mode): a private copy without its marker could not be told from anyone
	// else's root-only directory, and would stay root-only.
	if err := wc.Sync(); err != nil {
		return err
	}
	if err := wc.Remove(layout.WorkingCopyMarker); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return wc.Sync()
}

// errUnsettled is wrapped by exchangeVerified when it could not put both entries back: the
// caller must leave everything (and its journal) as it is for a rerun or a person to sort out.
var errUnsettled = errors.New("the exchange could not be undone")

// exchangeVerified swaps the entries a and b of pdir with one RENAME_EXCHANGE when they are
// the directories wantA and wantB (device and inode), and checks afterwards that the exchange
// moved exactly those: someone renaming entries of pdir meanwhile could have put another
// directory under either name. If so, nothing is exchanged, or the exchange is undone, and the
// error says which.
func exchangeVerified(pdir *repofs.Dir, a, b string, wantA, wantB repofs.Info) error {
	// A check the disk could not answer (EIO on a failing or shut-down file system) is an
	// I/O error, not a sign of someone renaming entries.
	var ioErr error
	is := func(name string, want repofs.Info) bool {
		got, err := pdir.Lstat(name)
		if err != nil && !errors.Is(err, fs.ErrNotExist) && ioErr == nil {
			ioErr = err
		}
		return err == nil && got.IsDir() && repofs.Same(got, want)
	}
	raced := func(what string) *contract.Error {
		if ioErr != nil {
			return contract.Errorf(contract.CodeIO, "%s: checking the entries of %s failed: %w", what, pdir.Path(), ioErr)
		}
		return &contract.Error{Code: contract.CodeVerifyFailed, Message: fmt.Sprintf("%s: someone else renames entries in %s; check it", what, pdir.Path())}
	}
	if !is(a, wantA) || !is(b, wantB) {
		return raced(fmt.Sprintf("%s or %s is not the directory this run verified: nothing was switched", a, b))
	}
	if err := pdir.Exchange(a, b); err != nil {
		return contract.Errorf(contract.CodeIO, "exchange %s and %s: %w", a, b, err)
	}
	if is(a, wantB) && is(b, wantA) {
		return nil
	}
	if err := pdir.Exchange(a, b); err != nil {
		return &contract.Error{Code: contract.CodeIO, Message: fmt.Sprintf("another directory was exchanged in for %s and undoing it failed (%v): check %s by hand", a, err, pdir.Path()), Err: errUnsettled}
	}
	if !is(a, wantA) || !is(b, wantB) {
		e := raced(fmt.Sprintf("another directory was exchanged in for %s; after undoing it, %s and %s are still not what they were", a, a, b))
		e.Err = errUnsettled
		return e
	}
	return raced(fmt.Sprintf("another directory was exchanged in for %s: undone, nothing was switched", a))
}
