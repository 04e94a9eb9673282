package conf

import (
	"bytes"
	"fmt"
	"testing"
	"time"
)

// TestLargeEdit: a file at MaxSize with 20000 slots is parsed, edited, checked and diffed in
// reasonable time (about a second; real files are a few KiB).
func TestLargeEdit(t *testing.T) {
	if testing.Short() {
		t.Skip("large input")
	}
	var b bytes.Buffer
	for i := 0; b.Len() < MaxSize-200; i++ {
		fmt.Fprintf(&b, "slot %d { stdll = libpkcs11_sw.so }\n# c %d\n", i%1000+1, i)
	}
	b.WriteString("slot 0\n{\n stdll = libpkcs11_sw.so\n}\n")
	start := time.Now()
	f, err := Parse("big", b.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	e, err := f.SetTokVersion(0)
	if err != nil {
		t.Fatal(err)
	}
	if e.Action != actionInsert || time.Since(start) > time.Minute {
		t.Fatalf("action %s after %v", e.Action, time.Since(start))
	}
	t.Logf("%d bytes: %v, diff %d bytes", b.Len(), time.Since(start), len(e.Diff))
	slots, _ := f.Slots()
	if len(slots) != 1001 {
		t.Fatalf("%d slots", len(slots))
	}
}
