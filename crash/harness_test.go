package crash

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	json "github.com/goccy/go-json"

	"github.com/ocktools/pkcstok-migrate/contract"
	"github.com/ocktools/pkcstok-migrate/crash/crashsim"
	"github.com/ocktools/pkcstok-migrate/internal/conf"
	"github.com/ocktools/pkcstok-migrate/internal/layout"
	"github.com/ocktools/pkcstok-migrate/internal/repofs"
	"github.com/ocktools/pkcstok-migrate/tokens"
	"github.com/ocktools/pkcstok-migrate/tokens/tokentest"
)

// The names below the root of every state: the repository, the conf directory and the names
// the protocol gives the working copy, backup, journal and rolled-back copies (README.md).
const (
	dsName  = "swtok"
	confDir = "conf"
)

var (
	bakName         = dsName + layout.SuffixBak
	journalName     = dsName + layout.SuffixJournal
	confPath        = confDir + "/" + layout.ConfName
	confBakPath     = confDir + "/" + layout.ConfBakName
	confNewPath     = confDir + "/" + conf.TempName
	confPrevPath    = confDir + "/" + layout.ConfPrev
	hostJournalPath = confDir + "/" + layout.HostJournal
)

const fixtures = "../tokens/testdata/fixtures"

// fixture is one token of tokens/testdata/fixtures, laid out as a Tree: root/swtok (0770,
// files 0660, group pkcs11: git keeps neither) and root/conf/opencryptoki.conf (0644); or a
// host of several such tokens under one conf (host, hostFixture).
type fixture struct {
	name    string
	slot    int
	ds      string // the repository below the root: swtok, or the slot's tokname in a host
	so      string
	user    string
	objects map[string]string // object file -> hex SHA-256 of its clear bytes
	tree    *crashsim.Tree    // the whole initial root
	repo    *crashsim.Tree    // the original repository alone
	// conf is the conf on the old side of the operation (the original; for a rollback of one
	// slot of a host, the migrated host's without that slot's line), newConf the conf apply
	// writes (from a run on a fresh copy), pristine the conf before the first migration (what
	// opencryptoki.conf_BAK holds).
	conf, newConf, pristine []byte
	// host is the slots of a host, each a fixture of one token with its own repository
	// and PINs (nil for a single slot); target, in a scenario that rolls back one slot of
	// the host, is that slot. The other slots must stay as they were in start, the tree the
	// scenario began with.
	host   []*fixture
	target *fixture
	start  *crashsim.Tree
	// force is PKCSTOK_MIGRATE_SWITCH for the scenario's runs: "in_place_inside" or
	// "in_place" switches the repository in place, "" exchanges it.
	force string
	// layout puts every tree of the scenario (the traced run's and every crash state's) on
	// a real storage layout the exchange cannot switch: "bind" (the repository is
	// a mount point: a bind mount of itself) or "overlay" (the whole tree is the lower layer
	// of an overlay mounted at the root: the repository is a lower-layer directory).
	layout string
}

// materialize writes tree at root as the scenario's layout has it, and returns what undoes
// the layout (the caller removes root afterwards).
func (fx *fixture) materialize(tree *crashsim.Tree, root string) (func(), error) {
	switch fx.layout {
	case "":
		return func() {}, tree.Materialize(root)
	case "bind":
		if err := tree.Materialize(root); err != nil {
			return func() {}, err
		}
		ds := filepath.Join(root, fx.ds)
		if err := unix.Mount(ds, ds, "", unix.MS_BIND, ""); err != nil {
			return func() {}, fmt.Errorf("bind mount %s: %w", ds, err)
		}
		return func() { _ = unix.Unmount(ds, unix.MNT_DETACH) }, nil
	case "overlay":
		lower, upper, work := root+".lower", root+".upper", root+".work"
		undo := func() {
			for _, d := range []string{lower, upper, work} {
				os.RemoveAll(d)
			}
		}
		// The lower layer is the fixture as the image had it; what the state holds beyond
		// it is written through the overlay, so that it is in the upper layer, as what the
		// run made is on a machine (a directory the run made can be renamed, one of the
		// image cannot).
		if err := fx.tree.Materialize(lower); err != nil {
			return undo, err
		}
		for _, d := range []string{upper, work, root} {
			if err := os.Mkdir(d, 0o755); err != nil {
				return undo, err
			}
		}
		if err := unix.Mount("overlay", root, "overlay", 0, "lowerdir="+lower+",upperdir="+upper+",workdir="+work+",redirect_dir=off"); err != nil {
			return undo, fmt.Errorf("mount overlay at %s: %w", root, err)
		}
		unmount := func() { _ = unix.Unmount(root, unix.MNT_DETACH); undo() }
		if err := tree.MaterializeOver(root); err != nil {
			return unmount, err
		}
		return unmount, nil
	}
	return func() {}, fmt.Errorf("unknown layout %q", fx.layout)
}

// inPlace: the scenario's repository is switched in place.
func (fx *fixture) inPlace() bool { return fx.force != "" || fx.layout != "" }

// names are where a state keeps the working copy, the backup and the rolled-back copy, by
// the scenario's switch: beside the repository for the exchange; inside it for the in-place
// switch, the backup and the rolled-back copy beside it for "in_place".
func (fx *fixture) names() (tmp, bak, rolled string) {
	ds := fx.ds
	switch {
	case fx.force == "in_place_inside" || fx.layout == "bind":
		return ds + "/" + layout.InPlaceTmp, ds + "/" + layout.InPlaceBak, ds + "/" + layout.InPlaceRolledBack
	case fx.force == "in_place" || fx.layout == "overlay":
		return ds + "/" + layout.InPlaceTmp, ds + layout.SuffixBak, ds + layout.SuffixRolledBack
	}
	return ds + layout.SuffixTmp, ds + layout.SuffixBak, ds + layout.SuffixRolledBack
}

