package conf

import (
	"fmt"
	"math"
	"strconv"
)

// tokType is a lexer token. The order is bison's token order in upstream's cfgparse.y; it is the
// order in which "expecting A or B" lists name tokens.
type tokType int

const (
	tokEOF tokType = iota
	tokEOL
	tokEqual
	tokBeginDef
	tokEndDef
	tokBeginList
	tokEndList
	tokComma
	tokFileVersion
	tokNumber
	tokVersion
	tokBare
	tokComment
	tokString
)

// tokNames are the names bison prints in its verbose syntax errors.
var tokNames = [...]string{
	tokEOF:         "end of file",
	tokEOL:         "EOL",
	tokEqual:       "EQUAL",
	tokBeginDef:    "BEGIN_DEF",
	tokEndDef:      "END_DEF",
	tokBeginList:   "BEGIN_LIST",
	tokEndList:     "END_LIST",
	tokComma:       "COMMA",
	tokFileVersion: "FILEVERSION",
	tokNumber:      "NUMBER",
	tokVersion:     "VERSION_TOK",
	tokBare:        "BARE",
	tokComment:     "COMMENT_TOK",
	tokString:      "STRING_TOK",
}

func (t tokType) String() string { return tokNames[t] }

// token is one lexer token.
//
// Start/End is the token's byte span in the input. For a string it covers the quotes (End is
// the end of input for a string left open at end of file), for a comment the text after '#'.
// Line/Col is the location upstream's flex/bison pair reports for the token (see lexer).
type token struct {
	typ        tokType
	start, end int
	line, col  int
	text       string // BARE word, string contents, comment text (without '#'), number text
	num        uint64 // NUMBER value; VERSION packed as major<<16 | minor
}

type lexState int

const (
	stStart       lexState = iota // flex INITIAL: until the first real token
	stMain                        // MAIN
	stComment                     // after '#', before the text
	stCommentText                 // comment text returned, newline (EOL) pending
)

// lexer reproduces upstream's cfglex.l (doc/format.md §7.1) on a byte slice.
//
// Locations follow upstream exactly, quirks included, so that syntax errors name the same line
// and column: flex's YY_USER_ACTION advances the location over every matched lexeme (skipped
// blanks and dropped stray characters too); a newline resets the column to 0, but bison starts
// the location at line 1 column 1, so columns on line 1 are one higher than on later lines; and
// in the START state the catch-all rule counts the first character of the first real token
// once more before it is scanned again in MAIN.
type lexer struct {
	src   []byte
	pos   int
	state lexState
	// commentReturn is the state a comment returns to at its newline (flex's state stack).
	commentReturn lexState

	// flex/bison location: the start (first) and end (last) of the last matched lexeme.
	firstLine, firstCol int
	lastLine, lastCol   int
}

func newLexer(src []byte) *lexer {
	return &lexer{src: src, firstLine: 1, firstCol: 1, lastLine: 1, lastCol: 1}
}

// advance consumes n bytes as one flex lexeme and updates the location like YY_USER_ACTION.
func (lx *lexer) advance(n int) {
	lx.firstLine, lx.firstCol = lx.lastLine, lx.lastCol
	for _, c := range lx.src[lx.pos : lx.pos+n] {
		if c == '\n' {
			lx.lastLine++
			lx.lastCol = 0
		} else {
			lx.lastCol++
		}
	}
	lx.pos += n
}

func (lx *lexer) tok(typ tokType, start int) token {
	return token{typ: typ, start: start, end: lx.pos, line: lx.firstLine, col: lx.firstCol}
}

func isBareStart(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '.' || c == '/'
}

