package crashsim

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"os"
	"path"
	"path/filepath"
	"sort"

	"golang.org/x/sys/unix"
)

// Kind is the type of an entry: the model knows regular files and directories only.
type Kind uint8

const (
	File Kind = iota + 1
	Dir
)

func (k Kind) String() string {
	switch k {
	case File:
		return "file"
	case Dir:
		return "dir"
	}
	return "unknown"
}

// Attr is what the model keeps of an inode's metadata.
type Attr struct {
	Mode uint32 // permission bits with setuid, setgid and sticky (mode & 07777)
	UID  int
	GID  int
}

// Entry is one name below the root of a Tree.
type Entry struct {
	Path string // slash-separated, relative to the root
	Kind Kind
	Attr
	Data []byte // content of a file
	Ino  int    // identity: entries with the same Ino are hard links of one file
}

// Tree is a directory tree: the root directory's own metadata and every entry below it,
// sorted by path (a directory always comes before what it holds).
type Tree struct {
	Root    Attr
	Entries []Entry
}

// Lookup returns the entry at p, or nil.
func (t *Tree) Lookup(p string) *Entry {
	i := sort.Search(len(t.Entries), func(i int) bool { return !pathLess(t.Entries[i].Path, p) })
	if i < len(t.Entries) && t.Entries[i].Path == p {
		return &t.Entries[i]
	}
	return nil
}

// Hash is a digest of everything a Tree holds: names, kinds, metadata, content and which
// names are links of the same file (not the inode numbers themselves).
func (t *Tree) Hash() [32]byte {
	h := sha256.New()
	writeAttr(h, t.Root)
	first := map[int]int{}
	for i, e := range t.Entries {
		writeString(h, e.Path)
		h.Write([]byte{byte(e.Kind)})
		writeAttr(h, e.Attr)
		if e.Kind == File {
			sum := sha256.Sum256(e.Data)
			h.Write(sum[:])
			link := -1
			if j, ok := first[e.Ino]; ok {
				link = j
			} else {
				first[e.Ino] = i
			}
			writeInt(h, int64(link))
		}
	}
	var out [32]byte
	h.Sum(out[:0])
	return out
}

func writeAttr(h hash.Hash, a Attr) {
	writeInt(h, int64(a.Mode))
	writeInt(h, int64(a.UID))
	writeInt(h, int64(a.GID))
}

func writeInt(h hash.Hash, v int64) {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(v))
	h.Write(b[:])
}

func writeString(h hash.Hash, s string) {
	writeInt(h, int64(len(s)))
	h.Write([]byte(s))
}

// Diff lists how u differs from t, one line per path ("" when they are equal).
func (t *Tree) Diff(u *Tree) []string {
	var d []string
	if t.Root != u.Root {
		d = append(d, fmt.Sprintf("~ . %s => %s", fmtAttr(t.Root), fmtAttr(u.Root)))
	}
	i, j := 0, 0
	for i < len(t.Entries) || j < len(u.Entries) {
		switch {
		case j >= len(u.Entries) || i < len(t.Entries) && pathLess(t.Entries[i].Path, u.Entries[j].Path):
			d = append(d, "- "+describe(&t.Entries[i]))
			i++
		case i >= len(t.Entries) || pathLess(u.Entries[j].Path, t.Entries[i].Path):
			d = append(d, "+ "+describe(&u.Entries[j]))
			j++
		default:
			a, b := &t.Entries[i], &u.Entries[j]
			if a.Kind != b.Kind || a.Attr != b.Attr || string(a.Data) != string(b.Data) {
				d = append(d, fmt.Sprintf("~ %s => %s", describe(a), describe(b)))
			}
			i++
			j++
		}
	}
	return d
}

func fmtAttr(a Attr) string { return fmt.Sprintf("%04o %d:%d", a.Mode, a.UID, a.GID) }

// describe names an entry without its content (content may be key material).
func describe(e *Entry) string {
	s := fmt.Sprintf("%s %s %s", e.Path, e.Kind, fmtAttr(e.Attr))
	if e.Kind == File {
		sum := sha256.Sum256(e.Data)
		s += fmt.Sprintf(" %d bytes sha256:%x", len(e.Data), sum[:6])
	}
	return s
}

