// Package apply carries out a plan: it builds the migrated repository in a working copy,
// verifies it, switches it in with one atomic exchange and edits opencryptoki.conf. It also
// rolls a migration back. It decides nothing the plan has not decided.
package apply

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync/atomic"

	json "github.com/goccy/go-json"

	"github.com/ocktools/pkcstok-migrate/internal/conf"
	"github.com/ocktools/pkcstok-migrate/internal/parallel"
	"github.com/ocktools/pkcstok-migrate/internal/procscan"
	"github.com/ocktools/pkcstok-migrate/internal/repofs"
	"github.com/ocktools/pkcstok-migrate/plan"
	"github.com/ocktools/pkcstok-migrate/tokens"
)

// Options are the run-time inputs of apply and rollback that are not part of the plan.
type Options struct {
	Rand     io.Reader // nil = crypto/rand
	ShmDir   string    // "" = /dev/shm
	ProcRoot string    // "" = /proc
	PIDFiles []string  // nil = procscan defaults

	// Hook is called before each step with its name; an error stops the run there as if the
	// step had failed. Tests use it for fault injection; production leaves it nil.
	Hook func(step string) error
	// Progress is told how many objects of how many are done.
	Progress func(done, total int)

	warn func(string) // collects warnings for the result
}

func (o *Options) hook(step string) error {
	if o.Hook == nil {
		return nil
	}
	if err := o.Hook(step); err != nil {
		return plan.Errorf(plan.CodeIO, "step %s: %w", step, err)
	}
	return nil
}

// journal records that a run reached the switch, so a rerun after a crash knows which of
// the repository and the working copy is which.
type journal struct {
	State     string `json:"state"` // "exchanging"
	Datastore string `json:"datastore"`
	Tmp       string `json:"tmp"`
	Bak       string `json:"bak"`
}

// Run plans under the locks and executes the plan. When saved is not nil, the fresh plan
// must have the same fingerprint (else stale_plan) and nothing else is taken from the
// request but the PINs.
func Run(req plan.Options, saved *plan.Plan, o Options) (*Result, error) {
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
	recovered, err := recoverJournal(ds, o)
	if err != nil {
		return nil, err
	}

	p, insp, err := plan.MakeWithKeys(req)
	if err != nil {
		return nil, err
	}
	if insp.Keys != nil {
		defer insp.Keys.Wipe()
	}
	if saved != nil && saved.Fingerprint != p.Fingerprint && !recovered {
		return nil, &plan.Error{Code: plan.CodeStalePlan, Message: fmt.Sprintf("the plan was made from another state of %s or %s: plan again", p.Datastore, p.Conf),
			Details: map[string]any{"plan_fingerprint": saved.Fingerprint, "current_fingerprint": p.Fingerprint}}
	}
	res, err := execute(p, insp, req, o)
	if err != nil {
		return nil, err
	}
	res.Warnings = append(res.Warnings, *warnings...)
	return res, nil
}

// begin is what apply and rollback do first: find the paths (a look at the conf without
// PINs; the real plan is made under the locks), take the locks, and refuse while pkcsslotd
// or another process uses the repository. Warnings found on the way are collected in
// *warnings; the caller must call unlock.
func begin(req plan.Options, o *Options) (ds, confdir string, unlock func(), warnings *[]string, err error) {
	if ds, confdir, err = resolvePaths(req); err != nil {
		return "", "", nil, nil, err
	}
	if unlock, err = lockAll(confdir, ds); err != nil {
		return "", "", nil, nil, err
	}
	warnings = &[]string{}
	o.warn = func(w string) { *warnings = append(*warnings, w) }
	err = o.hook("locked")
	if err == nil {
		err = checkNotInUse(ds, *o)
	}
	if err != nil {
		unlock()
		return "", "", nil, nil, err
	}
	return ds, confdir, unlock, warnings, nil
}

