package apply

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"

	json "github.com/goccy/go-json"

	"github.com/ocktools/pkcstok-migrate/contract"
	"github.com/ocktools/pkcstok-migrate/internal/layout"
	"github.com/ocktools/pkcstok-migrate/internal/repofs"
)

// What a rerun does with an interrupted in-place switch (the protocol in inplace.go).

// recoverInPlace finishes or undoes what an interrupted in-place switch of ds left (the
// protocol above) and reports an apply it finished as exchanged, with its journal's plan
// fingerprint. Only private directories of root's with this repository's marker are touched.
func recoverInPlace(ds string, o Options) (recovery, error) {
	pdir, err := repofs.OpenDir(filepath.Dir(ds))
	if err != nil {
		return recovery{}, contract.Errorf(contract.CodeIO, "open %s: %w", filepath.Dir(ds), err)
	}
	defer pdir.Close()
	dsDir, err := repofs.OpenDir(ds)
	if err != nil {
		return recovery{}, contract.Errorf(contract.CodeIO, "open %s: %w", ds, err)
	}
	defer dsDir.Close()
	ip := &inPlace{ds: ds, base: filepath.Base(ds), pdir: pdir, dsDir: dsDir, o: o}
	found, err := ip.findPrivate()
	if err != nil {
		return recovery{}, err
	}
	var rec recovery
	for _, f := range found {
		r, err := ip.recoverOne(f)
		f.dir.Close()
		if err != nil {
			return recovery{}, err
		}
		if r.exchanged {
			rec = r
		}
	}
	return rec, ip.clearMarks()
}

// clearMarks removes the marks a power cut left in a backup that already has its mode (the
// mode is durable before the marks go, and a directory that is not private any more is not
// found by findPrivate): only root's own files of those names, at the backup's two places.
func (ip *inPlace) clearMarks() error {
	for _, c := range []struct {
		d    *repofs.Dir
		name string
	}{{ip.dsDir, layout.InPlaceBak}, {ip.pdir, ip.base + layout.SuffixBak}} {
		info, err := c.d.Lstat(c.name)
		if err != nil || !info.IsDir() || info.UID != 0 || info.Perm()&0o077 == 0 {
			continue
		}
		b, err := c.d.OpenSubdir(c.name)
		if err != nil {
			continue
		}
		removed := false
		for _, m := range []string{layout.WorkingCopyMarker, layout.BackupMark} {
			data, mInfo, err := b.ReadPrivate(m)
			if err != nil || m == layout.WorkingCopyMarker && !bytes.Equal(data, markerContent(ip.ds)) && !allZero(data) {
				continue
			}
			if err := b.RemoveIfSame(m, mInfo); err != nil {
				b.Close()
				return contract.Errorf(contract.CodeIO, "settle the backup %s: %w", filepath.Join(c.d.Path(), c.name), err)
			}
			removed = true
		}
		if removed {
			if err := b.Sync(); err != nil {
				b.Close()
				return contract.Errorf(contract.CodeIO, "sync %s: %w", b.Path(), err)
			}
		}
		b.Close()
	}
	return nil
}

// privateDir is a directory of this tool's found by findPrivate.
type privateDir struct {
	dir  *repofs.Dir
	loc  location
	info repofs.Info
}

// findPrivate lists the private directories of root's that carry this repository's marker:
// inside the repository under any name (a member of the token group may have renamed one), and
// the backup beside it while an in-place apply has not settled it. An empty private directory
// counts only at layout.InPlaceTmp (made, the run stopped before its marker).
func (ip *inPlace) findPrivate() ([]privateDir, error) {
	var out []privateDir
	names, err := ip.dsDir.ReadDirNames(".")
	if err != nil {
		return nil, contract.Errorf(contract.CodeIO, "read %s: %w", ip.ds, err)
	}
	type cand struct {
		d   *repofs.Dir
		loc location
	}
	cands := []cand{{ip.pdir, location{Beside: true, Name: ip.base + layout.SuffixBak}}}
	for _, n := range names {
		cands = append(cands, cand{ip.dsDir, location{Name: n}})
	}
	for _, c := range cands {
		info, err := c.d.Lstat(c.loc.Name)
		if err != nil || !info.IsDir() || info.UID != 0 || info.Perm()&0o077 != 0 {
			continue
		}
		wc, err := ownWorkingCopy(c.d, c.loc.Name, ip.ds)
		if err != nil {
			continue
		}
		if !exists(wc, layout.WorkingCopyMarker) && (c.loc.Beside || c.loc.Name != layout.InPlaceTmp) {
			wc.Close()
			continue
		}
		out = append(out, privateDir{dir: wc, loc: c.loc, info: info})
	}
	return out, nil
}

