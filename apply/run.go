// Package apply carries out a plan: it builds the migrated repository in a working copy,
// verifies it, switches it in (with one atomic exchange of the two directories, or file by
// file under a journal where the repository's directory cannot be exchanged: the in-place
// switch) and edits opencryptoki.conf. It also rolls a migration back, finishes an
// interrupted one, and removes a migration's backups by their identity (RemoveBackups). It
// decides nothing the plan has not decided.
package apply

import (
	"crypto/rand"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/ocktools/pkcstok-migrate/contract"
	"github.com/ocktools/pkcstok-migrate/internal/conf"
	"github.com/ocktools/pkcstok-migrate/internal/layout"
	"github.com/ocktools/pkcstok-migrate/internal/procscan"
	"github.com/ocktools/pkcstok-migrate/internal/repofs"
	"github.com/ocktools/pkcstok-migrate/plan"
)

// Options are the run-time inputs of apply and rollback that are not part of the plan.
type Options struct {
	Rand     io.Reader // nil = crypto/rand
	ShmDir   string    // "" = /dev/shm
	ProcRoot string    // "" = /proc
	PIDFiles []string  // nil = procscan defaults

	// Progress is told how many objects of how many are done.
	Progress func(done, total int)
	// Workers is how many files the working copy handles at once (0: one per core).
	Workers int

	wantFingerprint string       // a saved plan's, which the copy checks when the plan read no object
	orig            repofs.Info  // the repository directory apply locked (device, inode, mode)
	shm             *shmSegments // the token's segments, found under the locks before any switch

	warn func(string) // collects warnings for the result

	// stepHook is called before each step with its name; an error stops the run there as if
	// the step had failed: the fault injection of test builds (WithHook), nil otherwise.
	stepHook func(step string) error
}

func (o *Options) hook(step contract.Op) error {
	if o.stepHook == nil {
		return nil
	}
	if err := o.stepHook(string(step)); err != nil {
		return contract.Errorf(contract.CodeIO, "step %s: %w", step, err)
	}
	return nil
}

// Run plans under the locks and executes the plan. When saved is not nil, the fresh plan
// must have the same fingerprint (else stale_plan) and nothing else is taken from the
// request but the PINs.
func Run(req plan.Options, saved *contract.Plan, o Options) (*contract.Result, error) {
	if saved != nil {
		req.Slot, req.Datastore, req.Confdir = saved.Slot, saved.Datastore, saved.Confdir
	}
	if o.Rand == nil {
		o.Rand = rand.Reader
	}
	if o.ShmDir == "" {
		o.ShmDir = "/dev/shm"
	}
	req.ProcRoot, req.PIDFiles = o.ProcRoot, o.PIDFiles

	ds, _, unlock, warnings, err := begin(req, &o)
	if err != nil {
		return nil, err
	}
	defer unlock()
	rec, err := recoverInterrupted(ds, &o)
	if err != nil {
		return nil, err
	}

	// The plan made here, under the locks, reads no object of an old-format repository: the
	// copy reads each once, and checks and fingerprints what a scan would (each object
	// decodes, none is 3.12 already, the byte order, the saved plan's fingerprint) before
	// anything is switched. A 3.12 repository is scanned, private objects left encrypted.
	scan := req
	scan.PrivateUnread = true
	scan.ObjectsUnread = saved == nil || saved.Format == contract.FormatOld
	scan.SlotdChecked = true // begin refused a running pkcsslotd
	p, insp, err := plan.MakeWithKeys(scan)
	if err != nil {
		return nil, err
	}
	if insp.Keys != nil {
		defer insp.Keys.Wipe()
	}
	// A saved plan is always compared: with the state found now, or, when this run finished
	// the switch of an interrupted one, with the state that run's journal says its working
	// copy was made from (a journal is believed only as a file of root's: recoverJournal).
	switch {
	case saved == nil:
	case rec.exchanged:
		if rec.j.PlanFingerprint == "" || rec.j.PlanFingerprint != saved.Fingerprint {
			return nil, staleError(p, saved.Fingerprint, rec.j.PlanFingerprint)
		}
	default:
		if insp.ObjectsUnread {
			if saved.Counts.Total != p.Counts.Total {
				return nil, staleError(p, saved.Fingerprint, fmt.Sprintf("OBJ.IDX lists %d objects, the plan %d", p.Counts.Total, saved.Counts.Total))
			}
			o.wantFingerprint = saved.Fingerprint // checked by the copy
		} else if saved.Fingerprint != p.Fingerprint {
			return nil, staleError(p, saved.Fingerprint, p.Fingerprint)
		}
	}
	if rec.foreign != nil {
		return nil, rec.foreign
	}
	res, err := execute(p, insp, req, o)
	if err != nil {
		return nil, err
	}
	res.Warnings = append(res.Warnings, *warnings...)
	return res, nil
}

