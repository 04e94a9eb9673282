// Package conf reads opencryptoki.conf, finds a slot in it, and sets the slot's tokversion to
// 3.12 by editing the file in place, then writes it safely.
//
// Upstream pkcstok_migrate parses the file and writes the whole parse tree back out, which
// re-indents it, drops stray characters and CRs and turns hex into decimal (doc/format.md
// §7.5). This package changes only the bytes of the tokversion line: every token in the tree
// keeps its byte offsets, and the edit is a single insertion or replacement in the original
// bytes.
//
// API:
//
//	const MaxSize = 1 << 20
//	func Parse(name string, data []byte) (*File, error)      // syntax error, repofs.ErrTooLarge
//	func (f *File) Slot(id uint64) (*Slot, error)             // the first "slot <id>" block (§7.3)
//	func (f *File) Slots() ([]*Slot, error)                   // first block per slot id, in file order
//	func (s *Slot) RepositoryDir(base string) string          // base "" = /var/lib/opencryptoki
//	func (f *File) SetTokVersion(id uint64) (*Edit, error)    // Edit.Action "insert"|"replace"|"none"
//	func WriteIfUnchanged(confdir string, old, newContent []byte, hook func(string) error) (*WriteResult, error)
//
// Slot gives ID, Stdll, Type/TypeExact (tokens.TypeFromStdll; exact == false for a path or a
// ".so.N" name, which upstream refuses and callers should warn about), UserGroup (default
// "pkcs11" with UserGroupDefault), TokName, TokVersion and TokVersionKind (KindAbsent,
// KindVersion, KindString, KindOther). WriteIfUnchanged's hook is called with StepTmpWritten,
// StepTmpSynced, StepBackupLinked, StepRenamed, StepDirSynced, each just before that step.
//
// The grammar is exactly upstream's (doc/format.md §7.1-7.2), so a file this package accepts
// is one pkcsslotd accepts and the other way round, with three deliberate differences: a
// number or a version part that does not fit (upstream silently saturates or truncates) is a
// syntax error; input above MaxSize is refused; and a comment on the last line without a
// newline is accepted (pkcsslotd accepts it; only upstream pkcstok_migrate's comment-keeping
// pass does not).
//
// Errors for errors.Is: ErrSlotNotFound, ErrConfChanged, repofs.ErrSymlink,
// repofs.ErrNotRegular and repofs.ErrTooLarge; the others (a syntax error, a slot that cannot
// be used, a tokversion that cannot be set) are for people to read. All are wrapped with
// context.
package conf

import (
	"errors"
	"fmt"

	"github.com/ocktools/pkcstok-migrate/internal/repofs"
)

// MaxSize is the largest opencryptoki.conf Parse accepts (1 MiB). Real files are a few KiB.
const MaxSize = 1 << 20

// File names inside the conf directory.
const (
	confName   = "opencryptoki.conf"
	backupName = "opencryptoki.conf_BAK"
	TempName   = "opencryptoki.conf_new"
)

// Typed errors. They are wrapped with context; use errors.Is.
var (
	errSyntax            = errors.New("opencryptoki.conf syntax error")
	ErrSlotNotFound      = errors.New("slot not found in opencryptoki.conf")
	errSlotIDOutOfRange  = errors.New("slot id out of range (must be below 1024)")
	errStdllMissing      = errors.New("slot has no usable stdll")
	errUserGroupInvalid  = errors.New("slot usergroup is not a word or a string")
	errTokNameInvalid    = errors.New("invalid slot tokname")
	errTokVersionInvalid = errors.New("slot tokversion is neither a version nor a string")
	ErrConfChanged       = errors.New("opencryptoki.conf changed while it was being updated")
	errTokVersionNotOurs = errors.New("tokversion = 3.12 is not as a migration wrote it: put it back by hand")
	errInternal          = errors.New("internal error in the opencryptoki.conf edit")
)

