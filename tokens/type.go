// Package tokens reads openCryptoki token repositories in the old (pre-3.12) format and in the
// 3.12 format, and writes the 3.12 format. It reads through the FS interface and never writes
// files or decides policy: that is the job of the plan and apply packages.
package tokens

import (
	"path"
	"strings"
)

// Type is the token type of a slot, decided by its stdll (doc/format.md §1.1, §7.4).
type Type int

// The supported token types; TypeUnknown covers TPM, ICSF and everything else.
const (
	TypeUnknown Type = iota
	TypeSoft
	TypeICA
	TypeCCA
	TypeEP11
)

var typeInfo = [...]struct{ name, stdll, dir string }{
	TypeUnknown: {"unknown/unsupported", "", ""},
	TypeSoft:    {"Soft", "libpkcs11_sw.so", "swtok"},
	TypeICA:     {"ICA", "libpkcs11_ica.so", "lite"},
	TypeCCA:     {"CCA", "libpkcs11_cca.so", "ccatok"},
	TypeEP11:    {"EP11", "libpkcs11_ep11.so", "ep11tok"},
}

func (t Type) valid() bool { return t >= TypeUnknown && int(t) < len(typeInfo) }

// String is the name upstream prints: "Soft", "ICA", "CCA", "EP11" or "unknown/unsupported".
func (t Type) String() string {
	if !t.valid() {
		return typeInfo[TypeUnknown].name
	}
	return typeInfo[t].name
}

// Stdll is the exact stdll name of the type ("" for TypeUnknown).
func (t Type) Stdll() string {
	if !t.valid() {
		return ""
	}
	return typeInfo[t].stdll
}

// DefaultDir is the repository directory name under /var/lib/opencryptoki used when the slot
// has no tokname ("" for TypeUnknown).
func (t Type) DefaultDir() string {
	if !t.valid() {
		return ""
	}
	return typeInfo[t].dir
}

// Supported reports whether the type can be migrated.
func (t Type) Supported() bool { return t != TypeUnknown && t.valid() }

// TypeFromStdll maps a slot's stdll value to a token type. An exact match of one of the four
// names gives (t, true), as upstream accepts it. A path whose last element is one of the names,
// possibly followed by version suffixes (".so.0", ".so.0.1"), gives (t, false): upstream turns
// those away, we accept them with a warning. Anything else is (TypeUnknown, false).
func TypeFromStdll(stdll string) (Type, bool) {
	for t := TypeSoft; t <= TypeEP11; t++ {
		if stdll == t.Stdll() {
			return t, true
		}
	}
	base := path.Base(stdll)
	for t := TypeSoft; t <= TypeEP11; t++ {
		name := t.Stdll()
		if base == name {
			return t, false
		}
		if rest, ok := strings.CutPrefix(base, name); ok && versionSuffix(rest) {
			return t, false
		}
	}
	return TypeUnknown, false
}

// versionSuffix reports whether s is one or more ".N" groups of decimal digits.
func versionSuffix(s string) bool {
	if s == "" {
		return false
	}
	for s != "" {
		if s[0] != '.' {
			return false
		}
		s = s[1:]
		n := 0
		for n < len(s) && s[n] >= '0' && s[n] <= '9' {
			n++
		}
		if n == 0 {
			return false
		}
		s = s[n:]
	}
	return true
}

// Format is the on-disk format of a repository or of one file.
type Format int

// Formats.
const (
	FormatUnknown Format = iota
	FormatOld
	Format312
)

func (f Format) String() string {
	switch f {
	case FormatOld:
		return "old"
	case Format312:
		return "3.12"
	}
	return "unknown"
}
