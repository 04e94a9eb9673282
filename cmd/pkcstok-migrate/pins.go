package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/term"

	"github.com/ocktools/pkcstok-migrate/plan"
)

// maxPINLen bounds what is read as a PIN (upstream cuts at 255 bytes too).
const maxPINLen = 255

// pinFrom returns the PIN from the request value, from a file, or from a terminal prompt.
// It returns nil when no PIN is available and none is required (plan without a terminal).
func pinFrom(e *env, value, file, field, what, op string, out *output) ([]byte, error) {
	switch {
	case value != "":
		return []byte(value), nil
	case file != "":
		pin, err := readPINFile(file)
		if err != nil {
			return nil, &plan.Error{Code: plan.CodeBadRequest, Field: field, Message: fmt.Sprintf("%s file: %v", what, err)}
		}
		return pin, nil
	}
	// Prompt only when stdin is a terminal and not already used for the request.
	if f, ok := e.stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fmt.Fprintf(e.stderr, "Enter the %s: ", what)
		pin, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(e.stderr)
		if err != nil {
			return nil, &plan.Error{Code: plan.CodeBadRequest, Field: field, Message: fmt.Sprintf("could not read the %s: %v", what, err)}
		}
		if len(pin) == 0 || len(pin) > maxPINLen {
			return nil, &plan.Error{Code: plan.CodeBadRequest, Field: field, Message: fmt.Sprintf("the %s must be 1 to %d bytes", what, maxPINLen)}
		}
		return pin, nil
	}
	return nil, nil
}

// readPINFile reads the first line of a PIN file and refuses a file that others may read or
// write, as ssh does for private keys. The PIN is never part of an error message.
func readPINFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("%s has mode %04o: it must not be accessible by group or others (chmod 600)", path, perm)
	}
	line, err := bufio.NewReaderSize(io.LimitReader(f, 4096), 4096).ReadSlice('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	line = bytes.TrimRight(line, "\r\n")
	if len(line) == 0 {
		return nil, fmt.Errorf("%s: the first line is empty", path)
	}
	if len(line) > maxPINLen {
		return nil, fmt.Errorf("%s: the first line is longer than %d bytes", path, maxPINLen)
	}
	if bytes.IndexByte(line, 0) >= 0 {
		return nil, fmt.Errorf("%s: the PIN contains a NUL byte", path)
	}
	return append([]byte(nil), line...), nil
}
