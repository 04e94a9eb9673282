// Package testseam reads the test hooks of a run from its environment: fault injection, a
// forced in-place switch, and the pkcsslotd and FIPS checks pointed at fakes. Only builds with
// -tags faultinject import it (cmd/pkcstok-migrate's seams_faultinject.go; the suites build
// and test with that tag): an ordinary build holds neither this code nor the variables'
// names, and ignores them (cmd/pkcstok-migrate's TestOrdinaryBuildIgnoresSeams).
package testseam

import (
	"errors"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
)

// The variables, by name.
const (
	// Fault is STEP:MODE: the run stops at the first step whose name is STEP (or starts with
	// STEP without its trailing "*"), by returning an error (MODE "error") or by SIGKILL
	// (MODE "kill"). STEP#N stops at the N-th such step (a host run has one per slot).
	Fault = "PKCSTOK_MIGRATE_FAULT"
	// Switch is "in_place" or "in_place_inside": the in-place switch is planned where the
	// exchange would work (the backup beside or inside the repository), so that the crash and
	// CLI suites cover it on any file system.
	Switch = "PKCSTOK_MIGRATE_SWITCH"
	// Proc stands for /proc, and PIDFiles (colon-separated) for pkcsslotd's PID files.
	Proc     = "PKCSTOK_MIGRATE_PROC"
	PIDFiles = "PKCSTOK_MIGRATE_PIDFILES"
	// FIPSFile stands for /proc/sys/crypto/fips_enabled.
	FIPSFile = "PKCSTOK_MIGRATE_FIPS_FILE"
)

// Seams are a run's hooks; the zero value is none.
type Seams struct {
	Fault       func(step string) error
	ForceSwitch string
	ProcRoot    string
	PIDFiles    []string
	FIPSFile    string
}

// FromEnv reads the hooks from the environment.
func FromEnv(getenv func(string) string) Seams {
	s := Seams{ProcRoot: getenv(Proc), FIPSFile: getenv(FIPSFile), Fault: fault(getenv(Fault))}
	if v := getenv(PIDFiles); v != "" {
		s.PIDFiles = strings.Split(v, ":")
	}
	switch v := getenv(Switch); v {
	case "in_place", "in_place_inside":
		s.ForceSwitch = v
	}
	return s
}

func fault(spec string) func(string) error {
	if spec == "" {
		return nil
	}
	step, mode, _ := strings.Cut(spec, ":")
	nth := 1
	if i := strings.LastIndexByte(step, '#'); i >= 0 {
		if n, err := strconv.Atoi(step[i+1:]); err == nil && n > 0 {
			step, nth = step[:i], n
		}
	}
	var seen atomic.Int64
	return func(s string) error {
		if s != step && !(strings.HasSuffix(step, "*") && strings.HasPrefix(s, strings.TrimSuffix(step, "*"))) {
			return nil
		}
		if seen.Add(1) < int64(nth) {
			return nil
		}
		if mode == "kill" {
			_ = syscall.Kill(syscall.Getpid(), syscall.SIGKILL)
			select {} // wait for the signal
		}
		return errors.New("injected fault")
	}
}
