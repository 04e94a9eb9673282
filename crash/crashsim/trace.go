package crashsim

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Call is one completed system call of a trace.
type Call struct {
	Line int // 1-based line of the trace where the call completed (or, for close, began)
	TID  int
	Name string
	Args []Arg
	// Ret is the return value when RetKnown; a failed call has Ret -1 and Errno set.
	Ret      int64
	RetKnown bool
	RetPath  string // -y annotation of a returned file descriptor ("" when none)
	Errno    string // "ENOENT" and so on when the call failed
}

// Failed tells whether the call returned an error (or an unknown result).
func (c *Call) Failed() bool { return !c.RetKnown || c.Errno != "" || c.Ret < 0 }

// Arg is one argument as strace printed it.
type Arg struct {
	Text      string // as printed, strings still escaped
	IsStr     bool
	Str       []byte // decoded bytes of a string argument
	Truncated bool   // the string was longer than strace's -s and was cut
	IsFd      bool   // "3</path>", "AT_FDCWD</path>" (strace -y) or "AT_FDCWD"
	Fd        int    // AT_FDCWD is -100
	Path      string // the -y annotation, decoded
}

// AtFdcwd is the value of AT_FDCWD.
const AtFdcwd = -100

// closeAtEntry lists the calls that are taken at their start, not their completion: once a
// thread has entered close, the descriptor number may be handed out again to another
// thread's open before strace prints the close's completion.
var closeAtEntry = map[string]bool{"close": true}

// ParseTrace reads an strace output file made with -f (one line per call, each prefixed with
// the thread id) and -xx (strings and -y paths in hexadecimal), and returns the calls in the
// order they completed. Signal and exit lines are skipped. A call still unfinished at the end
// of the trace (the process was killed inside it) is dropped: it never returned. Errors
// name the line, never its text: a trace holds the process's write buffers.
func ParseTrace(r io.Reader) ([]Call, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 1<<20), 64<<20)
	pending := map[int]string{} // tid -> text of an unfinished call up to where it stopped
	entered := map[int]bool{}   // tid -> the unfinished call was already taken at its entry
	var calls []Call
	line := 0
	for sc.Scan() {
		line++
		text := sc.Text()
		tidText, rest, ok := strings.Cut(text, " ")
		if !ok {
			return nil, fmt.Errorf("trace line %d: no thread id", line)
		}
		tid, err := strconv.Atoi(tidText)
		if err != nil {
			return nil, fmt.Errorf("trace line %d: no thread id: %v", line, err)
		}
		rest = strings.TrimLeft(rest, " ")
		switch {
		case strings.HasPrefix(rest, "---") || strings.HasPrefix(rest, "+++"):
			continue // signal delivery, exit
		case strings.HasPrefix(rest, "<... "):
			name, tail, ok := strings.Cut(strings.TrimPrefix(rest, "<... "), " resumed>")
			if !ok {
				return nil, fmt.Errorf("trace line %d: malformed resumption", line)
			}
			head, ok := pending[tid]
			if !ok || !strings.HasPrefix(head, name+"(") {
				return nil, fmt.Errorf("trace line %d: %s resumed without its start in thread %d", line, name, tid)
			}
			delete(pending, tid)
			if entered[tid] {
				delete(entered, tid)
				continue
			}
			c, err := parseCall(head + tail)
			if err != nil {
				return nil, fmt.Errorf("trace line %d: %w", line, err)
			}
			c.Line, c.TID = line, tid
			calls = append(calls, c)
		case strings.HasSuffix(rest, " <unfinished ...>"):
			if _, busy := pending[tid]; busy {
				return nil, fmt.Errorf("trace line %d: thread %d starts a call inside another", line, tid)
			}
			head := strings.TrimSuffix(rest, " <unfinished ...>")
			pending[tid] = head
			name, _, _ := strings.Cut(head, "(")
			if closeAtEntry[name] {
				c, err := parseCall(head + ") = 0")
				if err != nil {
					return nil, fmt.Errorf("trace line %d: %w", line, err)
				}
				c.Line, c.TID = line, tid
				calls = append(calls, c)
				entered[tid] = true
			}
		default:
			if _, busy := pending[tid]; busy {
				return nil, fmt.Errorf("trace line %d: thread %d makes a call inside another", line, tid)
			}
			c, err := parseCall(rest)
			if err != nil {
				return nil, fmt.Errorf("trace line %d: %w", line, err)
			}
			c.Line, c.TID = line, tid
			calls = append(calls, c)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read trace: %w", err)
	}
	return calls, nil
}

