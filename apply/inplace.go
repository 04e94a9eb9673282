package apply

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	json "github.com/goccy/go-json"
	"golang.org/x/sys/unix"

	"github.com/ocktools/pkcstok-migrate/contract"
	"github.com/ocktools/pkcstok-migrate/internal/layout"
	"github.com/ocktools/pkcstok-migrate/internal/repofs"
)

// The in-place switch is for a repository whose directory cannot be exchanged: a
// mount point (its own volume, a tmpfs, a bind mount: EBUSY) or a directory of an overlay's
// lower layer (EXDEV). The working copy is built inside the repository, on its file system
// (layout.InPlaceTmp: private, marked, like the working copy beside it), and its files are
// exchanged with the repository's one by one. Between the first and the last exchange the
// repository mixes old and new files, so a journal says what is switched: it lives in the
// private directory itself (layout.InPlaceJournal below it), where nobody but root can touch it.
//
// The protocol, each step durable before the next:
//
//  1. the working copy, verified, and its journal (the files to switch, each with the SHA-256
//     of what must end up in the repository): one syncfs;
//  2. the exchanges (renameat2 RENAME_EXCHANGE between the two directories; a new file is
//     renamed in, a library temp file renamed out): one syncfs;
//  3. the working copy, which now holds the original files, renamed to the backup (beside the
//     repository when the parent directory can take it, else layout.InPlaceBak inside it);
//  4. a backup mark in it, then the journal removed, then its mode and no marks.
//
// A rerun after a crash at any point finds the private directory (by its marker: at its name,
// or wherever a member of the token group renamed it in the repository) and goes on: before
// the journal it removes the copy (nothing was switched); with the journal it finishes every
// exchange, each judged by content (a file that already has the new content is done); with the
// backup mark it only settles the backup. Rollback of such a repository is the same switch
// the other way round, with a private directory that holds only its journal.

// inPlaceJournal is the journal of an in-place switch.
type inPlaceJournal struct {
	State     string `json:"state"` // "apply" or "rollback"
	Datastore string `json:"datastore"`
	// Source is where the files to switch in are (rollback: the backup; apply: the private
	// directory that holds the journal); Dest is where that directory goes afterwards.
	Source          location      `json:"source"`
	Dest            location      `json:"dest"`
	PlanFingerprint string        `json:"plan_fingerprint,omitempty"`
	Entries         []switchEntry `json:"entries"`
}

// location names a directory beside the repository (in its parent) or inside it.
type location struct {
	Beside bool   `json:"beside"`
	Name   string `json:"name"`
}

// switchEntry is one file of an in-place switch: "exchange" (in both directories), "in" (only
// in the source: renamed in), "out" (only in the repository: renamed out, into the source).
type switchEntry struct {
	Rel  string `json:"rel"`
	Kind string `json:"kind"`
	New  string `json:"new,omitempty"` // hex SHA-256 of what ends up at Rel in the repository
}

// inPlace is an in-place switch under way: the repository, its parent and the private
// directory, all open.
type inPlace struct {
	ds      string // the repository's path
	base    string
	pdir    *repofs.Dir // the parent
	dsDir   *repofs.Dir // the repository
	ctl     *repofs.Dir // the private directory (apply: the working copy)
	ctlName string      // its name in the repository
	ctlInfo repofs.Info
	keptAt  location // where finishApply kept the original files
	o       Options
}

func (l location) dir(ip *inPlace) *repofs.Dir { return l.in(ip.pdir, ip.dsDir) }

// in is the directory the location names its entry in: the parent, or the repository.
func (l location) in(pdir, dsDir *repofs.Dir) *repofs.Dir {
	if l.Beside {
		return pdir
	}
	return dsDir
}

func (l location) path(ds string) string {
	if l.Beside {
		return filepath.Join(filepath.Dir(ds), l.Name)
	}
	return filepath.Join(ds, l.Name)
}

