package tokens

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/des"
	"encoding/binary"
	"fmt"
	"io"
	"sync"
)

// Object is one decoded token object file (§5).
type Object struct {
	Name    string
	Format  Format
	Private bool
	// Clear is the flattened object (§5.1); nil when not decrypted. For a public object it
	// aliases the file bytes given to DecodeObject (no copy).
	Clear                 []byte
	LegacyHostOrderHeader bool // 3.12–3.14 host-order public header (§5.5)
	// Order is the byte order this file's own bytes show (an old object's total_len, a
	// host-order 3.12 header, the flattened body), OrderUnknown when they show none;
	// OrderEvidence says what showed it. DecideOrder puts the objects of a repository
	// together.
	Order ByteOrder
	why   orderReason
	// wellFormed[o]: the flattened body parses in order o (found while checking the order).
	wellFormed [3]bool
	bodyParsed bool
}

// BodyWellFormed reports whether the flattened body (Clear) parses as a token library would
// read it, in order ord (OrderUnknown: in the order it shows, or in either when it shows
// none). It reuses what decoding learnt while checking the byte order. False when the body
// was not decrypted, its stored name differs from the file name, or it is cut short:
// ParseFlattenedOrder then says why.
func (o *Object) BodyWellFormed(ord ByteOrder) bool {
	if !o.bodyParsed {
		return false
	}
	if ord == OrderUnknown {
		ord = o.Order
	}
	if ord == OrderUnknown {
		return o.wellFormed[LittleEndian] || o.wellFormed[BigEndian]
	}
	return o.wellFormed[ord]
}

// OrderEvidence says what showed the object's Order (an empty Evidence when nothing did). It
// is formatted when asked for, not for every object decoded.
func (o *Object) OrderEvidence() Evidence {
	if o.Order == OrderUnknown {
		return Evidence{}
	}
	return Evidence{File: ObjectPath(o.Name), Order: o.Order, Reason: o.why.String(o.Order), clue: o.why.clue(o.Order)}
}

// orderReason is why an object shows its order, kept as numbers until OrderEvidence. String
// gives the readings (the plan's evidence); clue says the same without them, for an error.
type orderReason struct {
	kind    uint8
	a, b, c int64
}

const (
	reasonNone         = iota
	reasonTotalLen     // a: total_len in the order, b: file size, c: total_len read the other way
	reasonBE312Size    // a: file size
	reasonLegacyHeader // 3.12-3.14 host-order public header
	reasonOnlyReading  // a: total_len in the order
	reasonBody         // a: attribute count in the order, b: read the other way
)

func (r orderReason) String(o ByteOrder) string {
	switch r.kind {
	case reasonTotalLen:
		return fmt.Sprintf("total_len %d fits the %d-byte file read %s (%d read %s)", r.a, r.b, o, r.c, o.Other())
	case reasonBE312Size:
		return fmt.Sprintf("total_len %d equals the file size read big-endian", r.a)
	case reasonLegacyHeader:
		return "3.12–3.14 host-order public header 0C 00 03 00"
	case reasonOnlyReading:
		return fmt.Sprintf("only the %s reading of total_len (%d) gives a well-formed object", o, r.a)
	case reasonBody:
		return fmt.Sprintf("its flattened body is well-formed only read %s (%d attributes; %d read %s)", o, r.a, r.b, o.Other())
	}
	return ""
}

// clue is String without a value read from the file: what error texts say.
func (r orderReason) clue(o ByteOrder) string {
	switch r.kind {
	case reasonTotalLen:
		return fmt.Sprintf("its total_len fits the file only read %s", o)
	case reasonBE312Size:
		return "its total_len equals the file size read big-endian"
	case reasonLegacyHeader:
		return "3.12–3.14 host-order public header"
	case reasonOnlyReading:
		return fmt.Sprintf("only the %s reading of its total_len gives a well-formed object", o)
	case reasonBody:
		return fmt.Sprintf("its flattened body is well-formed only read %s", o)
	}
	return "its integers"
}

