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
	"github.com/ocktools/pkcstok-migrate/plan"
	"github.com/ocktools/pkcstok-migrate/tokens"
)

// Rollback switches back to <datastore>_BAK and opencryptoki.conf_BAK. The migrated
// repository is kept as <datastore>_ROLLED_BACK and the migrated conf as
// opencryptoki.conf_ROLLED_BACK. Each part is decided by what is on disk, so a rerun after an
// interruption finishes the work.
func Rollback(req plan.Options, o Options) (*contract.Result, error) {
	if o.ShmDir == "" {
		o.ShmDir = "/dev/shm"
	}
	ds, confdir, unlock, warnings, err := begin(req, &o)
	if err != nil {
		return nil, err
	}
	defer unlock()
	res := &contract.Result{Operation: "rollback", Slot: req.Slot, Datastore: ds, Conf: filepath.Join(confdir, layout.ConfName), Warnings: []string{}, Steps: []contract.Op{}, Verified: true}
	if err := rollbackSlot(req, confdir, res); err != nil {
		return nil, err
	}
	pdir, err := repofs.OpenDir(filepath.Dir(ds))
	if err != nil {
		return nil, contract.Errorf(contract.CodeIO, "open %s: %w", filepath.Dir(ds), err)
	}
	defer pdir.Close()
	cdir, err := repofs.OpenDir(confdir)
	if err != nil {
		return nil, contract.Errorf(contract.CodeIO, "open %s: %w", confdir, err)
	}
	defer cdir.Close()
	// An interrupted apply or rollback is finished first (a journal the tool did not write is
	// left to apply to refuse); then the backup of an in-place switch is switched back in place.
	if _, err := recoverInterrupted(ds, &o); err != nil {
		return nil, err
	}
	dsDir, err := repofs.OpenDir(ds)
	if err != nil {
		return nil, contract.Errorf(contract.CodeIO, "open %s: %w", ds, err)
	}
	defer dsDir.Close()
	ipSrc, switchInPlace := inPlaceBackup(pdir, dsDir, ds, req.ForcedSwitch())
	if switchInPlace {
		switchInPlace = nvFormat(ipSrc.in(pdir, dsDir), ipSrc.Name) == tokens.FormatOld && nvFormat(pdir, filepath.Base(ds)) == tokens.Format312
	}
	todo, err := rollbackTodo(pdir, cdir, ds, confdir, switchInPlace)
	if err != nil {
		return nil, err
	}
	if switchInPlace {
		if err := rollbackInPlace(pdir, ds, ipSrc, o, res); err != nil {
			return nil, err
		}
	} else if todo.repo {
		if err := rollbackRepository(pdir, ds, todo.bakFmt, o, res); err != nil {
			return nil, err
		}
	}
	if todo.conf {
		if err := rollbackConf(cdir, confdir, todo.confKept, o, res); err != nil {
			return nil, err
		}
	}
	o.shm.remove()
	res.Changed = true
	if res.Fingerprint, err = fingerprintNow(ds, confdir); err != nil {
		return nil, err
	}
	res.Warnings = append(res.Warnings, *warnings...)
	return res, nil
}

// rollbackSlot checks the slot in the conf (a supported token) and fills the result's token
// type and the conf's trust warnings.
func rollbackSlot(req plan.Options, confdir string, res *contract.Result) error {
	cf, _, confWarnings, err := plan.ReadConfWarn(confdir)
	if err != nil {
		return err
	}
	res.Warnings = append(res.Warnings, confWarnings...)
	slot, err := cf.Slot(uint64(req.Slot))
	if err != nil {
		return contract.Errorf(contract.CodeSlotNotFound, "slot %d: %w", req.Slot, err)
	}
	if !slot.Type.Supported() {
		return &contract.Error{Code: contract.CodeUnsupportedToken, Message: fmt.Sprintf("slot %d: stdll %s is not a supported token", req.Slot, slot.Stdll)}
	}
	res.TokenType = slot.Type.String()
	return nil
}

// rollbackPlan is what a rollback has left to do, read from the disk.
type rollbackPlan struct {
	repo, conf bool
	bakFmt     tokens.Format // of <ds>_BAK: old before the exchange, 3.12 once it is done
	confKept   bool          // opencryptoki.conf_ROLLED_BACK is this rollback's own already
}

