//go:build linux

package faults

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// fsKind is a file system under test: how its images are made and mounted.
type fsKind struct {
	name string
	// size and confSize are the sparse images of the repository's file system and of the
	// conf's own one (XFS needs 300 MiB at least, btrfs about 110 MiB).
	size, confSize int64
	// mkfs is the command that makes an image; conf: the conf's small image.
	mkfs func(img string, conf bool) []string
	// opts are the mount options: XFS refuses a second file system with the UUID of a
	// mounted one, and every trial's image is a copy of one image.
	opts string
	// inodes: the file system has a fixed inode count a trial can use up (ext4: mkfs -N).
	inodes bool
}

const mib = 1 << 20

var fsKinds = []*fsKind{
	{name: "ext4", size: 320 * mib, confSize: 32 * mib, inodes: true,
		mkfs: func(img string, conf bool) []string {
			// 4 KiB blocks as on a real system (mkfs picks 1 KiB for a small image), no
			// blocks reserved for root (the tool runs as root and would use them: the
			// sweeps would not reach it), the inode tables written now (no lazy init
			// writing behind the trials), and few inodes, so that a trial can use them up.
			args := []string{"mkfs.ext4", "-q", "-F", "-b", "4096", "-m", "0", "-E", "lazy_itable_init=0,lazy_journal_init=0"}
			if !conf {
				args = append(args, "-N", "6144")
			}
			return append(args, img)
		}},
	{name: "xfs", size: 320 * mib, confSize: 300 * mib, opts: "nouuid",
		mkfs: func(img string, _ bool) []string { return []string{"mkfs.xfs", "-q", "-f", img} }},
	{name: "btrfs", size: 256 * mib, confSize: 128 * mib,
		mkfs: func(img string, _ bool) []string { return []string{"mkfs.btrfs", "-q", "-f", img} }},
}

// attachMu serialises this process's loop attaches.
var attachMu sync.Mutex

// image is an image file and, while mounted, its loop device and mount point.
type image struct {
	kind *fsKind
	img  string
	mnt  string
	dev  string // "" while not mounted
}

// run runs a command and returns its error with its output.
func run(args ...string) error {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// mount attaches the image to a free loop device (losetup) and mounts it. The device is
// marked autoclear while the mount holds it: it goes away with the last unmount, also when a
// killed test leaves the mount to make clean.
func (im *image) mount() error {
	var out []byte
	var err error
	// Two attaches may race for the same free device (other suites of the machine attach
	// theirs too): losetup then fails, and a retry finds another.
	for i := 0; i < 5; i++ {
		attachMu.Lock()
		out, err = exec.Command("losetup", "--find", "--show", im.img).Output()
		attachMu.Unlock()
		if err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("losetup --find --show %s: %w", im.img, err)
	}
	dev := strings.TrimSpace(string(out))
	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		_ = run("losetup", "-d", dev)
		return fmt.Errorf("open %s: %w", dev, err)
	}
	defer f.Close() // the last close before the mount would clear it: the mount opens it first
	st, err := unix.IoctlLoopGetStatus64(int(f.Fd()))
	if err == nil {
		st.Flags |= unix.LO_FLAGS_AUTOCLEAR
		err = unix.IoctlLoopSetStatus64(int(f.Fd()), st)
	}
	if err != nil {
		_ = run("losetup", "-d", dev)
		return fmt.Errorf("autoclear %s: %w", dev, err)
	}
	if err := os.MkdirAll(im.mnt, 0o755); err != nil {
		return err
	}
	if err := unix.Mount(dev, im.mnt, im.kind.name, 0, im.kind.opts); err != nil {
		return fmt.Errorf("mount %s (%s) on %s: %w", dev, im.kind.name, im.mnt, err)
	}
	im.dev = dev
	return nil
}

