package conf

import (
	"bytes"
	"fmt"
	"reflect"
	"strings"

	"github.com/pmezard/go-difflib/difflib"
)

// Edit actions.
const (
	actionInsert  = "insert"  // a tokversion line was added
	actionReplace = "replace" // the tokversion value was replaced
	actionNone    = "none"    // tokversion already is 3.12; Content is the input
	actionRemove  = "remove"  // UnsetTokVersion: the tokversion a migration added was removed
	actionRestore = "restore" // UnsetTokVersion: the value a migration replaced was put back
)

// Edit is the change SetTokVersion makes. Content == Data[:Offset] + New + Data[Offset+len(Old):].
type Edit struct {
	Action  string
	Slot    *Slot
	Offset  int    // byte offset of the change in the original
	Old     string // bytes replaced ("" for insert and none)
	New     string // bytes put in their place
	Line    int    // 1-based line of the change in the original
	Content []byte // the whole new file
	Diff    string // unified diff of the change; "" for none
}

// Changes reports whether the edit changes the conf (tokversion is not 3.12 yet).
func (e Edit) Changes() bool { return e.Action != actionNone }

// SetTokVersion computes the file with the slot's tokversion set to 3.12 (doc/format.md §7.6),
// touching nothing else:
//   - absent: one line "tokversion = 3.12" is inserted before the block's closing brace,
//     indented like the block's last key line and ended like the line before it (CRLF or LF);
//     when the brace shares its line with other text the key is put on that line before it;
//   - a version value or a string other than 3.12: only the value's characters (inside the
//     quotes for a string) are replaced;
//   - already 3.12: Action "none";
//   - anything else (tokversion = 3, a word, a block): errTokVersionInvalid.
//
// The result is parsed again and must give the same tree as before plus the new value;
// otherwise the error is errInternal and nothing should be written.
func (f *File) SetTokVersion(id uint64) (*Edit, error) {
	s, err := f.Slot(id)
	if err != nil {
		return nil, err
	}
	e := &Edit{Slot: s}
	switch {
	case s.TokVersionKind == KindOther:
		tv := s.tokVersion
		return nil, fmt.Errorf("%s: line %d: slot %d: tokversion %s: %w (set it to 3.12 by hand)",
			f.Name, tv.Line, s.ID, describe(tv), errTokVersionInvalid)
	case s.TokVersionIs312():
		e.Action = actionNone
		e.Offset = s.tokVersion.ValuePos.Start
		e.Line = s.tokVersion.Line
		e.Content = bytes.Clone(f.Data)
		return e, nil
	case s.TokVersionKind == KindVersion:
		v := s.tokVersion.ValuePos
		e.Action, e.Offset, e.Old, e.New = actionReplace, v.Start, string(f.Data[v.Start:v.End]), tokVersion312
	case s.TokVersionKind == KindString:
		v := s.tokVersion.ValuePos
		start, end := v.Start+1, v.End
		if end-1 > v.Start && f.Data[end-1] == '"' {
			end-- // closed string; one left open at end of file has no closing quote
		}
		e.Action, e.Offset, e.Old, e.New = actionReplace, start, string(f.Data[start:end]), tokVersion312
	default:
		e.Action = actionInsert
		e.Offset, e.New = f.insertion(s.block)
	}
	e.Line = 1 + bytes.Count(f.Data[:e.Offset], []byte("\n"))
	var b bytes.Buffer
	b.Grow(len(f.Data) + len(e.New))
	b.Write(f.Data[:e.Offset])
	b.WriteString(e.New)
	b.Write(f.Data[e.Offset+len(e.Old):])
	e.Content = b.Bytes()
	if err := f.checkEdit(s, e); err != nil {
		return nil, err
	}
	e.Diff = unifiedDiff(f.Data, e.Content)
	return e, nil
}

// describe names the kind and value of a node for messages.
func describe(n *node) string {
	switch n.Type {
	case nodeInt:
		return fmt.Sprintf("= %s is a number", n.Value)
	case nodeBareValue:
		return fmt.Sprintf("= %s is a bare word", n.Value)
	case nodeBareConst:
		return "has no value"
	}
	return "is a " + n.Type.String()
}

