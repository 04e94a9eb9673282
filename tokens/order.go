package tokens

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync"
)

// ByteOrder is the byte order of a repository's host-order fields (doc/format.md §0): every
// integer of the old format, every integer of the flattened object body (§5.1, in both formats)
// and the 3.12–3.14 public object header (§5.5). openCryptoki writes them in the native order
// of the machine that wrote the repository, so it is a property of the repository, found from
// its own bytes, never assumed from the machine this program runs on.
//
// This file is the one place that decides it: NVTokenOrder looks at NVTOK.DAT, the object
// decoders report what each object's own bytes show (Object.Order), and DecideOrder puts the
// evidence of a whole repository together.
type ByteOrder uint8

const (
	// OrderUnknown: nothing seen so far shows the order. Given to a decoder it means "find out
	// from this file's own bytes".
	OrderUnknown ByteOrder = iota
	LittleEndian
	BigEndian
)

// String is "little-endian", "big-endian" or "unknown".
func (o ByteOrder) String() string {
	switch o {
	case LittleEndian:
		return "little-endian"
	case BigEndian:
		return "big-endian"
	}
	return "unknown"
}

// ParseByteOrder is the inverse of String for the two known orders.
func ParseByteOrder(s string) (ByteOrder, error) {
	switch s {
	case "little-endian":
		return LittleEndian, nil
	case "big-endian":
		return BigEndian, nil
	}
	return OrderUnknown, fmt.Errorf("tokens: unknown byte order %q", s)
}

// Other is the opposite order (OrderUnknown stays unknown).
func (o ByteOrder) Other() ByteOrder {
	switch o {
	case LittleEndian:
		return BigEndian
	case BigEndian:
		return LittleEndian
	}
	return OrderUnknown
}

// Binary is the encoding/binary order; nil for OrderUnknown.
func (o ByteOrder) Binary() binary.ByteOrder {
	switch o {
	case LittleEndian:
		return binary.LittleEndian
	case BigEndian:
		return binary.BigEndian
	}
	return nil
}

// HostByteOrder is the native order of the machine this program runs on: the order the
// token library on this machine reads and writes.
func HostByteOrder() ByteOrder {
	if binary.NativeEndian.Uint16([]byte{1, 0}) == 1 {
		return LittleEndian
	}
	return BigEndian
}

// bothOrders is the order in which candidate readings are tried. The result never depends on
// it: a file whose bytes fit both orders in a way that matters is refused, not guessed.
var bothOrders = [2]ByteOrder{LittleEndian, BigEndian}

// ErrByteOrder is what errors about a repository's byte order wrap: its files disagree (an
// object from a repository of the other order was copied in), or nothing in them decides it
// although the result would depend on it. errors.Is(err, ErrCorrupt) is true for these too.
var ErrByteOrder = errors.New("byte order")

// OrderError names the file whose byte order is wrong or undecidable.
type OrderError struct {
	File   string
	Reason string
}

func (e *OrderError) Error() string {
	return "byte order: " + quoteName(e.File) + ": " + e.Reason
}

// Is makes errors.Is(e, ErrByteOrder) and errors.Is(e, ErrCorrupt) true.
func (e *OrderError) Is(target error) bool { return target == ErrByteOrder || target == ErrCorrupt }

func orderErr(file, format string, args ...any) error {
	return &OrderError{File: file, Reason: fmt.Sprintf(format, args...)}
}

// Evidence is one observation of the byte order a repository file was written in. Reason
// gives the readings that show it (the plan's byte_order_evidence); an error about the byte
// order names the file and says what showed the order without them.
type Evidence struct {
	File   string
	Order  ByteOrder
	Reason string

	clue string // Reason without a value read from the file ("" = "its integers")
}

func (e Evidence) String() string { return quoteName(e.File) + ": " + e.Reason }

// errorText is String for an error: the file and what showed its order, no reading.
func (e Evidence) errorText() string { return quoteName(e.File) + ": " + e.clueText() }

func (e Evidence) clueText() string {
	if e.clue == "" {
		return "its integers"
	}
	return e.clue
}

