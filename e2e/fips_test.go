//go:build linux

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ocktools/pkcstok-migrate/e2e/ockroot"
	"github.com/ocktools/pkcstok-migrate/tokens"
)

// FIPS for real: the testing amd64 root with Debian's OpenSSL FIPS provider installed and
// OpenSSL's standard FIPS configuration in force (ockroot.TestingFIPS, e2e/mkroot.sh variant
// fips), or Debian's own configuration put back in a session ("FIPS off"). A token made by the
// real 3.27 without tokversion (the old format) with FIPS off; then, with FIPS on and off: does
// the real 3.27 library open it and log in, does upstream's pkcstok_migrate migrate it, does
// ours; does the library open the migrated token with the same objects; does our rollback give
// the old token back byte for byte. The table goes to the log and to $PKCSTOK_FIPS_OUT.
//
// "FIPS on" here is OpenSSL's configuration alone: Debian's OpenSSL does not follow the kernel's
// /proc/sys/crypto/fips_enabled (RHEL's does), and this machine's kernel has no such file.

const (
	fipsSO   = "fipsSO-8" // Soft-token PINs: 4 to 8 bytes
	fipsUser = "fipsUs-4"
	fipsSlot = 3
)

// The FIPS table's columns.
const (
	colFIPSLib  = "the real 3.27 library: pkcsslotd, pkcsconf -t, C_Login, every object used"
	colFIPSUp   = "upstream's pkcstok_migrate 3.27 (PINs on stdin)"
	colFIPSOurs = "ours (amd64, static)"
)

// The messages upstream's pkcstok_migrate prints when the FIPS provider refuses MD5.
var upstreamFIPSErrors = []string{"EVP_DigestInit() failed", "Error calculating MD5 of PIN", "Cannot load old masterkey from MK_SO", "Failed to migrate repository."}

// setFIPS puts the root's FIPS configuration (on) or Debian's own openssl.cnf (off) in force in
// r's session, and proves which one is: `openssl md5` refused with it and computed without it
// (and, with it, `openssl sha256` computed and the fips provider listed). It returns what
// `openssl md5` said.
func setFIPS(t *testing.T, r *ockroot.Root, on bool) string {
	t.Helper()
	src := "/etc/ssl/openssl.cnf"
	if !on {
		src = "/etc/ssl/openssl.cnf.dist"
	}
	b, err := os.ReadFile(filepath.Join(r.Base, src))
	if err != nil {
		t.Fatalf("%s: %v (make setup builds the root with it)", r.Name(), err)
	}
	if err := r.WriteFile("/etc/ssl/openssl.cnf", b, 0o644, 0, 0); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	md5, err := r.Run(ctx, nil, false, "/usr/bin/openssl", "md5")
	if err != nil {
		t.Fatal(err)
	}
	said := firstLine(strings.TrimSpace(string(append(md5.Stdout, md5.Stderr...))))
	if !on {
		if md5.Code != 0 {
			t.Fatalf("%s with Debian's openssl.cnf: openssl md5 fails:\n%s", r.Name(), md5)
		}
		return "`openssl md5` computes " + said
	}
	if md5.Code == 0 {
		t.Fatalf("%s with the FIPS configuration: openssl md5 works, the provider is not in force:\n%s", r.Name(), md5)
	}
	if _, err := r.MustRun(ctx, nil, "/usr/bin/openssl", "sha256"); err != nil {
		t.Fatalf("with the FIPS configuration openssl sha256 fails: %v", err)
	}
	prov, err := r.MustRun(ctx, nil, "/usr/bin/openssl", "list", "-providers")
	if err != nil || !bytes.Contains(bytes.ToLower(prov), []byte("fips")) {
		t.Fatalf("openssl list -providers does not list fips (%v):\n%s", err, prov)
	}
	return fmt.Sprintf("`openssl md5` refused (exit %d: %s), `openssl sha256` computed, providers: %s", md5.Code, said, providerNames(prov))
}

// providerNames is the provider names of `openssl list -providers` ("base, fips").
func providerNames(out []byte) string {
	var names []string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, "  ") && !strings.HasPrefix(l, "    ") && strings.TrimSpace(l) != "" {
			names = append(names, strings.TrimSpace(l))
		}
	}
	return strings.Join(names, ", ")
}

