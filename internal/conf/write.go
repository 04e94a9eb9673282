package conf

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/ocktools/pkcstok-migrate/internal/repofs"
)

// WriteIfUnchanged's steps, in order; hook is called with each name just before that step
// is done.
const (
	StepTmpWritten    = "conf_tmp_written"   // write the new text into opencryptoki.conf_new
	StepTmpSynced     = "conf_tmp_synced"    // set owner, group, mode; fsync the temp file
	StepBackupLinked  = "conf_backup_linked" // hard-link opencryptoki.conf as opencryptoki.conf_BAK
	StepRenamed       = "conf_renamed"       // rename opencryptoki.conf_new over opencryptoki.conf
	StepDirSynced     = "conf_dir_synced"    // fsync the conf directory
	maxConfReadLength = MaxSize + 1
)

// WriteOptions says which links of the replaced conf WriteIfUnchanged keeps.
type WriteOptions struct {
	// Pristine makes opencryptoki.conf_BAK, a hard link of the conf replaced, unless it exists.
	Pristine bool
	// Keep, when not "", is a name in the conf directory under which the conf replaced is
	// hard-linked, so that RestoreKept can put it back.
	Keep string
}

// WriteResult describes a finished Write.
type WriteResult struct {
	ConfPath   string
	BackupPath string
	BackupMade bool        // opencryptoki.conf_BAK was made by this write (opts.Pristine)
	Mode       os.FileMode // permission bits kept from the original
	UID, GID   int         // owner kept from the original
	// KeptDev and KeptIno are the identity of the conf replaced, linked as WriteOptions.Keep.
	KeptDev, KeptIno uint64
}

