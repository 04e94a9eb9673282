// Package plan reads a token repository and opencryptoki.conf and decides what a migration
// would do. It changes nothing and takes no lock that could block the token library.
package plan

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"runtime/debug"
	"sort"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/ocktools/pkcstok-migrate/contract"
	"github.com/ocktools/pkcstok-migrate/internal/conf"
	"github.com/ocktools/pkcstok-migrate/internal/layout"
	"github.com/ocktools/pkcstok-migrate/internal/procscan"
	"github.com/ocktools/pkcstok-migrate/internal/repofs"
	"github.com/ocktools/pkcstok-migrate/tokens"
)

// ToolVersion is the version printed in plans.
var ToolVersion = "0.1.0"

// Options is a resolved request: PINs are bytes, paths are as given.
type Options struct {
	Slot      int
	Datastore string // "" = the slot's directory from the conf
	Confdir   string
	SOPIN     []byte // nil = not given
	UserPIN   []byte // nil = not given

	StateBase string   // "" = DefaultStateBase
	ProcRoot  string   // "" = "/proc"
	PIDFiles  []string // nil = procscan defaults
	FIPSFile  string   // info only: "" = DefaultFIPSFile (plan and apply never read it)

	// forceSwitch, set by tests only (ForceSwitch, in builds with -tags faultinject), plans
	// an in-place switch where the exchange would work: "in_place" (the backup beside the
	// repository, as on an overlay) or "in_place_inside" (the backup inside it, as on a
	// mount point).
	forceSwitch string

	// PrivateUnread leaves private objects encrypted while scanning (their class, label and
	// id stay unknown) although the PINs are given and checked: apply's own plan, whose copy
	// decrypts each private object anyway, so that it is decrypted once, not twice.
	PrivateUnread bool
	// ObjectsUnread is apply's plan of an old-format repository: the objects are not read at
	// all, because the copy reads each of them once and checks everything a scan would
	// (format, byte order, each object decoding) and computes the fingerprint. Objects then
	// holds OBJ.IDX's names only, Fingerprint is empty and Inspection.ObjectsUnread is set.
	// Ignored for a 3.12 repository, which is scanned as usual.
	ObjectsUnread bool
	// SlotdChecked is apply's plan: apply looked for pkcsslotd under its locks and refuses
	// while one runs, so the plan does not read every process of /proc a second time to warn.
	SlotdChecked bool
}

// Make reads the state and returns the plan. It never writes.
func Make(o Options) (*contract.Plan, error) {
	p, _, err := MakeWithKeys(o)
	return p, err
}

// Inspection is what Make learned beyond the Plan: the unlocked keys of the repository when
// PINs were given. Callers must Wipe the keys.
type Inspection struct {
	Keys *tokens.Keys
	Edit *conf.Edit
	Conf []byte // the conf bytes the edit was made from
	// ObjectsUnread: the objects were not read (Options.ObjectsUnread): the caller must check
	// them and compute the fingerprint (FinishFingerprint of the repository's digest).
	ObjectsUnread bool
	// NVOrder is the byte-order evidence of NVTOK.DAT, for DecideOrder over the objects.
	NVOrder tokens.Evidence
	// Index is OBJ.IDX's names, in order (Plan.Objects holds them too unless ObjectsUnread).
	Index []string
}

// MakeWithKeys is Make that also hands back the keys it unlocked, so apply does not derive
// them twice.
func MakeWithKeys(o Options) (*contract.Plan, *Inspection, error) {
	if o.StateBase == "" {
		o.StateBase = layout.DefaultStateBase
	}
	p, err := newPlan(o)
	if err != nil {
		return nil, nil, err
	}
	cf, confBytes, slot, err := readSlot(p, o)
	if err != nil {
		return nil, nil, err
	}
	if err := resolveDatastore(p, slot, o); err != nil {
		return nil, nil, err
	}
	edit, err := cf.SetTokVersion(uint64(o.Slot))
	if err != nil {
		return nil, nil, contract.Errorf(contract.CodeConfInvalid, "%s: slot %d: %w", p.Conf, o.Slot, err)
	}
	p.ConfFormat = confFormat(slot)
	p.ConfDiff = edit.Diff
	confChange := edit.Changes()

	dir, err := repofs.OpenDir(p.Datastore)
	if err != nil {
		return nil, nil, repoError(p.Datastore, err)
	}
	defer dir.Close()
	repo, keys, err := loadAndUnlock(p, dir, o)
	if err != nil {
		return nil, nil, err
	}
	ok := false
	defer func() {
		if !ok && keys != nil {
			keys.Wipe()
		}
	}()
	unread := o.ObjectsUnread && repo.NV.Format == tokens.FormatOld
	if err := inspectObjects(p, dir, repo, keys, confBytes, unread, o.PrivateUnread); err != nil {
		return nil, nil, err
	}
	if err := planGroup(p, dir); err != nil {
		return nil, nil, err
	}
	repoChange := repo.NV.Format == tokens.FormatOld
	planKeyFiles(p, repo, repoChange)
	if err := planSwitch(p, repoChange, o.forceSwitch); err != nil {
		return nil, nil, err
	}
	warnAround(p, confChange, repoChange, o)
	if err := planSpace(p, dir, repoChange, confChange, len(edit.Content)); err != nil {
		return nil, nil, err
	}
	p.Changed = repoChange || confChange
	planSteps(p, slot, edit, repoChange, confChange)
	ok = true
	return p, &Inspection{Keys: keys, Edit: edit, Conf: confBytes, ObjectsUnread: unread, NVOrder: repo.NV.OrderEvidence, Index: repo.Index}, nil
}