func resolvePaths(req plan.Options) (ds, confdir string, err error) {
	if req.Confdir == "" {
		return "", "", &plan.Error{Code: plan.CodeBadRequest, Field: "confdir", Message: "confdir is required"}
	}
	confdir, err = filepath.Abs(req.Confdir)
	if err != nil {
		return "", "", plan.Errorf(plan.CodeBadRequest, "confdir: %w", err)
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
				return "", "", plan.Errorf(plan.CodeSlotNotFound, "no slot %d: %w", req.Slot, err)
			}
			return "", "", plan.Errorf(plan.CodeConfInvalid, "slot %d: %w", req.Slot, err)
		}
		base := req.StateBase
		if base == "" {
			base = plan.DefaultStateBase
		}
		ds = s.RepositoryDir(base)
	}
	if ds, err = filepath.Abs(ds); err != nil {
		return "", "", plan.Errorf(plan.CodeBadRequest, "datastore: %w", err)
	}
	return ds, confdir, nil
}

// lockAll takes flock on the conf directory (one migration per conf at a time, so two slots
// cannot race on the conf) and on the repository directory. No lock file is created.
func lockAll(confdir, ds string) (func(), error) {
	var held []*repofs.Dir
	release := func() {
		for i := len(held) - 1; i >= 0; i-- {
			held[i].Close()
		}
	}
	for _, path := range []string{confdir, ds} {
		d, err := repofs.OpenDir(path)
		if err != nil {
			release()
			if errors.Is(err, fs.ErrNotExist) {
				return nil, plan.Errorf(plan.CodeCorruptRepository, "%s does not exist: %w", path, err)
			}
			if errors.Is(err, repofs.ErrSymlink) {
				return nil, plan.Errorf(plan.CodeCorruptRepository, "%s: refusing: %w", path, err)
			}
			return nil, plan.Errorf(plan.CodeIO, "open %s: %w", path, err)
		}
		if err := d.TryLock(); err != nil {
			d.Close()
			release()
			if errors.Is(err, repofs.ErrLocked) {
				return nil, &plan.Error{Code: plan.CodeLocked, Message: fmt.Sprintf("another pkcstok-migrate run holds %s", path), Err: err}
			}
			return nil, plan.Errorf(plan.CodeIO, "lock %s: %w", path, err)
		}
		held = append(held, d)
	}
	return release, nil
}

func checkNotInUse(ds string, o Options) error {
	pids, err := procscan.SlotdRunning(o.ProcRoot, o.PIDFiles)
	if err != nil || len(pids) > 0 {
		msg := fmt.Sprintf("pkcsslotd is running (pid %v): stop it before migrating", pids)
		if err != nil {
			msg = fmt.Sprintf("cannot tell whether pkcsslotd runs (%v): taken as running", err)
		}
		return &plan.Error{Code: plan.CodeSlotdRunning, Message: msg, Details: map[string]any{"pids": pidList(pids)}, Err: err}
	}
	pids, err = procscan.Openers(o.ProcRoot, ds)
	if err != nil && !errors.Is(err, procscan.ErrIncomplete) {
		return plan.Errorf(plan.CodeIO, "scan processes for open files under %s: %w", ds, err)
	}
	if err != nil && o.warn != nil {
		// Processes root cannot inspect (another user namespace, a hardened /proc) cannot be
		// ruled out; pkcsslotd itself is checked separately and fails closed.
		o.warn(fmt.Sprintf("could not check every process for open files under %s: %v", ds, err))
	}
	if len(pids) > 0 {
		return &plan.Error{Code: plan.CodeRepositoryInUse, Message: fmt.Sprintf("processes %v hold files of %s open: stop them before migrating", pids, ds), Details: map[string]any{"pids": pidList(pids)}}
	}
	return nil
}

func pidList(p []int) []int {
	if p == nil {
		return []int{}
	}
	return p
}

