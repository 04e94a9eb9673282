package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/term"

	"github.com/ocktools/pkcstok-migrate/apply"
	"github.com/ocktools/pkcstok-migrate/contract"
	"github.com/ocktools/pkcstok-migrate/internal/layout"
	"github.com/ocktools/pkcstok-migrate/internal/procscan"
	"github.com/ocktools/pkcstok-migrate/internal/repofs"
	"github.com/ocktools/pkcstok-migrate/plan"
)

// The upstream interface (doc/format.md §8). Where the spec marks upstream behaviour as a bug
// (DECISION) we exit 1: missing arguments, unsupported tokens, unreadable PINs, and any
// object that cannot be migrated fails the run. The conf is edited minimally instead of
// being rewritten.

type legacyArgs struct {
	slot, datastore, confdir, userPIN, soPIN, verbose string
	set                                               map[byte]bool
}

func parseLegacy(args []string) (*legacyArgs, error, bool) {
	a := &legacyArgs{set: map[byte]bool{}}
	long := map[string]byte{}
	shorts := ""
	for _, o := range legacyOpts {
		long[o.long] = o.short
		shorts += string(o.short)
	}
	for i := 0; i < len(args); i++ {
		arg := args[i]
		var opt byte
		var val string
		hasVal := false
		switch {
		case strings.HasPrefix(arg, "--"):
			name, v, ok := strings.Cut(arg[2:], "=")
			o, known := long[name]
			if !known {
				return nil, fmt.Errorf("unrecognized option '%s'", arg), false
			}
			opt, val, hasVal = o, v, ok
		case strings.HasPrefix(arg, "-") && len(arg) >= 2:
			opt = arg[1]
			if len(arg) > 2 {
				val, hasVal = arg[2:], true
			}
			if !strings.ContainsRune(shorts, rune(opt)) {
				return nil, fmt.Errorf("invalid option -- '%c'", opt), false
			}
		default:
			return nil, fmt.Errorf("unexpected argument '%s'", arg), false
		}
		if opt == 'h' {
			return a, nil, true
		}
		if !hasVal {
			if i+1 >= len(args) {
				return nil, fmt.Errorf("option requires an argument -- '%c'", opt), false
			}
			i++
			val = args[i]
		}
		a.set[opt] = true
		switch opt {
		case 's':
			a.slot = val
		case 'd':
			a.datastore = val
		case 'c':
			a.confdir = val
		case 'u':
			a.userPIN = val
		case 'p':
			a.soPIN = val
		case 'v':
			a.verbose = val
		}
	}
	return a, nil, false
}

