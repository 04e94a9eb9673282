package main

import (
	"fmt"
	"io"
	"reflect"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Human-readable output (the text summaries, warnings, errors printed as text, upstream's
// interface) shows values read from a repository or a conf: labels, object names, file
// names, reasons. A terminal acts on control characters, so every such value goes through
// safe: C0 controls, DEL and bytes that are not UTF-8 become \xNN, C1 controls and Unicode
// format characters (bidi overrides, zero-width marks) \uNNNN. JSON output is left alone:
// its encoder escapes them, and its values stay as they are.

// safe returns s with everything a terminal could act on escaped, line ends included (a
// value must not forge a line of its own).
func safe(s string) string { return escape(s, false) }

// safeText is safe for multi-line text the tool prints as it is (a conf diff): line ends
// and tabs stay.
func safeText(s string) string { return escape(s, true) }

func escape(s string, keepLines bool) string {
	clean := true
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n <= 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case keepLines && (r == '\n' || r == '\t'):
			b.WriteRune(r)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\x%02x`, r)
		case unicode.IsControl(r) || unicode.Is(unicode.Cf, r) || r == '\u2028' || r == '\u2029':
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

// safeArgs passes every text argument of a format through safe: strings (of any string
// type), errors and Stringers. Numbers and the format itself (ours) stay.
func safeArgs(args []any) []any {
	out := make([]any, len(args))
	for i, a := range args {
		switch v := a.(type) {
		case nil:
			out[i] = a
		case error:
			out[i] = safe(v.Error())
		case fmt.Stringer:
			if k := reflect.TypeOf(a).Kind(); k >= reflect.Int && k <= reflect.Uint64 {
				out[i] = a // a named number with a String method may be formatted %d
			} else {
				out[i] = safe(v.String())
			}
		default:
			if rv := reflect.ValueOf(a); rv.Kind() == reflect.String {
				out[i] = safe(rv.String())
			} else {
				out[i] = a
			}
		}
	}
	return out
}

// tprintf is fmt.Fprintf for a terminal: the arguments go through safe.
func tprintf(w io.Writer, format string, args ...any) {
	fmt.Fprintf(w, format, safeArgs(args)...)
}