// recoverJournal finishes the switch of a run that was interrupted after it wrote its
// journal. It reports whether it changed anything.
func recoverJournal(ds string, o Options) (bool, error) {
	parent, base := filepath.Dir(ds), filepath.Base(ds)
	pdir, err := repofs.OpenDir(parent)
	if err != nil {
		return false, plan.Errorf(plan.CodeIO, "open %s: %w", parent, err)
	}
	defer pdir.Close()
	raw, err := pdir.ReadFile(base + plan.SuffixJournal)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, plan.Errorf(plan.CodeIO, "read journal: %w", err)
	}
	dsFormat := nvFormat(pdir, base)
	var j journal
	if err := json.Unmarshal(raw, &j); (err != nil || j.State != "exchanging") && dsFormat != tokens.FormatOld {
		return false, &plan.Error{Code: plan.CodeCorruptRepository, Message: fmt.Sprintf("journal %s is not readable: remove it after checking %s and %s", ds+plan.SuffixJournal, ds, ds+plan.SuffixTmp)}
	}
	// A journal cut short (created, not yet written or not yet durable when the power went
	// or the run was killed) beside the original at the repository path belongs to a run
	// that never exchanged: the exchange waits until the journal is durable. It goes like a
	// whole one, and the working copy is rebuilt (crash/testdata/states/good_apply_journal_*).
	tmpFormat := nvFormat(pdir, base+plan.SuffixTmp)
	switch {
	case dsFormat == tokens.Format312 && tmpFormat == tokens.FormatOld:
		// Exchanged, not yet backed up.
		if _, err := pdir.Lstat(base + plan.SuffixBak); err == nil {
			return false, &plan.Error{Code: plan.CodeBackupExists, Message: fmt.Sprintf("%s exists: cannot move the original repository (now at %s) there", ds+plan.SuffixBak, ds+plan.SuffixTmp)}
		}
		if err := pdir.RenameNoReplace(base+plan.SuffixTmp, base+plan.SuffixBak); err != nil {
			return false, plan.Errorf(plan.CodeIO, "rename %s: %w", ds+plan.SuffixTmp, err)
		}
	case dsFormat == tokens.FormatOld:
		// Not exchanged: the working copy is rebuilt by the new run.
	case dsFormat == tokens.Format312 && tmpFormat == tokens.FormatUnknown:
		// Exchanged and backed up.
	default:
		return false, &plan.Error{Code: plan.CodeCorruptRepository, Message: fmt.Sprintf("journal %s: cannot tell %s (%s) from %s (%s): check them by hand", ds+plan.SuffixJournal, ds, dsFormat, ds+plan.SuffixTmp, tmpFormat)}
	}
	// Durability: the rename to _BAK before the journal goes (covered by the next fsync
	// under the crash model: one directory's changes reach the disk in order).
	if err := pdir.Sync(); err != nil {
		return false, plan.Errorf(plan.CodeIO, "sync %s: %w", parent, err)
	}
	if err := pdir.Remove(base + plan.SuffixJournal); err != nil {
		return false, plan.Errorf(plan.CodeIO, "remove journal: %w", err)
	}
	// Durability: the finished switch before the conf is edited to say 3.12.
	if err := pdir.Sync(); err != nil {
		return false, plan.Errorf(plan.CodeIO, "sync %s: %w", parent, err)
	}
	return true, nil
}

// nvFormat tells the format of the repository dir/name by the size of its NVTOK.DAT.
func nvFormat(dir *repofs.Dir, name string) tokens.Format {
	b, err := dir.ReadFile(name + "/NVTOK.DAT")
	if err != nil {
		return tokens.FormatUnknown
	}
	switch len(b) {
	case tokens.NVTokOldSize:
		return tokens.FormatOld
	case tokens.NVTokNewSize:
		return tokens.Format312
	}
	return tokens.FormatUnknown
}

