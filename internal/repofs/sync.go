package repofs

import (
	"errors"
	"fmt"
	"os/user"
	"strconv"

	"golang.org/x/sys/unix"
)

// Sync fsyncs the directory itself (making renames and creations in it durable).
func (d *Dir) Sync() error {
	if err := unix.Fsync(d.fd); err != nil {
		return pathErr("fsync", d.path, err)
	}
	return nil
}

// Syncfs flushes the whole file system that holds d (syncfs(2)): one call makes a
// freshly copied tree of many files durable.
func (d *Dir) Syncfs() error {
	if err := unix.Syncfs(d.fd); err != nil {
		return pathErr("syncfs", d.path, err)
	}
	return nil
}

// TryLock takes an exclusive flock on the directory itself without waiting. ErrLocked
// means another open file description (another process, or another OpenDir of the same
// directory) holds it. The lock lasts until d is closed. No lock file is created.
func (d *Dir) TryLock() error {
	for {
		err := unix.Flock(d.fd, unix.LOCK_EX|unix.LOCK_NB)
		switch {
		case err == nil:
			return nil
		case err == unix.EINTR:
			continue
		case errors.Is(err, unix.EWOULDBLOCK):
			return pathErr("lock", d.path, ErrLocked)
		default:
			return pathErr("lock", d.path, err)
		}
	}
}

// LookupGroup returns the GID of the group name (through the system's group database).
// An unknown group gives errGroupNotFound.
func LookupGroup(name string) (int, error) {
	if name == "" {
		return -1, fmt.Errorf("group %q: %w", name, errGroupNotFound)
	}
	g, err := user.LookupGroup(name)
	if err != nil {
		var unknown user.UnknownGroupError
		if errors.As(err, &unknown) {
			return -1, fmt.Errorf("group %q: %w", name, errGroupNotFound)
		}
		return -1, fmt.Errorf("look up group %q: %w", name, err)
	}
	gid, err := strconv.Atoi(g.Gid)
	if err != nil || gid < 0 {
		return -1, fmt.Errorf("group %q has invalid gid %q", name, g.Gid)
	}
	return gid, nil
}
