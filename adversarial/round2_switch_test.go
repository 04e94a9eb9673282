package adversarial

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/ocktools/pkcstok-migrate/internal/procscan"
)

// The second round's attacks on what root does after its switch: the backups it removes
// and the shared-memory segment it unlinks. Each is a name the token group can change.
func init() {
	attacks = append(attacks,
		attack{
			name: "r2-remove-backups-renamed-victim", group: 8, runs: 1, kind: opRemoveBackups,
			promise: "remove-backups removes by identity: the vault renamed to <ds>_BAK is refused, left alone",
			setup:   applyKeepingResult,
			pre:     member2(func(e *env) { e.oneShot(nil, "rename", e.p("{ds}_BAK"), e.p("{state}/moved_BAK")) }, "rename", "{state}/vault", "{ds}_BAK"),
			op:      removeBackups,
			check:   refusedWith("verify_failed"),
		},
		attack{
			name: "r2-remove-backups-xchg-race", group: 8, runs: 5, kind: opRemoveBackups,
			promise: "the vault exchanged with <ds>_BAK in a loop is never removed",
			setup:   applyKeepingResult,
			race:    racing("xchg", "", "{state}/vault", "{ds}_BAK"),
			op:      removeBackups,
		},
		attack{
			name: "r2-shm-symlink-after-switch", group: 8, runs: 5, kind: opApply,
			promise: "after the switch no name is resolved again: another token's /dev/shm segment stays",
			setup:   otherTokenSegment,
			race:    racing("afterswitch", "{state}", "{ds}", "{state}/othertok"),
			op:      apply,
			check:   otherSegmentKept,
		},
		attack{
			name: "r2-shm-symlink-after-rollback", group: 8, runs: 5, kind: opRollback,
			promise: "rollback: another token's /dev/shm segment stays",
			setup: func(e *env) {
				e.cleanApply()
				otherTokenSegment(e)
			},
			race:  racing("afterswitch", "{state}", "{ds}", "{state}/othertok"),
			op:    rollback,
			check: otherSegmentKept,
		},
	)
}

// member2 runs one one-shot step of hers given as a function, then one given as arguments.
func member2(first func(e *env), args ...string) func(e *env) {
	return func(e *env) {
		first(e)
		member(args...)(e)
	}
}

func applyKeepingResult(e *env) {
	e.t.Helper()
	r := e.apply()
	if !r.success() {
		e.t.Fatalf("setup apply: %s", r)
	}
	e.applied = r.doc
}

func removeBackups(e *env) *runRes {
	req := map[string]any{"slot": slot, "datastore": e.ds, "confdir": e.confdir, "backup": e.applied["backup"]}
	return e.run(opTimeout, mustJSON(req), nil, "remove-backups", "--request", "-")
}

func refusedWith(code string) func(e *env, r *runRes) []string {
	return func(e *env, r *runRes) []string {
		if r.code != 1 || r.errCode != code {
			return []string{fmt.Sprintf("want a refusal with %s: %s", code, r)}
		}
		return nil
	}
}

// otherTokenSegment makes another token's directory beside the repository and its
// shared-memory segment in /dev/shm (root 0600, as pkcsslotd makes it): the victim.
func otherTokenSegment(e *env) {
	other := e.p("{state}/othertok")
	must(e.t, os.Mkdir(other, 0o770))
	seg := segmentPath(other)
	must(e.t, os.WriteFile(seg, []byte("another token's segment\n"), 0o600))
	e.cleanups = append(e.cleanups, func() { os.Remove(seg) })
}

func segmentPath(ds string) string {
	return filepath.Join(procscan.ShmDir, strings.TrimPrefix(procscan.ShmName(ds), "/"))
}

func otherSegmentKept(e *env, r *runRes) []string {
	b, err := os.ReadFile(segmentPath(e.p("{state}/othertok")))
	if err != nil || !bytes.Equal(b, []byte("another token's segment\n")) {
		return []string{fmt.Sprintf("another token's segment was removed or changed: %v", err)}
	}
	return nil
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}