// newPlan is the empty plan of the request: its slot and conf paths.
func newPlan(o Options) (*contract.Plan, error) {
	if o.Slot < 0 || o.Slot >= 1024 {
		return nil, &contract.Error{Code: contract.CodeBadRequest, Field: "slot", Message: fmt.Sprintf("slot %d is out of range 0..1023", o.Slot)}
	}
	if o.Confdir == "" {
		return nil, &contract.Error{Code: contract.CodeBadRequest, Field: "confdir", Message: "confdir is required"}
	}
	p := &contract.Plan{
		FormatVersion: contract.FormatVersion,
		ToolVersion:   ToolVersion,
		Slot:          o.Slot,
		Objects:       []contract.Object{},
		Warnings:      []string{},
		Incomplete:    []string{},
		Steps:         []contract.Step{},
		KeyFiles:      []contract.FileAction{},
	}
	confdir, err := filepath.Abs(o.Confdir)
	if err != nil {
		return nil, contract.Errorf(contract.CodeBadRequest, "confdir %s: %w", o.Confdir, err)
	}
	p.Confdir = confdir
	p.Conf = filepath.Join(confdir, layout.ConfName)
	return p, nil
}

// readSlot reads the conf and finds the slot: its token type and group, with a warning for
// what apply will refuse and for a conf others may change.
func readSlot(p *contract.Plan, o Options) (*conf.File, []byte, *conf.Slot, error) {
	cf, confBytes, confWarnings, err := readConf(p.Confdir)
	if err != nil {
		return nil, nil, nil, err
	}
	p.Warnings = append(p.Warnings, confWarnings...)
	slot, err := cf.Slot(uint64(o.Slot))
	if err != nil {
		if errors.Is(err, conf.ErrSlotNotFound) {
			return nil, nil, nil, contract.Errorf(contract.CodeSlotNotFound, "%s: no slot %d: %w", p.Conf, o.Slot, err)
		}
		return nil, nil, nil, contract.Errorf(contract.CodeConfInvalid, "%s: slot %d: %w", p.Conf, o.Slot, err)
	}
	p.Stdll = slot.Stdll
	p.UserGroup = slot.UserGroup
	if !slot.Type.Supported() {
		return nil, nil, nil, &contract.Error{Code: contract.CodeUnsupportedToken, Message: fmt.Sprintf("slot %d points to DLL name %s, which is an unknown/unsupported token: only %s, %s, %s and %s tokens can be migrated", o.Slot, slot.Stdll, tokens.TypeICA.Stdll(), tokens.TypeCCA.Stdll(), tokens.TypeSoft.Stdll(), tokens.TypeEP11.Stdll())}
	}
	p.TokenType = slot.Type.String()
	if !slot.TypeExact {
		p.Warnings = append(p.Warnings, fmt.Sprintf("stdll %q is not one of the four exact names upstream accepts; taken as a %s token", slot.Stdll, slot.Type))
	}
	if _, err := repofs.LookupGroup(slot.UserGroup); err != nil {
		p.Warnings = append(p.Warnings, fmt.Sprintf("token group %q does not exist on this host: apply will refuse", slot.UserGroup))
	}
	return cf, confBytes, slot, nil
}

// resolveDatastore sets p.Datastore: the request's, or the directory the token library uses
// for the slot.
func resolveDatastore(p *contract.Plan, slot *conf.Slot, o Options) error {
	expected := slot.RepositoryDir(o.StateBase)
	ds := o.Datastore
	if ds == "" {
		ds = expected
	}
	ds, err := filepath.Abs(ds)
	if err != nil {
		return contract.Errorf(contract.CodeBadRequest, "datastore %s: %w", o.Datastore, err)
	}
	if ds == "/" || ds == "." {
		return &contract.Error{Code: contract.CodeBadRequest, Field: "datastore", Message: "datastore must not be the root directory"}
	}
	p.Datastore = ds
	// The library's directory as an absolute path: a relative state directory names the same
	// directory as the datastore derived from it.
	if exp, err := filepath.Abs(expected); err == nil && exp != ds {
		p.Warnings = append(p.Warnings, fmt.Sprintf("datastore %s differs from the directory the token library uses for slot %d (%s)", ds, o.Slot, exp))
	}
	return nil
}

