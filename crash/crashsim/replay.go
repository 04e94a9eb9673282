package crashsim

import (
	"errors"
	"fmt"
	"path"
	"strings"
)

// Options describe the traced process and the part of the file system the model covers.
type Options struct {
	Root  string // absolute, clean path of the directory the model covers
	Umask uint32 // the process's umask at the start (new files get mode &^ umask; umask calls change it)
	UID   int    // owner of files the process creates
	GID   int    // group of files the process creates (unless the directory is setgid)
}

// Sim is a replayed trace: the initial tree and the ops made on it.
type Sim struct {
	Ops     []Op
	initial *fsState
	final   *fsState
}

// ofd is an open file description: dup'ed descriptors share it.
type ofd struct {
	ino    int    // -1 outside the model
	ext    string // absolute path outside the model, for messages
	off    int64
	append bool
	write  bool
	read   bool
}

type replayer struct {
	o     Options
	vol   *fsState
	fds   map[int]*ofd
	ops   []Op
	next  int
	calls int
}

// target is where a name resolves to: an inode of the model or a path outside it.
type target struct {
	ext    string // "" inside the model
	parent int    // directory holding last (inside the model)
	last   string // "" when the name is the base itself ("." or the root)
	ino    int    // the inode, -1 when the name does not exist
}

func (t target) inside() bool { return t.ext == "" }

// errUnsupported marks a call the model cannot follow on a path it covers.
var errUnsupported = errors.New("not supported by the model")

// Replay follows the calls over the initial tree and returns the ops that changed it.
func Replay(calls []Call, initial *Tree, o Options) (*Sim, error) {
	if !path.IsAbs(o.Root) || path.Clean(o.Root) != o.Root {
		return nil, fmt.Errorf("crashsim: root %q is not an absolute clean path", o.Root)
	}
	st, err := stateFromTree(initial)
	if err != nil {
		return nil, fmt.Errorf("crashsim: initial tree: %w", err)
	}
	r := &replayer{o: o, vol: st.clone(), fds: map[int]*ofd{}}
	r.next = 1
	for id := range st.born {
		r.next = max(r.next, id+1)
	}
	for i := range calls {
		if err := r.call(&calls[i]); err != nil {
			return nil, fmt.Errorf("crashsim: trace line %d (%s): %w", calls[i].Line, calls[i].Name, err)
		}
	}
	return &Sim{Ops: r.ops, initial: st, final: r.vol}, nil
}

// Final is the tree after every op (what the process left, before any crash).
func (s *Sim) Final() (*Tree, error) { return s.final.tree(0) }

// Initial is the tree before the first op.
func (s *Sim) Initial() (*Tree, error) { return s.initial.tree(0) }

func (r *replayer) emit(o Op) error {
	if !o.Barrier() {
		if err := r.vol.apply(&o); err != nil {
			return err
		}
	}
	r.ops = append(r.ops, o)
	return nil
}

func (r *replayer) newIno(kind Kind, a Attr) int {
	id := r.next
	r.next++
	r.vol.born[id] = &node{kind: kind, attr: a}
	return id
}

// base resolves a directory-descriptor argument.
func (r *replayer) base(a Arg) (target, error) {
	if !a.IsFd {
		v, err := a.Int()
		if err != nil {
			return target{}, err
		}
		a.Fd = int(v)
	}
	if a.Fd == AtFdcwd {
		if !path.IsAbs(a.Path) {
			return target{}, fmt.Errorf("AT_FDCWD without its -y path: %w", errUnsupported)
		}
		return r.resolveAbs(a.Path)
	}
	if f, ok := r.fds[a.Fd]; ok {
		if f.ino < 0 {
			return target{ext: f.ext, ino: -1}, nil
		}
		return target{ino: f.ino}, nil
	}
	// A descriptor the process had before the trace started (standard streams).
	p := strings.TrimSuffix(a.Path, " (deleted)")
	if path.IsAbs(p) {
		t, err := r.resolveAbs(p)
		if err != nil {
			return target{}, err
		}
		if t.inside() {
			return target{}, fmt.Errorf("descriptor %d on %s was never opened in the trace: %w", a.Fd, p, errUnsupported)
		}
		return t, nil
	}
	return target{ext: "fd:" + a.Path, ino: -1}, nil
}

