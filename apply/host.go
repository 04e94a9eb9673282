package apply

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"runtime"
	"sort"

	json "github.com/goccy/go-json"

	"github.com/ocktools/pkcstok-migrate/contract"
	"github.com/ocktools/pkcstok-migrate/internal/conf"
	"github.com/ocktools/pkcstok-migrate/internal/layout"
	"github.com/ocktools/pkcstok-migrate/internal/parallel"
	"github.com/ocktools/pkcstok-migrate/internal/repofs"
	"github.com/ocktools/pkcstok-migrate/plan"
)

// HostRequest is several slots of one conf, each with its own repository and PINs: a host.
type HostRequest struct {
	Confdir   string
	StateBase string
	Slots     []plan.Options // Slot, Datastore (optional), SOPIN, UserPIN of each
}

// host is one apply over the slots of a host, all or nothing, as one state value whose methods
// are the run's steps, in order:
//
//	lock → recover → preflight → journal → editConf → migrate (each slot) → finish
//
// Nothing is written before the journal: every lock, the daemon and in-use checks, every PIN,
// every backup's place and the space of every file system are checked first (preflight). The
// conf is edited before any repository is switched (editConf), so the token library never sees
// a 3.12 repository under a conf that does not say 3.12; it refuses an old one under 3.12
// without writing anything. When a slot fails after that, undo switches back the slots this
// run switched and puts the conf back, and the host is as it was.
type host struct {
	confdir string
	o       Options
	slots   []*hostSlot
	release func()
	cdir    *repofs.Dir // the conf directory, locked
	warn    []string

	confBefore, confAfter []byte // the conf the plans read, and with every slot's tokversion
	confWritten           bool
	confAttempted         bool         // WriteIfUnchanged was called: the conf may be the new one
	journalInfo           *repofs.Info // the host journal this run wrote or found
	bakMade               *repofs.Info // opencryptoki.conf_BAK, when this run made it
	kept                  repofs.Info  // the conf before the run, kept as layout.ConfPrev
	journalFound          bool         // an interrupted run's host journal was found
	failed                *hostSlot
}

// hostSlot is one slot of a host run.
type hostSlot struct {
	req     plan.Options
	saved   *contract.Plan
	ds      string
	o       Options // this slot's: the directory locked, its shared memory, a saved plan's fingerprint
	rec     recovery
	x       *execution
	outcome contract.Outcome
	err     error
}

// hostJournal is the host journal's content: the slots of the run under way.
type hostJournal struct {
	Operation string             `json:"operation"` // "apply"
	Slots     []hostJournalEntry `json:"slots"`
}

type hostJournalEntry struct {
	Slot      int    `json:"slot"`
	Datastore string `json:"datastore"`
}

// RunHost migrates every slot of hr in one run, all or nothing. The error of a failed run is
// that of the slot that failed (named in it); its details carry "slots", what happened to
// each.
func RunHost(hr HostRequest, o Options) (*contract.HostResult, error) {
	if err := plan.CheckHostSlots(hr.Slots); err != nil {
		return nil, err
	}
	h := newHost(hr, nil, o)
	res, err := h.run()
	if err != nil {
		return nil, h.hostError(err)
	}
	return res, nil
}

// Run plans under the locks and executes the plan: a host of one slot. When saved is not nil,
// the fresh plan must have the same fingerprint (else stale_plan) and nothing else is taken
// from the request but the PINs.
func Run(req plan.Options, saved *contract.Plan, o Options) (*contract.Result, error) {
	if saved != nil {
		req.Slot, req.Datastore, req.Confdir = saved.Slot, saved.Datastore, saved.Confdir
	}
	h := newHost(HostRequest{Confdir: req.Confdir, StateBase: req.StateBase, Slots: []plan.Options{req}}, saved, o)
	res, err := h.run()
	if err != nil {
		return nil, err
	}
	return res.Slots[0].Result, nil
}