// WriteIfUnchanged replaces <confdir>/opencryptoki.conf with newContent. If old is not nil,
// the current file must hold exactly old (else ErrConfChanged): the edit was computed from it.
//
// Everything happens relative to the conf directory opened with O_NOFOLLOW; neither the
// directory nor the conf may be a symbolic link (repofs.ErrSymlink). Steps:
//  1. a stale opencryptoki.conf_new is removed if it is a regular file;
//  2. opencryptoki.conf_new is created (O_EXCL|O_NOFOLLOW, mode 0600), written, given the
//     original's owner, group and mode (upstream forces root:root 0644; pkcsslotd refuses a
//     world-writable conf, and admins may have chosen 0640), and fsynced;
//  3. with opts.Pristine, opencryptoki.conf_BAK is made as a hard link of the original when it
//     does not exist (the conf from before the first migration: an existing one is never
//     replaced), so the conf path is never missing (upstream renames it away first); with
//     opts.Keep, the original is also hard-linked under that name (a stale regular file there
//     is replaced): the conf a failed run puts back with one rename (RestoreKept);
//  4. opencryptoki.conf_new is renamed over opencryptoki.conf and the directory is fsynced.
//
// hook (may be nil) is called with the Step* name before each step; when it returns an error
// WriteIfUnchanged stops, removes the temp file and returns that error (the backup link may remain).
func WriteIfUnchanged(confdir string, old, newContent []byte, opts WriteOptions, hook func(step string) error) (res *WriteResult, err error) {
	if hook == nil {
		hook = func(string) error { return nil }
	}
	dfd, err := openDir(confdir)
	if err != nil {
		return nil, err
	}
	defer unix.Close(dfd)
	at := func(name string) string { return filepath.Join(confdir, name) }

	// The current conf: a regular file, read for the backup check and its owner and mode.
	cur, curSt, err := readAt(dfd, confName)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", at(confName), err)
	}
	if old != nil && !bytes.Equal(cur, old) {
		return nil, fmt.Errorf("%s: %w", at(confName), ErrConfChanged)
	}
	res = &WriteResult{
		ConfPath:   at(confName),
		BackupPath: at(backupName),
		Mode:       os.FileMode(curSt.Mode & 0o777),
		UID:        int(curSt.Uid),
		GID:        int(curSt.Gid),
	}

	// A stale kept conf (a regular file only) is replaced.
	if opts.Keep != "" {
		if err := removeStaleRegular(dfd, opts.Keep, at); err != nil {
			return nil, err
		}
	}

	// A stale temp file from an interrupted run.
	var tmpSt unix.Stat_t
	switch err := unix.Fstatat(dfd, TempName, &tmpSt, unix.AT_SYMLINK_NOFOLLOW); {
	case err == nil:
		if tmpSt.Mode&unix.S_IFMT != unix.S_IFREG {
			return nil, fmt.Errorf("%s exists and is not a regular file; remove it by hand", at(TempName))
		}
		if err := unix.Unlinkat(dfd, TempName, 0); err != nil {
			return nil, &fs.PathError{Op: "remove stale", Path: at(TempName), Err: err}
		}
	case errors.Is(err, unix.ENOENT):
	default:
		return nil, &fs.PathError{Op: "stat", Path: at(TempName), Err: err}
	}

	tfd, err := unix.Openat(dfd, TempName, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, &fs.PathError{Op: "create", Path: at(TempName), Err: err}
	}
	tmp := os.NewFile(uintptr(tfd), at(TempName))
	renamed := false
	defer func() {
		if tmp != nil {
			tmp.Close()
		}
		if !renamed {
			_ = unix.Unlinkat(dfd, TempName, 0)
		}
	}()

	if err := hook(StepTmpWritten); err != nil {
		return nil, err
	}
	if _, err := tmp.Write(newContent); err != nil {
		return nil, err // an *fs.PathError naming the temp file
	}
	if err := hook(StepTmpSynced); err != nil {
		return nil, err
	}
	// chown before chmod: chown may clear set-id bits.
	if err := unix.Fchown(tfd, int(curSt.Uid), int(curSt.Gid)); err != nil {
		return nil, fmt.Errorf("chown %s to %d:%d: %w", at(TempName), curSt.Uid, curSt.Gid, err)
	}
	if err := unix.Fchmod(tfd, curSt.Mode&0o7777); err != nil {
		return nil, &fs.PathError{Op: "chmod", Path: at(TempName), Err: err}
	}
	// Durability: the new content before its name replaces the conf; without it a power
	// cut after the rename can leave an empty conf (crash/testdata/states/fail_conf_empty).
	if err := tmp.Sync(); err != nil {
		return nil, err // an *fs.PathError naming the temp file
	}
	err = tmp.Close()
	tmp = nil
	if err != nil {
		return nil, err // an *fs.PathError naming the temp file
	}

	if err := hook(StepBackupLinked); err != nil {
		return nil, err
	}
	if opts.Pristine {
		made, err := linkIfAbsent(dfd, backupName, curSt, at)
		if err != nil {
			return nil, err
		}
		res.BackupMade = made
	}
	if opts.Keep != "" {
		if _, err := linkIfAbsent(dfd, opts.Keep, curSt, at); err != nil {
			return nil, err
		}
		res.KeptDev, res.KeptIno = uint64(curSt.Dev), curSt.Ino
	}

	if err := hook(StepRenamed); err != nil {
		return nil, err
	}
	if err := unix.Renameat(dfd, TempName, dfd, confName); err != nil {
		return nil, fmt.Errorf("rename %s to %s: %w", at(TempName), at(confName), err)
	}
	renamed = true

	if err := hook(StepDirSynced); err != nil {
		return nil, err
	}
	// Durability: the backup link and the rename, before the edit is reported done.
	if err := unix.Fsync(dfd); err != nil {
		return nil, &fs.PathError{Op: "fsync", Path: confdir, Err: err}
	}
	return res, nil
}

// openDir opens confdir as a directory without following a symlink in its last element.
func openDir(confdir string) (int, error) {
	fi, err := os.Lstat(confdir)
	if err != nil {
		return -1, fmt.Errorf("conf directory: %w", err)
	}
	if fi.Mode()&os.ModeSymlink != 0 {
		return -1, fmt.Errorf("conf directory %s: %w", confdir, repofs.ErrSymlink)
	}
	if !fi.IsDir() {
		return -1, fmt.Errorf("conf directory %s: not a directory", confdir)
	}
	fd, err := unix.Open(confdir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ELOOP) {
			return -1, fmt.Errorf("conf directory %s: %w", confdir, repofs.ErrSymlink)
		}
		return -1, &fs.PathError{Op: "open conf directory", Path: confdir, Err: err}
	}
	return fd, nil
}