// Keys of an unlocked repository (or of a freshly built 3.12 one, see StartUpgrade).
// A *Keys is safe for concurrent use by DecodeObject / ReencryptObject / EncodePrivate312.
type Keys struct {
	Format Format
	OldMK  []byte // old format: the 24-byte 3DES key (first 24 bytes of the MK)
	NewMK  []byte // 3.12 format: the 32-byte AES key

	once sync.Once
	blk  cipher.Block // 3DES of OldMK or AES of NewMK, built on first use
	err  error
}

// block returns the cached cipher of the master key.
func (k *Keys) block() (cipher.Block, error) {
	k.once.Do(func() {
		switch k.Format {
		case FormatOld:
			if len(k.OldMK) != oldObjKeyLen {
				k.err = fmt.Errorf("tokens: old-format master key must be %d bytes", oldObjKeyLen)
				return
			}
			k.blk, k.err = des.NewTripleDESCipher(k.OldMK)
		case Format312:
			if len(k.NewMK) != mkNewLen {
				k.err = fmt.Errorf("tokens: 3.12 master key must be %d bytes", mkNewLen)
				return
			}
			k.blk, k.err = aes.NewCipher(k.NewMK)
		default:
			k.err = fmt.Errorf("tokens: keys of unknown format")
		}
	})
	return k.blk, k.err
}

// Wipe overwrites the key bytes. The Keys must not be used afterwards.
func (k *Keys) Wipe() {
	if k == nil {
		return
	}
	clear(k.OldMK)
	clear(k.NewMK)
	k.OldMK, k.NewMK = nil, nil
}

const (
	mkNewLen       = 32
	mkNewFileSize  = 40
	pubHdrLen      = 16
	privHdrLen     = 64
	gcmTagLen      = 16
	objKeyLen      = 32
	wrappedKeyLen  = 40
	offPrivFlag    = 4
	offPubLen      = 12
	offWrappedKey  = 8
	offNonce       = 48
	nonceLen       = 12
	offPrivLen     = 60
	objectNameLen  = 8
	objectDirSlash = "TOK_OBJ/"
)

// ObjectPath is the repository-relative path of an object file.
func ObjectPath(name string) string { return objectDirSlash + name }

// DecodeObject detects the format of an object file (§5.5 recommended rule) and returns its
// clear flattened bytes; the byte order of its host-order fields is found from the file's own
// bytes (DecodeObjectOrder with OrderUnknown). For a private object k must be of the object's
// format; k == nil decodes public objects only and returns ErrNeedKeys for private ones (with
// Object.Private/Format filled). Anything malformed is a *CorruptError naming TOK_OBJ/<name>.
func DecodeObject(name string, file []byte, k *Keys) (*Object, error) {
	return DecodeObjectOrder(name, file, OrderUnknown, k)
}

// DecodeObjectOrder is DecodeObject for a repository whose byte order ord is known: the file
// is read in that order, and a file whose own bytes show the other order gives an *OrderError
// (mixed byte order). With OrderUnknown the file's own bytes decide; a file whose bytes fit
// both orders with different results gives an *OrderError too.
func DecodeObjectOrder(name string, file []byte, ord ByteOrder, k *Keys) (*Object, error) {
	o := &Object{Name: name}
	err := decodeObject(name, file, ord, k, o)
	if err == nil || err == ErrNeedKeys {
		if oerr := o.checkOrder(ord); oerr != nil {
			return o, oerr
		}
	}
	return o, err
}

// checkOrder adds the flattened body's evidence to o and refuses a contradiction with the
// evidence already found or with the repository's order.
func (o *Object) checkOrder(ord ByteOrder) error {
	file := ObjectPath(o.Name)
	if o.Clear != nil {
		fo, why, le, bg := flattenedOrder(o.Name, o.Clear)
		o.wellFormed[LittleEndian], o.wellFormed[BigEndian], o.bodyParsed = le, bg, true
		if fo != OrderUnknown {
			if o.Order != OrderUnknown && o.Order != fo {
				return orderErr(file, "its header says %s (%s) but its body says %s (%s)", o.Order, o.why.clue(o.Order), fo, why.clue(fo))
			}
			if o.Order == OrderUnknown {
				o.Order, o.why = fo, why
			}
		}
	}
	if ord != OrderUnknown && o.Order == ord.Other() {
		return orderErr(file, "written in %s byte order (%s), but the repository is %s: mixed byte order, was it copied from another machine?", o.Order, o.why.clue(o.Order), ord)
	}
	return nil
}

