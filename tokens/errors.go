package tokens

import (
	"errors"
	"fmt"
	"strconv"
)

// Typed errors. They are wrapped with context (a file name) but errors.Is keeps working.
// None of them, nor any wrapping text, ever contains a PIN, a key or anything derived from one.
var (
	ErrWrongSOPIN    = errors.New("SO PIN is incorrect")
	ErrWrongUserPIN  = errors.New("user PIN is incorrect")
	ErrUserPINNotSet = errors.New("the user PIN was never set on this token")
	ErrMKMismatch    = errors.New("MK_SO and MK_USER hold different master keys")
	ErrCorrupt       = errors.New("corrupt repository data")
	ErrNeedKeys      = errors.New("private object needs the PINs")
)

// CorruptError says which repository file is corrupt, truncated or oversized, and why.
// errors.Is(e, ErrCorrupt) is true.
type CorruptError struct{ File, Reason string }

func (e *CorruptError) Error() string {
	return ErrCorrupt.Error() + ": " + quoteName(e.File) + ": " + e.Reason
}

// Is makes errors.Is(e, ErrCorrupt) true.
func (e *CorruptError) Is(target error) bool { return target == ErrCorrupt }

func corrupt(file, format string, args ...any) error {
	return &CorruptError{File: file, Reason: fmt.Sprintf(format, args...)}
}

// quoteName leaves ordinary names alone and quotes names with odd bytes (a CR from OBJ.IDX,
// control characters), so that an error message never carries raw control bytes.
func quoteName(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x21 || c > 0x7e || c == '"' {
			return strconv.Quote(s)
		}
	}
	return s
}
