//go:build linux

package e2e

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ocktools/pkcstok-migrate/e2e/ockroot"
)

// The Debian 12 -> 13 upgrade, end to end: tokens made by the real 3.8.1 (bookworm
// root) and by the real 3.23 without tokversion (trixie root, old format), migrated by our
// tool and, side by side, by upstream's pkcstok_migrate from the 3.23 package; the real 3.23
// with tokversion = 3.12 must find every object with the same value; rollback gives 3.8.1 (and
// 3.23 without tokversion) the originals back. Every root is a private overlay (ockroot).

const (
	upgSO     = "upgSO-71" // Soft-token PINs: 4 to 8 bytes
	upgUser   = "upgUs-42"
	upgSlot   = 3
	upgLabelD = "upg-pub-data"
	upgLabelP = "upg-priv-data"
)

var (
	upgMsg     = []byte("pkcstok-migrate upgrade suite: the message every key signs")
	upgPubVal  = []byte("upgrade suite public data \x00\x01\x7f\xfe\xff")
	upgPrivVal = []byte("upgrade suite PRIVATE data \x10\x20\x00\xaa")
)

// tokenSpec is a token one real openCryptoki makes.
type tokenSpec struct {
	producer string // "3.8.1", "3.23"
	root     ockroot.Spec
	confVer  string // the conf's "version opencryptoki-X"
	slot     int
	stdll    string
	tokname  string
	label    string
	so, user string
	ecGen    bool // generate the EC pair on the token (3.8.1 cannot: it is imported)
	rsaBits  int
	noEC     bool // no EC at all (ICA under qemu cannot generate EC keys)
	// prepare, when set, readies the producer's session before its pkcsslotd starts (the
	// FIPS suite switches OpenSSL's FIPS configuration off there).
	prepare func(t *testing.T, r *ockroot.Root)
}

func (ts tokenSpec) ds() string { return "/var/lib/opencryptoki/" + ts.tokname }

// madeToken is a token made and observed by its producer.
type madeToken struct {
	tokenSpec
	conf    []byte  // the producer's conf (no tokversion)
	saved   string  // host copy of the repository as the producer left it
	before  listing // what the producer showed
	library string  // the library pkcs11-tool --show-info names ("openCryptoki (ver 3.27)")
}

// makeToken runs the producer's pkcsslotd, initialises the token, creates the objects through
// pkcs11-tool, observes them and saves the repository to dir.
func makeToken(t *testing.T, ts tokenSpec, dir string) *madeToken {
	t.Helper()
	start := time.Now()
	r := openRoot(t, ts.root)
	if ts.prepare != nil {
		ts.prepare(t, r)
	}
	conf := slotConf(ts.confVer, ts.slot, ts.stdll, ts.tokname, "")
	if err := r.WriteConf(conf); err != nil {
		t.Fatal(err)
	}
	stop := startSlotd(t, r)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := r.InitToken(ctx, ts.slot, ts.label, ts.so, ts.user); err != nil {
		t.Fatal(err)
	}
	v := viewer{r: r, slot: ts.slot, pin: ts.user, msg: upgMsg}
	createObjects(t, v, ts)
	before := v.observe(t)
	library := libraryLine(v.tool(t, false, "--show-info"))
	t.Logf("%s: the library seen: %s", r.Name(), library)
	stop()
	saved := filepath.Join(dir, ts.producer+"-"+ts.tokname)
	if err := copyRepo(r.Path(ts.ds()), saved); err != nil {
		t.Fatal(err)
	}
	before.logTo(t, "made by "+ts.producer+" ("+r.Version()+", "+r.Arch+")")
	t.Logf("token by %s made and observed in %v", ts.producer, time.Since(start).Round(time.Millisecond))
	return &madeToken{tokenSpec: ts, conf: conf, saved: saved, before: before, library: library}
}