// loadAndUnlock reads the repository's key files and OBJ.IDX and, with both PINs, checks them.
func loadAndUnlock(p *contract.Plan, dir *repofs.Dir, o Options) (*tokens.Repository, *tokens.Keys, error) {
	repo, err := tokens.Load(dir)
	if rerr := rewrittenError(p.Datastore, dir); rerr != nil {
		return nil, nil, rerr
	}
	if err != nil {
		return nil, nil, repoError(p.Datastore, err)
	}
	p.Token = tokenInfo(repo.NV.Info)
	if o.SOPIN == nil || o.UserPIN == nil {
		p.Incomplete = append(p.Incomplete, "PINs not given: PINs not verified, private objects listed without class, label or id")
		return repo, nil, nil
	}
	keys, err := repo.Unlock(o.SOPIN, o.UserPIN)
	if err != nil {
		return nil, nil, unlockError(err)
	}
	p.PINsChecked = true
	return repo, keys, nil
}

// inspectObjects lists the objects (unread: OBJ.IDX's names only, for apply's copy to check)
// or scans them with the fingerprint, and decides the byte order and the format.
func inspectObjects(p *contract.Plan, dir *repofs.Dir, repo *tokens.Repository, keys *tokens.Keys, confBytes []byte, unread, privateUnread bool) error {
	var tally tokens.OrderTally
	if unread {
		if err := listObjects(p, repo); err != nil {
			return err
		}
	} else {
		scanKeys := keys
		if privateUnread {
			scanKeys = nil
		}
		fp, err := scanRepository(p, dir, repo, scanKeys, confBytes, &tally)
		if err != nil {
			return err
		}
		p.Fingerprint = fp
	}
	order, why, err := tally.Decide(repo.NV.OrderEvidence)
	if err != nil {
		return repoError(p.Datastore, err)
	}
	SetByteOrder(p, order, why)
	switch nvFormat := repo.NV.Format; {
	case nvFormat == tokens.FormatOld && p.Counts.None == 0:
		p.Format = contract.FormatOld
	case nvFormat == tokens.Format312 && p.Counts.Reencrypt+p.Counts.RewrapHeader == 0:
		p.Format = contract.Format312
	default:
		p.Format = contract.FormatMixed
	}
	if p.Format == contract.FormatMixed {
		p.Warnings = append(p.Warnings, "repository mixes old and 3.12 files: apply will refuse; an old private object in a 3.12 repository cannot be decrypted any more")
	}
	if repo.NV.Format == tokens.Format312 && !repo.IndexPresent {
		p.Warnings = append(p.Warnings, "TOK_OBJ/OBJ.IDX is missing: the token has no objects")
	}
	if n := len(p.LibraryTempFiles); n > 0 {
		p.Warnings = append(p.Warnings, fmt.Sprintf("%d temporary file(s) of the token library (*.TMP, left when it stopped while writing) are not part of the token: apply leaves them out of the 3.12 repository (the backup keeps them)", n))
	}
	return nil
}

// planKeyFiles says what happens to NVTOK.DAT and the MK files.
func planKeyFiles(p *contract.Plan, repo *tokens.Repository, repoChange bool) {
	for _, f := range []string{"NVTOK.DAT", "MK_SO", "MK_USER"} {
		a := contract.ActionNone
		if repoChange {
			a = contract.ActionRewrite
			if f == "MK_USER" && repo.MKUser == nil {
				a = contract.ActionCreate
			}
		}
		p.KeyFiles = append(p.KeyFiles, contract.FileAction{File: f, Action: a})
	}
}

// planSwitch says how apply would switch the migrated repository in (Plan.Switch), from what
// the file system shows: one exchange of the whole directory wherever that works;
// in place, file by file, where it cannot (a mount point, another file system than the
// parent, an overlay's lower layer), with the original kept beside the repository when the
// parent can take it by a rename (the overlay) and inside it otherwise (Plan.Backup).
func planSwitch(p *contract.Plan, repoChange bool, force string) error {
	if !repoChange {
		p.Switch = contract.SwitchNone
		return nil
	}
	parent, err := repofs.OpenDir(filepath.Dir(p.Datastore))
	if err != nil {
		return repoError(p.Datastore, err)
	}
	defer parent.Close()
	why, unsure, err := parent.ExchangeBlocker(filepath.Base(p.Datastore))
	if err != nil {
		return repoError(p.Datastore, err)
	}
	p.Switch, p.Backup = contract.SwitchExchange, p.Datastore+layout.SuffixBak
	switch force {
	case "in_place":
		why = "forced by the test hook"
	case "in_place_inside":
		why = blockedForcedInside
	}
	switch {
	case why != "":
		p.Switch, p.SwitchBlockedBy = contract.SwitchInPlace, why
		if why == repofs.BlockedMountPoint || why == repofs.BlockedOtherFS || why == blockedForcedInside {
			// Renaming out of a mount is EXDEV: the original stays on its own volume.
			p.Backup = filepath.Join(p.Datastore, layout.InPlaceBak)
			p.Warnings = append(p.Warnings, fmt.Sprintf("%s cannot be exchanged with a working copy beside it (%s): apply switches its files in place, one by one, with a journal, and keeps the original inside it as %s (a rename cannot move it out of its file system; move it away when the migrated token works)", p.Datastore, why, p.Backup))
		} else {
			p.Warnings = append(p.Warnings, fmt.Sprintf("%s cannot be exchanged with a working copy beside it (%s): apply switches its files in place, one by one, with a journal; the original is kept as %s", p.Datastore, why, p.Backup))
		}
	case unsure:
		p.Warnings = append(p.Warnings, fmt.Sprintf("%s is on an overlay file system whose layers cannot be seen from here: if it comes from a lower (image) layer, the exchange fails (cross-device) after the copy; the original is then untouched", p.Datastore))
	}
	return nil
}

