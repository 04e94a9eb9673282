//go:build linux

package e2e

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ocktools/pkcstok-migrate/e2e/ockroot"
)

// The matrix: for each openCryptoki release our users run (Debian 13's 3.23,
// testing's 3.27, the newest upstream release) on each architecture it has here, a real token
// made by that library without tokversion (the old format, in the architecture's byte order)
// is migrated by our binary of that architecture (under qemu where foreign), by our amd64
// binary (cross-host) and by the release's own pkcstok_migrate, each on its own copy; that
// library with tokversion = 3.12 must list every object with the same proofs, a rerun changes
// nothing and rollback gives the library the old format back. The matrix of objects compared
// and equal is printed at the end (and written to $PKCSTOK_MATRIX_OUT when set).

const (
	mxSO   = "mxSO-913" // Soft and ICA PINs: 4 to 8 bytes
	mxUser = "mxUs-274"
)

// matrixRow is one producer: a release on an architecture, one token type.
type matrixRow struct {
	release string // "3.23", "3.27"
	root    ockroot.Spec
	token   string // "Soft", "ICA"
}

func (m matrixRow) name() string { return m.release + " " + m.root.Arch + " " + m.token }

var matrixRows = []matrixRow{
	{"3.23", ockroot.Trixie, "Soft"},
	{"3.23", ockroot.TrixieS390x, "Soft"},
	{"3.23", ockroot.TrixieS390x, "ICA"},
	{"3.27", ockroot.Testing, "Soft"},
	{"3.27", ockroot.TestingS390x, "Soft"},
	{"3.27", ockroot.TestingS390x, "ICA"},
	{"3.27", ockroot.TestingPPC64el, "Soft"},
	{"3.27", ockroot.TestingARM64, "Soft"},
}

// The matrix's columns.
const (
	colNative   = "ours, native binary"
	colAMD64    = "ours, amd64 binary"
	colUpstream = "upstream's own pkcstok_migrate"
)

// The upgrade paths' columns.
const (
	colIn327      = "ours, run on 3.27"
	colUp327      = "3.27's pkcstok_migrate"
	colOursThen   = "ours on 3.23, then 3.27"
	colUpThen     = "3.23's pkcstok_migrate, then 3.27"
	colReplanNote = "re-planned by ours on 3.27"
)

// report is a table of cells: objects compared by the real loader and equal, by kind, or why
// a cell has no number.
type report struct {
	mu    sync.Mutex
	title string
	first string // the first column's heading: what a row is
	cols  []string
	rows  []string
	cells map[[2]string]string
}

func newReport(title string, cols ...string) *report {
	return &report{title: title, first: "producer", cols: cols, cells: map[[2]string]string{}}
}

func (rp *report) row(name string) {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	if !slices.Contains(rp.rows, name) {
		rp.rows = append(rp.rows, name)
	}
}

// equal records that every object of l was compared and found equal.
func (rp *report) equal(row, col string, l listing) {
	c := l.counts()
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %d", k, c[k]))
	}
	rp.set(row, col, fmt.Sprintf("**%d** equal (%s)", len(l), strings.Join(parts, ", ")))
}

// set records a cell's text; a later set of the same cell adds to it.
func (rp *report) set(row, col, text string) {
	rp.row(row)
	rp.mu.Lock()
	defer rp.mu.Unlock()
	k := [2]string{row, col}
	if old := rp.cells[k]; old != "" {
		text = old + "; " + text
	}
	rp.cells[k] = text
}

// failed marks a cell whose subtest failed (unless it already says so).
func (rp *report) failed(row, col string) {
	rp.row(row)
	rp.mu.Lock()
	defer rp.mu.Unlock()
	k := [2]string{row, col}
	if !strings.Contains(rp.cells[k], "FAILED") {
		rp.cells[k] = strings.TrimPrefix(rp.cells[k]+"; FAILED (see the log)", "; ")
	}
}

