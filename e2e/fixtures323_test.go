//go:build linux

package e2e

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/ocktools/pkcstok-migrate/e2e/ockroot"
)

// Every Soft-token fixture with PINs (tokens/testdata/fixtures) migrated by our tool inside
// the trixie root and loaded by the real 3.23: the listing must be the one the real 3.27 showed
// on upstream's result (fixture.json real_token_listing_after).

// fixtureOracle is the message whose RSA-PKCS signature fixture.json records (sig_sha256).
var fixtureOracle = []byte("oracle")

type fixtureDoc struct {
	SlotID    int    `json:"slot_id"`
	TokenType string `json:"token_type"`
	SOPIN     string `json:"so_pin"`
	UserPIN   string `json:"user_pin"`
	Label     string `json:"token_label"`
	Objects   []struct {
		File     string `json:"file"`
		LabelHex string `json:"CKA_LABEL_hex"`
	} `json:"objects"`
	After []fixtureObj `json:"real_token_listing_after"`
}

type fixtureObj struct {
	Class         int    `json:"class"`
	Private       bool   `json:"private"`
	Label         string `json:"label"`
	ID            string `json:"id"`
	KeyType       *int   `json:"key_type"`
	Value         string `json:"value"`
	KCV           string `json:"kcv"`
	ModulusSHA256 string `json:"modulus_sha256"`
	SigSHA256     string `json:"sig_sha256"`
	ECPointSHA256 string `json:"ec_point_sha256"`
	ValueSHA256   string `json:"value_sha256"`
	CanSign       *bool  `json:"can_sign"`
}

// fixtureBytes: fixture.json keeps label and value bytes as latin-1 code points (a UTF-8 label
// "ü" is stored as "Ã¼"); a string with a rune above U+00FF is taken as UTF-8.
func fixtureBytes(s string) []byte {
	b := make([]byte, 0, len(s))
	for _, r := range s {
		if r > 0xff {
			return []byte(s)
		}
		b = append(b, byte(r))
	}
	return b
}

var kindOfClass = map[int]string{0: "data", 1: "cert", 2: "pubkey", 3: "privkey", 4: "secrkey"}
var keyTypeName = map[int]string{0: "RSA", 3: "EC", 16: "GENERIC", 31: "AES"}

func (f fixtureObj) key() (string, error) {
	kind, ok := kindOfClass[f.Class]
	if !ok {
		return "", fmt.Errorf("class %d", f.Class)
	}
	kt := ""
	if f.KeyType != nil {
		if kt, ok = keyTypeName[*f.KeyType]; !ok {
			return "", fmt.Errorf("key type %d", *f.KeyType)
		}
	}
	return kind + "/" + kt + "/" + string(fixtureBytes(f.Label)) + "/" + strings.ToLower(f.ID), nil
}

// compareFixture checks a real listing against fixture.json's.
func compareFixture(want []fixtureObj, got listing) []string {
	var d []string
	g := got.byKey()
	seen := map[string]bool{}
	for _, f := range want {
		k, err := f.key()
		if err != nil {
			d = append(d, fmt.Sprintf("fixture object %q: unknown %v", f.Label, err))
			continue
		}
		seen[k] = true
		o, ok := g[k]
		if !ok {
			d = append(d, "missing "+k)
			continue
		}
		hexEq := func(what, wantHex string, b []byte) {
			if wantHex != "" && !strings.EqualFold(wantHex, hex.EncodeToString(b)) {
				d = append(d, fmt.Sprintf("%s: %s %x, fixture %s", k, what, b, wantHex))
			}
		}
		sumEq := func(what, wantHex string, b []byte) {
			if wantHex == "" {
				return
			}
			s := sha256.Sum256(b)
			if b == nil || !strings.EqualFold(wantHex, hex.EncodeToString(s[:])) {
				d = append(d, fmt.Sprintf("%s: sha256 of %s %x, fixture %s", k, what, s, wantHex))
			}
		}
		if o.Private != f.Private {
			d = append(d, fmt.Sprintf("%s: private %v, fixture %v", k, o.Private, f.Private))
		}
		switch o.Kind {
		case "data":
			if !bytes.Equal(o.Value, fixtureBytes(f.Value)) {
				d = append(d, fmt.Sprintf("%s: value %q, fixture %q", k, o.Value, fixtureBytes(f.Value)))
			}
		case "cert":
			sumEq("certificate", f.ValueSHA256, o.Value)
		case "pubkey":
			sumEq("modulus", f.ModulusSHA256, o.Modulus)
			sumEq("EC point", f.ECPointSHA256, o.ECPoint)
		case "privkey":
			sumEq("RSA-PKCS signature of \"oracle\"", f.SigSHA256, o.Sig)
			if f.ModulusSHA256 != "" {
				// The private modulus is not readable through pkcs11-tool: the public key with the
				// same ID must have it, and the deterministic signature above ties the two.
				pub, ok := g["pubkey/"+o.KeyType+"/"+o.Label+"/"+o.ID]
				if !ok {
					d = append(d, fmt.Sprintf("%s: no public key with the same label and ID to compare the modulus", k))
				} else {
					sumEq("modulus (of its public key)", f.ModulusSHA256, pub.Modulus)
				}
			}
			if f.CanSign != nil && *f.CanSign {
				pub, ok := g["pubkey/EC/"+o.Label+"/"+o.ID]
				switch {
				case o.Unusable != "":
					d = append(d, fmt.Sprintf("%s: cannot sign: %s", k, firstLine(o.Unusable)))
				case !ok:
					d = append(d, fmt.Sprintf("%s: no EC public key with the same label and ID", k))
				default:
					if err := verifyECSig(pub.ECPoint, o.ECSig, fixtureOracle); err != nil {
						d = append(d, fmt.Sprintf("%s: %v", k, err))
					}
				}
			}
		case "secrkey":
			if f.KCV != "" {
				if len(o.KCV) < 8 {
					d = append(d, fmt.Sprintf("%s: no AES-ECB result", k))
				} else {
					hexEq("check value", f.KCV, o.KCV[:8])
				}
			}
			if f.Value != "" {
				hexEq("value", f.Value, o.Value)
			}
		}
	}
	for k := range g {
		if !seen[k] {
			d = append(d, "not in the fixture: "+k)
		}
	}
	return d
}