func newHost(hr HostRequest, saved *contract.Plan, o Options) *host {
	if o.ShmDir == "" {
		o.ShmDir = "/dev/shm"
	}
	if o.Rand == nil {
		o.Rand = rand.Reader
	}
	h := &host{confdir: hr.Confdir, o: o}
	for _, req := range hr.Slots {
		req.Confdir, req.StateBase = hr.Confdir, hr.StateBase
		req.ProcRoot, req.PIDFiles = o.ProcRoot, o.PIDFiles
		h.slots = append(h.slots, &hostSlot{req: req, saved: saved, o: o, outcome: contract.OutcomeNotStarted})
	}
	return h
}

// run is the host's apply, step by step: every working copy is made and verified before the
// conf is written, and the conf before any repository is switched: after the first switch
// only renames and removals are left, which allocate nothing.
func (h *host) run() (*contract.HostResult, error) {
	if err := h.lock(); err != nil {
		return nil, err
	}
	defer h.unlock()
	if err := h.recover(); err != nil {
		return nil, err
	}
	if err := h.preflight(); err != nil {
		return nil, err
	}
	if !h.changes() {
		return h.finish()
	}
	if err := h.prepare(); err != nil {
		h.abandonPrepared()
		return nil, err
	}
	if err := h.journal(); err != nil {
		h.abandonPrepared()
		return nil, err
	}
	if err := h.editConf(); err != nil {
		h.abandonPrepared()
		h.undo()
		return nil, err
	}
	for _, s := range h.slots {
		if !s.x.repoChange {
			continue
		}
		if err := s.x.switchRepository(); err != nil {
			h.fail(s, err)
			h.abandonPrepared()
			h.undo()
			return nil, s.err
		}
	}
	return h.finish()
}

// prepare makes and verifies the working copy of every slot to migrate, several at once: each
// slot's copy gets its share of the cores. The first slot (in the request's order) that fails
// is the run's failure.
func (h *host) prepare() error {
	var todo []*hostSlot
	objects := 0
	for _, s := range h.slots {
		if s.x.repoChange {
			todo = append(todo, s)
			objects += len(s.x.insp.Index)
		}
	}
	if len(todo) == 0 {
		return nil
	}
	defer plan.LimitMemory(objects)()
	cores := runtime.GOMAXPROCS(0)
	slotsAtOnce := min(len(todo), cores)
	errs := make([]error, len(todo))
	_ = parallel.Workers(len(todo), slotsAtOnce, func() func(int) error {
		return func(i int) error {
			x := todo[i].x
			if x.o.Workers == 0 {
				x.o.Workers = max(1, cores/slotsAtOnce)
			}
			errs[i] = x.prepareRepository()
			return nil
		}
	})
	for i, err := range errs {
		if err != nil {
			return h.fail(todo[i], err)
		}
	}
	return nil
}

// abandonPrepared removes every working copy made and not switched in.
func (h *host) abandonPrepared() {
	for _, s := range h.slots {
		if s.x != nil {
			s.x.abandonPrepared()
		}
	}
}

// lock finds every slot's repository, takes the locks (the conf directory, then the
// repositories in the order of their paths) and refuses while pkcsslotd or another process
// uses a repository.
func (h *host) lock() error {
	confdir := ""
	for _, s := range h.slots {
		ds, cd, err := resolvePaths(s.req)
		if err != nil {
			return h.fail(s, err)
		}
		s.ds, confdir = ds, cd
	}
	h.confdir = confdir
	order := append([]*hostSlot{}, h.slots...)
	sort.Slice(order, func(i, j int) bool { return order[i].ds < order[j].ds })
	for i := 1; i < len(order); i++ {
		if order[i].ds == order[i-1].ds {
			return h.fail(order[i], &contract.Error{Code: contract.CodeBadRequest, Field: "slots", Message: fmt.Sprintf("slots %d and %d use the same repository %s", order[i-1].req.Slot, order[i].req.Slot, order[i].ds)})
		}
	}
	dss := make([]string, len(order))
	for i, s := range order {
		dss[i] = s.ds
	}
	release, cdir, infos, failedAt, err := lockAll(confdir, dss)
	if err != nil {
		if failedAt >= 0 {
			return h.fail(order[failedAt], err)
		}
		return err
	}
	h.release, h.cdir = release, cdir
	for i, s := range order {
		s.o.orig = infos[i]
		s.o.warn = func(w string) { h.warn = append(h.warn, w) }
	}
	if err := h.o.hook(contract.OpLocked); err != nil {
		h.unlock()
		return err
	}
	for _, s := range h.slots {
		if err := checkNotInUse(s.ds, s.o); err != nil {
			h.unlock()
			return h.fail(s, err)
		}
	}
	for _, s := range h.slots {
		s.o.shm = findShm(s.ds, s.o)
	}
	return nil
}

