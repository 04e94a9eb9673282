package contract

import (
	"errors"
	"fmt"
	"syscall"
)

// Code is a stable error code that automation (the Ansible module, CI jobs) can branch on.
type Code string

// The error codes of the JSON contract (schema "error").
const (
	CodeWrongPIN           Code = "wrong_pin"
	CodeUserPINNotSet      Code = "user_pin_not_set"
	CodeSlotdRunning       Code = "slot_daemon_running"
	CodeRepositoryInUse    Code = "repository_in_use"
	CodeLocked             Code = "locked"
	CodeStalePlan          Code = "stale_plan"
	CodeSlotNotFound       Code = "slot_not_found"
	CodeSlotNotInitialized Code = "slot_not_initialized" // no repository, or no NVTOK.DAT in it
	CodeUnsupportedToken   Code = "unsupported_token"
	CodeConfInvalid        Code = "conf_invalid"
	CodeCorruptRepository  Code = "corrupt_repository"
	CodeByteOrder          Code = "byte_order" // files of both byte orders, or an order nothing decides
	CodeBackupExists       Code = "backup_exists"
	CodeCannotSwitch       Code = "cannot_switch"
	CodeBadRequest         Code = "bad_request"
	CodeNotRoot            Code = "not_root"
	CodeGroupNotFound      Code = "group_not_found"
	// CodeGroupMismatch: the repository belongs to another gid than the token group has on
	// this host (a chroot's or container's repository): migrated here, its own library would
	// refuse it.
	CodeGroupMismatch     Code = "group_mismatch"
	CodeIO                Code = "io_error"
	CodeVerifyFailed      Code = "verify_failed"
	CodeNothingToRollBack Code = "nothing_to_roll_back"
	CodeNoSpace           Code = "no_space"    // a file system lacks the space or inodes the run needs
	CodeReadOnly          Code = "read_only"   // a file system the run must write is read-only
	CodeInterrupted       Code = "interrupted" // a run of other slots was interrupted: finish or roll it back first
	// CodeRewrittenByLibrary: the token library opened a migrated repository under a conf
	// without tokversion = 3.12 and rewrote its NVTOK.DAT in the old format.
	CodeRewrittenByLibrary Code = "rewritten_by_library"
	CodeInternal           Code = "internal"
)

// Error is an error with a stable code. Message is safe to show: it never holds a secret.
type Error struct {
	Code    Code
	Message string
	Field   string         // for bad_request: the offending request field
	Details map[string]any // extra machine-readable facts (PIDs, paths)
	Err     error          // the cause, for errors.Is/As
}

func (e *Error) Error() string { return e.Message }
func (e *Error) Unwrap() error { return e.Err }

// Errorf makes an *Error whose message is formatted and whose cause is the last %w argument.
// A cause that is an I/O error of the disk (EIO: a failing or shut-down file system) makes
// the code io_error whatever code was asked for: what could not be read is neither corrupt,
// nor invalid, nor changed.
func Errorf(code Code, format string, args ...any) *Error {
	err := fmt.Errorf(format, args...)
	if errors.Is(err, syscall.EIO) {
		code = CodeIO
	}
	return &Error{Code: code, Message: err.Error(), Err: errors.Unwrap(err)}
}

// WithDetail is err as an *Error with prefix before its message and the detail key set to v.
// Its code, field and details are kept (CodeInternal when it has no code), err itself is left
// as it is and is the cause.
func WithDetail(err error, prefix, key string, v any) *Error {
	e := &Error{Code: CodeOf(err), Message: prefix + err.Error(), Err: err, Details: map[string]any{}}
	if pe, ok := err.(*Error); ok {
		e.Field = pe.Field
		for k, x := range pe.Details {
			e.Details[k] = x
		}
	}
	e.Details[key] = v
	return e
}

// CodeOf returns the code of err, CodeInternal when it carries none.
// An error whose cause is the disk failing to answer (EIO) is io_error, whatever its own
// code says (see Errorf).
func CodeOf(err error) Code {
	var e *Error
	switch {
	case !errors.As(err, &e):
		return CodeInternal
	case errors.Is(err, syscall.EIO):
		return CodeIO
	}
	return e.Code
}
