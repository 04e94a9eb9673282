package main

import (
	"errors"
	"strings"
	"syscall"
)

// testHooksEnabled is set only by this package's tests (main_test.go): a binary built with
// `go build` has no way to turn on fault injection or to redirect the pkcsslotd check.
var testHooksEnabled = false

// faultHook returns the fault-injection hook for test runs: PKCSTOK_MIGRATE_FAULT=STEP:MODE
// stops the run at the first step whose name equals STEP (or starts with it, for
// "object"), either by returning an error (MODE "error") or by SIGKILL (MODE "kill").
func faultHook(e *env) func(string) error {
	if !testHooksEnabled {
		return nil
	}
	spec := e.getenv("PKCSTOK_MIGRATE_FAULT")
	if spec == "" {
		return nil
	}
	step, mode, _ := strings.Cut(spec, ":")
	return func(s string) error {
		if s != step && !(strings.HasSuffix(step, "*") && strings.HasPrefix(s, strings.TrimSuffix(step, "*"))) {
			return nil
		}
		if mode == "kill" {
			_ = syscall.Kill(syscall.Getpid(), syscall.SIGKILL)
			select {} // wait for the signal
		}
		return errors.New("injected fault")
	}
}

// forceSwitch is PKCSTOK_MIGRATE_SWITCH in test runs: "in_place" or "in_place_inside" plans
// the in-place switch where the exchange would work (plan.Options.ForceSwitch), so that the
// crash and CLI suites cover it on any file system.
func forceSwitch(e *env) string {
	if !testHooksEnabled {
		return ""
	}
	switch v := e.getenv("PKCSTOK_MIGRATE_SWITCH"); v {
	case "in_place", "in_place_inside":
		return v
	}
	return ""
}