// resolveAbs resolves an absolute path.
func (r *replayer) resolveAbs(p string) (target, error) {
	p = path.Clean(p)
	if p == r.o.Root {
		return target{ino: 0}, nil
	}
	rel, ok := strings.CutPrefix(p, r.o.Root+"/")
	if !ok {
		return target{ext: p, ino: -1}, nil
	}
	return r.walk(0, rel)
}

// walk resolves the relative name below directory inode dir.
func (r *replayer) walk(dir int, name string) (target, error) {
	parts := strings.Split(name, "/")
	cur := dir
	for i, c := range parts {
		last := i == len(parts)-1
		switch c {
		case "", ".":
			if last {
				return target{ino: cur}, nil
			}
			continue
		case "..":
			return target{}, fmt.Errorf("%q: '..' below the root: %w", name, errUnsupported)
		}
		d, err := r.vol.dir(cur)
		if err != nil {
			return target{}, err
		}
		id, ok := d.ents[c]
		if last {
			if !ok {
				id = -1
			}
			return target{parent: cur, last: c, ino: id}, nil
		}
		if !ok {
			return target{}, fmt.Errorf("%q: %s does not exist: %w", name, c, errModel)
		}
		if n := r.vol.nodes[id]; n == nil || n.kind != Dir {
			return target{}, fmt.Errorf("%q: %s is not a directory: %w", name, c, errModel)
		}
		cur = id
	}
	return target{ino: cur}, nil
}

// at resolves a (dirfd, name) pair; an absolute name ignores dirfd.
func (r *replayer) at(dirfd Arg, name Arg) (target, error) {
	if !name.IsStr {
		return target{}, fmt.Errorf("name %.40q is not a string: %w", name.Text, errUnsupported)
	}
	if name.Truncated {
		return target{}, fmt.Errorf("name truncated by strace -s: %w", errUnsupported)
	}
	n := string(name.Str)
	if path.IsAbs(n) {
		return r.resolveAbs(n)
	}
	b, err := r.base(dirfd)
	if err != nil {
		return target{}, err
	}
	if !b.inside() {
		if strings.HasPrefix(b.ext, "/") {
			return r.resolveAbs(path.Join(b.ext, n))
		}
		return b, nil
	}
	if n == "" {
		return target{ino: b.ino}, nil
	}
	return r.walk(b.ino, n)
}

func (r *replayer) rel(t target) string {
	if t.ino >= 0 {
		if p := r.vol.pathOf(0, t.ino); p != "?" {
			return p
		}
	}
	return path.Join(r.vol.pathOf(0, t.parent), t.last)
}

func (r *replayer) fd(a Arg) (*ofd, error) {
	fdn := a.Fd
	if !a.IsFd {
		v, err := a.Int()
		if err != nil {
			return nil, err
		}
		fdn = int(v)
	}
	if f, ok := r.fds[fdn]; ok {
		return f, nil
	}
	t, err := r.base(a)
	if err != nil {
		return nil, err
	}
	return &ofd{ino: -1, ext: t.ext}, nil
}

func argN(c *Call, n int) error {
	if len(c.Args) < n {
		return fmt.Errorf("%d arguments, want %d", len(c.Args), n)
	}
	return nil
}

