package conf

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/ocktools/pkcstok-migrate/tokens"
)

// maxSlots is upstream's NUMBER_SLOTS_MANAGED: slot ids are below it.
const maxSlots = 1024

// defaultUserGroup is the token group when a slot has no usergroup.
const defaultUserGroup = "pkcs11"

// defaultRepositoryBase is upstream's CONFIG_PATH (doc/format.md §1.1).
const defaultRepositoryBase = "/var/lib/opencryptoki"

// tokVersion312 is the value SetTokVersion writes.
const tokVersion312 = "3.12"

// tokVersion312Packed is 3.12 as upstream packs a version: major<<16 | minor.
const tokVersion312Packed = 3<<16 | 12

// Kind is the kind of a slot's tokversion value.
type Kind int

// Kinds of tokversion.
const (
	KindAbsent  Kind = iota // no tokversion key
	KindVersion             // tokversion = 3.11
	KindString              // tokversion = "3.11"
	KindOther               // anything else (tokversion = 3, tokversion = word, a block, ...)
)

func (k Kind) String() string {
	switch k {
	case KindAbsent:
		return "absent"
	case KindVersion:
		return "version"
	case KindString:
		return "string"
	}
	return "other"
}

// Slot is what the tool needs to know about one "slot N { ... }" block (doc/format.md §7.3-7.4).
type Slot struct {
	ID    int
	Line  int    // line of the "slot" word
	Stdll string // as written, not cut to 255 characters
	// Type is the token type from stdll; TypeExact is false when stdll is a path or has a
	// version suffix (upstream refuses those; callers should warn) or is unsupported.
	Type      tokens.Type
	TypeExact bool
	// UserGroup is the usergroup value, or defaultUserGroup with UserGroupDefault set.
	UserGroup        string
	UserGroupDefault bool
	TokName          string // "" when absent
	// TokVersion is the first tokversion value as written (string without quotes); "" when
	// absent. TokVersionKind tells its kind.
	TokVersion     string
	TokVersionKind Kind

	block      *node // the slot block
	tokVersion *node // first tokversion node, nil when absent
}

// TokVersionIs312 reports whether tokversion already says 3.12 (the version value 3.12, also
// written 3.012, or the string "3.12").
func (s *Slot) TokVersionIs312() bool {
	switch s.TokVersionKind {
	case KindVersion:
		return s.tokVersion.Num == tokVersion312Packed
	case KindString:
		return s.TokVersion == tokVersion312
	}
	return false
}

// RepositoryDir is the directory the token library uses for this slot: base/tokname, or
// base/<type's default directory> (doc/format.md §1.1). base "" means defaultRepositoryBase. It
// returns "" when it cannot be told: an unsupported type without tokname, or a tokname that is
// not a single path element.
func (s *Slot) RepositoryDir(base string) string {
	if base == "" {
		base = defaultRepositoryBase
	}
	name := s.TokName
	if name == "" {
		name = s.Type.DefaultDir()
	}
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
		return ""
	}
	return filepath.Join(base, name)
}

// reservedTokName is the directory openCryptoki keeps below its base for master-key changes
// (HSM_MK_CHANGE): no token may be named for it.
const reservedTokName = "HSM_MK_CHANGE"

// checkTokName: tokname names one directory below the repository base, as upstream's
// HEAD requires.
func checkTokName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
		return fmt.Errorf("tokname %q must be one path component (not empty, not . or .., no / or NUL)", name)
	}
	if name == reservedTokName {
		return fmt.Errorf("tokname %q is reserved by openCryptoki", name)
	}
	return nil
}

// Slot finds the slot as upstream does: the first top-level "slot <id>" block. Errors:
// errSlotIDOutOfRange, ErrSlotNotFound, errStdllMissing, errUserGroupInvalid,
// errTokNameInvalid.
func (f *File) Slot(id uint64) (*Slot, error) {
	if id >= maxSlots {
		return nil, fmt.Errorf("%s: slot %d: %w: %w", f.Name, id, ErrSlotNotFound, errSlotIDOutOfRange)
	}
	for _, n := range f.nodes {
		if n.Type == nodeIndexedBlock && n.Key == "slot" && n.Num == id {
			return f.slotFromBlock(n)
		}
	}
	return nil, fmt.Errorf("%s: slot %d: %w", f.Name, id, ErrSlotNotFound)
}

// Slots returns every slot (the first block for each id) in file order. Slots that cannot be
// used are left out and their errors joined into the error; the usable ones are still returned.
func (f *File) Slots() ([]*Slot, error) {
	var slots []*Slot
	var errs []error
	seen := map[uint64]bool{}
	for _, n := range f.nodes {
		if n.Type != nodeIndexedBlock || n.Key != "slot" || seen[n.Num] {
			continue
		}
		seen[n.Num] = true
		if n.Num >= maxSlots {
			errs = append(errs, fmt.Errorf("%s: line %d: slot %d: %w", f.Name, n.Line, n.Num, errSlotIDOutOfRange))
			continue
		}
		s, err := f.slotFromBlock(n)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		slots = append(slots, s)
	}
	return slots, errors.Join(errs...)
}

// findKey returns the first child of a block whose key is key.
func findKey(children []*node, key string) *node {
	for _, c := range children {
		switch c.Type {
		case nodeEOC, nodeStringConst, nodeFileVersion:
			continue
		}
		if c.Key == key {
			return c
		}
	}
	return nil
}

func isWordOrString(n *node) bool { return n.Type == nodeBareValue || n.Type == nodeString }

func (f *File) slotFromBlock(b *node) (*Slot, error) {
	s := &Slot{ID: int(b.Num), Line: b.Line, block: b}
	where := func(n *node) string {
		return fmt.Sprintf("%s: line %d: slot %d", f.Name, n.Line, s.ID)
	}
	stdll := findKey(b.Children, "stdll")
	if stdll == nil {
		return nil, fmt.Errorf("%s: %w (no stdll key)", where(b), errStdllMissing)
	}
	if !isWordOrString(stdll) {
		return nil, fmt.Errorf("%s: %w (stdll is a %s)", where(stdll), errStdllMissing, stdll.Type)
	}
	s.Stdll = stdll.Value
	s.Type, s.TypeExact = tokens.TypeFromStdll(s.Stdll)

	s.UserGroup, s.UserGroupDefault = defaultUserGroup, true
	if ug := findKey(b.Children, "usergroup"); ug != nil {
		if !isWordOrString(ug) {
			return nil, fmt.Errorf("%s: %w (it is a %s)", where(ug), errUserGroupInvalid, ug.Type)
		}
		s.UserGroup, s.UserGroupDefault = ug.Value, false
	}
	if tn := findKey(b.Children, "tokname"); tn != nil {
		if !isWordOrString(tn) {
			return nil, fmt.Errorf("%s: %w (it is a %s)", where(tn), errTokNameInvalid, tn.Type)
		}
		if err := checkTokName(tn.Value); err != nil {
			return nil, fmt.Errorf("%s: %w: %v", where(tn), errTokNameInvalid, err)
		}
		s.TokName = tn.Value
	}
	if tv := findKey(b.Children, "tokversion"); tv != nil {
		s.tokVersion = tv
		s.TokVersion = tv.Value
		switch tv.Type {
		case nodeVersion:
			s.TokVersionKind = KindVersion
		case nodeString:
			s.TokVersionKind = KindString
		default:
			s.TokVersionKind = KindOther
		}
	}
	return s, nil
}
