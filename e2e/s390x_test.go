//go:build linux

package e2e

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ocktools/pkcstok-migrate/e2e/ockroot"
)

// The real s390x openCryptoki 3.23 under qemu-user (issue 11): Soft and ICA tokens made by it
// without tokversion are big-endian old-format repositories. Our s390x binary (under qemu, in
// the root) and our amd64 binary (native, in the same root) each migrate a copy; the real
// s390x 3.23 with tokversion = 3.12 must list every object with the same value; a rerun changes
// nothing; rollback gives 3.23 without tokversion the originals; upstream's s390x
// pkcstok_migrate on the same input loads object for object the same.

const (
	s390SO   = "s390SO-1"
	s390User = "s390Us-2"
)

func TestS390x(t *testing.T) {
	gateRoots(t, ockroot.TrixieS390x)
	start := time.Now()
	dir := t.TempDir()
	specs := []tokenSpec{
		// Small tokens: everything runs through qemu. EC only on Soft: EC key generation fails on
		// the ICA token under qemu (libica has no software fallback for it).
		{producer: "3.23 s390x Soft", root: ockroot.TrixieS390x, confVer: "3.23", slot: 3, stdll: "libpkcs11_sw.so",
			tokname: "s390sw", label: "s390x-soft", so: s390SO, user: s390User, ecGen: true},
		{producer: "3.23 s390x ICA", root: ockroot.TrixieS390x, confVer: "3.23", slot: 1, stdll: "libpkcs11_ica.so",
			tokname: "s390ica", label: "s390x-ica", so: s390SO, user: s390User, noEC: true},
	}
	for _, ts := range specs {
		mt := makeToken(t, ts, dir)
		t.Run(strings.ReplaceAll(ts.producer, " ", "-"), func(t *testing.T) { s390xOne(t, mt) })
	}
	t.Logf("s390x suite: %v", time.Since(start).Round(time.Second))
}

func s390xOne(t *testing.T, mt *madeToken) {
	slot := mt.slot
	conf0 := mt.conf
	confPath := "/etc/opencryptoki/opencryptoki.conf"
	req := cliRequest{Slot: &slot, Datastore: mt.ds(), Confdir: "/etc/opencryptoki", SOPIN: mt.so, UserPIN: mt.user}
	tokType := map[string]string{"libpkcs11_sw.so": "Soft", "libpkcs11_ica.so": "ICA"}[mt.stdll]

	keep := t.TempDir()            // outlives the subtests
	results := map[string]string{} // migrator -> host copy of its migrated repository
	var views []listing
	for _, goarch := range []string{"s390x", "amd64"} {
		migrator := "ours (" + goarch + ")"
		t.Run("ours-"+goarch, func(t *testing.T) {
			r := openRoot(t, ockroot.TrixieS390x)
			placeToken(t, r, mt, conf0)
			origTree := mustSnapshot(t, r.Path(mt.ds()), false)
			tl := installTool(t, r, goarch, mt.so, mt.user)

			res := tl.run(t, "plan", req)
			if res.code != 2 {
				t.Fatalf("plan: want exit 2\n%s", res)
			}
			p := decodeOut[cliPlan](t, res)
			if p.ByteOrder != "big-endian" || p.Format != "old" || p.TokenType != tokType || !p.PINsChecked || len(p.Objects) != len(mt.before) {
				t.Errorf("plan: byte_order %q format %q token_type %q pins_checked %v objects %d; want big-endian old %s true %d",
					p.ByteOrder, p.Format, p.TokenType, p.PINsChecked, len(p.Objects), tokType, len(mt.before))
			}
			hostWarn := slices.ContainsFunc(p.Warnings, func(w string) bool { return strings.Contains(strings.ToLower(w), "big-endian") })
			if goarch == "amd64" && !hostWarn {
				t.Errorf("plan by the amd64 binary on a big-endian repository: no warning about the byte order: %q", p.Warnings)
			}
			t.Logf("plan: byte_order %s, warnings %q", p.ByteOrder, p.Warnings)

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
			mustMatch(t, "s390x 3.23 with tokversion = 3.12 on "+migrator+"'s result", mt.producer, migrator, mt.before, after)
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
			mustMatch(t, "s390x 3.23 without tokversion after rollback", mt.producer, "", mt.before, back)
		})
	}

	// Under qemu-user the daemon's argv[0] and comm are qemu's (e2e/README.md): the tool must
	// still see it.
	for _, goarch := range []string{"s390x", "amd64"} {
		t.Run("daemon-running-"+goarch, func(t *testing.T) { daemonCheck(t, mt, goarch) })
	}

	t.Run("upstream", func(t *testing.T) {
		r := openRoot(t, ockroot.TrixieS390x)
		placeToken(t, r, mt, conf0)
		res := runUpstream(t, r, slot, mt.ds(), mt.so, mt.user)
		if res.Code != 0 || !bytes.Contains(res.Stdout, []byte("Migrated "+itoa(len(mt.before))+" object(s)")) {
			t.Fatalf("upstream s390x pkcstok_migrate:\n%s", res)
		}
		after := loadView(t, r, slot, mt.user)
		mustMatch(t, "s390x 3.23 with tokversion = 3.12 on upstream's result", mt.producer, "upstream pkcstok_migrate", mt.before, after)
		for i, v := range views {
			if d, _ := compareViews(v, after, upgMsg); len(d) > 0 {
				t.Errorf("ours (%d) and upstream's results load differently:\n  %s", i, strings.Join(d, "\n  "))
			}
		}
		// The same files of the same sizes: each object keeps its name, and a 3.12 file's size
		// follows from its clear bytes alone (spec §5.3, §5.4).
		up := sizes(t, r.Path(mt.ds()))
		for m, dir := range results {
			if d := compareSizes(up, sizes(t, dir)); len(d) > 0 {
				t.Errorf("%s's files differ from upstream's in name or size:\n  %s", m, strings.Join(d, "\n  "))
			}
		}
	})
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
