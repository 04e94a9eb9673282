package main

import (
	"github.com/ocktools/pkcstok-migrate/apply"
	"github.com/ocktools/pkcstok-migrate/plan"
)

// seams are a run's test hooks (internal/testseam): fault injection, a forced in-place switch,
// and the pkcsslotd and FIPS checks pointed at fakes. An ordinary build has none: seamsFromEnv
// is set only in builds with -tags faultinject (seams_faultinject.go), which the test suites
// use, and nothing else reads those variables (TestOrdinaryBuildIgnoresSeams).
type seams struct {
	plan     func(*plan.Options)  // the forced switch, the fake /proc and PID files
	apply    func(*apply.Options) // the fault hook, the fake /proc and PID files
	fipsFile string               // stands for /proc/sys/crypto/fips_enabled
}

var seamsFromEnv func(getenv func(string) string) seams

func (e *env) seams() seams {
	s := seams{plan: func(*plan.Options) {}, apply: func(*apply.Options) {}}
	if seamsFromEnv != nil {
		s = seamsFromEnv(e.getenv)
	}
	return s
}
