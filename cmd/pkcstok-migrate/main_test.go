package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	json "github.com/goccy/go-json"
	"github.com/rogpeppe/go-internal/testscript"

	"github.com/ocktools/pkcstok-migrate/internal/layout"
	"github.com/ocktools/pkcstok-migrate/internal/procscan"
	"github.com/ocktools/pkcstok-migrate/internal/repofs"
	"github.com/ocktools/pkcstok-migrate/schema"
	"github.com/ocktools/pkcstok-migrate/tokens"
)

func TestMain(m *testing.M) {
	os.Exit(testscript.RunMain(m, map[string]func() int{
		"pkcstok-migrate": func() int {
			return run(&env{args: os.Args, stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv, euid: os.Geteuid()})
		},
	}))
}

const fixtures = "../../tokens/testdata/fixtures"

func TestScripts(t *testing.T) {
	testscript.Run(t, scriptParams(t, "testdata/script"))
}

// TestSlotdScripts runs the scripts that start a fake pkcsslotd process on their own: every
// other script (run in parallel) would see it too.
func TestSlotdScripts(t *testing.T) {
	testscript.Run(t, scriptParams(t, "testdata/slotd"))
}

// TestInUseScripts runs the scripts about the open-files check on the real /proc, after
// TestSlotdScripts: a fake pkcsslotd of theirs would make apply refuse for it first.
func TestInUseScripts(t *testing.T) {
	testscript.Run(t, scriptParams(t, "testdata/inuse"))
}

func scriptParams(t *testing.T, dir string) testscript.Params {
	abs, err := filepath.Abs(fixtures)
	if err != nil {
		t.Fatal(err)
	}
	return testscript.Params{
		Dir: dir,
		Setup: func(e *testscript.Env) error {
			e.Setenv("FIXTURES", abs)
			// An empty proc tree and no pid files: the parallel scripts must not see each
			// other's processes. Scripts about pkcsslotd set these back.
			fake := filepath.Join(e.WorkDir, ".proc")
			if err := os.MkdirAll(fake, 0o755); err != nil {
				return err
			}
			e.Setenv("PKCSTOK_MIGRATE_PROC", fake)
			e.Setenv("PKCSTOK_MIGRATE_PIDFILES", filepath.Join(e.WorkDir, ".none.pid"))
			return nil
		},
		Condition: func(cond string) (bool, error) {
			switch cond {
			case "root":
				return os.Geteuid() == 0, nil
			case "slotd":
				// A pkcsslotd visible in the real /proc (another suite's): apply refuses for
				// it before it looks at open files.
				// Under CI=true nothing may be skipped: the script runs, and fails if one is.
				if os.Getenv("CI") == "true" {
					return false, nil
				}
				pids, err := procscan.SlotdRunning("/proc", nil)
				return err != nil || len(pids) > 0, nil
			}
			if cond == "seams" {
				// The test hooks (PKCSTOK_MIGRATE_SWITCH, _PROC, _PIDFILES, _FIPS_FILE):
				// only in a test built with -tags faultinject, as make unit builds it.
				return seamsFromEnv != nil, nil
			}
			return false, fmt.Errorf("unknown condition %q", cond)
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"fixture":      cmdFixture,
			"validate":     cmdValidate,
			"jsonpath":     cmdJSONPath,
			"jsonset":      cmdJSONSet,
			"treehash":     cmdTreeHash,
			"checkobjects": cmdCheckObjects,
			"checkperms":   cmdCheckPerms,
			"startfake":    cmdStartFake,
			"gentoken":     cmdGentoken,
			"truncate":     cmdTruncate,
			"mkfifo":       cmdMkfifo,
			"chown":        cmdChown,
			"bindmount":    cmdBindmount,
			"overlaylower": cmdOverlayLower,
			"holdopen":     cmdHoldOpen,
		},
	}
}

// fixture NAME DIR: copies fixture NAME's before/ (swtok and conf) into DIR with the modes
// and group git does not keep (0660/0770, group pkcs11) and the directories git drops.
func cmdFixture(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 2 {
		ts.Fatalf("usage: fixture NAME DIR")
	}
	src := filepath.Join(ts.Getenv("FIXTURES"), args[0], "before")
	dst := ts.MkAbs(args[1])
	if err := copyFixture(src, dst); err != nil {
		ts.Fatalf("fixture: %v", err)
	}
}

