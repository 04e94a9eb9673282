package conf

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ocktools/pkcstok-migrate/internal/repofs"
)

var pristine = WriteOptions{Pristine: true, Keep: "opencryptoki.conf_KEPT"}

const (
	origConf = "slot 3\n{\n    stdll = libpkcs11_sw.so\n}\n"
	newConf  = "slot 3\n{\n    stdll = libpkcs11_sw.so\n    tokversion = 3.12\n}\n"
)

func confDir(t *testing.T, mode os.FileMode) string {
	t.Helper()
	dir := t.TempDir()
	p := filepath.Join(dir, confName)
	require.NoError(t, os.WriteFile(p, []byte(origConf), 0o600))
	require.NoError(t, os.Chmod(p, mode))
	return dir
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	require.NoError(t, err)
	return string(b)
}

func assertNoTemp(t *testing.T, dir string) {
	t.Helper()
	_, err := os.Lstat(filepath.Join(dir, TempName))
	assert.True(t, errors.Is(err, os.ErrNotExist), "no %s left: %v", TempName, err)
}

func TestWriteKeepsModeOwnerAndBackup(t *testing.T) {
	dir := confDir(t, 0o640)
	conf := filepath.Join(dir, confName)
	uid, gid := os.Getuid(), os.Getgid()
	if os.Geteuid() == 0 {
		uid, gid = 4321, 8765 // root can give the original any owner; it must be kept
		require.NoError(t, os.Chown(conf, uid, gid))
	}
	before, err := os.Stat(conf)
	require.NoError(t, err)

	var steps []string
	res, err := WriteIfUnchanged(dir, nil, []byte(newConf), pristine, func(s string) error { steps = append(steps, s); return nil })
	require.NoError(t, err)
	assert.Equal(t, []string{StepTmpWritten, StepTmpSynced, StepBackupLinked, StepRenamed, StepDirSynced}, steps)

	assert.Equal(t, newConf, readFile(t, conf))
	assert.Equal(t, origConf, readFile(t, filepath.Join(dir, backupName)), "_BAK holds the original bytes")
	fi, err := os.Stat(conf)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o640), fi.Mode().Perm())
	st := fi.Sys().(*syscall.Stat_t)
	assert.Equal(t, [2]int{uid, gid}, [2]int{int(st.Uid), int(st.Gid)})
	assert.Equal(t, os.FileMode(0o640), res.Mode)
	assert.Equal(t, uid, res.UID)
	assert.True(t, res.BackupMade)

	bak, err := os.Stat(filepath.Join(dir, backupName))
	require.NoError(t, err)
	assert.True(t, os.SameFile(before, bak), "_BAK is the original inode (hard link)")
	assertNoTemp(t, dir)
	kept, err := os.Stat(filepath.Join(dir, pristine.Keep))
	require.NoError(t, err)
	assert.True(t, os.SameFile(before, kept), "the kept conf is the original inode (hard link)")

	// RestoreKept puts the original back; the pristine backup stays.
	require.Error(t, RestoreKept(dir, pristine.Keep, res.KeptDev, res.KeptIno+1), "not the file kept")
	require.NoError(t, RestoreKept(dir, pristine.Keep, res.KeptDev, res.KeptIno))
	assert.Equal(t, origConf, readFile(t, conf))
	_, err = os.Lstat(filepath.Join(dir, pristine.Keep))
	assert.True(t, errors.Is(err, os.ErrNotExist))
	assert.Equal(t, origConf, readFile(t, filepath.Join(dir, backupName)))
	assert.Error(t, RestoreKept(dir, pristine.Keep, res.KeptDev, res.KeptIno))
}

func TestWriteRefusesSymlinks(t *testing.T) {
	// symlinked conf
	dir := t.TempDir()
	real := filepath.Join(dir, "real.conf")
	require.NoError(t, os.WriteFile(real, []byte(origConf), 0o644))
	require.NoError(t, os.Symlink(real, filepath.Join(dir, confName)))
	_, err := WriteIfUnchanged(dir, nil, []byte(newConf), pristine, nil)
	assert.ErrorIs(t, err, repofs.ErrSymlink)
	assert.Equal(t, origConf, readFile(t, real))
	assertNoTemp(t, dir)
	_, err = readConf(dir)
	assert.ErrorIs(t, err, repofs.ErrSymlink)

	// symlinked directory
	realDir := confDir(t, 0o644)
	link := filepath.Join(t.TempDir(), "etc-link")
	require.NoError(t, os.Symlink(realDir, link))
	_, err = WriteIfUnchanged(link, nil, []byte(newConf), pristine, nil)
	assert.ErrorIs(t, err, repofs.ErrSymlink)
	assert.Equal(t, origConf, readFile(t, filepath.Join(realDir, confName)))
	assertNoTemp(t, realDir)
	assert.ErrorIs(t, RestoreKept(link, pristine.Keep, 0, 0), repofs.ErrSymlink)

	// a symlinked _BAK is never followed or replaced
	dir = confDir(t, 0o644)
	victim := filepath.Join(t.TempDir(), "victim")
	require.NoError(t, os.WriteFile(victim, []byte("keep"), 0o644))
	require.NoError(t, os.Symlink(victim, filepath.Join(dir, backupName)))
	_, err = WriteIfUnchanged(dir, nil, []byte(newConf), pristine, nil)
	require.NoError(t, err)
	assert.Equal(t, "keep", readFile(t, victim))
	fi, err := os.Lstat(filepath.Join(dir, backupName))
	require.NoError(t, err)
	assert.True(t, fi.Mode()&os.ModeSymlink != 0)

	// a kept conf that is not a regular file is refused, not replaced
	dir = confDir(t, 0o644)
	require.NoError(t, os.Symlink(victim, filepath.Join(dir, pristine.Keep)))
	_, err = WriteIfUnchanged(dir, nil, []byte(newConf), pristine, nil)
	assert.Error(t, err)
	assert.Equal(t, origConf, readFile(t, filepath.Join(dir, confName)))

	// a symlinked stale temp file is not removed
	dir = confDir(t, 0o644)
	target := filepath.Join(t.TempDir(), "victim")
	require.NoError(t, os.WriteFile(target, []byte("keep"), 0o644))
	require.NoError(t, os.Symlink(target, filepath.Join(dir, TempName)))
	_, err = WriteIfUnchanged(dir, nil, []byte(newConf), pristine, nil)
	assert.Error(t, err)
	assert.Equal(t, "keep", readFile(t, target))
	assert.Equal(t, origConf, readFile(t, filepath.Join(dir, confName)))
}

