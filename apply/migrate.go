package apply

import (
	"errors"
	"fmt"
	"hash"
	"io/fs"
	"runtime"

	json "github.com/goccy/go-json"

	"github.com/ocktools/pkcstok-migrate/internal/repofs"
	"github.com/ocktools/pkcstok-migrate/plan"
	"github.com/ocktools/pkcstok-migrate/tokens"
)

// migrateRepository builds the 3.12 repository in the working copy, verifies it and
// switches it in. Before the exchange any failure removes the working copy (the one this run
// made, checked by its device and inode) and leaves the original untouched.
//
// It returns the digest of the migrated repository (plan.NewFingerprint, filled by the copy
// from what it wrote), which the result's fingerprint is finished from.
func migrateRepository(p *plan.Plan, insp *plan.Inspection, req plan.Options, o Options, pdir *repofs.Dir, base string, perm repofs.Perm, res *Result) (treeDigest hash.Hash, err error) {
	tmpName := base + plan.SuffixTmp
	defer plan.LimitMemory(len(insp.Index))()
	modes := newCopyModes(perm.GID, insp.Index)
	rootMode, _ := modes.mode(repofs.Entry{Rel: ".", Mode: o.orig.Mode, GID: o.orig.GID})
	if err := o.hook("copy"); err != nil {
		return nil, err
	}
	wc, wcInfo, err := makeWorkingCopy(pdir, tmpName, p.Datastore, perm.GID)
	if err != nil {
		return nil, err
	}
	defer wc.Close()
	switched := false
	var jInfo *repofs.Info
	defer func() {
		if err != nil && !switched {
			_ = removeWorkingCopy(pdir, tmpName, wc)
			if jInfo != nil {
				_ = pdir.RemoveIfSame(base+plan.SuffixJournal, *jInfo)
			}
		}
	}()
	dst, err := buildWorkingCopy(p, insp, req, o, pdir, wc, perm, modes, rootMode, res)
	if err != nil {
		return nil, err
	}
	if w := modes.warning(); w != "" {
		res.Warnings = append(res.Warnings, w)
	}
	// Durability: the working copy must be on disk before the switch; the journal's syncfs
	// below makes it so, with the journal (a syncfs of the working copy here as well would
	// be a second one with nothing new to write: crash/README.md, "Which barriers are
	// needed").
	if err := o.hook("sync"); err != nil {
		return nil, err
	}
	// Every file was verified from the bytes read back as it was written (rc.verify).
	if err := o.hook("verify"); err != nil {
		return nil, err
	}
	res.Steps = append(res.Steps, "verify")
	if jInfo, err = writeJournal(p, o, pdir, base); err != nil {
		return nil, err
	}
	if err := o.hook("exchange"); err != nil {
		return nil, err
	}
	if err := exchangeVerified(pdir, base, tmpName, o.orig, wcInfo); err != nil {
		switched = errors.Is(err, errUnsettled) // then nothing is removed: the journal says what is where
		return nil, err
	}
	switched = true
	res.RepositoryChanged = true
	res.Steps = append(res.Steps, "exchange")
	if err := finishSwitch(p, o, pdir, base, wc, rootMode, *jInfo); err != nil {
		return nil, err
	}
	res.Steps = append(res.Steps, "backup")
	return dst, nil
}