func (rp *report) markdown() string {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	var b strings.Builder
	fmt.Fprintf(&b, "### %s\n\n| %s | %s |\n|---|%s\n", rp.title, rp.first, strings.Join(rp.cols, " | "), strings.Repeat("---|", len(rp.cols)))
	for _, r := range rp.rows {
		cells := make([]string, len(rp.cols))
		for i, c := range rp.cols {
			cells[i] = rp.cells[[2]string{r, c}]
			if cells[i] == "" {
				cells[i] = "EMPTY: not run (an earlier step failed?)"
			}
		}
		fmt.Fprintf(&b, "| %s | %s |\n", r, strings.Join(cells, " | "))
	}
	return b.String()
}

// empty lists the cells with no text: the test fails on any.
func (rp *report) empty() []string {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	var e []string
	for _, r := range rp.rows {
		for _, c := range rp.cols {
			if rp.cells[[2]string{r, c}] == "" {
				e = append(e, r+" × "+c)
			}
		}
	}
	return e
}

// track runs f as subtest name and marks the cell failed if it fails.
func (rp *report) track(t *testing.T, row, col, name string, f func(t *testing.T)) {
	rp.row(row)
	if !t.Run(name, f) {
		rp.failed(row, col)
	}
}

func TestMatrix(t *testing.T) {
	specs := []ockroot.Spec{ockroot.Bookworm}
	for _, r := range matrixRows {
		if !slices.Contains(specs, r.root) {
			specs = append(specs, r.root)
		}
	}
	gateRoots(t, specs...)
	start := time.Now()
	mx := newReport("Objects compared by the producer's own library with tokversion = 3.12, and equal", colNative, colAMD64, colUpstream)
	up := newReport("Upgrade paths, loaded by 3.27 (amd64)", colIn327, colUp327, colOursThen, colUpThen, colReplanNote)
	dir := t.TempDir()
	made := map[string]*madeToken{}
	for i, row := range matrixRows {
		t.Run(strings.ReplaceAll(row.name(), " ", "-"), func(t *testing.T) {
			mx.row(row.name())
			mt := makeMatrixToken(t, row, i, dir)
			made[row.name()] = mt
			matrixOne(t, mx, row, mt)
		})
	}
	t.Run("upgrade", func(t *testing.T) { upgradePaths(t, up, made["3.23 amd64 Soft"], dir) })

	out := mx.markdown() + "\n" + up.markdown()
	t.Logf("the matrix (%v):\n%s", time.Since(start).Round(time.Second), out)
	if p := os.Getenv("PKCSTOK_MATRIX_OUT"); p != "" {
		hdr := fmt.Sprintf("<!-- written by TestMatrix (make e2e-matrix) on %s in %v -->\n\n", time.Now().UTC().Format(time.RFC3339), time.Since(start).Round(time.Second))
		if err := os.WriteFile(p, []byte(hdr+out), 0o644); err != nil {
			t.Error(err)
		}
	}
	if e := append(mx.empty(), up.empty()...); len(e) > 0 {
		t.Errorf("cells without a number or a reason: %s", strings.Join(e, "; "))
	}
}

// makeMatrixToken makes row's token: data (public and private), AES, RSA-2048, EC P-256
// (generated; not on ICA: EC key generation fails on the ICA token under qemu) and a
// certificate.
func makeMatrixToken(t *testing.T, row matrixRow, i int, dir string) *madeToken {
	ts := tokenSpec{producer: row.name(), root: row.root, confVer: row.release, slot: 3, stdll: "libpkcs11_sw.so",
		tokname: fmt.Sprintf("mx%d%s", i, strings.ToLower(row.token)), label: "mx-" + row.root.Arch + "-" + strings.ToLower(row.token),
		so: mxSO, user: mxUser, ecGen: true}
	if row.token == "ICA" {
		ts.slot, ts.stdll, ts.ecGen, ts.noEC = 1, "libpkcs11_ica.so", false, true
	}
	mt := makeToken(t, ts, dir)
	if !strings.Contains(mt.library, "(ver "+row.release) {
		t.Fatalf("%s: pkcs11-tool --show-info says the library is %q, want openCryptoki %s", row.name(), mt.library, row.release)
	}
	return mt
}

