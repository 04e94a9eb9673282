package apply

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"

	"github.com/ocktools/pkcstok-migrate/contract"
	"github.com/ocktools/pkcstok-migrate/internal/layout"
	"github.com/ocktools/pkcstok-migrate/internal/repofs"
	"github.com/ocktools/pkcstok-migrate/plan"
	"github.com/ocktools/pkcstok-migrate/tokens"
)

// RemoveBackups removes the backups of a migration that want names: the backup object an
// apply printed. Only an entry given with its identity (device and inode) is removed, and
// only while it still is that file: the state directory is the token group's to write, so a
// backup's name proves nothing (a member can rename the backup away and another directory to
// its name). The repository must be migrated (3.12) and must not itself be the backup. It
// takes the same locks as apply, but does not need pkcsslotd stopped: it touches nothing the
// token library uses.
func RemoveBackups(req plan.Options, want *contract.Backup) (*contract.Result, error) {
	if want == nil || want.Datastore == "" && want.Conf == "" {
		return nil, &contract.Error{Code: contract.CodeBadRequest, Field: "backup", Message: "remove-backups needs the backup object that apply printed (\"backup\" in the request)"}
	}
	ds, confdir, err := resolvePaths(req)
	if err != nil {
		return nil, err
	}
	unlock, _, infos, _, err := lockAll(confdir, []string{ds})
	if err != nil {
		return nil, err
	}
	defer unlock()
	live := infos[0]
	res := &contract.Result{Operation: "remove_backups", Slot: req.Slot, Datastore: ds, Conf: filepath.Join(confdir, layout.ConfName), Warnings: []string{}, Steps: []contract.Op{}, Removed: []string{}, Verified: true}
	if err := rollbackSlot(req, confdir, res); err != nil {
		return nil, err
	}
	pdir, err := repofs.OpenDir(filepath.Dir(ds))
	if err != nil {
		return nil, contract.Errorf(contract.CodeIO, "open %s: %w", filepath.Dir(ds), err)
	}
	defer pdir.Close()
	if f := nvFormat(pdir, filepath.Base(ds)); f != tokens.Format312 {
		return nil, &contract.Error{Code: contract.CodeBadRequest, Field: "backup", Message: fmt.Sprintf("%s is not a migrated (3.12) repository: its backups are kept", ds)}
	}
	if want.Datastore != "" {
		if err := removeRepositoryBackup(pdir, ds, live, want, res); err != nil {
			return nil, err
		}
	}
	if want.Conf != "" {
		if err := removeConfBackup(confdir, want, res); err != nil {
			return nil, err
		}
	}
	res.Changed = len(res.Removed) > 0
	if res.Fingerprint, err = fingerprintNow(ds, confdir); err != nil {
		return nil, err
	}
	return res, nil
}

// removeRepositoryBackup removes the repository's backup beside it (<ds>_BAK) or inside it
// (an in-place switch's), by identity.
func removeRepositoryBackup(pdir *repofs.Dir, ds string, live repofs.Info, want *contract.Backup, res *contract.Result) error {
	var in *repofs.Dir
	var name, scratch string
	switch filepath.Clean(want.Datastore) {
	case ds + layout.SuffixBak:
		in, name, scratch = pdir, filepath.Base(ds)+layout.SuffixBak, filepath.Base(ds)+layout.SuffixDiscard
	case filepath.Join(ds, layout.InPlaceBak):
		dsDir, err := repofs.OpenDir(ds)
		if err != nil {
			return contract.Errorf(contract.CodeIO, "open %s: %w", ds, err)
		}
		defer dsDir.Close()
		in, name, scratch = dsDir, layout.InPlaceBak, layout.InPlaceDiscard
	default:
		return &contract.Error{Code: contract.CodeBadRequest, Field: "backup", Message: fmt.Sprintf("%s is not a backup of %s (%s or %s)", want.Datastore, ds, ds+layout.SuffixBak, filepath.Join(ds, layout.InPlaceBak))}
	}
	if want.DatastoreDev == 0 && want.DatastoreIno == 0 {
		res.Warnings = append(res.Warnings, fmt.Sprintf("%s was not made by that run (no identity given): kept", want.Datastore))
		return nil
	}
	id := repofs.Info{Dev: want.DatastoreDev, Ino: want.DatastoreIno}
	if repofs.Same(id, live) {
		return &contract.Error{Code: contract.CodeVerifyFailed, Message: fmt.Sprintf("the backup named is the repository %s itself now: nothing was removed", ds)}
	}
	return recordRemoval(res, want.Datastore, contract.OpRemoveBackup, "the backup apply made (another directory is at that name now)",
		in.RemoveTreeIfSame(name, id, scratch))
}

// removeConfBackup removes opencryptoki.conf_BAK if it is the file apply made.
func removeConfBackup(confdir string, want *contract.Backup, res *contract.Result) error {
	path := filepath.Join(confdir, layout.ConfBakName)
	if filepath.Clean(want.Conf) != path {
		return &contract.Error{Code: contract.CodeBadRequest, Field: "backup", Message: fmt.Sprintf("%s is not the conf backup %s", want.Conf, path)}
	}
	if want.ConfDev == 0 && want.ConfIno == 0 {
		res.Warnings = append(res.Warnings, fmt.Sprintf("%s was not made by that run (no identity given): kept", path))
		return nil
	}
	cdir, err := repofs.OpenDir(confdir)
	if err != nil {
		return contract.Errorf(contract.CodeIO, "open %s: %w", confdir, err)
	}
	defer cdir.Close()
	return recordRemoval(res, path, contract.OpRemoveConfBackup, "the file apply made",
		cdir.RemoveIfSame(layout.ConfBakName, repofs.Info{Dev: want.ConfDev, Ino: want.ConfIno}))
}

// recordRemoval records in res what the removal by identity of path did (err is its
// outcome): removed (step op), gone already (a warning), or refused because another entry is
// at that name now, which is not what (verify_failed).
func recordRemoval(res *contract.Result, path string, op contract.Op, what string, err error) error {
	switch {
	case err == nil:
		res.Removed = append(res.Removed, path)
		res.Steps = append(res.Steps, op)
	case errors.Is(err, fs.ErrNotExist):
		res.Warnings = append(res.Warnings, fmt.Sprintf("%s does not exist (removed already?)", path))
	case errors.Is(err, repofs.ErrChanged):
		return &contract.Error{Code: contract.CodeVerifyFailed, Message: fmt.Sprintf("%s is not %s: it was left alone", path, what), Err: err}
	default:
		return contract.Errorf(contract.CodeIO, "remove %s: %w", path, err)
	}
	return nil
}