// libraryLine is the "Library" line of pkcs11-tool --show-info ("openCryptoki (ver 3.27)").
func libraryLine(info []byte) string {
	for _, l := range strings.Split(string(info), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "Library" {
			return strings.TrimSpace(v)
		}
	}
	return strings.TrimSpace(string(info))
}

// createObjects: public and private data, an AES key, an RSA pair, an EC P-256 pair
// (generated, or imported where the library cannot generate one) and a certificate.
func createObjects(t *testing.T, v viewer, ts tokenSpec) {
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
	v.tool(t, true, "--write-object", file(upgPubVal), "--type", "data", "--label", upgLabelD)
	v.tool(t, true, "--write-object", file(upgPrivVal), "--type", "data", "--label", upgLabelP, "--private")
	v.tool(t, true, "--keygen", "--key-type", "AES:16", "--label", "upg-aes", "--id", "0a0b")
	bits := ts.rsaBits
	if bits == 0 {
		bits = 2048
	}
	v.tool(t, true, "--keypairgen", "--key-type", "rsa:"+itoa(bits), "--label", "upg-rsa", "--id", "0102")
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	switch {
	case ts.noEC:
	case ts.ecGen:
		v.tool(t, true, "--keypairgen", "--key-type", "EC:prime256v1", "--label", "upg-ec", "--id", "0304")
	default:
		der, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
		if err != nil {
			t.Fatal(err)
		}
		v.tool(t, true, "--write-object", file(der), "--type", "privkey", "--label", "upg-ec", "--id", "0304")
		v.tool(t, true, "--write-object", file(pub), "--type", "pubkey", "--label", "upg-ec", "--id", "0304")
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "pkcstok-migrate e2e " + ts.producer},
		NotBefore:    time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
	}
	cert, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	v.tool(t, true, "--write-object", file(cert), "--type", "cert", "--label", "upg-cert", "--id", "0305")
}

func itoa(n int) string { return strconv.Itoa(n) }

// placeToken copies a saved repository into a root (as the producer left it) with the conf.
func placeToken(t *testing.T, r *ockroot.Root, mt *madeToken, conf []byte) {
	t.Helper()
	if err := os.RemoveAll(r.Path(mt.ds())); err != nil {
		t.Fatal(err)
	}
	if err := copyRepo(mt.saved, r.Path(mt.ds())); err != nil {
		t.Fatal(err)
	}
	if err := r.WriteConf(conf); err != nil {
		t.Fatal(err)
	}
}

// loadView starts the root's pkcsslotd, observes the slot and stops the daemon.
func loadView(t *testing.T, r *ockroot.Root, slot int, user string) listing {
	t.Helper()
	stop := startSlotd(t, r)
	l := viewer{r: r, slot: slot, pin: user, msg: upgMsg}.observe(t)
	stop()
	return l
}

// mustMatch fails the test when after differs from before, and counts the objects compared.
// It reports whether they were equal.
func mustMatch(t *testing.T, what, producer, migrator string, before, after listing) bool {
	t.Helper()
	d, n := compareViews(before, after, upgMsg)
	if len(d) > 0 {
		t.Errorf("%s: the real token differs from what %s showed before:\n  %s", what, producer, strings.Join(d, "\n  "))
		return false
	}
	if migrator != "" {
		count(producer, migrator, after)
	}
	t.Logf("%s: all %d objects the same as %s showed them before", what, n, producer)
	return true
}

func TestUpgrade(t *testing.T) {
	gateRoots(t, ockroot.Bookworm, ockroot.Trixie)
	start := time.Now()
	dir := t.TempDir()
	tokensMade := []*madeToken{
		makeToken(t, tokenSpec{producer: "3.8.1", root: ockroot.Bookworm, confVer: "3.1", slot: upgSlot, stdll: "libpkcs11_sw.so",
			tokname: "upg381", label: "upgrade-381", so: upgSO, user: upgUser}, dir),
		makeToken(t, tokenSpec{producer: "3.23", root: ockroot.Trixie, confVer: "3.23", slot: upgSlot, stdll: "libpkcs11_sw.so",
			tokname: "upg323", label: "upgrade-323", so: upgSO, user: upgUser, ecGen: true}, dir),
	}
	for _, mt := range tokensMade {
		t.Run("made-by-"+mt.producer, func(t *testing.T) { upgradeOne(t, mt) })
	}
	t.Logf("upgrade suite: %v", time.Since(start).Round(time.Second))
}

