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

// WriteResult describes a finished Write.
type WriteResult struct {
	ConfPath       string
	BackupPath     string
	BackupReplaced bool        // an identical opencryptoki.conf_BAK from an earlier run was replaced
	Mode           os.FileMode // permission bits kept from the original
	UID, GID       int         // owner kept from the original
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
//  3. opencryptoki.conf_BAK is made as a hard link of the original, so the conf path is never
//     missing (upstream renames it away first). An existing _BAK identical to the current conf
//     (left by an interrupted run) is replaced; any other _BAK gives ErrBackupExists;
//  4. opencryptoki.conf_new is renamed over opencryptoki.conf and the directory is fsynced.
//
// hook (may be nil) is called with the Step* name before each step; when it returns an error
// WriteIfUnchanged stops, removes the temp file and returns that error (the backup link may remain).
func WriteIfUnchanged(confdir string, old, newContent []byte, hook func(step string) error) (res *WriteResult, err error) {
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

	// An existing backup is only replaced when it holds the current bytes.
	var bakSt unix.Stat_t
	switch err := unix.Fstatat(dfd, backupName, &bakSt, unix.AT_SYMLINK_NOFOLLOW); {
	case err == nil:
		if bakSt.Mode&unix.S_IFMT != unix.S_IFREG {
			return nil, fmt.Errorf("%s: %w (not a regular file)", at(backupName), ErrBackupExists)
		}
		bak, _, err := readAt(dfd, backupName)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", at(backupName), err)
		}
		if !bytes.Equal(bak, cur) {
			return nil, fmt.Errorf("%s: %w; remove it first", at(backupName), ErrBackupExists)
		}
		if err := unix.Unlinkat(dfd, backupName, 0); err != nil {
			return nil, &fs.PathError{Op: "remove stale", Path: at(backupName), Err: err}
		}
		res.BackupReplaced = true
	case errors.Is(err, unix.ENOENT):
	default:
		return nil, &fs.PathError{Op: "stat", Path: at(backupName), Err: err}
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
	if err := unix.Linkat(dfd, confName, dfd, backupName, 0); err != nil {
		if errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("%s: %w (created meanwhile)", at(backupName), ErrBackupExists)
		}
		return nil, fmt.Errorf("link %s to %s: %w", at(confName), at(backupName), err)
	}
	// The link must be the file that was read, not one put in its place meanwhile.
	if err := unix.Fstatat(dfd, backupName, &bakSt, unix.AT_SYMLINK_NOFOLLOW); err != nil ||
		bakSt.Dev != curSt.Dev || bakSt.Ino != curSt.Ino {
		_ = unix.Unlinkat(dfd, backupName, 0)
		return nil, fmt.Errorf("%s: %w", at(confName), ErrConfChanged)
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

// rollback puts opencryptoki.conf_BAK back as opencryptoki.conf with one atomic rename, with
// the same safety as WriteIfUnchanged (no symlinks, relative to the opened directory), and
// fsyncs the directory. errNoBackup when there is no backup.
func rollback(confdir string) error {
	dfd, err := openDir(confdir)
	if err != nil {
		return err
	}
	defer unix.Close(dfd)
	var st unix.Stat_t
	if err := unix.Fstatat(dfd, backupName, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("%s: %w", filepath.Join(confdir, backupName), errNoBackup)
		}
		return &fs.PathError{Op: "stat", Path: filepath.Join(confdir, backupName), Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return fmt.Errorf("%s: %w (or not a regular file)", filepath.Join(confdir, backupName), repofs.ErrSymlink)
	}
	if err := unix.Renameat(dfd, backupName, dfd, confName); err != nil {
		return fmt.Errorf("rename %s to %s: %w", backupName, confName, err)
	}
	if err := unix.Fsync(dfd); err != nil {
		return &fs.PathError{Op: "fsync", Path: confdir, Err: err}
	}
	return nil
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
