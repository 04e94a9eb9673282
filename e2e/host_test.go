//go:build linux

package e2e

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ocktools/pkcstok-migrate/e2e/ockroot"
	"github.com/ocktools/pkcstok-migrate/internal/repofs"
	"github.com/ocktools/pkcstok-migrate/tokens"
)

// A lab host: four slots of four token types (ICA, CCA, Soft, EP11) in one opencryptoki.conf,
// each with its own repository, label, PINs and objects, planned, migrated and rolled back by
// our tool as one host (a request with "slots") and slot by slot, in the testing root (the real
// openCryptoki 3.27). Every step is judged twice: by our tool's output and our reader (tokens,
// repofs) on the host's files, and by the real 3.27 library opening copies of them.
//
// Only the Soft token library works here: the ICA and EP11 libraries ship on s390x only, and
// the CCA library has no CCA host library or adapter (the probe says what the slots hold, in
// the log and the table). Each token is
// made by the real 3.27 Soft library in swtok and then moved to its type's directory (lite,
// ccatok, ep11tok); the host's conf names each type's real stdll. The real library opens the
// host through a stand-in of that conf: each slot has the Soft library with tokname = its
// directory and the tokversion the host's conf has for it (doc/format.md §10: the repository
// format is the same for the four types).

// labSlot is one slot of the lab host.
type labSlot struct {
	slot     int
	typ      string // the tool's token_type
	stdll    string
	confname string // the type's own conf, as the package's opencryptoki.conf names it
	dir      string // the type's directory under /var/lib/opencryptoki
	label    string
	so, user string // 4 to 8 bytes, different for every slot
}

func (s labSlot) ds() string { return "/var/lib/opencryptoki/" + s.dir }

var labSlots = []labSlot{
	{1, "ICA", "libpkcs11_ica.so", "", "lite", "lab-ica", "icaSO-11", "icaUs-12"},
	{2, "CCA", "libpkcs11_cca.so", "ccatok.conf", "ccatok", "lab-cca", "ccaSO-21", "ccaUs-22"},
	{3, "Soft", "libpkcs11_sw.so", "", "swtok", "lab-soft", "swSO-31!", "swUs-32!"},
	{4, "EP11", "libpkcs11_ep11.so", "ep11tok.conf", "ep11tok", "lab-ep11", "epSO-41#", "epUs-42#"},
}

const labProducer = "3.27 lab host (Soft library)"

// The table's columns.
const (
	colOurs = "our tool and reader"
	colReal = "real openCryptoki 3.27"
	colTime = "time"
)

// The host request and results as the suite reads them (only the documented fields).
type cliSlot struct {
	Slot    int    `json:"slot"`
	SOPIN   string `json:"so_pin,omitempty"`
	UserPIN string `json:"user_pin,omitempty"`
}

type cliHostRequest struct {
	Confdir string    `json:"confdir"`
	Slots   []cliSlot `json:"slots"`
}

type cliHostPlan struct {
	Changed  bool      `json:"changed"`
	Conf     string    `json:"conf"`
	ConfDiff string    `json:"conf_diff"`
	Plans    []cliPlan `json:"plans"`
}

