package conf

import (
	"fmt"
	"strings"
)

// maxDepth bounds block nesting. opencryptoki.conf nests one level (slot blocks); the bound
// keeps a hostile file from driving the recursive parser deep.
const maxDepth = 100

// parser is a recursive-descent parser for the grammar of doc/format.md §7.2 (upstream's
// cfgparse.y). On a syntax error it reports the offending token's upstream location and bison's
// verbose message: "syntax error, unexpected X[, expecting A or B ...]" (the list only when it
// has at most four entries, as bison does).
type parser struct {
	lx    *lexer
	tok   token
	depth int
}

func (p *parser) advance() error {
	t, err := p.lx.next()
	if err != nil {
		return err
	}
	p.tok = t
	return nil
}

// unexpected builds bison's message for the current token. expected must be in token order.
func (p *parser) unexpected(expected ...tokType) error {
	var b strings.Builder
	b.WriteString("syntax error, unexpected ")
	b.WriteString(p.tok.typ.String())
	if len(expected) > 0 && len(expected) <= 4 {
		for i, e := range expected {
			if i == 0 {
				b.WriteString(", expecting ")
			} else {
				b.WriteString(" or ")
			}
			b.WriteString(e.String())
		}
	}
	return &syntaxError{Line: p.tok.line, Column: p.tok.col, Offset: p.tok.start, Msg: b.String()}
}

// expected sets used in several places; a list with more than four tokens is printed without
// its "expecting" part, so only the short ones matter exactly.
var (
	expAny       = []tokType{} // five or more alternatives: bison names none
	expValue     = []tokType{tokNumber, tokVersion, tokBare, tokString}
	expEOL       = []tokType{tokEOL}
	expBeginDef  = []tokType{tokEOL, tokBeginDef, tokComment}
	expListFirst = []tokType{tokEOL, tokEndList, tokBare, tokComment}
	expListAfter = []tokType{tokEOL, tokEndList, tokComma, tokComment}
	expListEnd   = []tokType{tokEOL, tokEndList, tokComment}
	expListNext  = []tokType{tokEOL, tokBare, tokComment}
	expPairNext  = []tokType{tokEOL, tokNumber, tokBare, tokComment}
	expNumber    = []tokType{tokNumber}
)

// parseFile parses the whole input.
func (p *parser) parseFile() ([]*node, error) {
	if err := p.advance(); err != nil {
		return nil, err
	}
	return p.parseElements(false)
}

// parseElements parses eoc* element* up to end of file (top level) or up to the closing brace
// (inBlock; the brace is left as the current token).
func (p *parser) parseElements(inBlock bool) ([]*node, error) {
	var nodes []*node
	for {
		switch p.tok.typ {
		case tokEOF:
			if inBlock {
				return nil, p.unexpected(expAny...)
			}
			return nodes, nil
		case tokEndDef:
			if !inBlock {
				return nil, p.unexpected(expAny...)
			}
			return nodes, nil
		case tokEOL, tokComment:
			eocs, err := p.parseEOCs()
			if err != nil {
				return nil, err
			}
			nodes = append(nodes, eocs...)
		case tokFileVersion:
			// The lexer gives FILEVERSION only as the very first token.
			n := &node{Type: nodeFileVersion, Key: "version", Line: p.tok.line}
			n.KeyPos = span{p.tok.start, p.tok.end}
			if err := p.advance(); err != nil {
				return nil, err
			}
			if p.tok.typ != tokBare {
				return nil, p.unexpected(expBare()...)
			}
			n.Value = p.tok.text
			n.ValuePos = span{p.tok.start, p.tok.end}
			n.Pos = span{n.KeyPos.Start, p.tok.end}
			if err := p.advance(); err != nil {
				return nil, err
			}
			tail, err := p.parseEOCs()
			if err != nil {
				return nil, err
			}
			nodes = append(append(nodes, n), tail...)
		case tokString:
			n := &node{Type: nodeStringConst, Value: p.tok.text, Line: p.tok.line}
			n.ValuePos = span{p.tok.start, p.tok.end}
			n.Pos = n.ValuePos
			if err := p.advance(); err != nil {
				return nil, err
			}
			tail, err := p.parseEOCs()
			if err != nil {
				return nil, err
			}
			nodes = append(append(nodes, n), tail...)
		case tokBare:
			elem, err := p.parseBareElement()
			if err != nil {
				return nil, err
			}
			nodes = append(nodes, elem...)
		default:
			return nil, p.unexpected(expAny...)
		}
	}
}