// slots is every slot of the fixture: the host's, or the fixture itself.
func (fx *fixture) slots() []*fixture {
	if fx.host != nil {
		return fx.host
	}
	return []*fixture{fx}
}

// what names the slot in a host's messages ("" for a single slot).
func (fx *fixture) what(s *fixture) string {
	if fx.host == nil {
		return ""
	}
	return fmt.Sprintf("slot %d (%s): ", s.slot, s.ds)
}

// untouched reports whether slot s of the scenario must stay as it began: another slot
// than the one a rollback of one slot rolls back.
func (fx *fixture) untouched(s *fixture) bool { return fx.target != nil && s != fx.target }

type fixtureJSON struct {
	SlotID  int    `json:"slot_id"`
	SOPIN   string `json:"so_pin"`
	UserPIN string `json:"user_pin"`
	Objects []struct {
		File        string `json:"file"`
		ClearSHA256 string `json:"clear_sha256"`
	} `json:"objects"`
}

func loadFixture(name string, gid int) (*fixture, error) {
	dir := filepath.Join(fixtures, name)
	b, err := os.ReadFile(filepath.Join(dir, "fixture.json"))
	if err != nil {
		return nil, err
	}
	var fj fixtureJSON
	if err := json.Unmarshal(b, &fj); err != nil {
		return nil, fmt.Errorf("%s/fixture.json: %w", name, err)
	}
	fx := &fixture{name: name, slot: fj.SlotID, ds: dsName, so: fj.SOPIN, user: fj.UserPIN, objects: map[string]string{}}
	for _, o := range fj.Objects {
		fx.objects[o.File] = o.ClearSHA256
	}
	root := crashsim.Attr{Mode: 0o755}
	t := &crashsim.Tree{Root: root}
	add := func(p string, k crashsim.Kind, a crashsim.Attr, data []byte) {
		t.Entries = append(t.Entries, crashsim.Entry{Path: p, Kind: k, Attr: a, Data: data, Ino: len(t.Entries) + 1})
	}
	add(confDir, crashsim.Dir, crashsim.Attr{Mode: 0o755}, nil)
	if fx.conf, err = os.ReadFile(filepath.Join(dir, "before", confDir, layout.ConfName)); err != nil {
		return nil, err
	}
	add(confPath, crashsim.File, crashsim.Attr{Mode: 0o644}, fx.conf)
	src := filepath.Join(dir, "before", dsName)
	hasObj := false
	err = filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		rel = filepath.ToSlash(rel)
		name := dsName
		if rel != "." {
			name += "/" + rel
		}
		hasObj = hasObj || rel == "TOK_OBJ"
		if d.IsDir() {
			add(name, crashsim.Dir, crashsim.Attr{Mode: 0o770, GID: gid}, nil)
			return nil
		}
		data, err := os.ReadFile(p)
		add(name, crashsim.File, crashsim.Attr{Mode: 0o660, GID: gid}, data)
		return err
	})
	if err != nil {
		return nil, err
	}
	if !hasObj { // git drops empty directories: every repository has TOK_OBJ
		add(dsName+"/TOK_OBJ", crashsim.Dir, crashsim.Attr{Mode: 0o770, GID: gid}, nil)
	}
	sortTree(t)
	fx.tree, fx.repo, fx.pristine = t, subtree(t, dsName), fx.conf
	return fx, nil
}

// hostFixture names the fixture of a host: three Soft tokens of different fixtures, each with
// its own PINs, under one conf (soft-small's, slot 3 at the Soft token's default directory,
// and two more Soft slots with toknames). The toknames begin with dsName: the library check
// places every entry of that prefix (library_test.go).
const hostFixture = "host"

// hostName names the host in the scenarios' names.
const hostName = "soft-small+deb381-soft+soft-mixed20"

var hostSlots = []struct {
	fixture string
	slot    int
	ds      string
}{
	{"soft-small", 3, dsName},
	{"deb381-soft", 5, dsName + "5"},
	{"soft-mixed20", 6, dsName + "6"},
}

// loadHost lays out hostSlots below one root: the conf, and each token's repository at its
// slot's directory.
func loadHost(gid int) (*fixture, error) {
	hx := &fixture{name: hostFixture}
	t := &crashsim.Tree{Root: crashsim.Attr{Mode: 0o755}}
	for i, hs := range hostSlots {
		fx, err := loadFixture(hs.fixture, gid)
		if err != nil {
			return nil, err
		}
		if i == 0 {
			hx.conf = fx.conf
			t.Entries = append(t.Entries, *fx.tree.Lookup(confDir))
		}
		if fx.ds != hs.ds {
			hx.conf = append(hx.conf, fmt.Sprintf("\nslot %d\n{\n    stdll = libpkcs11_sw.so\n    tokname = %s\n}\n", hs.slot, hs.ds)...)
		}
		fx.slot, fx.ds, fx.tree, fx.conf = hs.slot, hs.ds, nil, nil
		t.Entries = append(t.Entries, crashsim.Entry{Path: fx.ds, Kind: crashsim.Dir, Attr: fx.repo.Root})
		for _, e := range fx.repo.Entries {
			e.Path = fx.ds + "/" + e.Path
			t.Entries = append(t.Entries, e)
		}
		hx.host = append(hx.host, fx)
	}
	t.Entries = append(t.Entries, crashsim.Entry{Path: confPath, Kind: crashsim.File, Attr: crashsim.Attr{Mode: 0o644}, Data: hx.conf})
	sortTree(t)
	for i := range t.Entries {
		t.Entries[i].Ino = i + 1
	}
	hx.tree, hx.pristine = t, hx.conf
	return hx, nil
}