func (h *host) unlock() {
	if h.release == nil {
		return
	}
	for _, s := range h.slots {
		s.o.shm.close()
	}
	h.release()
	h.release = nil
}

// recover finishes what an interrupted run left: the host journal must name these slots (a
// run of other slots is refused until it is finished or rolled back); each repository's own
// journal or working copy is then finished or removed.
func (h *host) recover() error {
	j, info, err := readHostJournal(h.cdir)
	if err != nil {
		return err
	}
	if info != nil {
		if !sameSlots(j, h.slots) {
			return &contract.Error{Code: contract.CodeInterrupted, Message: fmt.Sprintf("a run of slots %v was interrupted (%s): run apply of those slots again to finish it, or rollback to revert it, before migrating slots %v", journalSlots(j), filepath.Join(h.confdir, layout.HostJournal), requestSlots(h.slots)),
				Details: map[string]any{"journal_slots": journalSlots(j)}}
		}
		h.journalInfo, h.journalFound = info, true
	}
	for _, s := range h.slots {
		rec, err := recoverInterrupted(s.ds, &s.o)
		if err != nil {
			return h.fail(s, err)
		}
		s.rec = rec
	}
	return nil
}

// preflight plans every slot under the locks (every PIN checked against its token), checks
// what each plan needs (a saved plan's fingerprint, the backup's place, the switch) and the
// space of every file system for all slots together, and computes the one new conf. Nothing
// is written.
func (h *host) preflight() error {
	var ids []int
	for _, s := range h.slots {
		if err := s.plan(); err != nil {
			return h.fail(s, err)
		}
		if h.confBefore == nil {
			h.confBefore = s.x.insp.Conf
		} else if !bytes.Equal(h.confBefore, s.x.insp.Conf) {
			return h.fail(s, contract.Errorf(contract.CodeStalePlan, "%s changed while the slots were planned: run again", filepath.Join(h.confdir, layout.ConfName)))
		}
		if s.x.confChange {
			ids = append(ids, s.req.Slot)
		}
	}
	after, _, err := plan.HostConf(filepath.Join(h.confdir, layout.ConfName), h.confBefore, ids)
	if err != nil {
		return err
	}
	h.confAfter = after
	if len(h.slots) > 1 {
		plans := make([]contract.Plan, len(h.slots))
		for i, s := range h.slots {
			plans[i] = *s.x.p
		}
		if err := plan.HostSpaceError(plan.HostSpace(plans)); err != nil {
			return err
		}
	}
	return nil
}

// plan makes the slot's plan under the locks and checks that apply can carry it out.
func (s *hostSlot) plan() error {
	// The plan made here reads no object of an old-format repository: the copy reads each
	// once, and checks and fingerprints what a scan would (each object decodes, none is 3.12
	// already, the byte order, the saved plan's fingerprint) before anything is switched. A
	// 3.12 repository is scanned, private objects left encrypted.
	scan := s.req
	scan.PrivateUnread = true
	scan.ObjectsUnread = s.saved == nil || s.saved.Format == contract.FormatOld
	scan.SlotdChecked = true // lock refused a running pkcsslotd
	p, insp, err := plan.MakeWithKeys(scan)
	if err != nil {
		return err
	}
	s.x = newExecution(p, insp, s.req, s.o)
	if err := s.compareSaved(); err != nil {
		return err
	}
	if s.rec.foreign != nil {
		return s.rec.foreign
	}
	return s.x.check()
}

