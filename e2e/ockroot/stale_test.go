package ockroot

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// A session is removed when its process is gone; one written in another PID namespace, whose
// PID cannot be checked from here, only once it is old.
func TestRemoveStale(t *testing.T) {
	run := t.TempDir()
	write := func(name, owner string, age time.Duration) {
		d := filepath.Join(run, name)
		if err := os.MkdirAll(filepath.Join(d, "root"), 0o755); err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(d, "owner")
		if err := os.WriteFile(p, []byte(owner), 0o644); err != nil {
			t.Fatal(err)
		}
		when := time.Now().Add(-age)
		if err := os.Chtimes(p, when, when); err != nil {
			t.Fatal(err)
		}
	}
	other := "pid:[1]"
	if pidNS() == other {
		other = "pid:[2]"
	}
	self := selfOwner()
	write("live", self, 0)
	write("gone", "999999999 1 "+pidNS(), 0)
	write("other-ns", "1 1 "+other, time.Hour)
	write("other-ns-old", "1 1 "+other, 2*staleAfter)
	removeStale(run)
	for name, kept := range map[string]bool{"live": true, "gone": false, "other-ns": true, "other-ns-old": false} {
		_, err := os.Stat(filepath.Join(run, name))
		if (err == nil) != kept {
			t.Errorf("%s: kept %v, want %v", name, err == nil, kept)
		}
	}
}
