package tokens

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Attribute types the flattened parser knows (§5.1).
const (
	ckaClass                = 0x0
	ckaToken                = 0x1
	ckaPrivate              = 0x2
	ckaLabel                = 0x3
	ckaCertificateType      = 0x80
	ckaKeyType              = 0x100
	ckaID                   = 0x102
	ckaModulusBits          = 0x121
	ckaValueBits            = 0x160
	ckaValueLen             = 0x161
	ckaWrapTemplate         = 0x40000211
	ckaUnwrapTemplate       = 0x40000212
	ckaDeriveTemplate       = 0x40000213
	ckaEncapsulateTemplate  = 0x4000062A
	ckaDecapsulateTemplate  = 0x4000062B
	flatHdrLen              = 16
	attrHdrLen              = 12
	maxTemplateNestingDepth = 8
)

// Attrs are the attributes of a flattened object that a plan shows.
type Attrs struct {
	// Class is the CKA_CLASS attribute, or the header's class field when the attribute is
	// absent. (The header field is not reliable: the real token writes 0 there for keys.)
	Class uint32
	// HeaderClass is the class field of the 16-byte header as stored.
	HeaderClass uint32
	Label       []byte // nil if absent
	ID          []byte // nil if absent
	KeyType     *uint32
	Token       *bool
	Private     *bool
	// Count is the number of top-level attributes.
	Count uint32
	// Order is the byte order the object was read in; OrderUnknown when it was given none and
	// both orders read the same.
	Order ByteOrder
}

func is32BitAttr(t uint32) bool {
	switch t {
	case ckaClass, ckaKeyType, ckaCertificateType, ckaModulusBits, ckaValueBits, ckaValueLen:
		return true
	}
	return false
}

func isTemplateAttr(t uint32) bool {
	switch t {
	case ckaWrapTemplate, ckaUnwrapTemplate, ckaDeriveTemplate, ckaEncapsulateTemplate, ckaDecapsulateTemplate:
		return true
	}
	return false
}

// ParseFlattened walks a flattened object (§5.1): checks the header, every record's bounds
// (nested templates recursively), the 32-bit special attributes, and that the stored name equals
// name. Label and ID alias clear. Bytes after the last record are ignored, as the token library
// does. The byte order is found from the object itself (ParseFlattenedOrder with
// OrderUnknown).
func ParseFlattened(name string, clear []byte) (*Attrs, error) {
	return ParseFlattenedOrder(name, clear, OrderUnknown)
}

// ParseFlattenedOrder is ParseFlattened for an object of byte order ord. With OrderUnknown both
// orders are tried: the one that gives a well-formed object is taken; when both do and they
// differ in what Attrs reports, the order cannot be told and an *OrderError is returned.
func ParseFlattenedOrder(name string, clear []byte, ord ByteOrder) (*Attrs, error) {
	if ord != OrderUnknown {
		a, err := parseFlattened(name, clear, ord)
		if a != nil {
			a.Order = ord
		}
		return a, err
	}
	le, errLE := parseFlattened(name, clear, LittleEndian)
	bg, errBE := parseFlattened(name, clear, BigEndian)
	switch {
	case errLE == nil && errBE == nil:
		if !sameAttrs(le, bg) {
			return nil, orderErr(ObjectPath(name), "the flattened object is well-formed in both byte orders with different attributes")
		}
		return le, nil
	case errLE == nil:
		le.Order = LittleEndian
		return le, nil
	case errBE == nil:
		bg.Order = BigEndian
		return bg, nil
	}
	// Neither order gives a well-formed object: report the reading whose attribute count is
	// the plausible one, so the message names the real defect.
	if len(clear) >= 8 && vote(binary.LittleEndian.Uint32(clear[4:]), binary.BigEndian.Uint32(clear[4:])) == BigEndian {
		return nil, errBE
	}
	return nil, errLE
}