func (r *replayer) call(c *Call) error {
	name := c.Name
	if strings.HasPrefix(name, "_") {
		name = strings.TrimLeft(name, "_")
	}
	if c.Failed() {
		if !c.RetKnown && mutating[name] {
			// "= ?": the thread or process went away inside the call; what it did is unknown.
			return r.unknownResult(c, name)
		}
		return nil
	}
	switch name {
	case "openat", "open", "creat":
		return r.open(c, name)
	case "close":
		if err := argN(c, 1); err != nil {
			return err
		}
		fdn := int64(c.Args[0].Fd)
		if !c.Args[0].IsFd {
			var err error
			if fdn, err = c.Args[0].Int(); err != nil {
				return err
			}
		}
		delete(r.fds, int(fdn))
		return nil
	case "dup", "dup2", "dup3":
		return r.dup(c, c.Args[0])
	case "fcntl":
		if err := argN(c, 2); err != nil {
			return err
		}
		if cmd := c.Args[1].Text; cmd == "F_DUPFD" || cmd == "F_DUPFD_CLOEXEC" {
			return r.dup(c, c.Args[0])
		}
		return nil
	case "lseek":
		if err := argN(c, 3); err != nil {
			return err
		}
		f, err := r.fd(c.Args[0])
		if err != nil {
			return err
		}
		f.off = c.Ret
		return nil
	case "read", "readv", "preadv2":
		return r.read(c, name)
	case "umask":
		if err := argN(c, 1); err != nil {
			return err
		}
		m, err := c.Args[0].Int()
		if err != nil {
			return err
		}
		r.o.Umask = uint32(m) & 0o777
		return nil
	case "write", "pwrite64", "writev", "pwritev", "pwritev2":
		return r.write(c, name)
	case "ftruncate", "truncate":
		return r.truncate(c, name)
	case "mkdirat", "mkdir":
		return r.mkdir(c, name)
	case "unlinkat", "unlink", "rmdir":
		return r.unlink(c, name)
	case "renameat", "renameat2", "rename":
		return r.rename(c, name)
	case "linkat", "link":
		return r.link(c, name)
	case "fchmod", "fchmodat", "chmod":
		return r.chmod(c, name)
	case "fchown", "fchownat", "chown", "lchown":
		return r.chown(c, name)
	case "fsync", "fdatasync":
		if err := argN(c, 1); err != nil {
			return err
		}
		f, err := r.fd(c.Args[0])
		if err != nil || f.ino < 0 {
			return err
		}
		k := OpFsync
		if name == "fdatasync" {
			k = OpFdatasync
		}
		return r.emit(Op{Kind: k, Line: c.Line, Call: name, Ino: f.ino, Path: r.rel(target{ino: f.ino})})
	case "syncfs":
		if err := argN(c, 1); err != nil {
			return err
		}
		f, err := r.fd(c.Args[0])
		if err != nil || f.ino < 0 {
			// Another file system, as far as the model knows: covering nothing is the
			// cautious reading.
			return err
		}
		return r.emit(Op{Kind: OpSyncfs, Line: c.Line, Call: name, Path: r.rel(target{ino: f.ino})})
	case "sync":
		return r.emit(Op{Kind: OpSyncfs, Line: c.Line, Call: name})
	}
	if mutating[name] {
		return r.refuseIfInside(c, name)
	}
	return nil
}

// mutating lists the calls that may change a file system; those the model does not follow
// are refused when they concern a path it covers.
var mutating = map[string]bool{
	"openat": true, "open": true, "creat": true, "write": true, "pwrite64": true, "writev": true,
	"pwritev": true, "pwritev2": true, "ftruncate": true, "truncate": true, "mkdirat": true,
	"mkdir": true, "unlinkat": true, "unlink": true, "rmdir": true, "renameat": true,
	"renameat2": true, "rename": true, "linkat": true, "link": true, "fchmod": true,
	"fchmodat": true, "chmod": true, "fchown": true, "fchownat": true, "chown": true,
	"lchown": true, "fallocate": true, "copy_file_range": true, "sendfile": true,
	"splice": true, "symlink": true, "symlinkat": true, "mknod": true, "mknodat": true,
	"setxattr": true, "fsetxattr": true, "lsetxattr": true, "removexattr": true,
	"fremovexattr": true, "lremovexattr": true, "utimensat": true, "io_uring_enter": true,
}

// refuseIfInside fails when any descriptor or path argument of an unfollowed call lies
// inside the model.
func (r *replayer) refuseIfInside(c *Call, name string) error {
	for _, a := range c.Args {
		var t target
		var err error
		switch {
		case a.IsFd:
			if f, ok := r.fds[a.Fd]; ok && f.ino >= 0 {
				return fmt.Errorf("%s on %s: %w", name, r.rel(target{ino: f.ino}), errUnsupported)
			}
			t, err = r.base(a)
		case a.IsStr && path.IsAbs(string(a.Str)):
			t, err = r.resolveAbs(string(a.Str))
		default:
			continue
		}
		if err != nil || t.inside() {
			return fmt.Errorf("%s on a path inside the model: %w", name, errUnsupported)
		}
	}
	return nil
}