// parseCall parses `name(arg, arg, ...) = ret [annotation]`.
func parseCall(s string) (Call, error) {
	open := strings.IndexByte(s, '(')
	if open <= 0 {
		return Call{}, fmt.Errorf("not a system call")
	}
	c := Call{Name: s[:open]}
	args, end, err := splitArgs(s, open+1)
	if err != nil {
		return Call{}, fmt.Errorf("%s: %w", c.Name, err)
	}
	for _, a := range args {
		arg, err := parseArg(a)
		if err != nil {
			return Call{}, fmt.Errorf("%s: %w", c.Name, err)
		}
		c.Args = append(c.Args, arg)
	}
	ret := strings.TrimLeft(s[end+1:], " ")
	ret, ok := strings.CutPrefix(ret, "= ")
	if !ok {
		return Call{}, fmt.Errorf("%s: no return value", c.Name)
	}
	ret = strings.TrimSpace(ret)
	if strings.HasPrefix(ret, "?") {
		return c, nil // unknown: the thread went away inside the call
	}
	num, tail, _ := strings.Cut(ret, " ")
	if i := strings.IndexByte(num, '<'); i >= 0 && strings.HasSuffix(num, ">") {
		p, err := unescape(num[i+1 : len(num)-1])
		if err != nil {
			return Call{}, fmt.Errorf("%s: return path: %w", c.Name, err)
		}
		c.RetPath, num = string(p), num[:i]
	}
	v, err := strconv.ParseInt(num, 0, 64)
	if err != nil {
		return Call{}, fmt.Errorf("%s: return value %.40q: %v", c.Name, num, err)
	}
	c.Ret, c.RetKnown = v, true
	if v < 0 {
		errno, _, _ := strings.Cut(strings.TrimSpace(tail), " ")
		if errno == "" {
			errno = "EUNKNOWN"
		}
		c.Errno = errno
	}
	return c, nil
}

// splitArgs splits the argument list that starts at s[i] at its top-level commas and returns
// the index of the closing parenthesis.
func splitArgs(s string, i int) ([]string, int, error) {
	var args []string
	depth, start := 0, i
	inStr := false
	for ; i < len(s); i++ {
		ch := s[i]
		if inStr {
			switch ch {
			case '\\':
				i++
			case '"':
				inStr = false
			}
			continue
		}
		switch ch {
		case '"':
			inStr = true
		case '(', '[', '{', '<':
			depth++
		case ']', '}', '>':
			depth--
		case ')':
			if depth == 0 {
				if a := strings.TrimSpace(s[start:i]); a != "" || len(args) > 0 {
					args = append(args, a)
				}
				return args, i, nil
			}
			depth--
		case ',':
			if depth == 0 {
				args = append(args, strings.TrimSpace(s[start:i]))
				start = i + 1
			}
		}
	}
	return nil, 0, fmt.Errorf("unterminated argument list")
}

