// Package apply carries out a plan: it builds the migrated repository in a working copy,
// verifies it, switches it in (with one atomic exchange of the two directories, or file by
// file under a journal where the repository's directory cannot be exchanged: the in-place
// switch) and edits opencryptoki.conf. It also rolls a migration back, finishes an
// interrupted one, and removes a migration's backups by their identity (RemoveBackups). It
// decides nothing the plan has not decided.
package apply

import (
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

// lockAll takes flock on the conf directory (one run per conf at a time, so two runs cannot
// race on the conf) and on each repository directory of dss, in that order, and describes the
// directories it locked: the repository apply verifies and switches is that one (device and
// inode), whatever is renamed meanwhile. No lock file is created. The conf directory stays
// open (cdir) until release. failedAt is the index in dss of a repository that could not be
// locked, -1 otherwise.
func lockAll(confdir string, dss []string) (release func(), cdir *repofs.Dir, infos []repofs.Info, failedAt int, err error) {
	var held []*repofs.Dir
	release = func() {
		for i := len(held) - 1; i >= 0; i-- {
			held[i].Close()
		}
	}
	failedAt = -1
	for i, path := range append([]string{confdir}, dss...) {
		d, err := lockDir(path, i > 0)
		if err == nil {
			var info repofs.Info
			if info, err = d.Lstat("."); err != nil {
				d.Close()
				err = contract.Errorf(contract.CodeIO, "stat %s: %w", path, err)
			} else if i > 0 {
				infos = append(infos, info)
			}
		}
		if err != nil {
			release()
			return nil, nil, nil, i - 1, err
		}
		held = append(held, d)
	}
	return release, held[0], infos, -1, nil
}

// lockDir opens the directory at path (never through a symlink) and takes its flock.
func lockDir(path string, repository bool) (*repofs.Dir, error) {
	d, err := repofs.OpenDir(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) && repository {
			return nil, &contract.Error{Code: contract.CodeSlotNotInitialized, Message: fmt.Sprintf("%s holds no token (it does not exist): initialise the slot's token first, or give the right datastore", path), Err: err}
		}
		if errors.Is(err, fs.ErrNotExist) {
			return nil, contract.Errorf(contract.CodeConfInvalid, "%s does not exist: %w", path, err)
		}
		if errors.Is(err, repofs.ErrSymlink) {
			return nil, contract.Errorf(contract.CodeCorruptRepository, "%s is a symlink: refusing: %w", path, err)
		}
		return nil, contract.Errorf(contract.CodeIO, "open %s: %w", path, err)
	}
	if err := d.TryLock(); err != nil {
		d.Close()
		if errors.Is(err, repofs.ErrLocked) {
			return nil, &contract.Error{Code: contract.CodeLocked, Message: fmt.Sprintf("another pkcstok-migrate run holds %s", path), Err: err}
		}
		return nil, contract.Errorf(contract.CodeIO, "lock %s: %w", path, err)
	}
	return d, nil
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

// newExecution is the slot's part of a host run, for the plan made under the locks.
func newExecution(p *contract.Plan, insp *plan.Inspection, req plan.Options, o Options) *execution {
	x := &execution{p: p, insp: insp, req: req, o: o}
	x.res = &contract.Result{
		Operation: "apply", Slot: p.Slot, TokenType: p.TokenType, Datastore: p.Datastore, Conf: p.Conf,
		ConfDiff: p.ConfDiff, Warnings: append([]string{}, p.Warnings...), Steps: []contract.Op{},
		Verified: true, ObjectsTotal: p.Counts.Total,
	}
	return x
}

// execution is one slot's part of a host run: its plan, what it changes, its result.
type execution struct {
	p                      *contract.Plan
	insp                   *plan.Inspection
	req                    plan.Options
	o                      Options
	res                    *contract.Result
	repoChange, confChange bool
	treeDigest             hash.Hash       // of the migrated repository, when the exchange made it
	made                   contract.Backup // the backups this run made, with their identity
	finalConf              []byte          // the conf after the run, for the fingerprint
	switchedIn             repofs.Info     // the repository's directory after the switch
	m                      *migration      // prepared, not yet switched
	sw                     switcher
}

// check refuses, before anything is written, what the plan cannot carry out.
func (x *execution) check() error {
	p := x.p
	if p.Format == contract.FormatMixed {
		return &contract.Error{Code: contract.CodeCorruptRepository, Message: fmt.Sprintf("%s mixes old and 3.12 files; refusing to guess", p.Datastore)}
	}
	x.repoChange, x.confChange = p.Format == contract.FormatOld, x.insp.Edit.Changes()
	if x.confChange {
		if err := checkConfTemp(p.Confdir); err != nil {
			return err
		}
	}
	if err := plan.SpaceError(p); err != nil {
		return err
	}
	if !x.repoChange {
		return nil
	}
	if _, err := tokenGID(p); err != nil {
		return err
	}
	if x.req.SOPIN == nil || x.req.UserPIN == nil || x.insp.Keys == nil {
		return &contract.Error{Code: contract.CodeBadRequest, Field: "so_pin", Message: "the SO PIN and the user PIN are needed to migrate the repository"}
	}
	if p.Switch == contract.SwitchBlocked {
		return &contract.Error{Code: contract.CodeCannotSwitch, Message: fmt.Sprintf("%s cannot be exchanged with a working copy beside it (%s): nothing was done", p.Datastore, p.SwitchBlockedBy)}
	}
	return nil
}

// prepareRepository does the migration's steps up to the switch (migration.prepare), with
// the switch the plan chose.
func (x *execution) prepareRepository() error {
	p := x.p
	parent := filepath.Dir(p.Datastore)
	pdir, err := repofs.OpenDir(parent)
	if err != nil {
		return contract.Errorf(contract.CodeIO, "open %s: %w", parent, err)
	}
	m, err := newMigration(p, x.insp, x.req, x.o, pdir)
	if err != nil {
		pdir.Close()
		return err
	}
	m.res = x.res
	var sw switcher = newExchangeSwitch(m)
	if p.Switch == contract.SwitchInPlace {
		if sw, err = newInPlaceSwitch(m); err != nil {
			pdir.Close()
			return err
		}
	}
	if err := m.prepare(sw); err != nil {
		pdir.Close()
		return err
	}
	x.m, x.sw = m, sw
	return nil
}

// switchRepository switches the prepared working copy in (migration.commit).
func (x *execution) switchRepository() error {
	m, sw := x.m, x.sw
	defer m.pdir.Close()
	x.m, x.sw = nil, nil
	var err error
	x.treeDigest, err = m.commit(sw)
	x.switchedIn = m.switchedIn
	if err != nil {
		return err
	}
	x.made.Datastore, x.made.DatastoreDev, x.made.DatastoreIno = m.made.Datastore, m.made.DatastoreDev, m.made.DatastoreIno
	if x.p.Switch == contract.SwitchInPlace {
		x.treeDigest = nil // the switch moved files, not the directory: fingerprinted afresh
	}
	return nil
}

// abandonPrepared removes what prepareRepository made when the run stops before the switch.
func (x *execution) abandonPrepared() {
	if x.sw == nil {
		return
	}
	x.sw.abandon()
	x.sw.close()
	x.m.pdir.Close()
	x.m, x.sw = nil, nil
}

// fingerprint is the state after the run. Nothing written: the plan's fingerprint, taken
// under the same locks, is the state. A repository the exchange migrated is the working
// copy, whose digest the copy computed from what it wrote: no second reading of it.
func (x *execution) fingerprint() error {
	x.res.Fingerprint = x.p.Fingerprint
	switch {
	case x.treeDigest != nil:
		x.res.Fingerprint = plan.FinishFingerprint(x.treeDigest, x.finalConf)
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