// recoverInterrupted finishes or undoes what an interrupted apply or rollback of either switch
// left, before anything else is done (Run and Rollback alike): the exchange's journal beside
// the repository, then the in-place switch's private directories inside it. It reports an
// apply it finished (recovery.exchanged), and a journal this tool did not write
// (recovery.foreign), which it neither believes nor touches.
func recoverInterrupted(ds string, o *Options) (recovery, error) {
	rec, err := recoverJournal(ds, *o)
	if err != nil {
		return recovery{}, err
	}
	if !rec.exchanged && rec.foreign == nil {
		ipRec, err := recoverInPlace(ds, *o)
		if err != nil {
			return recovery{}, err
		}
		if ipRec.exchanged {
			rec = ipRec
		}
	}
	if rec.exchanged {
		// The switch a journal described is finished: the repository is that switch's.
		if o.orig, err = lstatDir(ds); err != nil {
			return recovery{}, err
		}
	}
	return rec, nil
}

// staleError refuses a saved plan made from another state; current is the current
// fingerprint, or what differs when it is not known yet.
func staleError(p *contract.Plan, saved, current string) error {
	return &contract.Error{Code: contract.CodeStalePlan, Message: fmt.Sprintf("the plan was made from another state of %s or %s: plan again", p.Datastore, p.Conf),
		Details: map[string]any{"plan_fingerprint": saved, "current_fingerprint": current}}
}

// begin is what apply and rollback do first: find the paths (a look at the conf without
// PINs; the real plan is made under the locks), take the locks, and refuse while pkcsslotd
// or another process uses the repository. Warnings found on the way are collected in
// *warnings; the caller must call unlock.
func begin(req plan.Options, o *Options) (ds, confdir string, unlock func(), warnings *[]string, err error) {
	if ds, confdir, err = resolvePaths(req); err != nil {
		return "", "", nil, nil, err
	}
	if unlock, o.orig, err = lockAll(confdir, ds); err != nil {
		return "", "", nil, nil, err
	}
	warnings = &[]string{}
	o.warn = func(w string) { *warnings = append(*warnings, w) }
	err = o.hook(contract.OpLocked)
	if err == nil {
		err = checkNotInUse(ds, *o)
	}
	if err != nil {
		unlock()
		return "", "", nil, nil, err
	}
	o.shm = findShm(ds, *o)
	release := unlock
	unlock = func() {
		o.shm.close()
		release()
	}
	return ds, confdir, unlock, warnings, nil
}

func resolvePaths(req plan.Options) (ds, confdir string, err error) {
	if req.Confdir == "" {
		return "", "", &contract.Error{Code: contract.CodeBadRequest, Field: "confdir", Message: "confdir is required"}
	}
	confdir, err = filepath.Abs(req.Confdir)
	if err != nil {
		return "", "", contract.Errorf(contract.CodeBadRequest, "confdir: %w", err)
	}
	ds = req.Datastore
	if ds == "" {
		cf, _, err := plan.ReadConf(confdir)
		if err != nil {
			return "", "", err
		}
		s, err := cf.Slot(uint64(req.Slot))
		if err != nil {
			if errors.Is(err, conf.ErrSlotNotFound) {
				return "", "", contract.Errorf(contract.CodeSlotNotFound, "no slot %d: %w", req.Slot, err)
			}
			return "", "", contract.Errorf(contract.CodeConfInvalid, "slot %d: %w", req.Slot, err)
		}
		base := req.StateBase
		if base == "" {
			base = layout.DefaultStateBase
		}
		ds = s.RepositoryDir(base)
	}
	if ds, err = filepath.Abs(ds); err != nil {
		return "", "", contract.Errorf(contract.CodeBadRequest, "datastore: %w", err)
	}
	return ds, confdir, nil
}

