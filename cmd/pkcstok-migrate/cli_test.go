package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/ocktools/pkcstok-migrate/schema"
)

// go test ./cmd/pkcstok-migrate -run 'UpToDate' -update rewrites the generated files (make man).
var update = flag.Bool("update", false, "rewrite packaging/pkcstok-migrate.1 and the bash completion from the command table")

const (
	manFile        = "../../packaging/pkcstok-migrate.1"
	completionFile = "../../packaging/pkcstok-migrate.bash-completion"
)

func checkGenerated(t *testing.T, path, want string) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run 'make man')", err)
	}
	if string(got) != want {
		t.Fatalf("%s differs from what the command table in cli.go generates: run 'make man' and commit it", path)
	}
}

// TestManPageUpToDate: the committed man page is exactly what the table renders, so the page
// cannot drift from the parser.
func TestManPageUpToDate(t *testing.T) { checkGenerated(t, manFile, manPage()) }

func TestBashCompletionUpToDate(t *testing.T) { checkGenerated(t, completionFile, bashCompletion()) }

// TestManPageRenders formats the page with groff and wants no warning, and every flag,
// subcommand, error code and file of the table in the text.
func TestManPageRenders(t *testing.T) {
	groff, err := exec.LookPath("groff")
	if err != nil {
		t.Skip("groff not installed")
	}
	cmd := exec.Command(groff, "-man", "-Tutf8", "-ww", "-rLL=100n")
	cmd.Stdin = strings.NewReader(manPage())
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil || errb.Len() > 0 {
		t.Fatalf("groff: %v: %s", err, errb.String())
	}
	// Strip overstriking (bold/underline) to plain text.
	var plain []byte
	for _, c := range out.Bytes() {
		if c == '\b' && len(plain) > 0 {
			plain = plain[:len(plain)-1]
			continue
		}
		plain = append(plain, c)
	}
	text := strings.ReplaceAll(string(plain), "\u2010", "-")
	text = strings.ReplaceAll(text, "\u2212", "-")
	flat := strings.Join(strings.Fields(text), " ")
	var want []string
	for _, c := range commands {
		want = append(want, "pkcstok-migrate "+c.name)
		for _, name := range c.flags {
			want = append(want, flagByName(name).flagLine())
		}
	}
	for _, o := range legacyOpts {
		want = append(want, "--"+o.long)
	}
	for _, x := range errorCodes {
		want = append(want, string(x.code))
	}
	want = append(want, "_BAK", "_PKCSTOK_MIGRATE_TMP", "_PKCSTOK_MIGRATE_JOURNAL", "opencryptoki.conf_BAK", "_ROLLED_BACK", "EXIT STATUS", "EXAMPLES")
	for _, w := range want {
		if !strings.Contains(flat, w) {
			t.Errorf("rendered man page lacks %q", w)
		}
	}
}

// TestLegacyUsageUnchanged: the table renders upstream's usage text byte for byte.
func TestLegacyUsageUnchanged(t *testing.T) {
	const upstream = "usage: pkcstok_migrate [-h] [-s|--slotid slotid] [-d|--datastore datastore] [-c|--confdir confdir] [-u|--userpin userpin] [-p|--sopin sopin] [-v|--verbose level]\n" +
		"\n" +
		"\t-h, --help              Show this help\n" +
		"\t-s, --slotid            PKCS slot number (required)\n" +
		"\t-d, --datastore         token datastore location (required)\n" +
		"\t-c, --confdir           location of opencryptoki.conf (required)\n" +
		"\t-u, --userpin           token user pin (prompted if not specified)\n" +
		"\t-p, --sopin             token SO pin (prompted if not specified)\n" +
		"\t-v, --verbose           verbose level: none, error, warn, info, devel, debug\n" +
		"\n" +
		"PINs on the command line are visible to other users; pkcstok-migrate also reads them from\n" +
		"a terminal prompt, or use 'pkcstok-migrate plan|apply' with a JSON request on stdin.\n"
	if got := legacyUsageText(); got != upstream {
		t.Fatalf("legacy usage changed:\n%s", got)
	}
}