// ForcedSwitch is the switch a test build forced (ForceSwitch); "" in an ordinary build,
// where nothing can set it.
func (o Options) ForcedSwitch() string { return o.forceSwitch }

// blockedForcedInside is the reason a test gives to switch in place with the backup inside
// the repository, as on a mount point.
const blockedForcedInside = "forced by the test hook, the backup inside"

// warnAround warns of what lies around the repository and the conf: backups, what an
// interrupted run left, a running pkcsslotd.
func warnAround(p *contract.Plan, confChange, repoChange bool, o Options) {
	ds, confdir := p.Datastore, p.Confdir
	parent, base := filepath.Dir(ds), filepath.Base(ds)
	bak := ds + layout.SuffixBak
	if exists(parent, base+layout.SuffixBak) {
		if repoChange {
			p.Warnings = append(p.Warnings, fmt.Sprintf("backup %s already exists: apply will refuse until it is removed", bak))
		} else {
			p.Warnings = append(p.Warnings, fmt.Sprintf("backup %s exists from an earlier migration; once the migrated token works, remove-backups removes it (given the backup object that apply printed)", bak))
		}
	}
	if exists(ds, layout.InPlaceBak) {
		if repoChange {
			p.Warnings = append(p.Warnings, fmt.Sprintf("backup %s already exists: apply will refuse until it is removed", filepath.Join(ds, layout.InPlaceBak)))
		} else {
			p.Warnings = append(p.Warnings, fmt.Sprintf("backup %s exists from an earlier in-place migration; move it away after testing the migrated token", filepath.Join(ds, layout.InPlaceBak)))
		}
	}
	if exists(ds, layout.InPlaceTmp) {
		p.Warnings = append(p.Warnings, fmt.Sprintf("%s of an interrupted in-place switch exists: apply finishes that switch (its journal says what is left) or removes the working copy, if this tool made it, and refuses otherwise", filepath.Join(ds, layout.InPlaceTmp)))
	}
	if exists(parent, base+layout.SuffixTmp) {
		p.Warnings = append(p.Warnings, fmt.Sprintf("working copy %s from an interrupted run exists: apply will remove and rebuild it if this tool made it, and refuse otherwise", ds+layout.SuffixTmp))
	}
	if exists(parent, base+layout.SuffixJournal) {
		p.Warnings = append(p.Warnings, fmt.Sprintf("journal %s of an interrupted run exists: apply will finish that run if this tool wrote it, and refuse otherwise", ds+layout.SuffixJournal))
	}
	if exists(confdir, layout.HostJournal) {
		p.Warnings = append(p.Warnings, fmt.Sprintf("journal %s of an interrupted run exists: apply of the same slots finishes that run, rollback reverts it; apply of other slots is refused until then", filepath.Join(confdir, layout.HostJournal)))
	}
	if o.SlotdChecked {
		return
	}
	if pids, err := procscan.SlotdRunning(o.ProcRoot, o.PIDFiles); err != nil || len(pids) > 0 {
		p.Warnings = append(p.Warnings, fmt.Sprintf("pkcsslotd is running (pid %v): apply will refuse until it is stopped", pids))
	}
}