// Snapshot reads the tree below root without following symlinks. A symlink, FIFO, socket or
// device below root is refused: the model knows files and directories only.
func Snapshot(root string) (*Tree, error) {
	var st unix.Stat_t
	if err := unix.Lstat(root, &st); err != nil {
		return nil, fmt.Errorf("snapshot %s: %w", root, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return nil, fmt.Errorf("snapshot %s: not a directory", root)
	}
	t := &Tree{Root: attrOf(&st)}
	inos := map[[2]uint64]int{}
	var walk func(dir, rel string, depth int) error
	walk = func(dir, rel string, depth int) error {
		if depth > 64 {
			return fmt.Errorf("snapshot %s: deeper than 64 levels", dir)
		}
		f, err := os.Open(dir)
		if err != nil {
			return fmt.Errorf("snapshot: %w", err)
		}
		names, err := f.Readdirnames(-1)
		f.Close()
		if err != nil {
			return fmt.Errorf("snapshot %s: %w", dir, err)
		}
		sort.Strings(names)
		for _, n := range names {
			p := filepath.Join(dir, n)
			r := path.Join(rel, n)
			if err := unix.Lstat(p, &st); err != nil {
				return fmt.Errorf("snapshot %s: %w", p, err)
			}
			e := Entry{Path: r, Attr: attrOf(&st)}
			key := [2]uint64{uint64(st.Dev), uint64(st.Ino)}
			if id, ok := inos[key]; ok {
				e.Ino = id
			} else {
				e.Ino = len(inos) + 1
				inos[key] = e.Ino
			}
			switch st.Mode & unix.S_IFMT {
			case unix.S_IFDIR:
				e.Kind = Dir
				t.Entries = append(t.Entries, e)
				if err := walk(p, r, depth+1); err != nil {
					return err
				}
				continue
			case unix.S_IFREG:
				e.Kind = File
				if e.Data, err = os.ReadFile(p); err != nil {
					return fmt.Errorf("snapshot: %w", err)
				}
			default:
				return fmt.Errorf("snapshot %s: not a regular file or directory (mode %o)", p, st.Mode)
			}
			t.Entries = append(t.Entries, e)
		}
		return nil
	}
	if err := walk(root, "", 0); err != nil {
		return nil, err
	}
	sortEntries(t.Entries)
	return t, nil
}

func attrOf(st *unix.Stat_t) Attr {
	return Attr{Mode: st.Mode & 0o7777, UID: int(st.Uid), GID: int(st.Gid)}
}

// sortEntries sorts by path with "/" below every other byte, so that a directory's entries
// follow it directly ("a", "a/x", "a-b" rather than "a", "a-b", "a/x").
func sortEntries(es []Entry) {
	sort.Slice(es, func(i, j int) bool { return pathLess(es[i].Path, es[j].Path) })
}

func pathLess(a, b string) bool {
	for i := 0; i < len(a) && i < len(b); i++ {
		if a[i] == b[i] {
			continue
		}
		ca, cb := a[i], b[i]
		if ca == '/' {
			return true
		}
		if cb == '/' {
			return false
		}
		return ca < cb
	}
	return len(a) < len(b)
}

// Materialize writes t as a new directory dst (which must not exist): directories, files
// with their content, hard links, and every mode, owner and group (ownership needs root).
func (t *Tree) Materialize(dst string) error {
	if err := os.Mkdir(dst, 0o700); err != nil {
		return fmt.Errorf("materialize: %w", err)
	}
	first := map[int]string{}
	var dirs []Entry
	for _, e := range t.Entries {
		p := filepath.Join(dst, filepath.FromSlash(e.Path))
		switch e.Kind {
		case Dir:
			if err := os.Mkdir(p, 0o700); err != nil {
				return fmt.Errorf("materialize: %w", err)
			}
			dirs = append(dirs, e)
		case File:
			if f, ok := first[e.Ino]; ok {
				if err := os.Link(f, p); err != nil {
					return fmt.Errorf("materialize: %w", err)
				}
				continue
			}
			first[e.Ino] = p
			if err := writeNew(p, e.Data); err != nil {
				return fmt.Errorf("materialize: %w", err)
			}
			if err := setAttr(p, e.Attr); err != nil {
				return err
			}
		default:
			return fmt.Errorf("materialize %s: unknown kind %d", e.Path, e.Kind)
		}
	}
	// Directories last and deepest first: a mode without write permission must not stop
	// what goes inside (for a caller that is not root).
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := setAttr(filepath.Join(dst, filepath.FromSlash(dirs[i].Path)), dirs[i].Attr); err != nil {
			return err
		}
	}
	return setAttr(dst, t.Root)
}