// lockAll takes flock on the conf directory (one migration per conf at a time, so two slots
// cannot race on the conf) and on the repository directory, and describes the directory it
// locked: the repository apply verifies and switches is that one (device and inode), whatever
// is renamed meanwhile. No lock file is created.
func lockAll(confdir, ds string) (func(), repofs.Info, error) {
	var held []*repofs.Dir
	release := func() {
		for i := len(held) - 1; i >= 0; i-- {
			held[i].Close()
		}
	}
	var info repofs.Info
	for _, path := range []string{confdir, ds} {
		d, err := repofs.OpenDir(path)
		if err != nil {
			release()
			if errors.Is(err, fs.ErrNotExist) && path == ds {
				return nil, info, &contract.Error{Code: contract.CodeSlotNotInitialized, Message: fmt.Sprintf("%s holds no token (it does not exist): initialise the slot's token first, or give the right datastore", ds), Err: err}
			}
			if errors.Is(err, fs.ErrNotExist) {
				return nil, info, contract.Errorf(contract.CodeConfInvalid, "%s does not exist: %w", path, err)
			}
			if errors.Is(err, repofs.ErrSymlink) {
				return nil, info, contract.Errorf(contract.CodeCorruptRepository, "%s is a symlink: refusing: %w", path, err)
			}
			return nil, info, contract.Errorf(contract.CodeIO, "open %s: %w", path, err)
		}
		if err := d.TryLock(); err != nil {
			d.Close()
			release()
			if errors.Is(err, repofs.ErrLocked) {
				return nil, info, &contract.Error{Code: contract.CodeLocked, Message: fmt.Sprintf("another pkcstok-migrate run holds %s", path), Err: err}
			}
			return nil, info, contract.Errorf(contract.CodeIO, "lock %s: %w", path, err)
		}
		held = append(held, d)
		if info, err = d.Lstat("."); err != nil {
			release()
			return nil, info, contract.Errorf(contract.CodeIO, "stat %s: %w", path, err)
		}
	}
	return release, info, nil
}

// lstatDir describes the directory at path (never a symlink's target).
func lstatDir(path string) (repofs.Info, error) {
	pdir, err := repofs.OpenDir(filepath.Dir(path))
	if err != nil {
		return repofs.Info{}, contract.Errorf(contract.CodeIO, "open %s: %w", filepath.Dir(path), err)
	}
	defer pdir.Close()
	info, err := pdir.Lstat(filepath.Base(path))
	if err != nil {
		return info, contract.Errorf(contract.CodeIO, "stat %s: %w", path, err)
	}
	return info, nil
}

func checkNotInUse(ds string, o Options) error {
	pids, err := procscan.SlotdRunning(o.ProcRoot, o.PIDFiles)
	if err != nil || len(pids) > 0 {
		msg := fmt.Sprintf("pkcsslotd is running (pid %v): stop it before migrating", pids)
		if err != nil {
			msg = fmt.Sprintf("cannot tell whether pkcsslotd runs (%v): taken as running", err)
		}
		return &contract.Error{Code: contract.CodeSlotdRunning, Message: msg, Details: map[string]any{"pids": pidList(pids)}, Err: err}
	}
	pids, err = procscan.Openers(o.ProcRoot, ds)
	if errors.Is(err, procscan.ErrOpenUnnamed) {
		// Open in a process /proc does not show under the repository's name (another PID
		// namespace, another hard link): in use all the same.
		return &contract.Error{Code: contract.CodeRepositoryInUse, Message: fmt.Sprintf("a file of %s is open in a process that cannot be named (%v): stop it before migrating", ds, err), Details: map[string]any{"pids": pidList(pids)}, Err: err}
	}
	if err != nil && !errors.Is(err, procscan.ErrIncomplete) {
		return contract.Errorf(contract.CodeIO, "scan processes for open files under %s: %w", ds, err)
	}
	if err != nil && o.warn != nil {
		// Processes root cannot inspect (another user namespace, a hardened /proc) cannot be
		// ruled out; pkcsslotd itself is checked separately and fails closed.
		o.warn(fmt.Sprintf("could not check every process for open files under %s: %v", ds, err))
	}
	if len(pids) > 0 {
		return &contract.Error{Code: contract.CodeRepositoryInUse, Message: fmt.Sprintf("processes %v hold files of %s open: stop them before migrating", pids, ds), Details: map[string]any{"pids": pidList(pids)}}
	}
	return nil
}