// compareSaved compares a saved plan, always: with the state found now, or, when this run
// finished the switch of an interrupted one, with the state that run's journal says its
// working copy was made from (a journal is believed only as a file of root's).
func (s *hostSlot) compareSaved() error {
	saved, p := s.saved, s.x.p
	switch {
	case saved == nil:
	case s.rec.exchanged:
		if s.rec.j.PlanFingerprint == "" || s.rec.j.PlanFingerprint != saved.Fingerprint {
			return staleError(p, saved.Fingerprint, s.rec.j.PlanFingerprint)
		}
	case s.x.insp.ObjectsUnread:
		if saved.Counts.Total != p.Counts.Total {
			return staleError(p, saved.Fingerprint, fmt.Sprintf("OBJ.IDX lists %d objects, the plan %d", p.Counts.Total, saved.Counts.Total))
		}
		s.x.o.wantFingerprint = saved.Fingerprint // checked by the copy
	case saved.Fingerprint != p.Fingerprint:
		return staleError(p, saved.Fingerprint, p.Fingerprint)
	}
	return nil
}

func (h *host) changes() bool {
	for _, s := range h.slots {
		if s.x.repoChange || s.x.confChange {
			return true
		}
	}
	return false
}

// journal writes the host journal (a file only root can read or write), unless the run it
// finishes left one, and makes it durable before anything else changes.
func (h *host) journal() error {
	if h.journalInfo != nil {
		return nil
	}
	j := hostJournal{Operation: "apply"}
	for _, s := range h.slots {
		j.Slots = append(j.Slots, hostJournalEntry{Slot: s.req.Slot, Datastore: s.ds})
	}
	data, _ := json.Marshal(j)
	if err := h.o.hook(contract.OpHostJournal); err != nil {
		return err
	}
	// Durability: the journal's content, then its name, before the conf it explains changes
	// (a journal whose content a power cut lost is taken for one written before any change).
	info, err := h.cdir.CreatePrivateDurable(layout.HostJournal, data)
	if err != nil {
		return contract.Errorf(contract.CodeIO, "write %s: %w", filepath.Join(h.confdir, layout.HostJournal), err)
	}
	h.journalInfo = &info
	if err := h.cdir.Sync(); err != nil {
		return contract.Errorf(contract.CodeIO, "sync %s: %w", h.confdir, err)
	}
	return nil
}

// editConf writes the conf with every slot's tokversion = 3.12, before any repository is
// switched. opencryptoki.conf_BAK is made once, from the conf before the first migration, and
// never replaced; the conf before this run is kept as ConfPrev until the run ends.
func (h *host) editConf() error {
	if bytes.Equal(h.confBefore, h.confAfter) {
		return nil
	}
	if err := h.o.hook(contract.OpConfEdit); err != nil {
		return err
	}
	h.confAttempted = true
	// The conf is read (and kept) by the write; its identity now, for the undo.
	if info, err := h.cdir.Lstat(layout.ConfName); err == nil {
		h.kept = info
	}
	wr, err := conf.WriteIfUnchanged(h.confdir, h.confBefore, h.confAfter, conf.WriteOptions{Pristine: true, Keep: layout.ConfPrev}, h.o.stepHook)
	if err != nil {
		if errors.Is(err, conf.ErrConfChanged) {
			return contract.Errorf(contract.CodeStalePlan, "%s changed during the run: nothing was migrated: %w", filepath.Join(h.confdir, layout.ConfName), err)
		}
		return contract.Errorf(contract.CodeIO, "update %s (nothing was migrated): %w", filepath.Join(h.confdir, layout.ConfName), err)
	}
	h.confWritten = true
	if wr.BackupMade {
		if info, err := h.cdir.Lstat(layout.ConfBakName); err == nil {
			h.bakMade = &info
		}
	}
	for _, s := range h.slots {
		if !s.x.confChange {
			continue
		}
		s.x.res.ConfChanged = true
		s.x.res.Steps = append(s.x.res.Steps, contract.OpConfEdit)
		if h.bakMade != nil {
			s.x.made.Conf = filepath.Join(h.confdir, layout.ConfBakName)
			s.x.made.ConfDev, s.x.made.ConfIno = h.bakMade.Dev, h.bakMade.Ino
		}
	}
	return nil
}