// buildWorkingCopy copies the repository into the working copy wc in one pass that writes the
// new key files and re-encrypts every object on the way, each verified from the bytes read
// back; then it checks what the plan under the locks left to the copy (checkUnread). It
// returns the digest of what it wrote.
func buildWorkingCopy(p *plan.Plan, insp *plan.Inspection, req plan.Options, o Options, pdir, wc *repofs.Dir, perm repofs.Perm, modes *copyModes, rootMode uint32, res *Result) (hash.Hash, error) {
	src, err := repofs.OpenDir(p.Datastore)
	if err != nil {
		return nil, plan.Errorf(plan.CodeIO, "open %s: %w", p.Datastore, err)
	}
	defer src.Close()
	if info, err := src.Lstat("."); err != nil || !repofs.Same(info, o.orig) {
		return nil, &plan.Error{Code: plan.CodeStalePlan, Message: fmt.Sprintf("%s is not the directory apply locked any more: someone renamed it; plan again", p.Datastore)}
	}
	// The new keys come first: the copy re-encrypts each object on the way, so every file
	// is read once and written once (no second pass that truncates and rewrites the copy).
	repo, err := tokens.Load(src)
	if err != nil {
		return nil, plan.Errorf(plan.CodeCorruptRepository, "%s: %w", p.Datastore, err)
	}
	// The new master key is drawn at once; the four PBKDF2 derivations that NVTOK.DAT and
	// the MK files need run meanwhile, while the copy re-encrypts the objects (they need the
	// master key only); the key files are written last (CopyOptions.Defer).
	up, err := repo.StartUpgrade(req.SOPIN, req.UserPIN, o.Rand)
	if err != nil {
		return nil, plan.Errorf(plan.CodeCorruptRepository, "new keys: %w", err)
	}
	defer up.Keys.Wipe()
	defer func() { _, _ = up.Wait() }() // the derivations end before the keys are wiped
	rc := newReencrypter(p, insp.Index, insp.Keys, up, o)
	dst := plan.NewFingerprint()
	copyOpts := repofs.CopyOptions{Transform: rc.transform, Verify: rc.verify, DstDigest: dst, Workers: copyWorkers(o), Defer: isKeyFile,
		Mode: modes.mode, Skip: libraryTemp, RootMode: rootMode, Exclude: plan.Reserved}
	// The working copy is written out in the background while the copy makes it, and once
	// more when every object is written while the key files may still wait for the PBKDF2
	// derivations: the syncfs that makes the working copy durable (writeJournal) then has
	// only the last files left to write (writeBehind).
	wb := newWriteBehind(wc, len(insp.Index))
	defer wb.close()
	copyOpts.OnFile = wb.file
	copyOpts.BeforeDeferred = wb.kick
	var srcDigest hash.Hash
	if insp.ObjectsUnread {
		srcDigest = plan.NewFingerprint()
		copyOpts.SrcDigest = srcDigest
	}
	if err := repofs.CopyTreeInto(src, wc, perm, copyOpts); err != nil {
		return nil, copyError(p, err)
	}
	migrated, err := rc.result()
	if err != nil {
		return nil, err
	}
	if insp.ObjectsUnread {
		if err := checkUnread(p, insp, o, srcDigest, rc, res); err != nil {
			return nil, err
		}
	}
	res.Steps = append(res.Steps, "copy", "write_keys", "reencrypt")
	res.ObjectsMigrated = migrated
	return dst, nil
}

// copyError classifies an error of the working copy.
func copyError(p *plan.Plan, err error) error {
	var pe *plan.Error
	if errors.As(err, &pe) {
		return pe
	}
	if errors.Is(err, repofs.ErrSymlink) || errors.Is(err, repofs.ErrNotRegular) || errors.Is(err, repofs.ErrHardLinked) || errors.Is(err, repofs.ErrTooLarge) {
		return plan.Errorf(plan.CodeCorruptRepository, "copy %s: %w", p.Datastore, err)
	}
	return plan.Errorf(plan.CodeIO, "copy %s: %w", p.Datastore, err)
}

// writeJournal writes the journal (a new file only root can read or write) and makes it and
// the working copy durable before the exchange can be: otherwise a power cut could leave the
// exchange with an incomplete repository or an empty journal that no rerun can read. One
// syncfs makes both durable.
func writeJournal(p *plan.Plan, o Options, pdir *repofs.Dir, base string) (*repofs.Info, error) {
	j, _ := json.Marshal(journal{State: "exchanging", Datastore: p.Datastore, Tmp: p.Datastore + plan.SuffixTmp, Bak: p.Datastore + plan.SuffixBak, PlanFingerprint: p.Fingerprint})
	if err := o.hook("journal"); err != nil {
		return nil, err
	}
	info, err := pdir.CreatePrivate(base+plan.SuffixJournal, j)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil, &plan.Error{Code: plan.CodeCorruptRepository, Message: fmt.Sprintf("%s appeared while apply ran: someone else creates entries in %s", p.Datastore+plan.SuffixJournal, pdir.Path()), Err: err}
		}
		return nil, plan.Errorf(plan.CodeIO, "write journal: %w", err)
	}
	if syncJournal {
		if err := pdir.Syncfs(); err != nil {
			return &info, plan.Errorf(plan.CodeIO, "sync journal: %w", err)
		}
	}
	// Durability: the journal's name before the exchange (covered by the fsync after the
	// exchange: one directory's changes reach the disk in order).
	if err := pdir.Sync(); err != nil {
		return &info, plan.Errorf(plan.CodeIO, "sync %s: %w", pdir.Path(), err)
	}
	return &info, nil
}

