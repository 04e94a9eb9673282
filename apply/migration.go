package apply

import (
	"errors"
	"fmt"
	"hash"
	"runtime"

	"github.com/ocktools/pkcstok-migrate/contract"
	"github.com/ocktools/pkcstok-migrate/internal/layout"
	"github.com/ocktools/pkcstok-migrate/internal/repofs"
	"github.com/ocktools/pkcstok-migrate/plan"
	"github.com/ocktools/pkcstok-migrate/tokens"
)

// migration is one repository's migration under way: what every step needs, made once by
// execute when the repository is to change. Its run is the one skeleton of both switches:
// working copy → verify → journal → switch → backup; a switcher says how each step is done.
type migration struct {
	p        *contract.Plan
	insp     *plan.Inspection
	req      plan.Options // the PINs
	o        Options
	pdir     *repofs.Dir // the repository's parent, open
	perm     repofs.Perm // the token group
	modes    *copyModes
	rootMode uint32 // the mode the migrated repository's directory gets
	res      *contract.Result
	made     contract.Backup // the backups this run made, with their identity
	dst      hash.Hash       // the digest of the working copy, from what the copy wrote
	// switchedIn is the directory at the repository's name once the switch is done: the
	// working copy the exchange put there, or the repository itself (in place).
	switchedIn repofs.Info
}

func newMigration(p *contract.Plan, insp *plan.Inspection, req plan.Options, o Options, pdir *repofs.Dir) (*migration, error) {
	gid, err := tokenGID(p)
	if err != nil {
		return nil, err
	}
	m := &migration{p: p, insp: insp, req: req, o: o, pdir: pdir, perm: repofs.Perm{GID: gid}}
	m.modes = newCopyModes(gid, insp.Index)
	m.rootMode, _ = m.modes.mode(repofs.Entry{Rel: ".", Mode: o.orig.Mode, GID: o.orig.GID})
	return m, nil
}

// tokenGID is the gid the migrated files get: the token group's on this host, which the
// plan found to agree with the repository's (plan.GroupError).
func tokenGID(p *contract.Plan) (int, error) {
	if p.Group == nil || p.Group.GID == nil {
		return -1, &contract.Error{Code: contract.CodeGroupNotFound, Message: fmt.Sprintf("token group %q does not exist on this host", p.UserGroup)}
	}
	if err := plan.GroupError(p); err != nil {
		return -1, err
	}
	return *p.Group.GID, nil
}

// switcher is how a verified working copy replaces the repository: by one exchange of two
// directories beside each other (exchangeSwitch), or file by file inside a repository whose
// directory cannot be exchanged (inPlaceSwitch). The methods are the skeleton's steps, in the
// order run calls them.
type switcher interface {
	// backupFree refuses before any work when the backup's place is taken.
	backupFree() error
	// makeWorkingCopy creates the private, marked working copy.
	makeWorkingCopy() (*repofs.Dir, error)
	// journal records, durably with the working copy, what the switch will do.
	journal() error
	// switchIn puts the working copy's content at the repository's name.
	switchIn() error
	// keepBackup keeps the original files as the backup and removes the journal.
	keepBackup() error
	// abandon undoes what a run that failed left, as far as that is safe: before the switch,
	// the working copy and the journal go; after it, the journal tells a rerun what to do.
	abandon()
	// made is the backup this run made, with its identity.
	made() contract.Backup
	close()
}

// switchStep is the switch's step in the result.
func switchStep(sw switcher) contract.Op {
	if _, ok := sw.(*inPlaceSwitch); ok {
		return contract.OpSwitchInPlace
	}
	return contract.OpExchange
}

// prepare does every step up to the switch: the backup's place checked, the working copy
// made, filled and verified, the journal written and made durable with it. Everything the run
// allocates on the repository's file system is allocated here. On failure what it made is
// removed (abandon) and the repository is untouched.
func (m *migration) prepare(sw switcher) (err error) {
	defer func() {
		if err != nil {
			sw.abandon()
			sw.close()
		}
	}()
	if err := sw.backupFree(); err != nil {
		return err
	}
	if err := m.o.hook(contract.OpCopy); err != nil {
		return err
	}
	wc, err := sw.makeWorkingCopy()
	if err != nil {
		return err
	}
	if m.dst, err = m.buildWorkingCopy(wc); err != nil {
		return err
	}
	if w := m.modes.warning(); w != "" {
		m.res.Warnings = append(m.res.Warnings, w)
	}
	// Durability: the working copy must be on disk before the switch; the journal's syncfs
	// makes it so, with the journal (crash/README.md, "Which barriers are needed").
	if err = m.o.hook(contract.OpSync); err != nil {
		return err
	}
	// Every file was verified from the bytes read back as it was written (reencrypter.verify).
	if err = m.o.hook(contract.OpVerify); err != nil {
		return err
	}
	m.res.Steps = append(m.res.Steps, contract.OpVerify)
	return sw.journal()
}

