package apply

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"

	"github.com/ocktools/pkcstok-migrate/contract"
	"github.com/ocktools/pkcstok-migrate/internal/conf"
	"github.com/ocktools/pkcstok-migrate/internal/layout"
	"github.com/ocktools/pkcstok-migrate/internal/repofs"
)

// checkConfBackup refuses a conf backup that is not ours: one equal to the current conf was
// left by an interrupted run and may be replaced.
func checkConfBackup(confdir string) error {
	d, err := repofs.OpenDir(confdir)
	if err != nil {
		return contract.Errorf(contract.CodeIO, "open %s: %w", confdir, err)
	}
	defer d.Close()
	// conf.WriteIfUnchanged refuses a temp file that is not a regular file: find that out before the
	// repository is switched, not after.
	if info, err := d.Lstat(conf.TempName); err == nil && !info.IsRegular() {
		return &contract.Error{Code: contract.CodeBackupExists, Message: fmt.Sprintf("%s exists and is not a regular file: remove it before migrating", filepath.Join(confdir, conf.TempName))}
	}
	bak, err := d.ReadFileAnyLinks(layout.ConfBakName)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return contract.Errorf(contract.CodeBackupExists, "conf backup %s: %w", filepath.Join(confdir, layout.ConfBakName), err)
	}
	cur, err := d.ReadFileAnyLinks(layout.ConfName)
	if err != nil {
		return contract.Errorf(contract.CodeIO, "read conf: %w", err)
	}
	if !bytes.Equal(bak, cur) {
		return &contract.Error{Code: contract.CodeBackupExists, Message: fmt.Sprintf("config file backup %s already exists: remove it before migrating", filepath.Join(confdir, layout.ConfBakName))}
	}
	return nil
}
