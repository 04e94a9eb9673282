package repofs

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io/fs"
	"path"
	"runtime"
	"sort"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/ocktools/pkcstok-migrate/internal/parallel"
)

// Entry is one directory or regular file met by Walk.
type Entry struct {
	Rel  string // slash-separated path relative to the walked directory; "." for itself
	Name string // last component ("." for the walked directory)
	Mode uint32 // st_mode of the open file (type and permission bits)
	Size int64  // regular files: the number of bytes read
	Dev  uint64
	Ino  uint64
	UID  int // owner and group of the open file
	GID  int
}

// Visitor is what Walk calls; every field may be nil.
type Visitor struct {
	// Dir is called for the walked directory (Rel ".", parent nil) and for every directory
	// below it, depth-first in name order, before its entries. What it returns is the state
	// handed to File for the directory's regular files and to Dir, as parent, for its
	// subdirectories.
	Dir func(e Entry, parent any) (any, error)
	// DirDone is called after all entries of a directory (and of the directories below it)
	// were visited, with the state Dir returned, also when the walk fails (err then says why);
	// it must release what Dir took.
	DirDone func(e Entry, state any, err error) error
	// File is called for every regular file with its whole content (valid during the call
	// only), from up to Workers goroutines at once. What it returns goes to Record.
	File func(e Entry, dir any, data []byte) (any, error)
	// Record is called for every entry (the walked directory first) in the canonical order
	// of the digest, from one goroutine, with what File returned for a regular file (nil for
	// a directory).
	Record func(e Entry, fileResult any)
	// Digest, when not nil, receives the canonical description of the tree that TreeDigest
	// documents, in a single pass with the reads above.
	Digest hash.Hash
	// Workers is how many files of a directory are read (and visited) at once; 0 means
	// GOMAXPROCS.
	Workers int
	// Exclude, when not nil, names entries (by Rel) that the walk leaves out altogether: not
	// opened, not counted, not visited, not in the digest. apply's own entries inside a
	// repository it switches in place are left out this way (layout.Reserved).
	Exclude func(rel string) bool
}

// Walk reads the tree below d once: for d and every entry beneath it, the type is taken from
// the entry itself after opening it without following symlinks, every regular file is read
// whole with a single read of the size fstat reports, and v is told. A symlink anywhere gives
// ErrSymlink, a FIFO, device or socket ErrNotRegular (neither is opened), a file with more
// than one link ErrHardLinked and a file over maxFileSize ErrTooLarge (both from the fstat of
// the open file, before it is read). Each regular file costs openat, fstat, read and close: no
// stat of the name beforehand (the directory listing's entry type says which entries are
// symlinks or special files; the fstat of the opened file is what counts). Directories are
// listed in getdents batches and every name is counted against MaxTreeEntries as it is read
// (listDir), so the bound refuses a huge directory before its names are all held.
func Walk(d *Dir, v Visitor) error {
	w := &walker{v: v, workers: v.Workers}
	if w.workers <= 0 {
		w.workers = runtime.GOMAXPROCS(0)
	}
	if v.Digest != nil {
		digestStart(v.Digest)
	}
	var st unix.Stat_t
	if err := unix.Fstat(d.fd, &st); err != nil {
		return pathErr("stat", d.path, err)
	}
	root := Entry{Rel: ".", Name: ".", Mode: st.Mode, Dev: uint64(st.Dev), Ino: uint64(st.Ino), UID: int(st.Uid), GID: int(st.Gid)}
	w.record(root, nil, nil)
	return w.dir(d.fd, d.path, root, nil, 0)
}

type walker struct {
	v       Visitor
	workers int
	entries atomic.Int64 // files and directories met so far (MaxTreeEntries)
	bytes   atomic.Int64 // bytes of the regular files admitted so far (maxTreeBytes)
}

// Bounds on one repository as a whole, besides maxFileSize for each file: a real token holds
// at most a few thousand objects of a few KiB (the token library's shared memory has room for
// 2048 by default), so these leave a wide margin while keeping a hostile repository (sparse
// files cost no disk) from making the tool read, hold and write without end.
const (
	maxTreeBytes   = 256 << 20
	MaxTreeEntries = 250_000
)