type cliSlotOutcome struct {
	Slot    int        `json:"slot"`
	Outcome string     `json:"outcome"`
	Result  *cliResult `json:"result"`
	Error   *struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

type cliHostResult struct {
	Changed     bool             `json:"changed"`
	Operation   string           `json:"operation"`
	ConfChanged bool             `json:"conf_changed"`
	Slots       []cliSlotOutcome `json:"slots"`
}

// labToken is a slot's token as its producer made and showed it.
type labToken struct {
	labSlot
	saved  string  // host copy of the repository as made
	before listing // what the real library showed right after making it
}

// labHost is the host under test: a session of the testing root with the four repositories at
// their types' directories and the host's conf.
type labHost struct {
	h        *ockroot.Root
	tl       rootTool
	tokens   []*labToken
	conf0    []byte
	orig     map[int]*readRepo // our reader on each original
	origTree map[int]tree      // each original repository
	origHash map[int]string    // its treeHash
	rp       *report
	notes    []string
}

func TestLabHostOfFourTokenTypesMigratesAsOneAndRollsBackPerSlot(t *testing.T) {
	gateRoots(t, ockroot.Testing)
	start := time.Now()
	rp := newReport("A lab host of four token types (slots 1 ICA, 2 CCA, 3 Soft, 4 EP11), each with its own PINs, on the real openCryptoki 3.27", colOurs, colReal, colTime)
	rp.first = "step"
	lh := &labHost{rp: rp, orig: map[int]*readRepo{}, origTree: map[int]tree{}, origHash: map[int]string{}}

	lh.notes = append(lh.notes, probeHardwareTokens(t))
	dir := t.TempDir()
	for _, s := range labSlots {
		lh.tokens = append(lh.tokens, makeLabToken(t, s, dir))
	}
	lh.place(t)

	steps := []struct {
		id, name string
		f        func(t *testing.T) (ours, real string)
	}{
		{"made", "0. the host as made: four old-format tokens at lite, ccatok, swtok, ep11tok", lh.asMade},
		{"plan", "1. plan of the four slots in one run", lh.plan},
		{"wrong-pin", "2. apply with a wrong PIN for slot 4 (slot 3's user PIN), before any migration", lh.wrongPIN},
		{"apply", "3. apply of the host: four slots in one run", lh.applyHost},
		{"rerun", "4. apply again", lh.rerun},
		{"rollback-slot-2", "5. rollback --slot 2 (CCA) alone", lh.rollbackOne},
		{"rollback-host", "6. rollback of the host with apply's request", lh.rollbackHost},
		{"one-by-one", "7. single-slot applies in sequence: 3, 1, 4, 2", lh.oneByOne},
	}
	for _, st := range steps {
		rp.row(st.name)
		ok := t.Run(st.id, func(t *testing.T) {
			t0 := time.Now()
			ours, real := st.f(t)
			rp.set(st.name, colTime, time.Since(t0).Round(100*time.Millisecond).String())
			if !t.Failed() {
				rp.set(st.name, colOurs, ours)
				rp.set(st.name, colReal, real)
			}
		})
		if !ok {
			rp.failed(st.name, colOurs)
			rp.failed(st.name, colReal)
			break // every later step builds on this one
		}
	}

	total := time.Since(start).Round(time.Second)
	out := rp.markdown() + "\n" + strings.Join(lh.notes, "\n") + "\n"
	t.Logf("the lab host (%v):\n%s", total, out)
	if p := os.Getenv("PKCSTOK_HOST_OUT"); p != "" {
		hdr := fmt.Sprintf("<!-- written by TestLabHostOfFourTokenTypesMigratesAsOneAndRollsBackPerSlot (make e2e) on %s in %v -->\n\n", time.Now().UTC().Format(time.RFC3339), total)
		if err := os.WriteFile(p, []byte(hdr+out), 0o644); err != nil {
			t.Error(err)
		}
	}
	if e := rp.empty(); len(e) > 0 {
		t.Errorf("cells without a result: %s", strings.Join(e, "; "))
	}
}

// ---------------------------------------------------------------------------------------
// The host

// labConf is the host's conf: every slot with its type's stdll (and confname), or, standIn,
// with the Soft library and tokname = its directory; tv gives slots a tokversion.
func labConf(standIn bool, tv map[int]string) []byte {
	var b strings.Builder
	b.WriteString("version opencryptoki-3.27\n")
	for _, s := range labSlots {
		fmt.Fprintf(&b, "\nslot %d\n{\n", s.slot)
		switch {
		case !standIn:
			fmt.Fprintf(&b, "    stdll = %s\n", s.stdll)
			if s.confname != "" {
				fmt.Fprintf(&b, "    confname = %s\n", s.confname)
			}
		case s.typ == "Soft":
			fmt.Fprintf(&b, "    stdll = libpkcs11_sw.so\n")
		default:
			fmt.Fprintf(&b, "    stdll = libpkcs11_sw.so\n    tokname = %s\n", s.dir)
		}
		if v := tv[s.slot]; v != "" {
			fmt.Fprintf(&b, "    tokversion = %s\n", v)
		}
		b.WriteString("}\n")
	}
	return []byte(b.String())
}

// standInConf turns the host's conf, as our tool left it, into the one the real library opens
// the host with here: each ICA, CCA and EP11 slot gets the Soft library and tokname = its
// type's directory, and no confname; every other line (each tokversion above all) stays.
func standInConf(t *testing.T, conf []byte) []byte {
	t.Helper()
	byStdll := map[string]labSlot{}
	for _, s := range labSlots {
		byStdll[s.stdll] = s
	}
	var out []string
	for _, line := range strings.Split(string(conf), "\n") {
		k, v, ok := strings.Cut(line, "=")
		switch strings.TrimSpace(k) {
		case "confname":
			if ok {
				continue
			}
		case "stdll":
			s, known := byStdll[strings.TrimSpace(v)]
			if !ok || !known {
				t.Fatalf("the host's conf has an stdll this suite did not write: %q", line)
			}
			if s.typ != "Soft" {
				indent := line[:len(line)-len(strings.TrimLeft(line, " \t"))]
				out = append(out, indent+"stdll = libpkcs11_sw.so", indent+"tokname = "+s.dir)
				continue
			}
		}
		out = append(out, line)
	}
	return []byte(strings.Join(out, "\n"))
}

// confTokversions is each slot's tokversion in conf ("" when it has none).
func confTokversions(conf []byte) map[int]string {
	m := map[int]string{}
	cur := -1
	for _, line := range strings.Split(string(conf), "\n") {
		line, _, _ = strings.Cut(line, "#")
		if f := strings.Fields(line); len(f) == 2 && f[0] == "slot" {
			if n, err := strconv.Atoi(f[1]); err == nil {
				cur, m[n] = n, ""
			}
			continue
		}
		if k, v, ok := strings.Cut(line, "="); ok && strings.TrimSpace(k) == "tokversion" && cur >= 0 {
			m[cur] = strings.Trim(strings.TrimSpace(v), `"`)
		}
	}
	return m
}

// want312 is the tokversion map with the given slots at 3.12.
func want312(slots ...int) map[int]string {
	m := map[int]string{}
	for _, s := range labSlots {
		m[s.slot] = ""
	}
	for _, s := range slots {
		m[s] = "3.12"
	}
	return m
}

func tvString(m map[int]string) string {
	var on, off []string
	for _, s := range labSlots {
		if m[s.slot] == "3.12" {
			on = append(on, itoa(s.slot))
		} else {
			off = append(off, itoa(s.slot))
		}
	}
	switch {
	case len(off) == 0:
		return "tokversion = 3.12 for all four slots"
	case len(on) == 0:
		return "no tokversion in any slot"
	}
	return "tokversion = 3.12 for slots " + strings.Join(on, ", ") + ", none for slot " + strings.Join(off, ", ")
}

// probeHardwareTokens asks the real 3.27, with the host's conf, what the ICA, CCA and EP11
// slots hold here; the answer says why the suite uses Soft-made stand-ins.
func probeHardwareTokens(t *testing.T) string {
	t.Helper()
	r := openRoot(t, ockroot.Testing)
	defer r.Close()
	if err := r.WriteConf(labConf(false, nil)); err != nil {
		t.Fatal(err)
	}
	stop := startSlotd(t, r)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := r.Run(ctx, nil, false, "/usr/bin/pkcs11-tool", "--module", r.Module(), "--list-slots")
	stop()
	if err != nil || res.Code != 0 {
		t.Fatalf("pkcs11-tool --list-slots with the host's conf: %v\n%s", err, res)
	}
	present := slotsWithToken(res.Stdout)
	var parts []string
	for _, s := range labSlots {
		if s.typ == "Soft" {
			continue
		}
		lib := "/usr/lib/" + r.Triplet() + "/opencryptoki/stdll/" + s.stdll
		inst := "installed"
		if _, err := os.Stat(r.Path(lib)); err != nil {
			inst = "not in the package here"
		}
		tok := "no token present"
		if present[s.slot] {
			tok = "a token present (the suite still uses its stand-in)"
		}
		parts = append(parts, fmt.Sprintf("slot %d %s: %s %s, %s", s.slot, s.typ, s.stdll, inst, tok))
	}
	t.Logf("pkcs11-tool --list-slots with the host's conf:\n%s", res.Stdout)
	return "Probe of the real libraries here (the host's conf, pkcs11-tool --list-slots): " + strings.Join(parts, "; ") +
		". Each token is therefore made by the real 3.27 Soft library in swtok and moved to its type's directory; the real library opens the host through the stand-in conf (Soft library, tokname = the directory, the host's tokversion lines)."
}

// slotsWithToken reads pkcs11-tool --list-slots: the slot IDs (the hex in "Slot 0 (0x1): ...")
// whose next line is not "(empty)".
func slotsWithToken(out []byte) map[int]bool {
	m := map[int]bool{}
	re := regexp.MustCompile(`^Slot \d+ \(0x([0-9a-fA-F]+)\)`)
	lines := strings.Split(string(out), "\n")
	for i, l := range lines {
		mm := re.FindStringSubmatch(l)
		if mm == nil {
			continue
		}
		id, _ := strconv.ParseInt(mm[1], 16, 32)
		m[int(id)] = i+1 < len(lines) && strings.TrimSpace(lines[i+1]) != "(empty)"
	}
	return m
}

// makeLabToken makes s's token with the real 3.27 Soft library in swtok of a fresh session,
// with its own label, PINs and objects, shows them, and keeps the repository.
func makeLabToken(t *testing.T, s labSlot, dir string) *labToken {
	t.Helper()
	t0 := time.Now()
	r := openRoot(t, ockroot.Testing)
	defer r.Close()
	// swtok as the package leaves it (the cached root has it, empty, with TOK_OBJ): without a
	// tokname the library neither makes it nor lists the slot when it is missing.
	const swtok = "/var/lib/opencryptoki/swtok"
	if err := r.WriteConf(slotConf("3.27", s.slot, "libpkcs11_sw.so", "", "")); err != nil {
		t.Fatal(err)
	}
	stop := startSlotd(t, r)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := r.InitToken(ctx, s.slot, s.label, s.so, s.user); err != nil {
		t.Fatal(err)
	}
	v := viewer{r: r, slot: s.slot, pin: s.user, msg: upgMsg}
	createLabObjects(t, v, s)
	before := v.observe(t)
	lib := libraryLine(v.tool(t, false, "--show-info"))
	stop()
	if !strings.Contains(lib, "(ver 3.27") {
		t.Fatalf("pkcs11-tool --show-info says the library is %q, want openCryptoki 3.27", lib)
	}
	saved := filepath.Join(dir, s.dir)
	if err := copyRepo(r.Path(swtok), saved); err != nil {
		t.Fatal(err)
	}
	before.logTo(t, fmt.Sprintf("slot %d (%s stand-in, label %s) made by %s in swtok", s.slot, s.typ, s.label, lib))
	t.Logf("slot %d token made and observed in %v", s.slot, time.Since(t0).Round(time.Millisecond))
	return &labToken{labSlot: s, saved: saved, before: before}
}

// createLabObjects: public and private data, AES-128, RSA-2048, EC P-256 and a certificate,
// labelled and valued by the slot's type, so that no slot's objects pass for another's.
func createLabObjects(t *testing.T, v viewer, s labSlot) {
	t.Helper()
	sc, err := v.r.NewScratch()
	if err != nil {
		t.Fatal(err)
	}
	file := func(b []byte) string {
		p, err := sc.File(b)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	p := strings.ToLower(s.typ)
	id := func(first byte) string { return fmt.Sprintf("%02x%02x", first, s.slot) }
	v.tool(t, true, "--write-object", file([]byte("lab host "+s.typ+" public data \x00\x01\x7f\xfe")), "--type", "data", "--label", p+"-pub")
	v.tool(t, true, "--write-object", file([]byte("lab host "+s.typ+" PRIVATE data \x10\x00\xaa")), "--type", "data", "--label", p+"-priv", "--private")
	v.tool(t, true, "--keygen", "--key-type", "AES:16", "--label", p+"-aes", "--id", id(0x0a))
	v.tool(t, true, "--keypairgen", "--key-type", "rsa:2048", "--label", p+"-rsa", "--id", id(0x01))
	v.tool(t, true, "--keypairgen", "--key-type", "EC:prime256v1", "--label", p+"-ec", "--id", id(0x03))
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "pkcstok-migrate lab host " + s.typ},
		NotBefore:    time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
	}
	cert, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	v.tool(t, true, "--write-object", file(cert), "--type", "cert", "--label", p+"-cert", "--id", id(0x05))
}