// insertion returns where and what to insert for a block without tokversion.
func (f *File) insertion(b *node) (int, string) {
	d := f.Data
	close := b.Close
	lineStart := bytes.LastIndexByte(d[:close], '\n') + 1
	if isBlank(d[lineStart:close]) {
		eol := "\n"
		if lineStart >= 2 && d[lineStart-2] == '\r' {
			eol = "\r\n"
		}
		return lineStart, f.keyIndent(b) + "tokversion = " + tokVersion312 + eol
	}
	// The brace shares its line with other text (slot 1 { stdll = x }).
	if c := d[close-1]; c == ' ' || c == '\t' {
		return close, "tokversion = " + tokVersion312 + " "
	}
	return close, " tokversion = " + tokVersion312
}

func isBlank(b []byte) bool {
	for _, c := range b {
		if c != ' ' && c != '\t' {
			return false
		}
	}
	return true
}

// lineIndent returns the blanks before the element n when n is the first thing on its line.
func (f *File) lineIndent(n *node) (string, bool) {
	ls := bytes.LastIndexByte(f.Data[:n.Pos.Start], '\n') + 1
	if pre := f.Data[ls:n.Pos.Start]; isBlank(pre) {
		return string(pre), true
	}
	return "", false
}

// keyIndent is the indentation for a new key line in block b: that of the block's last element
// that starts a line, else that of any top-level block's element that does, else four spaces.
func (f *File) keyIndent(b *node) string {
	for i := len(b.Children) - 1; i >= 0; i-- {
		if c := b.Children[i]; c.Type != nodeEOC {
			if ind, ok := f.lineIndent(c); ok {
				return ind
			}
		}
	}
	for _, n := range f.nodes {
		if n.Type != nodeIndexedBlock && n.Type != nodeBlock {
			continue
		}
		for _, c := range n.Children {
			if c.Type != nodeEOC {
				if ind, ok := f.lineIndent(c); ok {
					return ind
				}
			}
		}
	}
	return "    "
}

// checkEdit parses the new content and compares its tree with the old tree plus the change.
func (f *File) checkEdit(s *Slot, e *Edit) error {
	nf, err := Parse(f.Name, e.Content)
	if err != nil {
		return fmt.Errorf("%s: %w: the edited file does not parse: %v", f.Name, errInternal, err)
	}
	want := canon(f.nodes)
	idx := 0
	for _, n := range f.nodes {
		if n == s.block {
			break
		}
		if n.Type != nodeEOC {
			idx++
		}
	}
	blk := &want[idx]
	tv := cnode{T: nodeVersion, Key: "tokversion", Num: tokVersion312Packed}
	if e.Action == actionInsert {
		blk.Kids = append(blk.Kids, tv)
	} else {
		for i := range blk.Kids {
			if blk.Kids[i].Key == "tokversion" {
				if blk.Kids[i].T == nodeString {
					tv = cnode{T: nodeString, Key: "tokversion", Val: tokVersion312}
				}
				blk.Kids[i] = tv
				break
			}
		}
	}
	if !reflect.DeepEqual(canon(nf.nodes), want) {
		return fmt.Errorf("%s: %w: the edited file parses to a different tree", f.Name, errInternal)
	}
	ns, err := nf.Slot(uint64(s.ID))
	if err != nil || !ns.TokVersionIs312() {
		return fmt.Errorf("%s: %w: slot %d of the edited file does not say tokversion 3.12", f.Name, errInternal, s.ID)
	}
	return nil
}

// cnode is the normalised tree: what the file means, without comments, blank lines, layout or
// number notation (0x1F and 31 are equal, so are 3.012 and 3.12).
type cnode struct {
	T     nodeType
	Key   string
	Val   string
	Num   uint64
	Words []string
	Pairs [][2]uint64
	Kids  []cnode
}

func canon(nodes []*node) []cnode {
	var out []cnode
	for _, n := range nodes {
		c := cnode{T: n.Type, Key: n.Key}
		switch n.Type {
		case nodeEOC:
			continue
		case nodeInt, nodeVersion, nodeIndexedBlock:
			c.Num = n.Num
		case nodeString, nodeBareValue, nodeStringConst, nodeFileVersion, nodeNumPairList:
			c.Val = n.Value
		}
		c.Words = n.Words
		c.Pairs = n.Pairs
		if n.Type == nodeBlock || n.Type == nodeIndexedBlock {
			c.Kids = canon(n.Children)
		}
		out = append(out, c)
	}
	return out
}