// upgradeOne migrates one token with our tool and with upstream's, loads both with the real
// 3.23, checks a corrupted copy is caught, rolls back and gives the original back to its
// producer.
func upgradeOne(t *testing.T, mt *madeToken) {
	slot := mt.slot
	req := cliRequest{Slot: &slot, Datastore: mt.ds(), Confdir: "/etc/opencryptoki", SOPIN: mt.so, UserPIN: mt.user}
	confPath := "/etc/opencryptoki/opencryptoki.conf"
	conf0 := slotConf("3.23", slot, mt.stdll, mt.tokname, "")

	// --- Ours ------------------------------------------------------------------------------
	ours := openRoot(t, ockroot.Trixie)
	placeToken(t, ours, mt, conf0)
	origTree := mustSnapshot(t, ours.Path(mt.ds()), false)
	tl := installTool(t, ours, "amd64", mt.so, mt.user)

	r := tl.run(t, "plan", req)
	if r.code != 2 {
		t.Fatalf("plan: want exit 2 (changes to make)\n%s", r)
	}
	p := decodeOut[cliPlan](t, r)
	if !p.Changed || p.Format != "old" || p.TokenType != "Soft" || !p.PINsChecked || len(p.Objects) != len(mt.before) {
		t.Errorf("plan: changed %v format %q token_type %q pins_checked %v objects %d; want true old Soft true %d",
			p.Changed, p.Format, p.TokenType, p.PINsChecked, len(p.Objects), len(mt.before))
	}
	t.Logf("plan conf_diff:\n%s", p.ConfDiff)

	r = tl.run(t, "apply", req)
	if r.code != 0 {
		t.Fatalf("apply: want exit 0\n%s", r)
	}
	res := decodeOut[cliResult](t, r)
	if !res.Changed || !res.Verified || res.ObjectsMigrated != len(mt.before) || res.ObjectsTotal != len(mt.before) {
		t.Errorf("apply: changed %v verified %v objects %d of %d; want true true %d of %d",
			res.Changed, res.Verified, res.ObjectsMigrated, res.ObjectsTotal, len(mt.before), len(mt.before))
	}
	r = tl.run(t, "apply", req)
	if r.code != 0 || decodeOut[cliResult](t, r).Changed {
		t.Errorf("second apply: want exit 0 and changed false\n%s", r)
	}
	oursConf, err := os.ReadFile(ours.Path(confPath))
	if err != nil {
		t.Fatal(err)
	}
	minus, plus := lineDiff(conf0, oursConf)
	t.Logf("our conf change: -%q +%q", minus, plus)
	if len(minus) != 0 || len(plus) != 1 || !regexp.MustCompile(`^\s*tokversion\s*=\s*3\.12\s*$`).MatchString(plus[0]) {
		t.Errorf("our conf diff: want exactly one added line tokversion = 3.12, got -%q +%q", minus, plus)
	}
	oursAfter := loadView(t, ours, slot, mt.user)
	mustMatch(t, "3.23 with tokversion = 3.12 on our result", mt.producer, "ours (amd64)", mt.before, oursAfter)
	migrated := filepath.Join(t.TempDir(), "ours")
	if err := copyRepo(ours.Path(mt.ds()), migrated); err != nil {
		t.Fatal(err)
	}

	t.Run("daemon-running", func(t *testing.T) { daemonCheck(t, mt, "amd64") })

	// --- Upstream's pkcstok_migrate from the same package, on a copy of the same input -------
	up := openRoot(t, ockroot.Trixie)
	placeToken(t, up, mt, conf0)
	upRes := runUpstream(t, up, slot, mt.ds(), mt.so, mt.user)
	if upRes.Code != 0 || !bytes.Contains(upRes.Stdout, []byte("Migrated "+itoa(len(mt.before))+" object(s) out of "+itoa(len(mt.before)))) {
		t.Fatalf("upstream pkcstok_migrate:\n%s", upRes)
	}
	upConf, err := os.ReadFile(up.Path(confPath))
	if err != nil {
		t.Fatal(err)
	}
	um, upl := lineDiff(conf0, upConf)
	t.Logf("upstream's conf change: -%q +%q\nupstream's conf:\n%s", um, upl, upConf)
	if len(um)+len(upl) <= 1 {
		t.Logf("note: upstream's conf change is a single line this time")
	}
	upAfter := loadView(t, up, slot, mt.user)
	mustMatch(t, "3.23 with tokversion = 3.12 on upstream's result", mt.producer, "upstream pkcstok_migrate", mt.before, upAfter)
	if d, _ := compareViews(oursAfter, upAfter, upgMsg); len(d) > 0 {
		t.Errorf("our result and upstream's load differently:\n  %s", strings.Join(d, "\n  "))
	}

	// --- Self-check: one flipped byte in one migrated private object must be caught ------------
	t.Run("selfcheck", func(t *testing.T) { selfCheck(t, mt, migrated, oursConf) })

	// --- Rollback: the original is back, and its producer sees it again -----------------------
	r = tl.run(t, "rollback", cliRequest{Slot: &slot, Datastore: mt.ds(), Confdir: "/etc/opencryptoki"})
	if r.code != 0 {
		t.Fatalf("rollback: want exit 0\n%s", r)
	}
	if d := diff(origTree, mustSnapshot(t, ours.Path(mt.ds()), false), false); len(d) > 0 {
		t.Errorf("after rollback the repository is not the original:\n  %s", strings.Join(d, "\n  "))
	}
	if b, err := os.ReadFile(ours.Path(confPath)); err != nil || !bytes.Equal(b, conf0) {
		t.Errorf("after rollback the conf is not the original (%v):\n%s", err, b)
	}
	back := loadView(t, ours, slot, mt.user)
	mustMatch(t, "3.23 without tokversion after rollback", mt.producer, "", mt.before, back)
	if mt.root != ockroot.Trixie {
		prod := openRoot(t, mt.root)
		rolled := filepath.Join(t.TempDir(), "rolled")
		if err := copyRepo(ours.Path(mt.ds()), rolled); err != nil {
			t.Fatal(err)
		}
		placeToken(t, prod, &madeToken{tokenSpec: mt.tokenSpec, saved: rolled}, mt.conf)
		again := loadView(t, prod, slot, mt.user)
		mustMatch(t, mt.producer+" after rollback", mt.producer, "", mt.before, again)
	}
}