// planSteps lists what apply will do, in order.
func planSteps(p *contract.Plan, slot *conf.Slot, edit *conf.Edit, repoChange, confChange bool) {
	ds, tmp := p.Datastore, p.Datastore+layout.SuffixTmp
	inPlace := p.Switch == contract.SwitchInPlace
	if inPlace {
		tmp = filepath.Join(ds, layout.InPlaceTmp)
	}
	if repoChange {
		p.Steps = append(p.Steps,
			contract.Step{Op: contract.OpLock, Path: ds},
			contract.Step{Op: contract.OpCopy, From: ds, To: tmp, Note: fmt.Sprintf("files 0660, directories 0770, group %s (never readable by more users than the original's)", slot.UserGroup)},
			contract.Step{Op: contract.OpWriteKeys, Path: tmp, Note: "NVTOK.DAT, MK_SO, MK_USER in the 3.12 format with a fresh master key"},
			contract.Step{Op: contract.OpReencrypt, Path: filepath.Join(tmp, "TOK_OBJ"), Note: fmt.Sprintf("%d private object(s) re-encrypted, %d public header(s) rewritten", p.Counts.Reencrypt, p.Counts.RewrapHeader)},
			contract.Step{Op: contract.OpVerify, Path: tmp, Note: "every object decrypts to the clear bytes it had before"},
		)
		if inPlace {
			p.Steps = append(p.Steps,
				contract.Step{Op: contract.OpSwitchInPlace, From: tmp, To: ds, Note: "each file of the verified copy exchanged with the original's, one by one, under a journal (" + filepath.Join(ds, layout.InPlaceJournal) + ") that a rerun after a crash finishes"},
				contract.Step{Op: contract.OpBackup, From: tmp, To: p.Backup, Note: "the original files, now in the working copy, renamed"},
			)
		} else {
			p.Steps = append(p.Steps,
				contract.Step{Op: contract.OpExchange, From: tmp, To: ds, Note: "atomic exchange of the verified copy (device and inode checked before and after): the repository path never goes missing"},
				contract.Step{Op: contract.OpBackup, From: tmp, To: ds + layout.SuffixBak, Note: "the original repository, renamed"},
			)
		}
		p.Steps = append(p.Steps, contract.Step{Op: contract.OpRemoveShm, Path: "/dev/shm/" + strings.TrimPrefix(procscan.ShmName(ds), "/")})
	}
	if confChange {
		p.Steps = append(p.Steps, contract.Step{Op: contract.OpConfEdit, Path: p.Conf, To: filepath.Join(p.Confdir, layout.ConfBakName), Note: "tokversion = 3.12 (" + edit.Action + ")"})
	}
}

// IsLibraryTemp reports whether rel (slash-separated, relative to the repository) names a
// temporary file of the token library: since 3.26 it writes NVTOK.DAT, MK_SO, MK_USER, OBJ.IDX
// and each object as <name>.TMP and then renames it, so a library that stopped in between
// leaves such a file, which is not part of the token.
func IsLibraryTemp(rel string) bool {
	name, ok := strings.CutSuffix(rel, ".TMP")
	if !ok {
		return false
	}
	switch name {
	case tokens.FileNVTok, tokens.FileMKSO, tokens.FileMKUser, tokens.FileIndex:
		return true
	}
	obj, ok := strings.CutPrefix(name, objectDir)
	return ok && tokens.ValidObjectName(obj) == nil
}

// ReadConf reads and parses <confdir>/opencryptoki.conf without following symlinks.
func ReadConf(confdir string) (*conf.File, []byte, error) {
	f, data, _, err := readConf(confdir)
	return f, data, err
}

// ReadConfWarn is ReadConf with the warnings of readConf, for callers that report them.
func ReadConfWarn(confdir string) (*conf.File, []byte, []string, error) {
	return readConf(confdir)
}

// readConf is ReadConf that also says, as warnings, when the conf directory or the conf
// may be changed by someone the tool does not trust (conf.TrustWarnings).
func readConf(confdir string) (*conf.File, []byte, []string, error) {
	name := filepath.Join(confdir, layout.ConfName)
	d, err := repofs.OpenDir(confdir)
	if err != nil {
		if errors.Is(err, repofs.ErrSymlink) {
			return nil, nil, nil, &contract.Error{Code: contract.CodeConfInvalid, Message: fmt.Sprintf("conf directory %s is a symlink: refusing", confdir), Err: err}
		}
		return nil, nil, nil, confReadError(name, err)
	}
	defer d.Close()
	data, err := d.ReadFileAnyLinks(layout.ConfName)
	if err != nil {
		if errors.Is(err, repofs.ErrSymlink) {
			return nil, nil, nil, &contract.Error{Code: contract.CodeConfInvalid, Message: fmt.Sprintf("%s is a symlink: refusing", name), Err: err}
		}
		return nil, nil, nil, confReadError(name, err)
	}
	if len(data) > conf.MaxSize {
		return nil, nil, nil, &contract.Error{Code: contract.CodeConfInvalid, Message: fmt.Sprintf("%s is %d bytes, larger than the %d bytes accepted", name, len(data), conf.MaxSize)}
	}
	f, err := conf.Parse(name, data)
	if err != nil {
		return nil, nil, nil, contract.Errorf(contract.CodeConfInvalid, "%w", err)
	}
	var warnings []string
	if st, err := d.Lstat("."); err == nil {
		warnings = append(warnings, conf.TrustWarnings(confdir, true, st.UID, st.Perm(), os.Geteuid())...)
	}
	if st, err := d.Lstat(layout.ConfName); err == nil {
		warnings = append(warnings, conf.TrustWarnings(name, false, st.UID, st.Perm(), os.Geteuid())...)
	}
	return f, data, warnings, nil
}

func confReadError(name string, err error) error {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return contract.Errorf(contract.CodeConfInvalid, "%s does not exist: %w", name, err)
	case errors.Is(err, repofs.ErrSymlink), errors.Is(err, repofs.ErrNotRegular):
		return contract.Errorf(contract.CodeConfInvalid, "%s: refusing: %w", name, err)
	case errors.Is(err, repofs.ErrTooLarge):
		return contract.Errorf(contract.CodeConfInvalid, "%s: %w", name, err)
	}
	return contract.Errorf(contract.CodeIO, "read %s: %w", name, err)
}