// fipsRoot opens a session on the FIPS root with the FIPS configuration on or off.
func fipsRoot(t *testing.T, on bool) *ockroot.Root {
	t.Helper()
	r := openRoot(t, ockroot.TestingFIPS)
	setFIPS(t, r, on)
	return r
}

// libraryView starts r's pkcsslotd and has the real library show mt's slot: pkcsconf -t (the
// token's flags), C_Login with the user PIN and every object by use, compared with what the
// producer showed. It returns the cell and whether the token opened with every object equal;
// a refusal is a result, not a failure of the test (the caller decides).
func libraryView(t *testing.T, r *ockroot.Root, mt *madeToken) (string, bool) {
	t.Helper()
	stop := startSlotd(t, r)
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	info, err := r.Run(ctx, nil, false, "/usr/sbin/pkcsconf", "-t", "-c", itoa(mt.slot))
	if err != nil {
		t.Fatal(err)
	}
	if info.Code != 0 || !bytes.Contains(info.Stdout, []byte("USER_PIN_INITIALIZED")) {
		return "pkcsconf -t: " + ckrLine(string(append(info.Stdout, info.Stderr...))), false
	}
	v := viewer{r: r, slot: mt.slot, pin: mt.user, msg: upgMsg}
	if out, ok := v.try(t, true, "--list-objects"); !ok {
		return "token listed, C_Login or listing refused: " + ckrLine(string(out)), false
	}
	got := v.observe(t)
	d, n := compareViews(mt.before, got, upgMsg)
	if len(d) > 0 {
		t.Logf("%s: the library's view differs from the producer's:\n  %s", r.Name(), strings.Join(d, "\n  "))
		return fmt.Sprintf("opens, C_Login ok, %d of %d objects compared, %d differences: %s", n, len(mt.before), len(d), d[0]), false
	}
	return fmt.Sprintf("opens, C_Login ok, **%d/%d** objects equal (%s)", n, len(mt.before), kindsString(got)), true
}

// upstreamRun runs upstream's pkcstok_migrate on the token placed in r and checks that a
// failure leaves the repository and the conf as they were. It returns the result, the cell's
// text and the output.
func upstreamRun(t *testing.T, r *ockroot.Root, mt *madeToken) (*ockroot.Result, string, string) {
	t.Helper()
	orig := mustSnapshot(t, r.Path(mt.ds()), false)
	conf0, err := os.ReadFile(r.Path(confPath))
	if err != nil {
		t.Fatal(err)
	}
	// -v error: its error trace on stderr (without it, only "Failed to migrate repository.").
	res := runUpstream(t, r, mt.slot, mt.ds(), mt.so, mt.user, "-v", "error")
	out := string(append(append([]byte{}, res.Stdout...), res.Stderr...))
	for _, pin := range []string{mt.so, mt.user} {
		if strings.Contains(out, pin) {
			t.Errorf("upstream's pkcstok_migrate printed a PIN")
		}
	}
	if res.Code == 0 {
		return res, "", out
	}
	var notes []string
	if d := diff(orig, mustSnapshot(t, r.Path(mt.ds()), false), false); len(d) > 0 {
		t.Errorf("upstream's pkcstok_migrate failed and changed the repository:\n  %s", strings.Join(d, "\n  "))
		notes = append(notes, "repository CHANGED")
	} else {
		notes = append(notes, "repository unchanged")
	}
	if b, err := os.ReadFile(r.Path(confPath)); err != nil || !bytes.Equal(b, conf0) {
		notes = append(notes, "conf changed")
	} else {
		notes = append(notes, "conf unchanged")
	}
	if left := siblings(t, r, mt); len(left) > 0 {
		notes = append(notes, "left behind: "+strings.Join(left, ", "))
	}
	return res, strings.Join(notes, ", "), out
}

// siblings lists what lies beside mt's repository (<tokname>_BAK, _PKCSTOK_MIGRATE_TMP, ...)
// and beside the conf (opencryptoki.conf_BAK).
func siblings(t *testing.T, r *ockroot.Root, mt *madeToken) []string {
	t.Helper()
	var out []string
	for _, dir := range []string{filepath.Dir(mt.ds()), confDir} {
		ents, err := os.ReadDir(r.Path(dir))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			n := e.Name()
			if (n != mt.tokname && strings.HasPrefix(n, mt.tokname)) || strings.HasPrefix(n, confName+"_") {
				out = append(out, dir+"/"+n)
			}
		}
	}
	return out
}