func pidList(p []int) []int {
	if p == nil {
		return []int{}
	}
	return p
}

// execute carries out the plan made under the locks: the repository's migration (one
// skeleton, with the switch the plan chose), the token's shared-memory segments, the conf
// edit, then the result's backups and fingerprint.
func execute(p *contract.Plan, insp *plan.Inspection, req plan.Options, o Options) (*contract.Result, error) {
	x := &execution{p: p, insp: insp, req: req, o: o}
	x.res = &contract.Result{
		Operation: "apply", Slot: p.Slot, TokenType: p.TokenType, Datastore: p.Datastore, Conf: p.Conf,
		ConfDiff: p.ConfDiff, Warnings: append([]string{}, p.Warnings...), Steps: []contract.Op{},
		Verified: true, ObjectsTotal: p.Counts.Total,
	}
	if err := x.check(); err != nil {
		return nil, err
	}
	if x.repoChange {
		if err := x.migrateRepository(); err != nil {
			return nil, err
		}
	}
	if x.repoChange || x.confChange {
		o.shm.remove()
		x.res.Steps = append(x.res.Steps, contract.OpRemoveShm)
	}
	if x.confChange {
		if err := x.editConf(); err != nil {
			return nil, err
		}
	}
	x.res.Changed = x.repoChange || x.confChange
	x.res.Backup = backups(p, x.made)
	if err := x.fingerprint(); err != nil {
		return nil, err
	}
	return x.res, nil
}

// execution is one execute under way.
type execution struct {
	p                      *contract.Plan
	insp                   *plan.Inspection
	req                    plan.Options
	o                      Options
	res                    *contract.Result
	repoChange, confChange bool
	treeDigest             hash.Hash       // of the migrated repository, when the exchange made it
	made                   contract.Backup // the backups this run made, with their identity
}

// check refuses, before anything is written, what the plan cannot carry out.
func (x *execution) check() error {
	p := x.p
	if p.Format == contract.FormatMixed {
		return &contract.Error{Code: contract.CodeCorruptRepository, Message: fmt.Sprintf("%s mixes old and 3.12 files; refusing to guess", p.Datastore)}
	}
	x.repoChange, x.confChange = p.Format == contract.FormatOld, x.insp.Edit.Changes()
	if x.confChange {
		if err := checkConfBackup(p.Confdir); err != nil {
			return err
		}
	}
	if err := plan.SpaceError(p); err != nil {
		return err
	}
	if !x.repoChange {
		return nil
	}
	if x.req.SOPIN == nil || x.req.UserPIN == nil || x.insp.Keys == nil {
		return &contract.Error{Code: contract.CodeBadRequest, Field: "so_pin", Message: "the SO PIN and the user PIN are needed to migrate the repository"}
	}
	if p.Switch == contract.SwitchBlocked {
		return &contract.Error{Code: contract.CodeCannotSwitch, Message: fmt.Sprintf("%s cannot be exchanged with a working copy beside it (%s): nothing was done", p.Datastore, p.SwitchBlockedBy)}
	}
	return nil
}

