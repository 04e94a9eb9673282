package adversarial

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The Ansible module's own work as root, driven by a small python3 program that imports the
// module file and its module_utils the way Ansible does (with the host's ansible-core): what
// it does with a PIN file of hers, and its library check of a migrated repository into which
// she hard-linked a root-only file. The library is the collection's stand-in
// (ansible/tests/fake_p11.c), which does what openCryptoki's set_perm does to what it opens
// (mode 0660, group pkcs11) and here runs as root too, as the real library does: a check that
// kept root would change the victim.
func init() {
	pinAttack := func(name, promise string, pre func(e *env)) attack {
		return attack{
			name: name, group: 8, runs: 1, kind: opReadOnly, promise: promise, pre: pre,
			op: func(e *env) *runRes {
				return e.module(fifoTimeout, nil, "read_pins", e.p("{shared}/user.pin"))
			},
			check: moduleRefused("user_pin_file"),
		}
	}
	attacks = append(attacks,
		pinAttack("r2-module-pin-file-fifo", "the module refuses a FIFO as user_pin_file at once (no hang)",
			member("mkfifo", "{shared}/user.pin")),
		pinAttack("r2-module-pin-file-symlink", "the module refuses a symlink to root's PIN file",
			member("symlink", "{root}/user.pin", "{shared}/user.pin")),
		pinAttack("r2-module-pin-file-member-owned", "the module refuses a PIN file of hers",
			func(e *env) { e.oneShot([]byte(userPIN+"\n"), "writestdin", e.p("{shared}/user.pin"), "0600") }),
		attack{
			name: "r2-module-library-check-hardlink", group: 8, runs: 1, kind: opReadOnly,
			promise: "the module's library check runs as an unprivileged user: a root-only file linked in as MK_USER keeps its mode and group",
			setup: func(e *env) {
				e.cleanApply()
				if !e.s.setHardlinks(e.t, "0") {
					must(e.t, os.Rename(e.p("{ds}/MK_USER"), e.p("{ds}/MK_USER.orig")))
					must(e.t, os.Link(e.p("{dir}/victims/secret"), e.p("{ds}/MK_USER")))
				}
			},
			pre: func(e *env) {
				if _, err := os.Lstat(e.p("{ds}/MK_USER.orig")); err != nil {
					member("rename", "{ds}/MK_USER", "{ds}/MK_USER.orig")(e)
					member("link", "{dir}/victims/secret", "{ds}/MK_USER")(e)
					e.s.setHardlinks(e.t, e.s.hardlinkSysctl)
				}
			},
			op: func(e *env) *runRes {
				return e.module(opTimeout, []string{"FAKE_P11_TOKDIR=" + e.ds, "FAKE_P11_AS_ROOT=1", "FAKE_P11_USER_PIN=" + userPIN},
					"library_count", e.s.moduleLib(e.t), "nobody")
			},
			check: func(e *env, r *runRes) []string {
				if r.code != 0 || r.doc == nil {
					return []string{fmt.Sprintf("the driver failed: %s", r)}
				}
				if id, ok := r.doc["identity"].(map[string]any); ok && (id["uid"] == float64(0) || id["euid"] == float64(0)) {
					return []string{fmt.Sprintf("the library ran as root: %v", id)}
				}
				if r.doc["error"] == nil {
					return []string{fmt.Sprintf("the check passed with a foreign MK_USER: %s", r)}
				}
				return nil
			},
		},
	)
}

// moduleRefused: the module's PIN reader refused the file, promptly, saying which option.
func moduleRefused(field string) func(e *env, r *runRes) []string {
	return func(e *env, r *runRes) []string {
		if r.timedOut || r.code != 0 || r.doc == nil || r.doc["refused"] == nil || r.doc["field"] != field {
			return []string{fmt.Sprintf("the module did not refuse the PIN file: %s", r)}
		}
		return nil
	}
}

