package apply

import (
	"fmt"
	"sort"
	"strings"
	"sync"

	"github.com/ocktools/pkcstok-migrate/internal/repofs"
	"github.com/ocktools/pkcstok-migrate/plan"
	"github.com/ocktools/pkcstok-migrate/tokens"
)

// copyModes is the permission policy of the working copy (SECURITY.md, "no wider access").
// The set_perm rule (doc/format.md §1.4) gives every file 0660 and every directory 0770,
// group the token group, owner root: the 3.12 token library wants exactly that for the files
// it opens. But a copy must never let more users read than its source did: a file readable by
// root alone (a hard link to one of root's files planted in the repository, or an object a
// library running as root wrote 0640 root:root, as Debian's 3.8.1 does) must not become
// readable by the token group. So the token group may read (and, for a directory, search) the
// copy only if it could read the source, as the source's group or as "others":
//   - an entry of the token layout (the repository and TOK_OBJ, the key files, OBJ.IDX, the
//     objects OBJ.IDX lists) it could read gets exactly the rule's mode;
//   - any other entry, and a token-layout entry it could not read, gets at most what its
//     source gave (owner bits for root; the group's and others' bits for the token group;
//     nothing for others). Token-layout entries narrowed so are named in the result's
//     warnings: the library opens them only when run by root (which then widens them itself),
//     as it did before.
type copyModes struct {
	gid    int // the token group; < 0: no group (tests without root), the rule as it is
	layout map[string]bool

	mu       sync.Mutex
	narrowed []string // token-layout entries given less than the rule's mode
}

// objectsDir is the repository's directory of objects.
const objectsDir = "TOK_OBJ"

func newCopyModes(gid int, index []string) *copyModes {
	m := &copyModes{gid: gid, layout: map[string]bool{".": true, objectsDir: true, tokens.FileIndex: true}}
	for _, f := range keyFiles {
		m.layout[f] = true
	}
	for _, n := range index {
		m.layout[objectsDir+"/"+n] = true
	}
	return m
}

// mode is the CopyOptions.Mode of the working copy.
func (m *copyModes) mode(e repofs.Entry) (uint32, error) {
	want, read := uint32(repofs.FileMode), uint32(0o040)
	if e.Mode&0o170000 == 0o040000 {
		want, read = repofs.DirMode, 0o050
	}
	if m.gid < 0 {
		return want, nil
	}
	src := e.Mode & 0o777
	group := (src & 0o007) << 3 // what everyone could do, the token group may do
	if e.GID == m.gid {
		group |= src & 0o070
	}
	if !m.layout[e.Rel] {
		return want & (0o700 | group), nil
	}
	if group&read == read {
		return want, nil
	}
	m.mu.Lock()
	m.narrowed = append(m.narrowed, fmt.Sprintf("%s (%04o, gid %d)", e.Rel, src, e.GID))
	m.mu.Unlock()
	return want & (0o700 | group), nil
}

// warning names the token-layout entries the copy narrowed, "" when there are none.
func (m *copyModes) warning() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.narrowed) == 0 {
		return ""
	}
	sort.Strings(m.narrowed)
	list := m.narrowed
	more := ""
	if len(list) > 10 {
		list, more = list[:10], fmt.Sprintf(" and %d more", len(m.narrowed)-10)
	}
	return fmt.Sprintf("%d token file(s) the token group could not read keep that narrower access instead of the token's mode 0660/0770 (a token library run by root widens them when it opens them; members of the group cannot use them, as before): %s%s", len(m.narrowed), strings.Join(list, ", "), more)
}

// libraryTemp reports whether rel is a temporary file of the token library (3.26+ writes
// NVTOK.DAT, MK_*, OBJ.IDX and objects as <name>.TMP, then renames): the copy leaves them out
// (they are kept in the backup), the plan lists them.
func libraryTemp(e repofs.Entry) bool {
	return e.Mode&0o170000 == 0o100000 && plan.IsLibraryTemp(e.Rel)
}