func (o *Object) evidence(ord ByteOrder, why orderReason) {
	o.Order, o.why = ord, why
}

// oldObjectSizeBE312 is the one total_len a big-endian old object can have that makes its first
// four bytes read as the 3.12 version (§5.5: the reference has the same ambiguity).
const oldObjectSizeBE312 = int(Version312)

func decodeObject(name string, data []byte, ord ByteOrder, k *Keys, o *Object) error {
	file := ObjectPath(name)
	if len(data) < 4 {
		return corrupt(file, "file of %d bytes is too short for an object", len(data))
	}
	keysFor := func(f Format) (func() (cipher.Block, error), error) {
		if k == nil {
			return nil, nil
		}
		if k.Format != f {
			return nil, fmt.Errorf("%s: %s object needs %s-format keys, got %s", quoteName(file), f, f, k.Format)
		}
		return k.block, nil
	}
	switch {
	case be.Uint32(data) == Version312:
		err := decode312(file, data, keysFor, o)
		if err != nil && err != ErrNeedKeys && ord != LittleEndian && len(data) == oldObjectSizeBE312 {
			// A big-endian old object of exactly 196620 bytes starts like a 3.12 one.
			alt := &Object{Name: o.Name}
			if blk, kerr := keysFor(FormatOld); kerr == nil {
				if e := decodeOld(file, data, BigEndian, blk, alt); e == nil || e == ErrNeedKeys {
					*o = *alt
					o.evidence(BigEndian, orderReason{kind: reasonBE312Size, a: int64(len(data))})
					return e
				}
			}
		}
		return err
	case binary.LittleEndian.Uint32(data) == Version312:
		o.Format = Format312
		o.LegacyHostOrderHeader = true
		o.evidence(LittleEndian, orderReason{kind: reasonLegacyHeader})
		if len(data) < 5 {
			return corrupt(file, "file of %d bytes is too short for a 3.12 object", len(data))
		}
		if data[offPrivFlag] != 0 {
			return corrupt(file, "host-order 3.12 header on a private object")
		}
		return decodePublic312(file, data, binary.LittleEndian, o)
	default:
		blk, err := keysFor(FormatOld)
		if err != nil && len(data) >= oldPrefixLen && data[4] != 0 {
			return err
		}
		return decodeOldOrder(file, data, ord, blk, o)
	}
}

func decode312(file string, data []byte, keysFor func(Format) (func() (cipher.Block, error), error), o *Object) error {
	o.Format = Format312
	if len(data) < 5 {
		return corrupt(file, "file of %d bytes is too short for a 3.12 object", len(data))
	}
	switch data[offPrivFlag] {
	case 0:
		return decodePublic312(file, data, be, o)
	case 1:
		o.Private = true
		blk, err := keysFor(Format312)
		if err != nil {
			return err
		}
		if blk == nil {
			if err := checkPrivate312(file, data); err != nil {
				return err
			}
			return ErrNeedKeys
		}
		return decodePrivate312(file, data, blk, o)
	}
	return corrupt(file, "the private flag byte (offset %d) is neither 0 nor 1", offPrivFlag)
}

// totalLenFits: the old object's total_len read in order ord lies in (5, file size] and below
// 2^31.
func totalLenFits(data []byte, ord ByteOrder) (uint32, bool) {
	tl := ord.Binary().Uint32(data)
	return tl, tl > oldPrefixLen && uint64(tl) <= maxObjectLen && int(tl) <= len(data)
}