// unifiedDiff is a unified diff (3 lines of context) from a to b, both named
// opencryptoki.conf; "" when they are equal. A last line without a newline is marked as diff
// does ("\ No newline at end of file").
func unifiedDiff(a, b []byte) string {
	if bytes.Equal(a, b) {
		return ""
	}
	d, err := difflib.GetUnifiedDiffString(difflib.UnifiedDiff{
		A:        splitLines(a),
		B:        splitLines(b),
		FromFile: confName,
		ToFile:   confName,
		Context:  3,
	})
	if err != nil { // difflib only fails when writing to its buffer fails
		return fmt.Sprintf("(no diff: %v)\n", err)
	}
	return d
}

// splitLines splits after each '\n'. Unlike difflib.SplitLines it adds no empty last line, and
// it marks a last line that has no newline.
func splitLines(b []byte) []string {
	if len(b) == 0 {
		return nil
	}
	lines := strings.SplitAfter(string(b), "\n")
	if last := lines[len(lines)-1]; last == "" {
		lines = lines[:len(lines)-1]
	} else {
		lines[len(lines)-1] = last + "\n\\ No newline at end of file\n"
	}
	return lines
}

// UnsetTokVersion computes the file with the slot's tokversion put back to what it was before
// SetTokVersion set it to 3.12: removed when before is "absent" (the slot had none), else the
// value before (as written, without quotes). It is the exact inverse: the result is accepted
// only when SetTokVersion of it gives this file back byte for byte, so a line someone else
// wrote, or moved, is never removed (errTokVersionNotOurs). A slot whose tokversion is not
// 3.12 gives Action "none".
func (f *File) UnsetTokVersion(id uint64, before string) (*Edit, error) {
	s, err := f.Slot(id)
	if err != nil {
		return nil, err
	}
	e := &Edit{Slot: s, Action: actionNone, Content: bytes.Clone(f.Data)}
	if !s.TokVersionIs312() || before == tokVersion312 {
		return e, nil
	}
	tv := s.tokVersion
	var cands []Edit
	if before == "absent" {
		cands = f.removals(tv)
	} else {
		v := tv.ValuePos
		start, end := v.Start, v.End
		if s.TokVersionKind == KindString {
			start++
			if end-1 > v.Start && f.Data[end-1] == '"' {
				end--
			}
		}
		cands = []Edit{{Action: actionRestore, Offset: start, Old: string(f.Data[start:end]), New: before}}
	}
	for _, c := range cands {
		var b bytes.Buffer
		b.Write(f.Data[:c.Offset])
		b.WriteString(c.New)
		b.Write(f.Data[c.Offset+len(c.Old):])
		nf, err := Parse(f.Name, b.Bytes())
		if err != nil {
			continue
		}
		redo, err := nf.SetTokVersion(id)
		if err != nil || !bytes.Equal(redo.Content, f.Data) {
			continue
		}
		c.Slot, c.Content = s, b.Bytes()
		c.Line = 1 + bytes.Count(f.Data[:c.Offset], []byte("\n"))
		c.Diff = unifiedDiff(f.Data, c.Content)
		return &c, nil
	}
	return nil, fmt.Errorf("%s: line %d: slot %d: %w", f.Name, tv.Line, s.ID, errTokVersionNotOurs)
}

// removals are the ways SetTokVersion can have inserted the element tv: its whole line, or the
// element with the blank before or after it on the brace's line.
func (f *File) removals(tv *node) []Edit {
	d := f.Data
	start, end := tv.Pos.Start, tv.Pos.End
	var out []Edit
	ls := bytes.LastIndexByte(d[:start], '\n') + 1
	le := end
	for le < len(d) && (d[le] == ' ' || d[le] == '\t' || d[le] == '\r') {
		le++
	}
	if isBlank(d[ls:start]) && le < len(d) && d[le] == '\n' {
		out = append(out, Edit{Action: actionRemove, Offset: ls, Old: string(d[ls : le+1])})
	}
	if start > 0 && d[start-1] == ' ' {
		out = append(out, Edit{Action: actionRemove, Offset: start - 1, Old: string(d[start-1 : end])})
	}
	if end < len(d) && d[end] == ' ' {
		out = append(out, Edit{Action: actionRemove, Offset: start, Old: string(d[start : end+1])})
	}
	return out
}

// Diff is the unified diff of opencryptoki.conf from a to b ("" when they are equal).
func Diff(a, b []byte) string { return unifiedDiff(a, b) }