// entryBound is MaxTreeEntries; tests lower it to build a directory over it quickly.
var entryBound = MaxTreeEntries

// admitEntry counts one more name listed in the directory display and refuses the walk once
// the tree holds more than MaxTreeEntries: it is asked while the directory is being listed,
// so a directory of a million names is refused after MaxTreeEntries of them were read.
func (w *walker) admitEntry(display string) error {
	if n := w.entries.Add(1); n > int64(entryBound) {
		return &fs.PathError{Op: "read directory", Path: display, Err: fmt.Errorf("the repository holds more than %d files and directories: %w", entryBound, ErrTooLarge)}
	}
	return nil
}

// admitBytes counts the size of one more regular file and refuses the walk once the files
// hold more than maxTreeBytes.
func (w *walker) admitBytes(display string, size int64) error {
	if size > 0 && w.bytes.Add(size) > maxTreeBytes {
		return &fs.PathError{Op: "read", Path: display, Err: fmt.Errorf("the repository's files hold more than %d MiB: %w", maxTreeBytes>>20, ErrTooLarge)}
	}
	return nil
}

// record writes one entry to the digest: type byte, mode, size, path length, path, [content
// hash]. A directory's size is recorded as 0: it depends on the file system, not the content.
func (w *walker) record(e Entry, sum []byte, res any) {
	if w.v.Digest != nil {
		digestRecord(w.v.Digest, e, sum)
	}
	if w.v.Record != nil {
		w.v.Record(e, res)
	}
}

// digestRecord writes the canonical description of one entry (see TreeDigest) to h. sum is the
// SHA-256 of a regular file's content (ignored for directories). Callers that write a tree
// themselves use it to compute the digest that TreeDigest would give, without reading it back.
func digestRecord(h hash.Hash, e Entry, sum []byte) {
	var hdr [1 + 4 + 8 + 4]byte
	typ, size := byte('d'), uint64(0)
	if e.Mode&unix.S_IFMT == unix.S_IFREG {
		typ, size = 'f', uint64(e.Size)
	}
	hdr[0] = typ
	binary.BigEndian.PutUint32(hdr[1:], e.Mode&0o7777)
	binary.BigEndian.PutUint64(hdr[5:], size)
	binary.BigEndian.PutUint32(hdr[13:], uint32(len(e.Rel)))
	h.Write(hdr[:])
	h.Write([]byte(e.Rel))
	if typ == 'f' {
		h.Write(sum)
	}
}

// digestStart writes the header TreeDigest starts with.
func digestStart(h hash.Hash) { h.Write([]byte("repofs tree digest v1\x00")) }

// dirEntry is one name of a directory listing with the entry type the file system reported
// (unix.DT_*; DT_UNKNOWN on file systems that do not report it).
type dirEntry struct {
	Name string
	Type uint8
}

// listBatch is the getdents buffer of listDir: how many bytes of directory entries are read
// (and held unadmitted) at a time.
const listBatch = 32 << 10