// finishSwitch does what follows the exchange: the switched-in copy gets the token's mode and
// loses its marker, the original (now under the working copy's name) becomes <ds>_BAK, and
// the journal goes.
func finishSwitch(p *plan.Plan, o Options, pdir *repofs.Dir, base string, wc *repofs.Dir, rootMode uint32, jInfo repofs.Info) error {
	tmpName, bakName := base+plan.SuffixTmp, base+plan.SuffixBak
	// Durability: the exchange, so that "the repository is migrated" holds after a power
	// cut should the next step fail (covered by the next fsync when it does not).
	if err := pdir.Sync(); err != nil {
		return plan.Errorf(plan.CodeIO, "sync %s (the repository is migrated; run apply again): %w", pdir.Path(), err)
	}
	// Durability: the mode and the marker's removal before the journal that would redo them
	// goes (settleWorkingCopy syncs the directory).
	if err := settleWorkingCopy(wc, rootMode); err != nil {
		return plan.Errorf(plan.CodeIO, "give %s its mode (the repository is migrated; run apply again): %w", p.Datastore, err)
	}
	if err := o.hook("backup"); err != nil {
		return err
	}
	if info, err := pdir.Lstat(tmpName); err != nil || !repofs.Same(info, o.orig) {
		return &plan.Error{Code: plan.CodeVerifyFailed, Message: fmt.Sprintf("the repository is migrated, but the original was moved away from %s by someone else before it could become %s: find it in %s", p.Datastore+plan.SuffixTmp, p.Datastore+plan.SuffixBak, pdir.Path())}
	}
	if err := pdir.RenameNoReplace(tmpName, bakName); err != nil {
		return plan.Errorf(plan.CodeIO, "rename the original to %s (the repository is migrated; run apply again): %w", p.Datastore+plan.SuffixBak, err)
	}
	// Durability: the original's new name (covered by the next fsync).
	if err := pdir.Sync(); err != nil {
		return plan.Errorf(plan.CodeIO, "sync %s: %w", pdir.Path(), err)
	}
	if err := o.hook("journal_remove"); err != nil {
		return err
	}
	if err := pdir.RemoveIfSame(base+plan.SuffixJournal, jInfo); err != nil {
		return plan.Errorf(plan.CodeIO, "remove journal: %w", err)
	}
	// Durability: the whole switch before the conf says 3.12 (the conf lives in another
	// directory, whose fsync covers nothing here), and no journal left after success.
	if err := pdir.Sync(); err != nil {
		return plan.Errorf(plan.CodeIO, "sync %s: %w", pdir.Path(), err)
	}
	return nil
}

// copyWorkers is how many files the working copy reads, re-encrypts and writes at once.
func copyWorkers(o Options) int {
	if o.Workers > 0 {
		return o.Workers
	}
	return runtime.GOMAXPROCS(0)
}

// checkUnread does, after the copy, what the plan did not do because it read no object
// (plan.Options.ObjectsUnread): the fingerprint of what the copy read, against a saved plan's;
// the byte order over every object; the counts.
func checkUnread(p *plan.Plan, insp *plan.Inspection, o Options, srcDigest hash.Hash, rc *reencrypter, res *Result) error {
	p.Fingerprint = plan.FinishFingerprint(srcDigest, insp.Conf)
	if o.wantFingerprint != "" && o.wantFingerprint != p.Fingerprint {
		return staleError(p, o.wantFingerprint, p.Fingerprint)
	}
	order, why, err := rc.tally.Decide(insp.NVOrder)
	if err != nil {
		return plan.Errorf(plan.CodeByteOrder, "repository %s: %w", p.Datastore, err)
	}
	before := len(p.Warnings)
	plan.SetByteOrder(p, order, why)
	res.Warnings = append(res.Warnings, p.Warnings[before:]...)
	p.Counts = rc.counts()
	return nil
}