func (r *replayer) unknownResult(c *Call, name string) error {
	if err := r.refuseIfInside(c, name); err != nil {
		return fmt.Errorf("result unknown (process died inside the call): %w", err)
	}
	return nil
}

func (r *replayer) dup(c *Call, old Arg) error {
	f, err := r.fd(old)
	if err != nil {
		return err
	}
	r.fds[int(c.Ret)] = f
	return nil
}

func (r *replayer) open(c *Call, name string) error {
	var dirfd, fname Arg
	var flags map[string]bool
	mode := int64(-1)
	var err error
	switch name {
	case "openat":
		if err := argN(c, 3); err != nil {
			return err
		}
		dirfd, fname, flags = c.Args[0], c.Args[1], c.Args[2].Flags()
		if len(c.Args) > 3 {
			if mode, err = c.Args[3].Int(); err != nil {
				return err
			}
		}
	case "open":
		if err := argN(c, 2); err != nil {
			return err
		}
		dirfd, fname, flags = Arg{IsFd: true, Fd: AtFdcwd}, c.Args[0], c.Args[1].Flags()
		if len(c.Args) > 2 {
			if mode, err = c.Args[2].Int(); err != nil {
				return err
			}
		}
	case "creat":
		if err := argN(c, 2); err != nil {
			return err
		}
		dirfd, fname = Arg{IsFd: true, Fd: AtFdcwd}, c.Args[0]
		flags = map[string]bool{"O_CREAT": true, "O_WRONLY": true, "O_TRUNC": true}
		if mode, err = c.Args[1].Int(); err != nil {
			return err
		}
	}
	t, err := r.at(dirfd, fname)
	if err != nil {
		return err
	}
	f := &ofd{ino: -1, ext: t.ext, append: flags["O_APPEND"], write: flags["O_WRONLY"] || flags["O_RDWR"], read: !flags["O_WRONLY"]}
	r.fds[int(c.Ret)] = f
	if !t.inside() {
		return nil
	}
	if flags["O_TMPFILE"] || flags["__O_TMPFILE"] {
		return fmt.Errorf("O_TMPFILE: %w", errUnsupported)
	}
	if t.ino < 0 {
		if !flags["O_CREAT"] {
			return fmt.Errorf("%s opened but missing in the model: %w", r.rel(t), errModel)
		}
		if mode < 0 {
			return fmt.Errorf("O_CREAT without a mode")
		}
		a := r.newAttr(t.parent, uint32(mode), false)
		ino := r.newIno(File, a)
		if err := r.emit(Op{Kind: OpCreate, Line: c.Line, Call: name, Dir: t.parent, Ino: ino, Name: t.last,
			Mode: a.Mode, UID: a.UID, GID: a.GID, Path: r.rel(t)}); err != nil {
			return err
		}
		t.ino = ino
	} else if flags["O_CREAT"] && flags["O_EXCL"] {
		return fmt.Errorf("%s created with O_EXCL but exists in the model: %w", r.rel(t), errModel)
	}
	f.ino = t.ino
	if err := r.checkRet(c, t.ino); err != nil {
		return err
	}
	n := r.vol.nodes[t.ino]
	if flags["O_TRUNC"] && f.write && n.kind == File {
		return r.emit(Op{Kind: OpTruncate, Line: c.Line, Call: name, Ino: t.ino, Size: 0, Path: r.rel(t)})
	}
	return nil
}

// checkRet compares the -y path strace printed for a returned descriptor with the model.
func (r *replayer) checkRet(c *Call, ino int) error {
	p := c.RetPath
	if p == "" || strings.HasSuffix(p, " (deleted)") {
		return nil
	}
	t, err := r.resolveAbs(p)
	if err != nil {
		return err
	}
	if !t.inside() || t.ino != ino {
		return fmt.Errorf("descriptor %d is %s, the model says %s: %w", c.Ret, p, r.rel(target{ino: ino}), errModel)
	}
	return nil
}