func execute(p *plan.Plan, insp *plan.Inspection, req plan.Options, o Options) (*Result, error) {
	res := &Result{
		Operation: "apply",
		Slot:      p.Slot,
		TokenType: p.TokenType,
		Datastore: p.Datastore,
		Conf:      p.Conf,
		ConfDiff:  p.ConfDiff,
		Warnings:  append([]string{}, p.Warnings...),
		Steps:     []string{},
		Verified:  true,
	}
	res.ObjectsTotal = p.Counts.Total
	parent, base := filepath.Dir(p.Datastore), filepath.Base(p.Datastore)
	pdir, err := repofs.OpenDir(parent)
	if err != nil {
		return nil, plan.Errorf(plan.CodeIO, "open %s: %w", parent, err)
	}
	defer pdir.Close()

	repoChange := p.Format == "old"
	if p.Format == "mixed" {
		return nil, &plan.Error{Code: plan.CodeCorruptRepository, Message: fmt.Sprintf("%s mixes old and 3.12 files; refusing to guess", p.Datastore)}
	}
	confChange := insp.Edit.Action != "none"

	if confChange {
		if err := checkConfBackup(p.Confdir); err != nil {
			return nil, err
		}
	}
	if repoChange {
		if req.SOPIN == nil || req.UserPIN == nil || insp.Keys == nil {
			return nil, &plan.Error{Code: plan.CodeBadRequest, Field: "so_pin", Message: "the SO PIN and the user PIN are needed to migrate the repository"}
		}
		if _, err := pdir.Lstat(base + plan.SuffixBak); err == nil {
			return nil, &plan.Error{Code: plan.CodeBackupExists, Message: fmt.Sprintf("datastore backup %s already exists: remove it before migrating", p.Datastore+plan.SuffixBak)}
		}
		gid, err := repofs.LookupGroup(p.UserGroup)
		if err != nil {
			return nil, plan.Errorf(plan.CodeGroupNotFound, "token group %q: %w", p.UserGroup, err)
		}
		if err := migrateRepository(p, insp, req, o, pdir, base, repofs.Perm{GID: gid}, res); err != nil {
			return nil, err
		}
	}
	if repoChange || confChange {
		removeShm(p.Datastore, o)
		res.Steps = append(res.Steps, "remove_shm")
	}
	if confChange {
		if err := o.hook("conf_edit"); err != nil {
			return nil, err
		}
		if _, err := conf.WriteIfUnchanged(p.Confdir, insp.Conf, insp.Edit.Content, o.Hook); err != nil {
			if errors.Is(err, conf.ErrBackupExists) {
				return nil, plan.Errorf(plan.CodeBackupExists, "%w", err)
			}
			if errors.Is(err, conf.ErrConfChanged) {
				return nil, plan.Errorf(plan.CodeStalePlan, "%s changed during the run (the repository is migrated; run apply again): %w", p.Conf, err)
			}
			return nil, plan.Errorf(plan.CodeIO, "update %s (the repository is migrated; run apply again): %w", p.Conf, err)
		}
		res.ConfChanged = true
		res.Steps = append(res.Steps, "conf_edit")
	}
	res.Changed = repoChange || confChange
	res.Backup = backups(p)

	// Nothing written: the plan's fingerprint, taken under the same locks, is the state.
	res.Fingerprint = p.Fingerprint
	if res.Changed {
		fp, err := fingerprintNow(p.Datastore, p.Confdir)
		if err != nil {
			return nil, err
		}
		res.Fingerprint = fp
	}
	return res, nil
}

func backups(p *plan.Plan) *Backup {
	b := &Backup{}
	if _, err := os.Lstat(p.Datastore + plan.SuffixBak); err == nil {
		b.Datastore = p.Datastore + plan.SuffixBak
	}
	if _, err := os.Lstat(filepath.Join(p.Confdir, plan.ConfBakName)); err == nil {
		b.Conf = filepath.Join(p.Confdir, plan.ConfBakName)
	}
	if b.Datastore == "" && b.Conf == "" {
		return nil
	}
	return b
}

