package main

import (
	"bytes"
	"fmt"
	"os"

	"golang.org/x/term"

	"github.com/ocktools/pkcstok-migrate/contract"
	"github.com/ocktools/pkcstok-migrate/internal/trusted"
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
		pin, err := readPINFile(file, e.euid)
		if err != nil {
			return nil, &contract.Error{Code: contract.CodeBadRequest, Field: field, Message: fmt.Sprintf("%s file: %v", what, err)}
		}
		return pin, nil
	}
	// Prompt only when stdin is a terminal and not already used for the request.
	if f, ok := e.stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fmt.Fprintf(e.stderr, "Enter the %s: ", what)
		pin, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(e.stderr)
		if err != nil {
			return nil, &contract.Error{Code: contract.CodeBadRequest, Field: field, Message: fmt.Sprintf("could not read the %s: %v", what, err)}
		}
		if len(pin) == 0 || len(pin) > maxPINLen {
			return nil, &contract.Error{Code: contract.CodeBadRequest, Field: field, Message: fmt.Sprintf("the %s must be 1 to %d bytes", what, maxPINLen)}
		}
		return pin, nil
	}
	return nil, nil
}

// readPINFile reads the first line of a PIN file and refuses, as ssh does for private keys,
// a symlink, anything but a regular file (opened non-blocking: a FIFO cannot hang the run),
// a file owned by anyone but root or the caller, and a file group or others may access. The
// PIN is never part of an error message.
func readPINFile(path string, euid int) ([]byte, error) {
	raw, _, err := trusted.ReadFile(path, trusted.Rules{Euid: euid, DenyPerm: 0o077, Hint: "chmod 600", ReadAtMost: 4096})
	if err != nil {
		return nil, err
	}
	defer wipe(raw)
	line := raw
	if i := bytes.IndexByte(line, '\n'); i >= 0 {
		line = line[:i]
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
