//go:build linux

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ocktools/pkcstok-migrate/contract"
	"github.com/ocktools/pkcstok-migrate/internal/repofs"
	"github.com/ocktools/pkcstok-migrate/tokens"
)

// gate decides whether the suite runs. It runs with PKCSTOK_E2E=1 or CI=true; in CI a missing
// prerequisite fails the test, elsewhere it skips with the reason. PKCSTOK_E2E=0 always skips;
// PKCSTOK_E2E_SKIP=<reason> skips with that reason (for a CI script that could not install the
// package and says so).
func gate(t *testing.T) {
	t.Helper()
	if r := os.Getenv("PKCSTOK_E2E_SKIP"); r != "" {
		t.Skipf("end-to-end suite skipped: %s", r)
	}
	on, ci := os.Getenv("PKCSTOK_E2E"), os.Getenv("CI") == "true"
	if on == "0" || (on == "" && !ci) {
		t.Skip("end-to-end suite against the real openCryptoki 3.8.1 not requested: run as root with PKCSTOK_E2E=1 after e2e/install.sh (see e2e/README.md)")
	}
	if miss := prerequisites(); miss != "" {
		if ci {
			t.Fatalf("end-to-end suite cannot run in CI: %s", miss)
		}
		t.Skipf("end-to-end suite skipped: %s", miss)
	}
}

// moduleRoot is the directory holding go.mod (the test runs in <root>/e2e).
func moduleRoot(t *testing.T) string {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for d := wd; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
		if filepath.Dir(d) == d {
			t.Fatalf("no go.mod above %s", wd)
		}
	}
}

// buildTool builds cmd/pkcstok-migrate into dir (or uses PKCSTOK_E2E_BIN).
func buildTool(t *testing.T, dir string) string {
	t.Helper()
	if b := os.Getenv("PKCSTOK_E2E_BIN"); b != "" {
		return b
	}
	bin := filepath.Join(dir, "pkcstok-migrate")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/pkcstok-migrate")
	cmd.Dir = moduleRoot(t)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/pkcstok-migrate: %v\n%s", err, out)
	}
	return bin
}

// toolRun is one run of pkcstok-migrate.
type toolRun struct {
	args           []string
	code           int
	stdout, stderr []byte
}

type errorDoc struct {
	Error struct {
		Code    string         `json:"code"`
		Message string         `json:"message"`
		Details map[string]any `json:"details"`
	} `json:"error"`
}

func (r toolRun) String() string {
	return strings.Join(r.args, " ") + ": exit " + strconv.Itoa(r.code) + "\nstdout: " + string(r.stdout) + "\nstderr: " + string(r.stderr)
}

// errorCode is the error document's code, or "".
func (r toolRun) errorCode() string {
	var e errorDoc
	if json.Unmarshal(r.stdout, &e) != nil {
		return ""
	}
	return e.Error.Code
}

type tool struct {
	bin  string
	pins [][]byte // never to be seen in any output
}

// run calls `pkcstok-migrate <op> --request -` with req as JSON on stdin (PINs only there).
func (tl tool) run(t *testing.T, op string, req contract.Request) toolRun {
	t.Helper()
	body, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	args := []string{op, "--request", "-"}
	cmd := exec.CommandContext(ctx, tl.bin, args...)
	cmd.Stdin = bytes.NewReader(body)
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	err = guarded(cmd.Run)
	r := toolRun{args: append([]string{"pkcstok-migrate"}, args...), stdout: so.Bytes(), stderr: se.Bytes()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		t.Fatalf("run %s: %v", strings.Join(args, " "), err)
	}
	for _, pin := range tl.pins {
		if bytes.Contains(r.stdout, pin) || bytes.Contains(r.stderr, pin) {
			t.Errorf("%s: a PIN appears in the output", strings.Join(r.args, " "))
		}
	}
	t.Logf("%s: exit %d", strings.Join(r.args, " "), r.code)
	return r
}

func decodeJSON[T any](t *testing.T, r toolRun) *T {
	t.Helper()
	v := new(T)
	dec := json.NewDecoder(bytes.NewReader(r.stdout))
	if err := dec.Decode(v); err != nil {
		t.Fatalf("%s\ncannot decode stdout as %T: %v", r, v, err)
	}
	return v
}

// ---------------------------------------------------------------------------------------
// Our reader: a repository's objects in clear, through tokens and repofs.

type readObj struct {
	Name    string
	Format  tokens.Format
	Private bool
	Clear   []byte
	Class   uint32
	KeyType *uint32 // CKA_KEY_TYPE, nil when absent
	Label   string
	ID      []byte
}

type readRepo struct {
	Format  tokens.Format // of NVTOK.DAT
	Index   []string
	Objects map[string]readObj
}

// readRepository loads dir with the project's reader, unlocks it with both PINs and decodes
// every object listed in OBJ.IDX.
func readRepository(t *testing.T, dir string, so, user []byte) *readRepo {
	t.Helper()
	d, err := repofs.OpenDir(dir)
	if err != nil {
		t.Fatalf("repofs.OpenDir(%s): %v", dir, err)
	}
	defer d.Close()
	repo, err := tokens.Load(d)
	if err != nil {
		t.Fatalf("tokens.Load(%s): %v", dir, err)
	}
	keys, err := repo.Unlock(so, user)
	if err != nil {
		t.Fatalf("Unlock(%s): %v", dir, err)
	}
	defer keys.Wipe()
	rr := &readRepo{Format: repo.NV.Format, Index: repo.Index, Objects: map[string]readObj{}}
	for _, name := range repo.Index {
		file, err := repo.ReadObject(name)
		if err != nil {
			t.Fatalf("%s: read object %q: %v", dir, name, err)
		}
		o, err := tokens.DecodeObject(name, file, keys)
		if err != nil {
			t.Fatalf("%s: decode object %q: %v", dir, name, err)
		}
		a, err := tokens.ParseFlattened(name, o.Clear)
		if err != nil {
			t.Fatalf("%s: parse object %q: %v", dir, name, err)
		}
		rr.Objects[name] = readObj{Name: name, Format: o.Format, Private: o.Private, Clear: o.Clear,
			Class: a.Class, KeyType: a.KeyType, Label: string(a.Label), ID: a.ID}
	}
	return rr
}

func (r *readRepo) labels() []string {
	var l []string
	for _, o := range r.Objects {
		l = append(l, o.Label)
	}
	sort.Strings(l)
	return l
}