func repoError(ds string, err error) error {
	var pe *contract.Error
	if errors.As(err, &pe) {
		return err
	}
	var pathErr *fs.PathError
	switch {
	case errors.Is(err, fs.ErrNotExist) && errors.As(err, &pathErr) && (pathErr.Path == ds || filepath.Base(pathErr.Path) == "NVTOK.DAT"):
		// No repository, or none the token library initialised: what info calls missing.
		return &contract.Error{Code: contract.CodeSlotNotInitialized, Message: fmt.Sprintf("%s holds no token (%s does not exist): initialise the slot's token first, or give the right datastore", ds, pathErr.Path), Err: err}
	case errors.Is(err, fs.ErrNotExist):
		return contract.Errorf(contract.CodeCorruptRepository, "repository %s: %w", ds, err)
	case errors.Is(err, tokens.ErrByteOrder):
		return contract.Errorf(contract.CodeByteOrder, "repository %s: %w", ds, err)
	case errors.Is(err, tokens.ErrCorrupt), errors.Is(err, repofs.ErrSymlink), errors.Is(err, repofs.ErrNotRegular), errors.Is(err, repofs.ErrHardLinked), errors.Is(err, repofs.ErrTooLarge):
		return contract.Errorf(contract.CodeCorruptRepository, "repository %s: %w", ds, err)
	}
	return contract.Errorf(contract.CodeIO, "repository %s: %w", ds, err)
}

// rewrittenError recognises a repository the token library damaged (tokens.RewrittenByLibrary)
// and says what to do; nil for any other.
func rewrittenError(ds string, dir *repofs.Dir) error {
	nv, err1 := dir.ReadFile("NVTOK.DAT")
	mk, err2 := dir.ReadFile("MK_SO")
	if err1 != nil || err2 != nil || !tokens.RewrittenByLibrary(nv, mk) {
		return nil
	}
	if exists(ds, layout.InPlaceTmp) {
		// An in-place switch under way switches NVTOK.DAT last: its journal says the rest.
		return nil
	}
	todo := fmt.Sprintf("run rollback: it switches the original, %s, back in (the damaged repository is kept beside it), then apply again with tokversion = 3.12 kept in the conf", ds+layout.SuffixBak)
	if !exists(filepath.Dir(ds), filepath.Base(ds)+layout.SuffixBak) {
		todo = "restore the repository from a backup of before its migration, then apply again"
	}
	return &contract.Error{Code: contract.CodeRewrittenByLibrary, Message: fmt.Sprintf("%s: NVTOK.DAT is in the old format but MK_SO in the 3.12 format: the token library rewrote NVTOK.DAT because it opened the migrated repository under a conf without tokversion = 3.12; %s", ds, todo)}
}

func unlockError(err error) error {
	switch {
	case errors.Is(err, tokens.ErrWrongSOPIN), errors.Is(err, tokens.ErrWrongUserPIN):
		return contract.Errorf(contract.CodeWrongPIN, "could not verify the PINs: %w", err)
	case errors.Is(err, tokens.ErrUserPINNotSet):
		return contract.Errorf(contract.CodeUserPINNotSet, "%w: set it with pkcsconf before migrating", err)
	case errors.Is(err, tokens.ErrMKMismatch), errors.Is(err, tokens.ErrCorrupt):
		return contract.Errorf(contract.CodeCorruptRepository, "%w", err)
	}
	return contract.Errorf(contract.CodeIO, "unlock: %w", err)
}

func confFormat(s *conf.Slot) string {
	switch s.TokVersionKind {
	case conf.KindAbsent:
		return "absent"
	}
	return s.TokVersion
}

func exists(dir, name string) bool {
	_, err := os.Lstat(filepath.Join(dir, name))
	return err == nil
}

func tokenInfo(ti tokens.TokenInfo) contract.TokenInfo {
	return contract.TokenInfo{
		Label:           strings.TrimRight(printable(ti.Label), " "),
		ManufacturerID:  strings.TrimRight(printable(ti.ManufacturerID), " "),
		Model:           strings.TrimRight(printable(ti.Model), " "),
		SerialNumber:    strings.TrimRight(printable(ti.SerialNumber), " "),
		Flags:           fmt.Sprintf("0x%X", ti.Flags),
		HardwareVersion: fmt.Sprintf("%d.%d", ti.HardwareVersion[0], ti.HardwareVersion[1]),
		FirmwareVersion: fmt.Sprintf("%d.%d", ti.FirmwareVersion[0], ti.FirmwareVersion[1]),
	}
}

