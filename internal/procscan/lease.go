package procscan

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/ocktools/pkcstok-migrate/internal/repofs"
)

// The open-files check by write leases.
//
// The kernel grants a write lease (fcntl F_SETLEASE F_WRLCK) on a regular file only when the
// lease taker's open file description is the only one the file has: no other descriptor of
// any process (in any PID namespace, through any name or hard link of the file), no memory
// mapping (a mapping holds its file open after close), no execution, no lease of someone
// else (fs/locks.c check_conflicting_open, which counts the inode's readers and writers).
// So one open, one fcntl and one close per file answer "is anyone using this file" at a
// cost that grows with the repository, not with the processes of the host. The /proc scan
// runs only when a lease is refused (to name the PIDs) or when leases cannot answer.
//
// What a lease cannot see: directories (they cannot be leased), so a process whose working
// or root directory is inside, or that holds only a directory descriptor, is not found when
// every file's lease is granted; and an O_PATH descriptor (it neither reads nor writes).
// SECURITY.md and DESIGN.md list this as a residual.

// ErrOpenUnnamed means a file of the repository is open (its write lease was refused twice)
// but no process visible in /proc holds it under the repository's name: a process of
// another PID namespace, or one that opened it through another hard link or mount. The
// check fails closed on it: the caller must not migrate.
var ErrOpenUnnamed = errors.New("a file of the repository is open in a process /proc does not show")

// errLeaseUnsupported wraps why leases cannot answer for this repository (the scan runs).
var errLeaseUnsupported = errors.New("write leases cannot tell")

// Bounds of the lease walk; over them the scan answers instead (a hostile repository costs
// its owner the scan's time, nothing else). The entries are bounded like every walk of a
// repository (repofs.MaxTreeEntries) and counted as they are read, so a directory of a
// million names is left after that many, and the copy then refuses such a repository. The
// in-place switch's directories inside the repository (the working copy, the backup) are
// counted too: a token of more than half the bound with its backup inside is checked by the
// scan.
const leaseMaxDepth = 256

// leaseMaxEntries is repofs.MaxTreeEntries; tests lower it.
var leaseMaxEntries = repofs.MaxTreeEntries

// leaseFileSystems are the file systems where a write lease is known (lease_test.go, run on
// each) to be refused for every kind of user: a descriptor read-only or read-write, and a
// memory mapping whose descriptor was closed. Not overlayfs: a mapping there holds the
// underlying layer's file, not the overlay's, so an mmap-only user is invisible to the
// overlay file's lease (found on a real overlay, both layers); FUSE passthrough does the same.
// Nor NFS, CIFS and the like (leases unsupported or local to the client). Anywhere else the
// scan answers.
var leaseFileSystems = map[int64]bool{
	unix.EXT4_SUPER_MAGIC:  true, // ext2, ext3, ext4
	unix.XFS_SUPER_MAGIC:   true,
	unix.BTRFS_SUPER_MAGIC: true,
	unix.TMPFS_MAGIC:       true,
}

// useLeases is false in tests that want the scan alone.
var useLeases = true

// leasesEnabledFile is the sysctl that, at 0, makes every F_SETLEASE fail with EINVAL.
var leasesEnabledFile = "/proc/sys/fs/leases-enable"

// setLease is fcntl(F_SETLEASE); a variable so tests can make leases unsupported.
var setLease = func(fd int, typ int) error {
	_, err := unix.FcntlInt(uintptr(fd), unix.F_SETLEASE, typ)
	return err
}

// realProc reports whether procRoot is the real /proc of this process, the only case where
// leases (which see the real processes) may stand in for the scan. A fake tree (tests) is
// always scanned.
func realProc(procRoot string) bool {
	return procRoot == "" || filepath.Clean(procRoot) == defaultProcRoot
}

// busyFiles walks dir and takes (and at once drops) a write lease on each regular file. It
// returns the paths of the files whose lease was refused (someone has them open), or an error
// wrapping errLeaseUnsupported when leases cannot answer for some file (the file system does
// not support them, leases are disabled, the walk hit a bound, an entry could not be opened),
// in which case the caller scans /proc instead.
func busyFiles(dir string) ([]string, error) {
	if b, err := os.ReadFile(leasesEnabledFile); err == nil && strings.TrimSpace(string(b)) == "0" {
		return nil, fmt.Errorf("%w: %s is 0", errLeaseUnsupported, leasesEnabledFile)
	}
	// Never through a symlink swapped in for the repository (apply locked the directory; a
	// symlink at its name now is someone else's).
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("%w: open %s: %v", errLeaseUnsupported, dir, err)
	}
	w := leaseWalk{}
	err = w.dir(fd, dir, 0)
	unix.Close(fd)
	if err != nil {
		return nil, err
	}
	sort.Strings(w.busy)
	return w.busy, nil
}

type leaseWalk struct {
	busy    []string
	entries int
}

