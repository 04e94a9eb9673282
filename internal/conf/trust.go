package conf

import "fmt"

// TrustWarnings says what is wrong with whom a conf directory (isDir) or opencryptoki.conf
// trusts. The tool trusts the conf directory's owner: the conf says where each repository
// is and which group gets its files, so anyone else who can write either of them, or an
// owner other than root or the caller (euid), is worth a warning. uid and perm are the
// entry's owner and permission bits.
func TrustWarnings(path string, isDir bool, uid int, perm uint32, euid int) []string {
	what := path
	if isDir {
		what = "conf directory " + path
	}
	var w []string
	if uid != 0 && uid != euid {
		w = append(w, fmt.Sprintf("%s is owned by uid %d, neither root nor the caller: this tool trusts the conf directory's owner, who decides where each repository is and which group gets it", what, uid))
	}
	if perm&0o022 != 0 {
		w = append(w, fmt.Sprintf("%s is writable by group or others (mode %04o): whoever can write it can change the conf this tool trusts", what, perm&0o7777))
	}
	return w
}
