// Command pkcstok-gentoken writes an old-format (pre-3.12) openCryptoki token repository with
// generated objects, for benchmarks and tests. It uses the
// independent writer in tokens/tokentest. The data and the default PINs are test data only.
//
//	pkcstok-gentoken -dir DIR -n N [-type soft|ica|cca|ep11] [-so-pin P -user-pin P] [-mk88]
//	                 [-seed S] [-names counter|mkstemp] [-label L] [-conf-dir C -slot 3] [-force]
//
// On success it prints one JSON line: dir, type, n, public, private, bytes, seconds (and conf
// when -conf-dir is given).
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/ocktools/pkcstok-migrate/tokens"
	"github.com/ocktools/pkcstok-migrate/tokens/tokentest"
)

func main() {
	// The repository wants exactly 0660/0770; a umask that keeps those bits lets the writer
	// skip one fchmod per object file.
	syscall.Umask(0o007)
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "pkcstok-gentoken:", err)
		os.Exit(1)
	}
}

type summary struct {
	Dir     string  `json:"dir"`
	Type    string  `json:"type"`
	N       int     `json:"n"`
	Public  int     `json:"public"`
	Private int     `json:"private"`
	Bytes   int64   `json:"bytes"`
	MKFile  int     `json:"mk_file_size"`
	Conf    string  `json:"conf,omitempty"`
	Seconds float64 `json:"seconds"`
}

func parseType(s string) (tokens.Type, error) {
	switch strings.ToLower(s) {
	case "soft", "sw":
		return tokens.TypeSoft, nil
	case "ica":
		return tokens.TypeICA, nil
	case "cca":
		return tokens.TypeCCA, nil
	case "ep11":
		return tokens.TypeEP11, nil
	}
	return tokens.TypeUnknown, fmt.Errorf("unknown token type %q (want soft, ica, cca or ep11)", s)
}

func run(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("pkcstok-gentoken", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		dir      = fs.String("dir", "", "repository directory to create (must not exist or be empty)")
		n        = fs.Int("n", 0, "number of objects to generate")
		typ      = fs.String("type", "soft", "token type: soft, ica, cca or ep11")
		soPIN    = fs.String("so-pin", "sopin123", "SO PIN (test data only)")
		userPIN  = fs.String("user-pin", "user1234", "user PIN (test data only)")
		unset    = fs.Bool("user-pin-unset", false, "token whose user PIN was never set (no MK_USER)")
		mk88     = fs.Bool("mk88", false, "legacy CCA 88-byte MK files (64-byte MK)")
		seed     = fs.Int64("seed", 1, "seed; the same flags give the same repository")
		names    = fs.String("names", "counter", "object names: counter (00000000, 10000000, ...) or mkstemp (OB + 6 chars)")
		label    = fs.String("label", "", "token label (default: pkcstok bench N)")
		noObjIdx = fs.Bool("no-objidx", false, "write no TOK_OBJ/OBJ.IDX (needs -n 0)")
		workers  = fs.Int("workers", 0, "writer goroutines (0 = 4 x GOMAXPROCS)")
		confDir  = fs.String("conf-dir", "", "also write CONF_DIR/opencryptoki.conf with the slot (old format, no tokversion)")
		slot     = fs.Int("slot", 3, "slot number for -conf-dir")
		force    = fs.Bool("force", false, "replace an existing repository (only one holding NVTOK.DAT) and conf")
	)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	if *dir == "" {
		return errors.New("-dir is required")
	}
	t, err := parseType(*typ)
	if err != nil {
		return err
	}
	opts := tokentest.Options{
		Type: t, SOPIN: *soPIN, UserPIN: *userPIN, UserPINUnset: *unset, MK88: *mk88,
		Label: *label, N: *n, Seed: *seed, NoObjIdx: *noObjIdx, Workers: *workers,
		NoObjectList: true,
	}
	if *unset {
		opts.UserPIN = ""
	}
	if opts.Label == "" {
		opts.Label = fmt.Sprintf("pkcstok bench %d", *n)
	}
	switch *names {
	case "counter":
		opts.NameStyle = tokentest.NameCounter
	case "mkstemp":
		opts.NameStyle = tokentest.NameMkstemp
	default:
		return fmt.Errorf("unknown -names %q (want counter or mkstemp)", *names)
	}
	var conf []byte
	confPath := ""
	if *confDir != "" {
		if conf, err = tokentest.OldConf(*slot, t); err != nil {
			return err
		}
		confPath = filepath.Join(*confDir, "opencryptoki.conf")
	}
	if *force {
		if err := removeOldRepo(*dir); err != nil {
			return err
		}
		if confPath != "" {
			if err := os.Remove(confPath); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("remove %s: %w", confPath, err)
			}
		}
	}

	start := time.Now()
	g, err := tokentest.WriteOld(*dir, opts)
	if err != nil {
		return err
	}
	if confPath != "" {
		if err := writeConf(confPath, conf); err != nil {
			return err
		}
	}
	s := summary{
		Dir: *dir, Type: t.String(), N: g.Public + g.Private, Public: g.Public, Private: g.Private,
		Bytes: g.Bytes, MKFile: len(g.MK) + 24, Conf: confPath,
		Seconds: time.Since(start).Seconds(),
	}
	b, err := json.Marshal(s)
	if err != nil {
		return fmt.Errorf("summary: %w", err)
	}
	_, err = fmt.Fprintf(stdout, "%s\n", b)
	return err
}

// removeOldRepo removes dir for -force, but only when it is empty or looks like a token
// repository (holds NVTOK.DAT), so a mistyped -dir cannot wipe anything else.
func removeOldRepo(dir string) error {
	fi, err := os.Lstat(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("-force: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("-force: %s is not a directory", dir)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("-force: %w", err)
	}
	if len(entries) > 0 {
		if _, err := os.Lstat(filepath.Join(dir, "NVTOK.DAT")); err != nil {
			return fmt.Errorf("-force: %s is not empty and holds no NVTOK.DAT; refusing to remove it", dir)
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("-force: remove %s: %w", dir, err)
	}
	return nil
}

// writeConf writes a new opencryptoki.conf with mode 0644 (pkcsslotd refuses world-writable).
func writeConf(path string, conf []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("conf dir %s: %w", filepath.Dir(path), err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	_, err = f.Write(conf)
	if err == nil {
		err = f.Chmod(0o644)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