// listDir lists the directory open as dirfd through a fresh descriptor (dirfd's own offset is
// left alone), without "." and "..", sorted by name. The entries are read with getdents,
// listBatch bytes at a time (ScanDir), and each name is handed to admit as it is read, before
// it is kept: admit says whether to keep it (false leaves it out of the result) or returns an
// error, which ends the listing at once. So a directory of a million entries costs no more
// memory than admit lets in. A nil admit keeps every name up to MaxTreeEntries and refuses
// the directory beyond (ErrTooLarge): no listing the tool does on a repository is unbounded.
func listDir(dirfd int, display string, admit func(name string) (keep bool, err error)) ([]dirEntry, error) {
	if admit == nil {
		n := 0
		admit = func(string) (bool, error) {
			if n++; n > entryBound {
				return false, &fs.PathError{Op: "read directory", Path: display, Err: fmt.Errorf("more than %d entries: %w", entryBound, ErrTooLarge)}
			}
			return true, nil
		}
	}
	var out []dirEntry
	err := ScanDir(dirfd, display, func(name []byte, typ uint8) error {
		s := string(name)
		keep, err := admit(s)
		if keep && err == nil {
			out = append(out, dirEntry{Name: s, Type: typ})
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// ScanDir reads the directory open as dirfd through a fresh descriptor (dirfd's own offset is
// left alone) with getdents, listBatch bytes at a time, and calls each for every entry but
// "." and ".." in the order the file system gives, with its name (valid during the call only)
// and its d_type. Nothing is held between batches; an error from each ends the scan and is
// returned.
func ScanDir(dirfd int, display string, each func(name []byte, typ uint8) error) error {
	fd, err := openRetry(dirfd, ".", dirOpenFlags, 0)
	if err != nil {
		return pathErr("read directory", display, err)
	}
	defer unix.Close(fd)
	buf := make([]byte, listBatch)
	for {
		n, err := unix.Getdents(fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return pathErr("read directory", display, err)
		}
		if n <= 0 {
			return nil
		}
		// struct linux_dirent64: ino u64, off s64, reclen u16, type u8, name (NUL-ended).
		for b := buf[:n]; len(b) >= 19; {
			reclen := int(binary.NativeEndian.Uint16(b[16:]))
			if reclen < 19 || reclen > len(b) {
				return &fs.PathError{Op: "read directory", Path: display, Err: errors.New("malformed directory entry")}
			}
			name := b[19:reclen]
			if i := bytes.IndexByte(name, 0); i >= 0 {
				name = name[:i]
			}
			typ := b[18]
			b = b[reclen:]
			if string(name) == "." || string(name) == ".." {
				continue
			}
			if err := each(name, typ); err != nil {
				return err
			}
		}
	}
}

// walkEntry is one entry of a batch being walked.
type walkEntry struct {
	e   Entry
	dir bool
	sum [sha256.Size]byte
	res any // what Visitor.File returned
}

func (w *walker) dir(dirfd int, display string, self Entry, parent any, depth int) (err error) {
	if depth >= maxDepth {
		return fmt.Errorf("walk %s: directory tree deeper than %d levels", display, maxDepth)
	}
	var state any
	if w.v.Dir != nil {
		if state, err = w.v.Dir(self, parent); err != nil {
			return err
		}
	}
	if w.v.DirDone != nil {
		defer func() {
			if derr := w.v.DirDone(self, state, err); err == nil {
				err = derr
			}
		}()
	}
	// Each name is counted against MaxTreeEntries as it is listed (entries Exclude names are
	// neither kept nor counted): the bound refuses a huge directory before it is all held.
	names, err := listDir(dirfd, display, func(name string) (bool, error) {
		if w.v.Exclude != nil && w.v.Exclude(relJoin(self.Rel, name)) {
			return false, nil
		}
		return true, w.admitEntry(display)
	})
	if err != nil {
		return err
	}
	// Entries go in batches, so a directory of 100,000 objects never holds all their files.
	for start := 0; start < len(names); start += batchSize {
		if err := w.batch(dirfd, display, self.Rel, state, depth, names[start:min(start+batchSize, len(names))]); err != nil {
			return err
		}
	}
	return nil
}

// batchSize is how many directory entries Walk handles at a time.
const batchSize = 1024

func relJoin(rel, n string) string {
	if rel == "." || rel == "" {
		return n
	}
	return rel + "/" + n
}

func (w *walker) batch(dirfd int, display, rel string, state any, depth int, names []dirEntry) error {
	entries := make([]walkEntry, len(names))
	var files []int
	for i, n := range names {
		p := path.Join(display, n.Name)
		entries[i].e = Entry{Rel: relJoin(rel, n.Name), Name: n.Name}
		typ := n.Type
		if typ == unix.DT_UNKNOWN {
			var st unix.Stat_t
			if err := unix.Fstatat(dirfd, n.Name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				return pathErr("lstat", p, err)
			}
			typ = dtOf(st.Mode)
		}
		switch typ {
		case unix.DT_DIR:
			entries[i].dir = true
		case unix.DT_REG:
			files = append(files, i)
		case unix.DT_LNK:
			return pathErr("walk", p, ErrSymlink)
		default:
			return pathErr("walk", p, ErrNotRegular)
		}
	}
	err := parallel.Workers(len(files), w.workers, func() func(int) error {
		var buf []byte
		h := sha256.New()
		return func(k int) error {
			we := &entries[files[k]]
			data, err := readRegular(dirfd, we.e.Name, path.Join(display, we.e.Name), &we.e, &buf, w.admitBytes)
			if err != nil {
				return err
			}
			if w.v.Digest != nil {
				h.Reset()
				h.Write(data)
				h.Sum(we.sum[:0])
			}
			if w.v.File != nil {
				we.res, err = w.v.File(we.e, state, data)
			}
			return err
		}
	})
	if err != nil {
		return err
	}
	for i := range entries {
		we := &entries[i]
		if !we.dir {
			w.record(we.e, we.sum[:], we.res)
			continue
		}
		p := path.Join(display, we.e.Name)
		fd, err := openRetry(dirfd, we.e.Name, dirOpenFlags, 0)
		if err != nil {
			return pathErr("open directory", p, openDirErr(dirfd, we.e.Name, err))
		}
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			unix.Close(fd)
			return pathErr("stat", p, err)
		}
		we.e.Mode, we.e.Dev, we.e.Ino, we.e.UID, we.e.GID = st.Mode, uint64(st.Dev), uint64(st.Ino), int(st.Uid), int(st.Gid)
		w.record(we.e, nil, nil)
		err = w.dir(fd, p, we.e, state, depth+1)
		unix.Close(fd)
		if err != nil {
			return err
		}
	}
	return nil
}

func dtOf(mode uint32) uint8 {
	switch mode & unix.S_IFMT {
	case unix.S_IFDIR:
		return unix.DT_DIR
	case unix.S_IFREG:
		return unix.DT_REG
	case unix.S_IFLNK:
		return unix.DT_LNK
	}
	return unix.DT_FIFO // any special file
}

// readRegular opens name in dirfd without following symlinks and without blocking, checks
// with fstat of the open descriptor that it is a regular file with one link (checkReadable)
// no larger than maxFileSize, and reads it whole into *buf (grown as needed, reused by the
// caller) with one read. It fills e's mode, size, owner and identity. admit, when not nil, is
// asked before the file is read.
//
// The open asks for O_NOATIME: reading the repository leaves its files' access times as
// they were (the original kept as the backup is the original, times included), and an
// XFS or ext4 file whose atime relatime would update costs a metadata transaction each
// (3-5 ms of a 1,000-object apply on loop XFS, side by side). Without the right to it (not
// the owner, no CAP_FOWNER: EPERM) the file is opened without it.
func readRegular(dirfd int, name, display string, e *Entry, buf *[]byte, admit func(display string, size int64) error) ([]byte, error) {
	fd, err := openRetry(dirfd, name, fileReadFlags|unix.O_NOATIME, 0)
	if err == unix.EPERM {
		fd, err = openRetry(dirfd, name, fileReadFlags, 0)
	}
	if err != nil {
		if err == unix.ELOOP {
			err = classify(dirfd, name, err)
		}
		return nil, pathErr("open", display, err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, pathErr("stat", display, err)
	}
	if err := checkReadable(&st, display); err != nil {
		return nil, err
	}
	if admit != nil {
		if err := admit(display, st.Size); err != nil {
			return nil, err
		}
	}
	n := int(st.Size)
	if cap(*buf) < n {
		*buf = make([]byte, n)
	}
	data := (*buf)[:n]
	if err := readFull(fd, data); err != nil {
		return nil, pathErr("read", display, err)
	}
	e.Mode, e.Size, e.Dev, e.Ino, e.UID, e.GID = st.Mode, st.Size, uint64(st.Dev), uint64(st.Ino), int(st.Uid), int(st.Gid)
	return data, nil
}
