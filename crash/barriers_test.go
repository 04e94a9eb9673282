package crash

import (
	"os"
	"testing"
	"time"

	"github.com/ocktools/pkcstok-migrate/crash/crashsim"
)

// TestBarriers asks of every barrier (fsync, fdatasync, syncfs) of apply and rollback
// whether the protocol needs it: the trace is replayed as if that one call had not been
// made, and every crash state this adds is rebooted into. A barrier whose absence adds no
// failing state is covered by a later one under the model (it may still serve an error
// path). Not part of make test: PKCSTOK_CRASH_BARRIERS=1 go test -run TestBarriers -v ./crash
// (the results are in README.md).
func TestBarriers(t *testing.T) {
	if os.Getenv("PKCSTOK_CRASH_BARRIERS") != "1" {
		t.Skip("the barrier analysis runs with PKCSTOK_CRASH_BARRIERS=1")
	}
	gate(t, true)
	start := time.Now()
	h := newHarness(t, true)
	sd := seed()
	for _, sc := range []scenario{
		{name: "apply/soft-small", fixture: "soft-small", op: "apply"},
		{name: "rollback/soft-small", fixture: "soft-small", op: "rollback"},
	} {
		fx, sim := h.traceScenario(t, sc, h.bin)
		known := map[[32]byte]bool{}
		base, err := collect(sim, sd, &sweepStats{afterOp: map[string]*crashsim.Tree{}})
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range base {
			known[s.tree.Hash()] = true
		}
		for i, o := range sim.Ops {
			if !o.Barrier() {
				continue
			}
			w, err := sim.WithoutBarrier(i)
			if err != nil {
				t.Fatal(err)
			}
			st := &sweepStats{byKind: map[string]int{}, afterOp: map[string]*crashsim.Tree{}}
			all, err := collect(w, sd, st)
			if err != nil {
				t.Fatal(err)
			}
			var added []labeled
			for _, s := range all {
				if !known[s.tree.Hash()] {
					added = append(added, s)
				}
			}
			h.runStates(fx, sc, h.bin, added, st)
			verdict := "covered by a later barrier"
			if len(st.failures) > 0 {
				verdict = "NEEDED"
			}
			t.Logf("BARRIER %s op %d %s: %s: %d new crash states, %d fail", sc.name, i, o, verdict, len(added), len(st.failures))
			if len(st.failures) > 0 {
				t.Logf("    first: %.400s", st.failures[0])
			}
		}
	}
	t.Logf("%.0fs", time.Since(start).Seconds())
}
