package crashsim

import (
	"fmt"
	"path"
	"sort"
)

// OpKind is what an Op does.
type OpKind uint8

const (
	OpCreate    OpKind = iota + 1 // a new file Ino appears as Name in Dir
	OpMkdir                       // a new directory Ino appears as Name in Dir
	OpLink                        // Name in Dir becomes one more name of Ino
	OpUnlink                      // Name leaves Dir (a file, or an empty directory)
	OpRename                      // Name in Dir becomes Name2 (in Dir2 when Cross; replacing what Name2 was)
	OpExchange                    // Name and Name2 in Dir (and Dir2 when Cross) swap (RENAME_EXCHANGE)
	OpWrite                       // Data is written at Off in Ino
	OpTruncate                    // Ino's size becomes Size
	OpChmod                       // Ino's mode becomes Mode
	OpChown                       // Ino's owner and group become UID and GID (-1: unchanged)
	OpFsync                       // Ino's content and metadata, and for a directory its entries, are durable
	OpFdatasync                   // Ino's content is durable (for a directory: its entries)
	OpSyncfs                      // everything is durable
)

var opNames = map[OpKind]string{OpCreate: "create", OpMkdir: "mkdir", OpLink: "link", OpUnlink: "unlink",
	OpRename: "rename", OpExchange: "exchange", OpWrite: "write", OpTruncate: "truncate", OpChmod: "chmod",
	OpChown: "chown", OpFsync: "fsync", OpFdatasync: "fdatasync", OpSyncfs: "syncfs"}

func (k OpKind) String() string {
	if s, ok := opNames[k]; ok {
		return s
	}
	return fmt.Sprintf("op%d", uint8(k))
}

// Op is one change of the tree, or one barrier, in the order the process made them.
type Op struct {
	Kind  OpKind
	Line  int // line of the trace
	Call  string
	Dir   int // directory whose entries change (entry ops)
	Ino   int // the inode concerned (new inode of OpCreate/OpMkdir)
	Name  string
	Name2 string
	Off   int64
	Size  int64
	Data  []byte
	Mode  uint32
	UID   int
	GID   int
	Path  string // where it happened, relative to the root (for messages)
	Path2 string // the second path of a rename, exchange or link
	// Cross: a rename or exchange between two directories, Name in Dir and Name2 in Dir2.
	// It changes the entries of both at once (file systems journal a rename as one
	// transaction): a crash keeps it in both or in neither, and only after what each
	// directory had before it (Cut.state).
	Cross bool
	Dir2  int
	seq   int // its place in the run (Cut.add), for applying the ops of several aspects in order
}

// dir2 is the directory of Name2.
func (o *Op) dir2() int {
	if o.Cross {
		return o.Dir2
	}
	return o.Dir
}

// aspects are the aspects whose queues the op waits in: one, or two for a Cross op.
func (o *Op) aspects() []aspect {
	if o.Cross {
		return []aspect{{o.Dir, partEntries}, {o.Dir2, partEntries}}
	}
	return []aspect{o.aspect()}
}

// Barrier tells whether the op makes something durable rather than changing the tree.
func (o *Op) Barrier() bool {
	return o.Kind == OpFsync || o.Kind == OpFdatasync || o.Kind == OpSyncfs
}

// String describes the op without any file content.
func (o Op) String() string {
	p := o.Path
	if p == "" {
		p = "."
	}
	switch o.Kind {
	case OpRename, OpExchange, OpLink:
		return fmt.Sprintf("%s %s -> %s (line %d, %s)", o.Kind, p, o.Path2, o.Line, o.Call)
	case OpWrite:
		return fmt.Sprintf("write %s [%d,%d) (line %d)", p, o.Off, o.Off+int64(len(o.Data)), o.Line)
	case OpTruncate:
		return fmt.Sprintf("truncate %s to %d (line %d)", p, o.Size, o.Line)
	case OpChmod:
		return fmt.Sprintf("chmod %s %04o (line %d)", p, o.Mode, o.Line)
	case OpChown:
		return fmt.Sprintf("chown %s %d:%d (line %d)", p, o.UID, o.GID, o.Line)
	case OpSyncfs:
		return fmt.Sprintf("syncfs (line %d, %s)", o.Line, o.Call)
	}
	return fmt.Sprintf("%s %s (line %d, %s)", o.Kind, p, o.Line, o.Call)
}