// matrixOne: our native binary, our amd64 binary (when the native one is not amd64) and the
// release's own pkcstok_migrate on copies of mt.
func matrixOne(t *testing.T, mx *report, row matrixRow, mt *madeToken) {
	spec := row.root
	slot := mt.slot
	conf0 := mt.conf
	confPath := "/etc/opencryptoki/opencryptoki.conf"
	req := cliRequest{Slot: &slot, Datastore: mt.ds(), Confdir: "/etc/opencryptoki", SOPIN: mt.so, UserPIN: mt.user}
	order := "little-endian"
	if spec.BigEndian() {
		order = "big-endian"
	}
	keep := t.TempDir()            // outlives the subtests
	results := map[string]string{} // migrator -> host copy of its migrated repository
	var views []listing

	arches := []string{spec.GoArch()}
	if spec.GoArch() != "amd64" {
		arches = append(arches, "amd64")
	} else {
		mx.set(row.name(), colAMD64, "= native (the host is amd64)")
	}
	for _, goarch := range arches {
		col := colNative
		if goarch == "amd64" && spec.GoArch() != "amd64" {
			col = colAMD64
		}
		migrator := "ours (" + goarch + ")"
		mx.track(t, row.name(), col, "ours-"+goarch, func(t *testing.T) {
			r := openRoot(t, spec)
			placeToken(t, r, mt, conf0)
			origTree := mustSnapshot(t, r.Path(mt.ds()), false)
			tl := installTool(t, r, goarch, mt.so, mt.user)

			res := tl.run(t, "plan", req, "--json")
			if res.code != 2 {
				t.Fatalf("plan: want exit 2\n%s", res)
			}
			p := decodeOut[cliPlan](t, res)
			if p.ByteOrder != order || p.Format != "old" || p.TokenType != row.token || !p.PINsChecked || len(p.Objects) != len(mt.before) {
				t.Errorf("plan: byte_order %q format %q token_type %q pins_checked %v objects %d; want %s old %s true %d",
					p.ByteOrder, p.Format, p.TokenType, p.PINsChecked, len(p.Objects), order, row.token, len(mt.before))
			}
			hostWarn := slices.ContainsFunc(p.Warnings, func(w string) bool { return strings.Contains(strings.ToLower(w), "big-endian") })
			if goarch == "amd64" && spec.BigEndian() && !hostWarn {
				t.Errorf("plan by the amd64 binary on a big-endian repository: no warning about the byte order: %q", p.Warnings)
			}
			t.Logf("plan --json: format %s, byte_order %s, warnings %q", p.Format, p.ByteOrder, p.Warnings)

			res = tl.run(t, "apply", req)
			if res.code != 0 {
				t.Fatalf("apply: want exit 0\n%s", res)
			}
			ar := decodeOut[cliResult](t, res)
			if !ar.Changed || !ar.Verified || ar.ObjectsMigrated != len(mt.before) {
				t.Errorf("apply: changed %v verified %v objects_migrated %d, want true true %d", ar.Changed, ar.Verified, ar.ObjectsMigrated, len(mt.before))
			}
			res = tl.run(t, "apply", req)
			if res.code != 0 || decodeOut[cliResult](t, res).Changed {
				t.Errorf("second apply: want exit 0 and changed false\n%s", res)
			}
			newConf, err := os.ReadFile(r.Path(confPath))
			if err != nil {
				t.Fatal(err)
			}
			if minus, plus := lineDiff(conf0, newConf); len(minus) != 0 || len(plus) != 1 {
				t.Errorf("conf diff: want one added line, got -%q +%q", minus, plus)
			}
			after := loadView(t, r, slot, mt.user)
			if mustMatch(t, row.name()+" with tokversion = 3.12 on "+migrator+"'s result", mt.producer, migrator, mt.before, after) {
				mx.equal(row.name(), col, after)
			}
			views = append(views, after)
			saved := filepath.Join(keep, goarch)
			if err := copyRepo(r.Path(mt.ds()), saved); err != nil {
				t.Fatal(err)
			}
			results[migrator] = saved

			res = tl.run(t, "rollback", cliRequest{Slot: &slot, Datastore: mt.ds(), Confdir: "/etc/opencryptoki"})
			if res.code != 0 {
				t.Fatalf("rollback: want exit 0\n%s", res)
			}
			if d := diff(origTree, mustSnapshot(t, r.Path(mt.ds()), false), false); len(d) > 0 {
				t.Errorf("after rollback the repository is not the original:\n  %s", strings.Join(d, "\n  "))
			}
			if b, err := os.ReadFile(r.Path(confPath)); err != nil || !bytes.Equal(b, conf0) {
				t.Errorf("after rollback the conf is not the original (%v)", err)
			}
			back := loadView(t, r, slot, mt.user)
			if mustMatch(t, row.name()+" without tokversion after rollback", mt.producer, "", mt.before, back) {
				mx.set(row.name(), col, "rerun changed: false, rollback: old format seen again")
			}
		})
	}

	// Under qemu-user the daemon's argv[0] and comm are qemu's (e2e/README.md): the tool must
	// still see it.
	for _, goarch := range arches {
		col := colNative
		if goarch == "amd64" && spec.GoArch() != "amd64" {
			col = colAMD64
		}
		mx.track(t, row.name(), col, "daemon-running-"+goarch, func(t *testing.T) { daemonCheck(t, mt, goarch) })
	}

	mx.track(t, row.name(), colUpstream, "upstream", func(t *testing.T) {
		r := openRoot(t, spec)
		placeToken(t, r, mt, conf0)
		res := runUpstream(t, r, slot, mt.ds(), mt.so, mt.user)
		if res.Code != 0 || !bytes.Contains(res.Stdout, []byte("Migrated "+itoa(len(mt.before))+" object(s)")) {
			t.Fatalf("upstream %s pkcstok_migrate:\n%s", row.name(), res)
		}
		after := loadView(t, r, slot, mt.user)
		if mustMatch(t, row.name()+" with tokversion = 3.12 on upstream's result", mt.producer, "upstream pkcstok_migrate", mt.before, after) {
			mx.equal(row.name(), colUpstream, after)
		}
		for i, v := range views {
			if d, _ := compareViews(v, after, upgMsg); len(d) > 0 {
				t.Errorf("ours (%d) and upstream's results load differently:\n  %s", i, strings.Join(d, "\n  "))
			}
		}
		// The same files of the same sizes: each object keeps its name, and a 3.12 file's size
		// follows from its clear bytes alone (doc/format.md §5.3, §5.4).
		upSizes := sizes(t, r.Path(mt.ds()))
		for m, dir := range results {
			if d := compareSizes(upSizes, sizes(t, dir)); len(d) > 0 {
				t.Errorf("%s's files differ from upstream's in name or size:\n  %s", m, strings.Join(d, "\n  "))
			}
		}
		if len(results) > 0 {
			mx.set(row.name(), colUpstream, "same files and sizes as ours")
		}
	})
}

