//go:build linux

package faults

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// iocR is _IOR(typ, nr, size) of the kernel's ioctl encoding for this architecture
// (include/uapi/asm-generic/ioctl.h; powerpc and mips put the direction one bit lower and
// give the size 13 bits: arch/*/include/uapi/asm/ioctl.h).
func iocR(typ byte, nr uint8, size uintptr) uintptr {
	const read = 2 // _IOC_READ, the same value everywhere
	dirShift := uintptr(30)
	switch runtime.GOARCH {
	case "ppc64", "ppc64le", "mips", "mipsle", "mips64", "mips64le":
		dirShift = 29
	}
	return read<<dirShift | size<<16 | uintptr(typ)<<8 | uintptr(nr)
}

// goingDown is XFS_IOC_GOINGDOWN, _IOR('X', 125, __u32) (fs/xfs/libxfs/xfs_fs.h); ext4
// implements the same number as EXT4_IOC_SHUTDOWN (fs/ext4/ext4.h). btrfs has none: it
// answers ENOTTY.
var goingDown = iocR('X', 125, 4)

// goingDownNoLogFlush is XFS_FSOP_GOING_FLAGS_NOLOGFLUSH (EXT4_GOING_FLAGS_NOLOGFLUSH):
// the file system stops at once, without writing its log first, as a power cut would leave
// it; whatever the log had not written is gone after the next mount's recovery.
const goingDownNoLogFlush = 2

// errNoShutdown: the file system has no shutdown ioctl.
var errNoShutdown = errors.New("the file system has no shutdown ioctl (ENOTTY)")

// shutdown stops the file system mounted at mnt (NOLOGFLUSH): every later call on it fails
// with EIO until it is unmounted and mounted again.
func shutdown(mnt string) error {
	f, err := os.Open(mnt)
	if err != nil {
		return fmt.Errorf("open %s: %w", mnt, err)
	}
	defer f.Close()
	flag := uint32(goingDownNoLogFlush)
	_, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), goingDown, uintptr(unsafe.Pointer(&flag)))
	switch {
	case e == unix.ENOTTY:
		return errNoShutdown
	case e != 0:
		return fmt.Errorf("shutdown ioctl on %s: %w", mnt, e)
	}
	return nil
}

// setSizeLimit makes the loop device dev end at limit bytes (0: at the end of its image):
// LOOP_SET_STATUS64 with lo_sizelimit, then LOOP_SET_CAPACITY. Reads and writes of a file
// system mounted from it fail with EIO past the cut ("attempt to access beyond end of
// device"), as on a disk that lost its tail.
func setSizeLimit(dev string, limit uint64) error {
	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", dev, err)
	}
	defer f.Close()
	fd := int(f.Fd())
	st, err := unix.IoctlLoopGetStatus64(fd)
	if err != nil {
		return fmt.Errorf("LOOP_GET_STATUS64 %s: %w", dev, err)
	}
	st.Sizelimit = limit
	if err := unix.IoctlLoopSetStatus64(fd, st); err != nil {
		return fmt.Errorf("LOOP_SET_STATUS64 %s (sizelimit %d): %w", dev, limit, err)
	}
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.LOOP_SET_CAPACITY, 0); e != 0 {
		return fmt.Errorf("LOOP_SET_CAPACITY %s: %w", dev, e)
	}
	return nil
}