// wantedMessages splits want into the messages out holds and those it lacks.
func wantedMessages(out string, want []string) ([]string, []string) {
	var found, missing []string
	for _, w := range want {
		if strings.Contains(out, w) {
			found = append(found, w)
		} else {
			missing = append(missing, w)
		}
	}
	return found, missing
}

// ourSteps is our tool's plan and apply of mt in r: plan must find the old format and every
// object, apply must migrate and verify every one.
func ourSteps(t *testing.T, r *ockroot.Root, mt *madeToken) (rootTool, string) {
	t.Helper()
	tl := installTool(t, r, "amd64", mt.so, mt.user)
	slot := mt.slot
	req := cliRequest{Slot: &slot, Datastore: mt.ds(), Confdir: confDir, SOPIN: mt.so, UserPIN: mt.user}
	res := tl.run(t, "plan", req)
	if res.code != 2 {
		t.Fatalf("plan: want exit 2 (changes to make)\n%s", res)
	}
	p := decodeOut[cliPlan](t, res)
	if p.Format != "old" || !p.PINsChecked || len(p.Objects) != len(mt.before) {
		t.Fatalf("plan: format %q pins_checked %v objects %d, want old true %d", p.Format, p.PINsChecked, len(p.Objects), len(mt.before))
	}
	res = tl.run(t, "apply", req)
	if res.code != 0 {
		t.Fatalf("apply: want exit 0\n%s", res)
	}
	a := decodeOut[cliResult](t, res)
	if !a.Changed || !a.Verified || a.ObjectsMigrated != len(mt.before) || a.ObjectsTotal != len(mt.before) {
		t.Fatalf("apply: changed %v verified %v objects %d of %d, want true true %d of %d", a.Changed, a.Verified, a.ObjectsMigrated, a.ObjectsTotal, len(mt.before), len(mt.before))
	}
	return tl, fmt.Sprintf("plan: old format, %d objects, PINs checked; apply: **%d/%d** migrated, verified", len(p.Objects), a.ObjectsMigrated, a.ObjectsTotal)
}

// planUnchanged is our plan of an already migrated slot: exit 0, nothing to change.
func planUnchanged(t *testing.T, tl rootTool, mt *madeToken) string {
	t.Helper()
	slot := mt.slot
	res := tl.run(t, "plan", cliRequest{Slot: &slot, Datastore: mt.ds(), Confdir: confDir, SOPIN: mt.so, UserPIN: mt.user})
	p := decodeOut[cliPlan](t, res)
	if res.code != 0 || p.Changed || p.Format != "3.12" {
		t.Fatalf("plan of the migrated slot: want exit 0, changed false, format 3.12\n%s", res)
	}
	return "plan: format 3.12, nothing to change (exit 0)"
}

// fipsInfo is the FIPS line of our `info` in r (what it reads: the kernel's flag).
func fipsInfo(t *testing.T, tl rootTool) string {
	t.Helper()
	res := tl.runArgs(t, nil, "info", "--json=false")
	for _, l := range strings.Split(string(append(res.stdout, res.stderr...)), "\n") {
		if strings.HasPrefix(l, "FIPS mode:") {
			return strings.TrimSpace(l)
		}
	}
	t.Fatalf("info --json=false has no FIPS line:\n%s", res)
	return ""
}