func isBareChar(c byte) bool {
	return isBareStart(c) || c >= '0' && c <= '9' || c == '_' || c == '-'
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func isHex(c byte) bool {
	return isDigit(c) || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

// next returns the next token or a *syntaxError for a number that does not fit.
func (lx *lexer) next() (token, error) {
	for {
		if lx.pos >= len(lx.src) {
			if lx.state == stCommentText {
				// A comment in the last line without a newline. Upstream's comment-keeping
				// pass calls this a syntax error, its comment-free pass (and pkcsslotd)
				// accept it; we accept it and give the comment a zero-width EOL.
				lx.state = lx.commentReturn
				return token{typ: tokEOL, start: lx.pos, end: lx.pos, line: lx.lastLine, col: lx.lastCol}, nil
			}
			// flex returns end of file without a lexeme: the location stays that of the
			// last matched lexeme.
			return token{typ: tokEOF, start: lx.pos, end: lx.pos, line: lx.firstLine, col: lx.firstCol}, nil
		}
		start := lx.pos
		c := lx.src[start]
		switch lx.state {
		case stComment, stCommentText:
			if c == '\n' {
				lx.advance(1)
				lx.state = lx.commentReturn
				return lx.tok(tokEOL, start), nil
			}
			n := 0
			for start+n < len(lx.src) && lx.src[start+n] != '\n' {
				n++
			}
			lx.advance(n)
			lx.state = stCommentText
			t := lx.tok(tokComment, start)
			t.text = string(lx.src[start:lx.pos])
			return t, nil
		case stStart:
			switch {
			case c == ' ' || c == '\t':
				lx.advance(lx.span(start, func(c byte) bool { return c == ' ' || c == '\t' }))
				continue
			case c == '\n':
				lx.advance(1)
				return lx.tok(tokEOL, start), nil
			case c == '#':
				lx.advance(1)
				lx.state = stComment
				lx.commentReturn = stStart
				continue
			case hasPrefix(lx.src[start:], "version"):
				lx.advance(len("version"))
				lx.state = stMain
				return lx.tok(tokFileVersion, start), nil
			default:
				// The catch-all rule: count one character, switch to MAIN, scan it again.
				lx.advance(1)
				lx.pos = start
				lx.state = stMain
				continue
			}
		}
		// MAIN
		switch c {
		case ' ', '\t':
			lx.advance(lx.span(start, func(c byte) bool { return c == ' ' || c == '\t' }))
			continue
		case '\n':
			lx.advance(1)
			return lx.tok(tokEOL, start), nil
		case '=':
			lx.advance(1)
			return lx.tok(tokEqual, start), nil
		case '{':
			lx.advance(1)
			return lx.tok(tokBeginDef, start), nil
		case '}':
			lx.advance(1)
			return lx.tok(tokEndDef, start), nil
		case '(':
			lx.advance(1)
			return lx.tok(tokBeginList, start), nil
		case ')':
			lx.advance(1)
			return lx.tok(tokEndList, start), nil
		case ',':
			lx.advance(1)
			return lx.tok(tokComma, start), nil
		case '#':
			lx.advance(1)
			lx.state = stComment
			lx.commentReturn = stMain
			continue
		case '"':
			lx.advance(1)
			n := 0
			for start+1+n < len(lx.src) && lx.src[start+1+n] != '"' {
				n++
			}
			if n == 0 {
				// "" gives no token at all (so `key = ""` is a syntax error).
				if start+1 < len(lx.src) {
					lx.advance(1)
				}
				continue
			}
			lx.advance(n)
			t := lx.tok(tokString, start)
			t.text = string(lx.src[start+1 : lx.pos])
			if lx.pos < len(lx.src) {
				lx.advance(1) // closing quote, a lexeme of its own
			}
			// else: a string left open at end of file; upstream's lexer returns it as is.
			t.end = lx.pos
			return t, nil
		}
		if isDigit(c) {
			return lx.number(start)
		}
		if isBareStart(c) {
			n := 1 + lx.span(start+1, isBareChar)
			lx.advance(n)
			t := lx.tok(tokBare, start)
			t.text = string(lx.src[start:lx.pos])
			return t, nil
		}
		// No rule matches: flex's default rule echoes the character and drops it.
		lx.advance(1)
	}
}

// span counts the bytes from i on for which ok holds.
func (lx *lexer) span(i int, ok func(byte) bool) int {
	n := 0
	for i+n < len(lx.src) && ok(lx.src[i+n]) {
		n++
	}
	return n
}

func hasPrefix(b []byte, s string) bool {
	return len(b) >= len(s) && string(b[:len(s)]) == s
}

// number scans NUMBER (0, [1-9][0-9]*, 0x[0-9a-fA-F]+) or VERSION ([0-9]+.[0-9]+), longest
// match first as flex does.
func (lx *lexer) number(start int) (token, error) {
	src := lx.src
	digits := lx.span(start, isDigit)
	verLen := 0
	if start+digits < len(src) && src[start+digits] == '.' {
		if minor := lx.span(start+digits+1, isDigit); minor > 0 {
			verLen = digits + 1 + minor
		}
	}
	hexLen := 0
	if src[start] == '0' && start+1 < len(src) && src[start+1] == 'x' {
		if h := lx.span(start+2, isHex); h > 0 {
			hexLen = 2 + h
		}
	}
	decLen := 1
	if src[start] != '0' {
		decLen = digits
	}
	switch {
	case verLen > 0 && verLen >= hexLen && verLen > decLen:
		lx.advance(verLen)
		t := lx.tok(tokVersion, start)
		t.text = string(src[start:lx.pos])
		major, err1 := strconv.ParseUint(t.text[:digits], 10, 64)
		minor, err2 := strconv.ParseUint(t.text[digits+1:], 10, 64)
		if err1 != nil || err2 != nil || major > math.MaxUint16 || minor > math.MaxUint16 {
			return t, lx.errorAt(t, fmt.Sprintf("version %s out of range (each part at most 65535)", t.text))
		}
		t.num = major<<16 | minor
		return t, nil
	case hexLen > decLen:
		lx.advance(hexLen)
		t := lx.tok(tokNumber, start)
		t.text = string(src[start:lx.pos])
		v, err := strconv.ParseUint(t.text[2:], 16, 64)
		if err != nil {
			return t, lx.errorAt(t, fmt.Sprintf("number %s out of range", t.text))
		}
		t.num = v
		return t, nil
	default:
		lx.advance(decLen)
		t := lx.tok(tokNumber, start)
		t.text = string(src[start:lx.pos])
		v, err := strconv.ParseUint(t.text, 10, 64)
		if err != nil {
			return t, lx.errorAt(t, fmt.Sprintf("number %s out of range", t.text))
		}
		t.num = v
		return t, nil
	}
}

func (lx *lexer) errorAt(t token, msg string) error {
	return &syntaxError{Line: t.line, Column: t.col, Offset: t.start, Msg: msg}
}
