package tokens

import (
	"bytes"
	"errors"
	"io/fs"
	"strings"
)

// FS is how tokens reads a repository. Names are slash-separated and relative to the repository
// root ("NVTOK.DAT", "TOK_OBJ/OBJ.IDX"). A missing file gives an error that
// errors.Is(err, fs.ErrNotExist). The implementation (internal/repofs) refuses symlinks and
// non-regular files; tokens also validates object names itself.
type FS interface {
	ReadFile(name string) ([]byte, error)
}

// IOFS adapts an io/fs file system (for example os.DirFS in tests) to FS.
func IOFS(fsys fs.FS) FS { return ioFS{fsys} }

type ioFS struct{ fsys fs.FS }

func (f ioFS) ReadFile(name string) ([]byte, error) { return fs.ReadFile(f.fsys, name) }

// Repository file names.
const (
	FileNVTok  = "NVTOK.DAT"
	FileMKSO   = "MK_SO"
	FileMKUser = "MK_USER"
	FileIndex  = "TOK_OBJ/OBJ.IDX"
)

// Repository holds the files of one repository, read through FS. Objects are not loaded here:
// the caller streams them one by one (ReadObject, DecodeObject / ReencryptObject).
type Repository struct {
	NV           *NVToken
	MKSO, MKUser []byte   // raw file bytes; MKUser == nil when MK_USER is missing
	Index        []string // OBJ.IDX names in order (§6); empty lines are kept as ""
	IndexPresent bool     // false when OBJ.IDX is missing (treated as empty, §6 DECISION)

	fsys FS
}

// Load reads NVTOK.DAT, MK_SO, MK_USER (may be missing) and TOK_OBJ/OBJ.IDX (may be missing,
// like the whole TOK_OBJ directory). NVTOK.DAT is parsed; the MK files are checked by Unlock.
func Load(fsys FS) (*Repository, error) {
	r := &Repository{fsys: fsys}
	nv, err := fsys.ReadFile(FileNVTok)
	if err != nil {
		return nil, readErr(FileNVTok, err)
	}
	if r.NV, err = ParseNVToken(nv); err != nil {
		return nil, err
	}
	if r.MKSO, err = fsys.ReadFile(FileMKSO); err != nil {
		return nil, readErr(FileMKSO, err)
	}
	r.MKUser, err = fsys.ReadFile(FileMKUser)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		r.MKUser = nil
	case err != nil:
		return nil, readErr(FileMKUser, err)
	case r.MKUser == nil:
		r.MKUser = []byte{} // present but empty: keep "present" distinguishable from missing
	}
	idx, err := fsys.ReadFile(FileIndex)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, readErr(FileIndex, err)
	default:
		r.IndexPresent = true
		r.Index = ParseIndex(idx)
	}
	return r, nil
}

// ParseIndex splits OBJ.IDX into names (§6): each line loses one trailing '\n' and nothing else
// (a CR stays). Empty lines are kept as "" so that the caller can report them; a final line
// without '\n' counts; an empty file gives an empty, non-nil list.
func ParseIndex(b []byte) []string {
	names := make([]string, 0, bytes.Count(b, []byte{'\n'})+1)
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			names = append(names, string(b))
			break
		}
		names = append(names, string(b[:i]))
		b = b[i+1:]
	}
	return names
}

// ValidObjectName checks an object name taken from OBJ.IDX: exactly 8 bytes, no '/', no NUL, not
// "." or ".." and no ".." inside (so it can never leave TOK_OBJ). The error says what is wrong
// with the name, not the name: OBJ.IDX may be any file a member renamed there, a root-only one
// included, and its lines are its bytes.
func ValidObjectName(name string) error {
	switch {
	case len(name) != objectNameLen:
		return corrupt(FileIndex, "an object name of %d bytes, not %d", len(name), objectNameLen)
	case strings.ContainsAny(name, "/\x00"):
		return corrupt(FileIndex, "an object name contains '/' or NUL")
	case name == "." || name == ".." || strings.Contains(name, ".."):
		return corrupt(FileIndex, "an object name contains \"..\"")
	}
	return nil
}

// readErr is the error of reading name through an FS: err itself when it names the file
// already (an *fs.PathError, as repofs and io/fs give), so the file is named once; else an
// *fs.PathError for name.
func readErr(name string, err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return err
	}
	return &fs.PathError{Op: "read", Path: name, Err: err}
}

// readObject validates name and reads TOK_OBJ/<name>. A missing file gives an error that
// errors.Is(err, fs.ErrNotExist).
func readObject(fsys FS, name string) ([]byte, error) {
	if err := ValidObjectName(name); err != nil {
		return nil, err
	}
	p := ObjectPath(name)
	b, err := fsys.ReadFile(p)
	if err != nil {
		return nil, readErr(quoteName(p), err)
	}
	return b, nil
}

// ReadObject reads TOK_OBJ/<name> through the FS the repository was loaded from.
func (r *Repository) ReadObject(name string) ([]byte, error) {
	if r.fsys == nil {
		return nil, errors.New("tokens: repository was not loaded through an FS")
	}
	return readObject(r.fsys, name)
}