// readAt reads a regular file (not a symlink) in the directory dfd, at most MaxSize bytes.
func readAt(dfd int, name string) ([]byte, *unix.Stat_t, error) {
	fd, err := unix.Openat(dfd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ELOOP) {
			return nil, nil, repofs.ErrSymlink
		}
		return nil, nil, err
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, nil, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, nil, repofs.ErrNotRegular
	}
	b, err := io.ReadAll(io.LimitReader(f, maxConfReadLength))
	if pe := (*fs.PathError)(nil); errors.As(err, &pe) {
		err = pe.Err // the caller names the file
	}
	if err != nil {
		return nil, nil, err
	}
	if len(b) > MaxSize {
		return nil, nil, fmt.Errorf("%w (more than %d bytes)", repofs.ErrTooLarge, MaxSize)
	}
	return b, &st, nil
}

// readConf reads <confdir>/opencryptoki.conf with the same safety as WriteIfUnchanged (no
// symlinks, a regular file, at most MaxSize bytes).
func readConf(confdir string) ([]byte, error) {
	dfd, err := openDir(confdir)
	if err != nil {
		return nil, err
	}
	defer unix.Close(dfd)
	b, _, err := readAt(dfd, confName)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(confdir, confName), err)
	}
	return b, nil
}

// removeStaleRegular removes name when it is a regular file; anything else there is an error.
func removeStaleRegular(dfd int, name string, at func(string) string) error {
	var st unix.Stat_t
	switch err := unix.Fstatat(dfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); {
	case err == nil:
		if st.Mode&unix.S_IFMT != unix.S_IFREG {
			return fmt.Errorf("%s exists and is not a regular file; remove it by hand", at(name))
		}
		if err := unix.Unlinkat(dfd, name, 0); err != nil {
			return &fs.PathError{Op: "remove stale", Path: at(name), Err: err}
		}
	case errors.Is(err, unix.ENOENT):
	default:
		return &fs.PathError{Op: "stat", Path: at(name), Err: err}
	}
	return nil
}

// linkIfAbsent hard-links the conf (described by cur) as name unless name exists; the link
// must be the file that was read, not one put in its place meanwhile (ErrConfChanged).
func linkIfAbsent(dfd int, name string, cur *unix.Stat_t, at func(string) string) (bool, error) {
	if err := unix.Linkat(dfd, confName, dfd, name, 0); err != nil {
		if errors.Is(err, unix.EEXIST) {
			return false, nil
		}
		return false, fmt.Errorf("link %s to %s: %w", at(confName), at(name), err)
	}
	var st unix.Stat_t
	if err := unix.Fstatat(dfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		// Not a sign of a changed conf: the disk did not answer (EIO).
		return false, &fs.PathError{Op: "stat", Path: at(name), Err: err}
	}
	if st.Dev != cur.Dev || st.Ino != cur.Ino {
		_ = unix.Unlinkat(dfd, name, 0)
		return false, fmt.Errorf("%s: %w", at(confName), ErrConfChanged)
	}
	return true, nil
}

// RestoreKept puts the conf kept under keep (WriteOptions.Keep) back as opencryptoki.conf with
// one rename, which allocates nothing, and fsyncs the directory. It refuses a kept entry that
// is not a regular file, or not the file the write kept (WriteResult.KeptDev, KeptIno).
func RestoreKept(confdir, keep string, dev, ino uint64) error {
	dfd, err := openDir(confdir)
	if err != nil {
		return err
	}
	defer unix.Close(dfd)
	var st unix.Stat_t
	if err := unix.Fstatat(dfd, keep, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return &fs.PathError{Op: "stat", Path: filepath.Join(confdir, keep), Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG || uint64(st.Dev) != dev || st.Ino != ino {
		return fmt.Errorf("%s is not the conf this run kept: %w", filepath.Join(confdir, keep), ErrConfChanged)
	}
	if err := unix.Renameat(dfd, keep, dfd, confName); err != nil {
		return &fs.PathError{Op: "rename", Path: filepath.Join(confdir, keep), Err: err}
	}
	if err := unix.Fsync(dfd); err != nil {
		return &fs.PathError{Op: "fsync", Path: confdir, Err: err}
	}
	return nil
}

// RemoveKept removes the conf kept under keep, when it is a regular file, and fsyncs the
// directory; a missing one is no error.
func RemoveKept(confdir, keep string) error {
	dfd, err := openDir(confdir)
	if err != nil {
		return err
	}
	defer unix.Close(dfd)
	if err := removeStaleRegular(dfd, keep, func(n string) string { return filepath.Join(confdir, n) }); err != nil {
		return err
	}
	if err := unix.Fsync(dfd); err != nil {
		return &fs.PathError{Op: "fsync", Path: confdir, Err: err}
	}
	return nil
}
