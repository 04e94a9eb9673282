package main

import (
	"os"
	"path/filepath"

	"github.com/rogpeppe/go-internal/testscript"
	"golang.org/x/sys/unix"
)

// bindmount DIR: bind-mounts DIR onto itself (root), so that it is a mount point as a
// datastore on its own volume is; unmounted when the script ends.
func cmdBindmount(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 1 {
		ts.Fatalf("usage: bindmount DIR")
	}
	dir := ts.MkAbs(args[0])
	if err := unix.Mount(dir, dir, "", unix.MS_BIND, ""); err != nil {
		ts.Fatalf("bind mount %s: %v", dir, err)
	}
	ts.Defer(func() { _ = unix.Unmount(dir, unix.MNT_DETACH) })
}

// overlaylower DIR MERGED: moves DIR into the lower layer of a new overlay (without
// redirect_dir) mounted at MERGED (root): MERGED/<name of DIR> is then a directory of the
// lower layer, as a token directory of a container image is; unmounted when the script ends.
func cmdOverlayLower(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 2 {
		ts.Fatalf("usage: overlaylower DIR MERGED")
	}
	dir, merged := ts.MkAbs(args[0]), ts.MkAbs(args[1])
	layers := merged + ".layers"
	lower, upper, work := filepath.Join(layers, "lower"), filepath.Join(layers, "upper"), filepath.Join(layers, "work")
	for _, d := range []string{lower, upper, work, merged} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			ts.Fatalf("%v", err)
		}
	}
	if err := os.Rename(dir, filepath.Join(lower, filepath.Base(dir))); err != nil {
		ts.Fatalf("%v", err)
	}
	if err := unix.Mount("overlay", merged, "overlay", 0, "lowerdir="+lower+",upperdir="+upper+",workdir="+work+",redirect_dir=off"); err != nil {
		ts.Fatalf("mount overlay at %s: %v", merged, err)
	}
	ts.Defer(func() { _ = unix.Unmount(merged, unix.MNT_DETACH) })
}