// printable keeps valid UTF-8 text and replaces control bytes, so a hostile label cannot
// reach a terminal raw.
func printable(s string) string {
	if utf8.ValidString(s) && !strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return s
	}
	var b strings.Builder
	for _, r := range strings.ToValidUTF8(s, "\uFFFD") {
		if r < 0x20 || r == 0x7f {
			r = '\uFFFD'
		}
		b.WriteRune(r)
	}
	return b.String()
}

// LimitMemory sets the garbage collector for a run over objects objects; restore undoes it.
//
// The run allocates about 6 KiB per object that dies at once (buffers, ciphers), over a live
// heap of a few MiB: with GOGC's default of 100 the collector ran every few hundred objects
// (62 MB allocated in a 10,000-object apply). It runs at 400% instead (unless GOGC is set),
// which took 0.08-0.14 s off a 10,000-object apply on loop XFS, side by side.
//
// From 10,000 objects on it also sets a soft memory limit (runtime/debug.SetMemoryLimit),
// unless one is already set (GOMEMLIMIT), which then bounds the heap instead of the
// percentage. The plan keeps about 230 bytes per object alive; without a limit the collector
// lets the heap grow to a multiple of that before it runs, which at 100,000 objects would
// take the process above 64 MiB.
func LimitMemory(objects int) (restore func()) {
	undoPercent := func() {}
	if os.Getenv("GOGC") == "" {
		prev := debug.SetGCPercent(gcPercent)
		undoPercent = func() { debug.SetGCPercent(prev) }
	}
	if objects < 10000 || debug.SetMemoryLimit(-1) != math.MaxInt64 {
		return undoPercent
	}
	prev := debug.SetMemoryLimit(24<<20 + 200*int64(objects))
	return func() {
		debug.SetMemoryLimit(prev)
		undoPercent()
	}
}

// gcPercent is the collector's target while LimitMemory is in force.
const gcPercent = 400

// scanRepository reads the repository once (repofs.Walk): every file feeds the fingerprint,
// and every object OBJ.IDX lists is decoded on the way, on every core. It fills p.Objects and
// p.Counts in index order, adds the byte-order evidence of each object to tally, and returns the
// fingerprint. The first bad object in OBJ.IDX order decides the error.
func scanRepository(p *contract.Plan, dir *repofs.Dir, repo *tokens.Repository, keys *tokens.Keys, confBytes []byte, tally *tokens.OrderTally) (string, error) {
	names := repo.Index
	defer LimitMemory(len(names))()
	if err := checkIndexNames(p, names); err != nil {
		return "", err
	}
	byName := make(map[string][]int, len(names))
	for i, name := range names {
		byName[name] = append(byName[name], i)
	}
	objs := make([]contract.Object, len(names))
	errs := make([]error, len(names))
	seen := make([]bool, len(names))
	h := newFingerprint()
	var temps sync.Mutex
	err := repofs.Walk(dir, repofs.Visitor{
		Digest:  h,
		Exclude: layout.Reserved,
		File: func(e repofs.Entry, _ any, data []byte) (any, error) {
			if IsLibraryTemp(e.Rel) {
				temps.Lock()
				p.LibraryTempFiles = append(p.LibraryTempFiles, e.Rel)
				temps.Unlock()
				return nil, nil
			}
			name, ok := strings.CutPrefix(e.Rel, objectDir)
			if !ok {
				return nil, nil
			}
			idx := byName[name] // a name OBJ.IDX lists twice is one file
			if len(idx) == 0 {
				return nil, nil // not listed: part of the fingerprint only
			}
			o, obj, err := scanObject(name, data, repo.NV.Order, keys)
			if obj != nil {
				tally.Add(idx[0], obj)
			}
			for _, i := range idx {
				objs[i], errs[i], seen[i] = o, err, true
			}
			return nil, nil
		},
	})
	if err != nil {
		return "", repoError(p.Datastore, err)
	}
	for i := range names {
		if errs[i] != nil {
			return "", repoError(p.Datastore, fmt.Errorf("object %d of OBJ.IDX: %w", i+1, errs[i]))
		}
		if !seen[i] {
			// The name is OBJ.IDX's bytes, not a file of the repository: not quoted.
			return "", repoError(p.Datastore, fmt.Errorf("object %d of OBJ.IDX names no file of %s: %w", i+1, strings.TrimSuffix(objectDir, "/"), fs.ErrNotExist))
		}
	}
	sort.Strings(p.LibraryTempFiles)
	p.Objects = objs
	for _, o := range objs {
		p.Counts.Total++
		if o.Private {
			p.Counts.Private++
		} else {
			p.Counts.Public++
		}
		switch o.Action {
		case contract.ActionReencrypt:
			p.Counts.Reencrypt++
		case contract.ActionRewrapHeader:
			p.Counts.RewrapHeader++
		default:
			p.Counts.None++
		}
	}
	return finishFingerprint(h, confBytes), nil
}

// objectDir is the repository's object directory, as a prefix of relative paths.
const objectDir = "TOK_OBJ/"

