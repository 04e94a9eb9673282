package crash

import (
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	json "github.com/goccy/go-json"

	"github.com/ocktools/pkcstok-migrate/crash/crashsim"
)

// stateFile is a crash state kept in testdata/states: a tree as a power cut left it, the
// operation that was cut, and what must happen when a machine boots into it. good_* states
// must pass the boot checks and converge when the operation runs again; fail_* states must
// be caught (they prove the checks can fail).
type stateFile struct {
	Proves    string   `json:"proves"`
	Operation string   `json:"operation"` // apply, legacy or rollback
	Fixture   string   `json:"fixture"`
	Origin    string   `json:"origin"`
	Expect    string   `json:"expect"`              // "converges" or "caught"
	CaughtBy  string   `json:"caught_by,omitempty"` // for "caught": a part of the error
	Tree      treeJSON `json:"tree"`
}

type treeJSON struct {
	Root    attrJSON    `json:"root"`
	Entries []entryJSON `json:"entries"`
}

type attrJSON struct {
	Mode  string `json:"mode"`
	Owner string `json:"owner"`
	Group string `json:"group"`
}

type entryJSON struct {
	Path string `json:"path"`
	Kind string `json:"kind"`
	attrJSON
	Data   string `json:"data,omitempty"`    // base64
	LinkOf string `json:"link_of,omitempty"` // an earlier path of the same file (a hard link)
}

func toAttrJSON(a crashsim.Attr) attrJSON {
	owner, group := strconv.Itoa(a.UID), strconv.Itoa(a.GID)
	if u, err := user.LookupId(owner); err == nil {
		owner = u.Username
	}
	if g, err := user.LookupGroupId(group); err == nil {
		group = g.Name
	}
	return attrJSON{Mode: fmt.Sprintf("%04o", a.Mode), Owner: owner, Group: group}
}

func fromAttrJSON(a attrJSON) (crashsim.Attr, error) {
	mode, err := strconv.ParseUint(a.Mode, 8, 32)
	if err != nil || mode > 0o7777 {
		return crashsim.Attr{}, fmt.Errorf("mode %q", a.Mode)
	}
	uid, err := strconv.Atoi(a.Owner)
	if err != nil {
		u, lerr := user.Lookup(a.Owner)
		if lerr != nil {
			return crashsim.Attr{}, fmt.Errorf("owner %q: %w", a.Owner, lerr)
		}
		uid, _ = strconv.Atoi(u.Uid)
	}
	gid, err := strconv.Atoi(a.Group)
	if err != nil {
		g, lerr := user.LookupGroup(a.Group)
		if lerr != nil {
			return crashsim.Attr{}, fmt.Errorf("group %q: %w", a.Group, lerr)
		}
		gid, _ = strconv.Atoi(g.Gid)
	}
	return crashsim.Attr{Mode: uint32(mode), UID: uid, GID: gid}, nil
}

func encodeTree(t *crashsim.Tree) treeJSON {
	out := treeJSON{Root: toAttrJSON(t.Root)}
	first := map[int]string{}
	for _, e := range t.Entries {
		j := entryJSON{Path: e.Path, Kind: e.Kind.String(), attrJSON: toAttrJSON(e.Attr)}
		if e.Kind == crashsim.File {
			if p, ok := first[e.Ino]; ok {
				j.LinkOf = p
			} else {
				first[e.Ino] = e.Path
				j.Data = base64.StdEncoding.EncodeToString(e.Data)
			}
		}
		out.Entries = append(out.Entries, j)
	}
	return out
}

func decodeTree(j treeJSON) (*crashsim.Tree, error) {
	root, err := fromAttrJSON(j.Root)
	if err != nil {
		return nil, fmt.Errorf("root: %w", err)
	}
	t := &crashsim.Tree{Root: root}
	ino := map[string]int{}
	for i, e := range j.Entries {
		a, err := fromAttrJSON(e.attrJSON)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", e.Path, err)
		}
		ent := crashsim.Entry{Path: e.Path, Attr: a, Ino: i + 1}
		switch e.Kind {
		case "dir":
			ent.Kind = crashsim.Dir
		case "file":
			ent.Kind = crashsim.File
			if e.LinkOf != "" {
				id, ok := ino[e.LinkOf]
				if !ok {
					return nil, fmt.Errorf("%s: link_of %s: no such earlier file", e.Path, e.LinkOf)
				}
				ent.Ino = id
			} else if ent.Data, err = base64.StdEncoding.DecodeString(e.Data); err != nil {
				return nil, fmt.Errorf("%s: data: %w", e.Path, err)
			}
			ino[e.Path] = ent.Ino
		default:
			return nil, fmt.Errorf("%s: kind %q", e.Path, e.Kind)
		}
		t.Entries = append(t.Entries, ent)
	}
	sortTree(t)
	return t, nil
}

var unsafeName = regexp.MustCompile(`[^a-z0-9]+`)

// saveState writes a failing state into dir for a reviewer to name, explain and move to
// testdata/states.
func saveState(dir string, fx *fixture, op string, s labeled, cause error) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	sf := stateFile{
		Proves:    "TODO: what this state proves",
		Operation: op,
		Fixture:   fx.name,
		Origin:    s.label,
		Expect:    "converges",
		CaughtBy:  cause.Error(),
		Tree:      encodeTree(s.tree),
	}
	b, err := json.MarshalIndent(sf, "", " ")
	if err != nil {
		return "", err
	}
	if fx.leaks(b) {
		return "", errors.New("the state holds a PIN")
	}
	name := strings.Trim(unsafeName.ReplaceAllString(strings.ToLower(op+"-"+s.label), "_"), "_")
	if len(name) > 120 {
		name = name[:120]
	}
	p := filepath.Join(dir, name+".json")
	return p, os.WriteFile(p, append(b, '\n'), 0o644)
}

// TestRegressionStates reboots into every state of testdata/states with the real binary.
// It needs root and the group pkcs11, not strace.
func TestRegressionStates(t *testing.T) {
	gate(t, false)
	files, err := filepath.Glob("testdata/states/*.json")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no states in testdata/states")
	}
	h := newHarness(t, true)
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".json")
		t.Run(name, func(t *testing.T) {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			var sf stateFile
			if err := json.Unmarshal(b, &sf); err != nil {
				t.Fatal(err)
			}
			tree, err := decodeTree(sf.Tree)
			if err != nil {
				t.Fatal(err)
			}
			fx := h.fixture(t, sf.Fixture)
			if fx.leaks(b) {
				t.Fatal("the state file holds a PIN")
			}
			var tl tally
			_, err = h.checkState(fx, sf.Operation, tree, &tl, h.bin, false)
			switch {
			case strings.HasPrefix(name, "good_") && sf.Expect == "converges":
				if err != nil {
					t.Fatalf("%s\n(origin: %s)\n%v", sf.Proves, sf.Origin, err)
				}
			case strings.HasPrefix(name, "fail_") && sf.Expect == "caught":
				if err == nil {
					t.Fatalf("not caught: %s", sf.Proves)
				}
				if !strings.Contains(err.Error(), sf.CaughtBy) {
					t.Fatalf("caught, but not by %q: %v", sf.CaughtBy, err)
				}
			default:
				t.Fatalf("a state is named good_* with expect converges, or fail_* with expect caught (got %s, %q)", name, sf.Expect)
			}
		})
	}
}
