package apply

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	json "github.com/goccy/go-json"

	"github.com/ocktools/pkcstok-migrate/contract"
	"github.com/ocktools/pkcstok-migrate/internal/layout"
	"github.com/ocktools/pkcstok-migrate/internal/repofs"
	"github.com/ocktools/pkcstok-migrate/tokens"
)

// journal records that a run reached the switch, so a rerun after a crash knows which of
// the repository and the working copy is which. It is a file only root can read or write
// (repofs.CreatePrivate), and it is believed only as such (readJournal): a member of the
// token group can plant any file under its name, but not one of root's.
type journal struct {
	State     string `json:"state"` // "exchanging"
	Datastore string `json:"datastore"`
	Tmp       string `json:"tmp"`
	Bak       string `json:"bak"`
	// PlanFingerprint is the fingerprint of the state the working copy was made from: a saved
	// plan that a recovered switch carries out must be of that state.
	PlanFingerprint string `json:"plan_fingerprint,omitempty"`
}

// recovery is what recoverJournal found and did.
type recovery struct {
	// exchanged: the interrupted run had switched its working copy in, and the recovery
	// finished that switch; j is its journal.
	exchanged bool
	j         journal
	// foreign is the refusal of a journal this tool did not write: the run neither believes
	// nor touches it, compares a saved plan as always, and then refuses with it before any
	// work.
	foreign error
}

// recoverJournal finishes the switch of a run that was interrupted after it wrote its
// journal, and removes the working copy a run stopped before its switch left behind. Nothing
// it did not make (a journal of root's naming this repository, a working copy with its
// marker) is removed or renamed: anything else is refused and left alone.
func recoverJournal(ds string, o Options) (recovery, error) {
	parent, base := filepath.Dir(ds), filepath.Base(ds)
	pdir, err := repofs.OpenDir(parent)
	if err != nil {
		return recovery{}, contract.Errorf(contract.CodeIO, "open %s: %w", parent, err)
	}
	defer pdir.Close()
	raw, jInfo, err := pdir.ReadPrivate(base + layout.SuffixJournal)
	if errors.Is(err, fs.ErrNotExist) {
		return recovery{}, clearLeftover(pdir, base, ds)
	}
	if err != nil {
		if errors.Is(err, repofs.ErrNotOwn) || errors.Is(err, repofs.ErrSymlink) || errors.Is(err, repofs.ErrNotRegular) {
			return recovery{foreign: &contract.Error{Code: contract.CodeCorruptRepository, Message: fmt.Sprintf("%s is not a journal this tool wrote (%v): nothing was touched; remove it after checking %s and %s", ds+layout.SuffixJournal, err, ds, ds+layout.SuffixTmp), Err: err}}, nil
		}
		return recovery{}, contract.Errorf(contract.CodeIO, "read journal: %w", err)
	}
	var j journal
	// It names its repository by the same name in the same directory (a journal of another
	// token's renamed here does not; the directory may have been mounted elsewhere since).
	if err := json.Unmarshal(raw, &j); err != nil || j.State != "exchanging" || filepath.Base(j.Datastore) != base {
		// A journal of root's cut short (created, not yet written or not yet durable when the
		// power went or the run was killed: empty, or zeros) beside the original at the
		// repository path belongs to a run that never exchanged: the exchange waits until the
		// journal is durable. It goes, and the working copy is rebuilt
		// (crash/testdata/states/good_apply_journal_*).
		if !allZero(raw) || nvFormat(pdir, base) != tokens.FormatOld {
			return recovery{}, &contract.Error{Code: contract.CodeCorruptRepository, Message: fmt.Sprintf("journal %s is not readable: remove it after checking %s and %s", ds+layout.SuffixJournal, ds, ds+layout.SuffixTmp)}
		}
		if err := removeJournal(pdir, base, jInfo); err != nil {
			return recovery{}, err
		}
		return recovery{}, clearLeftover(pdir, base, ds)
	}
	exchanged, err := finishJournaled(pdir, base, ds)
	if err != nil {
		return recovery{}, err
	}
	if err := removeJournal(pdir, base, jInfo); err != nil {
		return recovery{}, err
	}
	return recovery{exchanged: exchanged, j: j}, nil
}

