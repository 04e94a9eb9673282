package apply

import (
	"fmt"
	"path/filepath"

	"github.com/ocktools/pkcstok-migrate/contract"
	"github.com/ocktools/pkcstok-migrate/internal/layout"
	"github.com/ocktools/pkcstok-migrate/internal/repofs"
)

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
	if err := o.hook(contract.OpRollbackExchange); err != nil {
		return err
	}
	if err := ip.switchAll(j, bd, false); err != nil {
		return err
	}
	res.Steps = append(res.Steps, contract.OpSwitchInPlace)
	if err := o.hook(contract.OpRollbackRename); err != nil {
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