// finish ends a run that succeeded: the token's shared memory goes, each slot gets its
// result, then the kept conf and the journal go.
func (h *host) finish() (*contract.HostResult, error) {
	finalConf := h.confBefore
	if h.confWritten {
		finalConf = h.confAfter
	}
	for _, s := range h.slots {
		x := s.x
		if x.repoChange || x.confChange {
			s.o.shm.remove()
			x.res.Steps = append(x.res.Steps, contract.OpRemoveShm)
		}
		// A run that finished an interrupted one (its switch, or its host journal) changed
		// the host too.
		x.res.Changed = x.repoChange || x.confChange || s.rec.exchanged || h.journalFound
		x.res.Backup = backups(x.p, x.made)
		x.finalConf = finalConf
		if err := x.fingerprint(); err != nil {
			return nil, h.fail(s, err)
		}
		x.res.Warnings = append(x.res.Warnings, h.warn...)
		s.outcome = contract.OutcomeUnchanged
		if x.res.Changed {
			s.outcome = contract.OutcomeMigrated
		}
	}
	if err := h.endJournal(); err != nil {
		return nil, err
	}
	return h.result(), nil
}

// endJournal removes the kept conf, then the host journal (the one read or written), and
// makes that durable.
func (h *host) endJournal() error {
	if h.journalInfo == nil {
		return nil
	}
	if err := h.o.hook(contract.OpHostJournalRemove); err != nil {
		return err
	}
	if err := conf.RemoveKept(h.confdir, layout.ConfPrev); err != nil {
		return contract.Errorf(contract.CodeIO, "remove %s: %w", filepath.Join(h.confdir, layout.ConfPrev), err)
	}
	if err := h.cdir.RemoveIfSame(layout.HostJournal, *h.journalInfo); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return contract.Errorf(contract.CodeIO, "remove %s: %w", filepath.Join(h.confdir, layout.HostJournal), err)
	}
	if err := h.cdir.Sync(); err != nil {
		return contract.Errorf(contract.CodeIO, "sync %s: %w", h.confdir, err)
	}
	h.journalInfo = nil
	return nil
}

// undo switches back, newest first, the slots this run switched in, then puts the conf of
// before the run back with one rename. When a slot cannot be switched back, the conf stays as
// it is (it says 3.12 for that slot, which is migrated) and the journal stays: a rerun of the
// same slots finishes the host, rollback reverts it.
func (h *host) undo() {
	allBack := true
	for i := len(h.slots) - 1; i >= 0; i-- {
		s := h.slots[i]
		if s.x == nil || !s.x.res.RepositoryChanged {
			continue
		}
		res := &contract.Result{}
		o := s.o
		o.stepHook = nil
		o.orig = s.x.switchedIn
		if err := rollbackRepository(s.ds, &o, s.req.ForcedSwitch(), res); err != nil {
			allBack = false
			if s != h.failed {
				s.err = err
			}
			continue
		}
		if s != h.failed {
			s.outcome = contract.OutcomeSwitchedBack
		}
	}
	if !allBack {
		return
	}
	if h.confAttempted {
		// The write may have failed after its rename: the kept conf is put back whenever it
		// was made.
		if err := conf.RestoreKept(h.confdir, layout.ConfPrev, h.kept.Dev, h.kept.Ino); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return
		}
		h.confWritten = false
		if h.bakMade != nil {
			// The pristine backup this run made goes with the edit it was made for.
			_ = h.cdir.RemoveIfSame(layout.ConfBakName, *h.bakMade)
		}
	}
	_ = h.endJournal()
}

