package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ocktools/pkcstok-migrate/internal/testseam"
)

// An ordinary build (no -tags faultinject) holds none of the test hooks: internal/testseam is
// not among its packages, no variable's name is in the binary, and setting the variables
// changes nothing a run does.
func TestOrdinaryBuildIgnoresSeams(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	deps := func(tags ...string) string {
		args := append([]string{"list", "-deps"}, tags...)
		out, err := exec.Command("go", append(args, ".")...).Output()
		if err != nil {
			t.Fatalf("go list: %v", err)
		}
		return string(out)
	}
	const seamPkg = "github.com/ocktools/pkcstok-migrate/internal/testseam\n"
	if strings.Contains(deps(), seamPkg) {
		t.Error("an ordinary build imports internal/testseam")
	}
	if !strings.Contains(deps("-tags", "faultinject"), seamPkg) {
		t.Error("a -tags faultinject build does not import internal/testseam: this test checks nothing")
	}

	bin := filepath.Join(t.TempDir(), "pkcstok-migrate")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	b, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{testseam.Fault, testseam.Switch, testseam.Proc, testseam.PIDFiles, testseam.FIPSFile} {
		if bytes.Contains(b, []byte(name)) {
			t.Errorf("the ordinary binary holds %s", name)
		}
	}

	// Behaviour: the variables set as a test would set them change nothing.
	work := t.TempDir()
	if err := copyFixture(filepath.Join(fixtures, "soft-small", "before"), work); err != nil {
		t.Skipf("fixture: %v", err)
	}
	fips1 := filepath.Join(work, "fips1")
	if err := os.WriteFile(fips1, []byte("1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	run := func(env []string, stdin string, args ...string) map[string]any {
		t.Helper()
		cmd := exec.Command(bin, args...)
		cmd.Env = append(os.Environ(), env...)
		cmd.Stdin = strings.NewReader(stdin)
		out, _ := cmd.Output()
		var doc map[string]any
		if err := json.Unmarshal(out, &doc); err != nil {
			t.Fatalf("%v: %v: %s", args, err, out)
		}
		return doc
	}
	conf := filepath.Join(work, "conf")
	info := []string{"info", "--confdir", conf, "--state-dir", work}
	if plain, seamed := run(nil, "", info...)["fips"], run([]string{testseam.FIPSFile + "=" + fips1}, "", info...)["fips"]; !jsonEqual(plain, seamed) {
		t.Errorf("%s changed info's FIPS report: %v, with it %v", testseam.FIPSFile, plain, seamed)
	}
	req := `{"slot": 3, "datastore": "` + filepath.Join(work, "swtok") + `", "confdir": "` + conf + `", "so_pin": "sopin123", "user_pin": "user1234"}`
	if p := run([]string{testseam.Switch + "=in_place_inside"}, req, "plan", "--request", "-"); p["switch"] != "exchange" {
		t.Errorf("%s changed the plan's switch to %v", testseam.Switch, p["switch"])
	}
	if os.Geteuid() != 0 {
		return
	}
	res := run([]string{testseam.Fault + "=copy:error", testseam.Proc + "=" + t.TempDir()}, req, "apply", "--request", "-")
	if e, ok := res["error"].(map[string]any); ok && e["code"] == "slot_daemon_running" {
		t.Skipf("a pkcsslotd runs on this host: apply cannot run here (%v)", e["message"])
	}
	if res["changed"] != true {
		t.Errorf("with %s set apply did not migrate: %v", testseam.Fault, res)
	}
}

func jsonEqual(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return bytes.Equal(x, y)
}
