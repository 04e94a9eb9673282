package tokens_test

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/ocktools/pkcstok-migrate/tokens"
)

// testdata/real holds small repositories written by the real openCryptoki 3.23 without
// tokversion (old format): big-endian ones by the s390x build (Soft and ICA, under qemu-user),
// a little-endian one by the amd64 build. Nothing in repo/ was written by us; fixture.json has
// the PINs, what our reader decoded when they were made, and what the real token listed
// through PKCS#11 (e2e/realfixtures_test.go rebuilds them).

type realFixture struct {
	Name      string `json:"name"`
	TokenType string `json:"token_type"`
	SOPIN     string `json:"so_pin"`
	UserPIN   string `json:"user_pin"`
	Format    string `json:"format"`
	ByteOrder string `json:"byte_order"`
	Objects   []struct {
		File        string `json:"file"`
		Private     bool   `json:"private"`
		Class       uint32 `json:"class"`
		Label       string `json:"label"`
		ID          string `json:"id"`
		KeyType     *int   `json:"key_type"`
		FileSize    int    `json:"file_size"`
		ClearLen    int    `json:"clear_len"`
		ClearSHA256 string `json:"clear_sha256"`
	} `json:"objects"`
	Listing []struct {
		Kind    string `json:"kind"`
		Label   string `json:"label"`
		ID      string `json:"id"`
		Private bool   `json:"private"`
	} `json:"real_token_listing"`
}

func loadRealFixtures(t *testing.T) map[string]*realFixture {
	t.Helper()
	paths, err := filepath.Glob("testdata/real/*/fixture.json")
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) < 3 {
		t.Fatalf("testdata/real: %d fixtures, want the BE Soft, BE ICA and LE Soft ones", len(paths))
	}
	out := map[string]*realFixture{}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		fx := &realFixture{}
		if err := json.Unmarshal(b, fx); err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		out[filepath.Dir(p)] = fx
	}
	return out
}