// sortTree puts the entries in the order Snapshot gives (a directory before its entries).
func sortTree(t *crashsim.Tree) {
	sort.SliceStable(t.Entries, func(i, j int) bool {
		a, b := strings.Split(t.Entries[i].Path, "/"), strings.Split(t.Entries[j].Path, "/")
		for k := 0; k < len(a) && k < len(b); k++ {
			if a[k] != b[k] {
				return a[k] < b[k]
			}
		}
		return len(a) < len(b)
	})
}

// subtree is the part of t below dir, with dir's metadata as its root (nil if absent).
func subtree(t *crashsim.Tree, dir string) *crashsim.Tree {
	e := t.Lookup(dir)
	if e == nil || e.Kind != crashsim.Dir {
		return nil
	}
	s := &crashsim.Tree{Root: e.Attr}
	for _, c := range t.Entries {
		if rel, ok := strings.CutPrefix(c.Path, dir+"/"); ok {
			c.Path = rel
			s.Entries = append(s.Entries, c)
		}
	}
	return s
}

// request is the JSON request for the repository below root; PINs only when asked for. For a
// host, the request of every slot ("slots"), each with its own PINs.
func (fx *fixture) request(root string, pins bool) []byte {
	slot := func(s *fixture) map[string]any {
		m := map[string]any{"slot": s.slot, "datastore": filepath.Join(root, s.ds)}
		if pins {
			m["so_pin"], m["user_pin"] = s.so, s.user
		}
		return m
	}
	var m map[string]any
	if fx.host == nil {
		m = slot(fx)
	} else {
		var slots []map[string]any
		for _, s := range fx.host {
			slots = append(slots, slot(s))
		}
		m = map[string]any{"slots": slots}
	}
	m["confdir"] = filepath.Join(root, confDir)
	b, _ := json.Marshal(m)
	return b
}

// command is how operation op runs on the repository below root: PINs on standard input
// only, never in argv. A host's rollback is that of its target slot alone, when it has one.
func (fx *fixture) command(op, root string) (stdin []byte, args []string) {
	switch op {
	case "rollback":
		if fx.target != nil {
			return fx.target.request(root, false), []string{"rollback", "--request", "-"}
		}
		return fx.request(root, false), []string{"rollback", "--request", "-"}
	case "legacy":
		// Upstream's interface: the question and both PINs answered on standard input.
		return []byte("y\n" + fx.so + "\n" + fx.user + "\n"),
			[]string{"-s", strconv.Itoa(fx.slot), "-d", filepath.Join(root, fx.ds), "-c", filepath.Join(root, confDir)}
	}
	return fx.request(root, true), []string{"apply", "--request", "-"}
}

// secrets are the byte strings that must never show: every slot's PINs raw, in hex, and as
// strace -xx prints them.
func (fx *fixture) secrets() [][]byte {
	var s [][]byte
	for _, p := range fx.pins() {
		h := hex.EncodeToString([]byte(p))
		var esc strings.Builder
		for i := 0; i < len(h); i += 2 {
			esc.WriteString(`\x` + h[i:i+2])
		}
		s = append(s, []byte(p), []byte(h), []byte(strings.ToUpper(h)), []byte(esc.String()))
	}
	return s
}

// pins is every slot's SO and user PIN.
func (fx *fixture) pins() []string {
	var p []string
	for _, s := range fx.slots() {
		p = append(p, s.so, s.user)
	}
	return p
}

func (fx *fixture) leaks(b []byte) bool {
	for _, s := range fx.secrets() {
		if bytes.Contains(b, s) {
			return true
		}
	}
	return false
}

type harness struct {
	dir      string      // private work directory
	bin      string      // pkcstok-migrate built with -tags faultinject
	proc     string      // an empty /proc: no pkcsslotd, no process holding files
	pidfiles string      // does not exist
	scratch  string      // where the traced runs and the states are written (scratchDir)
	lib      *libChecker // the real token library opens every state (TestCrash only)
	fsType   string      // the file system of scratch, for the log
	gid      int         // group pkcs11
	umask    uint32

	seq  atomic.Int64
	keys tokentest.KeyCache
	mu   sync.Mutex // fxs
	fxs  map[string]*fixture
}

// moduleRoot is the directory of go.mod.
func moduleRoot(t testing.TB) string {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	return filepath.Dir(strings.TrimSpace(string(out)))
}

// build compiles pkcstok-migrate with the faultinject tag (PKCSTOK_MIGRATE_PROC and
// PKCSTOK_MIGRATE_PIDFILES keep it away from the machine's real pkcsslotd) and extra tags.
func build(t testing.TB, out string, extraTags ...string) {
	t.Helper()
	tags := strings.Join(append([]string{"faultinject"}, extraTags...), ",")
	cmd := exec.Command("go", "build", "-tags", tags, "-o", out, "./cmd/pkcstok-migrate")
	cmd.Dir = moduleRoot(t)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build -tags %s: %v\n%s", tags, err, b)
	}
}

