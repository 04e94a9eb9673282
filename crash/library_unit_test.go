package crash

import (
	"strings"
	"testing"

	"github.com/ocktools/pkcstok-migrate/crash/crashsim"
)

// The parts of the library check that run without the library (part of make unit): what the
// digest of a state covers, how pkcs11-tool's answers are read, how cut points are printed.

// TestLibKeyCoversWhatTheLibraryReads: every byte the library can read changes the digest;
// what it never opens (the data store's siblings, the in-place switch's entries inside it,
// the conf directory's other files) does not.
func TestLibKeyCoversWhatTheLibraryReads(t *testing.T) {
	fx, err := loadFixture("soft-small", 0)
	if err != nil {
		t.Fatal(err)
	}
	fx.user = "user1234"
	base, ok := libKey(fx, fx.tree)
	if !ok {
		t.Fatal("the fixture has no repository")
	}
	edit := func(f func(t *crashsim.Tree) *crashsim.Tree) [32]byte {
		c := &crashsim.Tree{Root: fx.tree.Root}
		for _, e := range fx.tree.Entries {
			e.Data = append([]byte(nil), e.Data...)
			c.Entries = append(c.Entries, e)
		}
		c = f(c)
		sortTree(c)
		k, _ := libKey(fx, c)
		return k
	}
	flip := func(p string) func(t *crashsim.Tree) *crashsim.Tree {
		return func(t *crashsim.Tree) *crashsim.Tree {
			e := t.Lookup(p)
			if e == nil || len(e.Data) == 0 {
				panic("no data at " + p)
			}
			e.Data[len(e.Data)-1] ^= 1
			return t
		}
	}
	add := func(p string, k crashsim.Kind) func(t *crashsim.Tree) *crashsim.Tree {
		return func(t *crashsim.Tree) *crashsim.Tree {
			t.Entries = append(t.Entries, crashsim.Entry{Path: p, Kind: k, Attr: crashsim.Attr{Mode: 0o600}, Data: []byte("x"), Ino: 999})
			return t
		}
	}
	var objName string
	for n := range fx.objects {
		objName = n
		break
	}
	for _, c := range []struct {
		what    string
		f       func(t *crashsim.Tree) *crashsim.Tree
		changes bool
	}{
		{"NVTOK.DAT", flip(dsName + "/NVTOK.DAT"), true},
		{"MK_SO", flip(dsName + "/MK_SO"), true},
		{"MK_USER", flip(dsName + "/MK_USER"), true},
		{"OBJ.IDX", flip(dsName + "/TOK_OBJ/OBJ.IDX"), true},
		{"an object", flip(dsName + "/TOK_OBJ/" + objName), true},
		{"the conf", flip(confPath), true},
		{"the repository's mode", func(t *crashsim.Tree) *crashsim.Tree { t.Lookup(dsName).Mode = 0o2700; return t }, true},
		{"a file's mode", func(t *crashsim.Tree) *crashsim.Tree { t.Lookup(dsName + "/NVTOK.DAT").Mode = 0o600; return t }, true},
		{"a new file in TOK_OBJ", add(dsName+"/TOK_OBJ/OBzzzzzz", crashsim.File), true},
		{"a backup beside it", add(bakName, crashsim.Dir), false},
		{"a journal beside it", add(journalName, crashsim.File), false},
		{"the in-place working copy inside it", add(dsName+"/PKCSTOK_MIGRATE_TMP", crashsim.Dir), false},
		{"the working copy's mark", add(dsName+"/PKCSTOK_MIGRATE_WORKING_COPY", crashsim.File), false},
		{"the conf's backup", add(confBakPath, crashsim.File), false},
	} {
		if got := edit(c.f) != base; got != c.changes {
			t.Errorf("%s: the digest changes: %v, want %v", c.what, got, c.changes)
		}
	}
	other := *fx
	other.user = "other123"
	if k, _ := libKey(&other, fx.tree); k == base {
		t.Error("another user PIN gives the same digest")
	}
	noRepo := &crashsim.Tree{Root: fx.tree.Root}
	for _, e := range fx.tree.Entries {
		if !strings.HasPrefix(e.Path, dsName) {
			noRepo.Entries = append(noRepo.Entries, e)
		}
	}
	if _, ok := libKey(fx, noRepo); ok {
		t.Error("a state without the repository reports one")
	}
}

// TestClassify reads answers pkcs11-tool (opensc 0.27.1) gave with the real openCryptoki 3.27.
func TestClassify(t *testing.T) {
	for _, c := range []struct {
		name           string
		code           int
		stdout, stderr string
		kind, rv       string
		objects        int
	}{
		{"good_login_ok", 0,
			"Data object 1\n  label:          'priv-data-1'\nSecret Key Object; AES length 32\n  label:      aes-key-1\nData object 3\n  label:          'pub-data-1'\n",
			"warning: PKCS11 function C_GetAttributeValue(VALUE) failed: rv = CKR_ATTRIBUTE_SENSITIVE (0x11)\n",
			libLoginOK, "", 3},
		{"good_login_ok_no_objects", 0, "", "", libLoginOK, "", 0},
		{"good_token_refused", 1, "", "error: PKCS11 function C_OpenSession failed: rv = CKR_TOKEN_NOT_PRESENT (0xe0)\nAborting.\n",
			libRefused, "C_OpenSession: CKR_TOKEN_NOT_PRESENT", 0},
		{"good_login_failed", 1, "", "error: PKCS11 function C_Login failed: rv = CKR_PIN_LOCKED (0xa4)\nAborting.\n",
			libLoginFailed, "C_Login: CKR_PIN_LOCKED", 0},
		{"fail_no_answer", 1, "", "error: util_getpass error\nAborting.\n", "", "", 0},
	} {
		kind, rv, n := classify(c.code, []byte(c.stdout), []byte(c.stderr))
		if kind != c.kind || rv != c.rv || n != c.objects {
			t.Errorf("%s: got %q %q %d, want %q %q %d", c.name, kind, rv, n, c.kind, c.rv, c.objects)
		}
	}
}

func TestRanges(t *testing.T) {
	set := map[int]bool{}
	for _, c := range []int{0, 1, 2, 5, 7, 8, 31} {
		set[c] = true
	}
	if got := ranges(set); got != "0-2, 5, 7-8, 31" {
		t.Errorf("ranges: %q", got)
	}
}
