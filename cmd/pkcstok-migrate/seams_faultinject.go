//go:build faultinject

package main

import (
	"github.com/ocktools/pkcstok-migrate/apply"
	"github.com/ocktools/pkcstok-migrate/internal/testseam"
	"github.com/ocktools/pkcstok-migrate/plan"
)

// Built with -tags faultinject (the test suites only): the hooks come from the environment.
func init() {
	seamsFromEnv = func(getenv func(string) string) seams {
		s := testseam.FromEnv(getenv)
		procs := func(root *string, pids *[]string) {
			if s.ProcRoot != "" {
				*root = s.ProcRoot
			}
			if s.PIDFiles != nil {
				*pids = s.PIDFiles
			}
		}
		return seams{
			plan: func(o *plan.Options) {
				plan.ForceSwitch(o, s.ForceSwitch)
				procs(&o.ProcRoot, &o.PIDFiles)
			},
			apply: func(o *apply.Options) {
				if s.Fault != nil {
					*o = apply.WithHook(*o, s.Fault)
				}
				procs(&o.ProcRoot, &o.PIDFiles)
			},
			fipsFile: s.FIPSFile,
		}
	}
}
