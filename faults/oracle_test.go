//go:build linux

package faults

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"github.com/ocktools/pkcstok-migrate/internal/conf"
	"github.com/ocktools/pkcstok-migrate/internal/layout"
	"github.com/ocktools/pkcstok-migrate/internal/repofs"
	"github.com/ocktools/pkcstok-migrate/tokens"
	"github.com/ocktools/pkcstok-migrate/tokens/tokentest"
)

// token is the repository every trial starts from: what its objects decrypt to (from the
// generator, not from the reader under test), its files as they were, and its conf.
type token struct {
	slot          int
	so, user      string
	objects       map[string][32]byte // object file -> SHA-256 of its clear bytes
	names         []string            // sorted
	tree          map[string]fileSum  // the repository's files, by path below it
	conf, newConf []byte              // opencryptoki.conf before and after apply

	keys tokentest.KeyCache // each set of key files is unlocked once
}

// fileSum is one entry of a tree: what must come back byte for byte and mode for mode
// (content snapshot), or what any change to it moves (metadata snapshot: inode, mtime, ctime
// instead of the content hash).
type fileSum struct {
	mode         fs.FileMode
	uid, gid     uint32
	size         int64
	sum          [32]byte
	ino          uint64
	mtime, ctime int64
}

func (f fileSum) String() string {
	if f.ino != 0 {
		return fmt.Sprintf("%v %d:%d %d bytes inode %d mtime %d ctime %d", f.mode, f.uid, f.gid, f.size, f.ino, f.mtime, f.ctime)
	}
	return fmt.Sprintf("%v %d:%d %d bytes sha256 %x", f.mode, f.uid, f.gid, f.size, f.sum[:6])
}

// snapshot reads the tree below dir ("." is dir itself): every entry's type, mode, owner and
// size, and the content hash of every file (content), or the inode and times of every entry
// (!content: nothing is opened).
func snapshot(dir string, content bool) (map[string]fileSum, error) {
	m := map[string]fileSum{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		e := fileSum{mode: fi.Mode(), uid: st.Uid, gid: st.Gid, size: fi.Size()}
		switch {
		case !content:
			e.ino, e.mtime, e.ctime = st.Ino, st.Mtim.Nano(), st.Ctim.Nano()
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			e.size, e.sum = int64(len(b)), sha256.Sum256(b)
		default:
			e.size = 0 // a directory's size is the file system's business
		}
		m[rel] = e
		return nil
	})
	return m, err
}

// treeDiff lists how got differs from want (at most five lines).
func treeDiff(want, got map[string]fileSum) []string {
	var d []string
	keys := map[string]bool{}
	for k := range want {
		keys[k] = true
	}
	for k := range got {
		keys[k] = true
	}
	sorted := make([]string, 0, len(keys))
	for k := range keys {
		sorted = append(sorted, k)
	}
	sort.Strings(sorted)
	for _, k := range sorted {
		w, wok := want[k]
		g, gok := got[k]
		switch {
		case !gok:
			d = append(d, k+": missing")
		case !wok:
			d = append(d, k+": not in the original")
		case w != g:
			d = append(d, fmt.Sprintf("%s: %v, the original %v", k, g, w))
		}
	}
	if len(d) > 5 {
		d = append(d[:5], fmt.Sprintf("... %d more", len(d)-5))
	}
	return d
}

// repoCheck is what one directory holds of the token.
type repoCheck struct {
	exists     bool
	format     string // old, 3.12, or "?" when NVTOK.DAT has neither size
	ok         map[string]bool
	unreadable bool  // an EIO: the file system cannot say
	err        error // the first problem
}

func isEIO(err error) bool { return errors.Is(err, syscall.EIO) }

// readRepo loads dir with the project's reader (tokens.Load through repofs, as the tool
// reads a repository), unlocks it with both PINs and decodes every object of the original
// that is not in have yet; an object counts when it decrypts to its original clear bytes.
func (tk *token) readRepo(dir string, have map[string]bool) repoCheck {
	rc := repoCheck{ok: map[string]bool{}}
	fail := func(err error) repoCheck {
		rc.unreadable = rc.unreadable || isEIO(err)
		if rc.err == nil {
			rc.err = err
		}
		return rc
	}
	if _, err := os.Lstat(dir); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return rc
		}
		return fail(err)
	}
	rc.exists = true
	nv, err := os.ReadFile(filepath.Join(dir, tokens.FileNVTok))
	if err != nil {
		return fail(err)
	}
	switch len(nv) {
	case tokens.NVTokOldSize:
		rc.format = "old"
	case tokens.NVTokNewSize:
		rc.format = "3.12"
	default:
		rc.format = "?"
	}
	d, err := repofs.OpenDir(dir)
	if err != nil {
		return fail(err)
	}
	defer d.Close()
	repo, err := tokens.Load(d)
	if err != nil {
		return fail(fmt.Errorf("load %s: %w", dir, err))
	}
	keys, err := tk.unlock(repo, nv)
	if err != nil {
		return fail(fmt.Errorf("unlock %s: %w", dir, err))
	}
	listed := map[string]bool{}
	for _, n := range repo.Index {
		listed[n] = true
	}
	for _, name := range tk.names {
		if have[name] {
			continue
		}
		if !listed[name] {
			fail(fmt.Errorf("%s: %s not in OBJ.IDX", dir, name))
			continue
		}
		b, err := repo.ReadObject(name)
		if err != nil {
			fail(err)
			continue
		}
		obj, err := tokens.DecodeObject(name, b, keys)
		if err != nil {
			fail(fmt.Errorf("%s: %w", dir, err))
			continue
		}
		if sha256.Sum256(obj.Clear) != tk.objects[name] {
			fail(fmt.Errorf("%s: %s decrypts to other bytes", dir, name))
			continue
		}
		rc.ok[name] = true
	}
	return rc
}