// finishJournaled brings the switch a journal describes to its end: back to the start when
// the exchange did not happen (the working copy, this tool's by its marker, is removed), or
// forward when it did (the switched-in copy settled, the original renamed to _BAK).
func finishJournaled(pdir *repofs.Dir, base, ds string) (exchanged bool, err error) {
	tmpName := base + layout.SuffixTmp
	if err := settleSwitched(pdir, base, ds); err != nil {
		return false, contract.Errorf(contract.CodeIO, "give %s its mode: %w", ds, err)
	}
	dsFormat, tmpFormat := nvFormat(pdir, base), nvFormat(pdir, tmpName)
	switch {
	case dsFormat == tokens.Format312 && tmpFormat == tokens.FormatOld:
		// Exchanged, not yet backed up.
		if _, err := pdir.Lstat(base + layout.SuffixBak); err == nil {
			return false, &contract.Error{Code: contract.CodeBackupExists, Message: fmt.Sprintf("%s exists: cannot move the original repository (now at %s) there", ds+layout.SuffixBak, ds+layout.SuffixTmp)}
		}
		if err := pdir.RenameNoReplace(tmpName, base+layout.SuffixBak); err != nil {
			return false, contract.Errorf(contract.CodeIO, "rename %s: %w", ds+layout.SuffixTmp, err)
		}
		exchanged = true
	case dsFormat == tokens.FormatOld:
		// Not exchanged: the working copy goes and is rebuilt by the new run.
		if err := clearLeftover(pdir, base, ds); err != nil {
			return false, err
		}
	case dsFormat == tokens.Format312 && tmpFormat == tokens.FormatUnknown:
		// Exchanged and backed up.
		exchanged = true
	default:
		return false, &contract.Error{Code: contract.CodeCorruptRepository, Message: fmt.Sprintf("journal %s: cannot tell %s (%s) from %s (%s): check them by hand", ds+layout.SuffixJournal, ds, dsFormat, ds+layout.SuffixTmp, tmpFormat)}
	}
	// Durability: the rename to _BAK before the journal goes (covered by the next fsync
	// under the crash model: one directory's changes reach the disk in order).
	if err := pdir.Sync(); err != nil {
		return false, contract.Errorf(contract.CodeIO, "sync %s: %w", pdir.Path(), err)
	}
	return exchanged, nil
}

// settleSwitched finishes settleWorkingCopy for a copy an interrupted run had switched in:
// the directory at the repository's name is root's and still holds this tool's marker. While
// the directory is private (root-only: nobody else can have touched it) it gets its mode, the
// one its original (now at the working copy's name) allows; the marker (root's own file) goes
// in any case: a power cut may have kept the mode and lost the marker's removal. Nothing else
// is changed: a directory without the marker is left as it is.
func settleSwitched(pdir *repofs.Dir, base, ds string) error {
	wc, err := pdir.OpenSubdir(base)
	if err != nil {
		return nil
	}
	defer wc.Close()
	self, err := wc.Lstat(".")
	if err != nil || self.UID != os.Geteuid() {
		return nil
	}
	marker, mInfo, err := wc.ReadPrivate(layout.WorkingCopyMarker)
	if err != nil || !bytes.Equal(marker, markerContent(ds)) && !allZero(marker) {
		return nil
	}
	if self.Perm()&0o077 == 0 {
		// Still private: nobody else can have touched it. The copy was given the token
		// group when it was made.
		mode := uint32(repofs.DirMode)
		if orig, err := pdir.Lstat(base + layout.SuffixTmp); err == nil {
			mode, _ = newCopyModes(self.GID, nil).mode(repofs.Entry{Rel: ".", Mode: orig.Mode, GID: orig.GID})
		}
		return settleWorkingCopy(wc, mode)
	}
	if err := wc.RemoveIfSame(layout.WorkingCopyMarker, mInfo); err != nil {
		return err
	}
	return wc.Sync()
}

// removeJournal removes the journal described by info (the file read, not whatever is at its
// name now) and makes that durable: the finished switch before the conf is edited to say 3.12.
func removeJournal(pdir *repofs.Dir, base string, info repofs.Info) error {
	if err := pdir.RemoveIfSame(base+layout.SuffixJournal, info); err != nil {
		return contract.Errorf(contract.CodeIO, "remove journal: %w", err)
	}
	if err := pdir.Sync(); err != nil {
		return contract.Errorf(contract.CodeIO, "sync %s: %w", pdir.Path(), err)
	}
	return nil
}

// allZero: b is empty or holds only NUL bytes (what a file whose data never reached the disk
// reads as).
func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
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