// fail records err as slot s's failure and returns it.
func (h *host) fail(s *hostSlot, err error) error {
	s.outcome, s.err = contract.OutcomeFailed, err
	if h.failed == nil {
		h.failed = s
	}
	return err
}

// result is the host's result.
func (h *host) result() *contract.HostResult {
	res := &contract.HostResult{Operation: "apply", Confdir: h.confdir, Conf: filepath.Join(h.confdir, layout.ConfName), Slots: []contract.SlotOutcome{}, Warnings: append([]string{}, h.warn...)}
	res.ConfChanged = h.confWritten
	res.ConfDiff = conf.Diff(h.confBefore, h.confAfter)
	for _, s := range h.slots {
		so := contract.SlotOutcome{Slot: s.req.Slot, Outcome: s.outcome}
		if s.x != nil && s.err == nil && s.outcome != contract.OutcomeNotStarted && s.outcome != contract.OutcomeSwitchedBack {
			so.Result = s.x.res
		}
		if s.err != nil {
			so.Error = errorBody(s.err)
		}
		res.Changed = res.Changed || s.outcome == contract.OutcomeMigrated || s.outcome == contract.OutcomeRolledBack
		res.Slots = append(res.Slots, so)
	}
	return res
}

// hostError is the error of a failed host run: the failing slot's, naming it, with what
// happened to every slot.
func (h *host) hostError(err error) error {
	if h.failed != nil {
		err = plan.SlotError(h.failed.req.Slot, err)
	}
	return contract.WithDetail(err, "", "slots", h.result().Slots)
}

// errorBody is err as a document carries it.
func errorBody(err error) *contract.ErrorBody {
	var pe *contract.Error
	if errors.As(err, &pe) {
		return &contract.ErrorBody{Code: contract.CodeOf(err), Message: pe.Message, Field: pe.Field}
	}
	return &contract.ErrorBody{Code: contract.CodeInternal, Message: err.Error()}
}

// readHostJournal reads the host journal, believed only as a file of root's; info is nil
// when there is none.
func readHostJournal(cdir *repofs.Dir) (hostJournal, *repofs.Info, error) {
	var j hostJournal
	raw, info, err := cdir.ReadPrivate(layout.HostJournal)
	if errors.Is(err, fs.ErrNotExist) {
		return j, nil, nil
	}
	if err != nil {
		return j, nil, &contract.Error{Code: contract.CodeConfInvalid, Message: fmt.Sprintf("%s is not a journal this tool wrote (%v): nothing was touched; remove it after checking every slot", filepath.Join(cdir.Path(), layout.HostJournal), err), Err: err}
	}
	if err := json.Unmarshal(raw, &j); err != nil || len(j.Slots) == 0 {
		// Created, not yet written or not yet durable when the run was cut: that run had not
		// changed the conf yet (the journal is durable first). It goes.
		if allZero(raw) {
			if err := cdir.RemoveIfSame(layout.HostJournal, info); err != nil {
				return j, nil, contract.Errorf(contract.CodeIO, "remove %s: %w", layout.HostJournal, err)
			}
			return j, nil, nil
		}
		return j, nil, &contract.Error{Code: contract.CodeConfInvalid, Message: fmt.Sprintf("%s cannot be read: remove it after checking every slot", filepath.Join(cdir.Path(), layout.HostJournal))}
	}
	return j, &info, nil
}

func sameSlots(j hostJournal, slots []*hostSlot) bool {
	a, b := journalSlots(j), requestSlots(slots)
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func journalSlots(j hostJournal) []int {
	var ids []int
	for _, e := range j.Slots {
		ids = append(ids, e.Slot)
	}
	sort.Ints(ids)
	return ids
}

func requestSlots(slots []*hostSlot) []int {
	var ids []int
	for _, s := range slots {
		ids = append(ids, s.req.Slot)
	}
	sort.Ints(ids)
	return ids
}
