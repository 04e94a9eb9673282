package crashsim

import (
	"strings"
	"testing"
)

// hx writes s the way strace -xx does.
func hx(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		b.WriteString(`\x`)
		b.WriteString("0123456789abcdef"[s[i]>>4 : s[i]>>4+1])
		b.WriteString("0123456789abcdef"[s[i]&15 : s[i]&15+1])
	}
	return b.String()
}

func TestParseTraceThreadsAndResumption(t *testing.T) {
	trace := strings.Join([]string{
		`100 openat(AT_FDCWD<` + hx("/w") + `>, "` + hx("/r/a") + `", O_WRONLY|O_CREAT|O_EXCL|O_CLOEXEC, 0600 <unfinished ...>`,
		`101 write(7<` + hx("/r/b") + `>, "` + hx("hi, (there)\n") + `", 12 <unfinished ...>`,
		`100 <... openat resumed>)             = 3<` + hx("/r/a") + `>`,
		`101 <... write resumed>)              = 12`,
		`100 --- SIGURG {si_signo=SIGURG, si_code=SI_TKILL, si_pid=100, si_uid=0} ---`,
		`101 close(7<` + hx("/r/b") + `> <unfinished ...>`,
		`100 openat(AT_FDCWD<` + hx("/w") + `>, "` + hx("/r/c") + `", O_RDONLY) = 7<` + hx("/r/c") + `>`,
		`101 <... close resumed>)              = 0`,
		`100 unlinkat(3<` + hx("/r") + `>, "` + hx("x") + `", 0) = -1 ENOENT (No such file or directory)`,
		`100 renameat2(3<` + hx("/r") + `>, "` + hx("a") + `", 3<` + hx("/r") + `>, "` + hx("b") + `", RENAME_EXCHANGE) = 0`,
		`100 fcntl(1<pipe:[99]>, F_GETFL) = 0x8001 (flags O_WRONLY|O_LARGEFILE)`,
		`100 write(4<` + hx("/r/d") + `>, "` + hx("abc") + `"..., 10) = 10`,
		`101 fsync(5<` + hx("/r") + `> <unfinished ...>`,
		`100 +++ killed by SIGKILL +++`,
	}, "\n")
	calls, err := ParseTrace(strings.NewReader(trace))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, c := range calls {
		got = append(got, c.Name)
	}
	// The close is taken where it began: the descriptor number is free from there on. The
	// fsync never returned and is dropped.
	want := "openat write close openat unlinkat renameat2 fcntl write"
	if strings.Join(got, " ") != want {
		t.Fatalf("calls %q, want %q", got, want)
	}
	open := calls[0]
	if open.TID != 100 || open.Line != 3 || open.Ret != 3 || open.RetPath != "/r/a" || open.Failed() {
		t.Errorf("openat: %+v", open)
	}
	if a := open.Args[0]; !a.IsFd || a.Fd != AtFdcwd || a.Path != "/w" {
		t.Errorf("AT_FDCWD: %+v", a)
	}
	if a := open.Args[1]; !a.IsStr || string(a.Str) != "/r/a" {
		t.Errorf("name: %+v", a)
	}
	if f := open.Args[2].Flags(); !f["O_CREAT"] || !f["O_EXCL"] || f["O_TRUNC"] {
		t.Errorf("flags: %v", f)
	}
	if m, err := open.Args[3].Int(); err != nil || m != 0o600 {
		t.Errorf("mode %o %v", m, err)
	}
	w := calls[1]
	if w.TID != 101 || string(w.Args[1].Str) != "hi, (there)\n" || w.Ret != 12 || len(w.Args) != 3 {
		t.Errorf("write: %+v", w)
	}
	if c := calls[2]; c.Line != 6 || c.Args[0].Fd != 7 {
		t.Errorf("close: %+v", c)
	}
	if u := calls[4]; !u.Failed() || u.Errno != "ENOENT" {
		t.Errorf("unlinkat: %+v", u)
	}
	if r := calls[5]; len(r.Args) != 5 || r.Args[4].Text != "RENAME_EXCHANGE" || string(r.Args[3].Str) != "b" {
		t.Errorf("renameat2: %+v", r)
	}
	if f := calls[6]; f.Ret != 0x8001 || f.Args[0].Path != "pipe:[99]" {
		t.Errorf("fcntl: %+v", f)
	}
	if w := calls[7]; !w.Args[1].Truncated || string(w.Args[1].Str) != "abc" {
		t.Errorf("truncated write: %+v", w.Args[1])
	}
}

func TestParseTraceEscapes(t *testing.T) {
	calls, err := ParseTrace(strings.NewReader(`5 write(3</tmp/a\x20b>, "a\n\t\\\"\101\x00", 7) = 7` + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := string(calls[0].Args[1].Str); got != "a\n\t\\\"A\x00" {
		t.Errorf("decoded %q", got)
	}
	if calls[0].Args[0].Path != "/tmp/a b" {
		t.Errorf("path %q", calls[0].Args[0].Path)
	}
}

func TestParseTraceRefusesGarbage(t *testing.T) {
	for _, bad := range []string{
		"no-tid here",
		`7 <... write resumed>) = 3`, // no start
		`7 write(3, "\x4", 1) = 1`,   // short escape
		`7 write(3, "abc, 1) = 1`,    // unterminated
		`7 write(3, "a", 1) = x`,     // return value
		`7 write(3, "a", 1)`,         // no return
		`7 write(3, "a" junk, 1) = 1`,
		`7 write(1, "a", 1 <unfinished ...>` + "\n" + `7 write(1, "b", 1) = 1`,
	} {
		if _, err := ParseTrace(strings.NewReader(bad + "\n")); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func TestParseTraceUnknownResult(t *testing.T) {
	calls, err := ParseTrace(strings.NewReader(`9 write(3</r/a>, "a", 1) = ?` + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c := calls[0]; c.RetKnown || !c.Failed() {
		t.Errorf("unknown result taken as known: %+v", c)
	}
}

// strace -y prints a descriptor of a removed directory as 15</path>(deleted): the in-place
// rollback closes its control directory after removing it.
func TestParseTraceDeletedDescriptor(t *testing.T) {
	calls, err := ParseTrace(strings.NewReader(`100 close(15<` + hx("/r/d/PKCSTOK_MIGRATE_TMP") + `>(deleted)) = 0` + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(calls) != 1 || len(calls[0].Args) != 1 {
		t.Fatalf("calls: %+v", calls)
	}
	a := calls[0].Args[0]
	if !a.IsFd || a.Fd != 15 || a.Path != "/r/d/PKCSTOK_MIGRATE_TMP (deleted)" {
		t.Errorf("arg: %+v", a)
	}
}