func fingerprintNow(ds, confdir string) (string, error) {
	_, confBytes, err := plan.ReadConf(confdir)
	if err != nil {
		return "", err
	}
	d, err := repofs.OpenDir(ds)
	if err != nil {
		return "", plan.Errorf(plan.CodeIO, "open %s: %w", ds, err)
	}
	defer d.Close()
	fp, err := plan.Fingerprint(d, confBytes)
	if err != nil {
		return "", plan.Errorf(plan.CodeIO, "fingerprint %s: %w", ds, err)
	}
	return fp, nil
}

// checkConfBackup refuses a conf backup that is not ours: one equal to the current conf was
// left by an interrupted run and may be replaced.
func checkConfBackup(confdir string) error {
	d, err := repofs.OpenDir(confdir)
	if err != nil {
		return plan.Errorf(plan.CodeIO, "open %s: %w", confdir, err)
	}
	defer d.Close()
	// conf.Write refuses a temp file that is not a regular file: find that out before the
	// repository is switched, not after.
	if info, err := d.Lstat(conf.TempName); err == nil && !info.IsRegular() {
		return &plan.Error{Code: plan.CodeBackupExists, Message: fmt.Sprintf("%s exists and is not a regular file: remove it before migrating", filepath.Join(confdir, conf.TempName))}
	}
	bak, err := d.ReadFile(plan.ConfBakName)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return plan.Errorf(plan.CodeBackupExists, "conf backup %s: %w", filepath.Join(confdir, plan.ConfBakName), err)
	}
	cur, err := d.ReadFile(plan.ConfName)
	if err != nil {
		return plan.Errorf(plan.CodeIO, "read conf: %w", err)
	}
	if !bytes.Equal(bak, cur) {
		return &plan.Error{Code: plan.CodeBackupExists, Message: fmt.Sprintf("config file backup %s already exists: remove it before migrating", filepath.Join(confdir, plan.ConfBakName))}
	}
	return nil
}

// removeShm deletes the token's shared-memory segment under every spelling a token library
// could have used for the datastore (spec §8.5); a missing segment is fine.
func removeShm(ds string, o Options) {
	d, err := repofs.OpenDir(o.ShmDir)
	if err != nil {
		return
	}
	defer d.Close()
	for _, n := range procscan.ShmNames(ds) {
		name := strings.TrimPrefix(n, "/")
		if name == "" || strings.Contains(name, "/") {
			continue
		}
		_ = d.Remove(name)
	}
}