// Every object of each real repository decodes, in the repository's byte order, to the clear
// bytes recorded, with the class, label, ID and privacy the real token listed.
func TestReal323RepositoriesDecodeToWhatTheRealTokenListed(t *testing.T) {
	kindClass := map[string]uint32{"data": 0, "cert": 1, "pubkey": 2, "privkey": 3, "secrkey": 4}
	for dir, fx := range loadRealFixtures(t) {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			order, err := tokens.ParseByteOrder(fx.ByteOrder)
			if err != nil {
				t.Fatal(err)
			}
			repo, err := tokens.Load(tokens.IOFS(os.DirFS(filepath.Join(dir, "repo"))))
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if repo.NV.Format != tokens.FormatOld || fx.Format != "old" {
				t.Errorf("NVTOK.DAT format %v (fixture %q), want old", repo.NV.Format, fx.Format)
			}
			if repo.NV.Order != order {
				t.Errorf("NVTOK.DAT byte order %v (%s), want %v", repo.NV.Order, repo.NV.OrderEvidence, order)
			}
			if len(repo.Index) != len(fx.Objects) {
				t.Fatalf("OBJ.IDX has %d names, fixture %d objects", len(repo.Index), len(fx.Objects))
			}
			keys, err := repo.Unlock([]byte(fx.SOPIN), []byte(fx.UserPIN))
			if err != nil {
				t.Fatalf("Unlock with the fixture's PINs: %v", err)
			}
			defer keys.Wipe()
			for i, want := range fx.Objects {
				name := repo.Index[i]
				if name != want.File {
					t.Errorf("OBJ.IDX[%d] = %q, fixture %q", i, name, want.File)
					continue
				}
				file, err := repo.ReadObject(name)
				if err != nil {
					t.Fatal(err)
				}
				o, err := tokens.DecodeObject(name, file, keys)
				if err != nil {
					t.Errorf("%s: %v", name, err)
					continue
				}
				sum := sha256.Sum256(o.Clear)
				switch {
				case o.Format != tokens.FormatOld:
					t.Errorf("%s: format %v, want old", name, o.Format)
				case o.Order != tokens.OrderUnknown && o.Order != order:
					t.Errorf("%s: its bytes show %v (%s), the repository is %v", name, o.Order, o.OrderEvidence(), order)
				case o.Private != want.Private:
					t.Errorf("%s: private %v, fixture %v", name, o.Private, want.Private)
				case len(file) != want.FileSize || len(o.Clear) != want.ClearLen || hex.EncodeToString(sum[:]) != want.ClearSHA256:
					t.Errorf("%s: file %d bytes, clear %d bytes sha256 %x; fixture %d, %d, %s", name, len(file), len(o.Clear), sum, want.FileSize, want.ClearLen, want.ClearSHA256)
				}
				a, err := tokens.ParseFlattenedOrder(name, o.Clear, order)
				if err != nil {
					t.Errorf("%s: flattened object in %v: %v", name, order, err)
					continue
				}
				if a.Class != want.Class || string(a.Label) != want.Label || hex.EncodeToString(a.ID) != want.ID {
					t.Errorf("%s: class %d label %q id %x; fixture %d %q %s", name, a.Class, a.Label, a.ID, want.Class, want.Label, want.ID)
				}
				if (a.KeyType == nil) != (want.KeyType == nil) || (a.KeyType != nil && int(*a.KeyType) != *want.KeyType) {
					t.Errorf("%s: key type %v, fixture %v", name, a.KeyType, want.KeyType)
				}
			}
			// What our reader finds is what the real token listed (PKCS#11 through pkcs11-tool).
			if len(fx.Listing) != len(fx.Objects) {
				t.Errorf("the real token listed %d objects, the repository holds %d", len(fx.Listing), len(fx.Objects))
			}
			left := map[int]bool{}
			for i := range fx.Objects {
				left[i] = true
			}
			for _, l := range fx.Listing {
				found := false
				for i := range left {
					o := fx.Objects[i]
					if o.Class == kindClass[l.Kind] && o.Label == l.Label && o.ID == l.ID && o.Private == l.Private {
						delete(left, i)
						found = true
						break
					}
				}
				if !found {
					t.Errorf("listed by the real token but not in the repository: %s %q id %q private %v", l.Kind, l.Label, l.ID, l.Private)
				}
			}
		})
	}
}

// A real big-endian object read as little-endian is refused as a byte-order (corrupt) error,
// never decoded into something else; and a wrong user PIN is refused on the real bytes.
func TestRealBigEndianRepositoryRefusesLittleEndianAndWrongPIN(t *testing.T) {
	for dir, fx := range loadRealFixtures(t) {
		if fx.ByteOrder != "big-endian" {
			continue
		}
		t.Run(filepath.Base(dir), func(t *testing.T) {
			repo, err := tokens.Load(tokens.IOFS(os.DirFS(filepath.Join(dir, "repo"))))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := repo.Unlock([]byte(fx.SOPIN), []byte("wrongpin")); !errors.Is(err, tokens.ErrWrongUserPIN) {
				t.Errorf("Unlock with a wrong user PIN: %v, want ErrWrongUserPIN", err)
			}
			keys, err := repo.Unlock([]byte(fx.SOPIN), []byte(fx.UserPIN))
			if err != nil {
				t.Fatal(err)
			}
			defer keys.Wipe()
			for _, name := range repo.Index {
				file, err := repo.ReadObject(name)
				if err != nil {
					t.Fatal(err)
				}
				o, err := tokens.DecodeObjectOrder(name, file, tokens.LittleEndian, keys)
				if err == nil {
					t.Errorf("%s: decoded as little-endian (%d clear bytes)", name, len(o.Clear))
				} else if !errors.Is(err, tokens.ErrCorrupt) {
					t.Errorf("%s: as little-endian: %v, want a corrupt/byte-order error", name, err)
				}
			}
		})
	}
}