// commit switches the prepared working copy in and keeps the original as the backup. It
// returns the digest of the migrated repository (plan.NewFingerprint, from what the copy
// wrote). After a failure at the switch the journal tells a rerun what to do.
func (m *migration) commit(sw switcher) (dst hash.Hash, err error) {
	defer sw.close()
	defer func() {
		if err != nil {
			sw.abandon()
		}
	}()
	if err = sw.switchIn(); err != nil {
		return nil, err
	}
	m.res.RepositoryChanged = true
	m.switchedIn = m.o.orig
	if x, ok := sw.(*exchangeSwitch); ok {
		m.switchedIn = x.wcInfo
	}
	m.res.Steps = append(m.res.Steps, switchStep(sw))
	if err = sw.keepBackup(); err != nil {
		return nil, err
	}
	m.res.Steps = append(m.res.Steps, contract.OpBackup)
	m.made = sw.made()
	return m.dst, nil
}

// buildWorkingCopy copies the repository into the working copy wc in one pass that writes the
// new key files and re-encrypts every object on the way, each verified from the bytes read
// back; then it checks what the plan under the locks left to the copy (checkUnread). It
// returns the digest of what it wrote.
func (m *migration) buildWorkingCopy(wc *repofs.Dir) (hash.Hash, error) {
	p := m.p
	src, err := repofs.OpenDir(p.Datastore)
	if err != nil {
		return nil, contract.Errorf(contract.CodeIO, "open %s: %w", p.Datastore, err)
	}
	defer src.Close()
	if info, err := src.Lstat("."); err != nil || !repofs.Same(info, m.o.orig) {
		return nil, &contract.Error{Code: contract.CodeStalePlan, Message: fmt.Sprintf("%s is not the directory apply locked any more: someone renamed it; plan again", p.Datastore)}
	}
	// The new keys come first: the copy re-encrypts each object on the way, so every file
	// is read once and written once (no second pass that truncates and rewrites the copy).
	repo, err := tokens.Load(src)
	if err != nil {
		return nil, contract.Errorf(contract.CodeCorruptRepository, "%s: %w", p.Datastore, err)
	}
	// The new master key is drawn at once; the four PBKDF2 derivations that NVTOK.DAT and
	// the MK files need run meanwhile, while the copy re-encrypts the objects (they need the
	// master key only); the key files are written last (CopyOptions.Defer).
	up, err := repo.StartUpgrade(m.req.SOPIN, m.req.UserPIN, m.o.Rand)
	if err != nil {
		return nil, contract.Errorf(contract.CodeCorruptRepository, "new keys: %w", err)
	}
	defer up.Keys.Wipe()
	defer func() { _, _ = up.Wait() }() // the derivations end before the keys are wiped
	rc := newReencrypter(p, m.insp.Index, m.insp.Keys, up, m.o)
	dst := plan.NewFingerprint()
	copyOpts := repofs.CopyOptions{Transform: rc.transform, Verify: rc.verify, DstDigest: dst, Workers: copyWorkers(m.o), Defer: isKeyFile,
		Mode: m.modes.mode, Skip: libraryTemp, RootMode: m.rootMode, Exclude: layout.Reserved}
	// The working copy is written out in the background while the copy makes it, and once
	// more when every object is written while the key files may still wait for the PBKDF2
	// derivations: the syncfs that makes the working copy durable (the journal's) then has
	// only the last files left to write (writeBehind).
	wb := newWriteBehind(wc, len(m.insp.Index))
	defer wb.close()
	copyOpts.OnFile = wb.file
	copyOpts.BeforeDeferred = wb.kick
	var srcDigest hash.Hash
	if m.insp.ObjectsUnread {
		srcDigest = plan.NewFingerprint()
		copyOpts.SrcDigest = srcDigest
	}
	if err := repofs.CopyTreeInto(src, wc, m.perm, copyOpts); err != nil {
		return nil, copyError(p, err)
	}
	migrated, err := rc.result()
	if err != nil {
		return nil, err
	}
	if m.insp.ObjectsUnread {
		if err := m.checkUnread(srcDigest, rc); err != nil {
			return nil, err
		}
	}
	m.res.Steps = append(m.res.Steps, contract.OpCopy, contract.OpWriteKeys, contract.OpReencrypt)
	m.res.ObjectsMigrated = migrated
	return dst, nil
}

// copyError classifies an error of the working copy.
func copyError(p *contract.Plan, err error) error {
	var pe *contract.Error
	if errors.As(err, &pe) {
		return pe
	}
	if errors.Is(err, repofs.ErrSymlink) || errors.Is(err, repofs.ErrNotRegular) || errors.Is(err, repofs.ErrHardLinked) || errors.Is(err, repofs.ErrTooLarge) {
		return contract.Errorf(contract.CodeCorruptRepository, "copy %s: %w", p.Datastore, err)
	}
	return contract.Errorf(contract.CodeIO, "copy %s: %w", p.Datastore, err)
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
func (m *migration) checkUnread(srcDigest hash.Hash, rc *reencrypter) error {
	p := m.p
	p.Fingerprint = plan.FinishFingerprint(srcDigest, m.insp.Conf)
	if m.o.wantFingerprint != "" && m.o.wantFingerprint != p.Fingerprint {
		return staleError(p, m.o.wantFingerprint, p.Fingerprint)
	}
	order, why, err := rc.tally.Decide(m.insp.NVOrder)
	if err != nil {
		return contract.Errorf(contract.CodeByteOrder, "repository %s: %w", p.Datastore, err)
	}
	before := len(p.Warnings)
	plan.SetByteOrder(p, order, why)
	m.res.Warnings = append(m.res.Warnings, p.Warnings[before:]...)
	p.Counts = rc.counts()
	return nil
}
