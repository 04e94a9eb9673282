package apply

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"

	"github.com/ocktools/pkcstok-migrate/contract"
	"github.com/ocktools/pkcstok-migrate/internal/conf"
	"github.com/ocktools/pkcstok-migrate/internal/layout"
	"github.com/ocktools/pkcstok-migrate/internal/repofs"
	"github.com/ocktools/pkcstok-migrate/plan"
	"github.com/ocktools/pkcstok-migrate/tokens"
)

// Rollback switches one slot back to the repository and the conf line of before its
// migration: a host rollback of one slot. nothing_to_roll_back when there is nothing.
func Rollback(req plan.Options, o Options) (*contract.Result, error) {
	h := newHost(HostRequest{Confdir: req.Confdir, StateBase: req.StateBase, Slots: []plan.Options{req}}, nil, o)
	res, err := h.rollback()
	if err != nil {
		return nil, err
	}
	s := h.slots[0]
	if res.Slots[0].Outcome == contract.OutcomeUnchanged {
		return nil, &contract.Error{Code: contract.CodeNothingToRollBack, Message: fmt.Sprintf("nothing to roll back: no old-format %s beside %s, and slot %d's tokversion is not one a migration set", s.ds+layout.SuffixBak, s.ds, req.Slot)}
	}
	return res.Slots[0].Result, nil
}

// RollbackHost switches every slot of hr back (PINs are not needed and not used): each
// repository to its backup, then, in one write of the conf, each rolled-back slot's tokversion
// line to what it was before the migration (removed, or its old value). Other slots stay as
// they are. After every slot of a host is rolled back, the conf is the one from before the
// first migration, byte for byte. A host journal is removed once every slot it names is either
// migrated or back.
func RollbackHost(hr HostRequest, o Options) (*contract.HostResult, error) {
	if err := plan.CheckHostSlots(hr.Slots); err != nil {
		return nil, err
	}
	h := newHost(hr, nil, o)
	res, err := h.rollback()
	if err != nil {
		return nil, h.hostError(err)
	}
	return res, nil
}

// rollback is the host's rollback, step by step: lock, each repository switched back (the
// repository before its conf line: an old repository under tokversion = 3.12 is refused by
// the token library without harm, the other way round is not), the conf, the journal.
func (h *host) rollback() (*contract.HostResult, error) {
	if err := h.lock(); err != nil {
		return nil, err
	}
	defer h.unlock()
	j, jInfo, err := readHostJournal(h.cdir)
	if err != nil {
		return nil, err
	}
	for _, s := range h.slots {
		s.x = &execution{res: &contract.Result{Operation: "rollback", Slot: s.req.Slot, Datastore: s.ds, Conf: filepath.Join(h.confdir, layout.ConfName), Warnings: []string{}, Steps: []contract.Op{}, Verified: true}}
		if err := rollbackSlot(s.req, h.confdir, s.x.res); err != nil {
			return nil, h.fail(s, err)
		}
	}
	for _, s := range h.slots {
		if err := rollbackRepository(s.ds, &s.o, s.req.ForcedSwitch(), s.x.res); err != nil {
			return nil, h.fail(s, err)
		}
	}
	if err := h.unsetConf(); err != nil {
		return nil, err
	}
	for _, s := range h.slots {
		res := s.x.res
		res.Changed = res.RepositoryChanged || res.ConfChanged
		s.outcome = contract.OutcomeUnchanged
		if res.Changed {
			s.o.shm.remove()
			s.outcome = contract.OutcomeRolledBack
		}
		if res.Fingerprint, err = fingerprintNow(s.ds, h.confdir); err != nil {
			return nil, h.fail(s, err)
		}
		res.Warnings = append(res.Warnings, h.warn...)
	}
	if jInfo != nil && h.journalSettled(j) {
		h.journalInfo = jInfo
		if err := h.endJournal(); err != nil {
			return nil, err
		}
	}
	out := h.result()
	out.Operation = "rollback"
	return out, nil
}