func TestFixturesLoadIn323(t *testing.T) {
	gateRoots(t, ockroot.Trixie)
	start := time.Now()
	fixDir := filepath.Join(moduleRoot(t), "tokens", "testdata", "fixtures")
	for _, name := range []string{"soft-small", "soft-mixed20", "deb381-soft", "deb381-pkcs11tool", "soft-emptied-0-objects", "soft-never-used-no-objidx"} {
		t.Run(name, func(t *testing.T) { fixtureIn323(t, filepath.Join(fixDir, name)) })
	}
	t.Logf("fixtures in 3.23: %v", time.Since(start).Round(time.Second))
}

func fixtureIn323(t *testing.T, dir string) {
	b, err := os.ReadFile(filepath.Join(dir, "fixture.json"))
	if err != nil {
		t.Fatal(err)
	}
	var fx fixtureDoc
	if err := json.Unmarshal(b, &fx); err != nil {
		t.Fatalf("fixture.json: %v", err)
	}
	if fx.TokenType != "Soft" || fx.SOPIN == "" || fx.UserPIN == "" {
		t.Fatalf("not a Soft fixture with PINs: %q", fx.TokenType)
	}
	if !utf8.ValidString(fx.SOPIN) || !utf8.ValidString(fx.UserPIN) {
		t.Fatalf("PINs are not UTF-8")
	}
	conf, err := os.ReadFile(filepath.Join(dir, "before", "conf", "opencryptoki.conf"))
	if err != nil {
		t.Fatal(err)
	}
	r := openRoot(t, ockroot.Trixie)
	const ds = "/var/lib/opencryptoki/swtok" // the fixtures' slots have no tokname
	if err := os.RemoveAll(r.Path(ds)); err != nil {
		t.Fatal(err)
	}
	if err := copyRepo(filepath.Join(dir, "before", "swtok"), r.Path(ds)); err != nil {
		t.Fatal(err)
	}
	// The fixtures' empty TOK_OBJ is not kept by git (before.empty_dirs).
	if err := os.MkdirAll(r.Path(ds+"/TOK_OBJ"), 0o770); err != nil {
		t.Fatal(err)
	}
	if err := setTokenPerms(r.Path(ds), r.Stamp.GID); err != nil {
		t.Fatal(err)
	}
	if err := r.WriteConf(conf); err != nil {
		t.Fatal(err)
	}
	slot := fx.SlotID
	tl := installTool(t, r, "amd64", fx.SOPIN, fx.UserPIN)
	res := tl.run(t, "apply", cliRequest{Slot: &slot, Datastore: ds, Confdir: "/etc/opencryptoki", SOPIN: fx.SOPIN, UserPIN: fx.UserPIN})
	if res.code != 0 {
		t.Fatalf("apply: want exit 0\n%s", res)
	}
	ar := decodeOut[cliResult](t, res)
	if !ar.Changed || !ar.Verified {
		t.Errorf("apply: changed %v verified %v", ar.Changed, ar.Verified)
	}
	newConf, err := os.ReadFile(r.Path("/etc/opencryptoki/opencryptoki.conf"))
	if err != nil {
		t.Fatal(err)
	}
	if minus, plus := lineDiff(conf, newConf); len(minus) != 0 || len(plus) != 1 {
		t.Errorf("conf diff: want one added line, got -%q +%q", minus, plus)
	}
	stop := startSlotd(t, r)
	got := viewer{r: r, slot: slot, pin: fx.UserPIN, msg: fixtureOracle}.observe(t)
	stop()
	got.logTo(t, "3.23 on our migration of "+filepath.Base(dir))
	if d := compareFixture(fx.After, got); len(d) > 0 {
		t.Errorf("3.23 on our migration of %s differs from the fixture's real listing:\n  %s", filepath.Base(dir), strings.Join(d, "\n  "))
		return
	}
	// The comparison must be able to fail: one changed value in the expectation is caught.
	if mutated := mutateFixture(fx.After); mutated != nil && len(compareFixture(mutated, got)) == 0 {
		t.Errorf("self-check: a fixture listing with one value changed still compares equal")
	}
	count("fixture", "ours (amd64)", got)
	t.Logf("%s: all %d objects as the real token listed them after upstream's migration", filepath.Base(dir), len(got))
}

// mutateFixture returns a copy of want with one proof changed (nil when there is none).
func mutateFixture(want []fixtureObj) []fixtureObj {
	m := append([]fixtureObj(nil), want...)
	for i := range m {
		switch {
		case m[i].Value != "" && m[i].Class == 0:
			m[i].Value += "x"
		case m[i].KCV != "":
			m[i].KCV = "00" + m[i].KCV[2:]
		case m[i].SigSHA256 != "":
			m[i].SigSHA256 = strings.Repeat("0", 64)
		default:
			continue
		}
		return m
	}
	return nil
}