// backupLocation is where the plan keeps the original of an in-place switch.
func backupLocation(p *contract.Plan) location {
	if p.Backup == filepath.Join(p.Datastore, layout.InPlaceBak) {
		return location{Name: layout.InPlaceBak}
	}
	return location{Beside: true, Name: filepath.Base(p.Datastore) + layout.SuffixBak}
}

func exists(d *repofs.Dir, name string) bool {
	_, err := d.Lstat(name)
	return err == nil
}

// inPlaceSwitch is the switch for a repository whose directory cannot be exchanged (the
// protocol above): the working copy is built inside the repository and its files are
// exchanged with the repository's one by one under the journal.
type inPlaceSwitch struct {
	*inPlace
	m         *migration
	dest      location // where the original files are kept
	j         inPlaceJournal
	journaled bool
}

func newInPlaceSwitch(m *migration) (*inPlaceSwitch, error) {
	p := m.p
	dsDir, err := repofs.OpenDir(p.Datastore)
	if err != nil {
		return nil, contract.Errorf(contract.CodeIO, "open %s: %w", p.Datastore, err)
	}
	if info, err := dsDir.Lstat("."); err != nil || !repofs.Same(info, m.o.orig) {
		dsDir.Close()
		return nil, &contract.Error{Code: contract.CodeStalePlan, Message: fmt.Sprintf("%s is not the directory apply locked any more: someone renamed it; plan again", p.Datastore)}
	}
	ip := &inPlace{ds: p.Datastore, base: filepath.Base(p.Datastore), pdir: m.pdir, dsDir: dsDir, ctlName: layout.InPlaceTmp, o: m.o}
	return &inPlaceSwitch{inPlace: ip, m: m, dest: backupLocation(p)}, nil
}

func (s *inPlaceSwitch) backupFree() error {
	if exists(s.dest.dir(s.inPlace), s.dest.Name) {
		return &contract.Error{Code: contract.CodeBackupExists, Message: fmt.Sprintf("datastore backup %s already exists: remove it before migrating", s.dest.path(s.ds))}
	}
	return nil
}

func (s *inPlaceSwitch) makeWorkingCopy() (*repofs.Dir, error) {
	wc, info, err := makeWorkingCopy(s.dsDir, layout.InPlaceTmp, s.ds, s.m.perm.GID)
	if err != nil {
		return nil, err
	}
	s.ctl, s.ctlInfo = wc, info
	return wc, nil
}

func (s *inPlaceSwitch) journal() error {
	s.j = inPlaceJournal{State: "apply", Datastore: s.ds, Source: location{Name: layout.InPlaceTmp}, Dest: s.dest, PlanFingerprint: s.m.p.Fingerprint}
	var err error
	if s.j.Entries, err = switchEntries(s.dsDir, s.ctl, true); err != nil {
		return err
	}
	if err := s.o.hook(contract.OpJournal); err != nil {
		return err
	}
	if err := s.writeJournal(s.j); err != nil {
		return err
	}
	s.journaled = true
	return nil
}

func (s *inPlaceSwitch) switchIn() error {
	if err := s.o.hook(contract.OpSwitchInPlace); err != nil {
		return err
	}
	return s.switchAll(s.j, s.ctl, false)
}

func (s *inPlaceSwitch) keepBackup() error { return s.finishApply(s.j, s.m.rootMode) }

// abandon removes the working copy while nothing was switched (no journal yet); with the
// journal a rerun finishes the switch.
func (s *inPlaceSwitch) abandon() {
	if !s.journaled && s.ctl != nil {
		_ = removeWorkingCopy(s.dsDir, layout.InPlaceTmp, s.ctl)
	}
}

// made: the working copy, which holds the original files now, is the backup.
func (s *inPlaceSwitch) made() contract.Backup {
	return contract.Backup{Datastore: s.keptAt.path(s.ds), DatastoreDev: s.ctlInfo.Dev, DatastoreIno: s.ctlInfo.Ino}
}

func (s *inPlaceSwitch) close() {
	if s.ctl != nil {
		s.ctl.Close()
	}
	s.dsDir.Close()
}