func TestFIPS(t *testing.T) {
	gateRoots(t, ockroot.TestingFIPS)
	start := time.Now()
	rp := newReport("Debian's OpenSSL FIPS provider on the real openCryptoki 3.27 (Debian testing, amd64)", colFIPSLib, colFIPSUp, colFIPSOurs)
	rp.first = "OpenSSL config · token"
	var notes []string
	note := func(format string, args ...any) {
		notes = append(notes, "* "+fmt.Sprintf(format, args...))
	}

	const (
		rowOffOld  = "FIPS off · old format (made by 3.27 without tokversion, FIPS off)"
		rowOnOld   = "**FIPS on** · old format"
		rowOnOurs  = "**FIPS on** · migrated by ours (under FIPS)"
		rowOffOurs = "FIPS off · migrated by ours"
		rowOnUp    = "**FIPS on** · migrated by upstream's tool (with FIPS off)"
		rowOnBack  = "**FIPS on** · rolled back by ours (old format again)"
	)
	for _, row := range []string{rowOffOld, rowOnOld, rowOnOurs, rowOffOurs, rowOnUp, rowOnBack} {
		rp.row(row)
	}

	dir := t.TempDir() // the subtests' own are gone when they end
	var mt *madeToken
	// The FIPS host: the token, our apply, our rollback. Opened here: a subtest's session
	// closes when the subtest ends.
	r := openRoot(t, ockroot.TestingFIPS)
	var tl rootTool
	var origTree tree
	var upResult, upConf string // upstream's result (with FIPS off): repository copy and conf
	steps := []struct {
		name string
		f    func(t *testing.T)
	}{
		{"provider-in-force", func(t *testing.T) {
			on := r
			st := on.Stamp
			note("Root `%s`: openCryptoki %s, opensc %s, openssl and openssl-provider-fips %s / %s; `openssl fipsinstall` run in it, `/etc/ssl/openssl.cnf` OpenSSL's standard FIPS configuration (`.include /etc/ssl/fipsmodule.cnf`, providers `fips` and `base` active, `default_properties = fips=yes`).",
				on.Name(), st.Versions["opencryptoki"], st.Versions["opensc"], st.Versions["openssl"], st.Versions["openssl-provider-fips"])
			note("FIPS on: %s.", setFIPS(t, on, true))
			note("FIPS off (Debian's own openssl.cnf in the session): %s.", setFIPS(t, on, false))
		}},
		{"make-old-token-with-fips-off", func(t *testing.T) {
			mt = makeToken(t, tokenSpec{producer: "3.27", root: ockroot.TestingFIPS, confVer: "3.27", slot: fipsSlot, stdll: "libpkcs11_sw.so",
				tokname: "fips327", label: "fips-327", so: fipsSO, user: fipsUser, ecGen: true,
				prepare: func(t *testing.T, r *ockroot.Root) { setFIPS(t, r, false) }}, dir)
			if rr := readRepository(t, mt.saved, []byte(fipsSO), []byte(fipsUser)); rr.Format != tokens.FormatOld {
				t.Fatalf("the token made by 3.27 without tokversion is %v, want the old format", rr.Format)
			}
		}},
		{"fips-off-old", func(t *testing.T) {
			lib := fipsRoot(t, false)
			placeToken(t, lib, mt, mt.conf)
			cell, ok := libraryView(t, lib, mt)
			if !ok {
				t.Errorf("with FIPS off the real 3.27 does not open the token it made: %s", cell)
			}
			rp.set(rowOffOld, colFIPSLib, cell)

			up := fipsRoot(t, false)
			placeToken(t, up, mt, mt.conf)
			res, _, out := upstreamRun(t, up, mt)
			want := "Migrated " + itoa(len(mt.before)) + " object(s) out of " + itoa(len(mt.before))
			if res.Code != 0 || !strings.Contains(out, want) {
				t.Fatalf("upstream pkcstok_migrate with FIPS off:\n%s", res)
			}
			upResult = filepath.Join(dir, "upstream")
			if err := copyRepo(up.Path(mt.ds()), upResult); err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile(up.Path(confPath))
			if err != nil {
				t.Fatal(err)
			}
			upConf = string(b)
			rp.set(rowOffOld, colFIPSUp, "migrates: exit 0, `"+want+"`")

			ours := fipsRoot(t, false)
			placeToken(t, ours, mt, mt.conf)
			_, cell = ourSteps(t, ours, mt)
			rp.set(rowOffOld, colFIPSOurs, cell)
		}},
		{"fips-on-old", func(t *testing.T) {
			setFIPS(t, r, true)
			placeToken(t, r, mt, mt.conf)
			cell, ok := libraryView(t, r, mt)
			t.Logf("with FIPS on, the real 3.27 on the old-format token: %s", cell)
			if d := diff(mustSnapshot(t, mt.saved, false), mustSnapshot(t, r.Path(mt.ds()), false), false); len(d) > 0 {
				cell += fmt.Sprintf("; the library rewrote %d file(s): %s", len(d), strings.Join(d, ", "))
			} else {
				cell += "; the repository unchanged by it"
			}
			if !ok {
				cell = "does not open it: " + cell
			}
			rp.set(rowOnOld, colFIPSLib, cell)

			up := fipsRoot(t, true)
			placeToken(t, up, mt, mt.conf)
			res, state, out := upstreamRun(t, up, mt)
			found, missing := wantedMessages(out, upstreamFIPSErrors)
			t.Logf("upstream's pkcstok_migrate with FIPS on: exit %d\n%s", res.Code, out)
			if res.Code == 0 {
				t.Errorf("upstream's pkcstok_migrate migrated the old token with FIPS on: %s", firstLine(out))
				rp.set(rowOnOld, colFIPSUp, "migrates (exit 0)")
			} else {
				if len(missing) > 0 {
					t.Errorf("upstream's pkcstok_migrate failed with FIPS on but without %q:\n%s", missing, out)
				}
				quoted := make([]string, len(found))
				for i, f := range found {
					quoted[i] = "`" + f + "`"
				}
				rp.set(rowOnOld, colFIPSUp, fmt.Sprintf("**fails** (exit %d): %s; %s", res.Code, strings.Join(quoted, ", "), state))
			}

			origTree = mustSnapshot(t, r.Path(mt.ds()), false)
			tl, cell = ourSteps(t, r, mt)
			rp.set(rowOnOld, colFIPSOurs, cell)
			note("Our `info` in the FIPS root says `%s`: it reads the kernel's flag `/proc/sys/crypto/fips_enabled`, which this machine's kernel does not have, not OpenSSL's configuration.", fipsInfo(t, tl))
		}},
		{"fips-on-migrated-by-ours", func(t *testing.T) {
			cell, ok := libraryView(t, r, mt)
			if !ok {
				t.Errorf("with FIPS on the real 3.27 does not open our migrated token: %s", cell)
			}
			rp.set(rowOnOurs, colFIPSLib, cell)
			rp.set(rowOnOurs, colFIPSUp, upstreamOnMigrated(t, r, mt, true))
			slot := mt.slot
			res := tl.run(t, "apply", cliRequest{Slot: &slot, Datastore: mt.ds(), Confdir: confDir, SOPIN: mt.so, UserPIN: mt.user})
			if res.code != 0 || decodeOut[cliResult](t, res).Changed {
				t.Fatalf("second apply: want exit 0 and changed false\n%s", res)
			}
			rp.set(rowOnOurs, colFIPSOurs, "apply again: exit 0, changed false")
		}},
		{"fips-off-migrated-by-ours", func(t *testing.T) {
			setFIPS(t, r, false)
			cell, ok := libraryView(t, r, mt)
			if !ok {
				t.Errorf("with FIPS off the real 3.27 does not open our migrated token: %s", cell)
			}
			rp.set(rowOffOurs, colFIPSLib, cell)
			rp.set(rowOffOurs, colFIPSUp, upstreamOnMigrated(t, r, mt, false))
			rp.set(rowOffOurs, colFIPSOurs, planUnchanged(t, tl, mt))
			setFIPS(t, r, true)
		}},
		{"fips-on-migrated-by-upstream", func(t *testing.T) {
			lib := fipsRoot(t, true)
			placeToken(t, lib, &madeToken{tokenSpec: mt.tokenSpec, saved: upResult}, []byte(upConf))
			cell, ok := libraryView(t, lib, mt)
			if !ok {
				t.Errorf("with FIPS on the real 3.27 does not open upstream's migrated token: %s", cell)
			}
			rp.set(rowOnUp, colFIPSLib, cell)
			rp.set(rowOnUp, colFIPSUp, "(its result with FIPS off, above)")
			rp.set(rowOnUp, colFIPSOurs, planUnchanged(t, installTool(t, lib, "amd64", mt.so, mt.user), mt))
		}},
		{"fips-on-rollback", func(t *testing.T) {
			slot := mt.slot
			res := tl.run(t, "rollback", cliRequest{Slot: &slot, Datastore: mt.ds(), Confdir: confDir})
			if res.code != 0 {
				t.Fatalf("rollback: want exit 0\n%s", res)
			}
			if d := diff(origTree, mustSnapshot(t, r.Path(mt.ds()), false), false); len(d) > 0 {
				t.Fatalf("after rollback the repository is not the one apply found:\n  %s", strings.Join(d, "\n  "))
			}
			if b, err := os.ReadFile(r.Path(confPath)); err != nil || !bytes.Equal(b, mt.conf) {
				t.Fatalf("after rollback the conf is not the original (%v):\n%s", err, b)
			}
			rp.set(rowOnBack, colFIPSOurs, fmt.Sprintf("rollback: exit 0, the repository byte for byte the one apply found (%d entries, contents, modes, owners), the conf the original", len(origTree)))
			cell, ok := libraryView(t, r, mt)
			if !ok {
				cell = "does not open it: " + cell
			}
			rp.set(rowOnBack, colFIPSLib, cell)
			rp.set(rowOnBack, colFIPSUp, "–")
		}},
	}
	for _, st := range steps {
		if !t.Run(st.name, st.f) {
			for _, row := range rp.rows {
				for _, col := range rp.cols {
					if rp.cells[[2]string{row, col}] == "" {
						rp.failed(row, col)
					}
				}
			}
			break // every later step builds on this one
		}
	}

	total := time.Since(start).Round(time.Second)
	out := rp.markdown() + "\n" + strings.Join(notes, "\n") + "\n"
	t.Logf("FIPS (%v):\n%s", total, out)
	if p := os.Getenv("PKCSTOK_FIPS_OUT"); p != "" {
		hdr := fmt.Sprintf("<!-- written by TestFIPS (make e2e) on %s in %v -->\n\n", time.Now().UTC().Format(time.RFC3339), total)
		if err := os.WriteFile(p, []byte(hdr+out), 0o644); err != nil {
			t.Error(err)
		}
	}
	if e := rp.empty(); len(e) > 0 {
		t.Errorf("cells without a result: %s", strings.Join(e, "; "))
	}
}

