package apply

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"

	json "github.com/goccy/go-json"

	"github.com/ocktools/pkcstok-migrate/contract"
	"github.com/ocktools/pkcstok-migrate/internal/layout"
	"github.com/ocktools/pkcstok-migrate/internal/repofs"
)

// exchangeSwitch is the switch wherever the file system can do it: the working copy is built
// beside the repository (<ds>_PKCSTOK_MIGRATE_TMP) and one RENAME_EXCHANGE of the two
// directories switches it in; the original, now at the working copy's name, becomes
// <ds>_BAK. Before the exchange any failure removes the working copy (the one this run made,
// checked by its device and inode) and leaves the original untouched.
type exchangeSwitch struct {
	m        *migration
	base     string // the repository's name in its parent
	wc       *repofs.Dir
	wcInfo   repofs.Info
	jInfo    *repofs.Info // the journal this run wrote
	switched bool         // the exchange happened, or its failure must be left for a rerun
}

func newExchangeSwitch(m *migration) *exchangeSwitch {
	return &exchangeSwitch{m: m, base: filepath.Base(m.p.Datastore)}
}

func (x *exchangeSwitch) tmpName() string { return x.base + layout.SuffixTmp }

func (x *exchangeSwitch) backupFree() error {
	if _, err := x.m.pdir.Lstat(x.base + layout.SuffixBak); err == nil {
		return &contract.Error{Code: contract.CodeBackupExists, Message: fmt.Sprintf("datastore backup %s already exists: remove it before migrating", x.m.p.Datastore+layout.SuffixBak)}
	}
	return nil
}

func (x *exchangeSwitch) makeWorkingCopy() (*repofs.Dir, error) {
	wc, info, err := makeWorkingCopy(x.m.pdir, x.tmpName(), x.m.p.Datastore, x.m.perm.GID)
	if err != nil {
		return nil, err
	}
	x.wc, x.wcInfo = wc, info
	return wc, nil
}

// journal writes the journal (a new file only root can read or write) and makes it and the
// working copy durable before the exchange can be: otherwise a power cut could leave the
// exchange with an incomplete repository or an empty journal that no rerun can read. One
// syncfs makes both durable.
func (x *exchangeSwitch) journal() error {
	p, pdir := x.m.p, x.m.pdir
	j, _ := json.Marshal(journal{State: "exchanging", Datastore: p.Datastore, Tmp: p.Datastore + layout.SuffixTmp, Bak: p.Datastore + layout.SuffixBak, PlanFingerprint: p.Fingerprint})
	if err := x.m.o.hook(contract.OpJournal); err != nil {
		return err
	}
	info, err := pdir.CreatePrivate(x.base+layout.SuffixJournal, j)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return &contract.Error{Code: contract.CodeCorruptRepository, Message: fmt.Sprintf("%s appeared while apply ran: someone else creates entries in %s", p.Datastore+layout.SuffixJournal, pdir.Path()), Err: err}
		}
		return contract.Errorf(contract.CodeIO, "write journal: %w", err)
	}
	x.jInfo = &info
	if syncJournal {
		if err := pdir.Syncfs(); err != nil {
			return contract.Errorf(contract.CodeIO, "sync journal: %w", err)
		}
	}
	// Durability: the journal's name before the exchange (covered by the fsync after the
	// exchange: one directory's changes reach the disk in order).
	if err := pdir.Sync(); err != nil {
		return contract.Errorf(contract.CodeIO, "sync %s: %w", pdir.Path(), err)
	}
	return nil
}

func (x *exchangeSwitch) switchIn() error {
	if err := x.m.o.hook(contract.OpExchange); err != nil {
		return err
	}
	if err := exchangeVerified(x.m.pdir, x.base, x.tmpName(), x.m.o.orig, x.wcInfo); err != nil {
		x.switched = errors.Is(err, errUnsettled) // then nothing is removed: the journal says what is where
		return err
	}
	x.switched = true
	return nil
}

// keepBackup does what follows the exchange: the switched-in copy gets the token's mode and
// loses its marker, the original (now under the working copy's name) becomes <ds>_BAK, and
// the journal goes.
func (x *exchangeSwitch) keepBackup() error {
	p, o, pdir := x.m.p, x.m.o, x.m.pdir
	tmpName, bakName := x.tmpName(), x.base+layout.SuffixBak
	// Durability: the exchange, so that "the repository is migrated" holds after a power
	// cut should the next step fail (covered by the next fsync when it does not).
	if err := pdir.Sync(); err != nil {
		return contract.Errorf(contract.CodeIO, "sync %s (the repository is migrated; run apply again): %w", pdir.Path(), err)
	}
	// Durability: the mode and the marker's removal before the journal that would redo them
	// goes (settleWorkingCopy syncs the directory).
	if err := settleWorkingCopy(x.wc, x.m.rootMode); err != nil {
		return contract.Errorf(contract.CodeIO, "give %s its mode (the repository is migrated; run apply again): %w", p.Datastore, err)
	}
	if err := o.hook(contract.OpBackup); err != nil {
		return err
	}
	if info, err := pdir.Lstat(tmpName); err != nil || !repofs.Same(info, o.orig) {
		return &contract.Error{Code: contract.CodeVerifyFailed, Message: fmt.Sprintf("the repository is migrated, but the original was moved away from %s by someone else before it could become %s: find it in %s", p.Datastore+layout.SuffixTmp, p.Datastore+layout.SuffixBak, pdir.Path())}
	}
	if err := pdir.RenameNoReplace(tmpName, bakName); err != nil {
		return contract.Errorf(contract.CodeIO, "rename the original to %s (the repository is migrated; run apply again): %w", p.Datastore+layout.SuffixBak, err)
	}
	// Durability: the original's new name (covered by the next fsync).
	if err := pdir.Sync(); err != nil {
		return contract.Errorf(contract.CodeIO, "sync %s: %w", pdir.Path(), err)
	}
	if err := o.hook(contract.OpJournalRemove); err != nil {
		return err
	}
	if err := pdir.RemoveIfSame(x.base+layout.SuffixJournal, *x.jInfo); err != nil {
		return contract.Errorf(contract.CodeIO, "remove journal: %w", err)
	}
	// Durability: the whole switch before the conf says 3.12 (the conf lives in another
	// directory, whose fsync covers nothing here), and no journal left after success.
	if err := pdir.Sync(); err != nil {
		return contract.Errorf(contract.CodeIO, "sync %s: %w", pdir.Path(), err)
	}
	return nil
}

func (x *exchangeSwitch) abandon() {
	if x.switched || x.wc == nil {
		return
	}
	_ = removeWorkingCopy(x.m.pdir, x.tmpName(), x.wc)
	if x.jInfo != nil {
		_ = x.m.pdir.RemoveIfSame(x.base+layout.SuffixJournal, *x.jInfo)
	}
}

// made: the original, which the locks held, is the backup.
func (x *exchangeSwitch) made() contract.Backup {
	return contract.Backup{Datastore: x.m.p.Datastore + layout.SuffixBak, DatastoreDev: x.m.o.orig.Dev, DatastoreIno: x.m.o.orig.Ino}
}

func (x *exchangeSwitch) close() {
	if x.wc != nil {
		x.wc.Close()
	}
}