// switchEntries lists the files of an in-place switch of src into the repository dsDir, with
// the SHA-256 of each file of src. skipMarks leaves the working copy's marker out.
func switchEntries(dsDir, src *repofs.Dir, skipMarks bool) ([]switchEntry, error) {
	exclude := layout.Reserved
	if skipMarks {
		exclude = func(rel string) bool { return rel == layout.WorkingCopyMarker || layout.Reserved(rel) }
	}
	srcFiles, err := fileDigests(src, exclude)
	if err != nil {
		return nil, contract.Errorf(contract.CodeIO, "read %s: %w", src.Path(), err)
	}
	dsFiles, err := fileDigests(dsDir, layout.Reserved)
	if err != nil {
		return nil, contract.Errorf(contract.CodeIO, "read %s: %w", dsDir.Path(), err)
	}
	var es []switchEntry
	for rel, sum := range srcFiles {
		kind := "in"
		if _, ok := dsFiles[rel]; ok {
			kind = "exchange"
		}
		es = append(es, switchEntry{Rel: rel, Kind: kind, New: sum})
	}
	for rel := range dsFiles {
		if _, ok := srcFiles[rel]; !ok {
			es = append(es, switchEntry{Rel: rel, Kind: "out"})
		}
	}
	// The objects first, the index after them, the key files last: until the end NVTOK.DAT
	// says what the repository was.
	rank := func(rel string) int {
		switch {
		case rel == "NVTOK.DAT":
			return 3
		case !strings.Contains(rel, "/"):
			return 2
		case strings.HasSuffix(rel, "/OBJ.IDX"):
			return 1
		}
		return 0
	}
	sort.Slice(es, func(a, b int) bool {
		ra, rb := rank(es[a].Rel), rank(es[b].Rel)
		if ra != rb {
			return ra < rb
		}
		return es[a].Rel < es[b].Rel
	})
	return es, nil
}

// fileDigests reads every regular file below d (but what exclude names) and gives its hex
// SHA-256 by relative path.
func fileDigests(d *repofs.Dir, exclude func(string) bool) (map[string]string, error) {
	var mu sync.Mutex
	out := map[string]string{}
	err := repofs.Walk(d, repofs.Visitor{
		Exclude: exclude,
		File: func(e repofs.Entry, _ any, data []byte) (any, error) {
			s := sha256.Sum256(data)
			mu.Lock()
			out[e.Rel] = hex.EncodeToString(s[:])
			mu.Unlock()
			return nil, nil
		},
	})
	return out, err
}

// digestAt is the hex SHA-256 of the regular file rel below d, "" when there is none.
func digestAt(d *repofs.Dir, rel string) (string, error) {
	b, err := d.ReadFile(rel)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:]), nil
}

// writeJournal writes the journal into the private directory and makes it durable with
// everything written so far (one syncfs: the repository's file system holds both).
func (ip *inPlace) writeJournal(j inPlaceJournal) error {
	raw, err := json.Marshal(j)
	if err != nil {
		return contract.Errorf(contract.CodeIO, "journal: %w", err)
	}
	if _, err := ip.ctl.CreatePrivate(layout.InPlaceJournal, raw); err != nil {
		return contract.Errorf(contract.CodeIO, "write journal: %w", err)
	}
	if syncJournal {
		if err := ip.ctl.Syncfs(); err != nil {
			return contract.Errorf(contract.CodeIO, "sync journal: %w", err)
		}
	}
	// Durability: the journal's name before the first exchange.
	if err := ip.ctl.Sync(); err != nil {
		return contract.Errorf(contract.CodeIO, "sync %s: %w", ip.ctl.Path(), err)
	}
	return nil
}