func parseArg(a string) (Arg, error) {
	arg := Arg{Text: a}
	if strings.HasPrefix(a, `"`) {
		end := closingQuote(a)
		if end < 0 {
			return Arg{}, fmt.Errorf("unterminated string (%d bytes)", len(a))
		}
		b, err := unescape(a[1:end])
		if err != nil {
			return Arg{}, err
		}
		arg.IsStr, arg.Str = true, b
		switch rest := a[end+1:]; rest {
		case "":
		case "...":
			arg.Truncated = true
		default:
			return Arg{}, fmt.Errorf("%d bytes of text after a string", len(rest))
		}
		return arg, nil
	}
	// strace -y prints a descriptor of a removed directory as 5</path>(deleted).
	deleted := false
	if d, ok := strings.CutSuffix(a, ">(deleted)"); ok {
		a, deleted = d+">", true
	}
	if i := strings.IndexByte(a, '<'); i > 0 && strings.HasSuffix(a, ">") {
		num := a[:i]
		fd := AtFdcwd
		if num != "AT_FDCWD" {
			v, err := strconv.Atoi(num)
			if err != nil {
				return arg, nil // not a descriptor (a flag set or a struct)
			}
			fd = v
		}
		p, err := unescape(a[i+1 : len(a)-1])
		if err != nil {
			return Arg{}, fmt.Errorf("descriptor path: %w", err)
		}
		arg.IsFd, arg.Fd, arg.Path = true, fd, string(p)
		if deleted {
			arg.Path += " (deleted)"
		}
		return arg, nil
	}
	if a == "AT_FDCWD" {
		arg.IsFd, arg.Fd = true, AtFdcwd
	}
	return arg, nil
}

// closingQuote returns the index of the quote that ends the string starting at s[0].
func closingQuote(s string) int {
	for i := 1; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case '"':
			return i
		}
	}
	return -1
}

// unescape decodes strace's C-style escapes (\xNN with -xx, and \n \t \\ \" \NNN).
func unescape(s string) ([]byte, error) {
	if strings.IndexByte(s, '\\') < 0 {
		return []byte(s), nil
	}
	var b bytes.Buffer
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' {
			b.WriteByte(s[i])
			continue
		}
		if i+1 >= len(s) {
			return nil, fmt.Errorf("dangling backslash")
		}
		i++
		switch c := s[i]; c {
		case 'x':
			if i+3 > len(s) {
				return nil, fmt.Errorf("short \\x escape")
			}
			v, err := strconv.ParseUint(s[i+1:i+3], 16, 8)
			if err != nil {
				return nil, fmt.Errorf("bad \\x escape %q", s[i+1:i+3])
			}
			b.WriteByte(byte(v))
			i += 2
		case 'n':
			b.WriteByte('\n')
		case 't':
			b.WriteByte('\t')
		case 'r':
			b.WriteByte('\r')
		case 'v':
			b.WriteByte('\v')
		case 'f':
			b.WriteByte('\f')
		case '\\', '"', '\'':
			b.WriteByte(c)
		default:
			if c < '0' || c > '7' {
				return nil, fmt.Errorf("unknown escape \\%c", c)
			}
			j := i
			for j < len(s) && j < i+3 && s[j] >= '0' && s[j] <= '7' {
				j++
			}
			v, _ := strconv.ParseUint(s[i:j], 8, 16)
			if v > 255 {
				return nil, fmt.Errorf("octal escape out of range")
			}
			b.WriteByte(byte(v))
			i = j - 1
		}
	}
	return b.Bytes(), nil
}

// Int parses the argument as an integer: decimal, 0x hexadecimal or 0-prefixed octal (the
// way strace prints modes), with an optional minus sign; an unsigned 64-bit value (strace
// -e raw) wraps to its two's-complement meaning.
func (a Arg) Int() (int64, error) {
	v, err := strconv.ParseInt(a.Text, 0, 64)
	if err != nil {
		// strace -e raw prints a negative argument as its 64-bit two's complement.
		u, uerr := strconv.ParseUint(a.Text, 0, 64)
		if uerr != nil {
			return 0, fmt.Errorf("argument %d bytes long is not a number", len(a.Text))
		}
		v = int64(u)
	}
	return v, nil
}

// Flags splits a flag argument ("O_WRONLY|O_CREAT|O_EXCL") into its names.
func (a Arg) Flags() map[string]bool {
	m := map[string]bool{}
	for _, f := range strings.Split(a.Text, "|") {
		m[strings.TrimSpace(f)] = true
	}
	return m
}