// upgradePaths: the upgrades users take, each loaded by the target library 3.27 (amd64):
// Debian 12's 3.8.1 straight to testing; a 3.23-made old-format token migrated after the
// upgrade (ours, 3.27's tool) or before it (ours, 3.23's tool), then opened by 3.27 and
// re-planned by ours as changed: false.
func upgradePaths(t *testing.T, up *report, made323 *madeToken, dir string) {
	const row381, row323 = "3.8.1 amd64 Soft (Debian 12) → 3.27", "3.23 amd64 Soft (Debian 13) → 3.27"
	up.row(row381)
	up.row(row323)
	// 3.8.1 has no 3.12 format: there is nothing to migrate before the upgrade.
	up.set(row381, colOursThen, "n/a: 3.8.1 reads and writes only the old format")
	up.set(row381, colUpThen, "n/a: 3.8.1 has no pkcstok_migrate")

	var mt381 *madeToken
	if !t.Run("make-3.8.1", func(t *testing.T) {
		mt381 = makeToken(t, tokenSpec{producer: "3.8.1", root: ockroot.Bookworm, confVer: "3.1", slot: upgSlot, stdll: "libpkcs11_sw.so",
			tokname: "up381", label: "up-381", so: upgSO, user: upgUser}, dir)
	}) {
		up.failed(row381, colIn327)
		up.failed(row381, colUp327)
		up.failed(row381, colReplanNote)
	}
	if made323 == nil {
		t.Errorf("no 3.23 amd64 token from the matrix: its row failed")
		for _, c := range []string{colIn327, colUp327, colOursThen, colUpThen, colReplanNote} {
			up.failed(row323, c)
		}
	}
	for _, x := range []struct {
		row string
		mt  *madeToken
	}{{row381, mt381}, {row323, made323}} {
		if x.mt == nil {
			continue
		}
		mt := x.mt
		up.track(t, x.row, colIn327, "ours-on-3.27-"+mt.tokname, func(t *testing.T) {
			after := migrateIn(t, ockroot.Testing, mt, false)
			if mustMatch(t, "3.27 on our result ("+x.row+")", mt.producer, "ours (amd64) on 3.27", mt.before, after.view) {
				up.equal(x.row, colIn327, after.view)
			}
			replan(t, up, x.row, colIn327, after)
		})
		up.track(t, x.row, colUp327, "upstream-3.27-"+mt.tokname, func(t *testing.T) {
			after := migrateIn(t, ockroot.Testing, mt, true)
			if mustMatch(t, "3.27 on 3.27's pkcstok_migrate's result ("+x.row+")", mt.producer, "upstream 3.27 pkcstok_migrate", mt.before, after.view) {
				up.equal(x.row, colUp327, after.view)
			}
			replan(t, up, x.row, colUp327, after)
		})
	}
	if made323 == nil {
		return
	}
	mt := made323
	for _, x := range []struct {
		col      string
		upstream bool
	}{{colOursThen, false}, {colUpThen, true}} {
		up.track(t, row323, x.col, strings.ReplaceAll(x.col, " ", "-"), func(t *testing.T) {
			// Migrated on 3.23 (the conf too), then the library is upgraded: the repository and
			// the conf stay, 3.27 opens them.
			done := migrateIn(t, ockroot.Trixie, mt, x.upstream)
			r := openRoot(t, ockroot.Testing)
			placeToken(t, r, &madeToken{tokenSpec: mt.tokenSpec, saved: done.repo}, done.conf)
			view := loadView(t, r, mt.slot, mt.user)
			if mustMatch(t, "3.27 on a token migrated on 3.23 ("+x.col+")", mt.producer, x.col, mt.before, view) {
				up.equal(row323, x.col, view)
			}
			replan(t, up, row323, x.col, migrated{root: r, mt: mt, view: view})
		})
	}
}