// recoverOne goes on with one private directory: resume its journal, settle it as the backup,
// or remove it as a working copy nothing was switched from.
func (ip *inPlace) recoverOne(f privateDir) (recovery, error) {
	raw, _, jerr := f.dir.ReadPrivate(layout.InPlaceJournal)
	var j inPlaceJournal
	switch {
	case jerr == nil && !allZero(raw):
		if err := json.Unmarshal(raw, &j); err != nil || j.State != "apply" && j.State != "rollback" || filepath.Base(j.Datastore) != ip.base {
			return recovery{}, &contract.Error{Code: contract.CodeCorruptRepository, Message: fmt.Sprintf("the journal in %s is not readable: check %s by hand", f.loc.path(ip.ds), ip.ds)}
		}
	case jerr != nil && !errors.Is(jerr, fs.ErrNotExist):
		return recovery{}, contract.Errorf(contract.CodeCorruptRepository, "journal in %s: %w", f.loc.path(ip.ds), jerr)
	case exists(f.dir, layout.BackupMark):
		return recovery{}, ip.settleFound(f)
	case f.loc.Beside:
		// Beside the repository only an apply's backup is ever private, and it has its
		// journal or its mark: this one is left alone.
		if o := ip.o; o.warn != nil {
			o.warn(fmt.Sprintf("%s is a root-only directory marked as a working copy of %s, without a journal: left alone; check it", f.loc.path(ip.ds), ip.ds))
		}
		return recovery{}, nil
	default:
		// No journal (or one whose data never reached the disk: nothing was switched, as the
		// switch waits for it): a working copy or a rollback's control directory, removed.
		return recovery{}, removeWorkingCopy(f.loc.dir(ip), f.loc.Name, f.dir)
	}
	ip.ctl, ip.ctlName, ip.ctlInfo = f.dir, f.loc.Name, f.info
	if f.loc.Beside {
		// Only the backup of an apply is ever beside the repository, after the switch.
		if j.State != "apply" {
			return recovery{}, &contract.Error{Code: contract.CodeCorruptRepository, Message: fmt.Sprintf("%s holds a rollback's journal: check it by hand", f.loc.path(ip.ds))}
		}
		if err := ip.switchAll(j, f.dir, true); err != nil {
			return recovery{}, err
		}
		return recovery{exchanged: true, j: journal{PlanFingerprint: j.PlanFingerprint}}, ip.settleFound(f)
	}
	if j.State == "rollback" {
		return recovery{}, ip.resumeRollback(j)
	}
	// Every entry judged by content, wherever the directory is now.
	if err := ip.switchAll(j, f.dir, true); err != nil {
		return recovery{}, err
	}
	if f.loc != j.Dest {
		if err := ip.moveCtl(j.Dest); err != nil {
			return recovery{}, err
		}
	}
	if err := ip.settleBackup(ip.backupMode()); err != nil {
		return recovery{}, err
	}
	return recovery{exchanged: true, j: journal{PlanFingerprint: j.PlanFingerprint}}, nil
}

// backupMode is the mode the backup of an in-place apply gets: what the token's directory
// allows, from the repository's own (which the in-place switch leaves as it was).
func (ip *inPlace) backupMode() uint32 {
	mode := uint32(repofs.DirMode)
	if self, err := ip.dsDir.Lstat("."); err == nil {
		mode, _ = newCopyModes(self.GID, nil).mode(repofs.Entry{Rel: ".", Mode: self.Mode, GID: self.GID})
	}
	return mode
}

// settleFound settles a found backup (journal gone or to go).
func (ip *inPlace) settleFound(f privateDir) error {
	ip.ctl, ip.ctlName, ip.ctlInfo = f.dir, f.loc.Name, f.info
	return ip.settleBackup(ip.backupMode())
}

// resumeRollback finishes an interrupted in-place rollback: every entry judged by content
// against the backup (or, once it was renamed, against where it went), the backup renamed, the
// control directory removed.
func (ip *inPlace) resumeRollback(j inPlaceJournal) error {
	src := j.Source
	if !exists(src.dir(ip), src.Name) {
		src = j.Dest
	}
	sd, err := src.dir(ip).OpenSubdir(src.Name)
	if err != nil {
		return &contract.Error{Code: contract.CodeCorruptRepository, Message: fmt.Sprintf("an in-place rollback of %s was interrupted and neither %s nor %s is there: check them by hand", ip.ds, j.Source.path(ip.ds), j.Dest.path(ip.ds)), Err: err}
	}
	defer sd.Close()
	if err := ip.switchAll(j, sd, true); err != nil {
		return err
	}
	return ip.finishRollback(j, src)
}

// finishRollback renames the source (which holds the migrated files now) to the journal's
// destination unless it is there, then removes the journal and the control directory.
func (ip *inPlace) finishRollback(j inPlaceJournal, at location) error {
	if at != j.Dest {
		if err := at.dir(ip).RenameNoReplaceTo(at.Name, j.Dest.dir(ip), j.Dest.Name); err != nil {
			return contract.Errorf(contract.CodeIO, "keep the migrated files as %s: %w", j.Dest.path(ip.ds), err)
		}
		// Durability: the rename before the journal goes.
		if err := at.dir(ip).Sync(); err != nil {
			return contract.Errorf(contract.CodeIO, "sync: %w", err)
		}
		if err := j.Dest.dir(ip).Sync(); err != nil {
			return contract.Errorf(contract.CodeIO, "sync: %w", err)
		}
	}
	if err := ip.o.hook(contract.OpJournalRemove); err != nil {
		return err
	}
	if err := removeWorkingCopy(ip.dsDir, ip.ctlName, ip.ctl); err != nil {
		return contract.Errorf(contract.CodeIO, "remove the rollback's journal: %w", err)
	}
	if err := ip.dsDir.Sync(); err != nil {
		return contract.Errorf(contract.CodeIO, "sync %s: %w", ip.ds, err)
	}
	return nil
}