// umount unmounts the image (which detaches its loop device). A busy mount is retried a
// few times, then detached lazily: cleanup must not stop half-way.
func (im *image) umount() error {
	if im.dev == "" {
		return nil
	}
	var err error
	for i := 0; i < 20; i++ {
		if err = unix.Unmount(im.mnt, 0); err == nil || errors.Is(err, unix.EINVAL) {
			err = nil
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		err = fmt.Errorf("umount %s: %w", im.mnt, err)
		if lerr := unix.Unmount(im.mnt, unix.MNT_DETACH); lerr != nil {
			err = fmt.Errorf("%w; lazy umount: %w", err, lerr)
		}
	}
	im.detachAll()
	im.dev = ""
	return err
}

// detachAll detaches every loop device still bound to the image (autoclear does it on the
// last unmount; this is for a device whose mount never happened or was lazily detached).
func (im *image) detachAll() {
	out, err := exec.Command("losetup", "-j", im.img, "-O", "NAME", "-n").Output()
	if err != nil {
		return
	}
	for _, dev := range strings.Fields(string(out)) {
		_ = run("losetup", "-d", dev)
	}
}

// remount unmounts and mounts again: after a shutdown, the mount replays the log (the
// recovery a reboot does).
func (im *image) remount() error {
	if err := im.umount(); err != nil {
		return err
	}
	return im.mount()
}

// mounted says whether a file system is still mounted at the image's mount point (from
// /proc/self/mountinfo: a stat there fails on a file system that is shut down).
func (im *image) mounted() bool {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 4 && f[4] == im.mnt {
			return true
		}
	}
	return false
}

// remountRO and remountRW switch a mounted file system between read-only and read-write.
func (im *image) remountRO() error {
	if err := unix.Mount("", im.mnt, "", unix.MS_REMOUNT|unix.MS_RDONLY, im.kind.opts); err != nil {
		return fmt.Errorf("mount -o remount,ro %s: %w", im.mnt, err)
	}
	return nil
}

func (im *image) remountRW() error {
	if err := unix.Mount("", im.mnt, "", unix.MS_REMOUNT, im.kind.opts); err != nil {
		return fmt.Errorf("mount -o remount,rw %s: %w", im.mnt, err)
	}
	return nil
}

// statfs is what the file system has free, as the tool reads it (f_bavail, f_ffree).
type fsFree struct {
	bytes, inodes, bsize int64
}

func statFree(dir string) (fsFree, error) {
	var s unix.Statfs_t
	if err := unix.Statfs(dir, &s); err != nil {
		return fsFree{}, fmt.Errorf("statfs %s: %w", dir, err)
	}
	bs := int64(s.Bsize) // uint32 on s390x
	if s.Frsize > 0 {
		bs = int64(s.Frsize)
	}
	return fsFree{bytes: int64(s.Bavail) * bs, inodes: int64(s.Ffree), bsize: bs}, nil
}

// The fillers live at the top of the image, beside the tree the tool works in.
const (
	fillerFile = "FAULTS_FILLER"
	fillerDir  = "FAULTS_FILLER.d"
)