// unsetConf puts back, in one write, the tokversion line of every slot whose repository is in
// the old format now, as it was before the migration: as opencryptoki.conf_BAK (the conf from
// before the first migration) has it, when that is a backup this tool made; absent otherwise.
// Only a line exactly as a migration wrote it is changed (conf.File.UnsetTokVersion).
func (h *host) unsetConf() error {
	cf, cur, err := plan.ReadConf(h.confdir)
	if err != nil {
		return err
	}
	pristine := h.pristineConf()
	content := cur
	var changed []*hostSlot
	for _, s := range h.slots {
		if !repositoryOld(s.ds) {
			continue
		}
		before := "absent"
		if pristine != nil {
			if ps, err := pristine.Slot(uint64(s.req.Slot)); err == nil {
				before = tokVersionBefore(ps)
			}
		}
		if cf, err = conf.Parse(cf.Name, content); err != nil {
			return contract.Errorf(contract.CodeConfInvalid, "%w", err)
		}
		e, err := cf.UnsetTokVersion(uint64(s.req.Slot), before)
		if err != nil {
			return h.fail(s, contract.Errorf(contract.CodeConfInvalid, "%w (the repository is rolled back)", err))
		}
		if e.Changes() {
			content = e.Content
			changed = append(changed, s)
		}
	}
	if len(changed) == 0 {
		return nil
	}
	if err := h.o.hook(contract.OpRollbackConf); err != nil {
		return err
	}
	if _, err := conf.WriteIfUnchanged(h.confdir, cur, content, conf.WriteOptions{}, h.o.stepHook); err != nil {
		if errors.Is(err, conf.ErrConfChanged) {
			return contract.Errorf(contract.CodeStalePlan, "%s changed during the rollback (the repositories are rolled back; run rollback again): %w", filepath.Join(h.confdir, layout.ConfName), err)
		}
		return contract.Errorf(contract.CodeIO, "update %s (the repositories are rolled back; run rollback again): %w", filepath.Join(h.confdir, layout.ConfName), err)
	}
	h.confBefore, h.confAfter, h.confWritten = cur, content, true
	for _, s := range changed {
		s.x.res.ConfChanged = true
		s.x.res.Steps = append(s.x.res.Steps, contract.OpConfRestore)
	}
	return nil
}

// pristineConf parses opencryptoki.conf_BAK when it is a backup rollback may trust
// (checkConfBackupTrusted); nil otherwise, with a warning when one is there but not trusted.
func (h *host) pristineConf() *conf.File {
	if _, err := h.cdir.Lstat(layout.ConfBakName); err != nil {
		return nil
	}
	if err := checkConfBackupTrusted(h.cdir, h.confdir); err != nil {
		h.warn = append(h.warn, err.Error()+"; it was not read: the slots' tokversion lines are removed")
		return nil
	}
	b, err := h.cdir.ReadFileAnyLinks(layout.ConfBakName)
	if err != nil {
		return nil
	}
	f, err := conf.Parse(layout.ConfBakName, b)
	if err != nil {
		return nil
	}
	return f
}

// tokVersionBefore is the slot's tokversion as UnsetTokVersion takes it.
func tokVersionBefore(s *conf.Slot) string {
	if s.TokVersionKind == conf.KindAbsent {
		return "absent"
	}
	return s.TokVersion
}

// repositoryOld reports whether the repository at ds is in the old format.
func repositoryOld(ds string) bool {
	pdir, err := repofs.OpenDir(filepath.Dir(ds))
	if err != nil {
		return false
	}
	defer pdir.Close()
	return nvFormat(pdir, filepath.Base(ds)) == tokens.FormatOld
}