// place puts the four repositories at their types' directories of a fresh session with the
// host's conf (no tokversion), and installs our tool there.
func (lh *labHost) place(t *testing.T) {
	t.Helper()
	lh.h = openRoot(t, ockroot.Testing)
	var pins []string
	for _, tk := range lh.tokens {
		// The cached root has these directories (empty): ours replace them.
		if err := os.RemoveAll(lh.h.Path(tk.ds())); err != nil {
			t.Fatal(err)
		}
		if err := copyRepo(tk.saved, lh.h.Path(tk.ds())); err != nil {
			t.Fatal(err)
		}
		pins = append(pins, tk.so, tk.user)
	}
	lh.conf0 = labConf(false, nil)
	if err := lh.h.WriteConf(lh.conf0); err != nil {
		t.Fatal(err)
	}
	lh.tl = installTool(t, lh.h, "amd64", pins...)
	lh.tl.label = "pkcstok-migrate"
}

func (lh *labHost) request(wrong map[int]string) cliHostRequest {
	req := cliHostRequest{Confdir: "/etc/opencryptoki"}
	for _, tk := range lh.tokens {
		user := tk.user
		if w, ok := wrong[tk.slot]; ok {
			user = w
		}
		req.Slots = append(req.Slots, cliSlot{Slot: tk.slot, SOPIN: tk.so, UserPIN: user})
	}
	return req
}

func (lh *labHost) token(slot int) *labToken {
	for _, tk := range lh.tokens {
		if tk.slot == slot {
			return tk
		}
	}
	panic("no slot " + itoa(slot))
}