// runUpstream runs the root's own pkcstok_migrate in r, with extra arguments (e.g. "-v",
// "error") after its usual ones. It prompts for the PINs and asks y/n on stdin (no terminal
// needed): the PINs go there, not on its command line.
func runUpstream(t *testing.T, r *ockroot.Root, slot int, ds, so, user string, extra ...string) *ockroot.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	start := time.Now()
	argv := append([]string{"/usr/sbin/pkcstok_migrate", "-s", itoa(slot), "-d", ds, "-c", "/etc/opencryptoki"}, extra...)
	res, err := r.Run(ctx, []byte("y\n"+so+"\n"+user+"\n"), false, argv...)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("upstream pkcstok_migrate %s in %s: exit %d (%v)", strings.Join(argv[1:], " "), r.Name(), res.Code, time.Since(start).Round(time.Millisecond))
	return res
}

// selfCheck flips one byte inside the ciphertext of the migrated private data object and
// requires the real 3.23 to refuse it, miss it, or show another value; a suite whose checks
// cannot fail proves nothing.
func selfCheck(t *testing.T, mt *madeToken, migrated string, conf []byte) {
	r := openRoot(t, ockroot.Trixie)
	placeToken(t, r, &madeToken{tokenSpec: mt.tokenSpec, saved: migrated}, conf)
	rr := readRepoIn(t, r, mt.ds(), mt.so, mt.user)
	var name string
	for n, o := range rr.Objects {
		if o.Label == upgLabelP {
			name = n
		}
	}
	if name == "" {
		t.Fatalf("no object labelled %q in the migrated repository", upgLabelP)
	}
	f := r.Path(mt.ds() + "/TOK_OBJ/" + name)
	b, err := os.ReadFile(f)
	if err != nil {
		t.Fatal(err)
	}
	// A 3.12 private object: 64-byte header, the encrypted body, a 16-byte tag (doc/format.md §5.4).
	off := 64 + (len(b)-64-16)/2
	b[off] ^= 0x01
	if err := os.WriteFile(f, b, 0o660); err != nil {
		t.Fatal(err)
	}
	t.Logf("flipped bit 0 of byte %d of %s (%q, %d bytes)", off, name, upgLabelP, len(b))
	stop := startSlotd(t, r)
	defer stop()
	v := viewer{r: r, slot: mt.slot, pin: mt.user, msg: upgMsg}
	out, ok := v.try(t, true, "--list-objects")
	if !ok {
		t.Logf("caught: 3.23 refuses the token with the corrupted object: %s", firstLine(string(out)))
		return
	}
	l, err := parseList(out)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, o := range l {
		found = found || (o.Kind == "data" && o.Label == upgLabelP)
	}
	if !found {
		var gone []string
		have := l.byKey()
		for _, o := range mt.before {
			if _, ok := have[o.key()]; !ok {
				gone = append(gone, o.String())
			}
		}
		t.Logf("caught: 3.23 lists %d of %d objects; missing: %s", len(l), len(mt.before), strings.Join(gone, ", "))
		return
	}
	val, ok := v.try(t, true, "--read-object", "--type", "data", "--label", upgLabelP)
	if !ok || !bytes.Equal(val, upgPrivVal) {
		t.Logf("caught: 3.23 lists %q but cannot read its value (%v)", upgLabelP, ok)
		return
	}
	t.Errorf("self-check FAILED: the real 3.23 shows the corrupted object %q intact: this suite could not tell a broken migration", upgLabelP)
}