// opencryptoki.conf_BAK is the conf from before the first migration: a second write (another
// slot's migration) leaves it as it is, and never needs it gone.
func TestWriteBackupIsPristine(t *testing.T) {
	dir := confDir(t, 0o644)
	require.NoError(t, os.WriteFile(filepath.Join(dir, backupName), []byte("older\n"), 0o644))
	res, err := WriteIfUnchanged(dir, nil, []byte(newConf), pristine, nil)
	require.NoError(t, err)
	assert.False(t, res.BackupMade)
	assert.Equal(t, newConf, readFile(t, filepath.Join(dir, confName)))
	assert.Equal(t, "older\n", readFile(t, filepath.Join(dir, backupName)))
	assertNoTemp(t, dir)

	// Without Pristine no backup is made at all.
	dir = confDir(t, 0o644)
	res, err = WriteIfUnchanged(dir, nil, []byte(newConf), WriteOptions{}, nil)
	require.NoError(t, err)
	assert.False(t, res.BackupMade)
	_, err = os.Lstat(filepath.Join(dir, backupName))
	assert.True(t, errors.Is(err, os.ErrNotExist))
}

func TestWriteStaleTempRemoved(t *testing.T) {
	dir := confDir(t, 0o644)
	require.NoError(t, os.WriteFile(filepath.Join(dir, TempName), []byte("junk"), 0o600))
	_, err := WriteIfUnchanged(dir, nil, []byte(newConf), pristine, nil)
	require.NoError(t, err)
	assert.Equal(t, newConf, readFile(t, filepath.Join(dir, confName)))
	assertNoTemp(t, dir)
}

func TestWriteIfUnchanged(t *testing.T) {
	dir := confDir(t, 0o644)
	_, err := WriteIfUnchanged(dir, []byte("something else"), []byte(newConf), pristine, nil)
	assert.ErrorIs(t, err, ErrConfChanged)
	assert.Equal(t, origConf, readFile(t, filepath.Join(dir, confName)))
	_, err = WriteIfUnchanged(dir, []byte(origConf), []byte(newConf), pristine, nil)
	require.NoError(t, err)
	assert.Equal(t, newConf, readFile(t, filepath.Join(dir, confName)))
}

func TestWriteHookFailure(t *testing.T) {
	boom := errors.New("injected fault")
	for _, step := range []string{StepTmpWritten, StepTmpSynced, StepBackupLinked, StepRenamed} {
		t.Run(step, func(t *testing.T) {
			dir := confDir(t, 0o640)
			_, err := WriteIfUnchanged(dir, nil, []byte(newConf), pristine, func(s string) error {
				if s == step {
					return boom
				}
				return nil
			})
			assert.ErrorIs(t, err, boom)
			assert.Equal(t, origConf, readFile(t, filepath.Join(dir, confName)), "conf byte-identical")
			fi, err := os.Stat(filepath.Join(dir, confName))
			require.NoError(t, err)
			assert.Equal(t, os.FileMode(0o640), fi.Mode().Perm())
			assertNoTemp(t, dir)
			// a rerun (identical _BAK may remain) succeeds
			_, err = WriteIfUnchanged(dir, nil, []byte(newConf), pristine, nil)
			require.NoError(t, err)
			assert.Equal(t, origConf, readFile(t, filepath.Join(dir, backupName)))
		})
	}
	// after the rename the new conf is in place; the error is still reported
	dir := confDir(t, 0o644)
	_, err := WriteIfUnchanged(dir, nil, []byte(newConf), pristine, func(s string) error {
		if s == StepDirSynced {
			return boom
		}
		return nil
	})
	assert.ErrorIs(t, err, boom)
	assert.Equal(t, newConf, readFile(t, filepath.Join(dir, confName)))
	assertNoTemp(t, dir)
}

func TestWriteMissingConf(t *testing.T) {
	dir := t.TempDir()
	_, err := WriteIfUnchanged(dir, nil, []byte(newConf), pristine, nil)
	assert.ErrorIs(t, err, os.ErrNotExist)
	_, err = WriteIfUnchanged(filepath.Join(dir, "nope"), nil, []byte(newConf), pristine, nil)
	assert.ErrorIs(t, err, os.ErrNotExist)
}