// newHarness needs root (the token group is set on every file) and the group pkcs11.
func newHarness(t *testing.T, withBinary bool) *harness {
	t.Helper()
	dir := t.TempDir()
	h := &harness{dir: dir, bin: filepath.Join(dir, "pkcstok-migrate"), proc: filepath.Join(dir, "proc"),
		pidfiles: filepath.Join(dir, "none.pid"), fxs: map[string]*fixture{}}
	gid, err := repofs.LookupGroup("pkcs11")
	if err != nil {
		t.Fatalf("group pkcs11: %v (groupadd -r pkcs11)", err)
	}
	h.gid = gid
	if h.umask, err = readUmask(); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(h.proc, 0o755); err != nil {
		t.Fatal(err)
	}
	if h.scratch, err = scratchDir(t, filepath.Join(dir, "scratch")); err != nil {
		t.Fatal(err)
	}
	h.fsType = fsTypeOf(h.scratch)
	if b := os.Getenv("PKCSTOK_CRASH_BIN"); b != "" && withBinary {
		h.bin = b
	} else if withBinary {
		build(t, h.bin)
	}
	return h
}

// readUmask reads this process's umask (children inherit it).
func readUmask() (uint32, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "Umask:"); ok {
			u, err := strconv.ParseUint(strings.TrimSpace(v), 8, 32)
			return uint32(u), err
		}
	}
	return 0, errors.New("no Umask in /proc/self/status")
}

// fixture returns the named fixture (hostFixture: the host) with the conf apply makes of it.
func (h *harness) fixture(t testing.TB, name string) *fixture {
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	if fx := h.fxs[name]; fx != nil {
		return fx
	}
	var fx *fixture
	var err error
	if name == hostFixture {
		fx, err = loadHost(h.gid)
	} else {
		fx, err = loadFixture(name, h.gid)
	}
	if err != nil {
		t.Fatal(err)
	}
	if fx.newConf, err = h.confAfter(fx, "apply"); err != nil {
		t.Fatalf("apply on a fresh %s: %v", name, err)
	}
	var slots []int
	for _, s := range fx.slots() {
		slots = append(slots, s.slot)
	}
	if err := confSays312(fx.newConf, slots, nil); err != nil {
		t.Fatalf("the conf apply makes of %s: %v", name, err)
	}
	h.fxs[name] = fx
	return fx
}

// confAfter runs ops on a fresh copy of the fixture and returns the conf they leave.
func (h *harness) confAfter(fx *fixture, ops ...string) ([]byte, error) {
	root := h.newDir("conf-" + fx.name)
	defer os.RemoveAll(root)
	if err := fx.tree.Materialize(root); err != nil {
		return nil, err
	}
	for _, op := range ops {
		stdin, args := fx.command(op, root)
		if r, err := h.run(fx, h.bin, stdin, args...); err != nil || r.code != 0 {
			return nil, fmt.Errorf("%s: %v %v", op, err, r)
		}
	}
	return os.ReadFile(filepath.Join(root, confPath))
}

// confSays312 checks that the conf has tokversion = 3.12 for every slot of yes and for none of
// no.
func confSays312(b []byte, yes, no []int) error {
	cf, err := conf.Parse(layout.ConfName, b)
	if err != nil {
		return err
	}
	for _, want := range []bool{true, false} {
		ids := yes
		if !want {
			ids = no
		}
		for _, id := range ids {
			s, err := cf.Slot(uint64(id))
			if err != nil {
				return err
			}
			if s.TokVersionIs312() != want {
				return fmt.Errorf("slot %d: tokversion = 3.12 is %v, want %v", id, !want, want)
			}
		}
	}
	return nil
}

// rollbackOne is the host fixture for a rollback of its slot alone: that slot is the target,
// and the conf on the old side is what the rollback of that slot makes of the migrated host
// (checked against an apply of the other slots alone: the rollback removes its slot's line
// and nothing else).
func (h *harness) rollbackOne(fx *fixture, slot int) (*fixture, error) {
	c := *fx
	var rest []*fixture
	for _, s := range fx.host {
		if s.slot == slot {
			c.target = s
		} else {
			rest = append(rest, s)
		}
	}
	if c.target == nil || len(rest) == 0 {
		return nil, fmt.Errorf("%s: no slot %d beside others", fx.name, slot)
	}
	var err error
	if c.conf, err = h.confAfter(&c, "apply", "rollback"); err != nil {
		return nil, fmt.Errorf("rollback of slot %d on a fresh migrated %s: %w", slot, fx.name, err)
	}
	others := c
	others.host, others.target = rest, nil
	want, err := h.confAfter(&others, "apply")
	if err != nil {
		return nil, fmt.Errorf("apply of the other slots on a fresh %s: %w", fx.name, err)
	}
	if !bytes.Equal(c.conf, want) {
		return nil, fmt.Errorf("the rollback of slot %d leaves a conf other than an apply of the other slots alone:\n%s", slot, conf.Diff(want, c.conf))
	}
	var ids []int
	for _, s := range rest {
		ids = append(ids, s.slot)
	}
	return &c, confSays312(c.conf, ids, []int{slot})
}

// newDir names a fresh directory below scratch (not created).
func (h *harness) newDir(label string) string {
	return filepath.Join(h.scratch, fmt.Sprintf("%s-%d", label, h.seq.Add(1)))
}

// result is one run of the binary.
type result struct {
	code    int
	stdout  []byte
	stderr  []byte
	errCode string
	changed bool
}

func (r *result) String() string {
	if r == nil {
		return "no result"
	}
	return fmt.Sprintf("exit %d (%s)\nstdout: %.1500s\nstderr: %.1500s", r.code, r.errCode, r.stdout, r.stderr)
}

