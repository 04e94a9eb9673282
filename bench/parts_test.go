//go:build linux

package bench

import (
	"os"
	"path/filepath"
	"testing"
)

// A part that BENCH_PARTS leaves out keeps its text, byte for byte, and the notes come from
// NOTES.md.
func TestResultsPartsKept(t *testing.T) {
	path := filepath.Join(t.TempDir(), "RESULTS.md")
	notes, err := os.ReadFile("NOTES.md")
	if err != nil {
		t.Fatal(err)
	}
	old := "# pkcstok-migrate benchmark results\n\n" + markSingle + "\n\nsingle\n\n| a |\n\n" + markHost + "\n\n## Host\n\nhost\n\n" + markNotes + "\n\nold notes\n"
	if err := os.WriteFile(path, []byte(old), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("BENCH_RESULTS", path)
	bs := &bench{}
	for i := 0; i < 2; i++ {
		if err := bs.writeResults(); err != nil {
			t.Fatal(err)
		}
		got, _ := os.ReadFile(path)
		want := "# pkcstok-migrate benchmark results\n\n" + markSingle + "\n\nsingle\n\n| a |\n\n" + markHost + "\n\n## Host\n\nhost\n\n" + markNotes + "\n\n" + string(notes)
		if string(got) != want {
			t.Fatalf("write %d:\n%s\nwant:\n%s", i+1, got, want)
		}
	}
}
