package contract

import (
	"fmt"
	"io/fs"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
)

// A verdict on content from a read the disk failed is an I/O error: on a shut-down file
// system, "open MK_SO: input/output error" is not a corrupt repository.
func TestErrorfEIOIsIOError(t *testing.T) {
	eio := &fs.PathError{Op: "open", Path: "/r/swtok/MK_SO", Err: syscall.EIO}
	for _, c := range []Code{CodeCorruptRepository, CodeConfInvalid, CodeStalePlan, CodeVerifyFailed} {
		e := Errorf(c, "repository /r/swtok: %w", eio)
		require.Equal(t, CodeIO, e.Code, c)
		require.ErrorIs(t, e, syscall.EIO)
		require.Equal(t, "repository /r/swtok: open /r/swtok/MK_SO: input/output error", e.Message)
	}
	e := Errorf(CodeCorruptRepository, "repository /r/swtok: %w", fmt.Errorf("MK_SO: %w", fs.ErrInvalid))
	require.Equal(t, CodeCorruptRepository, e.Code)
	e = Errorf(CodeNoSpace, "%w and %w", syscall.ENOSPC, syscall.EIO)
	require.Equal(t, CodeIO, e.Code, "several causes, one of them EIO")
}

// Errors made as literals are reported the same way: CodeOf, which every output uses.
func TestCodeOfEIOIsIOError(t *testing.T) {
	eio := &fs.PathError{Op: "open", Path: "/c/opencryptoki.conf_PKCSTOK_MIGRATE_JOURNAL", Err: syscall.EIO}
	e := &Error{Code: CodeConfInvalid, Message: "not a journal this tool wrote", Err: eio}
	require.Equal(t, CodeIO, CodeOf(e))
	require.Equal(t, CodeIO, CodeOf(fmt.Errorf("slot 3: %w", e)))
	require.Equal(t, CodeConfInvalid, CodeOf(&Error{Code: CodeConfInvalid, Err: fs.ErrInvalid}))
	require.Equal(t, CodeInternal, CodeOf(eio))
}