// newAttr is the metadata of a new inode: mode less umask, the process's owner, and its
// group unless the directory is setgid (then the directory's group; a new directory also
// inherits the setgid bit).
func (r *replayer) newAttr(parent int, mode uint32, dir bool) Attr {
	a := Attr{Mode: mode & 0o7777 &^ r.o.Umask, UID: r.o.UID, GID: r.o.GID}
	if p := r.vol.nodes[parent]; p != nil && p.attr.Mode&0o2000 != 0 {
		a.GID = p.attr.GID
		if dir {
			a.Mode |= 0o2000
		}
	}
	return a
}

func (r *replayer) write(c *Call, name string) error {
	if err := argN(c, 3); err != nil {
		return err
	}
	f, err := r.fd(c.Args[0])
	if err != nil || f.ino < 0 {
		return err
	}
	n := r.vol.nodes[f.ino]
	if n == nil || n.kind != File {
		return fmt.Errorf("write to a non-file: %w", errModel)
	}
	var data []byte
	switch name {
	case "write", "pwrite64":
		if !c.Args[1].IsStr {
			return fmt.Errorf("buffer not printed: %w", errUnsupported)
		}
		data = c.Args[1].Str
	default:
		if data, err = iovecData(c.Args[1].Text); err != nil {
			return err
		}
	}
	if int64(len(data)) < c.Ret {
		return fmt.Errorf("strace printed %d of %d bytes written (raise -s): %w", len(data), c.Ret, errUnsupported)
	}
	data = append([]byte(nil), data[:c.Ret]...)
	off := int64(-1)
	switch name {
	case "pwrite64", "pwritev", "pwritev2":
		if err := argN(c, 4); err != nil {
			return err
		}
		if off, err = c.Args[3].Int(); err != nil {
			return err
		}
	}
	if off < 0 { // write, writev, and pwritev2 at offset -1: the descriptor's offset
		off = f.off
		if f.append {
			off = int64(len(n.data))
		}
		f.off = off + c.Ret
	}
	return r.emit(Op{Kind: OpWrite, Line: c.Line, Call: name, Ino: f.ino, Off: off, Data: data, Path: r.rel(target{ino: f.ino})})
}

// read moves the offset of a descriptor a later write may use. Reads are traced raw (strace
// -e raw=read,readv,preadv2): only the descriptor and the count are printed, never the
// buffer, so no secret the process reads (a PIN on standard input) reaches the trace.
func (r *replayer) read(c *Call, name string) error {
	if err := argN(c, 3); err != nil {
		return err
	}
	f, err := r.fd(c.Args[0])
	if err != nil || f.ino < 0 {
		return err
	}
	if name == "preadv2" {
		if err := argN(c, 4); err != nil {
			return err
		}
		if off, err := c.Args[3].Int(); err != nil || off != -1 {
			return err // at an explicit offset: the descriptor's does not move
		}
	}
	f.off += c.Ret
	return nil
}

// iovecData joins the buffers of a printed iovec array.
func iovecData(s string) ([]byte, error) {
	var out []byte
	for {
		i := strings.Index(s, "iov_base=")
		if i < 0 {
			return out, nil
		}
		s = s[i+len("iov_base="):]
		a, err := parseArg(s[:closingQuote(s)+1])
		if err != nil || !a.IsStr {
			return nil, fmt.Errorf("iovec buffer not printed: %w", errUnsupported)
		}
		if strings.HasPrefix(s[closingQuote(s)+1:], "...") {
			return nil, fmt.Errorf("iovec buffer truncated (raise -s): %w", errUnsupported)
		}
		out = append(out, a.Str...)
		s = s[closingQuote(s)+1:]
	}
}

func (r *replayer) truncate(c *Call, name string) error {
	if err := argN(c, 2); err != nil {
		return err
	}
	var t target
	if name == "ftruncate" {
		f, err := r.fd(c.Args[0])
		if err != nil || f.ino < 0 {
			return err
		}
		t = target{ino: f.ino}
	} else {
		var err error
		if t, err = r.at(Arg{IsFd: true, Fd: AtFdcwd}, c.Args[0]); err != nil || !t.inside() {
			return err
		}
	}
	size, err := c.Args[1].Int()
	if err != nil {
		return err
	}
	return r.emit(Op{Kind: OpTruncate, Line: c.Line, Call: name, Ino: t.ino, Size: size, Path: r.rel(t)})
}