func (h *harness) env() []string {
	return []string{"PATH=" + os.Getenv("PATH"), "PKCSTOK_MIGRATE_PROC=" + h.proc, "PKCSTOK_MIGRATE_PIDFILES=" + h.pidfiles}
}

// run runs the binary (or strace with the binary), checks its output for the PINs and
// parses its JSON answer.
func (h *harness) run(fx *fixture, bin string, stdin []byte, args ...string) (*result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = h.env()
	if fx.force != "" {
		cmd.Env = append(cmd.Env, "PKCSTOK_MIGRATE_SWITCH="+fx.force)
	}
	cmd.Stdin = bytes.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	r := &result{stdout: stdout.Bytes(), stderr: stderr.Bytes()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		return nil, fmt.Errorf("run %s: %w", filepath.Base(bin), err)
	}
	if ctx.Err() != nil {
		return r, fmt.Errorf("%s timed out", filepath.Base(bin))
	}
	if fx.leaks(r.stdout) || fx.leaks(r.stderr) {
		// The output is not shown: it holds a PIN.
		return nil, fmt.Errorf("the output of %s %s holds a PIN", filepath.Base(bin), args[0])
	}
	var doc struct {
		Changed bool `json:"changed"`
		Error   struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	if json.Unmarshal(r.stdout, &doc) == nil {
		r.changed, r.errCode = doc.Changed, doc.Error.Code
	}
	return r, nil
}

// tracedCalls are the calls strace records: everything that may change a file system or
// make it durable, and what it takes to follow descriptors and their offsets. Calls the
// model does not follow are recorded too, so that crashsim refuses a trace that uses them
// inside the root. Reads are recorded raw (rawCalls): descriptor and count, never the
// buffer, so the PINs the binary reads never reach the trace.
var tracedCalls = strings.Join([]string{
	"openat", "open", "creat", "close", "dup", "dup2", "dup3", "fcntl", "lseek", "read", "readv", "preadv2", "umask",
	"write", "pwrite64", "writev", "pwritev", "pwritev2", "ftruncate", "truncate",
	"mkdir", "mkdirat", "rmdir", "unlink", "unlinkat", "rename", "renameat", "renameat2",
	"link", "linkat", "symlink", "symlinkat", "mknod", "mknodat",
	"chmod", "fchmod", "fchmodat", "chown", "lchown", "fchown", "fchownat",
	"fallocate", "copy_file_range", "sendfile", "fsync", "fdatasync", "syncfs", "sync",
}, ",")

const rawCalls = "read,readv,preadv2"

// trace runs operation op on the tree below root under strace and replays the trace. The
// model's final tree must be what the binary really left, or nothing built from it counts.
func (h *harness) trace(fx *fixture, bin, op, root string) (*crashsim.Sim, *result, error) {
	initial, err := crashsim.Snapshot(root)
	if err != nil {
		return nil, nil, err
	}
	tf := filepath.Join(h.dir, fmt.Sprintf("trace-%d.txt", h.seq.Add(1)))
	defer os.Remove(tf) // write buffers: key material
	stdin, args := fx.command(op, root)
	sargs := append([]string{"-f", "-y", "-xx", "-s", "1048576", "-o", tf, "-e", "trace=" + tracedCalls, "-e", "raw=" + rawCalls, "--", bin}, args...)
	r, err := h.run(fx, "strace", stdin, sargs...)
	if err != nil {
		return nil, nil, err
	}
	raw, err := os.ReadFile(tf)
	if err != nil {
		return nil, r, fmt.Errorf("trace: %w", err)
	}
	if fx.leaks(raw) {
		return nil, r, fmt.Errorf("the strace of %s holds a PIN (the binary wrote it somewhere)", op)
	}
	calls, err := crashsim.ParseTrace(bytes.NewReader(raw))
	if err != nil {
		return nil, r, err
	}
	sim, err := crashsim.Replay(calls, initial, crashsim.Options{Root: root, Umask: h.umask, UID: os.Geteuid(), GID: os.Getegid()})
	if err != nil {
		return nil, r, err
	}
	final, err := sim.Final()
	if err != nil {
		return nil, r, err
	}
	real, err := crashsim.Snapshot(root)
	if err != nil {
		return nil, r, err
	}
	if d := final.Diff(real); len(d) > 0 {
		return nil, r, fmt.Errorf("the model's final tree is not what %s left:\n%s", op, strings.Join(d, "\n"))
	}
	return sim, r, nil
}

// unlock returns the keys of repo, derived once per set of key files and PINs.
func (h *harness) unlock(fx *fixture, repo *tokens.Repository, nv []byte) (*tokens.Keys, error) {
	return h.keys.Unlock(repo, nv, fx.so, fx.user)
}

// repoState is what a directory holds as a repository.
type repoState struct {
	exists   bool
	format   tokens.Format // FormatUnknown unless every object decrypts to its clear bytes
	err      error         // why not
	lost     int           // objects missing or not decrypting to their clear bytes
	original bool          // byte for byte (and mode for mode) the original repository
	// originalFiles: the original's files, whatever the directory's own mode and beside the
	// in-place switch's marks (its backup before the rerun settles it).
	originalFiles bool
	// settled: the directory has the token's mode (0770) and no working-copy marker, as a
	// switched-in copy must have once its run is done (no rerun restores it without the
	// journal, which goes after it).
	settled bool
}

// readRepo checks dir with the tokens package: NVTOK.DAT, both MK files with both PINs, an
// OBJ.IDX listing exactly the fixture's objects, and every object decrypting to its
// original clear bytes, in the format of NVTOK.DAT (never a mix).
func (h *harness) readRepo(fx *fixture, dir string) repoState {
	st := repoState{}
	fi, err := os.Lstat(dir)
	if err != nil {
		return st
	}
	st.exists = true
	if !fi.IsDir() {
		st.err = errors.New("not a directory")
		return st
	}
	_, merr := os.Lstat(filepath.Join(dir, "PKCSTOK_MIGRATE_WORKING_COPY"))
	st.settled = fi.Mode()&(fs.ModePerm|fs.ModeSetgid|fs.ModeSetuid|fs.ModeSticky) == 0o770 && merr != nil
	if snap, err := crashsim.Snapshot(dir); err == nil {
		// An in-place switch's own entries inside the repository are not part of it.
		kept := snap.Entries[:0]
		for _, e := range snap.Entries {
			if top, _, _ := strings.Cut(e.Path, "/"); !layout.Reserved(top) {
				kept = append(kept, e)
			}
		}
		snap.Entries = kept
		st.original = fx.repo.Root == snap.Root && len(fx.repo.Diff(snap)) == 0
		// The original's files with an in-place switch's marks beside them, in a directory
		// not settled yet: what its backup is until the rerun settles it.
		files := kept[:0:0]
		for _, e := range kept {
			switch e.Path {
			case "PKCSTOK_MIGRATE_WORKING_COPY", "PKCSTOK_MIGRATE_BACKUP", layout.InPlaceJournal:
			default:
				files = append(files, e)
			}
		}
		snap.Entries, snap.Root = files, fx.repo.Root
		st.originalFiles = len(fx.repo.Diff(snap)) == 0
	}
	d, err := repofs.OpenDir(dir)
	if err != nil {
		st.err = err
		return st
	}
	defer d.Close()
	repo, err := tokens.Load(d)
	if err != nil {
		st.err, st.lost = fmt.Errorf("load: %w", err), len(fx.objects)
		return st
	}
	nv, _ := d.ReadFile("NVTOK.DAT")
	keys, err := h.unlock(fx, repo, nv)
	if err != nil {
		st.err, st.lost = fmt.Errorf("unlock: %w", err), len(fx.objects)
		return st
	}
	var bad []string
	listed := map[string]bool{}
	for _, n := range repo.Index {
		listed[n] = true
	}
	if len(repo.Index) != len(fx.objects) {
		bad = append(bad, fmt.Sprintf("OBJ.IDX lists %d objects, the original %d", len(repo.Index), len(fx.objects)))
	}
	names := make([]string, 0, len(fx.objects))
	for n := range fx.objects {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		if !listed[name] {
			st.lost++
			bad = append(bad, name+": not in OBJ.IDX")
			continue
		}
		b, err := d.ReadFile("TOK_OBJ/" + name)
		if err != nil {
			st.lost++
			bad = append(bad, fmt.Sprintf("%s: %v", name, err))
			continue
		}
		obj, err := tokens.DecodeObject(name, b, keys)
		if err != nil {
			st.lost++
			bad = append(bad, fmt.Sprintf("%s: %v", name, err))
			continue
		}
		sum := sha256.Sum256(obj.Clear)
		if obj.Format != repo.NV.Format || hex.EncodeToString(sum[:]) != fx.objects[name] {
			st.lost++
			bad = append(bad, fmt.Sprintf("%s: format %s in a %s repository, clear bytes equal: %v", name, obj.Format, repo.NV.Format,
				hex.EncodeToString(sum[:]) == fx.objects[name]))
		}
	}
	if len(bad) > 0 {
		st.err = errors.New(strings.Join(bad, "; "))
		return st
	}
	st.format = repo.NV.Format
	return st
}

// fileState is one file of the conf directory.
type fileState struct {
	exists bool
	data   []byte
}

func readFileState(p string) fileState {
	b, err := os.ReadFile(p)
	if err != nil {
		return fileState{}
	}
	return fileState{exists: true, data: b}
}

func (f fileState) is(b []byte) bool { return f.exists && bytes.Equal(f.data, b) }

// look is what a state holds of one slot, read with the tokens package, and its conf
// directory.
type look struct {
	ds, bak, tmp, rolled repoState
	journal              bool
	inPlaceJournal       bool // an in-place switch is under way: the repository may mix old and new files
	confLook
}

// confLook is what a state holds in its conf directory.
type confLook struct {
	conf, confBak, confNew, confPrev fileState
	hostJournal                      bool
}

func readConfLook(root string) confLook {
	at := func(p string) string { return filepath.Join(root, p) }
	return confLook{
		conf: readFileState(at(confPath)), confBak: readFileState(at(confBakPath)),
		confNew: readFileState(at(confNewPath)), confPrev: readFileState(at(confPrevPath)),
		hostJournal: exists(at(hostJournalPath)),
	}
}

// look reads slot s (a fixture of one slot) below root.
func (h *harness) look(s *fixture, root string) *look {
	at := func(p string) string { return filepath.Join(root, p) }
	tmp, bak, rolled := s.names()
	_, jerr := os.Lstat(at(s.ds + layout.SuffixJournal))
	journal := jerr == nil
	inPlaceJournal := false
	if s.inPlace() {
		// The in-place switch's journal is in its private directory: the working copy, or
		// the backup it became.
		for _, d := range []string{tmp, bak} {
			if _, err := os.Lstat(at(d + "/" + layout.InPlaceJournal)); err == nil {
				journal, inPlaceJournal = true, true
			}
		}
	}
	return &look{
		ds: h.readRepo(s, at(s.ds)), bak: h.readRepo(s, at(bak)), tmp: h.readRepo(s, at(tmp)),
		rolled: h.readRepo(s, at(rolled)), journal: journal, inPlaceJournal: inPlaceJournal,
		confLook: readConfLook(root),
	}
}

// tally counts what the checks found over all states of a sweep.
type tally struct {
	objectsChecked atomic.Int64
	objectsLost    atomic.Int64
	halfConf       atomic.Int64
	missingRepo    atomic.Int64
	inPlaceMixed   atomic.Int64 // states with an in-place switch half done (journal present)
}

// problems collects the failed checks of one state.
type problems []string

func (p *problems) addf(format string, args ...any) { *p = append(*p, fmt.Sprintf(format, args...)) }

// add records err, prefixed, when there is one.
func (p *problems) add(prefix string, err error) {
	if err != nil {
		*p = append(*p, prefix+err.Error())
	}
}

// leftovers records every name of m that is left behind, in order.
func (p *problems) leftovers(m map[string]bool) {
	names := make([]string, 0, len(m))
	for n, left := range m {
		if left {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	for _, n := range names {
		p.addf("%s left behind", n)
	}
}

func (p problems) err() error {
	if len(p) == 0 {
		return nil
	}
	return errors.New(strings.Join(p, "; "))
}

// bootCheck is what a machine that lost power may see when it boots, before anyone reruns
// the tool: pkcsslotd reads the repository paths and the conf as they are.
func (h *harness) bootCheck(fx *fixture, op, root string, tl *tally) error {
	var p problems
	c := readConfLook(root)
	if !c.conf.exists || !c.conf.is(fx.conf) && !c.conf.is(fx.newConf) {
		tl.halfConf.Add(1)
		p.addf("%s is neither the original nor the migrated conf of the operation (%d bytes, exists %v)", confPath, len(c.conf.data), c.conf.exists)
	}
	if c.confBak.exists && !c.confBak.is(fx.pristine) {
		p.addf("%s exists and is not the original conf", confBakPath)
	}
	for _, s := range fx.slots() {
		if fx.untouched(s) {
			p.add(fx.what(s), h.untouchedCheck(fx, s, root))
			continue
		}
		var sp problems
		h.bootCheckSlot(fx, s, op, h.look(s, root), tl, &sp)
		p.add(fx.what(s), sp.err())
	}
	return p.err()
}

// bootCheckSlot checks one slot of a state at boot; fx has the confs.
func (h *harness) bootCheckSlot(fx, s *fixture, op string, l *look, tl *tally, p *problems) {
	tmpName, bakName, rolledName := s.names()
	tl.objectsChecked.Add(int64(len(s.objects)))
	switch {
	case !l.ds.exists:
		tl.missingRepo.Add(1)
		p.addf("the repository path %s is missing", s.ds)
	case l.ds.err != nil && l.inPlaceJournal:
		// Mid-switch: the journal in the private directory says which files are switched,
		// and the rerun finishes (reboot checks that nothing is lost then).
		tl.inPlaceMixed.Add(1)
	case l.ds.err != nil:
		tl.objectsLost.Add(int64(l.ds.lost))
		p.addf("the repository at %s is not a complete old or 3.12 repository: %v", s.ds, l.ds.err)
	}
	old, new := l.ds.format == tokens.FormatOld, l.ds.format == tokens.Format312
	switch op {
	case "apply", "legacy":
		if old && !l.ds.original {
			p.addf("the old-format repository at %s is not the original byte for byte", s.ds)
		}
		if new && !l.bak.original && !l.tmp.original && !l.inPlaceJournal && !(s.inPlace() && l.bak.originalFiles) {
			// (With the in-place journal the original files are in the private directory,
			// beside its marks; the rerun must leave them as the backup: finalCheck.)
			p.addf("the repository is migrated but the original is neither at %s nor at %s", bakName, tmpName)
		}
		// The conf says 3.12 before the repository is switched: the token library refuses an
		// old repository under 3.12 without writing anything, but damages a 3.12 one under a
		// conf that does not say so. (A host's conf says it for every slot at once.)
		if new && !l.conf.is(fx.newConf) {
			p.addf("the repository is migrated but the conf does not say tokversion 3.12")
		}
	case "rollback":
		if old && !l.ds.original {
			p.addf("the old-format repository at %s is not the original byte for byte", s.ds)
		}
		if old && l.bak.format != tokens.Format312 && l.rolled.format != tokens.Format312 && !l.inPlaceJournal {
			p.addf("rolled back, but the migrated repository is neither at %s nor at %s", bakName, rolledName)
		}
		if new && !l.bak.original && !l.inPlaceJournal {
			p.addf("the repository is still migrated but the original is not at %s", bakName)
		}
		if l.conf.is(fx.conf) && !old {
			p.addf("the conf is the one of before the migration but the repository is not rolled back")
		}
	}
}

// untouchedCheck: slot s, which the scenario does not operate on, is as the scenario began:
// its repository and everything beside it of its name (the backup), entry for entry, and the
// conf keeps its tokversion line (both confs of the scenario have it: rollbackOne).
func (h *harness) untouchedCheck(fx, s *fixture, root string) error {
	now, err := crashsim.Snapshot(root)
	if err != nil {
		return err
	}
	if d := slotEntries(fx.start, s.ds).Diff(slotEntries(now, s.ds)); len(d) > 0 {
		return fmt.Errorf("changed, though only slot %d is rolled back:\n%s", fx.target.slot, strings.Join(d, "\n"))
	}
	return nil
}

// slotEntries is the part of t that is the repository ds or beside it with its name and a
// suffix (its backup, working copy, journal, rolled-back copies).
func slotEntries(t *crashsim.Tree, ds string) *crashsim.Tree {
	out := &crashsim.Tree{}
	for _, e := range t.Entries {
		if top, _, _ := strings.Cut(e.Path, "/"); top == ds || strings.HasPrefix(top, ds+"_") {
			out.Entries = append(out.Entries, e)
		}
	}
	return out
}

// finalCheck is the state a finished run must leave.
func (h *harness) finalCheck(fx *fixture, op, root string) error {
	var p problems
	c := readConfLook(root)
	leftovers := map[string]bool{confNewPath: c.confNew.exists, confPrevPath: c.confPrev.exists, hostJournalPath: c.hostJournal}
	switch op {
	case "apply", "legacy":
		if !c.conf.is(fx.newConf) {
			p.addf("%s is not the migrated conf", confPath)
		}
		if !c.confBak.is(fx.pristine) {
			p.addf("%s is not the original conf", confBakPath)
		}
	case "rollback":
		if !c.conf.is(fx.conf) {
			p.addf("%s is not the conf of before the migration", confPath)
		}
		if c.confBak.exists && !c.confBak.is(fx.pristine) {
			p.addf("%s is not the original conf", confBakPath)
		}
	}
	p.leftovers(leftovers)
	for _, s := range fx.slots() {
		if fx.untouched(s) {
			p.add(fx.what(s), h.untouchedCheck(fx, s, root))
			continue
		}
		p.add(fx.what(s), finalCheckSlot(s, op, h.look(s, root)))
	}
	return p.err()
}

// finalCheckSlot is what a finished run must leave of one slot.
func finalCheckSlot(s *fixture, op string, l *look) error {
	var p problems
	tmpName, bakName, rolledName := s.names()
	leftovers := map[string]bool{tmpName: l.tmp.exists, s.ds + layout.SuffixJournal: l.journal}
	switch op {
	case "apply", "legacy":
		if l.ds.format != tokens.Format312 {
			p.addf("%s is not a complete 3.12 repository: %v", s.ds, l.ds.err)
		}
		if !l.ds.settled {
			p.addf("%s does not have the mode 0770 without the working copy's marker", s.ds)
		}
		if !l.bak.original {
			p.addf("%s is not the original repository byte for byte", bakName)
		}
	case "rollback":
		if l.ds.format != tokens.FormatOld || !l.ds.original {
			p.addf("%s is not the original repository byte for byte: %v", s.ds, l.ds.err)
		}
		if l.rolled.format != tokens.Format312 {
			p.addf("%s is not a complete 3.12 repository: %v", rolledName, l.rolled.err)
		}
		leftovers[bakName] = l.bak.exists
	}
	p.leftovers(leftovers)
	return p.err()
}

// reboot is what an operator does after the power comes back: run the operation again
// (apply for the -s -d -c path too: upstream's interface refuses existing backups), then
// once more, which must change nothing.
func (h *harness) reboot(fx *fixture, op, root, bin string) error {
	rerun := op
	if op == "legacy" {
		rerun = "apply"
	}
	stdin, args := fx.command(rerun, root)
	r, err := h.run(fx, bin, stdin, args...)
	if err != nil {
		return fmt.Errorf("rerun: %w", err)
	}
	if rerun == "rollback" && r.code == 1 && r.errCode == string(contract.CodeNothingToRollBack) {
		// Rollback reports a finished rollback as an error: the power went after its last
		// change, before (or after) its last fsync. Then the state must be the final one.
		if err := h.finalCheck(fx, op, root); err != nil {
			return fmt.Errorf("rollback found nothing to roll back in a state that is not rolled back: %w", err)
		}
		return nil
	}
	if r.code != 0 {
		return fmt.Errorf("the %s after the crash failed: %s", rerun, r)
	}
	if err := h.finalCheck(fx, op, root); err != nil {
		return fmt.Errorf("after the %s that followed the crash: %w", rerun, err)
	}
	before, err := crashsim.Snapshot(root)
	if err != nil {
		return err
	}
	r, err = h.run(fx, bin, stdin, args...)
	if err != nil {
		return fmt.Errorf("second rerun: %w", err)
	}
	switch {
	case rerun == "apply" && (r.code != 0 || r.changed):
		return fmt.Errorf("a second apply did not report changed: false: %s", r)
	case rerun == "rollback" && (r.code != 1 || r.errCode != string(contract.CodeNothingToRollBack)):
		return fmt.Errorf("a second rollback did not report nothing_to_roll_back: %s", r)
	}
	after, err := crashsim.Snapshot(root)
	if err != nil {
		return err
	}
	if d := before.Diff(after); len(d) > 0 {
		return fmt.Errorf("the second %s changed the tree:\n%s", rerun, strings.Join(d, "\n"))
	}
	return nil
}

// checkState writes a crash state out, checks what a boot would see, reboots into it with
// bin and checks that the rerun converges. The directory is removed unless keep (and the
// state failed).
func (h *harness) checkState(fx *fixture, op string, tree *crashsim.Tree, tl *tally, bin string, keep bool) (string, error) {
	root := h.newDir("state")
	undo, err := fx.materialize(tree, root)
	if err == nil {
		err = h.bootCheck(fx, op, root, tl)
	}
	if err == nil {
		err = h.reboot(fx, op, root, bin)
	}
	if err == nil || !keep {
		undo()
		os.RemoveAll(root)
	}
	return root, err
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}
