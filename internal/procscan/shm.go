package procscan

import (
	"path/filepath"
	"strings"
)

// ShmDir is where Linux keeps POSIX shared-memory objects.
const ShmDir = "/dev/shm"

// ShmName is the token's shared-memory segment name exactly as the reference tool builds
// it (doc/format.md §8.5): the datastore path as given with trailing slashes removed, its
// leading "/" dropped, every other "/" turned into ".", and "/" put in front.
// "/var/lib/opencryptoki/swtok" gives "/var.lib.opencryptoki.swtok". The datastore "/"
// gives "" (no segment).
func ShmName(datastore string) string {
	p := strings.TrimRight(datastore, "/")
	p = strings.TrimPrefix(p, "/")
	if p == "" {
		return ""
	}
	return "/" + strings.ReplaceAll(p, "/", ".")
}

// shmPath is the file of the segment name under /dev/shm ("" for an empty name).
func shmPath(name string) string {
	n := strings.TrimPrefix(name, "/")
	if n == "" || strings.Contains(n, "/") {
		return ""
	}
	return ShmDir + "/" + n
}

// ShmNames lists the segment names a token library could be using for the datastore,
// without duplicates: the spelling as given when it is absolute (what the reference
// deletes), the absolute cleaned path (how the library, which knows its directory as
// CONFIG_PATH/name, spells it), and the path with the symlinks of its parent directories
// resolved. The datastore's own name is never resolved: members of the token group can put a
// symlink there (the state directory is theirs to write), and its target would name another
// token's segment. A relative datastore is only used in its absolute form: the reference's
// name for it ("/swtok" for "swtok") would belong to another directory. A missing segment is
// fine.
func ShmNames(datastore string) []string {
	var out []string
	add := func(p string) {
		n := ShmName(p)
		if n == "" {
			return
		}
		for _, o := range out {
			if o == n {
				return
			}
		}
		out = append(out, n)
	}
	if filepath.IsAbs(datastore) {
		add(datastore)
	}
	abs, err := filepath.Abs(datastore)
	if err != nil {
		return out
	}
	add(abs)
	if real, err := filepath.EvalSymlinks(filepath.Dir(abs)); err == nil {
		add(filepath.Join(real, filepath.Base(abs)))
	}
	return out
}