// syntaxError is a parse error. Line and Column are what upstream's parser reports for the
// same input (including its quirks: columns are 1-based on line 1 and 0-based after it).
// Error() reads like upstream's message; File names the file for callers that want it.
type syntaxError struct {
	File         string
	Line, Column int
	Offset       int // byte offset of the offending token
	Msg          string
}

func (e *syntaxError) Error() string {
	return fmt.Sprintf("Error parsing config file: line %d column %d: %s", e.Line, e.Column, e.Msg)
}

// Is makes errors.Is(err, errSyntax) true.
func (e *syntaxError) Is(target error) bool { return target == errSyntax }

// nodeType is the kind of a parse-tree node (doc/format.md §7.2).
type nodeType int

// node types.
const (
	nodeEOC          nodeType = iota // end of line, with or without a comment
	nodeFileVersion                  // version <word>
	nodeInt                          // key = NUMBER
	nodeVersion                      // key = VERSION
	nodeString                       // key = "string"
	nodeBareValue                    // key = word
	nodeIndexedBlock                 // key NUMBER { ... }
	nodeBlock                        // key { ... }
	nodeBareList                     // key ( a, b )
	nodeBareConst                    // word
	nodeStringConst                  // "string"
	nodeNumPairList                  // key <eol> N N ... word
)

var nodeTypeNames = [...]string{"eoc", "fileversion", "int", "version", "string", "bare",
	"indexed-block", "block", "bare-list", "bare-const", "string-const", "number-pairs"}

func (t nodeType) String() string {
	if t < 0 || int(t) >= len(nodeTypeNames) {
		return "invalid"
	}
	return nodeTypeNames[t]
}

// span is a half-open byte range [Start, End) of the input.
type span struct{ Start, End int }

// node is one element of the parse tree. Offsets refer to File.Data.
type node struct {
	Type nodeType
	// Key is the key word (value nodes, blocks, lists, number-pair lists) or the word of a
	// bare constant.
	Key string
	// Value is the value as written: the word, the string without quotes, the number or
	// version text, the block index text, the comment text after '#', the end word of a
	// number-pair list, the word after "version".
	Value string
	// Num is the number (nodeInt), the packed version major<<16|minor (nodeVersion) or the
	// index (nodeIndexedBlock).
	Num        uint64
	HasComment bool        // nodeEOC with a comment
	Words      []string    // nodeBareList
	Pairs      [][2]uint64 // nodeNumPairList
	// Children: block elements with their end-of-line nodes; a bare list's words
	// (nodeBareConst) and end-of-line nodes; a number-pair list's end-of-line nodes.
	Children []*node
	// BeforeOpen: end-of-line nodes between the key (or index) and '{' or '(' (or, for a
	// number-pair list, before the first pair).
	BeforeOpen []*node

	Pos      span // the element without its trailing end-of-line nodes
	KeyPos   span
	ValuePos span // value token; a string's span includes its quotes; a block's index
	Open     int  // offset of '{' or '('
	Close    int  // offset of '}' or ')'
	Line     int  // line of the element's first token
}

// File is a parsed opencryptoki.conf.
type File struct {
	Name  string
	Data  []byte
	nodes []*node // top-level elements and end-of-line nodes, in order
}

// Parse parses data (the contents of the file called name, used in messages). It accepts
// exactly upstream's grammar (doc/format.md §7.1-7.2). Errors: *syntaxError, repofs.ErrTooLarge.
func Parse(name string, data []byte) (*File, error) {
	if len(data) > MaxSize {
		return nil, fmt.Errorf("%s: %w (%d bytes, limit %d)", name, repofs.ErrTooLarge, len(data), MaxSize)
	}
	p := &parser{lx: newLexer(data)}
	nodes, err := p.parseFile()
	if err != nil {
		var se *syntaxError
		if errors.As(err, &se) {
			se.File = name
			return nil, se
		}
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return &File{Name: name, Data: data, nodes: nodes}, nil
}
