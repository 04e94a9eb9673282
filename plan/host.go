package plan

import (
	"fmt"
	"path/filepath"

	"github.com/ocktools/pkcstok-migrate/contract"
	"github.com/ocktools/pkcstok-migrate/internal/conf"
	"github.com/ocktools/pkcstok-migrate/internal/layout"
)

// MakeHost plans several slots of one conf, each with its own PINs (a host): every slot's
// plan, the one conf edit they make together, and the space they need together on each file
// system. It never writes. A slot that cannot be planned fails the whole host plan, naming the
// slot: apply would refuse it before any work.
func MakeHost(confdir string, slots []Options) (*contract.HostPlan, error) {
	if err := CheckHostSlots(slots); err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(confdir)
	if err != nil {
		return nil, contract.Errorf(contract.CodeBadRequest, "confdir %s: %w", confdir, err)
	}
	hp := &contract.HostPlan{FormatVersion: contract.FormatVersion, Confdir: abs, Conf: filepath.Join(abs, layout.ConfName), Plans: []contract.Plan{}, Warnings: []string{}}
	var confBytes []byte
	var ids []int
	for _, o := range slots {
		o.Confdir = abs
		p, insp, err := MakeWithKeys(o)
		if err != nil {
			return nil, SlotError(o.Slot, err)
		}
		if insp.Keys != nil {
			insp.Keys.Wipe()
		}
		confBytes = insp.Conf
		hp.Plans = append(hp.Plans, *p)
		hp.Changed = hp.Changed || p.Changed
		if insp.Edit.Changes() {
			ids = append(ids, o.Slot)
		}
	}
	if _, hp.ConfDiff, err = HostConf(hp.Conf, confBytes, ids); err != nil {
		return nil, err
	}
	hp.Space = HostSpace(hp.Plans)
	for _, s := range hp.Space {
		if w := spaceShort(s); w != "" {
			hp.Warnings = append(hp.Warnings, w+": apply would refuse before any work")
		}
	}
	return hp, nil
}

// CheckHostSlots refuses a host request apply could not carry out as one run: no slot, a slot
// twice, two slots with one repository.
func CheckHostSlots(slots []Options) error {
	if len(slots) == 0 {
		return &contract.Error{Code: contract.CodeBadRequest, Field: "slots", Message: "slots is empty"}
	}
	seen, ds := map[int]bool{}, map[string]int{}
	for _, o := range slots {
		if seen[o.Slot] {
			return &contract.Error{Code: contract.CodeBadRequest, Field: "slots", Message: fmt.Sprintf("slot %d is named twice", o.Slot)}
		}
		seen[o.Slot] = true
		if o.Datastore != "" {
			d := filepath.Clean(o.Datastore)
			if other, ok := ds[d]; ok {
				return &contract.Error{Code: contract.CodeBadRequest, Field: "slots", Message: fmt.Sprintf("slots %d and %d name the same datastore %s", other, o.Slot, d)}
			}
			ds[d] = o.Slot
		}
	}
	return nil
}

// SlotError names the slot in err's message and details, keeping its code.
func SlotError(slot int, err error) *contract.Error {
	return contract.WithDetail(err, fmt.Sprintf("slot %d: ", slot), "slot", slot)
}

// HostConf is the conf confBytes with tokversion = 3.12 set for every slot of ids, in one
// text, and its unified diff.
func HostConf(name string, confBytes []byte, ids []int) ([]byte, string, error) {
	content := confBytes
	for _, id := range ids {
		cf, err := conf.Parse(name, content)
		if err != nil {
			return nil, "", contract.Errorf(contract.CodeConfInvalid, "%s: %w", name, err)
		}
		e, err := cf.SetTokVersion(uint64(id))
		if err != nil {
			return nil, "", contract.Errorf(contract.CodeConfInvalid, "%s: slot %d: %w", name, id, err)
		}
		content = e.Content
	}
	return content, conf.Diff(confBytes, content), nil
}

// HostSpace sums the slots' needs per file system (two slots, or a slot and the conf, on one
// file system are counted together), with the margin on the sum.
func HostSpace(plans []contract.Plan) []contract.Space {
	var out []contract.Space
	for _, p := range plans {
		for _, s := range p.Space {
			i := 0
			for i < len(out) && out[i].Device != s.Device {
				i++
			}
			if i == len(out) {
				n := s
				n.For = append([]string{}, s.For...)
				out = append(out, n)
				continue
			}
			o := &out[i]
			o.NeedBytes += s.NeedBytes
			o.NeedInodes += s.NeedInodes
			for _, f := range s.For {
				if !contains(o.For, f) {
					o.For = append(o.For, f)
				}
			}
		}
	}
	for i := range out {
		settle(&out[i])
	}
	return out
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

// HostSpaceError is apply's refusal of a host whose file systems lack room together.
func HostSpaceError(spaces []contract.Space) error {
	return SpaceError(&contract.Plan{Space: spaces})
}
