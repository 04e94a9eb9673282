package apply

import (
	"github.com/ocktools/pkcstok-migrate/contract"
	"github.com/ocktools/pkcstok-migrate/internal/repofs"
	"github.com/ocktools/pkcstok-migrate/plan"
)

func fingerprintNow(ds, confdir string) (string, error) {
	_, confBytes, err := plan.ReadConf(confdir)
	if err != nil {
		return "", err
	}
	d, err := repofs.OpenDir(ds)
	if err != nil {
		return "", contract.Errorf(contract.CodeIO, "open %s: %w", ds, err)
	}
	defer d.Close()
	fp, err := plan.Fingerprint(d, confBytes)
	if err != nil {
		return "", contract.Errorf(contract.CodeIO, "fingerprint %s: %w", ds, err)
	}
	return fp, nil
}
