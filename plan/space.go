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
	var dirs []*repofs.Dir
	var commits []bool
	add := func(d *repofs.Dir, fi repofs.FSInfo, what string, bytes, inodes int64) {
		// On XFS every new inode takes its bytes from the free space, in chunks of 64.
		bytes += inodes * fi.InodeBytes
		for i := range needs {
			if needs[i].Device == fi.Dev {
				needs[i].For = append(needs[i].For, what)
				needs[i].NeedBytes += bytes
				needs[i].NeedInodes += inodes
				return
			}
		}
		bytes += inodeChunk * fi.InodeBytes
		needs, dirs, commits = append(needs, spaceOf(d.Path(), fi, what, bytes, inodes)), append(dirs, d), append(commits, fi.CommitsFreedSpace)
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
		settle(s)
		if !s.Enough && commits[i] && !s.ReadOnly {
			if err := recount(s, dirs[i]); err != nil {
				return err
			}
		}
		if w := spaceShort(*s); w != "" {
			p.Warnings = append(p.Warnings, w+": apply would refuse before any work")
		}
	}
	p.Space = needs
	return nil
}

// inodeChunk is how many inodes XFS allocates at once.
const inodeChunk = 64

// spaceOf is the need of what on the file system fi, before its margin (settle).
func spaceOf(path string, fi repofs.FSInfo, what string, bytes, inodes int64) contract.Space {
	s := contract.Space{Path: path, For: []string{what}, NeedBytes: bytes, NeedInodes: inodes, FreeBytes: fi.FreeBytes, ReadOnly: fi.ReadOnly, Device: fi.Dev}
	if fi.FreeInodes >= 0 {
		free := fi.FreeInodes
		s.FreeInodes = &free
	}
	return s
}

// settle sets s's margin (the larger of the minimum and 5 %) and whether it is enough.
func settle(s *contract.Space) {
	s.MarginBytes = max(minMarginBytes, s.NeedBytes/20)
	s.MarginInodes = max(minMarginInodes, s.NeedInodes/20)
	s.Enough = !s.ReadOnly && s.FreeBytes >= s.NeedBytes+s.MarginBytes &&
		(s.FreeInodes == nil || *s.FreeInodes >= s.NeedInodes+s.MarginInodes)
}

// recount counts the free space of s's file system again after syncing it: btrfs shows space
// an administrator just freed only once its transaction commits (up to 30 s later), and a
// syncfs commits it. Syncing writes nothing of the tool's.
func recount(s *contract.Space, d *repofs.Dir) error {
	if err := d.Syncfs(); err != nil {
		return contract.Errorf(contract.CodeIO, "%s: %w", s.Path, err)
	}
	fi, err := d.StatFS()
	if err != nil {
		return contract.Errorf(contract.CodeIO, "%s: %w", s.Path, err)
	}
	s.FreeBytes = fi.FreeBytes
	settle(s)
	return nil
}

// spaceShort says what s lacks, "" when it is enough.
func spaceShort(s contract.Space) string {
	switch {
	case s.ReadOnly:
		return fmt.Sprintf("the file system of %s is read-only", s.Path)
	case s.FreeBytes < s.NeedBytes+s.MarginBytes:
		return fmt.Sprintf("the file system of %s has %d bytes free; %s %d bytes and %d are kept as margin", s.Path, s.FreeBytes, needPhrase(s.For), s.NeedBytes, s.MarginBytes)
	case s.FreeInodes != nil && *s.FreeInodes < s.NeedInodes+s.MarginInodes:
		return fmt.Sprintf("the file system of %s has %d inodes free; %s %d and %d are kept as margin", s.Path, *s.FreeInodes, needPhrase(s.For), s.NeedInodes, s.MarginInodes)
	}
	return ""
}

// needPhrase is the subject and verb for what the space is for: "the repository needs", "the
// repository and the conf need".
func needPhrase(f []string) string {
	if len(f) == 2 {
		return "the " + f[0] + " and the " + f[1] + " need"
	}
	return "the " + f[0] + " needs"
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