// daemonCheck: apply while the root's real pkcsslotd runs (under qemu-user in the s390x root)
// must be refused with slot_daemon_running and change nothing.
func daemonCheck(t *testing.T, mt *madeToken, goarch string) {
	spec := mt.root
	if spec == ockroot.Bookworm {
		spec = ockroot.Trixie // the tool runs after the upgrade
	}
	r := openRoot(t, spec)
	conf0 := slotConf("3.23", mt.slot, mt.stdll, mt.tokname, "")
	placeToken(t, r, mt, conf0)
	orig := mustSnapshot(t, r.Path(mt.ds()), false)
	tl := installTool(t, r, goarch, mt.so, mt.user)
	slot := mt.slot
	stop := startSlotd(t, r)
	res := tl.run(t, "apply", cliRequest{Slot: &slot, Datastore: mt.ds(), Confdir: "/etc/opencryptoki", SOPIN: mt.so, UserPIN: mt.user})
	ps := psSlotd()
	stop()
	changed := diff(orig, mustSnapshot(t, r.Path(mt.ds()), false), false)
	if res.code != 1 || res.errorCode() != "slot_daemon_running" || len(changed) > 0 {
		t.Errorf("apply while pkcsslotd runs in %s (%s): want exit 1 slot_daemon_running and nothing changed; changed: %q\n%s", r.Name(), ps, changed, res)
		return
	}
	t.Logf("apply while pkcsslotd runs (%s): refused with slot_daemon_running, nothing changed", r.Name())
}