func (lh *labHost) conf(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile(lh.h.Path(confPath))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// ---------------------------------------------------------------------------------------
// What the host's files are: trees, hashes, leftovers

// stateTrees is the state directory and the conf directory, with file contents and times.
func (lh *labHost) stateTrees(t *testing.T) (state, conf tree) {
	t.Helper()
	s, err := snapshot(lh.h.Path("/var/lib/opencryptoki"), false, nil)
	if err != nil {
		t.Fatal(err)
	}
	c, err := snapshot(lh.h.Path("/etc/opencryptoki"), false, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s, c
}

// treeHash is a short hash of a tree: every path with its mode, owner, group, size, content,
// link target and (files) modification time.
func treeHash(tr tree) string {
	paths := make([]string, 0, len(tr))
	for p := range tr {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	h := sha256.New()
	for _, p := range paths {
		e := tr[p]
		fmt.Fprintf(h, "%s\x00%v %d %d %d %s %s %d\n", p, e.Mode, e.UID, e.GID, e.Size, e.SHA256, e.Link, e.MTime)
	}
	return hex.EncodeToString(h.Sum(nil))[:12]
}

// leftovers lists entries of the state and conf trees that a run under way or a failed one
// leaves: working copies, journals, the conf kept during a run, discards.
func leftovers(state, conf tree) []string {
	var l []string
	for _, tr := range []tree{state, conf} {
		for p := range tr {
			if strings.Contains(p, "PKCSTOK_MIGRATE") {
				l = append(l, p)
			}
		}
	}
	sort.Strings(l)
	return l
}

// topNames is the names directly in a tree's root.
func topNames(tr tree) []string {
	var n []string
	for p := range tr {
		if p != "." && !strings.Contains(p, "/") {
			n = append(n, p)
		}
	}
	sort.Strings(n)
	return n
}

// subtree is the part of tr below dir, relative to it (as snapshot(dir) would give it).
func subtree(tr tree, dir string) tree {
	out := tree{}
	for p, e := range tr {
		switch {
		case p == dir:
			out["."] = e
		case strings.HasPrefix(p, dir+"/"):
			out[strings.TrimPrefix(p, dir+"/")] = e
		}
	}
	return out
}

// ---------------------------------------------------------------------------------------
// Our reader on the host

// kindKey is the listing key (kind/key type/label/ID) of an object our reader decoded.
func (o readObj) kindKey() string {
	kt := ""
	if o.KeyType != nil {
		kt = keyTypeName[int(*o.KeyType)]
		if kt == "" {
			kt = fmt.Sprintf("0x%x", *o.KeyType)
		}
	}
	return kindOfClass[int(o.Class)] + "/" + kt + "/" + o.Label + "/" + hex.EncodeToString(o.ID)
}

// ours reads every slot's repository with our reader: the format each must have (by
// tokversion map: "3.12" or old), every object the producer listed with its private flag,
// and, against the originals, the same OBJ.IDX and the same clear bytes of every object.
func (lh *labHost) ours(t *testing.T, want map[int]string) string {
	t.Helper()
	var parts []string
	for _, tk := range lh.tokens {
		rr := readRepoIn(t, lh.h, tk.ds(), tk.so, tk.user)
		wf := tokens.FormatOld
		if want[tk.slot] == "3.12" {
			wf = tokens.Format312
		}
		if rr.Format != wf {
			t.Errorf("slot %d (%s): our reader finds NVTOK.DAT %v, want %v", tk.slot, tk.typ, rr.Format, wf)
		}
		if d := readerVsListing(rr, tk.before); len(d) > 0 {
			t.Errorf("slot %d (%s): our reader and the producer's listing differ:\n  %s", tk.slot, tk.typ, strings.Join(d, "\n  "))
		}
		if o := lh.orig[tk.slot]; o != nil {
			if !slices.Equal(rr.Index, o.Index) {
				t.Errorf("slot %d (%s): OBJ.IDX %q, originally %q", tk.slot, tk.typ, rr.Index, o.Index)
			}
			for name, ob := range o.Objects {
				if m := rr.Objects[name]; !bytes.Equal(m.Clear, ob.Clear) || m.Private != ob.Private {
					t.Errorf("slot %d (%s): object %s (%q) is not the original's clear bytes", tk.slot, tk.typ, name, ob.Label)
				}
				if m := rr.Objects[name]; m.Format != wf {
					t.Errorf("slot %d (%s): object %s is %v, want %v", tk.slot, tk.typ, name, m.Format, wf)
				}
			}
		} else {
			lh.orig[tk.slot] = rr
		}
		parts = append(parts, fmt.Sprintf("%s %s", tk.typ, formatName(rr.Format)))
	}
	return fmt.Sprintf("our reader: %s, %d objects each as made (kind, key type, label, ID, private; the originals' clear bytes)",
		strings.Join(parts, ", "), len(lh.tokens[0].before))
}

func formatName(f tokens.Format) string {
	if f == tokens.Format312 {
		return "3.12"
	}
	return "old"
}

// readerVsListing compares our reader's objects with the real library's listing.
func readerVsListing(rr *readRepo, l listing) []string {
	want := map[string]bool{}
	for _, o := range l {
		want[o.key()] = o.Private
	}
	var d []string
	seen := map[string]bool{}
	for name, o := range rr.Objects {
		k := o.kindKey()
		seen[k] = true
		p, ok := want[k]
		switch {
		case !ok:
			d = append(d, fmt.Sprintf("%s (%s): not listed by the real library", k, name))
		case p != o.Private:
			d = append(d, fmt.Sprintf("%s (%s): private %v, the real library %v", k, name, o.Private, p))
		}
	}
	for k := range want {
		if !seen[k] {
			d = append(d, "listed by the real library, not found by our reader: "+k)
		}
	}
	sort.Strings(d)
	return d
}

// unlockWith tries PINs on a repository with our reader.
func unlockWith(dir string, so, user string) error {
	d, err := repofs.OpenDir(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	repo, err := tokens.Load(d)
	if err != nil {
		return err
	}
	keys, err := repo.Unlock([]byte(so), []byte(user))
	if err != nil {
		return err
	}
	keys.Wipe()
	return nil
}

// ---------------------------------------------------------------------------------------
// The real library on the host

// real has the real 3.27 open the host as it is now: a fresh session gets copies of the four
// repositories and the stand-in of the host's conf (want must be its tokversions), and
// pkcs11-tool lists and uses every object of each slot, logged in with the slot's user PIN;
// each slot must show what its producer showed. then, if given, runs while the daemon still
// runs. migrator, if given, counts the objects for the suite's summary.
func (lh *labHost) real(t *testing.T, want map[int]string, migrator string, then func(r *ockroot.Root)) string {
	t.Helper()
	conf := lh.conf(t)
	if got := confTokversions(conf); !maps312Equal(got, want) {
		t.Fatalf("the host's conf has %s, want %s:\n%s", tvString(got), tvString(want), conf)
	}
	r := openRoot(t, ockroot.Testing)
	defer r.Close()
	for _, tk := range lh.tokens {
		if err := os.RemoveAll(r.Path(tk.ds())); err != nil {
			t.Fatal(err)
		}
		if err := copyRepo(lh.h.Path(tk.ds()), r.Path(tk.ds())); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.WriteConf(standInConf(t, conf)); err != nil {
		t.Fatal(err)
	}
	stop := startSlotd(t, r)
	var all listing
	for _, tk := range lh.tokens {
		got := viewer{r: r, slot: tk.slot, pin: tk.user, msg: upgMsg}.observe(t)
		what := fmt.Sprintf("slot %d (%s) with %s", tk.slot, tk.typ, tvWord(want[tk.slot]))
		mustMatch(t, what, labProducer, migrator, tk.before, got)
		all = append(all, got...)
	}
	if then != nil {
		then(r)
	}
	stop()
	return fmt.Sprintf("stand-in conf with %s: %d objects equal (%s)", tvString(want), len(all), kindsString(all))
}

func tvWord(v string) string {
	if v == "" {
		return "no tokversion"
	}
	return "tokversion = " + v
}

func maps312Equal(a, b map[int]string) bool {
	for _, s := range labSlots {
		if (a[s.slot] == "3.12") != (b[s.slot] == "3.12") {
			return false
		}
	}
	return len(a) == len(labSlots)
}

func kindsString(l listing) string {
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
	return strings.Join(parts, ", ")
}

// refuses: slot of r's running library must not show tk's objects when logged in with pin.
func refuses(t *testing.T, r *ockroot.Root, tk *labToken, pin string) string {
	t.Helper()
	v := viewer{r: r, slot: tk.slot, pin: pin, msg: upgMsg}
	out, ok := v.try(t, true, "--list-objects")
	if !ok {
		return "refused: " + ckrLine(string(out))
	}
	l, err := parseList(out)
	if err != nil {
		t.Fatal(err)
	}
	if d, _ := compareViews(tk.before, l, upgMsg); len(d) > 0 {
		return fmt.Sprintf("lists %d of %d objects", len(l), len(tk.before))
	}
	t.Errorf("slot %d (%s): the real library shows every object although it should not (control failed)", tk.slot, tk.typ)
	return "CONTROL FAILED"
}

// ckrLine is the line of pkcs11-tool's error output that names the PKCS#11 return value, or
// its last line.
func ckrLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	for _, l := range lines {
		if strings.Contains(l, "CKR_") {
			return strings.TrimSpace(l)
		}
	}
	return strings.TrimSpace(lines[len(lines)-1])
}

// ---------------------------------------------------------------------------------------
// The steps

func (lh *labHost) asMade(t *testing.T) (string, string) {
	for _, tk := range lh.tokens {
		lh.origTree[tk.slot] = mustSnapshot(t, lh.h.Path(tk.ds()), false)
		lh.origHash[tk.slot] = treeHash(lh.origTree[tk.slot])
	}
	ours := lh.ours(t, want312())
	real := lh.real(t, want312(), "", nil)
	return ours, "the four repositories moved from swtok: " + real
}

func (lh *labHost) plan(t *testing.T) (string, string) {
	s0, c0 := lh.stateTrees(t)
	res := lh.tl.run(t, "plan", lh.request(nil))
	if res.code != 2 {
		t.Fatalf("plan of the host: want exit 2\n%s", res)
	}
	hp := decodeOut[cliHostPlan](t, res)
	if !hp.Changed || len(hp.Plans) != len(lh.tokens) {
		t.Fatalf("host plan: changed %v, %d plans; want true and %d\n%s", hp.Changed, len(hp.Plans), len(lh.tokens), res.stdout)
	}
	var types []string
	for i, tk := range lh.tokens {
		p := hp.Plans[i]
		o := lh.orig[tk.slot]
		if p.Slot != tk.slot || p.TokenType != tk.typ || p.Format != "old" || !p.PINsChecked || p.Datastore != tk.ds() || len(p.Objects) != len(o.Index) {
			t.Errorf("plan %d: slot %d token_type %q format %q pins_checked %v datastore %q objects %d; want %d %s old true %s %d",
				i, p.Slot, p.TokenType, p.Format, p.PINsChecked, p.Datastore, len(p.Objects), tk.slot, tk.typ, tk.ds(), len(o.Index))
			continue
		}
		for j, po := range p.Objects {
			ro := o.Objects[o.Index[j]]
			if po.File != ro.Name || po.Label != ro.Label || po.Private != ro.Private || po.Format != "old" {
				t.Errorf("slot %d plan object %d: %s %q private %v %s; our reader: %s %q private %v old", tk.slot, j, po.File, po.Label, po.Private, po.Format, ro.Name, ro.Label, ro.Private)
			}
		}
		types = append(types, fmt.Sprintf("%d %s", tk.slot, tk.typ))
	}
	var plus, minus []string
	for _, l := range strings.Split(hp.ConfDiff, "\n") {
		switch {
		case strings.HasPrefix(l, "+++"), strings.HasPrefix(l, "---"):
		case strings.HasPrefix(l, "+"):
			plus = append(plus, l)
		case strings.HasPrefix(l, "-"):
			minus = append(minus, l)
		}
	}
	tv := regexp.MustCompile(`^\+\s*tokversion = 3\.12$`)
	if len(minus) != 0 || len(plus) != 4 || !allMatch(tv, plus) {
		t.Errorf("host plan conf_diff: want four added tokversion = 3.12 lines and nothing else, got +%q -%q\n%s", plus, minus, hp.ConfDiff)
	}
	s1, c1 := lh.stateTrees(t)
	if d := append(diff(s0, s1, true), diff(c0, c1, true)...); len(d) > 0 {
		t.Errorf("plan changed the host:\n  %s", strings.Join(d, "\n  "))
	}
	ours := fmt.Sprintf("exit 2; plans of slots %s: old, PINs checked, objects as our reader reads them; one conf diff: %d lines added (tokversion = 3.12), none removed; state and conf trees unchanged (%s, %s); %s",
		strings.Join(types, ", "), len(plus), treeHash(s1), treeHash(c1), lh.ours(t, want312()))
	return ours, lh.real(t, want312(), "", nil)
}

func allMatch(re *regexp.Regexp, lines []string) bool {
	for _, l := range lines {
		if !re.MatchString(l) {
			return false
		}
	}
	return true
}

func (lh *labHost) wrongPIN(t *testing.T) (string, string) {
	const slot, from = 4, 3
	wrong := lh.token(from).user
	s0, c0 := lh.stateTrees(t)
	res := lh.tl.run(t, "apply", lh.request(map[int]string{slot: wrong}))
	if res.code != 1 || res.errorCode() != "wrong_pin" {
		t.Fatalf("apply with slot %d's user PIN wrong: want exit 1 wrong_pin\n%s", slot, res)
	}
	var e errorDoc
	if err := json.Unmarshal(res.stdout, &e); err != nil {
		t.Fatal(err)
	}
	if n, _ := e.Error.Details["slot"].(float64); int(n) != slot || !strings.Contains(e.Error.Message, "slot "+itoa(slot)) {
		t.Errorf("wrong_pin names slot %v (%q), want %d", e.Error.Details["slot"], e.Error.Message, slot)
	}
	outcomes := slotOutcomes(e.Error.Details["slots"])
	if len(outcomes) != len(lh.tokens) {
		t.Errorf("wrong_pin details.slots: %v, want the four slots", outcomes)
	}
	for s, o := range outcomes {
		if o == "migrated" || o == "unchanged" || (s == slot) != (o == "failed") {
			t.Errorf("wrong_pin details.slots: slot %d %q (slot %d must be the one failed, none migrated)", s, o, slot)
		}
	}
	s1, c1 := lh.stateTrees(t)
	if d := append(diff(s0, s1, true), diff(c0, c1, true)...); len(d) > 0 {
		t.Errorf("apply refused with wrong_pin but the host changed:\n  %s", strings.Join(d, "\n  "))
	}
	if l := leftovers(s1, c1); len(l) > 0 {
		t.Errorf("leftovers after wrong_pin: %q", l)
	}
	if _, ok := c1["opencryptoki.conf_BAK"]; ok {
		t.Errorf("opencryptoki.conf_BAK made by a refused apply")
	}
	tk := lh.token(slot)
	if err := unlockWith(lh.h.Path(tk.ds()), tk.so, wrong); err == nil {
		t.Errorf("our reader unlocks slot %d with slot %d's user PIN", slot, from)
	}
	var ctl string
	real := lh.real(t, want312(), "", func(r *ockroot.Root) { ctl = refuses(t, r, tk, wrong) })
	if !strings.Contains(ctl, "CKR_PIN_INCORRECT") {
		t.Errorf("the real library on slot %d with slot %d's user PIN: %s, want CKR_PIN_INCORRECT", slot, from, ctl)
	}
	ours := fmt.Sprintf("exit 1 wrong_pin, details.slot %d, slots %s; state and conf trees identical (%s, %s), no journal, working copy or conf_BAK; our reader refuses that PIN too; %s",
		slot, outcomeString(outcomes), treeHash(s1), treeHash(c1), lh.ours(t, want312()))
	return ours, real + fmt.Sprintf("; slot %d logged in with slot %d's user PIN: %s", slot, from, ctl)
}

func slotOutcomes(v any) map[int]string {
	m := map[int]string{}
	l, _ := v.([]any)
	for _, x := range l {
		o, _ := x.(map[string]any)
		n, _ := o["slot"].(float64)
		s, _ := o["outcome"].(string)
		m[int(n)] = s
	}
	return m
}

func outcomeString(m map[int]string) string {
	var p []string
	for _, s := range labSlots {
		if o, ok := m[s.slot]; ok {
			p = append(p, fmt.Sprintf("%d %s", s.slot, o))
		}
	}
	return strings.Join(p, ", ")
}

func (lh *labHost) applyHost(t *testing.T) (string, string) {
	res := lh.tl.run(t, "apply", lh.request(nil))
	if res.code != 0 {
		t.Fatalf("apply of the host: want exit 0\n%s", res)
	}
	hr := decodeOut[cliHostResult](t, res)
	got := map[int]string{}
	for _, so := range hr.Slots {
		got[so.Slot] = so.Outcome
		tk := lh.token(so.Slot)
		if so.Outcome != "migrated" || so.Result == nil || !so.Result.Verified || so.Result.ObjectsMigrated != len(tk.before) || so.Result.TokenType != tk.typ {
			t.Errorf("slot %d: outcome %q result %+v; want migrated, verified, %d objects, %s", so.Slot, so.Outcome, so.Result, len(tk.before), tk.typ)
		}
	}
	if !hr.Changed || hr.Operation != "apply" || !hr.ConfChanged || len(got) != len(lh.tokens) {
		t.Errorf("host result: changed %v operation %q conf_changed %v slots %v", hr.Changed, hr.Operation, hr.ConfChanged, got)
	}
	conf := lh.conf(t)
	minus, plus := lineDiff(lh.conf0, conf)
	tv := regexp.MustCompile(`^\s*tokversion = 3\.12$`)
	if len(minus) != 0 || len(plus) != 4 || !allMatch(tv, plus) {
		t.Errorf("conf after apply: want four added tokversion lines, got -%q +%q", minus, plus)
	}
	s, c := lh.stateTrees(t)
	if b, err := os.ReadFile(lh.h.Path(confPath + "_BAK")); err != nil || !bytes.Equal(b, lh.conf0) {
		t.Errorf("opencryptoki.conf_BAK is not the original conf (%v)", err)
	}
	for _, tk := range lh.tokens {
		if d := diff(lh.origTree[tk.slot], subtree(s, tk.dir+"_BAK"), false); len(d) > 0 {
			t.Errorf("%s_BAK is not the original:\n  %s", tk.dir, strings.Join(d, "\n  "))
		}
		checkSizes(t, lh.h.Path(tk.ds()))
		checkPerms(t, lh.h.Path(tk.ds()), lh.h.Path(tk.ds()+"_BAK"), uint32(lh.h.Stamp.GID))
	}
	if l := leftovers(s, c); len(l) > 0 {
		t.Errorf("leftovers after apply: %q", l)
	}
	ours := fmt.Sprintf("exit 0, slots %s, each verified; conf: 4 tokversion lines added, nothing else; conf_BAK and each <dir>_BAK the originals; files 0660, directories 0770, group pkcs11; %s",
		outcomeString(got), lh.ours(t, want312(1, 2, 3, 4)))
	return ours, lh.real(t, want312(1, 2, 3, 4), "ours (amd64), four slots in one run", nil)
}

func (lh *labHost) rerun(t *testing.T) (string, string) {
	s0, c0 := lh.stateTrees(t)
	res := lh.tl.run(t, "apply", lh.request(nil))
	if res.code != 0 {
		t.Fatalf("second apply of the host: want exit 0\n%s", res)
	}
	hr := decodeOut[cliHostResult](t, res)
	got := map[int]string{}
	for _, so := range hr.Slots {
		got[so.Slot] = so.Outcome
		if so.Outcome != "unchanged" {
			t.Errorf("second apply: slot %d %q, want unchanged", so.Slot, so.Outcome)
		}
	}
	if hr.Changed || len(got) != len(lh.tokens) {
		t.Errorf("second apply: changed %v, slots %v; want false and four", hr.Changed, got)
	}
	s1, c1 := lh.stateTrees(t)
	if d := append(diff(s0, s1, true), diff(c0, c1, true)...); len(d) > 0 {
		t.Errorf("the second apply changed the host:\n  %s", strings.Join(d, "\n  "))
	}
	h0, h1 := treeHash(s0)+" "+treeHash(c0), treeHash(s1)+" "+treeHash(c1)
	if h0 != h1 {
		t.Errorf("tree hashes before %s, after %s", h0, h1)
	}
	ours := fmt.Sprintf("exit 0, changed false, slots %s; state and conf trees byte-identical before and after (%s = %s, file times included); %s",
		outcomeString(got), h0, h1, lh.ours(t, want312(1, 2, 3, 4)))
	return ours, lh.real(t, want312(1, 2, 3, 4), "", nil)
}

func (lh *labHost) rollbackOne(t *testing.T) (string, string) {
	const slot = 2
	tk := lh.token(slot)
	conf0 := lh.conf(t)
	s0, _ := lh.stateTrees(t)
	res := lh.tl.runArgs(t, nil, "rollback", "--slot", itoa(slot))
	if res.code != 0 {
		t.Fatalf("rollback --slot %d: want exit 0\n%s", slot, res)
	}
	rr := decodeOut[cliResult](t, res)
	if rr.Operation != "rollback" || !rr.Changed {
		t.Errorf("rollback --slot %d: operation %q changed %v", slot, rr.Operation, rr.Changed)
	}
	conf := lh.conf(t)
	minus, plus := lineDiff(conf0, conf)
	if len(minus) != 1 || len(plus) != 0 || !regexp.MustCompile(`^\s*tokversion = 3\.12$`).MatchString(minus[0]) {
		t.Errorf("rollback --slot %d: want one tokversion line removed from the conf, got -%q +%q", slot, minus, plus)
	}
	s1, c1 := lh.stateTrees(t)
	if d := diff(lh.origTree[slot], subtree(s1, tk.dir), true); len(d) > 0 {
		t.Errorf("%s after rollback is not the original:\n  %s", tk.dir, strings.Join(d, "\n  "))
	}
	if d := diff(subtree(s0, tk.dir), subtree(s1, tk.dir+"_ROLLED_BACK"), false); len(d) > 0 {
		t.Errorf("%s_ROLLED_BACK is not the migrated repository:\n  %s", tk.dir, strings.Join(d, "\n  "))
	}
	if _, ok := s1[tk.dir+"_BAK"]; ok {
		t.Errorf("%s_BAK still there after its rollback", tk.dir)
	}
	for _, o := range lh.tokens {
		if o.slot == slot {
			continue
		}
		for _, n := range []string{o.dir, o.dir + "_BAK"} {
			if d := diff(subtree(s0, n), subtree(s1, n), true); len(d) > 0 {
				t.Errorf("rollback of slot %d changed %s:\n  %s", slot, n, strings.Join(d, "\n  "))
			}
		}
	}
	if b, err := os.ReadFile(lh.h.Path(confPath + "_BAK")); err != nil || !bytes.Equal(b, lh.conf0) {
		t.Errorf("opencryptoki.conf_BAK is not the original conf after rollback --slot (%v)", err)
	}
	if l := leftovers(s1, c1); len(l) > 0 {
		t.Errorf("leftovers after rollback --slot: %q", l)
	}
	want := want312(1, 3, 4)
	ours := fmt.Sprintf("exit 0; %s is the original again (tree %s as made: content, modes, owners, file times), the migrated one kept as %s_ROLLED_BACK; the conf lost exactly slot %d's tokversion line; the other three repositories and their _BAK untouched; conf_BAK still the original; %s",
		tk.dir, treeHash(subtree(s1, tk.dir)), tk.dir, slot, lh.ours(t, want))
	real := lh.real(t, want, "", nil)

	// The control: the real library opens a repository only with the conf's tokversion that
	// fits it, so the checks above tell old from 3.12. Slot 2 (old) marked 3.12 and slot 1
	// (3.12) left without must both fail.
	flipped := want312(1, 3, 4)
	flipped[2], flipped[1] = "3.12", ""
	r := openRoot(t, ockroot.Testing)
	defer r.Close()
	for _, o := range lh.tokens {
		if err := os.RemoveAll(r.Path(o.ds())); err != nil {
			t.Fatal(err)
		}
		if err := copyRepo(lh.h.Path(o.ds()), r.Path(o.ds())); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.WriteConf(labConf(true, flipped)); err != nil {
		t.Fatal(err)
	}
	stop := startSlotd(t, r)
	c2 := refuses(t, r, tk, tk.user)
	c1b := refuses(t, r, lh.token(1), lh.token(1).user)
	stop()
	return ours, real + fmt.Sprintf("; control: the old slot 2 with tokversion = 3.12: %s; the 3.12 slot 1 without tokversion: %s", c2, c1b)
}

func (lh *labHost) rollbackHost(t *testing.T) (string, string) {
	s0, _ := lh.stateTrees(t)
	res := lh.tl.run(t, "rollback", lh.request(nil))
	if res.code != 0 {
		t.Fatalf("rollback of the host: want exit 0\n%s", res)
	}
	hr := decodeOut[cliHostResult](t, res)
	got := map[int]string{}
	for _, so := range hr.Slots {
		got[so.Slot] = so.Outcome
		want := "rolled_back"
		if so.Slot == 2 {
			want = "unchanged"
		}
		if so.Outcome != want {
			t.Errorf("rollback of the host: slot %d %q, want %s", so.Slot, so.Outcome, want)
		}
	}
	if len(got) != len(lh.tokens) || !hr.Changed || hr.Operation != "rollback" || !hr.ConfChanged {
		t.Errorf("rollback of the host: changed %v operation %q slots %v", hr.Changed, hr.Operation, got)
	}
	if conf := lh.conf(t); !bytes.Equal(conf, lh.conf0) {
		t.Errorf("after the rollback the conf is not the original:\n%s", conf)
	}
	if b, err := os.ReadFile(lh.h.Path(confPath + "_BAK")); err != nil || !bytes.Equal(b, lh.conf0) {
		t.Errorf("opencryptoki.conf_BAK is not the original conf (%v)", err)
	}
	s1, c1 := lh.stateTrees(t)
	var hashes []string
	for _, tk := range lh.tokens {
		now := subtree(s1, tk.dir)
		if d := diff(lh.origTree[tk.slot], now, true); len(d) > 0 || treeHash(now) != lh.origHash[tk.slot] {
			t.Errorf("%s after the rollback is not the original (tree %s, as made %s):\n  %s", tk.dir, treeHash(now), lh.origHash[tk.slot], strings.Join(d, "\n  "))
		}
		if tk.slot != 2 {
			if d := diff(subtree(s0, tk.dir), subtree(s1, tk.dir+"_ROLLED_BACK"), false); len(d) > 0 {
				t.Errorf("%s_ROLLED_BACK is not the migrated repository:\n  %s", tk.dir, strings.Join(d, "\n  "))
			}
		}
		if _, ok := s1[tk.dir+"_BAK"]; ok {
			t.Errorf("%s_BAK still there after the rollback", tk.dir)
		}
		hashes = append(hashes, fmt.Sprintf("%s %s", tk.dir, treeHash(now)))
	}
	if d := diff(subtree(s0, "ccatok_ROLLED_BACK"), subtree(s1, "ccatok_ROLLED_BACK"), true); len(d) > 0 {
		t.Errorf("the rollback of the host changed ccatok_ROLLED_BACK:\n  %s", strings.Join(d, "\n  "))
	}
	if l := leftovers(s1, c1); len(l) > 0 {
		t.Errorf("leftovers after the rollback: %q", l)
	}
	ours := fmt.Sprintf("exit 0, changed, slots %s; conf byte-identical to the original; each repository's tree the one as made (content, modes, owners, file times: %s); each migrated one kept as <dir>_ROLLED_BACK; %s",
		outcomeString(got), strings.Join(hashes, ", "), lh.ours(t, want312()))
	return ours, lh.real(t, want312(), "", nil)
}

func (lh *labHost) oneByOne(t *testing.T) (string, string) {
	pins := "/root/lab-pins"
	if err := os.MkdirAll(lh.h.Path(pins), 0o700); err != nil {
		t.Fatal(err)
	}
	for _, tk := range lh.tokens {
		for kind, pin := range map[string]string{"so": tk.so, "user": tk.user} {
			if err := lh.h.WriteFile(fmt.Sprintf("%s/%s-%d", pins, kind, tk.slot), []byte(pin+"\n"), 0o600, 0, 0); err != nil {
				t.Fatal(err)
			}
		}
	}
	one := func(slot int) cliRequest {
		tk := lh.token(slot)
		s := slot
		return cliRequest{Slot: &s, Confdir: "/etc/opencryptoki", SOPIN: tk.so, UserPIN: tk.user}
	}
	hostOf := func(slot int) cliHostRequest {
		tk := lh.token(slot)
		return cliHostRequest{Confdir: "/etc/opencryptoki", Slots: []cliSlot{{Slot: slot, SOPIN: tk.so, UserPIN: tk.user}}}
	}
	seq := []struct {
		slot int
		how  string
		run  func(t *testing.T) toolRun
	}{
		{3, "request {slot: 3}", func(t *testing.T) toolRun { return lh.tl.run(t, "apply", one(3)) }},
		{1, "--slots 1 with PIN files {slot}", func(t *testing.T) toolRun {
			return lh.tl.runArgs(t, nil, "apply", "--slots", "1", "--so-pin-file", pins+"/so-{slot}", "--user-pin-file", pins+"/user-{slot}")
		}},
		{4, "request {slots: [4]}", func(t *testing.T) toolRun { return lh.tl.run(t, "apply", hostOf(4)) }},
		{2, "--slot 2 with PIN files", func(t *testing.T) toolRun {
			return lh.tl.runArgs(t, nil, "apply", "--slot", "2", "--so-pin-file", pins+"/so-2", "--user-pin-file", pins+"/user-2")
		}},
	}
	var done []int
	var hows []string
	for _, st := range seq {
		s0, c0 := lh.stateTrees(t)
		prev := lh.conf(t)
		res := st.run(t)
		if res.code != 0 || !bytes.Contains(res.stdout, []byte(`"changed": true`)) {
			t.Fatalf("single-slot apply of slot %d (%s): want exit 0 and changed\n%s", st.slot, st.how, res)
		}
		done = append(done, st.slot)
		s1, c1 := lh.stateTrees(t)
		for _, pair := range [][2]tree{{s0, s1}, {c0, c1}} {
			for _, n := range topNames(pair[0]) {
				if _, ok := pair[1][n]; !ok {
					t.Errorf("the apply of slot %d removed %s", st.slot, n)
				}
			}
		}
		for _, tk := range lh.tokens {
			n := tk.dir + "_ROLLED_BACK"
			if d := diff(subtree(s0, n), subtree(s1, n), true); len(d) > 0 {
				t.Errorf("the apply of slot %d changed %s:\n  %s", st.slot, n, strings.Join(d, "\n  "))
			}
		}
		if b, err := os.ReadFile(lh.h.Path(confPath + "_BAK")); err != nil || !bytes.Equal(b, lh.conf0) {
			t.Errorf("after the apply of slot %d, opencryptoki.conf_BAK is not the conf from before the first migration (%v)", st.slot, err)
		}
		minus, plus := lineDiff(prev, lh.conf(t))
		if len(minus) != 0 || len(plus) != 1 {
			t.Errorf("the apply of slot %d: want one conf line added, got -%q +%q", st.slot, minus, plus)
		}
		if got := confTokversions(lh.conf(t)); !maps312Equal(got, want312(done...)) {
			t.Errorf("after the apply of slot %d the conf has %s, want %s", st.slot, tvString(got), tvString(want312(done...)))
		}
		if l := leftovers(s1, c1); len(l) > 0 {
			t.Errorf("leftovers after the apply of slot %d: %q", st.slot, l)
		}
		lh.ours(t, want312(done...))
		hows = append(hows, fmt.Sprintf("slot %d (%s)", st.slot, st.how))
	}
	s, _ := lh.stateTrees(t)
	for _, tk := range lh.tokens {
		if d := diff(lh.origTree[tk.slot], subtree(s, tk.dir+"_BAK"), false); len(d) > 0 {
			t.Errorf("%s_BAK is not the original:\n  %s", tk.dir, strings.Join(d, "\n  "))
		}
	}
	ours := fmt.Sprintf("%s: each exit 0 and changed, one tokversion line added each, nothing removed (conf_BAK stays the conf from before the first migration, every <dir>_ROLLED_BACK untouched), each <dir>_BAK the original; our reader after each; %s",
		strings.Join(hows, ", then "), lh.ours(t, want312(1, 2, 3, 4)))
	return ours, lh.real(t, want312(1, 2, 3, 4), "ours (amd64), one slot at a time", nil)
}