// migrateRepository builds the 3.12 repository in the working copy, verifies it and
// switches it in. Before the exchange any failure removes the working copy and leaves the
// original untouched.
func migrateRepository(p *plan.Plan, insp *plan.Inspection, req plan.Options, o Options, pdir *repofs.Dir, base string, perm repofs.Perm, res *Result) (err error) {
	tmpName := base + plan.SuffixTmp
	defer plan.LimitMemory(len(p.Objects))()
	switched := false
	defer func() {
		if err != nil && !switched {
			_ = pdir.RemoveAll(tmpName)
			_ = pdir.Remove(base + plan.SuffixJournal)
		}
	}()
	if err := pdir.RemoveAll(tmpName); err != nil {
		return plan.Errorf(plan.CodeIO, "remove old working copy %s: %w", tmpName, err)
	}
	if err := o.hook("copy"); err != nil {
		return err
	}
	src, err := repofs.OpenDir(p.Datastore)
	if err != nil {
		return plan.Errorf(plan.CodeIO, "open %s: %w", p.Datastore, err)
	}
	defer src.Close()
	// The new keys come first: the copy re-encrypts each object on the way, so every file
	// is read once and written once (no second pass that truncates and rewrites the copy).
	repo, err := tokens.Load(src)
	if err != nil {
		return plan.Errorf(plan.CodeCorruptRepository, "%s: %w", p.Datastore, err)
	}
	up, err := repo.NewUpgrade(req.SOPIN, req.UserPIN, o.Rand)
	if err != nil {
		return plan.Errorf(plan.CodeCorruptRepository, "new keys: %w", err)
	}
	defer up.Keys.Wipe()
	rc := newReencrypter(p, insp.Keys, up.Keys, o)
	if err := repofs.CopyTreeWith(src, pdir, tmpName, perm, repofs.CopyOptions{Transform: rc.transform, Workers: copyWorkers()}); err != nil {
		var pe *plan.Error
		if errors.As(err, &pe) {
			return pe
		}
		if errors.Is(err, repofs.ErrSymlink) || errors.Is(err, repofs.ErrNotRegular) {
			return plan.Errorf(plan.CodeCorruptRepository, "copy %s: %w", p.Datastore, err)
		}
		return plan.Errorf(plan.CodeIO, "copy %s: %w", p.Datastore, err)
	}
	sums, migrated, err := rc.result()
	if err != nil {
		return err
	}
	res.Steps = append(res.Steps, "copy")
	tmp, err := pdir.OpenSubdir(tmpName)
	if err != nil {
		return plan.Errorf(plan.CodeIO, "open working copy: %w", err)
	}
	defer tmp.Close()
	for _, f := range []struct {
		name string
		data []byte
	}{{"NVTOK.DAT", up.NVToken}, {"MK_SO", up.MKSO}, {"MK_USER", up.MKUser}} {
		if err := o.hook("write " + f.name); err != nil {
			return err
		}
		if err := tmp.WriteFile(f.name, f.data, perm); err != nil {
			return plan.Errorf(plan.CodeIO, "write %s: %w", f.name, err)
		}
	}
	res.Steps = append(res.Steps, "write_keys")

	res.ObjectsMigrated = migrated
	res.Steps = append(res.Steps, "reencrypt")

	if err := o.hook("sync"); err != nil {
		return err
	}
	// Durability: the working copy on disk before the switch (covered by the journal's
	// syncfs below: crash/README.md, "Which barriers are needed").
	if err := syncTree(tmp); err != nil {
		return plan.Errorf(plan.CodeIO, "sync working copy: %w", err)
	}
	if err := o.hook("verify"); err != nil {
		return err
	}
	if err := verify(p, tmp, up, sums); err != nil {
		return err
	}
	res.Steps = append(res.Steps, "verify")

	// The switch.
	j, _ := json.Marshal(journal{State: "exchanging", Datastore: p.Datastore, Tmp: p.Datastore + plan.SuffixTmp, Bak: p.Datastore + plan.SuffixBak})
	if err := o.hook("journal"); err != nil {
		return err
	}
	if err := pdir.WriteFile(base+plan.SuffixJournal, j, perm); err != nil {
		return plan.Errorf(plan.CodeIO, "write journal: %w", err)
	}
	// Durability: the journal's content must be on disk before the exchange can be, or a
	// power cut could leave the exchange with an empty journal that no rerun can read.
	// syncfs also covers the working copy again (syncTree already did).
	if syncJournal {
		if err := pdir.Syncfs(); err != nil {
			return plan.Errorf(plan.CodeIO, "sync journal: %w", err)
		}
	}
	// Durability: the journal's name before the exchange (covered by the fsync after the
	// exchange: one directory's changes reach the disk in order).
	if err := pdir.Sync(); err != nil {
		return plan.Errorf(plan.CodeIO, "sync %s: %w", pdir.Path(), err)
	}
	if err := o.hook("exchange"); err != nil {
		return err
	}
	if err := pdir.Exchange(base, tmpName); err != nil {
		return plan.Errorf(plan.CodeIO, "exchange %s and %s: %w", p.Datastore, tmpName, err)
	}
	switched = true
	res.RepositoryChanged = true
	res.Steps = append(res.Steps, "exchange")
	// Durability: the exchange, so that "the repository is migrated" holds after a power
	// cut should the next step fail (covered by the next fsync when it does not).
	if err := pdir.Sync(); err != nil {
		return plan.Errorf(plan.CodeIO, "sync %s (the repository is migrated; run apply again): %w", pdir.Path(), err)
	}
	if err := o.hook("backup"); err != nil {
		return err
	}
	if err := pdir.RenameNoReplace(tmpName, base+plan.SuffixBak); err != nil {
		return plan.Errorf(plan.CodeIO, "rename the original to %s (the repository is migrated; run apply again): %w", p.Datastore+plan.SuffixBak, err)
	}
	// Durability: the original's new name (covered by the next fsync).
	if err := pdir.Sync(); err != nil {
		return plan.Errorf(plan.CodeIO, "sync %s: %w", pdir.Path(), err)
	}
	res.Steps = append(res.Steps, "backup")
	if err := o.hook("journal_remove"); err != nil {
		return err
	}
	if err := pdir.Remove(base + plan.SuffixJournal); err != nil {
		return plan.Errorf(plan.CodeIO, "remove journal: %w", err)
	}
	// Durability: the whole switch before the conf says 3.12 (the conf lives in another
	// directory, whose fsync covers nothing here), and no journal left after success.
	if err := pdir.Sync(); err != nil {
		return plan.Errorf(plan.CodeIO, "sync %s: %w", pdir.Path(), err)
	}
	return nil
}