// TestErrorCodesMatchSchema: the man page's error codes are exactly the error schema's.
func TestErrorCodesMatchSchema(t *testing.T) {
	src, err := schema.Source(schema.Error)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Properties struct {
			Error struct {
				Properties struct {
					Code struct {
						Enum []string `json:"enum"`
					} `json:"code"`
				} `json:"properties"`
			} `json:"error"`
		} `json:"properties"`
	}
	if err := json.Unmarshal(src, &doc); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, x := range errorCodes {
		got = append(got, string(x.code))
	}
	want := doc.Properties.Error.Properties.Code.Enum
	sort.Strings(got)
	sort.Strings(want)
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("error codes of the table %v, of the schema %v", got, want)
	}
}

// TestTable: every flag a command names is in the table, every flag of the table is used, the
// parser accepts every documented flag, the schema command's kinds are the schema package's,
// and every command has a help that names its flags.
func TestTable(t *testing.T) {
	used := map[string]bool{}
	for _, c := range commands {
		if c.summary == "" || c.exit == "" {
			t.Errorf("%s: summary and exit status are required", c.name)
		}
		for _, name := range concat(c.flags, c.hidden) {
			f := flagByName(name)
			if f == nil {
				t.Fatalf("%s: flag %s is not in the table", c.name, name)
			}
			used[name] = true
			args := []string{"--" + name}
			if f.arg != "" {
				args = append(args, "x")
			}
			v, _, err := c.parse(args)
			if err != nil || !v.set[name] {
				t.Errorf("%s %v: not parsed: %v", c.name, args, err)
			}
		}
		h := c.help()
		for _, name := range c.flags {
			if !strings.Contains(h, flagByName(name).flagLine()) {
				t.Errorf("help of %s lacks --%s", c.name, name)
			}
		}
		for _, name := range c.hidden {
			if strings.Contains(h, "--"+name+" ") {
				t.Errorf("help of %s shows the hidden flag --%s", c.name, name)
			}
		}
	}
	for _, f := range flagSpecs {
		if !used[f.name] {
			t.Errorf("flag %s is in the table but no command takes it", f.name)
		}
	}
	var kinds []string
	for _, k := range schema.Kinds() {
		kinds = append(kinds, string(k))
	}
	if got := strings.Join(commandByName("schema").choices, " "); got != strings.Join(kinds, " ") {
		t.Errorf("schema command lists %q, the schema package %q", got, kinds)
	}
}

// TestBashCompletionWorks sources the generated script in bash and completes a few lines.
func TestBashCompletionWorks(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("bash not installed")
	}
	dir := t.TempDir()
	script := filepath.Join(dir, "completion.bash")
	if err := os.WriteFile(script, []byte(bashCompletion()), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "confdir-here"), 0o755); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		line string // words; the last one is being completed
		want []string
		not  []string
	}{
		{"pkcstok-migrate in", []string{"info"}, []string{"plan"}},
		{"pkcstok-migrate ", []string{"plan", "apply", "rollback", "info", "schema", "version", "help"}, nil},
		{"pkcstok-migrate info --", []string{"--confdir", "--state-dir", "--json=false", "--help"}, []string{"--slot"}},
		{"pkcstok-migrate plan --all", []string{"--all-slots"}, nil},
		{"pkcstok-migrate apply --pl", []string{"--plan"}, nil},
		{"pkcstok-migrate schema ", []string{"request", "plan", "result", "error", "info"}, nil},
		{"pkcstok-migrate help ro", []string{"rollback"}, nil},
		{"pkcstok-migrate plan --confdir conf", []string{"confdir-here"}, nil},
		{"pkcstok-migrate --sl", []string{"--slotid"}, nil},
		{"pkcstok-migrate -s 3 -v d", []string{"devel", "debug"}, nil},
	}
	for _, c := range cases {
		words := strings.Split(c.line, " ")
		var quoted []string
		for _, w := range words {
			quoted = append(quoted, "'"+w+"'")
		}
		prog := ". " + script + "\nCOMP_WORDS=(" + strings.Join(quoted, " ") + ")\nCOMP_CWORD=" +
			strconv.Itoa(len(words)-1) + "\n_pkcstok_migrate\nprintf '%s\\n' \"${COMPREPLY[@]}\"\n"
		cmd := exec.Command(bash, "--norc", "--noprofile", "-c", prog)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%q: %v\n%s", c.line, err, out)
		}
		got := strings.Fields(string(out))
		for _, w := range c.want {
			if !slices.Contains(got, w) {
				t.Errorf("%q: completions %v lack %q", c.line, got, w)
			}
		}
		for _, w := range c.not {
			if slices.Contains(got, w) {
				t.Errorf("%q: completions %v hold %q", c.line, got, w)
			}
		}
	}
}
