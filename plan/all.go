package plan

import (
	"fmt"
	"path/filepath"

	"github.com/ocktools/pkcstok-migrate/contract"
	"github.com/ocktools/pkcstok-migrate/internal/layout"
)

// MakeAll plans every slot of the conf whose token type can be migrated, each with its own
// repository directory (the slot's tokname or default directory). The same PINs, when given,
// are tried on every slot; slots the tool cannot plan are listed as skipped with the reason.
func MakeAll(o Options) (*contract.Multi, error) {
	confdir, err := filepath.Abs(o.Confdir)
	if err != nil {
		return nil, contract.Errorf(contract.CodeBadRequest, "confdir %s: %w", o.Confdir, err)
	}
	cf, _, err := ReadConf(confdir)
	if err != nil {
		return nil, err
	}
	m := &contract.Multi{FormatVersion: contract.FormatVersion, Plans: []contract.Plan{}, Skipped: []contract.SkippedSlot{}}
	slots, err := cf.Slots()
	if err != nil {
		return nil, contract.Errorf(contract.CodeConfInvalid, "%s: %w", filepath.Join(confdir, layout.ConfName), err)
	}
	for _, s := range slots {
		if !s.Type.Supported() {
			m.Skipped = append(m.Skipped, contract.SkippedSlot{Slot: s.ID, Stdll: s.Stdll, Reason: "unsupported token type"})
			continue
		}
		so := o
		so.Slot = s.ID
		so.Datastore = ""
		so.Confdir = confdir
		p, err := Make(so)
		if err != nil {
			m.Skipped = append(m.Skipped, contract.SkippedSlot{Slot: s.ID, Stdll: s.Stdll, Reason: fmt.Sprintf("%s: %v", contract.CodeOf(err), err)})
			continue
		}
		m.Plans = append(m.Plans, *p)
		m.Changed = m.Changed || p.Changed
	}
	return m, nil
}
