//go:build linux

package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ocktools/pkcstok-migrate/e2e/ockroot"
	"github.com/ocktools/pkcstok-migrate/tokens"
)

// TestGenerateRealFixtures rebuilds tokens/testdata/real: small repositories made by the real
// openCryptoki 3.23 without tokversion (old format), big-endian by the s390x build under qemu and
// little-endian by the amd64 build, with what the real token listed and what our reader decodes.
// The committed bytes are the real token's; run it only to replace them:
//
//	PKCSTOK_E2E_REGEN=1 go test ./e2e -count=1 -run TestGenerateRealFixtures -v
//
// (root, after make setup). It is not part of make test.
func TestGenerateRealFixtures(t *testing.T) {
	if os.Getenv("PKCSTOK_E2E_REGEN") != "1" {
		t.Skip("regenerates tokens/testdata/real: set PKCSTOK_E2E_REGEN=1")
	}
	if m := ockroot.Missing(ockroot.TrixieS390x) + ockroot.Missing(ockroot.Trixie); m != "" {
		t.Fatal(m)
	}
	out := filepath.Join(moduleRoot(t), "tokens", "testdata", "real")
	for _, c := range []struct {
		name    string
		root    ockroot.Spec
		slot    int
		stdll   string
		dir     string
		noEC    bool
		so, usr string
	}{
		{"good_be_soft_323", ockroot.TrixieS390x, 3, "libpkcs11_sw.so", "swtok", false, "BEsoSW-1", "BEusSW-1"},
		{"good_be_ica_323", ockroot.TrixieS390x, 1, "libpkcs11_ica.so", "lite", true, "BEsoIC-1", "BEusIC-1"},
		{"good_le_soft_323", ockroot.Trixie, 3, "libpkcs11_sw.so", "swtok", false, "LEsoSW-1", "LEusSW-1"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := openRoot(t, c.root)
			// No tokname: the slot's default directory, as on a real machine.
			conf := slotConf("3.23", c.slot, c.stdll, "", "")
			ts := tokenSpec{producer: "3.23 " + c.root.Arch, root: c.root, slot: c.slot, stdll: c.stdll, tokname: c.dir,
				label: strings.ReplaceAll(c.name, "_", "-"), so: c.so, user: c.usr, ecGen: true, noEC: c.noEC, rsaBits: 1024}
			ds := ts.ds()
			if err := os.RemoveAll(r.Path(ds)); err != nil {
				t.Fatal(err)
			}
			// pkcsslotd makes <dir>/TOK_OBJ only for a directory it creates itself.
			if err := os.MkdirAll(r.Path(ds+"/TOK_OBJ"), 0o770); err != nil {
				t.Fatal(err)
			}
			if err := setTokenPerms(r.Path(ds), r.Stamp.GID); err != nil {
				t.Fatal(err)
			}
			if err := r.WriteConf(conf); err != nil {
				t.Fatal(err)
			}
			stop := startSlotd(t, r)
			ctx := t.Context()
			if err := r.InitToken(ctx, c.slot, ts.label, c.so, c.usr); err != nil {
				t.Fatal(err)
			}
			v := viewer{r: r, slot: c.slot, pin: c.usr, msg: fixtureOracle}
			createObjects(t, v, ts)
			listed := v.observe(t)
			stop()

			dst := filepath.Join(out, c.name)
			if err := os.RemoveAll(dst); err != nil {
				t.Fatal(err)
			}
			if err := os.MkdirAll(filepath.Join(dst, "conf"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := copyPlain(r.Path(ds), filepath.Join(dst, "repo")); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dst, "conf", "opencryptoki.conf"), conf, 0o644); err != nil {
				t.Fatal(err)
			}
			doc := realFixture{
				Name:      c.name,
				CreatedBy: fmt.Sprintf("Debian %s opencryptoki %s %s%s, objects via pkcs11-tool (opensc %s), no tokversion in the conf", c.root.Suite, r.Version(), c.root.Arch, map[bool]string{true: " under qemu-user", false: ""}[r.Emulated()], r.Stamp.Versions["opensc"]),
				Generator: "PKCSTOK_E2E_REGEN=1 go test ./e2e -count=1 -run TestGenerateRealFixtures (e2e/realfixtures_test.go)",
				SlotID:    c.slot, TokenType: map[string]string{"libpkcs11_sw.so": "Soft", "libpkcs11_ica.so": "ICA"}[c.stdll], Stdll: c.stdll,
				SOPIN: c.so, UserPIN: c.usr, TokenLabel: ts.label, Format: "old",
				ByteOrder:  map[string]string{"s390x": "big-endian", "amd64": "little-endian"}[c.root.Arch],
				SignedData: string(fixtureOracle),
			}
			for _, o := range listed {
				doc.Listing = append(doc.Listing, listingEntry(o))
			}
			doc.Objects = decodeForFixture(t, filepath.Join(dst, "repo"), c.so, c.usr)
			b, err := json.MarshalIndent(doc, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dst, "fixture.json"), append(b, '\n'), 0o644); err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: %d objects, %d listed by the real token", dst, len(doc.Objects), len(doc.Listing))
		})
	}
}

