package adversarial

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"regexp"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// The attacks on what the tool reads and lists: a root-only file hard-linked into the
// repository, and a TOK_OBJ of a million entries. They are appended to the table here.
func init() {
	attacks = append(attacks, round2Attacks()...)
	for i := range attacks {
		if attacks[i].name == "5-hardlink-to-root-file" {
			attacks[i].promise = "a root 0600 file hard-linked into TOK_OBJ is refused before it is read (corrupt_repository): nothing copied, nothing changed, no byte of it printed"
			attacks[i].check = refusedHardLink("apply", "TOK_OBJ/LINKED00")
		}
	}
}

// hardLinkVictim makes rel (below the datastore) a hard link of victims/secret, placed by the
// member: the file at rel, if any, she first renames out of the repository. Where
// fs.protected_hardlinks cannot be set to 0 root places the link (the same file in the
// repository).
func hardLinkVictim(rel string) (setup, pre func(e *env)) {
	setup = func(e *env) {
		if !e.s.setHardlinks(e.t, "0") {
			if _, err := os.Lstat(e.p(rel)); err == nil {
				must(e.t, os.Rename(e.p(rel), e.p("{state}/moved-away")))
			}
			must(e.t, os.Link(e.p("{dir}/victims/secret"), e.p(rel)))
		}
	}
	pre = func(e *env) {
		var st unix.Stat_t
		if unix.Lstat(e.p(rel), &st) == nil && st.Nlink > 1 {
			return // root placed it
		}
		if _, err := os.Lstat(e.p(rel)); err == nil {
			member("rename", rel, "{state}/moved-away")(e)
		}
		member("link", "{dir}/victims/secret", rel)(e)
		e.s.setHardlinks(e.t, e.s.hardlinkSysctl)
	}
	return setup, pre
}

// leaksVictim reports a victim's bytes in what a run printed: its ASCII prefix, or any 8
// bytes of it as they are.
func leaksVictim(e *env, r *runRes) []string {
	out := append(append([]byte{}, r.stdout...), r.stderr...)
	var v []string
	for _, vi := range e.victims {
		leaked := bytes.Contains(out, []byte("VICTIM-SECRET"))
		for i := 0; i+8 <= len(vi.secret) && !leaked; i++ {
			leaked = bytes.Contains(out, vi.secret[i:i+8])
		}
		if leaked {
			v = append(v, fmt.Sprintf("bytes of victim %s are in the output: %s", vi.name, r))
		}
	}
	return v
}

var hardLinkRefusal = regexp.MustCompile(`hard-linked|more than one link`)

// refusedHardLink: the run (op: plan, apply, legacy, info) refused the repository for the
// hard link at rel, naming it, with corrupt_repository where the output has codes, and printed
// no byte of a victim.
func refusedHardLink(op, rel string) func(e *env, r *runRes) []string {
	return func(e *env, r *runRes) []string {
		v := leaksVictim(e, r)
		out := string(r.stdout) + string(r.stderr)
		switch op {
		case "info":
			// info reports the slot and exits 0.
			if r.code != 0 || !strings.Contains(out, "unreadable") || !strings.Contains(out, "corrupt_repository") {
				v = append(v, fmt.Sprintf("info does not report the slot unreadable (corrupt_repository): %s", r))
			}
		case "legacy":
			if r.code != 1 || !strings.Contains(out, "finished with warnings/errors") {
				v = append(v, fmt.Sprintf("-s -d -c was not refused: %s", r))
			}
		default:
			if r.code != 1 || r.errCode != "corrupt_repository" {
				v = append(v, fmt.Sprintf("%s was not refused with corrupt_repository: %s", op, r))
			}
		}
		if !hardLinkRefusal.MatchString(out) || !strings.Contains(out, rel) {
			v = append(v, fmt.Sprintf("%s does not say that %s is hard-linked: %s", op, rel, r))
		}
		return v
	}
}

// The million-entry TOK_OBJ: how many, and the bounds the tool must keep.
const (
	manyEntries     = 1_000_000
	manyBoundRSSKB  = 256 << 10
	manyEntryBound  = 250_000
	manyNamePattern = `^[0-9]{12}m{228}$` // what attacker manyfiles creates
)

var manyResults = map[*env]map[string]*runRes{}