func runLegacy(e *env, args []string) int {
	warnx := func(format string, v ...any) {
		tprintf(e.stderr, "pkcstok_migrate: "+format+"\n", v...)
	}
	out := e.stdout
	a, err, help := parseLegacy(args)
	if help {
		fmt.Fprint(out, legacyUsageText())
		return 0
	}
	if err != nil {
		tprintf(e.stderr, "pkcstok_migrate: %v\n", err)
		warnx("Parameters are required.")
		fmt.Fprint(e.stderr, legacyUsageText())
		return 1
	}
	if a.set['v'] {
		ok := false
		for _, l := range legacyLevels {
			ok = ok || l == a.verbose
		}
		if !ok {
			warnx("Invalid verbose level '%s' specified.", a.verbose)
			fmt.Fprint(e.stderr, legacyUsageText())
			return 1
		}
	}
	if e.euid != 0 {
		tprintf(e.stderr, "%s can only be used as root.\n", e.args[0])
		return 255
	}
	a.datastore = strings.TrimRight(a.datastore, "/")
	a.confdir = strings.TrimRight(a.confdir, "/")

	fmt.Fprint(out, "\npkcstok_migrate:\nSummary of input parameters:\n")
	if a.set['d'] {
		tprintf(out, "  datastore = %s \n", a.datastore)
	}
	if a.set['c'] {
		tprintf(out, "  confdir = %s \n", a.confdir)
	}
	if a.set['s'] {
		tprintf(out, "  slot ID = %s\n", a.slot)
	}
	if a.set['u'] {
		fmt.Fprint(out, "  user PIN specified\n")
	}
	if a.set['p'] {
		fmt.Fprint(out, "  SO PIN specified\n")
	}
	if a.set['v'] {
		tprintf(out, "  verbose level = %s\n", a.verbose)
	}
	fmt.Fprint(out, "\n")
	if a.set['u'] || a.set['p'] {
		warnx("PINs on the command line are visible to other users of this host.")
	}

	fail := func() int {
		fmt.Fprint(out, "pkcstok_migrate finished with warnings/errors.\n")
		return 1
	}
	// DECISION: missing arguments are failures (upstream exits 0).
	if !a.set['s'] {
		warnx("Slot ID must be specified.")
		return fail()
	}
	if !a.set['d'] {
		warnx("Data store path must be specified.")
		return fail()
	}
	if n := len(a.datastore); n > 3896 {
		warnx("Datastore path (%d characters) is too long (max = 3896).\n", n)
		return fail()
	}
	if !a.set['c'] {
		warnx("Location of opencryptoki.conf must be specified.")
		return fail()
	}
	if n := len(a.confdir); n > 3896 {
		warnx("Path to config file (%d characters) is too long (max = 3896).", n)
		return fail()
	}
	slot, err := strconv.Atoi(a.slot)
	if err != nil || slot < 0 || slot >= 1024 {
		warnx("Cannot identify a token related to given slot ID %s", a.slot)
		return fail()
	}
	if st, err := os.Lstat(a.datastore); err != nil || !st.IsDir() {
		warnx("Datastore %s does not exist.", a.datastore)
		return fail()
	}
	confPath := filepath.Join(a.confdir, layout.ConfName)
	if st, err := os.Lstat(confPath); err != nil || !st.Mode().IsRegular() {
		warnx("%s does not exist or does not contain opencryptoki.conf", a.confdir)
		return fail()
	}
	bakExists := false
	// The in-place switch of a mount point keeps its backup inside the repository.
	for _, bak := range []string{a.datastore + layout.SuffixBak, filepath.Join(a.datastore, layout.InPlaceBak)} {
		if _, err := os.Lstat(bak); err == nil && !bakExists {
			warnx("Error: datastore backup already exists already: %s", bak)
			bakExists = true
		}
	}
	// opencryptoki.conf_BAK is the conf from before the first migration: it is kept and never
	// in the way of another slot's migration (upstream refuses here, which stops the second
	// slot of a host until the backup is deleted by hand).
	if bakExists {
		warnx("Please remove the backups before running this utility.")
		return fail()
	}
	ao := applyOptions(e, &output{e: e})
	if pids, err := procscan.SlotdRunning(ao.ProcRoot, ao.PIDFiles); err != nil || len(pids) > 0 {
		warnx("Please stop pkcsslotd before running this utility.")
		return fail()
	}

	opts := plan.Options{Slot: slot, Datastore: a.datastore, Confdir: a.confdir}
	e.seams().plan(&opts)
	// A first look without PINs: slot, token type and token info.
	p, err := plan.Make(opts)
	if err != nil {
		switch contract.CodeOf(err) {
		case contract.CodeConfInvalid, contract.CodeSlotNotFound:
			tprintf(e.stderr, "%v\n", err)
			warnx("Cannot identify a token related to given slot ID %d", slot)
		case contract.CodeUnsupportedToken:
			stdll := ""
			if cf, _, err := plan.ReadConf(a.confdir); err == nil {
				if s, err := cf.Slot(uint64(slot)); err == nil {
					stdll = s.Stdll
				}
			}
			tprintf(out, "Slot ID %d points to DLL name %s, which is a unknown/unsupported token.\n", slot, stdll)
			warnx("Please check your input.")
		default:
			warnx("Cannot get the token label from NVTOK.DAT")
			warnx("%v", err)
		}
		return fail()
	}
	tprintf(out, "Slot ID %d points to DLL name %s, which is a %s token.\n", slot, p.Stdll, p.TokenType)
	info, err := tokenInfoRaw(a.datastore)
	if err != nil {
		warnx("Cannot get the token label from NVTOK.DAT")
		return fail()
	}
	tprintf(out, "Data store %s points to this token info:\n", a.datastore)
	tprintf(out, "  label           : %s\n", info.label)
	tprintf(out, "  manufacturerID  : %s\n", info.manufacturer)
	tprintf(out, "  model           : %s\n", info.model)
	tprintf(out, "  serialNumber    : %s\n", info.serial)
	tprintf(out, "  hardwareVersion : %s\n", p.Token.HardwareVersion)
	tprintf(out, "  firmwareVersion : %s\n", p.Token.FirmwareVersion)
	if userGroupDefault(a.confdir, slot) {
		fmt.Fprint(out, "  user group:     : pkcs11 (default)\n")
	} else {
		tprintf(out, "  user group:     : %s\n", p.UserGroup)
	}
	fmt.Fprint(out, "Migrate this token with given slot ID? y/n\n")
	in := bufio.NewReader(e.stdin)
	answer, _ := in.ReadString('\n')
	if !strings.HasPrefix(answer, "y") {
		fmt.Fprint(out, "ok, let's quit.\n")
		return 0
	}
	so, err := legacyPIN(e, in, a.soPIN, a.set['p'], "Enter the SO PIN: ")
	if err != nil {
		warnx("Could not get SO PIN.")
		return fail()
	}
	defer wipe(so)
	user, err := legacyPIN(e, in, a.userPIN, a.set['u'], "Enter the USER PIN: ")
	if err != nil {
		warnx("Could not get USER PIN.")
		return fail()
	}
	defer wipe(user)
	opts.SOPIN, opts.UserPIN = so, user
	checked, err := plan.Make(opts)
	if err != nil {
		if c := contract.CodeOf(err); c == contract.CodeWrongPIN || c == contract.CodeUserPINNotSet {
			warnx("Could not verify pins.")
		} else {
			warnx("%v", err)
		}
		return fail()
	}
	if checked.Format == contract.Format312 {
		tprintf(out, "Data store %s is already in new format.\n", a.datastore)
	}
	res, err := apply.Run(opts, nil, ao)
	if err != nil {
		switch contract.CodeOf(err) {
		case contract.CodeWrongPIN, contract.CodeUserPINNotSet:
			warnx("Could not verify pins.")
		case contract.CodeSlotdRunning:
			warnx("Please stop pkcsslotd before running this utility.")
		case contract.CodeBackupExists:
			warnx("%v", err)
			warnx("Please remove the backups before running this utility.")
		default:
			warnx("%v", err)
			warnx("Failed to migrate repository.")
		}
		return fail()
	}
	if res.RepositoryChanged {
		tprintf(out, "Migrated %d object(s) out of %d object(s).\n", res.ObjectsMigrated, res.ObjectsTotal)
		bak := a.datastore + layout.SuffixBak
		if res.Backup != nil && res.Backup.Datastore != "" {
			bak = res.Backup.Datastore
		}
		tprintf(out, "Pre-migration data backed up at '%s'\n", bak)
	}
	if res.ConfChanged {
		tprintf(out, "Config file backed up at '%s'\n", filepath.Join(a.confdir, layout.ConfBakName))
	}
	if res.RepositoryChanged || res.ConfChanged {
		fmt.Fprint(out, "Remove these backups manually after testing the new repository.\n")
	}
	fmt.Fprint(out, "pkcstok_migrate finished successfully.\n")
	return 0
}