// migrated is a token migrated in a session of a root.
type migrated struct {
	root *ockroot.Root
	mt   *madeToken
	view listing // what the root's library lists with tokversion = 3.12
	repo string  // host copy of the migrated repository
	conf []byte  // the conf after migration
}

// migrateIn places mt (no tokversion) in a session of spec, plans it with ours (format old,
// little-endian), migrates it with ours or with the root's pkcstok_migrate and has the root's
// library list it.
func migrateIn(t *testing.T, spec ockroot.Spec, mt *madeToken, upstream bool) migrated {
	t.Helper()
	r := openRoot(t, spec)
	ver, _, _ := strings.Cut(r.Version(), "+") // 3.23.0+dfsg-0.3+deb13u1
	ver, _, _ = strings.Cut(ver, "-")          // 3.27.0-1
	conf0 := slotConf(ver, mt.slot, mt.stdll, mt.tokname, "")
	placeToken(t, r, mt, conf0)
	slot := mt.slot
	req := cliRequest{Slot: &slot, Datastore: mt.ds(), Confdir: "/etc/opencryptoki", SOPIN: mt.so, UserPIN: mt.user}
	tl := installTool(t, r, "amd64", mt.so, mt.user)
	res := tl.run(t, "plan", req, "--json")
	p := decodeOut[cliPlan](t, res)
	t.Logf("plan --json before migration in %s: exit %d, format %s, byte_order %s, objects %d", r.Name(), res.code, p.Format, p.ByteOrder, len(p.Objects))
	if res.code != 2 || p.Format != "old" || p.ByteOrder != "little-endian" || len(p.Objects) != len(mt.before) {
		t.Fatalf("plan before migration: want exit 2, old, little-endian, %d objects\n%s", len(mt.before), res)
	}
	if upstream {
		ur := runUpstream(t, r, slot, mt.ds(), mt.so, mt.user)
		if ur.Code != 0 || !bytes.Contains(ur.Stdout, []byte("Migrated "+itoa(len(mt.before))+" object(s)")) {
			t.Fatalf("upstream pkcstok_migrate in %s:\n%s", r.Name(), ur)
		}
	} else {
		res = tl.run(t, "apply", req)
		if res.code != 0 || !decodeOut[cliResult](t, res).Changed {
			t.Fatalf("apply in %s: want exit 0 and changed\n%s", r.Name(), res)
		}
	}
	conf, err := os.ReadFile(r.Path("/etc/opencryptoki/opencryptoki.conf"))
	if err != nil {
		t.Fatal(err)
	}
	repo := filepath.Join(t.TempDir(), "repo")
	if err := copyRepo(r.Path(mt.ds()), repo); err != nil {
		t.Fatal(err)
	}
	return migrated{root: r, mt: mt, view: loadView(t, r, slot, mt.user), repo: repo, conf: conf}
}