// sameAttrs: the two readings agree on everything Attrs reports.
func sameAttrs(a, b *Attrs) bool {
	eqU := func(x, y *uint32) bool { return x == nil && y == nil || x != nil && y != nil && *x == *y }
	eqB := func(x, y *bool) bool { return x == nil && y == nil || x != nil && y != nil && *x == *y }
	return a.Class == b.Class && a.HeaderClass == b.HeaderClass && a.Count == b.Count &&
		string(a.Label) == string(b.Label) && (a.Label == nil) == (b.Label == nil) &&
		string(a.ID) == string(b.ID) && (a.ID == nil) == (b.ID == nil) &&
		eqU(a.KeyType, b.KeyType) && eqB(a.Token, b.Token) && eqB(a.Private, b.Private)
}

// flattenedOrder tells the byte order a flattened object shows: the one order in which it is
// well-formed, OrderUnknown when both or neither are. It builds no message (it runs twice for
// every object); orderReason formats the why when it is asked for.
func flattenedOrder(name string, clear []byte) (ord ByteOrder, why orderReason, okLE, okBE bool) {
	if len(clear) < flatHdrLen || string(clear[8:16]) != name {
		return OrderUnknown, orderReason{}, false, false
	}
	okLE, okBE = flatWellFormed(clear, LittleEndian), flatWellFormed(clear, BigEndian)
	cLE, cBE := int64(binary.LittleEndian.Uint32(clear[4:])), int64(binary.BigEndian.Uint32(clear[4:]))
	switch {
	case okLE && !okBE:
		return LittleEndian, orderReason{kind: reasonBody, a: cLE, b: cBE}, okLE, okBE
	case okBE && !okLE:
		return BigEndian, orderReason{kind: reasonBody, a: cBE, b: cLE}, okLE, okBE
	}
	return OrderUnknown, orderReason{}, okLE, okBE
}

// flatWellFormed: the records of clear parse in order ord (the header already checked).
func flatWellFormed(clear []byte, ord ByteOrder) bool {
	host := ord.Binary()
	p := &flatParser{a: &Attrs{}, host: host, quiet: true}
	_, err := p.records(clear[flatHdrLen:], uint64(host.Uint32(clear[4:])), 0)
	return err == nil
}

// parseFlattened is ParseFlattened in the byte order ord.
func parseFlattened(name string, clear []byte, ord ByteOrder) (*Attrs, error) {
	file := ObjectPath(name)
	if len(clear) < flatHdrLen {
		return nil, corrupt(file, "flattened object of %d bytes is shorter than its %d-byte header", len(clear), flatHdrLen)
	}
	if stored := clear[8:16]; string(stored) != name {
		return nil, corrupt(file, "the name stored in the object (bytes 8..15) differs from the file name")
	}
	host := ord.Binary()
	a := &Attrs{HeaderClass: host.Uint32(clear), Count: host.Uint32(clear[4:])}
	p := &flatParser{file: file, a: a, host: host, size: len(clear)}
	if _, err := p.records(clear[flatHdrLen:], uint64(a.Count), 0); err != nil {
		return nil, err
	}
	if p.class != nil {
		a.Class = *p.class
	} else {
		a.Class = a.HeaderClass
	}
	return a, nil
}

type flatParser struct {
	file  string
	a     *Attrs
	class *uint32
	host  binary.ByteOrder
	quiet bool // only whether it parses: errQuiet, no message built
	size  int  // of the whole flattened object, for messages
}

// errQuiet is what a quiet parse fails with (flattenedOrder tries both orders for every
// object; the failing one needs no message).
var errQuiet = errors.New("not well-formed")

func (p *flatParser) fail(format string, args ...any) error {
	if p.quiet {
		return errQuiet
	}
	return corrupt(p.file, format, args...)
}