// legacyPIN returns the PIN from the option, or prompts: echo off on a terminal, otherwise
// one line from stdin.
func legacyPIN(e *env, in *bufio.Reader, value string, given bool, prompt string) ([]byte, error) {
	if given {
		if value == "" {
			return nil, errors.New("empty PIN")
		}
		return []byte(value), nil
	}
	fmt.Fprint(e.stdout, prompt)
	defer fmt.Fprint(e.stdout, "\n")
	if f, ok := e.stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		pin, err := term.ReadPassword(int(f.Fd()))
		if err != nil || len(pin) == 0 || len(pin) > maxPINLen {
			return nil, errors.New("no PIN")
		}
		return pin, nil
	}
	line, err := in.ReadString('\n')
	if err != nil && line == "" {
		return nil, err
	}
	line = strings.TrimRight(line, "\r\n")
	if i := strings.IndexAny(line, "\r\n"); i >= 0 {
		line = line[:i]
	}
	if line == "" || len(line) > maxPINLen {
		return nil, errors.New("no PIN")
	}
	return []byte(line), nil
}

type rawInfo struct{ label, manufacturer, model, serial string }

// tokenInfoRaw reads the token-info strings as upstream prints them: blank padded.
func tokenInfoRaw(ds string) (rawInfo, error) {
	b, err := readNoFollow(filepath.Join(ds, "NVTOK.DAT"))
	if err != nil || len(b) < 96 {
		return rawInfo{}, fmt.Errorf("NVTOK.DAT unreadable")
	}
	return rawInfo{string(b[0:32]), string(b[32:64]), string(b[64:80]), string(b[80:96])}, nil
}

func userGroupDefault(confdir string, slot int) bool {
	cf, _, err := plan.ReadConf(confdir)
	if err != nil {
		return false
	}
	s, err := cf.Slot(uint64(slot))
	return err == nil && s.UserGroupDefault
}

func readNoFollow(path string) ([]byte, error) {
	d, err := repofs.OpenDir(filepath.Dir(path))
	if err != nil {
		return nil, err
	}
	defer d.Close()
	return d.ReadFile(filepath.Base(path))
}
