// Package trusted reads and writes the files the tool takes on trust from the one who runs
// it: saved plans, requests and PIN files it reads, plan files it writes. The tool runs as
// root in directories members of the token group can change, so a path is never
// followed through a symlink in its last component, a FIFO or device there is refused
// without blocking, and a file is believed only when root or the caller owns it and nobody
// else may write it.
package trusted

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/ocktools/pkcstok-migrate/internal/repofs"
)

// Errors of ReadFile, for errors.Is, besides repofs.ErrSymlink, repofs.ErrNotRegular and
// repofs.ErrTooLarge; the messages name the path and what is wrong.
var (
	ErrOwner = errors.New("owner not trusted")
	ErrMode  = errors.New("mode too open")
)

// refusal is an error whose text is its message alone (no sentinel appended); errors.Is
// finds its kind.
type refusal struct {
	msg  string
	kind error
}

func (r *refusal) Error() string { return r.msg }
func (r *refusal) Unwrap() error { return r.kind }

// Rules say what ReadFile accepts.
type Rules struct {
	// Euid is the caller's effective uid: files owned by it or by root are accepted.
	Euid int
	// DenyPerm are the permission bits that must all be clear (0o022: nobody else may
	// write; 0o077: nobody else may read or write).
	DenyPerm fs.FileMode
	// Hint is appended to a DenyPerm error ("chmod 600").
	Hint string
	// MaxSize bounds the file's size; 0 means no bound.
	MaxSize int64
	// ReadAtMost, when above 0, reads only the file's first ReadAtMost bytes (a PIN
	// file's first line), however long the file is.
	ReadAtMost int64
}

// Info is what ReadFile saw of the file it read.
type Info struct {
	Mode fs.FileMode // permission bits only
	Uid  int
	Size int64
}

const readFlags = unix.O_RDONLY | unix.O_NOFOLLOW | unix.O_NONBLOCK | unix.O_CLOEXEC | unix.O_NOCTTY

// ReadFile reads path under rules: the last component must not be a symlink, the open does
// not block (a FIFO is refused after fstat, never read), the file must be regular, owned by
// root or rules.Euid, without any of rules.DenyPerm, and at most rules.MaxSize bytes.
func ReadFile(path string, rules Rules) ([]byte, Info, error) {
	fd, err := openRetry(path)
	if err != nil {
		switch {
		case errors.Is(err, unix.ELOOP):
			return nil, Info{}, &refusal{path + " is a symlink: refusing", repofs.ErrSymlink}
		case errors.Is(err, unix.ENXIO): // a socket
			return nil, Info{}, &refusal{path + " is not a regular file: refusing", repofs.ErrNotRegular}
		}
		return nil, Info{}, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, Info{}, &fs.PathError{Op: "stat", Path: path, Err: err}
	}
	info := Info{Mode: fs.FileMode(st.Mode & 0o777), Uid: int(st.Uid), Size: st.Size}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, info, &refusal{path + " is not a regular file: refusing", repofs.ErrNotRegular}
	}
	if info.Uid != 0 && info.Uid != rules.Euid {
		return nil, info, &refusal{fmt.Sprintf("%s is owned by uid %d, neither root nor the caller (uid %d): refusing", path, info.Uid, rules.Euid), ErrOwner}
	}
	if bad := info.Mode & rules.DenyPerm; bad != 0 {
		what := "written"
		if rules.DenyPerm&0o044 != 0 {
			what = "accessible"
		}
		msg := fmt.Sprintf("%s has mode %04o: it must not be %s by group or others", path, info.Mode, what)
		if rules.Hint != "" {
			msg += " (" + rules.Hint + ")"
		}
		return nil, info, &refusal{msg, ErrMode}
	}
	if rules.MaxSize > 0 && st.Size > rules.MaxSize {
		return nil, info, &refusal{fmt.Sprintf("%s is %d bytes, more than the %d accepted", path, st.Size, rules.MaxSize), repofs.ErrTooLarge}
	}
	// Read up to one byte past the size: a file that grows after fstat is cut at MaxSize.
	limit := st.Size + 1
	if rules.MaxSize > 0 && limit > rules.MaxSize+1 {
		limit = rules.MaxSize + 1
	}
	if rules.ReadAtMost > 0 && limit > rules.ReadAtMost {
		limit = rules.ReadAtMost
	}
	buf := make([]byte, 0, limit)
	for int64(len(buf)) < limit {
		n, err := unix.Read(fd, buf[len(buf):limit])
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return nil, info, &fs.PathError{Op: "read", Path: path, Err: err}
		}
		if n == 0 {
			break
		}
		buf = buf[:len(buf)+n]
	}
	if rules.MaxSize > 0 && int64(len(buf)) > rules.MaxSize {
		return nil, info, &refusal{fmt.Sprintf("%s grew past the %d bytes accepted", path, rules.MaxSize), repofs.ErrTooLarge}
	}
	return buf, info, nil
}

func openRetry(path string) (int, error) {
	for {
		fd, err := unix.Open(path, readFlags, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		return fd, err
	}
}

// WriteFile replaces path with data, mode 0600: a new file with an unpredictable name in
// path's directory, created exclusively without following a symlink, fchmod 0600 whatever
// the umask, written and fsynced, then renamed onto path (the rename replaces a symlink at
// path instead of following it) and the directory fsynced. On error the temporary file is
// removed and path is untouched.
func WriteFile(path string, data []byte) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	var rnd [12]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return &fs.PathError{Op: "write", Path: path, Err: err}
	}
	tmp := filepath.Join(dir, "."+base+".tmp-"+hex.EncodeToString(rnd[:]))
	fd, err := unix.Open(tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NOCTTY, 0o600)
	if err != nil {
		return &fs.PathError{Op: "create", Path: tmp, Err: err}
	}
	defer func() {
		if fd >= 0 {
			unix.Close(fd)
		}
		if err != nil {
			unix.Unlink(tmp)
		}
	}()
	if err := unix.Fchmod(fd, 0o600); err != nil {
		return &fs.PathError{Op: "chmod", Path: tmp, Err: err}
	}
	for off := 0; off < len(data); {
		n, err := unix.Write(fd, data[off:])
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return &fs.PathError{Op: "write", Path: tmp, Err: err}
		}
		off += n
	}
	if err := unix.Fsync(fd); err != nil {
		return &fs.PathError{Op: "fsync", Path: tmp, Err: err}
	}
	cerr := unix.Close(fd)
	fd = -1
	if cerr != nil {
		return &fs.PathError{Op: "close", Path: tmp, Err: cerr}
	}
	if err := unix.Rename(tmp, path); err != nil {
		return &fs.PathError{Op: "rename", Path: path, Err: err}
	}
	if dfd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0); err == nil {
		unix.Fsync(dfd)
		unix.Close(dfd)
	}
	return nil
}