// realFixture is tokens/testdata/real/*/fixture.json (read by tokens/real_test.go).
type realFixture struct {
	Name       string          `json:"name"`
	CreatedBy  string          `json:"created_by"`
	Generator  string          `json:"generator"`
	SlotID     int             `json:"slot_id"`
	TokenType  string          `json:"token_type"`
	Stdll      string          `json:"stdll"`
	SOPIN      string          `json:"so_pin"`
	UserPIN    string          `json:"user_pin"`
	TokenLabel string          `json:"token_label"`
	Format     string          `json:"format"`
	ByteOrder  string          `json:"byte_order"`
	Objects    []realObject    `json:"objects"`
	SignedData string          `json:"listing_signed_data"`
	Listing    []realListEntry `json:"real_token_listing"`
}

type realObject struct {
	File        string `json:"file"`
	Private     bool   `json:"private"`
	Class       uint32 `json:"class"`
	ClassName   string `json:"class_name"`
	Label       string `json:"label"`
	ID          string `json:"id,omitempty"`
	KeyType     *int   `json:"key_type,omitempty"`
	FileSize    int    `json:"file_size"`
	ClearLen    int    `json:"clear_len"`
	ClearSHA256 string `json:"clear_sha256"`
}

type realListEntry struct {
	Kind          string `json:"kind"`
	KeyType       string `json:"key_type,omitempty"`
	Label         string `json:"label"`
	ID            string `json:"id,omitempty"`
	Private       bool   `json:"private"`
	Value         string `json:"value_hex,omitempty"`
	KCV           string `json:"aes_ecb_of_zeros,omitempty"`
	ModulusSHA256 string `json:"modulus_sha256,omitempty"`
	SigSHA256     string `json:"rsa_pkcs_sig_sha256,omitempty"`
	ECPoint       string `json:"ec_point,omitempty"`
	CanSign       bool   `json:"ecdsa_signs,omitempty"`
}

func listingEntry(o p11obj) realListEntry {
	sum := func(b []byte) string {
		if b == nil {
			return ""
		}
		s := sha256.Sum256(b)
		return hex.EncodeToString(s[:])
	}
	return realListEntry{Kind: o.Kind, KeyType: o.KeyType, Label: o.Label, ID: o.ID, Private: o.Private,
		Value: hex.EncodeToString(o.Value), KCV: hex.EncodeToString(o.KCV), ModulusSHA256: sum(o.Modulus),
		SigSHA256: sum(o.Sig), ECPoint: hex.EncodeToString(o.ECPoint), CanSign: o.ECSig != nil}
}

// decodeForFixture reads every object of a repository with our reader.
func decodeForFixture(t *testing.T, dir, so, user string) []realObject {
	t.Helper()
	repo, err := tokens.Load(tokens.IOFS(os.DirFS(dir)))
	if err != nil {
		t.Fatalf("tokens.Load(%s): %v", dir, err)
	}
	keys, err := repo.Unlock([]byte(so), []byte(user))
	if err != nil {
		t.Fatalf("Unlock(%s): %v", dir, err)
	}
	defer keys.Wipe()
	var out []realObject
	for _, name := range repo.Index {
		file, err := repo.ReadObject(name)
		if err != nil {
			t.Fatal(err)
		}
		o, err := tokens.DecodeObject(name, file, keys)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		a, err := tokens.ParseFlattenedOrder(name, o.Clear, o.Order)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		s := sha256.Sum256(o.Clear)
		ro := realObject{File: name, Private: o.Private, Class: a.Class, ClassName: tokens.ClassName(a.Class), Label: string(a.Label),
			ID: hex.EncodeToString(a.ID), FileSize: len(file), ClearLen: len(o.Clear), ClearSHA256: hex.EncodeToString(s[:])}
		if a.KeyType != nil {
			kt := int(*a.KeyType)
			ro.KeyType = &kt
		}
		out = append(out, ro)
	}
	return out
}

// copyPlain copies a tree of directories and regular files (modes 0755/0644: git keeps none).
func copyPlain(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		if !d.Type().IsRegular() {
			return fmt.Errorf("%s: not a regular file", p)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(target, b, 0o644)
	})
}