func (r *replayer) mkdir(c *Call, name string) error {
	dirfd, i := Arg{IsFd: true, Fd: AtFdcwd}, 0
	if name == "mkdirat" {
		dirfd, i = c.Args[0], 1
	}
	if err := argN(c, i+2); err != nil {
		return err
	}
	t, err := r.at(dirfd, c.Args[i])
	if err != nil || !t.inside() {
		return err
	}
	if t.ino >= 0 || t.last == "" {
		return fmt.Errorf("mkdir %s: exists in the model: %w", r.rel(t), errModel)
	}
	mode, err := c.Args[i+1].Int()
	if err != nil {
		return err
	}
	a := r.newAttr(t.parent, uint32(mode), true)
	ino := r.newIno(Dir, a)
	return r.emit(Op{Kind: OpMkdir, Line: c.Line, Call: name, Dir: t.parent, Ino: ino, Name: t.last, Mode: a.Mode, UID: a.UID, GID: a.GID, Path: r.rel(t)})
}

func (r *replayer) unlink(c *Call, name string) error {
	dirfd, i := Arg{IsFd: true, Fd: AtFdcwd}, 0
	if name == "unlinkat" {
		dirfd, i = c.Args[0], 1
	}
	if err := argN(c, i+1); err != nil {
		return err
	}
	t, err := r.at(dirfd, c.Args[i])
	if err != nil || !t.inside() {
		return err
	}
	if t.ino < 0 || t.last == "" {
		return fmt.Errorf("unlink %s: missing in the model: %w", r.rel(t), errModel)
	}
	n := r.vol.nodes[t.ino]
	wantDir := name == "rmdir" || name == "unlinkat" && len(c.Args) > 2 && c.Args[2].Flags()["AT_REMOVEDIR"]
	if (n.kind == Dir) != wantDir {
		return fmt.Errorf("unlink %s: kind %s in the model: %w", r.rel(t), n.kind, errModel)
	}
	if n.kind == Dir && len(n.ents) > 0 {
		return fmt.Errorf("rmdir %s: not empty in the model: %w", r.rel(t), errModel)
	}
	p := r.rel(t)
	return r.emit(Op{Kind: OpUnlink, Line: c.Line, Call: name, Dir: t.parent, Ino: t.ino, Name: t.last, Path: p})
}

func (r *replayer) rename(c *Call, name string) error {
	var from, to target
	var err error
	flags := map[string]bool{}
	cwd := Arg{IsFd: true, Fd: AtFdcwd}
	switch name {
	case "rename":
		if err := argN(c, 2); err != nil {
			return err
		}
		from, err = r.at(cwd, c.Args[0])
		if err == nil {
			to, err = r.at(cwd, c.Args[1])
		}
	default:
		if err := argN(c, 4); err != nil {
			return err
		}
		from, err = r.at(c.Args[0], c.Args[1])
		if err == nil {
			to, err = r.at(c.Args[2], c.Args[3])
		}
		if name == "renameat2" && len(c.Args) > 4 {
			flags = c.Args[4].Flags()
		}
	}
	if err != nil {
		return err
	}
	if !from.inside() && !to.inside() {
		return nil
	}
	if !from.inside() || !to.inside() {
		return fmt.Errorf("rename into or out of the model: %w", errUnsupported)
	}
	if from.ino < 0 || from.last == "" || to.last == "" {
		return fmt.Errorf("rename %s: missing in the model: %w", r.rel(from), errModel)
	}
	op := Op{Kind: OpRename, Line: c.Line, Call: name, Dir: from.parent, Ino: from.ino, Name: from.last, Name2: to.last,
		Path: r.rel(from), Path2: r.rel(target{parent: to.parent, last: to.last, ino: -1})}
	if from.parent != to.parent {
		op.Cross, op.Dir2 = true, to.parent
	}
	switch {
	case flags["RENAME_EXCHANGE"]:
		if to.ino < 0 {
			return fmt.Errorf("exchange with missing %s: %w", op.Path2, errModel)
		}
		op.Kind = OpExchange
	case flags["RENAME_WHITEOUT"]:
		return fmt.Errorf("RENAME_WHITEOUT: %w", errUnsupported)
	case flags["RENAME_NOREPLACE"] && to.ino >= 0:
		return fmt.Errorf("RENAME_NOREPLACE over existing %s: %w", op.Path2, errModel)
	}
	if from.last == to.last && !op.Cross {
		return nil // renaming a name to itself changes nothing
	}
	return r.emit(op)
}

