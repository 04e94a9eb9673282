package apply

import (
	"strings"

	"github.com/ocktools/pkcstok-migrate/internal/procscan"
	"github.com/ocktools/pkcstok-migrate/internal/repofs"
)

// shmSegments are the token's shared-memory segments as found before anything is switched
// (doc/format.md §8.5): every name a token library could have used for the datastore that exists
// in the shared-memory directory, with its identity. The names are worked out, and the
// directory opened, while the repository is locked and before the switch; after the switch
// nothing is resolved again: remove unlinks an entry only if it still is the file found then.
// A member of the token group who swaps a symlink in at the datastore's name afterwards
// cannot make it name another token's segment.
type shmSegments struct {
	dir   *repofs.Dir
	found map[string]repofs.Info
}

// findShm looks the datastore's segments up in o.ShmDir. A missing directory or segment is
// fine: there is nothing to remove then.
func findShm(ds string, o Options) *shmSegments {
	s := &shmSegments{found: map[string]repofs.Info{}}
	d, err := repofs.OpenDir(o.ShmDir)
	if err != nil {
		return s
	}
	s.dir = d
	for _, n := range procscan.ShmNames(ds) {
		name := strings.TrimPrefix(n, "/")
		if name == "" || strings.Contains(name, "/") {
			continue
		}
		if info, err := d.Lstat(name); err == nil {
			s.found[name] = info
		}
	}
	return s
}

// remove unlinks each segment found, if its name is still that file.
func (s *shmSegments) remove() {
	if s == nil || s.dir == nil {
		return
	}
	for name, info := range s.found {
		_ = s.dir.RemoveIfSame(name, info)
	}
}

func (s *shmSegments) close() {
	if s != nil && s.dir != nil {
		s.dir.Close()
	}
}