// scanObject decodes one object file; ord is the order NVTOK.DAT showed (OrderUnknown for
// 3.12). data is only valid during the call: nothing kept aliases it.
func scanObject(name string, data []byte, ord tokens.ByteOrder, keys *tokens.Keys) (contract.Object, *tokens.Object, error) {
	o := contract.Object{File: name, Size: int64(len(data))}
	obj, err := tokens.DecodeObjectOrder(name, data, ord, keys)
	if err != nil && !errors.Is(err, tokens.ErrNeedKeys) {
		return contract.Object{}, nil, err
	}
	if obj == nil {
		return contract.Object{}, nil, fmt.Errorf("object %s: no result", name)
	}
	o.Private = obj.Private
	o.Format = contract.Format(obj.Format.String())
	switch {
	case obj.Format == tokens.Format312:
		o.Action = contract.ActionNone
		o.NewSize = o.Size
	case obj.Private:
		o.Action = contract.ActionReencrypt
	default:
		o.Action = contract.ActionRewrapHeader
	}
	if obj.Clear != nil {
		if o.Action == contract.ActionReencrypt {
			o.NewSize = int64(80 + len(obj.Clear))
		} else if o.Action == contract.ActionRewrapHeader {
			o.NewSize = int64(16 + len(obj.Clear))
		}
		parseOrder := obj.Order
		if parseOrder == tokens.OrderUnknown {
			parseOrder = ord
		}
		a, err := tokens.ParseFlattenedOrder(name, obj.Clear, parseOrder)
		if err != nil {
			return contract.Object{}, nil, err
		}
		c := int64(a.Class)
		o.Class = &c
		o.ClassName = tokens.ClassName(a.Class)
		o.Label = printable(string(a.Label))
		o.ID = hex.EncodeToString(a.ID)
	}
	return o, obj, nil
}

// SetByteOrder records the repository's byte order, its evidence, and the warning when it is
// not this host's.
func SetByteOrder(p *contract.Plan, order tokens.ByteOrder, why []tokens.Evidence) {
	p.ByteOrder, p.ByteOrderEvidence = byteOrderName(order), []string{}
	for _, e := range why {
		p.ByteOrderEvidence = append(p.ByteOrderEvidence, e.String())
	}
	if host := tokens.HostByteOrder(); order != tokens.OrderUnknown && order != host {
		p.Warnings = append(p.Warnings, fmt.Sprintf("the repository is %s (written on a %s machine such as %s) but this host is %s: the token library on this host cannot open it, before or after the migration; the migration itself runs on any host and keeps the repository %s",
			order, order, machinesOf(order), host, order))
	}
}

// listObjects is the plan of an old repository whose objects are not read
// (Options.ObjectsUnread): Plan.Objects stays empty (100,000 entries would only cost memory;
// Inspection.Index has the names) and every object counts as one to migrate. The names are
// checked as a scan would.
func listObjects(p *contract.Plan, repo *tokens.Repository) error {
	if err := checkIndexNames(p, repo.Index); err != nil {
		return err
	}
	p.Counts = contract.Counts{Total: len(repo.Index), Reencrypt: len(repo.Index)}
	return nil
}

// checkIndexNames refuses OBJ.IDX when one of its names is not a valid object file name.
func checkIndexNames(p *contract.Plan, names []string) error {
	for i, name := range names {
		if err := tokens.ValidObjectName(name); err != nil {
			return repoError(p.Datastore, fmt.Errorf("object %d of OBJ.IDX: %w", i+1, err))
		}
	}
	return nil
}

// byteOrderName is the plan's name of a repository byte order: "any" when nothing depends on it.
func byteOrderName(o tokens.ByteOrder) string {
	if o == tokens.OrderUnknown {
		return "any"
	}
	return o.String()
}

func machinesOf(o tokens.ByteOrder) string {
	if o == tokens.BigEndian {
		return "IBM Z (s390x)"
	}
	return "x86_64, ppc64le or aarch64"
}

// Fingerprint hashes every file of the repository and the conf bytes. It holds nothing
// derived from a PIN.
func Fingerprint(dir *repofs.Dir, confBytes []byte) (string, error) {
	h := newFingerprint()
	if err := repofs.TreeDigestExcluding(dir, h, layout.Reserved); err != nil {
		return "", err
	}
	return finishFingerprint(h, confBytes), nil
}

// NewFingerprint starts a fingerprint: write repofs.TreeDigest's description of the
// repository into it (or have repofs.CopyTreeWith write its DstDigest), then FinishFingerprint
// with the conf bytes.
func NewFingerprint() hash.Hash { return newFingerprint() }

// FinishFingerprint ends a fingerprint made with NewFingerprint.
func FinishFingerprint(h hash.Hash, confBytes []byte) string { return finishFingerprint(h, confBytes) }

func newFingerprint() hash.Hash {
	h := sha256.New()
	h.Write([]byte("pkcstok-migrate fingerprint v1\nrepository\n"))
	return h
}

func finishFingerprint(h hash.Hash, confBytes []byte) string {
	c := sha256.Sum256(confBytes)
	fmt.Fprintf(h, "conf %x\n", c)
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}