// fillTo leaves about target bytes free (f_bavail) with one preallocated filler file: it
// grows or shrinks the file until the free space is target rounded down to a block, or close
// to it where the file system's own accounting moves (btrfs). It returns what is free.
func fillTo(mnt string, target int64) (int64, error) {
	f, err := os.OpenFile(filepath.Join(mnt, fillerFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	fd := int(f.Fd())
	var size int64
	if fi, err := f.Stat(); err == nil {
		size = fi.Size()
	}
	var free fsFree
	for i := 0; i < 40; i++ {
		if err := unix.Fsync(fd); err != nil {
			return 0, fmt.Errorf("fsync filler: %w", err)
		}
		if free, err = statFree(mnt); err != nil {
			return 0, err
		}
		want := target / free.bsize * free.bsize
		diff := free.bytes - want
		switch {
		case diff == 0:
			return free.bytes, nil
		case diff > 0:
			// Grow by the difference; what the file system will not give, in halves.
			step := diff
			for step >= free.bsize {
				if err := unix.Fallocate(fd, 0, size, step); err == nil {
					size += step
					break
				} else if !errors.Is(err, unix.ENOSPC) {
					return 0, fmt.Errorf("fallocate filler: %w", err)
				}
				step = step / 2 / free.bsize * free.bsize
			}
			if step < free.bsize {
				return free.bytes, nil // nothing more to take
			}
		default:
			size = max(0, size+diff/free.bsize*free.bsize-free.bsize)
			if err := unix.Ftruncate(fd, size); err != nil {
				return 0, fmt.Errorf("truncate filler: %w", err)
			}
		}
	}
	return free.bytes, nil
}

// fillAll takes every byte the file system will give: the filler file grows until ENOSPC,
// then small files are written until ENOSPC too. On btrfs the second part matters: small
// files live inline in the metadata, which a full data area does not stop.
func fillAll(mnt string) (string, error) {
	f, err := os.OpenFile(filepath.Join(mnt, fillerFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return "", err
	}
	defer f.Close()
	fd := int(f.Fd())
	fi, err := f.Stat()
	if err != nil {
		return "", err
	}
	size := fi.Size()
	for step := int64(1 << 30); step >= 4096; {
		if err := unix.Fallocate(fd, 0, size, step); err == nil {
			size += step
			continue
		} else if !errors.Is(err, unix.ENOSPC) {
			return "", fmt.Errorf("fallocate filler: %w", err)
		}
		step /= 2
	}
	dir := filepath.Join(mnt, fillerDir)
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		if errors.Is(err, unix.ENOSPC) {
			return "data full", nil
		}
		return "", err
	}
	small := bytes.Repeat([]byte{'f'}, 2000)
	n := 0
	for ; n < 200000; n++ {
		err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("s%06d", n)), small, 0o600)
		if errors.Is(err, unix.ENOSPC) {
			break
		}
		if err != nil {
			return "", fmt.Errorf("small filler file: %w", err)
		}
	}
	return fmt.Sprintf("data full, +%d small files", n), nil
}

// fillInodes creates empty files until about target inodes are free (f_ffree); target 0
// takes every inode the file system will give.
func fillInodes(mnt string, target int64) (int64, error) {
	dir := filepath.Join(mnt, fillerDir)
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return 0, err
	}
	n := 0
	for {
		free, err := statFree(mnt)
		if err != nil {
			return 0, err
		}
		if free.inodes <= target {
			return free.inodes, nil
		}
		for i := int64(0); i < free.inodes-target; i++ {
			fd, err := unix.Open(filepath.Join(dir, fmt.Sprintf("i%06d", n)), unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, 0o600)
			n++
			if errors.Is(err, unix.ENOSPC) {
				return 0, nil
			}
			if err != nil {
				return 0, fmt.Errorf("inode filler: %w", err)
			}
			unix.Close(fd)
		}
	}
}

// removeFillers takes the fillers away again, as an administrator who freed space would before
// trying again, and syncs nothing: btrfs counts freed space as free (statfs) only once its
// transaction commits, up to 30 seconds later, and the space check of plan and apply must see
// the space anyway (it syncs a btrfs that looks short and counts again).
func removeFillers(mnt string) error {
	if err := os.RemoveAll(filepath.Join(mnt, fillerDir)); err != nil {
		return err
	}
	if err := os.Remove(filepath.Join(mnt, fillerFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// fsSupported checks the kernel knows the file system (loading its module when it can).
func fsSupported(name string) bool {
	has := func() bool {
		b, err := os.ReadFile("/proc/filesystems")
		if err != nil {
			return false
		}
		for _, l := range strings.Split(string(b), "\n") {
			if strings.TrimSpace(strings.TrimPrefix(l, "nodev")) == name {
				return true
			}
		}
		return false
	}
	if has() {
		return true
	}
	_ = exec.Command("modprobe", name).Run()
	return has()
}