// decodeOldOrder decodes an old object (§5.2) in the repository's order ord, or, with
// OrderUnknown, in the order its total_len (and, if that is not enough, its content) shows.
func decodeOldOrder(file string, data []byte, ord ByteOrder, blk func() (cipher.Block, error), o *Object) error {
	if len(data) < oldPrefixLen {
		return corrupt(file, "file of %d bytes is shorter than the %d-byte object prefix", len(data), oldPrefixLen)
	}
	tlLE, fitsLE := totalLenFits(data, LittleEndian)
	tlBE, fitsBE := totalLenFits(data, BigEndian)
	var fits [3]bool
	var tl [3]uint32
	fits[LittleEndian], fits[BigEndian] = fitsLE, fitsBE
	tl[LittleEndian], tl[BigEndian] = tlLE, tlBE
	exact := func(x ByteOrder) bool { return int(tl[x]) == len(data) }
	// What the total_len field alone shows.
	shown := OrderUnknown
	switch {
	case fitsLE && !fitsBE:
		shown = LittleEndian
	case fitsBE && !fitsLE:
		shown = BigEndian
	case fitsLE && fitsBE && exact(LittleEndian) != exact(BigEndian):
		shown = LittleEndian
		if exact(BigEndian) {
			shown = BigEndian
		}
	}
	note := func(x ByteOrder) {
		if x == shown && tlLE != tlBE {
			o.evidence(x, orderReason{kind: reasonTotalLen, a: int64(tl[x]), b: int64(len(data)), c: int64(tl[x.Other()])})
		}
	}
	if ord != OrderUnknown {
		if !fits[ord] && exact(ord.Other()) && fits[ord.Other()] {
			o.Format = FormatOld
			note(ord.Other())
			return orderErr(file, "written in %s byte order (its total_len is the file size only read %s), but the repository is %s: mixed byte order, was it copied from another machine?",
				ord.Other(), ord.Other(), ord)
		}
		note(ord)
		return decodeOld(file, data, ord, blk, o)
	}
	if shown != OrderUnknown {
		note(shown)
		return decodeOld(file, data, shown, blk, o)
	}
	if tlLE == tlBE {
		return decodeOld(file, data, LittleEndian, blk, o)
	}
	if !fitsLE && !fitsBE {
		// Neither reading fits: report the smaller (the more plausible) one.
		x := LittleEndian
		if tlBE < tlLE {
			x = BigEndian
		}
		return decodeOld(file, data, x, blk, o)
	}
	// Both readings fit and neither or both equal the file size: try the whole object both ways.
	var ok []ByteOrder
	var objs [3]Object
	var firstErr error
	for _, x := range bothOrders {
		objs[x] = Object{Name: o.Name}
		err := decodeOld(file, data, x, blk, &objs[x])
		if err == nil || err == ErrNeedKeys {
			if err == nil {
				if _, ferr := parseFlattened(o.Name, objs[x].Clear, x); ferr != nil {
					err = ferr
				}
			}
		}
		if err == nil {
			ok = append(ok, x)
		} else if firstErr == nil && err != ErrNeedKeys {
			firstErr = err
		}
		if err == ErrNeedKeys {
			return orderErr(file, "its total_len fits the %d-byte file read either way; the private object would tell, but the PINs were not given", len(data))
		}
	}
	switch len(ok) {
	case 1:
		*o = objs[ok[0]]
		o.evidence(ok[0], orderReason{kind: reasonOnlyReading, a: int64(tl[ok[0]])})
		return nil
	case 2:
		return orderErr(file, "total_len gives a well-formed object in both byte orders")
	}
	return firstErr
}

func decodePublic312(file string, data []byte, ord interface{ Uint32([]byte) uint32 }, o *Object) error {
	if len(data) < pubHdrLen {
		return corrupt(file, "file of %d bytes is shorter than the %d-byte public header", len(data), pubHdrLen)
	}
	for _, c := range data[5:offPubLen] {
		if c != 0 {
			return corrupt(file, "reserved header bytes are not zero")
		}
	}
	n := uint64(ord.Uint32(data[offPubLen:]))
	if n > maxObjectLen {
		return corrupt(file, "object length is not below 2^31")
	}
	if want := pubHdrLen + n; want != uint64(len(data)) {
		return corrupt(file, "object length does not match the file size (%d bytes, %d of them header)", len(data), pubHdrLen)
	}
	o.Clear = data[pubHdrLen:len(data):len(data)]
	return nil
}

