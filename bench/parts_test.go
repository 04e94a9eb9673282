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

// A read or write that strace split over two lines (another thread's call came between) is
// counted once, by its result.
func TestBytesMovedSplitCalls(t *testing.T) {
	trace := `1201  read(3, ""..., 4096) = 100
1202  write(5, ""..., 64 <unfinished ...>
1201  pread64(7, ""..., 512, 0) = 40
1202  <... write resumed>) = 64
1203  getdents64(4 <unfinished ...>
1203  <... getdents64 resumed>, 0x0 /* 2 entries */, 32768) = 48
1201  write(1, ""..., 10) = -1 EPIPE (Broken pipe)
`
	path := filepath.Join(t.TempDir(), "trace")
	if err := os.WriteFile(path, []byte(trace), 0o644); err != nil {
		t.Fatal(err)
	}
	r, w, err := bytesMoved(path)
	if err != nil {
		t.Fatal(err)
	}
	if r != 188 || w != 64 {
		t.Fatalf("read %d, written %d; want 188, 64", r, w)
	}
}