// switchAll carries out every entry of j between src and the repository. judge: find out by
// content what is done already (a rerun after a crash); else every entry is still to do.
func (ip *inPlace) switchAll(j inPlaceJournal, src *repofs.Dir, judge bool) error {
	for _, e := range j.Entries {
		if err := ip.o.hook(contract.OpSwitchEntry); err != nil {
			return err
		}
		if err := switchOne(ip.dsDir, src, e, judge); err != nil {
			return err
		}
	}
	// Durability: every exchange before the source directory moves and the journal goes.
	if err := ip.dsDir.Syncfs(); err != nil {
		return contract.Errorf(contract.CodeIO, "sync %s: %w", ip.ds, err)
	}
	return nil
}

// switchOne does one entry. Someone renaming files in the repository meanwhile (members of
// the token group can) makes an exchange fail or move their file into the source: it is
// checked after each exchange that the repository has the file the source had.
func switchOne(dsDir, src *repofs.Dir, e switchEntry, judge bool) error {
	stuck := func(why string) error {
		return &contract.Error{Code: contract.CodeCorruptRepository, Message: fmt.Sprintf("in-place switch of %s: %s is %s: nothing more was switched; the journal in %s says what is left (check who changes files there)", dsDir.Path(), e.Rel, why, dsDir.Path())}
	}
	if judge {
		done, err := entryDone(dsDir, src, e)
		if err != nil {
			return err
		}
		if done {
			return nil
		}
	}
	switch e.Kind {
	case "exchange", "in":
		before, err := src.Lstat(e.Rel)
		if err != nil || !before.IsRegular() {
			return stuck("not in the source any more")
		}
		if e.Kind == "exchange" {
			err = src.ExchangeWith(e.Rel, dsDir, e.Rel)
		} else {
			err = src.RenameNoReplaceTo(e.Rel, dsDir, e.Rel)
		}
		if err != nil {
			return contract.Errorf(contract.CodeIO, "switch %s in place: %w", e.Rel, err)
		}
		if after, err := dsDir.Lstat(e.Rel); err != nil || !repofs.Same(after, before) {
			return &contract.Error{Code: contract.CodeVerifyFailed, Message: fmt.Sprintf("in-place switch of %s: %s is not the file that was switched in: someone else renames files there; check it", dsDir.Path(), e.Rel)}
		}
	case "out":
		if err := dsDir.RenameNoReplaceTo(e.Rel, src, e.Rel); err != nil {
			return contract.Errorf(contract.CodeIO, "move %s out of the repository: %w", e.Rel, err)
		}
	default:
		return stuck("of an unknown kind " + e.Kind)
	}
	return nil
}

// entryDone judges an entry of an interrupted switch by what is on disk: done when the
// repository has the new content (or, for "out", no longer has the file), to do when the
// source still has it; anything else is refused.
func entryDone(dsDir, src *repofs.Dir, e switchEntry) (bool, error) {
	inDS, err := digestAt(dsDir, e.Rel)
	if err != nil {
		return false, contract.Errorf(contract.CodeCorruptRepository, "in-place switch: read %s: %w", filepath.Join(dsDir.Path(), e.Rel), err)
	}
	inSrc, err := digestAt(src, e.Rel)
	if err != nil {
		return false, contract.Errorf(contract.CodeCorruptRepository, "in-place switch: read %s: %w", filepath.Join(src.Path(), e.Rel), err)
	}
	switch e.Kind {
	case "exchange", "in":
		if inDS == e.New {
			return true, nil
		}
		if inSrc == e.New && (e.Kind == "exchange" && inDS != "" || e.Kind == "in" && inDS == "") {
			return false, nil
		}
	case "out":
		if inDS == "" && inSrc != "" {
			return true, nil
		}
		if inDS != "" && inSrc == "" {
			return false, nil
		}
	}
	return false, &contract.Error{Code: contract.CodeCorruptRepository, Message: fmt.Sprintf("in-place switch of %s: cannot tell whether %s was switched (neither it nor its counterpart in %s has the content the journal names): nothing was changed; check them by hand", dsDir.Path(), e.Rel, src.Path())}
}

