package apply

import (
	"strings"

	"github.com/ocktools/pkcstok-migrate/internal/procscan"
	"github.com/ocktools/pkcstok-migrate/internal/repofs"
)

// removeShm deletes the token's shared-memory segment under every spelling a token library
// could have used for the datastore (spec §8.5); a missing segment is fine.
func removeShm(ds string, o Options) {
	d, err := repofs.OpenDir(o.ShmDir)
	if err != nil {
		return
	}
	defer d.Close()
	for _, n := range procscan.ShmNames(ds) {
		name := strings.TrimPrefix(n, "/")
		if name == "" || strings.Contains(name, "/") {
			continue
		}
		_ = d.Remove(name)
	}
}
