package repofs

import (
	"fmt"
	"io/fs"
	"path"

	"golang.org/x/sys/unix"
)

// Usage is what a tree holds, counted from its metadata only.
type Usage struct {
	Files, Dirs int64
	// Bytes is the space its regular files take once each is rounded up to whole blocks of
	// the size given to Usage, with slack bytes per file for the format's growth.
	Bytes int64
}

// FSInfo is what a file system has left, and whether it can be written.
type FSInfo struct {
	Dev        uint64
	BlockSize  int64
	FreeBytes  int64 // for an unprivileged writer too (f_bavail)
	FreeInodes int64 // -1: the file system has no inode limit (btrfs reports none)
	ReadOnly   bool
	// InodeBytes is what a new inode takes of the free bytes on a file system that
	// allocates inodes from its free space (XFS: 512 bytes, the default inode size of its
	// v5 format and the larger of the two, taken in chunks of 64); 0 where inodes are set
	// aside when the file system is made (ext4) or counted elsewhere.
	InodeBytes int64
	// CommitsFreedSpace: space freed on it shows as free only once its transaction commits
	// (btrfs): a count that looks short may be stale until the file system is synced.
	CommitsFreedSpace bool
}

// Magic numbers of statfs(2)'s f_type (linux/magic.h).
const (
	xfsMagic   = 0x58465342
	btrfsMagic = 0x9123683e
	// xfsInodeBytes is the inode size of mkfs.xfs's default (v5) format.
	xfsInodeBytes = 512
)

// StatFS describes the file system d is on.
func (d *Dir) StatFS() (FSInfo, error) {
	var sfs unix.Statfs_t
	if err := unix.Fstatfs(d.fd, &sfs); err != nil {
		return FSInfo{}, pathErr("statfs", d.path, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(d.fd, &st); err != nil {
		return FSInfo{}, pathErr("stat", d.path, err)
	}
	bsize := int64(sfs.Bsize) // uint32 on s390x
	if sfs.Frsize > 0 {
		bsize = int64(sfs.Frsize)
	}
	fi := FSInfo{Dev: uint64(st.Dev), BlockSize: bsize, FreeBytes: int64(sfs.Bavail) * bsize, FreeInodes: -1,
		ReadOnly: sfs.Flags&unix.ST_RDONLY != 0}
	if sfs.Files > 0 {
		fi.FreeInodes = int64(sfs.Ffree)
	}
	switch uint32(sfs.Type) { // int64 on most architectures, uint32 on s390x
	case xfsMagic:
		fi.InodeBytes = xfsInodeBytes
	case btrfsMagic:
		fi.CommitsFreedSpace = true
	}
	return fi, nil
}

// Usage counts the tree below d (d included) from its metadata: every entry is scanned under
// the entry bound and its size taken with fstatat, never opened or read. A regular file counts
// its size plus slack bytes, rounded up to whole blocks of blockSize; a directory counts one
// block. exclude leaves entries out by their path relative to d. Nothing is sorted or held
// but the names of one directory's subdirectories.
func (d *Dir) Usage(blockSize, slack int64, exclude func(rel string) bool) (Usage, error) {
	w := &usageWalk{blockSize: blockSize, slack: slack, exclude: exclude, u: Usage{Dirs: 1, Bytes: blockSize}}
	err := w.dir(d.fd, ".", d.path, 0)
	return w.u, err
}

// usageWalk is one Usage under way.
type usageWalk struct {
	blockSize, slack int64
	exclude          func(rel string) bool
	u                Usage
	seen             int
}

func (w *usageWalk) dir(fd int, rel, display string, depth int) error {
	if depth >= maxDepth {
		return &fs.PathError{Op: "read directory", Path: display, Err: fmt.Errorf("deeper than %d levels: %w", maxDepth, ErrTooLarge)}
	}
	var subdirs []string
	err := ScanDir(fd, display, func(b []byte, _ uint8) error {
		if w.seen++; w.seen > entryBound {
			return &fs.PathError{Op: "read directory", Path: display, Err: fmt.Errorf("the repository holds more than %d files and directories: %w", entryBound, ErrTooLarge)}
		}
		name := string(b)
		if w.exclude != nil && w.exclude(path.Join(rel, name)) {
			return nil
		}
		var st unix.Stat_t
		if err := unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return pathErr("stat", path.Join(display, name), err)
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			w.u.Files++
			w.u.Bytes += (st.Size + w.slack + w.blockSize - 1) / w.blockSize * w.blockSize
		case unix.S_IFDIR:
			w.u.Dirs++
			w.u.Bytes += w.blockSize
			subdirs = append(subdirs, name)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, name := range subdirs {
		sub, err := openRetry(fd, name, dirOpenFlags, 0)
		if err != nil {
			return pathErr("open directory", path.Join(display, name), classify(fd, name, err))
		}
		err = w.dir(sub, path.Join(rel, name), path.Join(display, name), depth+1)
		unix.Close(sub)
		if err != nil {
			return err
		}
	}
	return nil
}