// syncTree makes every file of the working copy durable with one syncfs, then fsyncs the
// directories so the entries are durable too.
func syncTree(d *repofs.Dir) error {
	if err := d.Syncfs(); err != nil {
		return err
	}
	obj, err := d.OpenSubdir("TOK_OBJ")
	if err == nil {
		err = obj.Sync()
		obj.Close()
		if err != nil {
			return err
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return d.Sync()
}

// copyWorkers is how many files the working copy creates at once: creating a file is
// system-call bound (the kernel, not this process, is busy), so a couple of files per core
// are in flight.
func copyWorkers() int { return 2 * runtime.GOMAXPROCS(0) }

// reencrypter turns the objects of the plan into their 3.12 files while CopyTreeWith copies
// them, spread over the copy's workers, and keeps the SHA-256 of each object's clear bytes
// (in plan order) for verify.
type reencrypter struct {
	p                *plan.Plan
	order            tokens.ByteOrder // the repository's, from the plan
	oldKeys, newKeys *tokens.Keys
	o                Options
	byName           []int32 // indexes of p.Objects sorted by file name
	sums             [][32]byte
	done             []bool
	migrated         atomic.Int64
	progress         atomic.Int64
}

func newReencrypter(p *plan.Plan, oldKeys, newKeys *tokens.Keys, o Options) *reencrypter {
	n := len(p.Objects)
	r := &reencrypter{p: p, order: planOrder(p), oldKeys: oldKeys, newKeys: newKeys, o: o, byName: make([]int32, n), sums: make([][32]byte, n), done: make([]bool, n)}
	for i := range r.byName {
		r.byName[i] = int32(i)
	}
	sort.Slice(r.byName, func(a, b int) bool { return p.Objects[r.byName[a]].File < p.Objects[r.byName[b]].File })
	return r
}

// transform is the CopyOptions.Transform of the working copy: objects listed in OBJ.IDX are
// re-encrypted, every other file is copied as it is.
func (r *reencrypter) transform(rel string, data []byte) ([]byte, error) {
	name, ok := strings.CutPrefix(rel, "TOK_OBJ/")
	if !ok || strings.Contains(name, "/") {
		return data, nil
	}
	objs := r.p.Objects
	k := sort.Search(len(r.byName), func(k int) bool { return objs[r.byName[k]].File >= name })
	if k == len(r.byName) || objs[r.byName[k]].File != name {
		return data, nil // not listed in OBJ.IDX: copied as it is
	}
	if err := r.o.hook("object " + name); err != nil {
		return nil, err
	}
	out, clear, changed, err := tokens.ReencryptObjectOrder(name, data, r.order, r.oldKeys, r.newKeys, r.o.Rand)
	if err != nil {
		code := plan.CodeCorruptRepository
		if errors.Is(err, tokens.ErrByteOrder) {
			code = plan.CodeByteOrder
		}
		return nil, plan.Errorf(code, "object %s: %w", name, err)
	}
	sum := sha256.Sum256(clear)
	// A name OBJ.IDX lists twice is one file: every entry gets its sum.
	for ; k < len(r.byName) && objs[r.byName[k]].File == name; k++ {
		i := r.byName[k]
		r.sums[i], r.done[i] = sum, true
		if r.o.Progress != nil {
			r.o.Progress(int(r.progress.Add(1)), len(objs))
		}
	}
	if !changed {
		return data, nil
	}
	r.migrated.Add(1)
	return out, nil
}

// result hands back the sums once the copy is done; an object of the plan the copy never
// met (its file vanished) is an error.
func (r *reencrypter) result() ([][32]byte, int, error) {
	for i, d := range r.done {
		if !d {
			return nil, 0, plan.Errorf(plan.CodeCorruptRepository, "object %s of OBJ.IDX was not found while copying", r.p.Objects[i].File)
		}
	}
	return r.sums, int(r.migrated.Load()), nil
}

// planOrder is the repository byte order the plan found ("any": nothing depends on it).
func planOrder(p *plan.Plan) tokens.ByteOrder {
	o, err := tokens.ParseByteOrder(p.ByteOrder)
	if err != nil {
		return tokens.OrderUnknown
	}
	return o
}

// verify re-reads the working copy with the 3.12 reader: the key files are the ones written
// and every object decrypts to exactly the clear bytes it had before.
func verify(p *plan.Plan, tmp *repofs.Dir, up *tokens.Upgrade, sums [][32]byte) error {
	fail := func(format string, args ...any) error {
		return &plan.Error{Code: plan.CodeVerifyFailed, Message: "verification of the working copy failed, nothing was switched: " + fmt.Sprintf(format, args...)}
	}
	repo, err := tokens.Load(tmp)
	if err != nil {
		return fail("%v", err)
	}
	if repo.NV.Format != tokens.Format312 {
		return fail("NVTOK.DAT is not in the 3.12 format")
	}
	for _, f := range []struct {
		name      string
		got, want []byte
	}{{"MK_SO", repo.MKSO, up.MKSO}, {"MK_USER", repo.MKUser, up.MKUser}} {
		if !bytes.Equal(f.got, f.want) {
			return fail("%s differs from what was written", f.name)
		}
	}
	nv, err := tmp.ReadFile("NVTOK.DAT")
	if err != nil || !bytes.Equal(nv, up.NVToken) {
		return fail("NVTOK.DAT differs from what was written")
	}
	if len(repo.Index) != len(p.Objects) {
		return fail("OBJ.IDX lists %d objects, the plan %d", len(repo.Index), len(p.Objects))
	}
	if len(p.Objects) == 0 {
		return nil
	}
	objDir, err := tmp.OpenSubdir("TOK_OBJ")
	if err != nil {
		return fail("%v", err)
	}
	defer objDir.Close()
	order := planOrder(p)
	return parallel.For(len(p.Objects), func(i int) error {
		name := p.Objects[i].File
		data, err := objDir.ReadFile(name)
		if err != nil {
			return fail("object %s: %v", name, err)
		}
		obj, err := tokens.DecodeObjectOrder(name, data, order, up.Keys)
		switch {
		case err != nil:
			return fail("object %s: %v", name, err)
		case obj.Format != tokens.Format312:
			return fail("object %s: not in the 3.12 format", name)
		case sha256.Sum256(obj.Clear) != sums[i]:
			return fail("object %s: clear bytes differ from the original's", name)
		}
		return nil
	})
}