func copyFixture(src, dst string) error {
	gid, err := repofs.LookupGroup("pkcs11")
	if err != nil {
		return fmt.Errorf("group pkcs11: %w (create it with groupadd -r pkcs11)", err)
	}
	err = filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		to := filepath.Join(dst, rel)
		if d.IsDir() {
			if err := os.MkdirAll(to, 0o770); err != nil {
				return err
			}
			if err := os.Chmod(to, 0o770); err != nil {
				return err
			}
			return os.Chown(to, 0, gid)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		mode := os.FileMode(0o660)
		if strings.HasPrefix(rel, "conf") {
			mode = 0o644
		}
		if err := os.WriteFile(to, b, mode); err != nil {
			return err
		}
		if err := os.Chmod(to, mode); err != nil {
			return err
		}
		if mode == 0o644 {
			return nil
		}
		return os.Chown(to, 0, gid)
	})
	if err != nil {
		return err
	}
	// Git drops empty directories: every repository has TOK_OBJ.
	tok := filepath.Join(dst, "swtok", "TOK_OBJ")
	if _, err := os.Stat(tok); os.IsNotExist(err) {
		if err := os.Mkdir(tok, 0o770); err != nil {
			return err
		}
		os.Chmod(tok, 0o770)
		return os.Chown(tok, 0, gid)
	}
	return nil
}

// validate KIND FILE: FILE is valid against the tool's own schema KIND.
func cmdValidate(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 2 {
		ts.Fatalf("usage: validate KIND FILE")
	}
	err := schema.Validate(schema.Kind(args[0]), []byte(ts.ReadFile(args[1])))
	if neg {
		if err == nil {
			ts.Fatalf("%s unexpectedly valid", args[1])
		}
		return
	}
	if err != nil {
		ts.Fatalf("%s: %v", args[1], err)
	}
}

// jsonpath FILE PATH WANT: the value at dotted PATH of the JSON in FILE, printed as JSON, equals WANT.
func cmdJSONPath(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 3 {
		ts.Fatalf("usage: jsonpath FILE PATH WANT")
	}
	var v any
	if err := json.Unmarshal([]byte(ts.ReadFile(args[0])), &v); err != nil {
		ts.Fatalf("%s: %v", args[0], err)
	}
	for _, k := range strings.Split(args[1], ".") {
		switch x := v.(type) {
		case map[string]any:
			v = x[k]
		case []any:
			var i int
			fmt.Sscan(k, &i)
			if i < 0 || i >= len(x) {
				ts.Fatalf("%s: index %d out of range", args[1], i)
			}
			v = x[i]
		default:
			ts.Fatalf("%s: cannot index %T with %s", args[1], v, k)
		}
	}
	got, _ := json.Marshal(v)
	if (string(got) == args[2]) == neg {
		ts.Fatalf("%s %s = %s, want %s%s", args[0], args[1], got, map[bool]string{true: "not "}[neg], args[2])
	}
}

// jsonset OUT BASE KEY SRC PATH: writes to OUT the JSON object of file BASE with KEY set to
// the value at dotted PATH of the JSON in file SRC (a request built from an earlier result).
func cmdJSONSet(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 5 {
		ts.Fatalf("usage: jsonset OUT BASE KEY SRC PATH")
	}
	var base map[string]any
	var v any
	if err := json.Unmarshal([]byte(ts.ReadFile(args[1])), &base); err != nil {
		ts.Fatalf("%s: %v", args[1], err)
	}
	if err := json.Unmarshal([]byte(ts.ReadFile(args[3])), &v); err != nil {
		ts.Fatalf("%s: %v", args[3], err)
	}
	for _, k := range strings.Split(args[4], ".") {
		m, ok := v.(map[string]any)
		if !ok {
			ts.Fatalf("%s: cannot index %T with %s", args[4], v, k)
		}
		v = m[k]
	}
	base[args[2]] = v
	out, err := json.Marshal(base)
	if err != nil {
		ts.Fatalf("%v", err)
	}
	if err := os.WriteFile(ts.MkAbs(args[0]), out, 0o600); err != nil {
		ts.Fatalf("%v", err)
	}
}

