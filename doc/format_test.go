package doc

import (
	"bytes"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// formatDoc is the format reference, relative to this package's directory.
const formatDoc = "format.md"

// anchorRE is a section anchor of format.md: <a id="s8.5"></a>.
var anchorRE = regexp.MustCompile(`<a id="s(\d+(?:\.\d+)*)"></a>`)

// headingRE is a numbered heading: "## 8. Title" or "### 8.5 Title".
var headingRE = regexp.MustCompile(`^#{2,6} (\d+(?:\.\d+)*)\.? `)

// citationRE is a citation: § and a section number, then optionally more numbers joined by
// a range dash or a slash, each with or without its own § ("§7.1–7.2", "§2.3/§4.1").
var citationRE = regexp.MustCompile(`§\s?(\d+(?:\.\d+)*)((?:\s?[–/-]\s?§?\d+(?:\.\d+)*)*)`)

// moreRE picks the numbers out of a citation's continuation.
var moreRE = regexp.MustCompile(`\d+(?:\.\d+)*`)

// rfcRE is a reference to an RFC. On a line that names one, a citation is taken as the
// RFC's section ("RFC 3394 §2.2") unless the word just before it says it is ours.
var rfcRE = regexp.MustCompile(`\bRFC\s?\d+`)

// oursRE: the text right before a citation that marks it as one of format.md's.
var oursRE = regexp.MustCompile(`(?:spec|format\.md|token-format\.md|format)\s*$`)

// anchors returns the section numbers format.md has anchors for.
func anchors(t *testing.T) map[string]bool {
	t.Helper()
	b, err := os.ReadFile(formatDoc)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]bool{}
	for _, a := range anchorRE.FindAllSubmatch(b, -1) {
		m[string(a[1])] = true
	}
	if len(m) == 0 {
		t.Fatalf("%s has no section anchors", formatDoc)
	}
	return m
}

// TestFormatAnchors: every numbered heading of format.md has an anchor right before it with
// the same number, every anchor is followed by its heading, and no number is used twice.
func TestFormatAnchors(t *testing.T) {
	b, err := os.ReadFile(formatDoc)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	seen := map[string]int{}
	for i, l := range lines {
		if m := anchorRE.FindStringSubmatch(l); m != nil {
			if seen[m[1]] != 0 {
				t.Errorf("%s:%d: anchor s%s also at line %d", formatDoc, i+1, m[1], seen[m[1]])
			}
			seen[m[1]] = i + 1
			h := ""
			if i+1 < len(lines) {
				h = lines[i+1]
			}
			if hm := headingRE.FindStringSubmatch(h); hm == nil || hm[1] != m[1] {
				t.Errorf("%s:%d: anchor s%s is not followed by the heading of section %s (next line %q)", formatDoc, i+1, m[1], m[1], h)
			}
			continue
		}
		if hm := headingRE.FindStringSubmatch(l); hm != nil {
			prev := ""
			if i > 0 {
				prev = lines[i-1]
			}
			if am := anchorRE.FindStringSubmatch(prev); am == nil || am[1] != hm[1] {
				t.Errorf("%s:%d: heading of section %s has no anchor <a id=\"s%s\"></a> on the line before it", formatDoc, i+1, hm[1], hm[1])
			}
		}
	}
}

// citation is one section number cited in a file.
type citation struct {
	file    string
	line    int
	section string
	text    string
}

// citations returns the format.md sections cited in data (the contents of file).
func citations(file string, data []byte) []citation {
	var out []citation
	for n, line := range strings.Split(string(data), "\n") {
		rfc := rfcRE.FindStringIndex(line)
		for _, m := range citationRE.FindAllStringSubmatchIndex(line, -1) {
			if rfc != nil && rfc[1] <= m[0] && !oursRE.MatchString(line[:m[0]]) {
				continue // a section of the RFC the line names
			}
			text := line[m[0]:m[1]]
			secs := []string{line[m[2]:m[3]]}
			if m[4] < m[5] {
				secs = append(secs, moreRE.FindAllString(line[m[4]:m[5]], -1)...)
			}
			for _, s := range secs {
				out = append(out, citation{file: file, line: n + 1, section: s, text: text})
			}
		}
	}
	return out
}

// repoFiles lists the repository's tracked files (paths relative to root). Outside a git
// work tree (an unpacked source archive) it walks root instead, skipping .git.
func repoFiles(t *testing.T, root string) []string {
	t.Helper()
	cmd := exec.Command("git", "-C", root, "ls-files", "-z")
	if out, err := cmd.Output(); err == nil {
		var files []string
		for _, f := range bytes.Split(out, []byte{0}) {
			if len(f) > 0 {
				files = append(files, string(f))
			}
		}
		return files
	}
	var files []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && d.Name() == ".git" {
			return filepath.SkipDir
		}
		if d.Type().IsRegular() {
			rel, err := filepath.Rel(root, p)
			if err != nil {
				return err
			}
			files = append(files, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// TestCitationsResolve: every §N citation in the repository's files names a section that
// format.md has an anchor for.
func TestCitationsResolve(t *testing.T) {
	have := anchors(t)
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	var all []citation
	for _, f := range repoFiles(t, root) {
		data, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(f)))
		if err != nil {
			if os.IsNotExist(err) {
				continue // tracked but deleted in the work tree
			}
			t.Fatal(err)
		}
		if bytes.IndexByte(data, 0) >= 0 || !bytes.Contains(data, []byte("§")) {
			continue // binary, or no citation
		}
		all = append(all, citations(f, data)...)
	}
	if len(all) == 0 {
		t.Fatal("no citations found: the scan is broken")
	}
	missing := map[string][]string{}
	for _, c := range all {
		if !have[c.section] {
			missing[c.section] = append(missing[c.section], c.file+":"+strconv.Itoa(c.line)+": "+c.text)
		}
	}
	var secs []string
	for s := range missing {
		secs = append(secs, s)
	}
	sort.Strings(secs)
	for _, s := range secs {
		t.Errorf("§%s is cited but doc/%s has no section %s (anchor s%s):\n\t%s", s, formatDoc, s, s, strings.Join(missing[s], "\n\t"))
	}
	t.Logf("%d citations checked against %d sections", len(all), len(have))
}

// TestCitationScanner pins what counts as a citation.
func TestCitationScanner(t *testing.T) {
	cases := []struct {
		line string
		want []string
	}{
		{"see token-format.md §8.5 and spec §1.3", []string{"8.5", "1.3"}},
		{"the parser (§7.1–7.2), slot lookup (§7.3-7.4)", []string{"7.1", "7.2", "7.3", "7.4"}},
		{"§2.3/§4.1: no bound; §2.3/2.5 layout", []string{"2.3", "4.1", "2.3", "2.5"}},
		{"(§2.5 steps 1–2, 5)", []string{"2.5"}},
		{"§ 8.5 and §12-style notes", []string{"8.5", "12"}},
		{"AES key wrap, RFC 3394 §2.2, without padding", nil},
		{"RFC 3394 §4.1–4.6 (§4.6 is also spec §11.1).", []string{"11.1"}},
		{"no citation here: section 4", nil},
	}
	for _, c := range cases {
		var got []string
		for _, ci := range citations("x", []byte(c.line)) {
			got = append(got, ci.section)
		}
		if strings.Join(got, ",") != strings.Join(c.want, ",") {
			t.Errorf("citations(%q) = %v, want %v", c.line, got, c.want)
		}
	}
}
