package main

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRunWritesRepositoryAndConf(t *testing.T) {
	tmp := t.TempDir()
	dir, confDir := filepath.Join(tmp, "ep11tok"), filepath.Join(tmp, "conf")
	var out bytes.Buffer
	args := []string{"-dir", dir, "-n", "25", "-type", "ep11", "-mk88", "-seed", "5", "-conf-dir", confDir, "-slot", "4"}
	if err := run(args, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	var s summary
	if err := json.Unmarshal(out.Bytes(), &s); err != nil || strings.Count(out.String(), "\n") != 1 {
		t.Fatalf("summary %q: %v", out.String(), err)
	}
	if s.N != 25 || s.Public+s.Private != 25 || s.Type != "EP11" || s.Dir != dir || s.MKFile != 88 {
		t.Errorf("summary %+v", s)
	}
	entries, err := os.ReadDir(filepath.Join(dir, "TOK_OBJ"))
	if err != nil || len(entries) != 26 {
		t.Fatalf("TOK_OBJ: %d entries, %v", len(entries), err)
	}
	for _, f := range []string{"NVTOK.DAT", "MK_SO", "MK_USER"} {
		fi, err := os.Stat(filepath.Join(dir, f))
		if err != nil || fi.Mode().Perm() != 0o660 {
			t.Errorf("%s: %v %v", f, err, fi)
		}
	}
	conf, err := os.ReadFile(filepath.Join(confDir, "opencryptoki.conf"))
	if err != nil || string(conf) != "version opencryptoki-3.11\n\nslot 4 {\n  stdll = libpkcs11_ep11.so\n}\n" {
		t.Errorf("conf %q: %v", conf, err)
	}
	if fi, _ := os.Stat(filepath.Join(confDir, "opencryptoki.conf")); fi.Mode().Perm() != 0o644 {
		t.Errorf("conf mode %v", fi.Mode())
	}

	// A second run needs -force, which replaces both.
	if err := run(args, io.Discard, io.Discard); err == nil {
		t.Error("existing repository overwritten without -force")
	}
	if err := run(append(args, "-force"), io.Discard, io.Discard); err != nil {
		t.Errorf("-force: %v", err)
	}
}

func TestRunErrors(t *testing.T) {
	tmp := t.TempDir()
	other := filepath.Join(tmp, "other")
	if err := os.MkdirAll(other, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(other, "precious"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{},
		{"-n", "3"},
		{"-dir", filepath.Join(tmp, "a"), "-type", "tpm"},
		{"-dir", filepath.Join(tmp, "b"), "-names", "random"},
		{"-dir", filepath.Join(tmp, "c"), "-n", "-1"},
		{"-dir", filepath.Join(tmp, "d"), "-so-pin", ""},
		{"-dir", filepath.Join(tmp, "e"), "-conf-dir", tmp, "-slot", "5000"},
		{"-dir", filepath.Join(tmp, "f"), "extra"},
		{"-dir", other, "-force"},
		{"-bogus"},
	} {
		if err := run(args, io.Discard, io.Discard); err == nil {
			t.Errorf("%q accepted", args)
		}
	}
	if _, err := os.Stat(filepath.Join(other, "precious")); err != nil {
		t.Error("-force removed a directory that is not a repository")
	}
}