// rollbackTodo decides from what is on disk what is left to roll back, and refuses what must
// not be overwritten or installed.
func rollbackTodo(pdir, cdir *repofs.Dir, ds, confdir string, inPlace bool) (rollbackPlan, error) {
	base := filepath.Base(ds)
	dsFmt, bakFmt := nvFormat(pdir, base), nvFormat(pdir, base+layout.SuffixBak)
	_, confBakErr := cdir.Lstat(layout.ConfBakName)
	t := rollbackPlan{bakFmt: bakFmt, conf: confBakErr == nil}
	// Interrupted after the exchange: only the rename is left (whether or not the conf is).
	t.repo = bakFmt == tokens.FormatOld && dsFmt == tokens.Format312 || dsFmt == tokens.FormatOld && bakFmt == tokens.Format312
	if inPlace {
		// The in-place rollback checks its own destination.
		t.repo = false
	}
	if t.conf {
		if err := checkConfBackupTrusted(cdir, confdir); err != nil {
			return t, err
		}
	}
	if !t.repo && !t.conf && !inPlace {
		return t, &contract.Error{Code: contract.CodeNothingToRollBack, Message: fmt.Sprintf("nothing to roll back: no old-format %s beside a 3.12 %s, and no %s", ds+layout.SuffixBak, ds, filepath.Join(confdir, layout.ConfBakName))}
	}
	if _, err := pdir.Lstat(base + layout.SuffixRolledBack); t.repo && err == nil {
		return t, &contract.Error{Code: contract.CodeBackupExists, Message: fmt.Sprintf("%s exists from an earlier rollback: remove it first", ds+layout.SuffixRolledBack)}
	}
	// A _ROLLED_BACK conf that holds the current conf is this rollback's own: linked by a
	// run the power cut (or a kill) stopped before it renamed the backup back
	// (crash/testdata/states/good_rollback_conf_linked_not_restored).
	if _, err := cdir.Lstat(layout.ConfRolledBackName); t.conf && err == nil {
		rb, rerr := cdir.ReadFileAnyLinks(layout.ConfRolledBackName)
		cur, cerr := cdir.ReadFileAnyLinks(layout.ConfName)
		if rerr != nil || cerr != nil || !bytes.Equal(rb, cur) {
			return t, &contract.Error{Code: contract.CodeBackupExists, Message: fmt.Sprintf("%s exists from an earlier rollback: remove it first", filepath.Join(confdir, layout.ConfRolledBackName))}
		}
		t.confKept = true
	}
	return t, nil
}

// rollbackRepository switches the backup (checked to load, and checked by device and inode
// before and after) back in for the locked repository, then keeps the migrated repository as
// <ds>_ROLLED_BACK.
func rollbackRepository(pdir *repofs.Dir, ds string, bakFmt tokens.Format, o Options, res *contract.Result) error {
	base, bak := filepath.Base(ds), filepath.Base(ds)+layout.SuffixBak
	if bakFmt == tokens.FormatOld {
		bakInfo, err := loadableBackup(pdir, bak, ds)
		if err != nil {
			return err
		}
		if err := o.hook(contract.OpRollbackExchange); err != nil {
			return err
		}
		if err := exchangeVerified(pdir, base, bak, o.orig, bakInfo); err != nil {
			return err
		}
		// Durability: the exchange (covered by the next fsync under the crash model).
		if err := pdir.Sync(); err != nil {
			return contract.Errorf(contract.CodeIO, "sync %s: %w", pdir.Path(), err)
		}
		res.Steps = append(res.Steps, contract.OpExchange)
	}
	if err := o.hook(contract.OpRollbackRename); err != nil {
		return err
	}
	if info, err := pdir.Lstat(bak); err != nil || !info.IsDir() || bakFmt == tokens.FormatOld && !repofs.Same(info, o.orig) {
		return &contract.Error{Code: contract.CodeVerifyFailed, Message: fmt.Sprintf("%s is not the migrated repository any more: someone else renames entries in %s; check it", ds+layout.SuffixBak, pdir.Path())}
	}
	if err := pdir.RenameNoReplace(bak, base+layout.SuffixRolledBack); err != nil {
		return contract.Errorf(contract.CodeIO, "rename %s: %w", ds+layout.SuffixBak, err)
	}
	// Durability: the repository rolled back before the conf is (another directory):
	// never the original conf over the 3.12 repository after a power cut.
	if err := pdir.Sync(); err != nil {
		return contract.Errorf(contract.CodeIO, "sync %s: %w", pdir.Path(), err)
	}
	res.Steps = append(res.Steps, contract.OpKeepMigrated)
	res.RepositoryChanged = true
	res.Backup = &contract.Backup{Datastore: ds + layout.SuffixRolledBack}
	return nil
}