// treehash [-files] DIR FILE: writes a listing of DIR (path, mode, size, sha256, mtime) to FILE,
// so two listings compare byte for byte with cmp. -files leaves out the directories' sizes and
// times and an in-place switch's own entries (layout.Reserved): the same files, by content, mode
// and time, in the same directories (the in-place switch moves files, not directories).
func cmdTreeHash(ts *testscript.TestScript, neg bool, args []string) {
	files := len(args) > 0 && args[0] == "-files"
	if files {
		args = args[1:]
	}
	if len(args) != 2 {
		ts.Fatalf("usage: treehash [-files] DIR FILE")
	}
	root := ts.MkAbs(args[0])
	var lines []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		line := fmt.Sprintf("%s %v %d %d", rel, info.Mode(), info.Size(), info.ModTime().UnixNano())
		if top, _, _ := strings.Cut(rel, "/"); files && layout.Reserved(top) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if files && d.IsDir() {
			line = fmt.Sprintf("%s %v", rel, info.Mode())
		}
		if info.Mode().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			s := sha256.Sum256(b)
			line += " " + hex.EncodeToString(s[:])
		}
		lines = append(lines, line)
		return nil
	})
	if err != nil {
		ts.Fatalf("treehash: %v", err)
	}
	sort.Strings(lines)
	if err := os.WriteFile(ts.MkAbs(args[1]), []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		ts.Fatalf("treehash: %v", err)
	}
}

// checkobjects NAME DIR: the 3.12 repository DIR opens with fixture NAME's PINs and every
// object decrypts to the fixture's clear_sha256; its file set and sizes equal after-reference.
func cmdCheckObjects(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 2 {
		ts.Fatalf("usage: checkobjects NAME DIR")
	}
	fx := readFixture(ts, args[0])
	d, err := repofs.OpenDir(ts.MkAbs(args[1]))
	if err != nil {
		ts.Fatalf("%v", err)
	}
	defer d.Close()
	repo, err := tokens.Load(d)
	if err != nil {
		ts.Fatalf("load: %v", err)
	}
	if repo.NV.Format != tokens.Format312 {
		ts.Fatalf("repository is %s, want 3.12", repo.NV.Format)
	}
	keys, err := repo.Unlock([]byte(fx.SOPIN), []byte(fx.UserPIN))
	if err != nil {
		ts.Fatalf("unlock: %v", err)
	}
	defer keys.Wipe()
	for _, o := range fx.Objects {
		b, err := d.ReadFile("TOK_OBJ/" + o.File)
		if err != nil {
			ts.Fatalf("%v", err)
		}
		obj, err := tokens.DecodeObject(o.File, b, keys)
		if err != nil {
			ts.Fatalf("object %s: %v", o.File, err)
		}
		if obj.Format != tokens.Format312 {
			ts.Fatalf("object %s is %s", o.File, obj.Format)
		}
		s := sha256.Sum256(obj.Clear)
		if hex.EncodeToString(s[:]) != o.ClearSHA256 {
			ts.Fatalf("object %s: clear bytes differ from the fixture's", o.File)
		}
		if int64(len(b)) != o.AfterFileSize {
			ts.Fatalf("object %s: size %d, upstream's %d", o.File, len(b), o.AfterFileSize)
		}
	}
	if len(fx.After.Files) > 0 {
		var want, got []string
		for _, f := range fx.After.Files {
			want = append(want, fmt.Sprintf("%s %s %d", f.Path, f.Mode, f.Size))
		}
		root := ts.MkAbs(args[1])
		filepath.WalkDir(root, func(p string, de fs.DirEntry, err error) error {
			if err != nil || p == root {
				return err
			}
			rel, _ := filepath.Rel(root, p)
			if top, _, _ := strings.Cut(rel, "/"); layout.Reserved(top) {
				// An in-place switch's backup inside the repository is not part of it.
				if de.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
			info, _ := de.Info()
			size := info.Size()
			if info.IsDir() {
				size = 0
			}
			got = append(got, fmt.Sprintf("%s %s %d", rel, info.Mode().String(), size))
			return nil
		})
		for i := range want {
			if strings.HasPrefix(want[i], "TOK_OBJ d") {
				want[i] = "TOK_OBJ drwxrwx--- 0"
			}
		}
		sort.Strings(want)
		sort.Strings(got)
		if strings.Join(want, "\n") != strings.Join(got, "\n") {
			ts.Fatalf("file set differs from after-reference:\nwant\n%s\ngot\n%s", strings.Join(want, "\n"), strings.Join(got, "\n"))
		}
	}
}

// checkperms DIR GROUP: every file is 0660 and every directory 0770, all with GROUP.
func cmdCheckPerms(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 2 {
		ts.Fatalf("usage: checkperms DIR GROUP")
	}
	gid, err := repofs.LookupGroup(args[1])
	if err != nil {
		ts.Fatalf("%v", err)
	}
	root := ts.MkAbs(args[0])
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			ts.Fatalf("%v", err)
		}
		info, _ := d.Info()
		want := os.FileMode(0o660)
		if d.IsDir() {
			want = 0o770 | fs.ModeDir
		}
		if info.Mode() != want {
			ts.Fatalf("%s: mode %v, want %v", p, info.Mode(), want)
		}
		if g := fileGID(info); g != gid {
			ts.Fatalf("%s: gid %d, want %d", p, g, gid)
		}
		return nil
	})
}