// dir checks the entries of the directory open as fd (named name, for messages). fd stays
// the caller's.
func (w *leaseWalk) dir(fd int, name string, depth int) error {
	if depth > leaseMaxDepth {
		return fmt.Errorf("%w: %s is deeper than %d", errLeaseUnsupported, name, leaseMaxDepth)
	}
	var sfs unix.Statfs_t
	if err := unix.Fstatfs(fd, &sfs); err != nil {
		return fmt.Errorf("%w: statfs %s: %v", errLeaseUnsupported, name, err)
	}
	if !leaseFileSystems[int64(sfs.Type)] {
		return fmt.Errorf("%w: %s is on a file system (magic 0x%x) where leases are not known to see every user", errLeaseUnsupported, name, sfs.Type)
	}
	// The directory is read in getdents batches, twice: first only counted, so that a
	// directory of a million names is left for the scan after leaseMaxEntries of them, before
	// any file of it is leased; then its files are leased leaseBatch at a time as they are
	// read (and counted again: it may have grown). No listing is held whole.
	seen := 0
	err := repofs.ScanDir(fd, name, func([]byte, uint8) error {
		if seen++; w.entries+seen > leaseMaxEntries {
			return fmt.Errorf("%w: more than %d entries", errLeaseUnsupported, leaseMaxEntries)
		}
		return nil
	})
	if err != nil {
		if errors.Is(err, errLeaseUnsupported) {
			return err
		}
		return fmt.Errorf("%w: %v", errLeaseUnsupported, err) // err names the directory
	}
	var files, subdirs []string
	flush := func() error {
		busy, err := leaseFiles(fd, files)
		for _, b := range busy {
			w.busy = append(w.busy, name+"/"+b)
		}
		files = files[:0]
		if err != nil {
			return fmt.Errorf("%w: %s/%v", errLeaseUnsupported, name, err)
		}
		return nil
	}
	err = repofs.ScanDir(fd, name, func(n []byte, typ uint8) error {
		if w.entries++; w.entries > leaseMaxEntries {
			return fmt.Errorf("%w: more than %d entries", errLeaseUnsupported, leaseMaxEntries)
		}
		if typ == unix.DT_UNKNOWN {
			var st unix.Stat_t
			if err := unix.Fstatat(fd, string(n), &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				if errors.Is(err, unix.ENOENT) {
					return nil // gone meanwhile: nothing to hold open
				}
				return fmt.Errorf("%w: lstat %s/%s: %v", errLeaseUnsupported, name, n, err)
			}
			switch st.Mode & unix.S_IFMT {
			case unix.S_IFREG:
				typ = unix.DT_REG
			case unix.S_IFDIR:
				typ = unix.DT_DIR
			}
		}
		// Symlinks, FIFOs, sockets, devices: the copy refuses them; nothing to lease.
		switch typ {
		case unix.DT_REG:
			if files = append(files, string(n)); len(files) == leaseBatch {
				return flush()
			}
		case unix.DT_DIR:
			subdirs = append(subdirs, string(n))
		}
		return nil
	})
	if err != nil {
		if errors.Is(err, errLeaseUnsupported) {
			return err
		}
		return fmt.Errorf("%w: %v", errLeaseUnsupported, err) // err names the directory
	}
	if err := flush(); err != nil {
		return err
	}
	for _, sd := range subdirs {
		p := name + "/" + sd
		cfd, err := unix.Openat(fd, sd, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			if errors.Is(err, unix.ENOENT) {
				continue // gone meanwhile: nothing to hold open
			}
			return fmt.Errorf("%w: open %s: %v", errLeaseUnsupported, p, err)
		}
		err = w.dir(cfd, p, depth+1)
		unix.Close(cfd)
		if err != nil {
			return err
		}
	}
	return nil
}

// leaseBatch is how many files of a directory the lease walk holds (and leases) at a time.
const leaseBatch = 1024

// leaseFiles runs leaseFile on each of the files of the directory dfd, on up to one worker
// per core for a large directory (TOK_OBJ): the calls are all in the kernel, and the copy
// that follows does the same. It returns the busy ones (sorted) or the first error.
func leaseFiles(dfd int, files []string) ([]string, error) {
	workers := runtime.NumCPU()
	if workers > 4 {
		workers = 4
	}
	if len(files) < 512 || workers < 2 {
		workers = 1
	}
	type part struct {
		busy []string
		err  error
	}
	parts := make([]part, workers)
	var wg sync.WaitGroup
	for k := 0; k < workers; k++ {
		wg.Add(1)
		go func(k int) {
			defer wg.Done()
			for i := k; i < len(files); i += workers {
				busy, err := leaseFile(dfd, files[i])
				if err != nil {
					parts[k].err = fmt.Errorf("%s: %v", files[i], err)
					return
				}
				if busy {
					parts[k].busy = append(parts[k].busy, files[i])
				}
			}
		}(k)
	}
	wg.Wait()
	var busy []string
	for _, p := range parts {
		if p.err != nil {
			return nil, p.err
		}
		busy = append(busy, p.busy...)
	}
	sort.Strings(busy)
	return busy, nil
}

// leaseFile reports whether name (in the directory dfd) is open elsewhere: its write lease is
// refused. The open is non-blocking (a FIFO swapped in does not hang it; a file under someone
// else's lease gives EWOULDBLOCK instead of waiting for the lease break: busy) and does not
// follow a symlink. An error means the lease cannot tell (unsupported, not a regular file).
func leaseFile(dfd int, name string) (bool, error) {
	fd, err := unix.Openat(dfd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
	for errors.Is(err, unix.EINTR) {
		fd, err = unix.Openat(dfd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
	}
	switch {
	case err == nil:
	case errors.Is(err, unix.ENOENT):
		return false, nil // removed meanwhile
	case errors.Is(err, unix.EWOULDBLOCK):
		return true, nil // someone else holds a lease on it: it is open
	default:
		return false, err
	}
	// The close drops a granted lease (a lease belongs to its open file description and goes
	// with its last close, fs/locks.c locks_remove_file), so no F_UNLCK: held for one system
	// call, and an open by anyone else meanwhile waits for it (the lease break), it is not
	// refused.
	defer unix.Close(fd)
	err = setLease(fd, unix.F_WRLCK)
	switch {
	case err == nil:
		return false, nil
	case errors.Is(err, unix.EAGAIN):
		return true, nil
	default:
		// EINVAL (leases disabled, NFS, not a regular file any more), ENOLCK, EOPNOTSUPP,
		// EACCES (no CAP_LEASE and not the owner), anything else: cannot tell.
		return false, err
	}
}