func expBare() []tokType { return []tokType{tokBare} }

// parseEOCs parses eoc* = (COMMENT_TOK? EOL)*.
func (p *parser) parseEOCs() ([]*node, error) {
	var nodes []*node
	for {
		switch p.tok.typ {
		case tokEOL:
			nodes = append(nodes, &node{Type: nodeEOC, Pos: span{p.tok.start, p.tok.end}, Line: p.tok.line})
		case tokComment:
			n := &node{Type: nodeEOC, Value: p.tok.text, HasComment: true, Line: p.tok.line}
			n.ValuePos = span{p.tok.start, p.tok.end}
			start := p.tok.start - 1 // the '#'
			if err := p.advance(); err != nil {
				return nil, err
			}
			if p.tok.typ != tokEOL {
				return nil, p.unexpected(expEOL...)
			}
			n.Pos = span{start, p.tok.end}
			nodes = append(nodes, n)
		default:
			return nodes, nil
		}
		if err := p.advance(); err != nil {
			return nil, err
		}
	}
}

// parseBareElement parses every element form that starts with a BARE word. It returns the
// element followed by its trailing end-of-line nodes.
func (p *parser) parseBareElement() ([]*node, error) {
	key := p.tok
	n := &node{Key: key.text, KeyPos: span{key.start, key.end}, Line: key.line}
	if err := p.advance(); err != nil {
		return nil, err
	}
	switch p.tok.typ {
	case tokEqual:
		if err := p.advance(); err != nil {
			return nil, err
		}
		v := p.tok
		switch v.typ {
		case tokNumber:
			n.Type, n.Num = nodeInt, v.num
		case tokVersion:
			n.Type, n.Num = nodeVersion, v.num
		case tokString:
			n.Type = nodeString
		case tokBare:
			n.Type = nodeBareValue
		default:
			return nil, p.unexpected(expValue...)
		}
		n.Value = v.text
		n.ValuePos = span{v.start, v.end}
		n.Pos = span{key.start, v.end}
		if err := p.advance(); err != nil {
			return nil, err
		}
		return p.withTail(n)
	case tokNumber:
		// BARE NUMBER eoc* '{' ... '}' : indexed block such as "slot 3".
		n.Type, n.Num = nodeIndexedBlock, p.tok.num
		n.ValuePos = span{p.tok.start, p.tok.end}
		n.Value = p.tok.text
		if err := p.advance(); err != nil {
			return nil, err
		}
		before, err := p.parseEOCs()
		if err != nil {
			return nil, err
		}
		if p.tok.typ != tokBeginDef {
			return nil, p.unexpected(expBeginDef...)
		}
		n.BeforeOpen = before
		if err := p.parseBlockBody(n); err != nil {
			return nil, err
		}
		return p.withTail(n)
	}
	before, err := p.parseEOCs()
	if err != nil {
		return nil, err
	}
	switch p.tok.typ {
	case tokBeginDef:
		n.Type = nodeBlock
		n.BeforeOpen = before
		if err := p.parseBlockBody(n); err != nil {
			return nil, err
		}
		return p.withTail(n)
	case tokBeginList:
		n.Type = nodeBareList
		n.BeforeOpen = before
		if err := p.parseBareList(n); err != nil {
			return nil, err
		}
		return p.withTail(n)
	case tokNumber:
		if len(before) > 0 {
			n.Type = nodeNumPairList
			n.BeforeOpen = before
			if err := p.parseNumPairs(n); err != nil {
				return nil, err
			}
			return p.withTail(n)
		}
	}
	// BARE eoc*: a bare constant; the end-of-line nodes read are its tail.
	n.Type = nodeBareConst
	n.Pos = n.KeyPos
	return append([]*node{n}, before...), nil
}