// NVToken field names of the 15 host-order integers of an old NVTOK.DAT (§2.1, §2.2), and
// whether each is a strong witness: a field whose real values are small (PIN lengths, flags,
// tweak switches), so that read in the wrong order it is huge. Session counts and memory sizes
// are weak witnesses: real tokens store 0 or all ones there (both read the same either way),
// and a legitimate large value could point the wrong way.
var nvtokIntFields = [numInfoInts + numTweaks]struct {
	off    int
	name   string
	strong bool
}{
	{96, "flags", true}, {100, "max session count", false}, {104, "session count", false},
	{108, "max r/w session count", false}, {112, "r/w session count", false},
	{116, "max PIN length", true}, {120, "min PIN length", true},
	{124, "total public memory", false}, {128, "free public memory", false},
	{132, "total private memory", false}, {136, "free private memory", false},
	{216, "tweak allow_weak_des", true}, {220, "tweak check_des_parity", true},
	{224, "tweak allow_key_mods", true}, {228, "tweak netscape_mods", true},
}

// vote tells which reading of a 32-bit field is the real one: the small one, when one reading
// is below 2^16 and the other at least 2^24 (a field of this format never legitimately spans
// that range). OrderUnknown when the field does not tell.
func vote(le, be uint32) ByteOrder {
	switch {
	case le < 1<<16 && be >= 1<<24:
		return LittleEndian
	case be < 1<<16 && le >= 1<<24:
		return BigEndian
	}
	return OrderUnknown
}

// NVTokenOrder decides the byte order of an old-format (232-byte) NVTOK.DAT from its own 15
// host-order integers. The strong witnesses decide (they must agree); the weak ones only when
// no strong one tells. When no field tells and every field reads the same in both orders, the
// result is OrderUnknown with no error: the conversion to 3.12 is then the same either way.
// A file that contradicts itself, or whose fields differ by order without telling which is
// right, gives an *OrderError.
func NVTokenOrder(b []byte) (ByteOrder, Evidence, error) {
	if len(b) != NVTokOldSize {
		return OrderUnknown, Evidence{}, fmt.Errorf("tokens: NVTokenOrder needs the %d-byte old format, got %d bytes", NVTokOldSize, len(b))
	}
	type seen struct {
		names  []string // with both readings: the evidence (plan output)
		fields []string // the field names alone: for an error, which carries no file value
	}
	var strong, weak [3]seen
	asymmetric := false
	for _, f := range nvtokIntFields {
		le, be := binary.LittleEndian.Uint32(b[f.off:]), binary.BigEndian.Uint32(b[f.off:])
		if le != be {
			asymmetric = true
		}
		v := vote(le, be)
		if v == OrderUnknown {
			continue
		}
		real, other := le, be
		if v == BigEndian {
			real, other = be, le
		}
		format := "%s %d (%d read %s)"
		if f.off == offFlags {
			format = "%s 0x%X (0x%X read %s)"
		}
		desc := fmt.Sprintf(format, f.name, real, other, v.Other())
		if f.strong {
			strong[v].names = append(strong[v].names, desc)
			strong[v].fields = append(strong[v].fields, f.name)
		} else {
			weak[v].names = append(weak[v].names, desc)
			weak[v].fields = append(weak[v].fields, f.name)
		}
	}
	const file = FileNVTok
	decide := func(votes [3]seen, kind string) (ByteOrder, Evidence, error, bool) {
		l, bg := votes[LittleEndian].names, votes[BigEndian].names
		switch {
		case len(l) > 0 && len(bg) > 0:
			return OrderUnknown, Evidence{}, orderErr(file, "its fields contradict each other: %s make sense read little-endian but %s read big-endian",
				strings.Join(votes[LittleEndian].fields, ", "), strings.Join(votes[BigEndian].fields, ", ")), true
		case len(l) > 0:
			return LittleEndian, Evidence{File: file, Order: LittleEndian, Reason: kind + strings.Join(l, ", "),
				clue: kind + strings.Join(votes[LittleEndian].fields, ", ") + " make sense read little-endian"}, nil, true
		case len(bg) > 0:
			return BigEndian, Evidence{File: file, Order: BigEndian, Reason: kind + strings.Join(bg, ", "),
				clue: kind + strings.Join(votes[BigEndian].fields, ", ") + " make sense read big-endian"}, nil, true
		}
		return OrderUnknown, Evidence{}, nil, false
	}
	if o, ev, err, ok := decide(strong, ""); ok {
		return o, ev, err
	}
	if o, ev, err, ok := decide(weak, "no PIN length, flag or tweak tells; "); ok {
		return o, ev, err
	}
	if asymmetric {
		return OrderUnknown, Evidence{}, orderErr(file, "its integers read differently in the two byte orders, but none of them tells which order is right")
	}
	return OrderUnknown, Evidence{}, nil
}