func writeNew(p string, data []byte) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// setAttr sets owner and group (when they differ: ownership needs root), then the mode;
// chown first, as it may clear setuid and setgid bits.
func setAttr(p string, a Attr) error {
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		return fmt.Errorf("materialize %s: %w", p, err)
	}
	if int(st.Uid) != a.UID || int(st.Gid) != a.GID {
		if err := unix.Lchown(p, a.UID, a.GID); err != nil {
			return fmt.Errorf("materialize %s: chown %d:%d: %w", p, a.UID, a.GID, err)
		}
	}
	if err := unix.Chmod(p, a.Mode); err != nil {
		return fmt.Errorf("materialize %s: chmod %04o: %w", p, a.Mode, err)
	}
	return nil
}

// errModel marks an inconsistency between the trace and the model: the model does not
// describe what the process saw, so no crash state built from it could be trusted.
var errModel = errors.New("the model diverged from the trace")

// MaterializeOver makes the existing directory dst hold exactly t: what dst holds and t does
// not is removed, what differs is rewritten in place, what is missing is made. Entries t
// keeps unchanged are left as they are: on an overlay whose lower layer holds an earlier tree,
// they stay in the lower layer and only what changed goes to the upper one, as on a machine
// whose run changed them (the crash suite's overlay layout).
func (t *Tree) MaterializeOver(dst string) error {
	cur, err := Snapshot(dst)
	if err != nil {
		return err
	}
	links := map[int]int{}
	for _, e := range t.Entries {
		if e.Kind == File {
			links[e.Ino]++
		}
	}
	want := map[string]*Entry{}
	for i := range t.Entries {
		want[t.Entries[i].Path] = &t.Entries[i]
	}
	// Away: what t does not hold, holds as another kind, or holds as one name of several
	// (hard links are made anew).
	for i := len(cur.Entries) - 1; i >= 0; i-- {
		c := cur.Entries[i]
		w := want[c.Path]
		if w != nil && w.Kind == c.Kind && (w.Kind == Dir || links[w.Ino] == 1 && curLinks(cur, c.Ino) == 1) {
			continue
		}
		if err := os.RemoveAll(filepath.Join(dst, filepath.FromSlash(c.Path))); err != nil {
			return fmt.Errorf("materialize over: %w", err)
		}
	}
	have := map[string]Entry{}
	if cur, err = Snapshot(dst); err != nil {
		return err
	}
	for _, c := range cur.Entries {
		have[c.Path] = c
	}
	first := map[int]string{}
	var dirs []Entry
	for _, e := range t.Entries {
		p := filepath.Join(dst, filepath.FromSlash(e.Path))
		c, ok := have[e.Path]
		switch e.Kind {
		case Dir:
			if !ok {
				if err := os.Mkdir(p, 0o700); err != nil {
					return fmt.Errorf("materialize over: %w", err)
				}
			}
			dirs = append(dirs, e)
		case File:
			if f, dup := first[e.Ino]; dup {
				if err := os.Link(f, p); err != nil {
					return fmt.Errorf("materialize over: %w", err)
				}
				continue
			}
			first[e.Ino] = p
			switch {
			case !ok:
				if err := writeNew(p, e.Data); err != nil {
					return fmt.Errorf("materialize over: %w", err)
				}
			case !bytes.Equal(c.Data, e.Data):
				if err := os.WriteFile(p, e.Data, 0o600); err != nil {
					return fmt.Errorf("materialize over: %w", err)
				}
			}
			if !ok || c.Attr != e.Attr {
				if err := setAttr(p, e.Attr); err != nil {
					return err
				}
			}
		default:
			return fmt.Errorf("materialize over %s: unknown kind %d", e.Path, e.Kind)
		}
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		if c, ok := have[dirs[i].Path]; ok && c.Attr == dirs[i].Attr {
			continue
		}
		if err := setAttr(filepath.Join(dst, filepath.FromSlash(dirs[i].Path)), dirs[i].Attr); err != nil {
			return err
		}
	}
	if cur.Root != t.Root {
		return setAttr(dst, t.Root)
	}
	return nil
}

func curLinks(t *Tree, ino int) int {
	n := 0
	for _, e := range t.Entries {
		if e.Kind == File && e.Ino == ino {
			n++
		}
	}
	return n
}