// finishApply moves the working copy, which holds the original files now, to the backup,
// marks it as such, removes the journal and settles it (steps 3 and 4).
func (ip *inPlace) finishApply(j inPlaceJournal, rootMode uint32) error {
	if err := ip.o.hook(contract.OpBackup); err != nil {
		return err
	}
	if err := ip.moveCtl(j.Dest); err != nil {
		return err
	}
	return ip.settleBackup(rootMode)
}

// moveCtl renames the private directory to dest (no replace), checking it is still the one
// this run holds; a backup beside the repository that the file system cannot take (EXDEV)
// stays inside it.
func (ip *inPlace) moveCtl(dest location) error {
	if cur, err := ip.dsDir.Lstat(ip.ctlName); err != nil || !repofs.Same(cur, ip.ctlInfo) {
		return &contract.Error{Code: contract.CodeVerifyFailed, Message: fmt.Sprintf("the repository is migrated, but its working copy %s (which holds the original files) was moved by someone else: find the root-only directory in %s; run apply again", filepath.Join(ip.ds, ip.ctlName), ip.ds)}
	}
	err := ip.dsDir.RenameNoReplaceTo(ip.ctlName, dest.dir(ip), dest.Name)
	if errors.Is(err, unix.EXDEV) && dest.Beside {
		if ip.o.warn != nil {
			ip.o.warn(fmt.Sprintf("the original files could not be moved to %s (another file system): they are kept in %s", dest.path(ip.ds), filepath.Join(ip.ds, layout.InPlaceBak)))
		}
		dest = location{Name: layout.InPlaceBak}
		err = ip.dsDir.RenameNoReplaceTo(ip.ctlName, ip.dsDir, dest.Name)
	}
	if err != nil {
		return contract.Errorf(contract.CodeIO, "keep the original files as %s (the repository is migrated; run apply again): %w", dest.path(ip.ds), err)
	}
	ip.keptAt = dest
	// Durability: the rename (both directories) before the mark and the journal's removal.
	if err := ip.dsDir.Sync(); err != nil {
		return contract.Errorf(contract.CodeIO, "sync %s: %w", ip.ds, err)
	}
	if dest.Beside {
		if err := ip.pdir.Sync(); err != nil {
			return contract.Errorf(contract.CodeIO, "sync %s: %w", ip.pdir.Path(), err)
		}
	}
	return nil
}

// settleBackup marks the private directory as the backup, removes its journal and gives it
// its mode (step 4). The ordering keeps it provably the backup at every point: with the
// journal, then with the mark (which only root can have made there), then settled.
func (ip *inPlace) settleBackup(rootMode uint32) error {
	if _, err := ip.ctl.Lstat(layout.BackupMark); errors.Is(err, fs.ErrNotExist) {
		if _, err := ip.ctl.CreatePrivate(layout.BackupMark, nil); err != nil {
			return contract.Errorf(contract.CodeIO, "mark the backup: %w", err)
		}
	}
	if err := ip.o.hook(contract.OpJournalRemove); err != nil {
		return err
	}
	if err := ip.ctl.Remove(layout.InPlaceJournal); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return contract.Errorf(contract.CodeIO, "remove journal: %w", err)
	}
	if err := ip.ctl.Sync(); err != nil {
		return contract.Errorf(contract.CodeIO, "sync %s: %w", ip.ctl.Path(), err)
	}
	if err := ip.ctl.Chmod(rootMode); err != nil {
		return contract.Errorf(contract.CodeIO, "give the backup its mode: %w", err)
	}
	// Durability: the mode before the marks go (settleWorkingCopy's reason).
	if err := ip.ctl.Sync(); err != nil {
		return contract.Errorf(contract.CodeIO, "sync %s: %w", ip.ctl.Path(), err)
	}
	for _, n := range []string{layout.WorkingCopyMarker, layout.BackupMark} {
		if err := ip.ctl.Remove(n); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return contract.Errorf(contract.CodeIO, "settle the backup: %w", err)
		}
	}
	if err := ip.ctl.Sync(); err != nil {
		return contract.Errorf(contract.CodeIO, "sync %s: %w", ip.ctl.Path(), err)
	}
	return nil
}
