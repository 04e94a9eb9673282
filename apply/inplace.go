package apply

import (
	"bytes"
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
	if err := s.o.hook("journal"); err != nil {
		return err
	}
	if err := s.writeJournal(s.j); err != nil {
		return err
	}
	s.journaled = true
	return nil
}

func (s *inPlaceSwitch) switchIn() error {
	if err := s.o.hook("switch_in_place"); err != nil {
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
		if err := ip.o.hook("switch_entry"); err != nil {
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
	if err := ip.o.hook("backup"); err != nil {
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
	if err := ip.o.hook("journal_remove"); err != nil {
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

// recoverInPlace finishes or undoes what an interrupted in-place switch of ds left (the
// protocol above) and reports an apply it finished as exchanged, with its journal's plan
// fingerprint. Only private directories of root's with this repository's marker are touched.
func recoverInPlace(ds string, o Options) (recovery, error) {
	pdir, err := repofs.OpenDir(filepath.Dir(ds))
	if err != nil {
		return recovery{}, contract.Errorf(contract.CodeIO, "open %s: %w", filepath.Dir(ds), err)
	}
	defer pdir.Close()
	dsDir, err := repofs.OpenDir(ds)
	if err != nil {
		return recovery{}, contract.Errorf(contract.CodeIO, "open %s: %w", ds, err)
	}
	defer dsDir.Close()
	ip := &inPlace{ds: ds, base: filepath.Base(ds), pdir: pdir, dsDir: dsDir, o: o}
	found, err := ip.findPrivate()
	if err != nil {
		return recovery{}, err
	}
	var rec recovery
	for _, f := range found {
		r, err := ip.recoverOne(f)
		f.dir.Close()
		if err != nil {
			return recovery{}, err
		}
		if r.exchanged {
			rec = r
		}
	}
	return rec, ip.clearMarks()
}

// clearMarks removes the marks a power cut left in a backup that already has its mode (the
// mode is durable before the marks go, and a directory that is not private any more is not
// found by findPrivate): only root's own files of those names, at the backup's two places.
func (ip *inPlace) clearMarks() error {
	for _, c := range []struct {
		d    *repofs.Dir
		name string
	}{{ip.dsDir, layout.InPlaceBak}, {ip.pdir, ip.base + layout.SuffixBak}} {
		info, err := c.d.Lstat(c.name)
		if err != nil || !info.IsDir() || info.UID != 0 || info.Perm()&0o077 == 0 {
			continue
		}
		b, err := c.d.OpenSubdir(c.name)
		if err != nil {
			continue
		}
		removed := false
		for _, m := range []string{layout.WorkingCopyMarker, layout.BackupMark} {
			data, mInfo, err := b.ReadPrivate(m)
			if err != nil || m == layout.WorkingCopyMarker && !bytes.Equal(data, markerContent(ip.ds)) && !allZero(data) {
				continue
			}
			if err := b.RemoveIfSame(m, mInfo); err != nil {
				b.Close()
				return contract.Errorf(contract.CodeIO, "settle the backup %s: %w", filepath.Join(c.d.Path(), c.name), err)
			}
			removed = true
		}
		if removed {
			if err := b.Sync(); err != nil {
				b.Close()
				return contract.Errorf(contract.CodeIO, "sync %s: %w", b.Path(), err)
			}
		}
		b.Close()
	}
	return nil
}

// privateDir is a directory of this tool's found by findPrivate.
type privateDir struct {
	dir  *repofs.Dir
	loc  location
	info repofs.Info
}

// findPrivate lists the private directories of root's that carry this repository's marker:
// inside the repository under any name (a member of the token group may have renamed one), and
// the backup beside it while an in-place apply has not settled it. An empty private directory
// counts only at layout.InPlaceTmp (made, the run stopped before its marker).
func (ip *inPlace) findPrivate() ([]privateDir, error) {
	var out []privateDir
	names, err := ip.dsDir.ReadDirNames(".")
	if err != nil {
		return nil, contract.Errorf(contract.CodeIO, "read %s: %w", ip.ds, err)
	}
	type cand struct {
		d   *repofs.Dir
		loc location
	}
	cands := []cand{{ip.pdir, location{Beside: true, Name: ip.base + layout.SuffixBak}}}
	for _, n := range names {
		cands = append(cands, cand{ip.dsDir, location{Name: n}})
	}
	for _, c := range cands {
		info, err := c.d.Lstat(c.loc.Name)
		if err != nil || !info.IsDir() || info.UID != 0 || info.Perm()&0o077 != 0 {
			continue
		}
		wc, err := ownWorkingCopy(c.d, c.loc.Name, ip.ds)
		if err != nil {
			continue
		}
		if !exists(wc, layout.WorkingCopyMarker) && (c.loc.Beside || c.loc.Name != layout.InPlaceTmp) {
			wc.Close()
			continue
		}
		out = append(out, privateDir{dir: wc, loc: c.loc, info: info})
	}
	return out, nil
}

// recoverOne goes on with one private directory: resume its journal, settle it as the backup,
// or remove it as a working copy nothing was switched from.
func (ip *inPlace) recoverOne(f privateDir) (recovery, error) {
	raw, _, jerr := f.dir.ReadPrivate(layout.InPlaceJournal)
	var j inPlaceJournal
	switch {
	case jerr == nil && !allZero(raw):
		if err := json.Unmarshal(raw, &j); err != nil || j.State != "apply" && j.State != "rollback" || filepath.Base(j.Datastore) != ip.base {
			return recovery{}, &contract.Error{Code: contract.CodeCorruptRepository, Message: fmt.Sprintf("the journal in %s is not readable: check %s by hand", f.loc.path(ip.ds), ip.ds)}
		}
	case jerr != nil && !errors.Is(jerr, fs.ErrNotExist):
		return recovery{}, contract.Errorf(contract.CodeCorruptRepository, "journal in %s: %w", f.loc.path(ip.ds), jerr)
	case exists(f.dir, layout.BackupMark):
		return recovery{}, ip.settleFound(f)
	case f.loc.Beside:
		// Beside the repository only an apply's backup is ever private, and it has its
		// journal or its mark: this one is left alone.
		if o := ip.o; o.warn != nil {
			o.warn(fmt.Sprintf("%s is a root-only directory marked as a working copy of %s, without a journal: left alone; check it", f.loc.path(ip.ds), ip.ds))
		}
		return recovery{}, nil
	default:
		// No journal (or one whose data never reached the disk: nothing was switched, as the
		// switch waits for it): a working copy or a rollback's control directory, removed.
		return recovery{}, removeWorkingCopy(f.loc.dir(ip), f.loc.Name, f.dir)
	}
	ip.ctl, ip.ctlName, ip.ctlInfo = f.dir, f.loc.Name, f.info
	if f.loc.Beside {
		// Only the backup of an apply is ever beside the repository, after the switch.
		if j.State != "apply" {
			return recovery{}, &contract.Error{Code: contract.CodeCorruptRepository, Message: fmt.Sprintf("%s holds a rollback's journal: check it by hand", f.loc.path(ip.ds))}
		}
		if err := ip.switchAll(j, f.dir, true); err != nil {
			return recovery{}, err
		}
		return recovery{exchanged: true, j: journal{PlanFingerprint: j.PlanFingerprint}}, ip.settleFound(f)
	}
	if j.State == "rollback" {
		return recovery{}, ip.resumeRollback(j)
	}
	// Every entry judged by content, wherever the directory is now.
	if err := ip.switchAll(j, f.dir, true); err != nil {
		return recovery{}, err
	}
	if f.loc != j.Dest {
		if err := ip.moveCtl(j.Dest); err != nil {
			return recovery{}, err
		}
	}
	if err := ip.settleBackup(ip.backupMode()); err != nil {
		return recovery{}, err
	}
	return recovery{exchanged: true, j: journal{PlanFingerprint: j.PlanFingerprint}}, nil
}

// backupMode is the mode the backup of an in-place apply gets: what the token's directory
// allows, from the repository's own (which the in-place switch leaves as it was).
func (ip *inPlace) backupMode() uint32 {
	mode := uint32(repofs.DirMode)
	if self, err := ip.dsDir.Lstat("."); err == nil {
		mode, _ = newCopyModes(self.GID, nil).mode(repofs.Entry{Rel: ".", Mode: self.Mode, GID: self.GID})
	}
	return mode
}

// settleFound settles a found backup (journal gone or to go).
func (ip *inPlace) settleFound(f privateDir) error {
	ip.ctl, ip.ctlName, ip.ctlInfo = f.dir, f.loc.Name, f.info
	return ip.settleBackup(ip.backupMode())
}

// resumeRollback finishes an interrupted in-place rollback: every entry judged by content
// against the backup (or, once it was renamed, against where it went), the backup renamed, the
// control directory removed.
func (ip *inPlace) resumeRollback(j inPlaceJournal) error {
	src := j.Source
	if !exists(src.dir(ip), src.Name) {
		src = j.Dest
	}
	sd, err := src.dir(ip).OpenSubdir(src.Name)
	if err != nil {
		return &contract.Error{Code: contract.CodeCorruptRepository, Message: fmt.Sprintf("an in-place rollback of %s was interrupted and neither %s nor %s is there: check them by hand", ip.ds, j.Source.path(ip.ds), j.Dest.path(ip.ds)), Err: err}
	}
	defer sd.Close()
	if err := ip.switchAll(j, sd, true); err != nil {
		return err
	}
	return ip.finishRollback(j, src)
}

// finishRollback renames the source (which holds the migrated files now) to the journal's
// destination unless it is there, then removes the journal and the control directory.
func (ip *inPlace) finishRollback(j inPlaceJournal, at location) error {
	if at != j.Dest {
		if err := at.dir(ip).RenameNoReplaceTo(at.Name, j.Dest.dir(ip), j.Dest.Name); err != nil {
			return contract.Errorf(contract.CodeIO, "keep the migrated files as %s: %w", j.Dest.path(ip.ds), err)
		}
		// Durability: the rename before the journal goes.
		if err := at.dir(ip).Sync(); err != nil {
			return contract.Errorf(contract.CodeIO, "sync: %w", err)
		}
		if err := j.Dest.dir(ip).Sync(); err != nil {
			return contract.Errorf(contract.CodeIO, "sync: %w", err)
		}
	}
	if err := ip.o.hook("journal_remove"); err != nil {
		return err
	}
	if err := removeWorkingCopy(ip.dsDir, ip.ctlName, ip.ctl); err != nil {
		return contract.Errorf(contract.CodeIO, "remove the rollback's journal: %w", err)
	}
	if err := ip.dsDir.Sync(); err != nil {
		return contract.Errorf(contract.CodeIO, "sync %s: %w", ip.ds, err)
	}
	return nil
}

// inPlaceBackup finds the backup an in-place rollback switches back: inside the repository
// (layout.InPlaceBak), or beside it when the repository cannot be exchanged (or a test forces
// the in-place switch). ok is false when rollback is the ordinary exchange.
func inPlaceBackup(pdir, dsDir *repofs.Dir, ds, force string) (location, bool) {
	if exists(dsDir, layout.InPlaceBak) {
		return location{Name: layout.InPlaceBak}, true
	}
	base := filepath.Base(ds)
	if !exists(pdir, base+layout.SuffixBak) {
		return location{}, false
	}
	if force != "" {
		return location{Beside: true, Name: base + layout.SuffixBak}, true
	}
	if why, _, err := pdir.ExchangeBlocker(base); err == nil && why != "" {
		return location{Beside: true, Name: base + layout.SuffixBak}, true
	}
	return location{}, false
}

// rollbackInPlace switches the backup's files back into the repository one by one (the
// in-place protocol with a control directory that holds only the journal), then keeps the
// migrated files as <ds>_ROLLED_BACK beside it or PKCSTOK_MIGRATE_ROLLED_BACK inside it.
func rollbackInPlace(pdir *repofs.Dir, ds string, src location, o Options, res *contract.Result) error {
	dsDir, err := repofs.OpenDir(ds)
	if err != nil {
		return contract.Errorf(contract.CodeIO, "open %s: %w", ds, err)
	}
	defer dsDir.Close()
	ip := &inPlace{ds: ds, base: filepath.Base(ds), pdir: pdir, dsDir: dsDir, ctlName: layout.InPlaceTmp, o: o}
	dest := location{Name: layout.InPlaceRolledBack}
	if src.Beside {
		dest = location{Beside: true, Name: ip.base + layout.SuffixRolledBack}
	}
	if exists(dest.dir(ip), dest.Name) {
		return &contract.Error{Code: contract.CodeBackupExists, Message: fmt.Sprintf("%s exists from an earlier rollback: remove it first", dest.path(ds))}
	}
	if src.Beside {
		// The backup holds the migrated files afterwards and is renamed: one the file
		// system cannot rename (an image's layer, once the container was committed) is
		// refused before anything is switched.
		if why, _, err := pdir.ExchangeBlocker(src.Name); err == nil && why != "" {
			return &contract.Error{Code: contract.CodeCannotSwitch, Message: fmt.Sprintf("the backup %s cannot be renamed (%s): nothing was rolled back; copy it through the overlay first (cp -a %[1]s %[1]s.new && rm -rf %[1]s && mv %[1]s.new %[1]s) and run rollback again", src.path(ds), why)}
		}
	}
	bakInfo, err := loadableBackup(src.dir(ip), src.Name, ds)
	if err != nil {
		return err
	}
	bd, err := src.dir(ip).OpenSubdir(src.Name)
	if err != nil {
		return contract.Errorf(contract.CodeIO, "open %s: %w", src.path(ds), err)
	}
	defer bd.Close()
	if info, err := bd.Lstat("."); err != nil || !repofs.Same(info, bakInfo) {
		return &contract.Error{Code: contract.CodeVerifyFailed, Message: fmt.Sprintf("%s changed while rollback checked it: someone else renames entries there; check it", src.path(ds))}
	}
	self, err := dsDir.Lstat(".")
	if err != nil {
		return contract.Errorf(contract.CodeIO, "stat %s: %w", ds, err)
	}
	ctl, ctlInfo, err := makeWorkingCopy(dsDir, layout.InPlaceTmp, ds, self.GID)
	if err != nil {
		return err
	}
	defer ctl.Close()
	ip.ctl, ip.ctlInfo = ctl, ctlInfo
	j := inPlaceJournal{State: "rollback", Datastore: ds, Source: src, Dest: dest}
	if j.Entries, err = switchEntries(dsDir, bd, false); err != nil {
		_ = removeWorkingCopy(dsDir, layout.InPlaceTmp, ctl)
		return err
	}
	if err := ip.writeJournal(j); err != nil {
		_ = removeWorkingCopy(dsDir, layout.InPlaceTmp, ctl)
		return err
	}
	if err := o.hook("rollback_exchange"); err != nil {
		return err
	}
	if err := ip.switchAll(j, bd, false); err != nil {
		return err
	}
	res.Steps = append(res.Steps, contract.OpSwitchInPlace)
	if err := o.hook("rollback_rename"); err != nil {
		return err
	}
	if info, err := src.dir(ip).Lstat(src.Name); err != nil || !repofs.Same(info, bakInfo) {
		return &contract.Error{Code: contract.CodeVerifyFailed, Message: fmt.Sprintf("%s is not the backup rollback switched from any more: someone else renames entries there; check it (run rollback again)", src.path(ds))}
	}
	if err := ip.finishRollback(j, src); err != nil {
		return err
	}
	res.Steps = append(res.Steps, contract.OpKeepMigrated)
	res.RepositoryChanged = true
	res.Backup = &contract.Backup{Datastore: dest.path(ds)}
	return nil
}