// withTail reads the element's trailing eoc* and returns the element followed by them.
func (p *parser) withTail(n *node) ([]*node, error) {
	tail, err := p.parseEOCs()
	if err != nil {
		return nil, err
	}
	return append([]*node{n}, tail...), nil
}

// parseBlockBody parses '{' eoc* element* '}' with the current token on '{'.
func (p *parser) parseBlockBody(n *node) error {
	if p.depth >= maxDepth {
		return &syntaxError{Line: p.tok.line, Column: p.tok.col, Offset: p.tok.start,
			Msg: fmt.Sprintf("blocks nested deeper than %d levels", maxDepth)}
	}
	p.depth++
	defer func() { p.depth-- }()
	n.Open = p.tok.start
	if err := p.advance(); err != nil {
		return err
	}
	children, err := p.parseElements(true)
	if err != nil {
		return err
	}
	n.Children = children
	n.Close = p.tok.start
	n.Pos = span{n.KeyPos.Start, p.tok.end}
	return p.advance()
}

// parseBareList parses '(' list ')' with the current token on '('. Words become nodeBareConst
// children, comments and newlines nodeEOC children.
func (p *parser) parseBareList(n *node) error {
	n.Open = p.tok.start
	if err := p.advance(); err != nil {
		return err
	}
	eocs, err := p.parseEOCs()
	if err != nil {
		return err
	}
	n.Children = append(n.Children, eocs...)
	if p.tok.typ == tokBare {
		for {
			w := &node{Type: nodeBareConst, Key: p.tok.text, KeyPos: span{p.tok.start, p.tok.end}, Line: p.tok.line}
			w.Pos = w.KeyPos
			n.Children = append(n.Children, w)
			n.Words = append(n.Words, w.Key)
			if err := p.advance(); err != nil {
				return err
			}
			if p.tok.typ != tokComma {
				break
			}
			if err := p.advance(); err != nil {
				return err
			}
			eocs, err := p.parseEOCs()
			if err != nil {
				return err
			}
			n.Children = append(n.Children, eocs...)
			if p.tok.typ != tokBare {
				return p.unexpected(expListNext...)
			}
		}
		if p.tok.typ != tokEndList && p.tok.typ != tokEOL && p.tok.typ != tokComment {
			return p.unexpected(expListAfter...)
		}
		eocs, err := p.parseEOCs()
		if err != nil {
			return err
		}
		if p.tok.typ != tokEndList {
			if len(eocs) == 0 {
				return p.unexpected(expListAfter...)
			}
			return p.unexpected(expListEnd...)
		}
		n.Children = append(n.Children, eocs...)
	} else if p.tok.typ != tokEndList {
		return p.unexpected(expListFirst...)
	}
	n.Close = p.tok.start
	n.Pos = span{n.KeyPos.Start, p.tok.end}
	return p.advance()
}

// parseNumPairs parses (NUMBER NUMBER eoc*)+ BARE with the current token on the first NUMBER.
func (p *parser) parseNumPairs(n *node) error {
	for {
		a := p.tok.num
		if err := p.advance(); err != nil {
			return err
		}
		if p.tok.typ != tokNumber {
			return p.unexpected(expNumber...)
		}
		n.Pairs = append(n.Pairs, [2]uint64{a, p.tok.num})
		if err := p.advance(); err != nil {
			return err
		}
		eocs, err := p.parseEOCs()
		if err != nil {
			return err
		}
		n.Children = append(n.Children, eocs...)
		switch p.tok.typ {
		case tokNumber:
			continue
		case tokBare:
			n.Value = p.tok.text
			n.ValuePos = span{p.tok.start, p.tok.end}
			n.Pos = span{n.KeyPos.Start, p.tok.end}
			return p.advance()
		default:
			return p.unexpected(expPairNext...)
		}
	}
}