// DecideOrder puts together the byte-order evidence of one repository: that of NVTOK.DAT (an
// Evidence with OrderUnknown or an empty File when it tells nothing) and that of its objects
// (Object.OrderEvidence of each decoded object; entries with OrderUnknown are skipped). All
// evidence must agree; when it does not, the error names the files that disagree with the
// rest (with NVTOK.DAT, when it tells, as the reference). OrderUnknown with no error means
// nothing in the repository depends on the order.
func DecideOrder(nv Evidence, objects []Evidence) (ByteOrder, []Evidence, error) {
	var t OrderTally
	for i, e := range objects {
		t.add(i, e.Order, func() Evidence { return e })
	}
	return t.Decide(nv)
}

// OrderTally gathers the byte-order evidence of a repository's objects without keeping one
// Evidence per object (a repository may hold 100,000): how many show each order, and the
// evidence of the first of each, in index order. Safe for concurrent use.
type OrderTally struct {
	mu    sync.Mutex
	first [3]Evidence
	idx   [3]int
	count [3]int
}

// Add records what object i (its index in OBJ.IDX) showed.
func (t *OrderTally) Add(i int, o *Object) {
	t.add(i, o.Order, o.OrderEvidence)
}

func (t *OrderTally) add(i int, ord ByteOrder, ev func() Evidence) {
	if ord == OrderUnknown {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.count[ord]++
	if t.count[ord] == 1 || i < t.idx[ord] {
		t.first[ord], t.idx[ord] = ev(), i
	}
}

// Decide is DecideOrder over what was added.
func (t *OrderTally) Decide(nv Evidence) (ByteOrder, []Evidence, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	summary := func(o ByteOrder) []Evidence {
		var out []Evidence
		if nv.Order == o {
			out = append(out, nv)
		}
		if n := t.count[o]; n > 0 {
			out = append(out, t.first[o])
			if n > 1 {
				out = append(out, Evidence{File: "TOK_OBJ/", Order: o, Reason: fmt.Sprintf("%d more object(s) agree", n-1)})
			}
		}
		return out
	}
	if nv.Order != OrderUnknown {
		if odd := nv.Order.Other(); t.count[odd] > 0 {
			return OrderUnknown, nil, mixedError(t.first[odd], t.count[odd], nv.Order, nv.errorText())
		}
		return nv.Order, summary(nv.Order), nil
	}
	l, b := t.count[LittleEndian], t.count[BigEndian]
	switch {
	case l > 0 && b > 0:
		// No NVTOK.DAT witness: the minority is the odd one out.
		if l < b {
			return OrderUnknown, nil, mixedError(t.first[LittleEndian], l, BigEndian, t.first[BigEndian].errorText())
		}
		return OrderUnknown, nil, mixedError(t.first[BigEndian], b, LittleEndian, t.first[LittleEndian].errorText())
	case l > 0:
		return LittleEndian, summary(LittleEndian), nil
	case b > 0:
		return BigEndian, summary(BigEndian), nil
	}
	return OrderUnknown, nil, nil
}

func mixedError(odd Evidence, n int, want ByteOrder, reference string) error {
	more := ""
	if n > 1 {
		more = fmt.Sprintf(" (and %d more file(s) like it)", n-1)
	}
	return orderErr(odd.File, "written in %s byte order (%s), but the repository is %s (%s): mixed byte order, was it copied from another machine?%s",
		odd.Order, odd.clueText(), want, reference, more)
}
