package apply

import (
	"fmt"
	"path/filepath"

	"github.com/ocktools/pkcstok-migrate/contract"
	"github.com/ocktools/pkcstok-migrate/internal/conf"
	"github.com/ocktools/pkcstok-migrate/internal/layout"
	"github.com/ocktools/pkcstok-migrate/internal/repofs"
)

// checkConfTemp refuses, before anything is written, a temp file of the conf that
// conf.WriteIfUnchanged would refuse (not a regular file).
func checkConfTemp(confdir string) error {
	d, err := repofs.OpenDir(confdir)
	if err != nil {
		return contract.Errorf(contract.CodeIO, "open %s: %w", confdir, err)
	}
	defer d.Close()
	for _, name := range []string{conf.TempName, layout.ConfPrev} {
		if info, err := d.Lstat(name); err == nil && !info.IsRegular() {
			return &contract.Error{Code: contract.CodeBackupExists, Message: fmt.Sprintf("%s exists and is not a regular file: remove it before migrating", filepath.Join(confdir, name))}
		}
	}
	return nil
}