// startfake NAME PIDFILE: starts a sleeping process whose argv[0] is NAME and writes its PID
// to PIDFILE; it is killed when the script ends.
func cmdStartFake(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 2 {
		ts.Fatalf("usage: startfake NAME PIDFILE")
	}
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		ts.Fatalf("%v", err)
	}
	bin := ts.MkAbs(args[0])
	b, err := os.ReadFile(sleep)
	if err != nil {
		ts.Fatalf("%v", err)
	}
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		ts.Fatalf("%v", err)
	}
	cmd := exec.Command(bin, "300")
	if err := cmd.Start(); err != nil {
		ts.Fatalf("%v", err)
	}
	ts.Defer(func() { cmd.Process.Kill(); cmd.Wait() })
	if err := os.WriteFile(ts.MkAbs(args[1]), []byte(fmt.Sprintf("%d\n", cmd.Process.Pid)), 0o644); err != nil {
		ts.Fatalf("%v", err)
	}
}

// holdopen FILE: a process (a copy of sleep) holds FILE open read-only (as its stdin) until
// the script ends.
func cmdHoldOpen(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 1 {
		ts.Fatalf("usage: holdopen FILE")
	}
	f, err := os.Open(ts.MkAbs(args[0]))
	if err != nil {
		ts.Fatalf("%v", err)
	}
	cmd := exec.Command("sleep", "300")
	cmd.Stdin = f
	err = cmd.Start()
	f.Close()
	if err != nil {
		ts.Fatalf("%v", err)
	}
	ts.Defer(func() { cmd.Process.Kill(); cmd.Wait() })
	ts.Logf("pid %d holds %s open", cmd.Process.Pid, args[0])
}

type fixtureFile struct {
	Path string `json:"path"`
	Mode string `json:"mode"`
	Size int64  `json:"size"`
}

type fixtureDoc struct {
	SOPIN   string `json:"so_pin"`
	UserPIN string `json:"user_pin"`
	Objects []struct {
		File          string `json:"file"`
		ClearSHA256   string `json:"clear_sha256"`
		AfterFileSize int64  `json:"after_file_size"`
	} `json:"objects"`
	After struct {
		Files []fixtureFile `json:"files"`
	} `json:"after_reference"`
}

func readFixture(ts *testscript.TestScript, name string) *fixtureDoc {
	b, err := os.ReadFile(filepath.Join(ts.Getenv("FIXTURES"), name, "fixture.json"))
	if err != nil {
		ts.Fatalf("%v", err)
	}
	var fx fixtureDoc
	if err := json.Unmarshal(b, &fx); err != nil {
		ts.Fatalf("%v", err)
	}
	return &fx
}