// journalSettled reports whether every slot the host journal names is migrated with its conf
// line, or old without it: then no run is left half done.
func (h *host) journalSettled(j hostJournal) bool {
	cf, _, err := plan.ReadConf(h.confdir)
	if err != nil {
		return false
	}
	for _, e := range j.Slots {
		s, err := cf.Slot(uint64(e.Slot))
		if err != nil {
			return false
		}
		pdir, err := repofs.OpenDir(filepath.Dir(e.Datastore))
		if err != nil {
			return false
		}
		f := nvFormat(pdir, filepath.Base(e.Datastore))
		pdir.Close()
		if (f == tokens.Format312) != s.TokVersionIs312() {
			return false
		}
	}
	return true
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

// rollbackRepository switches the repository at ds back to its backup, whatever the
// repository looks like now (a damaged one is kept aside like a migrated one, never deleted):
// an interrupted apply or rollback is finished first (a journal the tool did not write is left
// to apply to refuse); then the backup of an in-place switch is switched back in place, or
// <ds>_BAK (checked to load, and by device and inode before and after) is exchanged with the
// repository, which is kept under the first free name of <ds>_ROLLED_BACK, <ds>_ROLLED_BACK_2,
// ... Nothing to do is no error: res says what changed.
func rollbackRepository(ds string, o *Options, forced string, res *contract.Result) error {
	pdir, err := repofs.OpenDir(filepath.Dir(ds))
	if err != nil {
		return contract.Errorf(contract.CodeIO, "open %s: %w", filepath.Dir(ds), err)
	}
	defer pdir.Close()
	if _, err := recoverInterrupted(ds, o); err != nil {
		return err
	}
	dsDir, err := repofs.OpenDir(ds)
	if err != nil {
		return contract.Errorf(contract.CodeIO, "open %s: %w", ds, err)
	}
	defer dsDir.Close()
	base := filepath.Base(ds)
	if src, ok := inPlaceBackup(pdir, dsDir, ds, forced); ok {
		if nvFormat(src.in(pdir, dsDir), src.Name) == tokens.FormatOld && nvFormat(pdir, base) == tokens.Format312 {
			return rollbackInPlace(pdir, ds, src, *o, res)
		}
	}
	dsFmt, bakFmt := nvFormat(pdir, base), nvFormat(pdir, base+layout.SuffixBak)
	switch {
	case bakFmt == tokens.FormatOld && !loadsAsOld(pdir, base):
		return switchBackExchange(pdir, ds, *o, res)
	case dsFmt == tokens.FormatOld && bakFmt == tokens.Format312:
		// Interrupted after the exchange: only the rename is left.
		return keepRolledBack(pdir, ds, *o, res, false)
	}
	return nil
}

// loadsAsOld reports whether the repository dir/name loads as an old-format token (one whose
// NVTOK.DAT the token library rewrote does not: tokens.RewrittenByLibrary).
func loadsAsOld(pdir *repofs.Dir, name string) bool {
	d, err := pdir.OpenSubdir(name)
	if err != nil {
		return false
	}
	defer d.Close()
	r, err := tokens.Load(d)
	if err != nil || r.NV.Format != tokens.FormatOld {
		return false
	}
	nv, err1 := d.ReadFile("NVTOK.DAT")
	mk, err2 := d.ReadFile("MK_SO")
	return err1 == nil && err2 == nil && !tokens.RewrittenByLibrary(nv, mk)
}

// switchBackExchange exchanges the backup with the repository the locks hold, then keeps that
// one beside it (keepRolledBack).
func switchBackExchange(pdir *repofs.Dir, ds string, o Options, res *contract.Result) error {
	base, bak := filepath.Base(ds), filepath.Base(ds)+layout.SuffixBak
	bakInfo, err := loadableBackup(pdir, bak, ds)
	if err != nil {
		return err
	}
	if !anyFree(pdir, base+layout.SuffixRolledBack) {
		return &contract.Error{Code: contract.CodeBackupExists, Message: fmt.Sprintf("%s to %s_%d are all taken: remove old ones; nothing was rolled back", ds+layout.SuffixRolledBack, ds+layout.SuffixRolledBack, maxRolledBack)}
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
	return keepRolledBack(pdir, ds, o, res, true)
}

// keepRolledBack renames what the exchange put at <ds>_BAK (the repository rolled back from)
// to the first free name of <ds>_ROLLED_BACK, <ds>_ROLLED_BACK_2, ...: an earlier rollback's
// is never replaced.
func keepRolledBack(pdir *repofs.Dir, ds string, o Options, res *contract.Result, exchanged bool) error {
	base, bak := filepath.Base(ds), filepath.Base(ds)+layout.SuffixBak
	if err := o.hook(contract.OpRollbackRename); err != nil {
		return err
	}
	if info, err := pdir.Lstat(bak); err != nil || !info.IsDir() || exchanged && !repofs.Same(info, o.orig) {
		return &contract.Error{Code: contract.CodeVerifyFailed, Message: fmt.Sprintf("%s is not the repository rolled back from any more: someone else renames entries in %s; check it", ds+layout.SuffixBak, pdir.Path())}
	}
	dest, err := renameToFree(pdir, bak, base+layout.SuffixRolledBack)
	if err != nil {
		return contract.Errorf(contract.CodeIO, "rename %s: %w", ds+layout.SuffixBak, err)
	}
	// Durability: the repository rolled back before the conf is (another directory): never
	// the original conf over the 3.12 repository after a power cut.
	if err := pdir.Sync(); err != nil {
		return contract.Errorf(contract.CodeIO, "sync %s: %w", pdir.Path(), err)
	}
	res.Steps = append(res.Steps, contract.OpKeepMigrated)
	res.RepositoryChanged = true
	res.Backup = &contract.Backup{Datastore: filepath.Join(filepath.Dir(ds), dest)}
	return nil
}

// maxRolledBack bounds the names renameToFree tries.
const maxRolledBack = 1000

// anyFree reports whether one of the names renameToFree tries is free now (checked before a
// rollback changes anything; renameToFree still never replaces what appears meanwhile).
func anyFree(d *repofs.Dir, want string) bool {
	for i := 1; i <= maxRolledBack; i++ {
		if _, err := d.Lstat(keptName(want, i)); err != nil {
			return true
		}
	}
	return false
}

// keptName is the i-th name of the sequence want, want_2, want_3, ...
func keptName(want string, i int) string {
	if i == 1 {
		return want
	}
	return fmt.Sprintf("%s_%d", want, i)
}

// renameToFree renames name to the first of want, want_2, want_3, ... that is free (never
// replacing anything) and returns the name it took.
func renameToFree(d *repofs.Dir, name, want string) (string, error) {
	for i := 1; i <= maxRolledBack; i++ {
		dest := keptName(want, i)
		err := d.RenameNoReplace(name, dest)
		if err == nil {
			return dest, nil
		}
		if !errors.Is(err, fs.ErrExist) {
			return "", err
		}
	}
	return "", fmt.Errorf("%s_2 to %s_%d are all taken: remove old ones", want, want, maxRolledBack)
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
