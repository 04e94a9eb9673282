package main

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/ocktools/pkcstok-migrate/contract"
)

// hostile is a token label that retitles root's terminal and clears its screen, plus C1
// controls, DEL, a bidi override and a byte that is not UTF-8.
const hostile = "\x1b]0;pwned\x07\x1b[2J\u009b\x7f\u202e\xff"

// noControls fails when s carries anything a terminal would act on, line ends aside.
func noControls(t *testing.T, what, s string) {
	t.Helper()
	for i, r := range s {
		if r == '\n' {
			continue
		}
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == 0x202e || r == 0xfffd && s[i:i+1] == "\xff" {
			t.Errorf("%s: control %U at %d reaches the terminal: %q", what, r, i, s)
			return
		}
	}
	if !strings.Contains(s, `\x1b]0;pwned\x07\x1b[2J`) {
		t.Errorf("%s: the escaped label is not shown: %q", what, s)
	}
}

func TestHumanOutputEscapesControlCharacters(t *testing.T) {
	p := &contract.Plan{Slot: 3, TokenType: "Soft", Datastore: "/var/lib/opencryptoki/" + hostile, Conf: "/etc/c",
		Format: "old", Changed: true, ConfDiff: "+ tokversion\n", Warnings: []string{"object " + hostile}, Incomplete: []string{hostile}}
	noControls(t, "plan summary", planSummary(p))
	r := &contract.Result{Operation: "apply", Changed: true, Datastore: hostile, Warnings: []string{hostile}, Backup: &contract.Backup{Datastore: hostile + "_BAK"}}
	noControls(t, "result summary", resultSummary(r))
	inv := &contract.Inventory{Conf: "/etc/c", Slots: []contract.SlotInfo{{Slot: 1, TokenType: "Soft", Stdll: hostile, Datastore: hostile, Reason: hostile, Warnings: []string{hostile}}}, Warnings: []string{hostile}}
	noControls(t, "info summary", infoSummary(inv))

	var stdout, stderr bytes.Buffer
	o := &output{e: &env{stdout: &stdout, stderr: &stderr}}
	o.fail(&contract.Error{Code: contract.CodeCorruptRepository, Message: "object " + hostile + ": corrupt"})
	noControls(t, "text error", stdout.String())
	o.fail(errors.New("plain " + hostile))
	noControls(t, "text error", stdout.String())
	o.warn("datastore " + hostile)
	noControls(t, "warning", stderr.String())
	stdout.Reset()
	o.multi(&contract.Multi{Plans: []contract.Plan{*p}, Skipped: []contract.SkippedSlot{{Slot: 2, Stdll: hostile, Reason: hostile}}})
	noControls(t, "all slots text", stdout.String())

	// JSON keeps the values; the encoder escapes them.
	stdout.Reset()
	o.json = true
	o.writeJSON(p)
	if !strings.Contains(stdout.String(), `\u001b]0;pwned\u0007\u001b[2J`) {
		t.Errorf("JSON changed the value: %s", stdout.String())
	}
}
