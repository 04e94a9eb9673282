//go:build linux

package e2e

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/ocktools/pkcstok-migrate/contract"
	"github.com/ocktools/pkcstok-migrate/tokens"
)

// The token the suite builds with the real 3.8.1 tools. Soft-token PINs are 4 to 8 bytes.
const (
	soDefault  = "87654321" // the SO PIN of a fresh 3.8.1 soft token
	soPIN      = "e2eSO-71"
	userPIN    = "e2eUs-42"
	tokenLabel = "pkcstok-e2e"

	labelPub  = "e2e-pub-data"
	labelPriv = "e2e-priv-data"
	labelAES  = "e2e-aes-key"
	labelRSA  = "e2e-rsa-key" // public and private key share it
	idAES     = "0a0b"
	idRSA     = "0102"

	ckoData, ckoPublicKey, ckoPrivateKey, ckoSecretKey = 0, 2, 3, 4
)

var (
	pubValue  = []byte("pkcstok-migrate e2e public data object \x00\x01\x7f\xfe\xff")
	privValue = []byte("pkcstok-migrate e2e PRIVATE data object \x10\x20\x30\x00\xaa")
	aesBlock  = []byte("0123456789abcdef") // one AES block, encrypted with AES-ECB (deterministic)
	signMsg   = []byte("pkcstok-migrate e2e message to sign with RSA-PKCS")
	// every object the suite creates, by label, sorted
	wantLabels = []string{labelAES, labelPriv, labelPub, labelRSA, labelRSA}
)

