package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"strconv"

	json "github.com/goccy/go-json"

	"github.com/ocktools/pkcstok-migrate/apply"
	"github.com/ocktools/pkcstok-migrate/contract"
	"github.com/ocktools/pkcstok-migrate/internal/trusted"
	"github.com/ocktools/pkcstok-migrate/plan"
	"github.com/ocktools/pkcstok-migrate/schema"
)

const defaultConfdir = "/etc/opencryptoki"

// opFlags are the flags of plan, apply and rollback.
type opFlags struct {
	request     string
	slot        string
	datastore   string
	confdir     string
	soPINFile   string
	userPINFile string
	soPIN       string
	userPIN     string
	planFile    string
	out         string
	allSlots    bool
	slots       string
	stateDir    string
	json        bool
	set         map[string]bool
}

func runOperation(e *env, op string, args []string) int {
	c := commandByName(op)
	out := &output{e: e, json: true}
	v, rest, err := c.parse(args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(e.stdout, c.help())
			return 0
		}
		return out.fail(&contract.Error{Code: contract.CodeBadRequest, Message: err.Error()})
	}
	f := opFlags{
		request: v.s("request"), slot: v.s("slot"), datastore: v.s("datastore"), confdir: v.s("confdir"),
		soPINFile: v.s("so-pin-file"), userPINFile: v.s("user-pin-file"), soPIN: v.s("so-pin"), userPIN: v.s("user-pin"),
		planFile: v.s("plan"), out: v.s("out"), allSlots: v.b("all-slots"), slots: v.s("slots"), stateDir: v.s("state-dir"), json: v.b("json"),
		set: v.set,
	}
	out.json = f.json
	if len(rest) > 0 {
		return out.fail(&contract.Error{Code: contract.CodeBadRequest, Message: fmt.Sprintf("unexpected argument %q", rest[0])})
	}

	req, err := buildRequest(e, &f)
	if err != nil {
		return out.fail(err)
	}
	if f.set["slots"] {
		if err := slotsFromFlags(&f, req); err != nil {
			return out.fail(err)
		}
	}
	if len(req.Slots) > 0 {
		return runHost(e, op, req, &f, out)
	}
	if f.set["so-pin"] || f.set["user-pin"] {
		out.warn("PINs given on the command line are visible to other users of this host (ps, /proc); use --so-pin-file/--user-pin-file or --request")
	}
	opts, err := resolve(e, op, req, out)
	if err != nil {
		return out.fail(err)
	}
	opts.StateBase = f.stateDir
	defer wipe(opts.SOPIN)
	defer wipe(opts.UserPIN)

	switch op {
	case "plan":
		if req.AllSlots {
			return planAll(e, out, opts, f.out)
		}
		p, err := plan.Make(opts)
		if err != nil {
			return out.fail(err)
		}
		if f.out != "" {
			if err := writePlanFile(f.out, p); err != nil {
				return out.fail(err)
			}
		}
		out.plan(p)
		if p.Changed {
			return 2
		}
		return 0
	case "apply":
		if e.euid != 0 {
			return out.fail(&contract.Error{Code: contract.CodeNotRoot, Message: "apply must run as root: it sets the group of every file to the token group"})
		}
		var saved *contract.Plan
		if req.PlanFile != "" {
			if saved, err = readPlanFile(req.PlanFile, e.euid); err != nil {
				return out.fail(err)
			}
		}
		ao := applyOptions(e, out)
		res, err := apply.Run(opts, saved, ao)
		out.finishProgress()
		if err != nil {
			return out.fail(err)
		}
		out.result(res)
		return 0
	case "remove-backups":
		if e.euid != 0 {
			return out.fail(&contract.Error{Code: contract.CodeNotRoot, Message: "remove-backups must run as root"})
		}
		res, err := apply.RemoveBackups(opts, req.Backup)
		if err != nil {
			return out.fail(err)
		}
		out.result(res)
		return 0
	default: // rollback
		if e.euid != 0 {
			return out.fail(&contract.Error{Code: contract.CodeNotRoot, Message: "rollback must run as root"})
		}
		res, err := apply.Rollback(opts, applyOptions(e, out))
		if err != nil {
			return out.fail(err)
		}
		out.result(res)
		return 0
	}
}

