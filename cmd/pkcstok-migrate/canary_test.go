package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// canaries are written into repository files by TestCanaryBytesNeverShown: none of them may
// show in anything plan, apply, info or the -s -d -c interface print about a repository they
// refuse. canary8 is an object name OBJ.IDX may hold (8 bytes).
const (
	canary  = "CANARY-0b4e-bytes-of-a-repository-file"
	canary8 = "CNRY0b4e"
)

// No error or output quotes bytes read from a repository file: object names from OBJ.IDX,
// values decoded from a corrupt file, the content of a file hard-linked or renamed into the
// repository. Each case puts canaries into one file of a fresh soft-small and runs plan (JSON
// and text), info (JSON and text), apply and the -s -d -c interface against it; every run
// must refuse, and no canary may be in what it prints.
func TestCanaryBytesNeverShown(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: apply and the -s -d -c interface run as root")
	}
	line := func(s string) []byte { return []byte(s + "\n") }
	filled := func(n int) []byte { return bytes.Repeat([]byte(canary), n/len(canary)+1)[:n] }
	write := func(t *testing.T, p string, b []byte, mode os.FileMode) {
		t.Helper()
		os.Remove(p)
		if err := os.WriteFile(p, b, mode); err != nil {
			t.Fatal(err)
		}
	}
	const pub = "OBotMJqQ" // an object of soft-small
	cases := []struct {
		name  string
		setup func(t *testing.T, ds, outside string)
	}{
		{"objidx_long_line", func(t *testing.T, ds, _ string) {
			write(t, filepath.Join(ds, "TOK_OBJ", "OBJ.IDX"), line(pub+"\n"+canary), 0o660)
		}},
		{"objidx_missing_object", func(t *testing.T, ds, _ string) {
			write(t, filepath.Join(ds, "TOK_OBJ", "OBJ.IDX"), line(pub+"\n"+canary8), 0o660)
		}},
		{"objidx_slash", func(t *testing.T, ds, _ string) {
			write(t, filepath.Join(ds, "TOK_OBJ", "OBJ.IDX"), line("CNR/0b4e"), 0o660)
		}},
		{"objidx_root_only_file_renamed_in", func(t *testing.T, ds, _ string) {
			// A root 0600 file of the repository a member renamed to OBJ.IDX (one link).
			write(t, filepath.Join(ds, "TOK_OBJ", "OBJ.IDX"), line(canary), 0o600)
		}},
		{"objidx_hardlinked", func(t *testing.T, ds, outside string) {
			secret := filepath.Join(outside, "secret")
			write(t, secret, line(canary8), 0o600)
			os.Remove(filepath.Join(ds, "TOK_OBJ", "OBJ.IDX"))
			if err := os.Link(secret, filepath.Join(ds, "TOK_OBJ", "OBJ.IDX")); err != nil {
				t.Fatal(err)
			}
		}},
		{"object_hardlinked", func(t *testing.T, ds, outside string) {
			secret := filepath.Join(outside, "secret")
			write(t, secret, filled(300), 0o600)
			os.Remove(filepath.Join(ds, "TOK_OBJ", pub))
			if err := os.Link(secret, filepath.Join(ds, "TOK_OBJ", pub)); err != nil {
				t.Fatal(err)
			}
		}},
		{"object_canary_bytes", func(t *testing.T, ds, _ string) {
			write(t, filepath.Join(ds, "TOK_OBJ", pub), filled(300), 0o660)
		}},
		{"nvtok_canary_bytes", func(t *testing.T, ds, _ string) {
			write(t, filepath.Join(ds, "NVTOK.DAT"), filled(300), 0o660)
		}},
		{"mk_so_canary_bytes", func(t *testing.T, ds, _ string) {
			write(t, filepath.Join(ds, "MK_SO"), filled(50), 0o660)
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			root := t.TempDir()
			tk := fixtureTokenIn(t, "soft-small", root)
			outside := filepath.Join(root, "outside")
			if err := os.Mkdir(outside, 0o700); err != nil {
				t.Fatal(err)
			}
			c.setup(t, tk.ds, outside)
			fake := filepath.Join(root, "proc")
			if err := os.Mkdir(fake, 0o755); err != nil {
				t.Fatal(err)
			}
			getenv := func(k string) string {
				switch k {
				case "PKCSTOK_MIGRATE_PROC":
					return fake
				case "PKCSTOK_MIGRATE_PIDFILES":
					return filepath.Join(root, "none.pid")
				}
				return ""
			}
			runs := []struct {
				stdin []byte
				args  []string
			}{
				{tk.request(nil), []string{"plan", "--request", "-"}},
				{tk.request(nil), []string{"plan", "--request", "-", "--json=false"}},
				{nil, []string{"info", "--confdir", tk.confdir, "--state-dir", root}},
				{nil, []string{"info", "--confdir", tk.confdir, "--state-dir", root, "--json=false"}},
				{tk.request(nil), []string{"apply", "--request", "-"}},
				{[]byte("y\n" + tk.so + "\n" + tk.user + "\n"), []string{"-s", "3", "-d", tk.ds, "-c", tk.confdir}},
			}
			for _, r := range runs {
				var stdout, stderr bytes.Buffer
				code := run(&env{args: append([]string{"pkcstok-migrate"}, r.args...), stdin: bytes.NewReader(r.stdin),
					stdout: &stdout, stderr: &stderr, getenv: getenv, euid: os.Geteuid()})
				out := stdout.String() + stderr.String()
				cmd := strings.Join(r.args[:min(2, len(r.args))], " ")
				// info reports a slot it cannot read (it reads no key file and no private
				// object without PINs) and exits 0; the others refuse.
				if want := map[bool]int{true: 0, false: 1}[r.args[0] == "info"]; code != want {
					t.Errorf("%s: exit %d, want %d:\n%s", cmd, code, want, out)
				}
				for _, s := range []string{canary, canary8, "CNR/", canary[:12]} {
					if strings.Contains(out, s) {
						t.Errorf("%s: the output quotes bytes of a repository file (%q):\n%s", cmd, s, out)
					}
				}
			}
		})
	}
}
