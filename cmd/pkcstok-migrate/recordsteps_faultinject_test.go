//go:build faultinject

package main

import (
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/ocktools/pkcstok-migrate/apply"
	"github.com/ocktools/pkcstok-migrate/plan"
)

// recordSteps runs apply in-process on a fresh token and returns the hook's step names.
func recordSteps(t *testing.T, tk *token, proc, pidfiles string) []string {
	t.Helper()
	var mu sync.Mutex
	var steps []string
	_, err := apply.Run(plan.Options{Slot: tk.slot, Datastore: tk.ds, Confdir: tk.confdir, SOPIN: []byte(tk.so), UserPIN: []byte(tk.user)}, nil,
		apply.WithHook(apply.Options{ProcRoot: proc, PIDFiles: []string{pidfiles}}, func(s string) error {
			mu.Lock()
			steps = append(steps, s)
			mu.Unlock()
			return nil
		}))
	if err != nil {
		t.Fatalf("in-process apply: %v", err)
	}
	// The objects are re-encrypted in parallel: sort them, keep the other steps in order.
	first := -1
	for i, s := range steps {
		if strings.HasPrefix(s, "object ") {
			if first < 0 {
				first = i
			}
		}
	}
	if first >= 0 {
		n := 0
		for _, s := range steps {
			if strings.HasPrefix(s, "object ") {
				n++
			}
		}
		sort.Strings(steps[first : first+n])
	}
	return steps
}
