package main

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/ocktools/pkcstok-migrate/apply"
	"github.com/ocktools/pkcstok-migrate/contract"
	"github.com/ocktools/pkcstok-migrate/plan"
)

// slotPlaceholder, in a --so-pin-file or --user-pin-file given with --slots, stands for each
// slot's number: one PIN file per slot.
const slotPlaceholder = "{slot}"

// slotsFromFlags makes the request's slots from --slots and the PIN file flags.
func slotsFromFlags(f *opFlags, req *contract.Request) error {
	if req.Slots != nil {
		return &contract.Error{Code: contract.CodeBadRequest, Field: "slots", Message: "slots is given both in the request and as --slots"}
	}
	if f.set["so-pin"] || f.set["user-pin"] {
		return &contract.Error{Code: contract.CodeBadRequest, Field: "slots", Message: "with --slots give PIN files (--so-pin-file, --user-pin-file, with {slot} for each slot's number) or a request, not --so-pin/--user-pin"}
	}
	for _, part := range strings.Split(f.slots, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(part))
		if err != nil || n < 0 || n > 1023 {
			return &contract.Error{Code: contract.CodeBadRequest, Field: "slots", Message: fmt.Sprintf("--slots %q: want numbers from 0 to 1023, separated by commas", f.slots)}
		}
		sr := contract.SlotRequest{Slot: n}
		if f.set["so-pin-file"] {
			sr.SOPINFile = strings.ReplaceAll(f.soPINFile, slotPlaceholder, strconv.Itoa(n))
		}
		if f.set["user-pin-file"] {
			sr.UserPINFile = strings.ReplaceAll(f.userPINFile, slotPlaceholder, strconv.Itoa(n))
		}
		req.Slots = append(req.Slots, sr)
	}
	return nil
}

// checkHostRequest refuses a request with slots that also has what a slot entry replaces.
func checkHostRequest(op string, req *contract.Request) error {
	switch {
	case req.Slot != nil || req.Datastore != "":
		return &contract.Error{Code: contract.CodeBadRequest, Field: "slots", Message: "slots replaces slot and datastore: give one or the other"}
	case req.SOPIN != "" || req.UserPIN != "" || req.SOPINFile != "" || req.UserPINFile != "":
		return &contract.Error{Code: contract.CodeBadRequest, Field: "slots", Message: "with slots, each slot entry carries its own PINs: give none at the top"}
	case req.PlanFile != "":
		return &contract.Error{Code: contract.CodeBadRequest, Field: "plan_file", Message: "a saved plan is of one slot: give slots or plan_file, not both"}
	case req.Backup != nil || op == "remove-backups":
		return &contract.Error{Code: contract.CodeBadRequest, Field: "slots", Message: "remove-backups takes one slot and the backup object its apply printed"}
	}
	return nil
}

// hostSlots is the slots of a host request: those listed, or, with all_slots, every supported
// slot of the conf, each of which must be listed with its PINs.
func hostSlots(e *env, op string, req *contract.Request, out *output) (apply.HostRequest, error) {
	hr := apply.HostRequest{Confdir: req.Confdir}
	if hr.Confdir == "" {
		hr.Confdir = defaultConfdir
	}
	listed := map[int]contract.SlotRequest{}
	for _, s := range req.Slots {
		listed[s.Slot] = s
	}
	order := req.Slots
	if req.AllSlots {
		cf, _, err := plan.ReadConf(hr.Confdir)
		if err != nil {
			return hr, err
		}
		slots, err := cf.Slots()
		if err != nil {
			return hr, contract.Errorf(contract.CodeConfInvalid, "%w", err)
		}
		order = nil
		for _, s := range slots {
			if !s.Type.Supported() {
				continue
			}
			sr, ok := listed[s.ID]
			if !ok {
				return hr, &contract.Error{Code: contract.CodeBadRequest, Field: "slots", Message: fmt.Sprintf("all_slots: slot %d of the conf is not listed in slots with its PINs", s.ID)}
			}
			order = append(order, sr)
		}
	}
	for _, s := range order {
		o := plan.Options{Slot: s.Slot, Datastore: s.Datastore}
		e.seams().plan(&o)
		if op != "rollback" {
			// rollback needs no PINs: given ones are ignored, PIN files never opened.
			var err error
			if o.SOPIN, err = pinFrom(e, s.SOPIN, s.SOPINFile, "so_pin_file", fmt.Sprintf("SO PIN of slot %d", s.Slot), op, out); err != nil {
				wipeHost(hr)
				return hr, plan.SlotError(s.Slot, err)
			}
			if o.UserPIN, err = pinFrom(e, s.UserPIN, s.UserPINFile, "user_pin_file", fmt.Sprintf("user PIN of slot %d", s.Slot), op, out); err != nil {
				wipe(o.SOPIN)
				wipeHost(hr)
				return hr, plan.SlotError(s.Slot, err)
			}
			if (o.SOPIN == nil) != (o.UserPIN == nil) {
				wipe(o.SOPIN)
				wipe(o.UserPIN)
				wipeHost(hr)
				return hr, &contract.Error{Code: contract.CodeBadRequest, Field: "slots", Message: fmt.Sprintf("slot %d: give both PINs (SO and user) or neither", s.Slot)}
			}
		}
		hr.Slots = append(hr.Slots, o)
	}
	return hr, nil
}

func wipeHost(hr apply.HostRequest) {
	for _, o := range hr.Slots {
		wipe(o.SOPIN)
		wipe(o.UserPIN)
	}
}

// runHost is plan, apply or rollback of a request with slots.
func runHost(e *env, op string, req *contract.Request, f *opFlags, out *output) int {
	if err := checkHostRequest(op, req); err != nil {
		return out.fail(err)
	}
	if (op == "apply" || op == "rollback") && e.euid != 0 {
		return out.fail(&contract.Error{Code: contract.CodeNotRoot, Message: op + " must run as root"})
	}
	hr, err := hostSlots(e, op, req, out)
	if err != nil {
		return out.fail(err)
	}
	defer wipeHost(hr)
	hr.StateBase = f.stateDir
	for i := range hr.Slots {
		hr.Slots[i].StateBase = f.stateDir
	}
	switch op {
	case "plan":
		hp, err := plan.MakeHost(hr.Confdir, hr.Slots)
		if err != nil {
			return out.fail(err)
		}
		if f.out != "" {
			if err := writePlanFile(f.out, hp); err != nil {
				return out.fail(err)
			}
		}
		out.hostPlan(hp)
		if hp.Changed {
			return 2
		}
		return 0
	case "apply":
		res, err := apply.RunHost(hr, applyOptions(e, out))
		out.finishProgress()
		if err != nil {
			return out.fail(err)
		}
		out.hostResult(res)
		return 0
	default:
		res, err := apply.RollbackHost(hr, applyOptions(e, out))
		if err != nil {
			return out.fail(err)
		}
		out.hostResult(res)
		return 0
	}
}