// records parses up to count records from b (count < 0 meaning "until b is used up", for nested
// templates) and returns the number of bytes used. Only depth 0 fills Attrs.
func (p *flatParser) records(b []byte, count uint64, depth int) (int, error) {
	nested := depth > 0
	off := 0
	for i := uint64(0); nested && off < len(b) || !nested && i < count; i++ {
		rest := b[off:]
		if len(rest) < attrHdrLen {
			return 0, p.fail("attribute record %d header is past the end of the object", i)
		}
		typ := p.host.Uint32(rest)
		l := uint64(p.host.Uint32(rest[8:]))
		if l > uint64(len(rest)-attrHdrLen) {
			return 0, p.fail("attribute record %d: its value length runs past the end of the %d-byte object", i, p.size)
		}
		val := rest[attrHdrLen : attrHdrLen+int(l) : attrHdrLen+int(l)]
		switch {
		case is32BitAttr(typ):
			if l != 0 && l != 4 {
				return 0, p.fail("attribute record %d: a CK_ULONG attribute whose length is neither 0 nor 4", i)
			}
		case isTemplateAttr(typ):
			if depth >= maxTemplateNestingDepth {
				return 0, p.fail("templates nested deeper than %d", maxTemplateNestingDepth)
			}
			if _, err := p.records(val, 0, depth+1); err != nil {
				return 0, err
			}
		}
		if !nested {
			p.set(typ, val)
		}
		off += attrHdrLen + int(l)
	}
	return off, nil
}

// set records the interesting top-level attributes; the first occurrence wins.
func (p *flatParser) set(typ uint32, val []byte) {
	a := p.a
	switch typ {
	case ckaClass:
		if p.class == nil && len(val) == 4 {
			v := p.host.Uint32(val)
			p.class = &v
		}
	case ckaLabel:
		if a.Label == nil {
			a.Label = val
		}
	case ckaID:
		if a.ID == nil {
			a.ID = val
		}
	case ckaKeyType:
		if a.KeyType == nil && len(val) == 4 {
			v := p.host.Uint32(val)
			a.KeyType = &v
		}
	case ckaToken:
		if a.Token == nil && len(val) >= 1 {
			v := val[0] != 0
			a.Token = &v
		}
	case ckaPrivate:
		if a.Private == nil && len(val) >= 1 {
			v := val[0] != 0
			a.Private = &v
		}
	}
}

var classNames = map[uint32]string{
	0: "CKO_DATA", 1: "CKO_CERTIFICATE", 2: "CKO_PUBLIC_KEY", 3: "CKO_PRIVATE_KEY",
	4: "CKO_SECRET_KEY", 5: "CKO_HW_FEATURE", 6: "CKO_DOMAIN_PARAMETERS", 7: "CKO_MECHANISM",
	8: "CKO_OTP_KEY", 9: "CKO_PROFILE", 0x80000000: "CKO_VENDOR_DEFINED",
}

// ClassName names an object class ("CKO_DATA", ...); unknown values are shown in hex.
func ClassName(c uint32) string {
	if n, ok := classNames[c]; ok {
		return n
	}
	if c > 0x80000000 {
		return fmt.Sprintf("CKO_VENDOR_DEFINED+0x%X", c-0x80000000)
	}
	return fmt.Sprintf("0x%08X", c)
}

var keyTypeNames = map[uint32]string{
	0x0: "CKK_RSA", 0x1: "CKK_DSA", 0x2: "CKK_DH", 0x3: "CKK_EC", 0x4: "CKK_X9_42_DH",
	0x5: "CKK_KEA", 0x10: "CKK_GENERIC_SECRET", 0x11: "CKK_RC2", 0x12: "CKK_RC4", 0x13: "CKK_DES",
	0x14: "CKK_DES2", 0x15: "CKK_DES3", 0x1f: "CKK_AES",
	0x40: "CKK_EC_EDWARDS", 0x41: "CKK_EC_MONTGOMERY", 0x80000000: "CKK_VENDOR_DEFINED",
}

// KeyTypeName names a key type ("CKK_AES", ...); unknown values are shown in hex.
func KeyTypeName(k uint32) string {
	if n, ok := keyTypeNames[k]; ok {
		return n
	}
	return fmt.Sprintf("0x%08X", k)
}