// buildRequest merges the JSON request and the flags; a field given both ways is an error.
func buildRequest(e *env, f *opFlags) (*contract.Request, error) {
	req := &contract.Request{}
	if f.request != "" {
		var raw []byte
		var reqInfo trusted.Info
		var err error
		if f.request == "-" {
			raw, err = io.ReadAll(io.LimitReader(e.stdin, 1<<20))
		} else {
			raw, reqInfo, err = trusted.ReadFile(f.request, trusted.Rules{Euid: e.euid, DenyPerm: 0o022, MaxSize: maxRequestSize})
		}
		if err != nil {
			return nil, contract.Errorf(contract.CodeBadRequest, "read request: %w", err)
		}
		if err := schema.Validate(schema.Request, raw); err != nil {
			field := ""
			var ve *schema.ValidationError
			if errors.As(err, &ve) {
				field = ve.Field
			}
			return nil, &contract.Error{Code: contract.CodeBadRequest, Field: field, Message: "request: " + err.Error()}
		}
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		if err := dec.Decode(req); err != nil {
			return nil, contract.Errorf(contract.CodeBadRequest, "request: %w", err)
		}
		// A request file that holds a PIN is a PIN file: as readPINFile, nobody else may read it.
		if f.request != "-" && (req.SOPIN != "" || req.UserPIN != "") && reqInfo.Mode&0o077 != 0 {
			wipeString(req)
			return nil, &contract.Error{Code: contract.CodeBadRequest, Field: "so_pin", Message: fmt.Sprintf("request %s holds a PIN and has mode %04o: it must not be read by group or others (chmod 600)", f.request, reqInfo.Mode)}
		}
	}
	twice := func(flagName, field string, inRequest bool) error {
		if f.set[flagName] && inRequest {
			return &contract.Error{Code: contract.CodeBadRequest, Field: field, Message: fmt.Sprintf("%s is given both in the request and as --%s", field, flagName)}
		}
		return nil
	}
	checks := []struct {
		flag, field string
		inReq       bool
	}{
		{"slot", "slot", req.Slot != nil}, {"datastore", "datastore", req.Datastore != ""}, {"confdir", "confdir", req.Confdir != ""},
		{"so-pin-file", "so_pin_file", req.SOPINFile != "" || req.SOPIN != ""}, {"user-pin-file", "user_pin_file", req.UserPINFile != "" || req.UserPIN != ""},
		{"so-pin", "so_pin", req.SOPIN != "" || req.SOPINFile != ""}, {"user-pin", "user_pin", req.UserPIN != "" || req.UserPINFile != ""},
		{"plan", "plan_file", req.PlanFile != ""}, {"all-slots", "all_slots", req.AllSlots},
	}
	for _, c := range checks {
		if err := twice(c.flag, c.field, c.inReq); err != nil {
			return nil, err
		}
	}
	if f.set["slot"] {
		n, err := strconv.Atoi(f.slot)
		if err != nil || n < 0 || n > 1023 {
			return nil, &contract.Error{Code: contract.CodeBadRequest, Field: "slot", Message: fmt.Sprintf("--slot %q: want a number from 0 to 1023", f.slot)}
		}
		req.Slot = &n
	}
	if f.set["datastore"] {
		req.Datastore = f.datastore
	}
	if f.set["confdir"] {
		req.Confdir = f.confdir
	}
	// With --slots the PIN file flags name each slot's file (slotsFromFlags).
	if f.set["so-pin-file"] && !f.set["slots"] {
		req.SOPINFile = f.soPINFile
	}
	if f.set["user-pin-file"] && !f.set["slots"] {
		req.UserPINFile = f.userPINFile
	}
	if f.set["so-pin"] {
		req.SOPIN = f.soPIN
	}
	if f.set["user-pin"] {
		req.UserPIN = f.userPIN
	}
	if f.set["so-pin"] && f.set["so-pin-file"] || f.set["user-pin"] && f.set["user-pin-file"] {
		return nil, &contract.Error{Code: contract.CodeBadRequest, Field: "so_pin", Message: "give a PIN either directly or as a file, not both"}
	}
	if f.set["plan"] {
		req.PlanFile = f.planFile
	}
	if f.set["all-slots"] {
		req.AllSlots = f.allSlots
	}
	return req, nil
}