// replan: ours plans the migrated repository in m's session: exit 0, changed false, format
// 3.12, little-endian.
func replan(t *testing.T, up *report, row, col string, m migrated) {
	t.Helper()
	slot := m.mt.slot
	tl := installTool(t, m.root, "amd64", m.mt.so, m.mt.user)
	res := tl.run(t, "plan", cliRequest{Slot: &slot, Datastore: m.mt.ds(), Confdir: "/etc/opencryptoki", SOPIN: m.mt.so, UserPIN: m.mt.user}, "--json")
	p := decodeOut[cliPlan](t, res)
	t.Logf("plan --json on the migrated repository in %s: exit %d, changed %v, format %s, byte_order %s", m.root.Name(), res.code, p.Changed, p.Format, p.ByteOrder)
	if res.code != 0 || p.Changed || p.Format != "3.12" || p.ByteOrder != "little-endian" {
		t.Errorf("plan on the migrated repository in %s: want exit 0, changed false, format 3.12, little-endian\n%s", m.root.Name(), res)
		return
	}
	up.set(row, colReplanNote, col+": changed false (3.12, little-endian)")
}

// sizes maps every file of a repository to its size.
func sizes(t *testing.T, dir string) map[string]int64 {
	t.Helper()
	tr, err := snapshot(dir, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]int64{}
	for p, e := range tr {
		if e.Mode.IsRegular() {
			m[p] = e.Size
		}
	}
	return m
}

func compareSizes(want, got map[string]int64) []string {
	var d []string
	for p, n := range want {
		if g, ok := got[p]; !ok {
			d = append(d, "missing "+p)
		} else if g != n {
			d = append(d, p+": "+itoa(int(g))+" bytes, upstream "+itoa(int(n)))
		}
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			d = append(d, "extra "+p)
		}
	}
	slices.Sort(d)
	return d
}