// moduleDriver is the python3 program that calls the module's functions.
const moduleDriver = `import importlib.util, json, os, sys
repo, coll, op = sys.argv[1], sys.argv[2], sys.argv[3]
sys.path.insert(0, coll)
spec = importlib.util.spec_from_file_location('pkcstok_migrate', os.path.join(repo, 'ansible', 'plugins', 'modules', 'pkcstok_migrate.py'))
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)

class Failed(Exception):
    pass

class Module(object):
    def __init__(self, params):
        self.params = params
        self.no_log_values = set()
    def fail_json(self, **kw):
        raise Failed(json.dumps(dict((k, str(v)) for k, v in kw.items())))

params = dict(so_pin=None, user_pin=None, so_pin_file=None, user_pin_file=None, library=None, library_user=None, slot=3)
if op == 'read_pins':
    params['user_pin_file'] = sys.argv[4]
    try:
        mod.read_pins(Module(params))
        print(json.dumps({'read': True}))
    except Failed as e:
        d = json.loads(str(e))
        print(json.dumps({'refused': d.get('msg'), 'field': d.get('field')}))
elif op == 'library_count':
    params['library'], params['library_user'] = sys.argv[4], sys.argv[5]
    m = Module(params)
    ident = mod.library_identity(m, {'usergroup': 'pkcs11'})
    seen, err = mod.library_count(m, 3, os.environ['FAKE_P11_USER_PIN'].encode(), ident)
    out = {'error': err}
    if seen:
        out['identity'] = seen.get('identity')
    print(json.dumps(out))
`

// module runs the driver as root: op and its arguments.
func (e *env) module(timeout time.Duration, extraEnv []string, op string, args ...string) *runRes {
	e.t.Helper()
	py := e.s.modulePython(e.t)
	root := repoRoot(e.t)
	coll := e.s.collections(e.t, root)
	driver := filepath.Join(e.s.base, "module_driver.py")
	must(e.t, os.WriteFile(driver, []byte(moduleDriver), 0o644))
	saved := e.extraEnv
	// The module's files are imported from the repository: no bytecode written there.
	e.extraEnv = append(append([]string{"PYTHONDONTWRITEBYTECODE=1"}, e.extraEnv...), extraEnv...)
	defer func() { e.extraEnv = saved }()
	return e.runProgram(timeout, nil, nil, py, append([]string{driver, root, coll, op}, args...)...)
}

// modulePython is the host's python3 with ansible-core (Debian's, not a python3 of another
// installation earlier on PATH).
func (s *suite) modulePython(t *testing.T) string {
	for _, py := range []string{"/usr/bin/python3", "python3"} {
		if p, err := exec.LookPath(py); err == nil && exec.Command(p, "-c", "import ansible.module_utils.basic").Run() == nil {
			return p
		}
	}
	prerequisite(t, "no python3 with ansible-core (make setup installs Debian's ansible-core)")
	return ""
}

// collections is an Ansible collections root holding this repository's collection
// (ocktools.pkcstok), made once per suite.
func (s *suite) collections(t *testing.T, root string) string {
	coll := filepath.Join(s.base, "collections")
	link := filepath.Join(coll, "ansible_collections", "ocktools", "pkcstok")
	if _, err := os.Lstat(link); err != nil {
		must(t, os.MkdirAll(filepath.Dir(link), 0o755))
		must(t, os.Symlink(filepath.Join(root, "ansible"), link))
	}
	return coll
}

// moduleLib builds the stand-in library once per suite (gcc).
func (s *suite) moduleLib(t *testing.T) string {
	lib := filepath.Join(s.base, "bin", "libfakep11.so")
	if _, err := os.Stat(lib); err == nil {
		return lib
	}
	if _, err := exec.LookPath("gcc"); err != nil {
		prerequisite(t, "gcc not found: the stand-in library cannot be built")
	}
	out, err := exec.Command("gcc", "-Wall", "-shared", "-fPIC", "-o", lib, filepath.Join(repoRoot(t), "ansible", "tests", "fake_p11.c")).CombinedOutput()
	if err != nil {
		t.Fatalf("gcc fake_p11.c: %v\n%s", err, out)
	}
	must(t, os.Chmod(lib, 0o755))
	return lib
}

func repoRoot(t *testing.T) string {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	must(t, err)
	return filepath.Dir(strings.TrimSpace(string(out)))
}