func TestRealOpencryptoki(t *testing.T) {
	gate(t)
	sb := newSandbox(t)
	tl := tool{bin: buildTool(t, sb.tmp), pins: [][]byte{[]byte(soPIN), []byte(userPIN)}}
	gid := pkcs11GID(t)
	slot := slotID

	// The conf: only the Soft slot, with its own tokname, so that the data store is a fresh
	// directory CONFIG_PATH/<tokname> and the system's swtok is never touched.
	conf := []byte(fmt.Sprintf("version opencryptoki-3.1\n\nslot %d\n{\nstdll = libpkcs11_sw.so\ntokname = %s\n}\n", slotID, sb.tokname))
	if err := os.WriteFile(confPath, conf, 0o644); err != nil {
		t.Fatal(err)
	}
	os.Chmod(confPath, 0o644)

	// 1. The real 3.8.1: daemon, token, objects.
	pid := sb.startSlotd(t)
	initToken(t)
	p11 := p11Tool{module: p11Module(), dir: filepath.Join(sb.tmp, "p11")}
	p11.createObjects(t)
	before := p11.observe(t)
	if !slices.Equal(before.Labels, wantLabels) {
		t.Fatalf("pkcs11-tool --list-objects before migration: labels %q, want %q", before.Labels, wantLabels)
	}
	if !bytes.Equal(before.PubData, pubValue) || !bytes.Equal(before.PrivData, privValue) {
		t.Fatalf("data objects read back wrong: %q / %q", before.PubData, before.PrivData)
	}

	// Loosen a few permissions in the original (3.8.1 does not care, root runs it): the
	// migrated copy must still come out with exactly 0660/0770 and group pkcs11 (§1.4).
	if err := os.Chmod(filepath.Join(sb.ds, "TOK_OBJ"), 0o750); err != nil {
		t.Fatal(err)
	}
	idx := readIndex(t, sb.ds)
	if len(idx) == 0 {
		t.Fatalf("no objects in %s/TOK_OBJ/OBJ.IDX", sb.ds)
	}
	first := filepath.Join(sb.ds, "TOK_OBJ", idx[0])
	if err := os.Chmod(first, 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(first, 0, 0); err != nil {
		t.Fatal(err)
	}

	// 2. Our reader on the original: every object in clear, with the labels and values made.
	orig := readRepository(t, sb.ds, []byte(soPIN), []byte(userPIN))
	checkOriginal(t, orig)
	origTree := mustSnapshot(t, sb.ds, true)
	if _, err := os.Stat(filepath.Join(shmDir, shmName(sb.ds))); err != nil {
		t.Logf("note: token shared memory %s not present before migration: %v", shmName(sb.ds), err)
	}

	req := contract.Request{Slot: &slot, Datastore: sb.ds, Confdir: confDir, SOPIN: soPIN, UserPIN: userPIN}

	// 3. apply while pkcsslotd runs: refused, nothing changed.
	r := tl.run(t, "apply", req)
	if r.code != 1 || r.errorCode() != "slot_daemon_running" {
		t.Errorf("apply with pkcsslotd %d running: want exit 1 and error code slot_daemon_running\n%s", pid, r)
	}
	if d := diff(origTree, mustSnapshot(t, sb.ds, true), true); len(d) > 0 {
		t.Errorf("apply refused but the data store changed:\n  %s", strings.Join(d, "\n  "))
	}
	checkConf(t, conf, "after the refused apply")
	checkNoSiblings(t, sb, nil, "after the refused apply")
	if _, err := os.Lstat(confPath + "_BAK"); err == nil {
		t.Errorf("apply refused but %s_BAK exists", confPath)
	}
	sb.stopSlotd(t, pid)
	if t.Failed() {
		t.FailNow()
	}

	// 4. plan: every object listed with the labels it was created with.
	r = tl.run(t, "plan", req)
	if r.code != 2 {
		t.Fatalf("plan on an old-format token: want exit 2 (changes to make)\n%s", r)
	}
	p := decodeJSON[contract.Plan](t, r)
	checkPlan(t, p, orig, sb)
	if d := diff(origTree, mustSnapshot(t, sb.ds, true), true); len(d) > 0 {
		t.Fatalf("plan changed the data store:\n  %s", strings.Join(d, "\n  "))
	}

	// 5. apply.
	r = tl.run(t, "apply", req)
	if r.code != 0 {
		t.Fatalf("apply: want exit 0\n%s", r)
	}
	res := decodeJSON[contract.Result](t, r)
	checkApplyResult(t, res, sb)

	// 6. Our 3.12 reader on the migrated store: the same clear bytes; modes and group (§1.4).
	mig := readRepository(t, sb.ds, []byte(soPIN), []byte(userPIN))
	if mig.Format != tokens.Format312 {
		t.Errorf("migrated NVTOK.DAT format %v, want 3.12", mig.Format)
	}
	if !slices.Equal(mig.Index, orig.Index) {
		t.Errorf("OBJ.IDX after migration %q, want %q", mig.Index, orig.Index)
	}
	for _, name := range orig.Index {
		o, m := orig.Objects[name], mig.Objects[name]
		switch {
		case m.Name == "":
			t.Errorf("object %s (%q) missing after migration", name, o.Label)
		case m.Format != tokens.Format312:
			t.Errorf("object %s (%q) is %v after migration, want 3.12", name, o.Label, m.Format)
		case m.Private != o.Private:
			t.Errorf("object %s (%q): private %v after migration, %v before", name, o.Label, m.Private, o.Private)
		case !bytes.Equal(m.Clear, o.Clear):
			t.Errorf("object %s (%q): clear bytes differ after migration (%d vs %d bytes)", name, o.Label, len(m.Clear), len(o.Clear))
		}
	}
	checkSizes(t, sb.ds)
	checkPerms(t, sb.ds, sb.ds+"_BAK", gid)
	if d := diff(origTree, mustSnapshot(t, sb.ds+"_BAK", false), false); len(d) > 0 {
		t.Errorf("%s_BAK is not the original repository:\n  %s", sb.ds, strings.Join(d, "\n  "))
	}
	if _, err := os.Lstat(filepath.Join(shmDir, shmName(sb.ds))); err == nil {
		t.Errorf("token shared memory %s/%s still exists after apply", shmDir, shmName(sb.ds))
	}
	migConf, err := os.ReadFile(confPath)
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^\s*tokversion\s*=\s*"?3\.12"?\s*$`).Match(migConf) {
		t.Errorf("conf after apply has no tokversion = 3.12:\n%s", migConf)
	}
	if b, err := os.ReadFile(confPath + "_BAK"); err != nil || !bytes.Equal(b, conf) {
		t.Errorf("%s_BAK is not the original conf (%v):\n%s", confPath, err, b)
	}
	checkNoSiblings(t, sb, []string{"_BAK"}, "after apply")
	if t.Failed() {
		t.FailNow()
	}

	// 7. rollback: the original repository and conf are back, byte for byte.
	r = tl.run(t, "rollback", contract.Request{Slot: &slot, Datastore: sb.ds, Confdir: confDir})
	if r.code != 0 {
		t.Fatalf("rollback: want exit 0\n%s", r)
	}
	rb := decodeJSON[contract.Result](t, r)
	if rb.Operation != "rollback" || !rb.Changed {
		t.Errorf("rollback result: operation %q changed %v, want rollback/true\n%s", rb.Operation, rb.Changed, r.stdout)
	}
	if d := diff(origTree, mustSnapshot(t, sb.ds, false), false); len(d) > 0 {
		t.Errorf("after rollback the data store is not the original:\n  %s", strings.Join(d, "\n  "))
	}
	checkConf(t, conf, "after rollback")
	// opencryptoki.conf_BAK is the conf from before the first migration: it stays.
	if b, err := os.ReadFile(confPath + "_BAK"); err != nil || !bytes.Equal(b, conf) {
		t.Errorf("after rollback %s_BAK is not the conf from before the migration (%v):\n%s", confPath, err, b)
	}
	if _, err := os.Lstat(sb.ds + "_BAK"); err == nil {
		t.Errorf("%s_BAK still exists after rollback", sb.ds)
	}
	if back := readRepository(t, sb.ds, []byte(soPIN), []byte(userPIN)); back.Format != tokens.FormatOld {
		t.Errorf("after rollback NVTOK.DAT is %v, want old", back.Format)
	}

	// 8. The real 3.8.1 sees the original objects again.
	pid = sb.startSlotd(t)
	after := p11.observe(t)
	sb.stopSlotd(t, pid)
	if !slices.Equal(after.Labels, before.Labels) {
		t.Errorf("after rollback pkcs11-tool lists %q, want %q", after.Labels, before.Labels)
	}
	if !bytes.Equal(after.PubData, pubValue) || !bytes.Equal(after.PrivData, privValue) {
		t.Errorf("after rollback data objects read %q / %q", after.PubData, after.PrivData)
	}
	if !bytes.Equal(after.AESCipher, before.AESCipher) {
		t.Errorf("after rollback the AES key encrypts differently: %x, before %x", after.AESCipher, before.AESCipher)
	}
	if !bytes.Equal(after.RSASig, before.RSASig) {
		t.Errorf("after rollback the RSA key signs differently")
	}
	if !bytes.Equal(after.RSAPub, before.RSAPub) {
		t.Errorf("after rollback the RSA public key differs")
	}
}

// ---------------------------------------------------------------------------------------
// Checks

func checkOriginal(t *testing.T, orig *readRepo) {
	t.Helper()
	if orig.Format != tokens.FormatOld {
		t.Fatalf("the 3.8.1 token's NVTOK.DAT reads as %v, want old", orig.Format)
	}
	if got := orig.labels(); !slices.Equal(got, wantLabels) {
		t.Fatalf("our reader finds labels %q in the original, want %q", got, wantLabels)
	}
	classes := map[string][]int{}
	for _, o := range orig.Objects {
		if o.Format != tokens.FormatOld {
			t.Errorf("original object %s (%q) reads as %v, want old", o.Name, o.Label, o.Format)
		}
		classes[o.Label] = append(classes[o.Label], int(o.Class))
		switch o.Label {
		case labelPub:
			if o.Private || !bytes.Contains(o.Clear, pubValue) {
				t.Errorf("public data object %s: private=%v, value found=%v", o.Name, o.Private, bytes.Contains(o.Clear, pubValue))
			}
		case labelPriv:
			if !o.Private || !bytes.Contains(o.Clear, privValue) {
				t.Errorf("private data object %s: private=%v, value found=%v", o.Name, o.Private, bytes.Contains(o.Clear, privValue))
			}
		case labelAES:
			if hex.EncodeToString(o.ID) != idAES {
				t.Errorf("AES key %s: CKA_ID %x, want %s", o.Name, o.ID, idAES)
			}
		case labelRSA:
			if hex.EncodeToString(o.ID) != idRSA {
				t.Errorf("RSA key %s: CKA_ID %x, want %s", o.Name, o.ID, idRSA)
			}
			if o.Private != (o.Class == ckoPrivateKey) {
				t.Errorf("RSA key %s class %d: private=%v", o.Name, o.Class, o.Private)
			}
		}
	}
	for label, want := range map[string][]int{labelPub: {ckoData}, labelPriv: {ckoData}, labelAES: {ckoSecretKey}, labelRSA: {ckoPublicKey, ckoPrivateKey}} {
		got := classes[label]
		sort.Ints(got)
		if !slices.Equal(got, want) {
			t.Errorf("objects labelled %q have classes %v, want %v", label, got, want)
		}
	}
}

func checkPlan(t *testing.T, p *contract.Plan, orig *readRepo, sb *sandbox) {
	t.Helper()
	if !p.Changed || p.Slot != slotID || p.TokenType != "Soft" || p.Format != "old" || !p.PINsChecked {
		t.Errorf("plan: changed=%v slot=%d token_type=%q format=%q pins_checked=%v, want true/%d/Soft/old/true",
			p.Changed, p.Slot, p.TokenType, p.Format, p.PINsChecked, slotID)
	}
	if p.Datastore != sb.ds || p.Confdir != confDir || p.Conf != confPath {
		t.Errorf("plan paths: datastore %q confdir %q conf %q", p.Datastore, p.Confdir, p.Conf)
	}
	if got := strings.TrimRight(p.Token.Label, " \x00"); got != tokenLabel {
		t.Errorf("plan token label %q, want %q", got, tokenLabel)
	}
	if p.UserGroup != tokenGroup {
		t.Errorf("plan usergroup %q, want %q", p.UserGroup, tokenGroup)
	}
	if p.ConfDiff == "" {
		t.Errorf("plan: empty conf_diff, want the tokversion change")
	}
	if len(p.Incomplete) > 0 {
		t.Errorf("plan with both PINs is incomplete: %q", p.Incomplete)
	}
	var files, labels []string
	for _, o := range p.Objects {
		files = append(files, o.File)
		labels = append(labels, o.Label)
		ro, ok := orig.Objects[o.File]
		if !ok {
			t.Errorf("plan lists object %q, not in OBJ.IDX", o.File)
			continue
		}
		wantAction := contract.ActionRewrapHeader
		if ro.Private {
			wantAction = contract.ActionReencrypt
		}
		if o.Label != ro.Label || o.Private != ro.Private || o.Format != contract.FormatOld || o.Action != wantAction ||
			o.Class == nil || *o.Class != int64(ro.Class) || o.ID != hex.EncodeToString(ro.ID) {
			class := "null"
			if o.Class != nil {
				class = strconv.FormatInt(*o.Class, 10)
			}
			t.Errorf("plan object %s: label %q private %v format %q action %q class %s id %q; want %q %v old %q %d %q",
				o.File, o.Label, o.Private, o.Format, o.Action, class, o.ID, ro.Label, ro.Private, wantAction, ro.Class, hex.EncodeToString(ro.ID))
		}
	}
	if !slices.Equal(files, orig.Index) {
		t.Errorf("plan objects %q, want OBJ.IDX order %q", files, orig.Index)
	}
	sort.Strings(labels)
	if !slices.Equal(labels, wantLabels) {
		t.Errorf("plan labels %q, want %q", labels, wantLabels)
	}
	if p.Counts.Total != len(orig.Index) {
		t.Errorf("plan counts.total %d, want %d", p.Counts.Total, len(orig.Index))
	}
	if !strings.HasPrefix(p.Fingerprint, "sha256:") {
		t.Errorf("plan fingerprint %q", p.Fingerprint)
	}
}

func checkApplyResult(t *testing.T, res *contract.Result, sb *sandbox) {
	t.Helper()
	if res.Operation != "apply" || !res.Changed || !res.RepositoryChanged || !res.ConfChanged || !res.Verified {
		t.Errorf("apply result: operation %q changed %v repository_changed %v conf_changed %v verified %v",
			res.Operation, res.Changed, res.RepositoryChanged, res.ConfChanged, res.Verified)
	}
	if res.Slot != slotID || res.TokenType != "Soft" || res.Datastore != sb.ds || res.Conf != confPath {
		t.Errorf("apply result: slot %d token_type %q datastore %q conf %q", res.Slot, res.TokenType, res.Datastore, res.Conf)
	}
	if res.ObjectsTotal != len(wantLabels) || res.ObjectsMigrated != len(wantLabels) {
		t.Errorf("apply result: objects_migrated %d of %d, want %d of %d", res.ObjectsMigrated, res.ObjectsTotal, len(wantLabels), len(wantLabels))
	}
	if res.Backup == nil || res.Backup.Datastore != sb.ds+"_BAK" || res.Backup.Conf != confPath+"_BAK" {
		t.Errorf("apply result: backup %+v, want %s_BAK and %s_BAK", res.Backup, sb.ds, confPath)
	}
}

// checkConf: the conf is exactly what the suite wrote.
func checkConf(t *testing.T, want []byte, when string) {
	t.Helper()
	got, err := os.ReadFile(confPath)
	if err != nil || !bytes.Equal(got, want) {
		t.Errorf("%s: %s is not the conf the suite wrote (%v):\n%s", when, confPath, err, got)
	}
}

// checkNoSiblings: no <datastore>* entry besides the data store and the allowed suffixes.
func checkNoSiblings(t *testing.T, sb *sandbox, allowed []string, when string) {
	t.Helper()
	ents, err := os.ReadDir(configPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		n := e.Name()
		if n == sb.tokname || !strings.HasPrefix(n, sb.tokname) {
			continue
		}
		if !slices.Contains(allowed, strings.TrimPrefix(n, sb.tokname)) {
			t.Errorf("%s: unexpected %s", when, filepath.Join(configPath, n))
		}
	}
}

// checkSizes: the 3.12 key files (§1.2).
func checkSizes(t *testing.T, ds string) {
	t.Helper()
	for name, size := range map[string]int64{"NVTOK.DAT": tokens.NVTokNewSize, "MK_SO": 40, "MK_USER": 40} {
		fi, err := os.Lstat(filepath.Join(ds, name))
		if err != nil || fi.Size() != size {
			t.Errorf("migrated %s: %v, size %d, want %d", name, err, sizeOf(fi), size)
		}
	}
}

func sizeOf(fi fs.FileInfo) int64 {
	if fi == nil {
		return -1
	}
	return fi.Size()
}

// checkPerms: every directory 0770, every file 0660 (special bits included), owner root,
// group pkcs11, nothing else than directories and regular files (§1.4); but where the token
// group could not read the original (the same path in orig), never more than the original
// gave it (SECURITY.md: Debian's 3.8.1 run by root writes objects 0640 root:root).
func checkPerms(t *testing.T, ds, orig string, gid uint32) {
	t.Helper()
	n := 0
	err := filepath.WalkDir(ds, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		perm := fi.Mode() & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky)
		var want fs.FileMode
		switch {
		case fi.IsDir():
			want = 0o770
		case fi.Mode().IsRegular():
			want = 0o660
		default:
			t.Errorf("%s: not a directory or regular file (%v)", p, fi.Mode())
			return nil
		}
		n++
		rel, _ := filepath.Rel(ds, p)
		if ofi, err := os.Lstat(filepath.Join(orig, rel)); err == nil {
			want = narrowedMode(ofi, want, gid)
		}
		if perm != want {
			t.Errorf("%s: mode %v, want %v", p, perm, want)
		}
		if st.Gid != gid {
			t.Errorf("%s: group %d, want %d (%s)", p, st.Gid, gid, tokenGroup)
		}
		if st.Uid != 0 {
			t.Errorf("%s: owner %d, want root", p, st.Uid)
		}
		return nil
	})
	if err != nil {
		t.Errorf("walk %s: %v", ds, err)
	}
	t.Logf("checked modes and group of %d entries of %s", n, ds)
}

func pkcs11GID(t *testing.T) uint32 {
	t.Helper()
	g, err := user.LookupGroup(tokenGroup)
	if err != nil {
		t.Fatal(err)
	}
	gid, err := strconv.Atoi(g.Gid)
	if err != nil {
		t.Fatal(err)
	}
	return uint32(gid)
}

func mustSnapshot(t *testing.T, dir string, keep bool) tree {
	t.Helper()
	tr, err := snapshot(dir, keep, nil)
	if err != nil {
		t.Fatalf("snapshot %s: %v", dir, err)
	}
	if len(tr) == 0 {
		t.Fatalf("snapshot %s: missing", dir)
	}
	return tr
}

func readIndex(t *testing.T, ds string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(ds, "TOK_OBJ", "OBJ.IDX"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.Fields(string(b))
}

// shmName is the POSIX shared memory name the token library uses for a data store (§8.5).
func shmName(ds string) string {
	return strings.ReplaceAll(strings.TrimPrefix(ds, "/"), "/", ".")
}

// ---------------------------------------------------------------------------------------
// pkcsconf and pkcs11-tool

func run(t *testing.T, stdin []byte, name string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(name, args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	if err := guarded(cmd.Run); err != nil {
		t.Fatalf("%s %s: %v\nstdout: %s\nstderr: %s", name, strings.Join(args, " "), err, so.Bytes(), se.Bytes())
	}
	return so.Bytes()
}

// initToken: label (on stdin) with the default SO PIN, new SO PIN, user PIN.
func initToken(t *testing.T) {
	t.Helper()
	s := strconv.Itoa(slotID)
	run(t, []byte(tokenLabel+"\n"), pkcsconfBin, "-I", "-c", s, "-S", soDefault)
	run(t, nil, pkcsconfBin, "-P", "-c", s, "-S", soDefault, "-n", soPIN)
	run(t, nil, pkcsconfBin, "-u", "-c", s, "-S", soPIN, "-n", userPIN)
	info := run(t, nil, pkcsconfBin, "-t", "-c", s)
	if !bytes.Contains(info, []byte("Label: "+tokenLabel)) || !bytes.Contains(info, []byte("USER_PIN_INITIALIZED")) {
		t.Fatalf("pkcsconf -t after initialisation:\n%s", info)
	}
}

type p11Tool struct {
	module string
	dir    string // scratch files
}

func (p p11Tool) cmd(t *testing.T, login bool, args ...string) []byte {
	t.Helper()
	a := []string{"--module", p.module, "--slot", strconv.Itoa(slotID)}
	if login {
		a = append(a, "--login", "--pin", userPIN)
	}
	return run(t, nil, p11toolBin, append(a, args...)...)
}

func (p p11Tool) file(t *testing.T, name string, data []byte) string {
	t.Helper()
	if err := os.MkdirAll(p.dir, 0o700); err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(p.dir, name)
	if data != nil {
		if err := os.WriteFile(f, data, 0o600); err != nil {
			t.Fatal(err)
		}
	} else {
		os.Remove(f)
	}
	return f
}

// createObjects makes the token objects through PKCS#11.
func (p p11Tool) createObjects(t *testing.T) {
	t.Helper()
	p.cmd(t, true, "--write-object", p.file(t, "pub.in", pubValue), "--type", "data", "--label", labelPub)
	p.cmd(t, true, "--write-object", p.file(t, "priv.in", privValue), "--type", "data", "--label", labelPriv, "--private")
	p.cmd(t, true, "--keygen", "--key-type", "AES:16", "--label", labelAES, "--id", idAES)
	p.cmd(t, true, "--keypairgen", "--key-type", "rsa:2048", "--label", labelRSA, "--id", idRSA)
}

// view is what the real library shows of the token.
type view struct {
	Labels            []string // sorted, from --list-objects (logged in)
	PubData, PrivData []byte
	AESCipher         []byte // AES-ECB of aesBlock
	RSASig            []byte // RSA-PKCS signature of signMsg (deterministic)
	RSAPub            []byte // DER of the public key
}

func (p p11Tool) observe(t *testing.T) view {
	t.Helper()
	var v view
	list := p.cmd(t, true, "--list-objects")
	for _, line := range strings.Split(string(list), "\n") {
		line = strings.TrimSpace(line)
		if l, ok := strings.CutPrefix(line, "label:"); ok {
			v.Labels = append(v.Labels, strings.Trim(strings.TrimSpace(l), "'"))
		}
	}
	sort.Strings(v.Labels)
	read := func(login bool, name string, args ...string) []byte {
		out := p.file(t, name, nil)
		p.cmd(t, login, append(args, "--output-file", out)...)
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	v.PubData = read(false, "pub.out", "--read-object", "--type", "data", "--label", labelPub)
	v.PrivData = read(true, "priv.out", "--read-object", "--type", "data", "--label", labelPriv)
	v.AESCipher = read(true, "aes.out", "--encrypt", "--mechanism", "AES-ECB", "--label", labelAES, "--input-file", p.file(t, "aes.in", aesBlock))
	v.RSASig = read(true, "sig.out", "--sign", "--mechanism", "RSA-PKCS", "--label", labelRSA, "--input-file", p.file(t, "msg.in", signMsg))
	v.RSAPub = read(false, "pub.der", "--read-object", "--type", "pubkey", "--label", labelRSA)
	if len(v.AESCipher) != 16 || len(v.RSASig) != 256 || len(v.RSAPub) == 0 {
		t.Fatalf("pkcs11-tool: AES-ECB gave %d bytes, RSA-PKCS signature %d bytes, public key %d bytes", len(v.AESCipher), len(v.RSASig), len(v.RSAPub))
	}
	return v
}

// narrowedMode is the mode the copy of the original orig gets under the rule's mode want: the
// token group gid may read only where it could read orig (as its group, or as others).
func narrowedMode(orig fs.FileInfo, want fs.FileMode, gid uint32) fs.FileMode {
	src := orig.Mode().Perm()
	group := (src & 0o007) << 3
	if orig.Sys().(*syscall.Stat_t).Gid == gid {
		group |= src & 0o070
	}
	read := fs.FileMode(0o040)
	if orig.IsDir() {
		read = 0o050
	}
	if group&read == read {
		return want
	}
	return want & (0o700 | group)
}
