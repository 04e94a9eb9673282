package apply

import (
	"fmt"

	"github.com/ocktools/pkcstok-migrate/internal/repofs"
	"github.com/ocktools/pkcstok-migrate/plan"
	"github.com/ocktools/pkcstok-migrate/tokens"
)

// copyModes is the permission policy of the working copy (SECURITY.md, "no wider access").
// The set_perm rule (token-format.md §1.4) gives every file 0660 and every directory 0770,
// group the token group, owner root: the token library needs exactly that for the files it
// opens. But a copy must never let more users read than its source did: a file readable by
// root alone (say a hard link to one of root's files, planted in the repository) must not
// become readable by the token group. So:
//   - the token group may read (and, for a directory, search) the copy only if it could read
//     the source: as the source's group, or as "others";
//   - an entry of the token layout (the repository and TOK_OBJ, the key files, OBJ.IDX, the
//     objects OBJ.IDX lists) gets exactly the rule's mode, and is refused when that would let
//     the token group read what it could not (the library could not have read it either);
//   - any other entry gets at most what its source gave (owner bits kept for root, the
//     group's and others' bits for the token group, as above; none for others).
type copyModes struct {
	gid    int // the token group; < 0: no group (tests without root), the rule as it is
	layout map[string]bool
}

// objectsDir is the repository's directory of objects.
const objectsDir = "TOK_OBJ"

func newCopyModes(gid int, index []string) copyModes {
	m := copyModes{gid: gid, layout: map[string]bool{".": true, objectsDir: true, tokens.FileIndex: true}}
	for _, f := range keyFiles {
		m.layout[f] = true
	}
	for _, n := range index {
		m.layout[objectsDir+"/"+n] = true
	}
	return m
}

// mode is the CopyOptions.Mode of the working copy.
func (m copyModes) mode(e repofs.Entry) (uint32, error) {
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
	if m.layout[e.Rel] {
		if group&read != read {
			return 0, &plan.Error{Code: plan.CodeCorruptRepository, Message: fmt.Sprintf("%s has mode %04o and group %d: the token group (gid %d) cannot read it, and the 3.12 repository would give it mode %04o with that group; give it the token's mode and group (or remove it) and apply again", e.Rel, src, e.GID, m.gid, want)}
		}
		return want, nil
	}
	return want & (0o700 | group), nil
}

// libraryTemp reports whether rel is a temporary file of the token library (3.26+ writes
// NVTOK.DAT, MK_*, OBJ.IDX and objects as <name>.TMP, then renames): the copy leaves them out
// (they are kept in the backup), the plan lists them.
func libraryTemp(e repofs.Entry) bool {
	return e.Mode&0o170000 == 0o100000 && plan.IsLibraryTemp(e.Rel)
}
