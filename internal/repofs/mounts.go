package repofs

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// What ExchangeBlocker says blocks the exchange.
const (
	BlockedMountPoint   = "it is a mount point"
	BlockedOtherFS      = "it is on another file system than its parent directory (a mount point)"
	blockedOverlayLower = "it is a directory of an overlay file system's lower layer (a container image's) and the overlay is mounted without redirect_dir=on"
)

// ExchangeBlocker tells why renameat2(RENAME_EXCHANGE) of the directory name below d with a
// new sibling cannot work, or "" when nothing the file system shows stands in its way:
//   - the directory is a mount point (its own volume, a tmpfs, a bind mount): EBUSY;
//   - it is on another file system than its parent: EXDEV;
//   - it is on an overlay file system without redirect_dir and comes from a lower layer (an
//     image's directory, the usual container case): overlay renames such directories only with
//     redirect_dir, else EXDEV.
//
// unsure is set when the directory is on an overlay whose layers this process cannot see (a
// container's, seen from inside it): then the exchange may still fail.
func (d *Dir) ExchangeBlocker(name string) (reason string, unsure bool, err error) {
	sub, err := d.OpenSubdir(name)
	if err != nil {
		return "", false, err
	}
	defer sub.Close()
	var stx unix.Statx_t
	if err := unix.Statx(sub.fd, "", unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW, unix.STATX_BASIC_STATS, &stx); err == nil &&
		stx.Attributes_mask&unix.STATX_ATTR_MOUNT_ROOT != 0 && stx.Attributes&unix.STATX_ATTR_MOUNT_ROOT != 0 {
		return BlockedMountPoint, false, nil
	}
	self, err := sub.Lstat(".")
	if err != nil {
		return "", false, err
	}
	parent, err := d.Lstat(".")
	if err != nil {
		return "", false, err
	}
	if self.Dev != parent.Dev {
		return BlockedOtherFS, false, nil
	}
	var sfs unix.Statfs_t
	if err := unix.Fstatfs(sub.fd, &sfs); err != nil {
		return "", false, pathErr("statfs", sub.path, err)
	}
	if uint32(sfs.Type) != unix.OVERLAYFS_SUPER_MAGIC {
		return "", false, nil
	}
	lower, known := overlayLower(sub.path)
	switch {
	case !known:
		return "", true, nil
	case lower:
		return blockedOverlayLower, false, nil
	}
	return "", false, nil
}

// overlayLower reports whether the directory at p (on an overlay) comes from a lower layer of
// an overlay mounted without redirect_dir=on; known is false when the mount or its layers
// cannot be found from here.
func overlayLower(p string) (lower, known bool) {
	real, err := filepath.EvalSymlinks(p)
	if err != nil {
		return false, false
	}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return false, false
	}
	defer f.Close()
	var best mountEntry
	s := bufio.NewScanner(f)
	s.Buffer(make([]byte, 64<<10), 1<<20)
	for s.Scan() {
		m, ok := parseMountinfo(s.Bytes())
		if !ok || m.fsType != "overlay" {
			continue
		}
		if (real == m.point || strings.HasPrefix(real, strings.TrimSuffix(m.point, "/")+"/")) && len(m.point) >= len(best.point) {
			best = m
		}
	}
	if best.point == "" {
		return false, false
	}
	rel, err := filepath.Rel(best.point, real)
	if err != nil {
		return false, false
	}
	var lowers []string
	for _, o := range splitOptions(best.super) {
		switch {
		case o == "redirect_dir=on":
			return false, true // overlay renames lower directories too
		case strings.HasPrefix(o, "lowerdir="):
			lowers = append(lowers, splitLowers(strings.TrimPrefix(o, "lowerdir="))...)
		case strings.HasPrefix(o, "lowerdir+="):
			lowers = append(lowers, strings.TrimPrefix(o, "lowerdir+="))
		}
	}
	if len(lowers) == 0 {
		return false, false
	}
	for _, l := range lowers {
		if _, err := os.Stat(l); err != nil {
			return false, false // a layer this process cannot see
		}
		fi, err := os.Lstat(filepath.Join(l, rel))
		if err == nil && fi.IsDir() {
			return true, true
		}
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return false, false
		}
	}
	return false, true
}

// mountEntry is what ExchangeBlocker needs of one line of /proc/self/mountinfo.
type mountEntry struct {
	point, fsType, super string
}

// parseMountinfo reads "ID PARENT MAJ:MIN ROOT POINT OPTS [OPTIONAL...] - FSTYPE SOURCE SUPER".
func parseMountinfo(line []byte) (mountEntry, bool) {
	before, after, ok := bytes.Cut(line, []byte(" - "))
	if !ok {
		return mountEntry{}, false
	}
	f, g := strings.Fields(string(before)), strings.Fields(string(after))
	if len(f) < 5 || len(g) < 3 {
		return mountEntry{}, false
	}
	return mountEntry{point: unescapeMount(f[4]), fsType: g[0], super: g[2]}, true
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space and so on).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v int
			if _, err := fmt.Sscanf(s[i+1:i+4], "%03o", &v); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// splitOptions splits super options at commas (a backslash escapes one).
func splitOptions(s string) []string {
	var out []string
	var cur strings.Builder
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == '\\' && i+1 < len(s):
			cur.WriteByte(s[i+1])
			i++
		case s[i] == ',':
			out = append(out, cur.String())
			cur.Reset()
		default:
			cur.WriteByte(s[i])
		}
	}
	return append(out, cur.String())
}

// splitLowers splits overlay's lowerdir list at colons.
func splitLowers(s string) []string {
	var out []string
	for _, l := range strings.Split(s, ":") {
		if l != "" {
			out = append(out, unescapeMount(l))
		}
	}
	return out
}
