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
}

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
	return fi, nil
}

// Usage counts the tree below d (d included) from its metadata: every entry is listed under
// the entry bound (listDir) and its size taken with fstatat, never opened or read. A regular
// file counts its size plus slack bytes, rounded up to whole blocks of blockSize; a directory
// counts one block. exclude leaves entries out by their path relative to d.
func (d *Dir) Usage(blockSize, slack int64, exclude func(rel string) bool) (Usage, error) {
	u := Usage{Dirs: 1, Bytes: blockSize}
	var seen int
	return u, d.usage(d.fd, ".", d.path, blockSize, slack, exclude, &u, &seen, 0)
}

func (d *Dir) usage(fd int, rel, display string, blockSize, slack int64, exclude func(string) bool, u *Usage, seen *int, depth int) error {
	if depth >= maxDepth {
		return &fs.PathError{Op: "read directory", Path: display, Err: fmt.Errorf("deeper than %d levels: %w", maxDepth, ErrTooLarge)}
	}
	entries, err := listDir(fd, display, func(name string) (bool, error) {
		if *seen++; *seen > entryBound {
			return false, &fs.PathError{Op: "read directory", Path: display, Err: fmt.Errorf("the repository holds more than %d files and directories: %w", entryBound, ErrTooLarge)}
		}
		return exclude == nil || !exclude(path.Join(rel, name)), nil
	})
	if err != nil {
		return err
	}
	for _, e := range entries {
		var st unix.Stat_t
		if err := unix.Fstatat(fd, e.Name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return pathErr("stat", path.Join(display, e.Name), err)
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			u.Files++
			u.Bytes += (st.Size + slack + blockSize - 1) / blockSize * blockSize
		case unix.S_IFDIR:
			u.Dirs++
			u.Bytes += blockSize
			sub, err := openRetry(fd, e.Name, dirOpenFlags, 0)
			if err != nil {
				return pathErr("open directory", path.Join(display, e.Name), classify(fd, e.Name, err))
			}
			err = d.usage(sub, path.Join(rel, e.Name), path.Join(display, e.Name), blockSize, slack, exclude, u, seen, depth+1)
			unix.Close(sub)
			if err != nil {
				return err
			}
		}
	}
	return nil
}
