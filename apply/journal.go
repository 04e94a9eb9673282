package apply

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"

	json "github.com/goccy/go-json"

	"github.com/ocktools/pkcstok-migrate/internal/repofs"
	"github.com/ocktools/pkcstok-migrate/plan"
	"github.com/ocktools/pkcstok-migrate/tokens"
)

// journal records that a run reached the switch, so a rerun after a crash knows which of
// the repository and the working copy is which.
type journal struct {
	State     string `json:"state"` // "exchanging"
	Datastore string `json:"datastore"`
	Tmp       string `json:"tmp"`
	Bak       string `json:"bak"`
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