func checkPrivate312(file string, data []byte) error {
	if len(data) < privHdrLen+gcmTagLen {
		return corrupt(file, "file of %d bytes is shorter than a 3.12 private object (%d)", len(data), privHdrLen+gcmTagLen)
	}
	n := uint64(be.Uint32(data[offPrivLen:]))
	if n == 0 || n > maxObjectLen {
		return corrupt(file, "object length out of range 1..2^31-1")
	}
	if want := privHdrLen + n + gcmTagLen; want != uint64(len(data)) {
		return corrupt(file, "object length does not match the file size (%d bytes, %d of them header and tag)", len(data), privHdrLen+gcmTagLen)
	}
	return nil
}

func decodePrivate312(file string, data []byte, mk func() (cipher.Block, error), o *Object) error {
	if err := checkPrivate312(file, data); err != nil {
		return err
	}
	mkBlk, err := mk()
	if err != nil {
		return err
	}
	objKey, err := keyUnwrap(mkBlk, data[offWrappedKey:offWrappedKey+wrappedKeyLen])
	if err != nil {
		return corrupt(file, "object key does not unwrap with the master key (wrong key or tampered)")
	}
	aead, err := newGCM(objKey)
	clear(objKey)
	if err != nil {
		return err
	}
	hdr := data[:privHdrLen]
	clearObj, err := aead.Open(nil, hdr[offNonce:offNonce+nonceLen], data[privHdrLen:], hdr)
	if err != nil {
		return corrupt(file, "AES-GCM authentication failed (tampered header or body)")
	}
	o.Clear = clearObj
	return nil
}

func newGCM(key []byte) (cipher.AEAD, error) {
	blk, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(blk)
}

// EncodePublic312 builds a 3.12 public object file (§5.3, BE header) around a flattened object.
func EncodePublic312(clear []byte) []byte {
	out := make([]byte, pubHdrLen+len(clear))
	be.PutUint32(out, Version312)
	be.PutUint32(out[offPubLen:], uint32(len(clear)))
	copy(out[pubHdrLen:], clear)
	return out
}

// EncodePrivate312 builds a 3.12 private object file (§5.4): a fresh 32-byte object key read
// from rnd, wrapped under newMK, nonce = name ‖ 00000001, AES-256-GCM with the 64-byte header
// as AAD. name must be a valid 8-byte object name.
func EncodePrivate312(name string, clear, newMK []byte, rnd io.Reader) ([]byte, error) {
	k := &Keys{Format: Format312, NewMK: newMK}
	return encodePrivate312(name, clear, k, rnd)
}

func encodePrivate312(name string, clearObj []byte, k *Keys, rnd io.Reader) ([]byte, error) {
	if err := ValidObjectName(name); err != nil {
		return nil, err
	}
	if len(clearObj) == 0 || uint64(len(clearObj)) > maxObjectLen {
		return nil, fmt.Errorf("%s: flattened object of %d bytes cannot be stored", quoteName(ObjectPath(name)), len(clearObj))
	}
	mkBlk, err := k.block()
	if err != nil {
		return nil, err
	}
	var objKey [objKeyLen]byte
	defer clear(objKey[:])
	if _, err := io.ReadFull(rnd, objKey[:]); err != nil {
		return nil, fmt.Errorf("tokens: reading random object key: %w", err)
	}
	wrapped, err := keyWrap(mkBlk, objKey[:])
	if err != nil {
		return nil, err
	}
	aead, err := newGCM(objKey[:])
	if err != nil {
		return nil, err
	}
	out := make([]byte, privHdrLen+len(clearObj)+gcmTagLen)
	be.PutUint32(out, Version312)
	out[offPrivFlag] = 1
	copy(out[offWrappedKey:], wrapped)
	copy(out[offNonce:], name)
	be.PutUint32(out[offNonce+objectNameLen:], 1)
	be.PutUint32(out[offPrivLen:], uint32(len(clearObj)))
	hdr := out[:privHdrLen]
	aead.Seal(out[privHdrLen:privHdrLen], hdr[offNonce:offNonce+nonceLen], clearObj, hdr)
	return out, nil
}

