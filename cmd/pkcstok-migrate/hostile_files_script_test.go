package main

import (
	"strconv"

	"github.com/rogpeppe/go-internal/testscript"
	"golang.org/x/sys/unix"
)

// mkfifo PATH: a FIFO nobody writes to; a reader that blocks on it hangs the script.
func cmdMkfifo(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 1 {
		ts.Fatalf("usage: mkfifo PATH")
	}
	ts.Check(unix.Mkfifo(ts.MkAbs(args[0]), 0o600))
}

// chown UID PATH: gives PATH (not a symlink's target) to UID, as a member of the token group
// would own a file it made.
func cmdChown(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 2 {
		ts.Fatalf("usage: chown UID PATH")
	}
	uid, err := strconv.Atoi(args[0])
	ts.Check(err)
	ts.Check(unix.Lchown(ts.MkAbs(args[1]), uid, -1))
}