// resolve turns a request into plan.Options: reads PIN files, prompts on a terminal.
func resolve(e *env, op string, req *contract.Request, out *output) (plan.Options, error) {
	o := plan.Options{Confdir: req.Confdir, Datastore: req.Datastore}
	e.seams().plan(&o)
	if o.Confdir == "" {
		o.Confdir = defaultConfdir
	}
	if req.Slot != nil {
		o.Slot = *req.Slot
	} else if !req.AllSlots && req.PlanFile == "" {
		return o, &contract.Error{Code: contract.CodeBadRequest, Field: "slot", Message: "slot is required (--slot N or \"slot\" in the request)"}
	}
	if req.AllSlots && (req.Slot != nil || req.Datastore != "") {
		return o, &contract.Error{Code: contract.CodeBadRequest, Field: "all_slots", Message: "all_slots plans every slot: give neither slot nor datastore"}
	}
	if req.PlanFile != "" && (req.Slot != nil || req.Datastore != "" || req.Confdir != "") {
		return o, &contract.Error{Code: contract.CodeBadRequest, Field: "plan_file", Message: "a saved plan names its slot, datastore and confdir: give none of them"}
	}
	if req.PlanFile != "" && op != "apply" {
		return o, &contract.Error{Code: contract.CodeBadRequest, Field: "plan_file", Message: "plan_file is for apply only"}
	}
	if req.AllSlots && op != "plan" {
		return o, &contract.Error{Code: contract.CodeBadRequest, Field: "all_slots", Message: "all_slots without slots is for plan only: to apply or roll back every slot, list each in slots with its PINs"}
	}
	if req.Backup != nil && op != "remove-backups" {
		return o, &contract.Error{Code: contract.CodeBadRequest, Field: "backup", Message: "backup is for remove-backups only"}
	}
	if op == "rollback" {
		// rollback takes the request of apply: its PINs are ignored, its PIN files never opened.
		return o, nil
	}
	if op == "remove-backups" {
		if req.SOPIN != "" || req.UserPIN != "" || req.SOPINFile != "" || req.UserPINFile != "" {
			return o, &contract.Error{Code: contract.CodeBadRequest, Field: "so_pin", Message: op + " needs no PINs"}
		}
		return o, nil
	}
	var err error
	if o.SOPIN, err = pinFrom(e, req.SOPIN, req.SOPINFile, "so_pin_file", "SO PIN", op, out); err != nil {
		return o, err
	}
	if o.UserPIN, err = pinFrom(e, req.UserPIN, req.UserPINFile, "user_pin_file", "user PIN", op, out); err != nil {
		wipe(o.SOPIN)
		return o, err
	}
	if (o.SOPIN == nil) != (o.UserPIN == nil) {
		wipe(o.SOPIN)
		wipe(o.UserPIN)
		field := "user_pin"
		if o.SOPIN == nil {
			field = "so_pin"
		}
		return o, &contract.Error{Code: contract.CodeBadRequest, Field: field, Message: "give both PINs (SO and user) or neither: one alone can neither be checked nor migrate anything"}
	}
	return o, nil
}

// Sizes accepted for the files the tool reads on the caller's word.
const (
	maxRequestSize  = 1 << 20  // as for a request on stdin
	maxPlanFileSize = 16 << 20 // a plan of a token with very many objects
)

// writePlanFile writes a plan 0600 (it names private objects) through trusted.WriteFile: a
// symlink at path or beside it is replaced, never followed.
func writePlanFile(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return contract.Errorf(contract.CodeInternal, "encode plan: %w", err)
	}
	if err := trusted.WriteFile(path, append(b, '\n')); err != nil {
		return contract.Errorf(contract.CodeIO, "write plan: %w", err)
	}
	return nil
}

// readPlanFile reads a saved plan: no symlink, no FIFO, a regular file of root's or the
// caller's that nobody else may write (it decides what apply does as root).
func readPlanFile(path string, euid int) (*contract.Plan, error) {
	raw, _, err := trusted.ReadFile(path, trusted.Rules{Euid: euid, DenyPerm: 0o022, MaxSize: maxPlanFileSize})
	if err != nil {
		return nil, &contract.Error{Code: contract.CodeBadRequest, Field: "plan_file", Message: "read plan: " + err.Error()}
	}
	if err := schema.Validate(schema.Plan, raw); err != nil {
		return nil, contract.Errorf(contract.CodeBadRequest, "plan %s: %w", path, err)
	}
	var p contract.Plan
	if err := json.Unmarshal(raw, &p); err != nil {
		return nil, contract.Errorf(contract.CodeBadRequest, "plan %s: %w", path, err)
	}
	if p.Datastore == "" || !filepath.IsAbs(p.Datastore) || !filepath.IsAbs(p.Confdir) {
		return nil, &contract.Error{Code: contract.CodeBadRequest, Field: "plan_file", Message: fmt.Sprintf("plan %s is for --all-slots or lacks absolute paths: save a single-slot plan", path)}
	}
	return &p, nil
}

func planAll(e *env, out *output, o plan.Options, outFile string) int {
	m, err := plan.MakeAll(o)
	if err != nil {
		return out.fail(err)
	}
	if outFile != "" {
		if err := writePlanFile(outFile, m); err != nil {
			return out.fail(err)
		}
	}
	out.multi(m)
	if m.Changed {
		return 2
	}
	return 0
}

func applyOptions(e *env, out *output) apply.Options {
	o := apply.Options{Progress: out.progress}
	e.seams().apply(&o)
	return o
}

// wipeString drops the request's PINs (Go strings cannot be overwritten; they are at least
// no longer referenced).
func wipeString(req *contract.Request) { req.SOPIN, req.UserPIN = "", "" }

func wipe(b []byte) {
	for i := range b {
		b[i] = 0
	}
}