// ReencryptObject turns one old object file into its 3.12 file: a public object gets the BE
// 16-byte header, a private one is decrypted with oldKeys and encrypted with newKeys and a fresh
// object key from rnd. clear is the flattened object. A file already in 3.12 format is returned
// as is with changed == false (clear is then nil for a private object). The file's own bytes
// decide its byte order. Safe for concurrent use (rnd must then be safe for concurrent use too,
// as crypto/rand.Reader is). It is Reencrypt with OrderUnknown, giving the parts of its result.
func ReencryptObject(name string, file []byte, oldKeys, newKeys *Keys, rnd io.Reader) (out []byte, clear []byte, changed bool, err error) {
	r, err := Reencrypt(name, file, OrderUnknown, oldKeys, newKeys, rnd)
	if err != nil {
		return nil, nil, false, err
	}
	return r.Out, r.Clear, r.Changed, nil
}

// Reencrypted is the 3.12 form of one object file.
type Reencrypted struct {
	Out     []byte // the 3.12 file; the input itself when Changed is false
	Clear   []byte // the flattened object; nil for a 3.12 private object
	Changed bool   // false: the input was already in the 3.12 format
	// Object describes the input: format, private flag and the byte-order evidence of its
	// own bytes (for DecideOrder when the repository's order was not known).
	Object *Object
}

// Reencrypt is ReencryptObject for a repository of byte order ord (OrderUnknown: the file's own
// bytes decide), with what was learnt about the input. The flattened body is copied
// unchanged, so the 3.12 file keeps the repository's order where the format keeps host order;
// a file of the other order is an *OrderError.
func Reencrypt(name string, file []byte, ord ByteOrder, oldKeys, newKeys *Keys, rnd io.Reader) (*Reencrypted, error) {
	if oldKeys != nil && oldKeys.Format != FormatOld {
		return nil, fmt.Errorf("tokens: ReencryptObject needs old-format keys, got %s", oldKeys.Format)
	}
	// A 3.12 file is taken as it is and needs no keys; the one old object that looks like
	// 3.12 (§5.5) comes back as old and is decoded again with the keys.
	is312 := len(file) >= 4 && (be.Uint32(file) == Version312 || binary.LittleEndian.Uint32(file) == Version312)
	keys := oldKeys
	if is312 {
		keys = nil
	}
	o := &Object{Name: name}
	err := decodeObject(name, file, ord, keys, o)
	if is312 && o.Format == FormatOld && err == ErrNeedKeys && oldKeys != nil {
		o = &Object{Name: name}
		err = decodeObject(name, file, ord, oldKeys, o)
	}
	if err == nil || err == ErrNeedKeys {
		if oerr := o.checkOrder(ord); oerr != nil {
			return nil, oerr
		}
	}
	if o.Format == Format312 && (err == nil || err == ErrNeedKeys) {
		return &Reencrypted{Out: file, Clear: o.Clear, Object: o}, nil
	}
	if err != nil {
		return nil, err
	}
	if !o.Private {
		return &Reencrypted{Out: EncodePublic312(o.Clear), Clear: o.Clear, Changed: true, Object: o}, nil
	}
	if newKeys == nil || newKeys.Format != Format312 {
		return nil, fmt.Errorf("tokens: ReencryptObject needs 3.12 keys for private object %s", quoteName(name))
	}
	out, err := encodePrivate312(name, o.Clear, newKeys, rnd)
	if err != nil {
		return nil, err
	}
	return &Reencrypted{Out: out, Clear: o.Clear, Changed: true, Object: o}, nil
}