// aspect is one part of the tree that becomes durable on its own: a file's content, an
// inode's metadata, or a directory's entries. The operations on one aspect reach the disk
// in the order they were made (a crash keeps a prefix of them); different aspects are
// independent.
type aspect struct {
	ino  int
	part uint8
}

const (
	partContent uint8 = iota
	partMeta
	partEntries
)

func (o *Op) aspect() aspect {
	switch o.Kind {
	case OpCreate, OpMkdir, OpLink, OpUnlink, OpRename, OpExchange:
		return aspect{o.Dir, partEntries}
	case OpWrite, OpTruncate:
		return aspect{o.Ino, partContent}
	}
	return aspect{o.Ino, partMeta}
}

// node is one inode of the model.
type node struct {
	kind Kind
	attr Attr
	data []byte         // never modified in place: states share it
	ents map[string]int // directory entries
}

// fsState is one version of the whole tree: the volatile one, the durable one or a crash
// state. born holds the kind and metadata every inode had when it was made.
type fsState struct {
	nodes map[int]*node
	born  map[int]*node
}

func (s *fsState) clone() *fsState {
	c := &fsState{nodes: make(map[int]*node, len(s.nodes)), born: s.born}
	for id, n := range s.nodes {
		m := *n
		if n.ents != nil {
			m.ents = make(map[string]int, len(n.ents))
			for k, v := range n.ents {
				m.ents[k] = v
			}
		}
		c.nodes[id] = &m
	}
	return c
}

// get returns the inode, making it as it was born if this state has not seen it yet (its
// content may reach the disk before its name does).
func (s *fsState) get(id int) (*node, error) {
	if n, ok := s.nodes[id]; ok {
		return n, nil
	}
	b, ok := s.born[id]
	if !ok {
		return nil, fmt.Errorf("inode %d unknown: %w", id, errModel)
	}
	n := &node{kind: b.kind, attr: b.attr}
	if b.kind == Dir {
		n.ents = map[string]int{}
	}
	s.nodes[id] = n
	return n, nil
}

func (s *fsState) dir(id int) (*node, error) {
	n, err := s.get(id)
	if err != nil {
		return nil, err
	}
	if n.kind != Dir {
		return nil, fmt.Errorf("inode %d is not a directory: %w", id, errModel)
	}
	return n, nil
}

// apply carries out one op (barriers are not ops on a state).
func (s *fsState) apply(o *Op) error {
	switch o.Kind {
	case OpCreate, OpMkdir, OpLink:
		d, err := s.dir(o.Dir)
		if err != nil {
			return err
		}
		if _, err := s.get(o.Ino); err != nil {
			return err
		}
		d.ents[o.Name] = o.Ino
	case OpUnlink:
		d, err := s.dir(o.Dir)
		if err != nil {
			return err
		}
		if _, ok := d.ents[o.Name]; !ok {
			return fmt.Errorf("%s: %s is missing: %w", o, o.Name, errModel)
		}
		delete(d.ents, o.Name)
	case OpRename:
		d, err := s.dir(o.Dir)
		if err != nil {
			return err
		}
		d2, err := s.dir(o.dir2())
		if err != nil {
			return err
		}
		id, ok := d.ents[o.Name]
		if !ok {
			return fmt.Errorf("%s: %s is missing: %w", o, o.Name, errModel)
		}
		delete(d.ents, o.Name)
		d2.ents[o.Name2] = id
	case OpExchange:
		d, err := s.dir(o.Dir)
		if err != nil {
			return err
		}
		d2, err := s.dir(o.dir2())
		if err != nil {
			return err
		}
		a, okA := d.ents[o.Name]
		b, okB := d2.ents[o.Name2]
		if !okA || !okB {
			return fmt.Errorf("%s: an entry is missing: %w", o, errModel)
		}
		d.ents[o.Name], d2.ents[o.Name2] = b, a
	case OpWrite:
		n, err := s.get(o.Ino)
		if err != nil {
			return err
		}
		end := o.Off + int64(len(o.Data))
		size := max(int64(len(n.data)), end)
		data := make([]byte, size)
		copy(data, n.data)
		copy(data[o.Off:], o.Data)
		n.data = data
	case OpTruncate:
		n, err := s.get(o.Ino)
		if err != nil {
			return err
		}
		data := make([]byte, o.Size)
		copy(data, n.data)
		n.data = data
	case OpChmod:
		n, err := s.get(o.Ino)
		if err != nil {
			return err
		}
		n.attr.Mode = o.Mode & 0o7777
	case OpChown:
		n, err := s.get(o.Ino)
		if err != nil {
			return err
		}
		if o.UID >= 0 {
			n.attr.UID = o.UID
		}
		if o.GID >= 0 {
			n.attr.GID = o.GID
		}
		// chown clears setuid, and setgid when group-executable, of a non-directory
		// (Linux does so for root too).
		if n.kind != Dir {
			n.attr.Mode &^= 0o4000
			if n.attr.Mode&0o010 != 0 {
				n.attr.Mode &^= 0o2000
			}
		}
	default:
		return fmt.Errorf("%s is not a change of the tree: %w", o.Kind, errModel)
	}
	return nil
}