// upstreamOnMigrated runs upstream's pkcstok_migrate on a copy of the token r holds now (our
// migrated repository and conf, without the backups, which it would refuse), FIPS on or off,
// and records what it says; it must leave the repository as it was.
func upstreamOnMigrated(t *testing.T, r *ockroot.Root, mt *madeToken, on bool) string {
	t.Helper()
	saved := filepath.Join(t.TempDir(), "migrated")
	if err := copyRepo(r.Path(mt.ds()), saved); err != nil {
		t.Fatal(err)
	}
	conf, err := os.ReadFile(r.Path(confPath))
	if err != nil {
		t.Fatal(err)
	}
	up := fipsRoot(t, on)
	placeToken(t, up, &madeToken{tokenSpec: mt.tokenSpec, saved: saved}, conf)
	orig := mustSnapshot(t, up.Path(mt.ds()), false)
	res, _, out := upstreamRun(t, up, mt)
	t.Logf("upstream's pkcstok_migrate on the migrated token (FIPS on: %v): exit %d\n%s", on, res.Code, out)
	if d := diff(orig, mustSnapshot(t, up.Path(mt.ds()), false), false); len(d) > 0 {
		t.Errorf("upstream's pkcstok_migrate changed the migrated repository:\n  %s", strings.Join(d, "\n  "))
		return "CHANGED the migrated repository"
	}
	return fmt.Sprintf("exit %d: %s; repository unchanged", res.Code, upstreamGist(res.Code, out))
}

// upstreamGist is what upstream's output says about the outcome: when it failed, its first
// error trace line (without the source location); then the line saying what it did, or its
// last line. (-v error also traces errors of checks it recovers from: not quoted on success.)
func upstreamGist(code int, out string) string {
	lines := strings.Split(strings.TrimSpace(out), "\n")
	var parts []string
	for _, l := range lines {
		if _, msg, ok := strings.Cut(l, "ERROR: "); ok && code != 0 {
			parts = append(parts, "`"+strings.TrimSpace(msg)+"`")
			break
		}
	}
	for _, key := range []string{"already in new format", "Migrated "} {
		for _, l := range lines {
			if strings.Contains(l, key) {
				return strings.Join(append(parts, "`"+strings.TrimSpace(l)+"`"), " … ")
			}
		}
	}
	return strings.Join(append(parts, "`"+strings.TrimSpace(lines[len(lines)-1])+"`"), " … ")
}