func round2Attacks() []attack {
	var out []attack
	for _, c := range []struct {
		file, rel string
		ops       []string
	}{
		{"OBJ.IDX", "{ds}/TOK_OBJ/OBJ.IDX", []string{"plan", "apply", "info", "legacy"}},
		{"object", "{ds}/TOK_OBJ/{obj0}", []string{"plan", "apply"}},
	} {
		for _, op := range c.ops {
			setup, pre := hardLinkVictim(c.rel)
			a := attack{
				name: "r2-hardlink-" + c.file + "/" + op, group: 8, runs: 1, kind: opReadOnly,
				promise: fmt.Sprintf("victims/secret hard-linked as TOK_OBJ/%s: %s refuses before reading it (corrupt_repository), prints no byte of it", strings.TrimPrefix(c.rel, "{ds}/TOK_OBJ/"), op),
				setup:   setup,
				pre:     pre,
			}
			rel := "TOK_OBJ/"
			if c.file == "OBJ.IDX" {
				rel += "OBJ.IDX"
			}
			switch op {
			case "plan":
				a.op = plan
			case "apply":
				a.kind, a.op = opApply, apply
			case "info":
				a.op = func(e *env) *runRes { return e.info(false) }
			case "legacy":
				a.kind, a.legacy, a.op = opApply, true, legacyY
			}
			a.check = func(e *env, r *runRes) []string {
				want := rel
				if c.file == "object" {
					want += e.objects[0]
				}
				return refusedHardLink(op, want)(e, r)
			}
			out = append(out, a)
		}
	}
	out = append(out, attack{
		name: "r2-million-entries-TOK_OBJ", group: 8, runs: 1, kind: opApply,
		promise: fmt.Sprintf("%d names of 240 bytes in TOK_OBJ (empty files of hers): plan, info and apply refuse with the %d-entry bound, peak RSS of each under %d MiB, nothing changed", manyEntries, manyEntryBound, manyBoundRSSKB>>10),
		op:      millionEntries,
		check:   checkMillionEntries,
	})
	return out
}

// millionEntries: the member fills TOK_OBJ (after the judge's snapshot, so that it stays the
// snapshot of the token), root runs plan, info and apply on it, then removes her files again,
// so the judge finds the token as it was.
func millionEntries(e *env) *runRes {
	objs := e.p("{ds}/TOK_OBJ")
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	start := time.Now()
	if out, err := e.attackerCmd(ctx, "manyfiles", objs, fmt.Sprint(manyEntries)).CombinedOutput(); err != nil {
		e.t.Fatalf("attacker manyfiles: %v\n%s", err, out)
	}
	made := time.Since(start)
	res := map[string]*runRes{"plan": e.plan(), "info": e.info(false)}
	r := e.apply()
	res["apply"] = r
	manyResults[e] = res
	start = time.Now()
	removed := removeMatching(e, objs, regexp.MustCompile(manyNamePattern))
	e.t.Logf("million entries: the member made %d names in %v, root removed %d in %v",
		manyEntries, made.Round(time.Second), removed, time.Since(start).Round(time.Second))
	return r
}

func checkMillionEntries(e *env, r *runRes) []string {
	var v []string
	res := manyResults[e]
	delete(manyResults, e)
	bound := regexp.MustCompile(fmt.Sprintf(`more than %d files and directories`, manyEntryBound))
	for _, op := range []string{"plan", "info", "apply"} {
		x := res[op]
		out := string(x.stdout) + string(x.stderr)
		switch {
		case x.timedOut:
			v = append(v, fmt.Sprintf("%s did not finish: %s", op, x))
		case op == "info" && (x.code != 0 || !strings.Contains(out, "unreadable") || !bound.MatchString(out)):
			v = append(v, fmt.Sprintf("info does not report the slot refused by the entry bound: %s", x))
		case op != "info" && (x.code != 1 || x.errCode != "corrupt_repository" || !bound.MatchString(x.errMsg) || !clearLimitError.MatchString(x.errMsg)):
			v = append(v, fmt.Sprintf("%s was not refused with the entry bound: %s", op, x))
		}
		if x.maxRSSKB > manyBoundRSSKB {
			v = append(v, fmt.Sprintf("%s: peak RSS %d MiB (bound %d MiB)", op, x.maxRSSKB>>10, manyBoundRSSKB>>10))
		}
		e.t.Logf("million entries: %s exit %d, peak RSS %d MiB, %v", op, x.code, x.maxRSSKB>>10, x.dur.Round(time.Millisecond))
	}
	if _, err := os.Lstat(e.ds + "_PKCSTOK_MIGRATE_TMP"); err == nil {
		v = append(v, "apply left its working copy behind")
	}
	return v
}

// removeMatching unlinks the regular files of dir whose names match re, reading the directory
// in getdents batches (never all its names at once), and returns how many it removed. An
// entry unlinked behind the directory offset does not make getdents skip or repeat one that
// is still there.
func removeMatching(e *env, dir string, re *regexp.Regexp) int {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	must(e.t, err)
	f := os.NewFile(uintptr(fd), dir)
	defer f.Close()
	n := 0
	for {
		names, err := f.Readdirnames(4096)
		for _, name := range names {
			if re.MatchString(name) && unix.Unlinkat(fd, name, 0) == nil {
				n++
			}
		}
		if err != nil {
			return n
		}
	}
}
