package plan

import (
	"fmt"
	"path/filepath"

	"github.com/ocktools/pkcstok-migrate/contract"
	"github.com/ocktools/pkcstok-migrate/internal/layout"
	"github.com/ocktools/pkcstok-migrate/internal/repofs"
)

// The room a file of the repository may need beyond its current size in the 3.12 format (a
// larger object header, the authentication tag), and what apply writes besides the copy: the
// journal, the working copy's marker, a scratch entry or two.
const (
	growthPerFile = 256
	extraInodes   = 4
	// The margin kept on top of the need: the larger of these and 5 %.
	minMarginBytes  = 1 << 20
	minMarginInodes = 16
)

// planSpace says what apply will write on each file system and what the file system has:
// the working copy on the repository's file system (beside the repository for the exchange,
// inside it when switched in place) and the new conf beside the old one, which is kept as a
// hard link and costs nothing. Two on one file system are counted together.
func planSpace(p *contract.Plan, dir *repofs.Dir, repoChange, confChange bool, newConfSize int) error {
	var needs []contract.Space
	var infos []repofs.FSInfo
	add := func(d *repofs.Dir, fi repofs.FSInfo, what string, bytes, inodes int64) {
		for i := range needs {
			if infos[i].Dev == fi.Dev {
				needs[i].For = append(needs[i].For, what)
				needs[i].NeedBytes += bytes
				needs[i].NeedInodes += inodes
				return
			}
		}
		free := fi.FreeInodes
		s := contract.Space{Path: d.Path(), For: []string{what}, NeedBytes: bytes, NeedInodes: inodes, FreeBytes: fi.FreeBytes, ReadOnly: fi.ReadOnly}
		if free >= 0 {
			s.FreeInodes = &free
		}
		needs, infos = append(needs, s), append(infos, fi)
	}
	if repoChange {
		where := dir // in place: on the repository's own file system
		if p.Switch != contract.SwitchInPlace {
			parent, err := repofs.OpenDir(filepath.Dir(p.Datastore))
			if err != nil {
				return repoError(p.Datastore, err)
			}
			defer parent.Close()
			where = parent
		}
		fi, err := where.StatFS()
		if err != nil {
			return repoError(p.Datastore, err)
		}
		u, err := dir.Usage(fi.BlockSize, growthPerFile, layout.Reserved)
		if err != nil {
			return repoError(p.Datastore, err)
		}
		add(where, fi, "repository", u.Bytes+extraInodes*fi.BlockSize, u.Files+u.Dirs+extraInodes)
	}
	if confChange {
		cdir, err := repofs.OpenDir(p.Confdir)
		if err != nil {
			return contract.Errorf(contract.CodeIO, "open %s: %w", p.Confdir, err)
		}
		defer cdir.Close()
		fi, err := cdir.StatFS()
		if err != nil {
			return contract.Errorf(contract.CodeIO, "%s: %w", p.Confdir, err)
		}
		add(cdir, fi, "conf", (int64(newConfSize)+fi.BlockSize-1)/fi.BlockSize*fi.BlockSize, 1)
	}
	for i := range needs {
		s := &needs[i]
		s.MarginBytes = max(minMarginBytes, s.NeedBytes/20)
		s.MarginInodes = max(minMarginInodes, s.NeedInodes/20)
		s.Enough = !s.ReadOnly && s.FreeBytes >= s.NeedBytes+s.MarginBytes &&
			(s.FreeInodes == nil || *s.FreeInodes >= s.NeedInodes+s.MarginInodes)
		if w := spaceShort(*s); w != "" {
			p.Warnings = append(p.Warnings, w+": apply would refuse before any work")
		}
	}
	p.Space = needs
	return nil
}

// spaceShort says what s lacks, "" when it is enough.
func spaceShort(s contract.Space) string {
	switch {
	case s.ReadOnly:
		return fmt.Sprintf("the file system of %s is read-only", s.Path)
	case s.FreeBytes < s.NeedBytes+s.MarginBytes:
		return fmt.Sprintf("the file system of %s has %d bytes free; the %s needs %d bytes and %d are kept as margin", s.Path, s.FreeBytes, joinFor(s.For), s.NeedBytes, s.MarginBytes)
	case s.FreeInodes != nil && *s.FreeInodes < s.NeedInodes+s.MarginInodes:
		return fmt.Sprintf("the file system of %s has %d inodes free; the %s needs %d and %d are kept as margin", s.Path, *s.FreeInodes, joinFor(s.For), s.NeedInodes, s.MarginInodes)
	}
	return ""
}

func joinFor(f []string) string {
	if len(f) == 2 {
		return f[0] + " and the " + f[1]
	}
	return f[0]
}

// SpaceError is apply's refusal of a plan whose file systems lack room or cannot be written
// (nil when every one is enough).
func SpaceError(p *contract.Plan) error {
	for _, s := range p.Space {
		if s.Enough {
			continue
		}
		code := contract.CodeNoSpace
		if s.ReadOnly {
			code = contract.CodeReadOnly
		}
		return &contract.Error{Code: code, Message: spaceShort(s) + ": nothing was done",
			Details: map[string]any{"path": s.Path, "need_bytes": s.NeedBytes, "need_inodes": s.NeedInodes, "margin_bytes": s.MarginBytes, "margin_inodes": s.MarginInodes, "free_bytes": s.FreeBytes, "free_inodes": s.FreeInodes}}
	}
	return nil
}