// unlock returns the keys of repo, derived once per set of key files.
func (tk *token) unlock(repo *tokens.Repository, nv []byte) (*tokens.Keys, error) {
	return tk.keys.Unlock(repo, nv, tk.so, tk.user)
}

// state is what a trial's tree holds at a check point.
type state struct {
	repo       string // the repository's format at the datastore: old, 3.12, missing, ?
	confState  string // orig, 3.12 (the bytes apply writes), other, missing, ?
	conf312    bool   // the slot's block says tokversion = 3.12
	lost       int    // objects of the original neither the repository nor its backup holds
	unreadable bool   // some of it could not be read (EIO): nothing is counted then
	leftovers  []string
	problems   []string // what the repository and backup checks found, for the log
}

// window is the library window invariant: a 3.12 repository at the slot's datastore while
// the slot's block in opencryptoki.conf lacks tokversion = 3.12 (the library would read the
// new files as old ones).
func (s state) window() bool { return s.repo == "3.12" && !s.conf312 && s.confState != "?" }

func (s state) cell() string {
	if s.unreadable && s.repo == "?" {
		return "unreadable"
	}
	c := s.repo + "/" + s.confState
	if s.unreadable {
		c += " (EIO)"
	}
	if s.window() {
		c += " WINDOW"
	}
	if s.lost > 0 {
		c += fmt.Sprintf(" lost %d", s.lost)
	}
	return c
}

// look checks the tree of a trial: the repository at ds and its backup ds_BAK (every object
// of the original must be in one of them), the conf, and what runs leave behind.
func (tk *token) look(ds, confdir string) state {
	var st state
	have := map[string]bool{}
	main := tk.readRepo(ds, have)
	for n := range main.ok {
		have[n] = true
	}
	st.repo = main.format
	switch {
	case main.unreadable:
		st.repo = "?"
	case !main.exists:
		st.repo = "missing"
	}
	st.unreadable = main.unreadable
	if main.err != nil {
		st.problems = append(st.problems, "repository: "+main.err.Error())
	}
	if len(have) < len(tk.names) {
		bak := tk.readRepo(ds+layout.SuffixBak, have)
		for n := range bak.ok {
			have[n] = true
		}
		st.unreadable = st.unreadable || bak.unreadable
		if bak.err != nil {
			st.problems = append(st.problems, "backup: "+bak.err.Error())
		}
	}
	if !st.unreadable {
		st.lost = len(tk.names) - len(have)
	}

	b, err := os.ReadFile(filepath.Join(confdir, layout.ConfName))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		st.confState = "missing"
	case err != nil:
		st.confState, st.unreadable = "?", st.unreadable || isEIO(err)
	case bytes.Equal(b, tk.conf):
		st.confState = "orig"
	case bytes.Equal(b, tk.newConf):
		st.confState, st.conf312 = "3.12", true
	default:
		st.confState = "other"
		if f, err := conf.Parse(layout.ConfName, b); err == nil {
			if s, err := f.Slot(uint64(tk.slot)); err == nil {
				st.conf312 = s.TokVersionIs312()
			}
		}
	}

	for _, p := range []string{ds + layout.SuffixTmp, ds + layout.SuffixJournal, filepath.Join(confdir, conf.TempName)} {
		if _, err := os.Lstat(p); err == nil {
			st.leftovers = append(st.leftovers, filepath.Base(p))
		}
	}
	return st
}

// unchanged says how the repository and conf differ from the original ("" when they are it,
// byte for byte and mode for mode, with nothing left beside them).
func (tk *token) unchanged(ds, confdir string) string {
	var d []string
	got, err := snapshot(ds, true)
	if err != nil {
		return fmt.Sprintf("read %s: %v", ds, err)
	}
	d = append(d, treeDiff(tk.tree, got)...)
	b, err := os.ReadFile(filepath.Join(confdir, layout.ConfName))
	if err != nil || !bytes.Equal(b, tk.conf) {
		d = append(d, fmt.Sprintf("%s is not the original (%v)", layout.ConfName, err))
	}
	return strings.Join(d, "; ")
}
