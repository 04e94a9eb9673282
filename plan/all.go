package plan

import (
	"fmt"
	"path/filepath"
)

// MakeAll plans every slot of the conf whose token type can be migrated, each with its own
// repository directory (the slot's tokname or default directory). The same PINs, when given,
// are tried on every slot; slots the tool cannot plan are listed as skipped with the reason.
func MakeAll(o Options) (*Multi, error) {
	confdir, err := filepath.Abs(o.Confdir)
	if err != nil {
		return nil, Errorf(CodeBadRequest, "confdir %s: %w", o.Confdir, err)
	}
	cf, _, err := ReadConf(confdir)
	if err != nil {
		return nil, err
	}
	m := &Multi{FormatVersion: FormatVersion, Plans: []Plan{}, Skipped: []SkippedSlot{}}
	slots, err := cf.Slots()
	if err != nil {
		return nil, Errorf(CodeConfInvalid, "%s: %w", filepath.Join(confdir, ConfName), err)
	}
	for _, s := range slots {
		if !s.Type.Supported() {
			m.Skipped = append(m.Skipped, SkippedSlot{Slot: s.ID, Stdll: s.Stdll, Reason: "unsupported token type"})
			continue
		}
		so := o
		so.Slot = s.ID
		so.Datastore = ""
		so.Confdir = confdir
		p, err := Make(so)
		if err != nil {
			m.Skipped = append(m.Skipped, SkippedSlot{Slot: s.ID, Stdll: s.Stdll, Reason: fmt.Sprintf("%s: %v", CodeOf(err), err)})
			continue
		}
		m.Plans = append(m.Plans, *p)
		m.Changed = m.Changed || p.Changed
	}
	return m, nil
}