// tree extracts the Tree reachable from the root inode.
func (s *fsState) tree(root int) (*Tree, error) {
	r, err := s.dir(root)
	if err != nil {
		return nil, err
	}
	t := &Tree{Root: r.attr}
	onPath := map[int]bool{root: true}
	var walk func(d *node, rel string, depth int) error
	walk = func(d *node, rel string, depth int) error {
		if depth > 64 {
			return fmt.Errorf("tree deeper than 64 levels: %w", errModel)
		}
		names := make([]string, 0, len(d.ents))
		for n := range d.ents {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, name := range names {
			id := d.ents[name]
			n, err := s.get(id)
			if err != nil {
				return err
			}
			p := path.Join(rel, name)
			t.Entries = append(t.Entries, Entry{Path: p, Kind: n.kind, Attr: n.attr, Data: n.data, Ino: id})
			if n.kind == Dir {
				if onPath[id] {
					return fmt.Errorf("directory %s contains itself: %w", p, errModel)
				}
				onPath[id] = true
				if err := walk(n, p, depth+1); err != nil {
					return err
				}
				delete(onPath, id)
			}
		}
		return nil
	}
	if err := walk(r, "", 0); err != nil {
		return nil, err
	}
	sortEntries(t.Entries)
	return t, nil
}

// pathOf finds a name of inode id below the root ("" for the root itself, "?" if none).
func (s *fsState) pathOf(root, id int) string {
	if id == root {
		return ""
	}
	var found string
	var walk func(d *node, rel string, depth int) bool
	walk = func(d *node, rel string, depth int) bool {
		if depth > 64 {
			return false
		}
		for name, c := range d.ents {
			p := path.Join(rel, name)
			if c == id {
				found = p
				return true
			}
			if n := s.nodes[c]; n != nil && n.kind == Dir && walk(n, p, depth+1) {
				return true
			}
		}
		return false
	}
	if r := s.nodes[root]; r != nil && walk(r, "", 0) {
		return found
	}
	return "?"
}

// stateFromTree builds the model of a snapshot; the root is inode 0.
func stateFromTree(t *Tree) (*fsState, error) {
	s := &fsState{nodes: map[int]*node{}, born: map[int]*node{}}
	s.nodes[0] = &node{kind: Dir, attr: t.Root, ents: map[string]int{}}
	byPath := map[string]int{"": 0}
	for _, e := range t.Entries {
		if e.Ino <= 0 {
			return nil, fmt.Errorf("entry %s: inode %d (the root is 0)", e.Path, e.Ino)
		}
		parent, name := path.Split(e.Path)
		pid, ok := byPath[path.Clean("/" + parent)[1:]]
		if !ok {
			return nil, fmt.Errorf("entry %s: no parent directory", e.Path)
		}
		n, ok := s.nodes[e.Ino]
		if !ok {
			n = &node{kind: e.Kind, attr: e.Attr, data: e.Data}
			if e.Kind == Dir {
				n.ents = map[string]int{}
			}
			s.nodes[e.Ino] = n
		} else if n.kind != File || e.Kind != File {
			return nil, fmt.Errorf("entry %s: a directory with two names", e.Path)
		}
		s.nodes[pid].ents[name] = e.Ino
		if e.Kind == Dir {
			byPath[e.Path] = e.Ino
		}
	}
	for id, n := range s.nodes {
		b := *n
		b.data, b.ents = nil, nil
		s.born[id] = &b
	}
	return s, nil
}