func (r *replayer) link(c *Call, name string) error {
	var from, to target
	var err error
	cwd := Arg{IsFd: true, Fd: AtFdcwd}
	if name == "link" {
		if err := argN(c, 2); err != nil {
			return err
		}
		from, err = r.at(cwd, c.Args[0])
		if err == nil {
			to, err = r.at(cwd, c.Args[1])
		}
	} else {
		if err := argN(c, 4); err != nil {
			return err
		}
		from, err = r.at(c.Args[0], c.Args[1])
		if err == nil {
			to, err = r.at(c.Args[2], c.Args[3])
		}
	}
	if err != nil {
		return err
	}
	if !to.inside() {
		return nil
	}
	if !from.inside() {
		return fmt.Errorf("hard link from outside the model: %w", errUnsupported)
	}
	if from.ino < 0 || to.ino >= 0 || to.last == "" {
		return fmt.Errorf("link %s: the model disagrees: %w", r.rel(from), errModel)
	}
	return r.emit(Op{Kind: OpLink, Line: c.Line, Call: name, Dir: to.parent, Ino: from.ino, Name: to.last,
		Path: r.rel(from), Path2: r.rel(target{parent: to.parent, last: to.last, ino: -1})})
}

// pathTarget resolves the file an f*/f*at/plain call works on.
func (r *replayer) pathTarget(c *Call, name string) (target, int, error) {
	switch {
	case strings.HasSuffix(name, "at"):
		if err := argN(c, 2); err != nil {
			return target{}, 0, err
		}
		t, err := r.at(c.Args[0], c.Args[1])
		return t, 2, err
	case strings.HasPrefix(name, "f"):
		if err := argN(c, 1); err != nil {
			return target{}, 0, err
		}
		f, err := r.fd(c.Args[0])
		if err != nil {
			return target{}, 0, err
		}
		if f.ino < 0 {
			return target{ext: f.ext, ino: -1}, 1, nil
		}
		return target{ino: f.ino}, 1, nil
	default:
		if err := argN(c, 1); err != nil {
			return target{}, 0, err
		}
		t, err := r.at(Arg{IsFd: true, Fd: AtFdcwd}, c.Args[0])
		return t, 1, err
	}
}

func (r *replayer) chmod(c *Call, name string) error {
	t, i, err := r.pathTarget(c, name)
	if err != nil || !t.inside() {
		return err
	}
	if err := argN(c, i+1); err != nil {
		return err
	}
	if t.ino < 0 {
		return fmt.Errorf("chmod %s: missing in the model: %w", r.rel(t), errModel)
	}
	mode, err := c.Args[i].Int()
	if err != nil {
		return err
	}
	return r.emit(Op{Kind: OpChmod, Line: c.Line, Call: name, Ino: t.ino, Mode: uint32(mode) & 0o7777, Path: r.rel(t)})
}

func (r *replayer) chown(c *Call, name string) error {
	t, i, err := r.pathTarget(c, name)
	if err != nil || !t.inside() {
		return err
	}
	if err := argN(c, i+2); err != nil {
		return err
	}
	if t.ino < 0 {
		return fmt.Errorf("chown %s: missing in the model: %w", r.rel(t), errModel)
	}
	uid, err := c.Args[i].Int()
	if err != nil {
		return err
	}
	gid, err := c.Args[i+1].Int()
	if err != nil {
		return err
	}
	return r.emit(Op{Kind: OpChown, Line: c.Line, Call: name, Ino: t.ino, UID: int(uid), GID: int(gid), Path: r.rel(t)})
}