// loadableBackup checks that the backup bak below pdir still is a loadable repository before
// it is switched in, and describes the directory checked.
func loadableBackup(pdir *repofs.Dir, bak, ds string) (repofs.Info, error) {
	bd, err := pdir.OpenSubdir(bak)
	if err != nil {
		return repofs.Info{}, contract.Errorf(contract.CodeCorruptRepository, "open %s: %w", ds+layout.SuffixBak, err)
	}
	defer bd.Close()
	_, err = tokens.Load(bd)
	var info repofs.Info
	if err == nil {
		info, err = bd.Lstat(".")
	}
	if err != nil {
		return info, contract.Errorf(contract.CodeCorruptRepository, "backup %s: %w", ds+layout.SuffixBak, err)
	}
	return info, nil
}

// rollbackConf keeps the migrated conf as opencryptoki.conf_ROLLED_BACK (a hard link, unless
// an interrupted run made it) and renames opencryptoki.conf_BAK back.
func rollbackConf(cdir *repofs.Dir, confdir string, confKept bool, o Options, res *contract.Result) error {
	if err := o.hook(contract.OpRollbackConf); err != nil {
		return err
	}
	if !confKept {
		if err := cdir.Link(layout.ConfName, layout.ConfRolledBackName); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return contract.Errorf(contract.CodeIO, "keep the migrated conf: %w", err)
		}
	}
	if err := cdir.Rename(layout.ConfBakName, layout.ConfName); err != nil {
		return contract.Errorf(contract.CodeIO, "restore %s: %w", layout.ConfBakName, err)
	}
	// Durability: the restored conf, before rollback reports success.
	if err := cdir.Sync(); err != nil {
		return contract.Errorf(contract.CodeIO, "sync %s: %w", confdir, err)
	}
	res.ConfChanged = true
	res.Steps = append(res.Steps, contract.OpConfRestore)
	if res.Backup == nil {
		res.Backup = &contract.Backup{}
	}
	res.Backup.Conf = filepath.Join(confdir, layout.ConfRolledBackName)
	return nil
}

// checkConfBackupTrusted refuses an opencryptoki.conf_BAK that rollback must not install: not
// a regular file (a symlink is never followed), or one that someone other than root or the
// conf directory's owner (the trusted users, SECURITY.md) made or may write. apply makes it
// as a hard link of the conf it replaces, so it keeps that conf's owner and mode.
func checkConfBackupTrusted(cdir *repofs.Dir, confdir string) error {
	info, err := cdir.Lstat(layout.ConfBakName)
	if err != nil {
		return contract.Errorf(contract.CodeIO, "stat %s: %w", filepath.Join(confdir, layout.ConfBakName), err)
	}
	dirInfo, err := cdir.Lstat(".")
	if err != nil {
		return contract.Errorf(contract.CodeIO, "stat %s: %w", confdir, err)
	}
	cur, cerr := cdir.Lstat(layout.ConfName)
	why := ""
	switch {
	case !info.IsRegular():
		why = "it is not a regular file"
	case info.UID != 0 && info.UID != dirInfo.UID:
		why = fmt.Sprintf("it belongs to uid %d, neither root nor the owner of %s", info.UID, confdir)
	case info.Perm()&0o022 != 0 && (cerr != nil || !writersCovered(info, cur)):
		// Writable by group or others where the conf itself is not: someone who cannot
		// change the conf could have changed its backup. (Where the conf is as writable, as
		// apply leaves the two, rollback gives no one anything new; plan warns about both.)
		why = fmt.Sprintf("its mode %04o lets group or others write it, which the current conf does not", info.Perm())
	}
	if why == "" {
		return nil
	}
	return &contract.Error{Code: contract.CodeConfInvalid, Message: fmt.Sprintf("%s is not a backup this tool made (%s): nothing was rolled back; check it and the permissions of %s", filepath.Join(confdir, layout.ConfBakName), why, confdir)}
}

// writersCovered reports whether everyone who may write bak (beside its owner) may write cur:
// others only if others may write cur, the group only if cur has the same group and lets it
// write (or others may).
func writersCovered(bak, cur repofs.Info) bool {
	if !cur.IsRegular() {
		return false
	}
	if bak.Perm()&0o002 != 0 && cur.Perm()&0o002 == 0 {
		return false
	}
	if bak.Perm()&0o020 != 0 && cur.Perm()&0o002 == 0 && (cur.GID != bak.GID || cur.Perm()&0o020 == 0) {
		return false
	}
	return true
}