// migrateRepository runs the migration skeleton with the switch the plan chose.
func (x *execution) migrateRepository() error {
	p := x.p
	parent := filepath.Dir(p.Datastore)
	pdir, err := repofs.OpenDir(parent)
	if err != nil {
		return contract.Errorf(contract.CodeIO, "open %s: %w", parent, err)
	}
	defer pdir.Close()
	m, err := newMigration(p, x.insp, x.req, x.o, pdir)
	if err != nil {
		return err
	}
	m.res = x.res
	var sw switcher = newExchangeSwitch(m)
	if p.Switch == contract.SwitchInPlace {
		if sw, err = newInPlaceSwitch(m); err != nil {
			return err
		}
	}
	if x.treeDigest, err = m.run(sw); err != nil {
		return err
	}
	x.made = m.made
	if p.Switch == contract.SwitchInPlace {
		x.treeDigest = nil // the switch moved files, not the directory: fingerprinted afresh
	}
	return nil
}

// editConf sets tokversion = 3.12 for the slot, keeping opencryptoki.conf_BAK.
func (x *execution) editConf() error {
	p := x.p
	if err := x.o.hook(contract.OpConfEdit); err != nil {
		return err
	}
	if _, err := conf.WriteIfUnchanged(p.Confdir, x.insp.Conf, x.insp.Edit.Content, x.o.stepHook); err != nil {
		if errors.Is(err, conf.ErrBackupExists) {
			return contract.Errorf(contract.CodeBackupExists, "%w", err)
		}
		if errors.Is(err, conf.ErrConfChanged) {
			return contract.Errorf(contract.CodeStalePlan, "%s changed during the run (the repository is migrated; run apply again): %w", p.Conf, err)
		}
		return contract.Errorf(contract.CodeIO, "update %s (the repository is migrated; run apply again): %w", p.Conf, err)
	}
	x.res.ConfChanged = true
	x.res.Steps = append(x.res.Steps, contract.OpConfEdit)
	if info, err := lstatConfBackup(p.Confdir); err == nil {
		x.made.Conf = filepath.Join(p.Confdir, layout.ConfBakName)
		x.made.ConfDev, x.made.ConfIno = info.Dev, info.Ino
	}
	return nil
}

// fingerprint is the state after the run. Nothing written: the plan's fingerprint, taken
// under the same locks, is the state. A repository the exchange migrated is the working
// copy, whose digest the copy computed from what it wrote: no second reading of it.
func (x *execution) fingerprint() error {
	x.res.Fingerprint = x.p.Fingerprint
	switch {
	case x.treeDigest != nil:
		newConf := x.insp.Conf
		if x.res.ConfChanged {
			newConf = x.insp.Edit.Content
		}
		x.res.Fingerprint = plan.FinishFingerprint(x.treeDigest, newConf)
	case x.res.Changed:
		fp, err := fingerprintNow(x.p.Datastore, x.p.Confdir)
		if err != nil {
			return err
		}
		x.res.Fingerprint = fp
	}
	return nil
}

// backups names the backups of the slot: those this run made, with the identity they had
// when it made them (never looked up again by name), else those an earlier run left, by name
// only: no identity is given for what this run did not make, so remove-backups cannot be
// pointed at whatever a member of the token group renamed to a backup's name since.
func backups(p *contract.Plan, made contract.Backup) *contract.Backup {
	b := made
	if b.Datastore == "" {
		for _, d := range []string{p.Datastore + layout.SuffixBak, filepath.Join(p.Datastore, layout.InPlaceBak)} {
			if _, err := os.Lstat(d); err == nil && b.Datastore == "" {
				b.Datastore = d
			}
		}
	}
	if b.Conf == "" {
		if _, err := os.Lstat(filepath.Join(p.Confdir, layout.ConfBakName)); err == nil {
			b.Conf = filepath.Join(p.Confdir, layout.ConfBakName)
		}
	}
	if b.Datastore == "" && b.Conf == "" {
		return nil
	}
	return &b
}

// lstatConfBackup describes opencryptoki.conf_BAK in the conf directory (root's: trusted).
func lstatConfBackup(confdir string) (repofs.Info, error) {
	cdir, err := repofs.OpenDir(confdir)
	if err != nil {
		return repofs.Info{}, err
	}
	defer cdir.Close()
	return cdir.Lstat(layout.ConfBakName)
}
