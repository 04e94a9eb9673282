package main

import (
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/ocktools/pkcstok-migrate/contract"
	"github.com/ocktools/pkcstok-migrate/internal/layout"
)

// The command line, as data. One table of flags, subcommands, upstream options, exit codes,
// error codes, files and examples drives the flag parser, `--help` per subcommand, the man page
// pkcstok-migrate(1) (man.go) and the bash completion (completion.go), so none of them can
// say something the others do not.

// flagSpec is one --flag of the subcommands.
type flagSpec struct {
	name     string
	arg      string // metavariable ("N", "DIR", "FILE"); "" for a boolean flag
	def      string // default as shown in the help; "" for none
	usage    string // one line
	complete string // bash completion of the value: "dir", "file", "file-or-stdin", "" for none
	boolDef  bool   // default of a boolean flag
	parseDef string // default value the parser gives a string flag that was not set
}

// The flags. Their names are the parser's: runOperation and runInfo look values up by name.
var flagSpecs = []flagSpec{
	{name: "request", arg: "FILE|-", usage: "one JSON request (see 'schema request'); a field may not also be a flag", complete: "file-or-stdin"},
	{name: "slot", arg: "N", usage: "slot number in opencryptoki.conf (0 to 1023)"},
	{name: "slots", arg: "LIST", usage: "several slots in one run (a host), comma-separated; each PIN file name may hold {slot}, replaced by each slot's number"},
	{name: "confdir", arg: "DIR", def: defaultConfdir, usage: "directory of opencryptoki.conf", complete: "dir"},
	{name: "datastore", arg: "DIR", def: "the slot's directory from the conf", usage: "token repository", complete: "dir"},
	{name: "state-dir", arg: "DIR", def: layout.DefaultStateBase, parseDef: layout.DefaultStateBase, usage: "where the token library keeps the repositories", complete: "dir"},
	{name: "so-pin-file", arg: "FILE", usage: "first line is the SO PIN; the file must not be accessible by group or others", complete: "file"},
	{name: "user-pin-file", arg: "FILE", usage: "first line is the user PIN; same rule", complete: "file"},
	{name: "so-pin", arg: "PIN", usage: "the SO PIN (visible to other users of the host: prefer a file, the request or the prompt)"},
	{name: "user-pin", arg: "PIN", usage: "the user PIN (visible to other users of the host: prefer a file, the request or the prompt)"},
	{name: "out", arg: "FILE", usage: "also save the plan to FILE (it holds no PIN)", complete: "file"},
	{name: "all-slots", usage: "plan every supported slot of the conf, each in its own directory"},
	{name: "plan", arg: "FILE", usage: "apply exactly this saved plan; refused (stale_plan) if the repository or the conf changed since", complete: "file"},
	{name: "json", def: "true", boolDef: true, usage: "print a readable summary instead of one JSON document"},
}

func flagByName(name string) *flagSpec {
	for i := range flagSpecs {
		if flagSpecs[i].name == name {
			return &flagSpecs[i]
		}
	}
	return nil
}

// cmdSpec is one subcommand.
type cmdSpec struct {
	name    string
	args    string   // positional arguments in the synopsis ("[KIND]")
	choices []string // values of the positional argument (completion, help)
	summary string   // one line
	desc    []string // paragraphs of the help and of the man page
	flags   []string // documented flags, in order
	// hidden flags are parsed but not documented: rollback takes apply's PIN flags (and
	// request) and ignores them, never opening a PIN file.
	hidden []string
	exit   string // exit status, one line
}

var commonOpFlags = []string{"request", "slot", "slots", "confdir", "datastore", "state-dir"}
var pinFlags = []string{"so-pin-file", "user-pin-file", "so-pin", "user-pin"}

func concat(lists ...[]string) []string {
	var out []string
	for _, l := range lists {
		out = append(out, l...)
	}
	return out
}

var commands = []cmdSpec{
	{
		name:    "plan",
		summary: "show what a migration would change; changes nothing",
		desc: []string{
			"Reads the slot's token repository and opencryptoki.conf and prints the plan: the format of the repository and of every object, what apply would re-encrypt or rewrite, the diff of opencryptoki.conf, the steps apply would take, the space and inodes apply would need on each file system it writes and what is free there (apply refuses a shortfall or a read-only one before any work: no_space, read_only), and a fingerprint of the state. With both PINs the PINs are checked and private objects are listed with class, label and id; without them the plan is still complete about what changes. The plan holds no PIN and nothing derived from one.",
		},
		flags: concat(commonOpFlags, pinFlags, []string{"out", "all-slots", "json"}),
		exit:  "0 nothing to do, 2 changes to make, 1 error",
	},
	{
		name:    "apply",
		summary: "migrate the slot's repository (or a host's slots) and set tokversion = 3.12 (root)",
		desc: []string{
			"Plans again under locks on the conf directory and the repository, copies the repository to <store>_PKCSTOK_MIGRATE_TMP, re-encrypts every object under a fresh master key and verifies that every object decrypts to the bytes it had; then it sets tokversion = 3.12 for the slot in opencryptoki.conf, and only then swaps the copy in with one atomic exchange and keeps the original as <store>_BAK. The token library refuses an old repository under tokversion = 3.12 without writing anything, so no moment of the run (or of a crash in it) shows it a migrated repository under the old conf. opencryptoki.conf_BAK is made once, from the conf before the first migration, and never replaced. Refuses while pkcsslotd runs or a process holds a file of the repository open. A run that was killed is finished by the next apply; a second apply reports \"changed\": false.",
			"With --slots (or \"slots\" in the request, each slot with its own PINs) it migrates several slots of the conf in one run, all or nothing: every lock, PIN, backup place and file system is checked first, every working copy made and verified, the conf written once, then each repository switched; if a slot fails, the slots already switched are switched back and the conf is put back. The result says per slot what happened. A run killed half-way is finished by apply of the same slots or reverted by rollback; apply of other slots is refused (interrupted) until then.",
		},
		flags: concat(commonOpFlags, pinFlags, []string{"plan", "json"}),
		exit:  "0 success or nothing to do, 1 error",
	},
	{
		name:    "rollback",
		summary: "switch a slot (or a host's slots) back to <store>_BAK and remove its tokversion line (root)",
		desc: []string{
			"Switches the slot's repository back to <store>_BAK, whatever the repository looks like now (one the token library damaged included), and keeps the one it switches away from under the first free name of <store>_ROLLED_BACK, <store>_ROLLED_BACK_2, ...; then it puts the slot's tokversion line back as it was before the migration (as opencryptoki.conf_BAK has it), changing no other line: other slots stay migrated. After every slot is rolled back the conf is the original byte for byte, and apply, rollback, apply, rollback ... work without removing anything by hand. Takes apply's request or flags, and needs no PINs: PINs given are ignored, PIN files never opened. With --slots, each listed slot.",
		},
		flags:  concat(commonOpFlags, []string{"json"}),
		hidden: pinFlags,
		exit:   "0 success, 1 error (nothing_to_roll_back when there is no backup)",
	},
	{
		name:    "remove-backups",
		summary: "remove the backups an apply made, checked by identity (root)",
		desc: []string{
			"Removes <store>_BAK (or the in-place backup) and opencryptoki.conf_BAK of a migration once it has been checked, taking back the \"backup\" object apply printed in its result (\"backup\" in a --request document). An entry is removed only when apply gave its device and inode and it still is that file: a directory another user renamed to a backup's name is left alone (verify_failed). The repository must be migrated. Needs no PINs and does not need pkcsslotd stopped.",
		},
		flags: []string{"request", "slot", "confdir", "datastore", "state-dir", "json"},
		exit:  "0 success (\"removed\" lists what went), 1 error",
	},
	{
		name:    "info",
		summary: "report every slot: format, objects, backups; needs no PINs, read-only",
		desc: []string{
			"For every slot of opencryptoki.conf: the token type (or unsupported), the repository directory, its format (old, 3.12, mixed, missing or unreadable with the reason), its byte order, the number of objects, the slot's tokversion, which of <store>_BAK, <store>_ROLLED_BACK, <store>_PKCSTOK_MIGRATE_JOURNAL, <store>_PKCSTOK_MIGRATE_TMP and opencryptoki.conf_BAK exist, and whether the slot needs migrating. Needs no PINs and never writes anything: the audit to run before and after a rollout.",
		},
		flags: []string{"confdir", "state-dir", "json"},
		exit:  "0 the conf was read, 1 it could not be read",
	},
	{
		name:    "schema",
		args:    "[KIND]",
		choices: []string{"request", "plan", "result", "error", "info"},
		summary: "print the JSON Schemas every input and output is valid against",
		desc: []string{
			"Prints the JSON Schema (draft 2020-12) of KIND, or all of them in one object.",
		},
		exit: "0 success, 1 unknown KIND",
	},
	{
		name:    "version",
		summary: "print the version",
		exit:    "0",
	},
	{
		name:    "help",
		args:    "[COMMAND]",
		summary: "show the usage, or the help of COMMAND",
		exit:    "0 success, 1 unknown COMMAND",
	},
}

func commandByName(name string) *cmdSpec {
	for i := range commands {
		if commands[i].name == name {
			return &commands[i]
		}
	}
	return nil
}

// flagValues holds what a FlagSet built from the table parsed.
type flagValues struct {
	str  map[string]*string
	bool map[string]*bool
	set  map[string]bool
}

func (v *flagValues) s(name string) string {
	if p := v.str[name]; p != nil {
		return *p
	}
	return ""
}

func (v *flagValues) b(name string) bool {
	if p := v.bool[name]; p != nil {
		return *p
	}
	return false
}

// parse parses args with the flags of the subcommand (documented and hidden). Errors are
// flag's; flag.ErrHelp for -h/--help.
func (c *cmdSpec) parse(args []string) (*flagValues, []string, error) {
	fs := flag.NewFlagSet("pkcstok-migrate "+c.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	v := &flagValues{str: map[string]*string{}, bool: map[string]*bool{}, set: map[string]bool{}}
	for _, name := range concat(c.flags, c.hidden) {
		f := flagByName(name)
		if f == nil {
			return nil, nil, fmt.Errorf("internal: flag %q of %s is not in the table", name, c.name)
		}
		if f.arg == "" {
			v.bool[name] = fs.Bool(name, f.boolDef, f.usage)
			continue
		}
		v.str[name] = fs.String(name, f.parseDef, f.usage)
	}
	if err := fs.Parse(args); err != nil {
		return nil, nil, err
	}
	fs.Visit(func(fl *flag.Flag) { v.set[fl.Name] = true })
	return v, fs.Args(), nil
}

// synopsis is the one-line usage of a subcommand.
func (c *cmdSpec) synopsis() string {
	var b strings.Builder
	b.WriteString("pkcstok-migrate " + c.name)
	for _, name := range c.flags {
		f := flagByName(name)
		if f.arg == "" {
			if f.boolDef {
				fmt.Fprintf(&b, " [--%s=false]", f.name)
			} else {
				fmt.Fprintf(&b, " [--%s]", f.name)
			}
			continue
		}
		fmt.Fprintf(&b, " [--%s %s]", f.name, f.arg)
	}
	if c.args != "" {
		b.WriteString(" " + c.args)
	}
	return b.String()
}

// flagLine is "--name ARG" as shown in help and man page.
func (f *flagSpec) flagLine() string {
	if f.arg == "" {
		if f.boolDef {
			return "--" + f.name + "=false"
		}
		return "--" + f.name
	}
	return "--" + f.name + " " + f.arg
}

func (f *flagSpec) fullUsage() string {
	u := f.usage
	if f.def != "" && f.arg != "" {
		u += " (default: " + f.def + ")"
	}
	return u
}

// help is the text of `pkcstok-migrate help CMD` and `CMD --help`.
func (c *cmdSpec) help() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Usage: %s\n\n", c.synopsis())
	fmt.Fprintf(&b, "%s.\n", upperFirst(c.summary))
	for _, p := range c.desc {
		b.WriteString("\n" + wrap(p, 92, "") + "\n")
	}
	if len(c.choices) > 0 {
		fmt.Fprintf(&b, "\n%s: %s\n", strings.Trim(c.args, "[]"), strings.Join(c.choices, ", "))
	}
	if len(c.flags) > 0 {
		b.WriteString("\nOptions:\n")
		for _, name := range c.flags {
			f := flagByName(name)
			fmt.Fprintf(&b, "  %-22s %s\n", f.flagLine(), f.fullUsage())
		}
	}
	if c.name == "plan" || c.name == "apply" {
		b.WriteString("\nPINs come from the request, from --so-pin-file/--user-pin-file, or are prompted for on a\nterminal; they never need the command line.\n")
	}
	fmt.Fprintf(&b, "\nExit status: %s.\n", c.exit)
	return b.String()
}

// usageText is the general usage (no arguments, `help`, `--help`).
func usageText() string {
	var b strings.Builder
	b.WriteString("Usage:\n")
	for i := range commands {
		c := &commands[i]
		args := c.args
		if len(c.flags) > 0 {
			args = strings.TrimSpace("[options] " + args)
		}
		fmt.Fprintf(&b, "  pkcstok-migrate %-9s %-22s %s\n", c.name, args, c.summary)
	}
	fmt.Fprintf(&b, "  %s\n", legacySynopsis())
	b.WriteString("\nRun 'pkcstok-migrate help COMMAND' for the options of a command, 'man pkcstok-migrate' for\nall of it. Output is one JSON document on stdout; failures print {\"error\": {\"code\": ...}}.\n")
	b.WriteString("\nExit status: 0 success or nothing to do, 1 error, 2 'plan' found changes to make.\n")
	return b.String()
}

// legacyOpt is one option of upstream's pkcstok_migrate interface (doc/format.md §8).
type legacyOpt struct {
	short byte
	long  string
	arg   string // "" for -h
	usage string
}

var legacyOpts = []legacyOpt{
	{'h', "help", "", "Show this help"},
	{'s', "slotid", "slotid", "PKCS slot number (required)"},
	{'d', "datastore", "datastore", "token datastore location (required)"},
	{'c', "confdir", "confdir", "location of opencryptoki.conf (required)"},
	{'u', "userpin", "userpin", "token user pin (prompted if not specified)"},
	{'p', "sopin", "sopin", "token SO pin (prompted if not specified)"},
	{'v', "verbose", "level", "verbose level: " + strings.Join(legacyLevels, ", ")},
}

var legacyLevels = []string{"none", "error", "warn", "info", "devel", "debug"}

// legacySynopsis: "pkcstok-migrate -s SLOTID -d DATASTORE ...".
func legacySynopsis() string {
	var b strings.Builder
	b.WriteString("pkcstok-migrate")
	for _, o := range legacyOpts[1:] {
		if o.short == 's' || o.short == 'd' || o.short == 'c' {
			fmt.Fprintf(&b, " -%c %s", o.short, strings.ToUpper(o.arg))
		} else {
			fmt.Fprintf(&b, " [-%c %s]", o.short, strings.ToUpper(o.arg))
		}
	}
	b.WriteString(" [-h]   (upstream interface)")
	return b.String()
}

// legacyUsageText is upstream's usage, byte for byte as upstream prints it, plus our note.
func legacyUsageText() string {
	var b strings.Builder
	b.WriteString("usage: pkcstok_migrate")
	for _, o := range legacyOpts {
		if o.arg == "" {
			fmt.Fprintf(&b, " [-%c]", o.short)
		} else {
			fmt.Fprintf(&b, " [-%c|--%s %s]", o.short, o.long, o.arg)
		}
	}
	b.WriteString("\n\n")
	for _, o := range legacyOpts {
		fmt.Fprintf(&b, "\t-%c, --%-18s%s\n", o.short, o.long, o.usage)
	}
	b.WriteString("\nPINs on the command line are visible to other users; pkcstok-migrate also reads them from\na terminal prompt, or use 'pkcstok-migrate plan|apply' with a JSON request on stdin.\n")
	return b.String()
}

// exitCodes of the tool, for the man page.
var exitCodes = []struct{ code, desc string }{
	{"0", "success, or nothing to do (a second apply; plan of a migrated slot; info that could read the conf)"},
	{"1", "error: the JSON error document on stdout says which (see ERROR CODES)"},
	{"2", "plan found changes to make"},
	{"255", "the upstream interface run by a user other than root (as upstream)"},
}

// errorCodes of the JSON contract with what each means; a test checks this list against the
// error schema's enum.
var errorCodes = []struct {
	code contract.Code
	desc string
}{
	{contract.CodeWrongPIN, "the SO or the user PIN is wrong"},
	{contract.CodeUserPINNotSet, "the user PIN was never set on the token (set it with pkcsconf)"},
	{contract.CodeSlotdRunning, "pkcsslotd is running (or it could not be told that it is not): stop it"},
	{contract.CodeRepositoryInUse, "another process holds a file of the repository open"},
	{contract.CodeLocked, "another pkcstok-migrate holds the lock on the conf directory or the repository"},
	{contract.CodeStalePlan, "the repository or the conf changed since the saved plan was made"},
	{contract.CodeSlotNotFound, "opencryptoki.conf has no such slot"},
	{contract.CodeUnsupportedToken, "the slot's token is not a Soft, ICA, CCA or EP11 token"},
	{contract.CodeConfInvalid, "opencryptoki.conf is missing, unreadable or invalid"},
	{contract.CodeCorruptRepository, "the repository is missing a file or a file is corrupt"},
	{contract.CodeByteOrder, "the repository mixes files of both byte orders (one was copied from another machine), or nothing in it decides its order"},
	{contract.CodeBackupExists, "<store>_BAK (or the in-place backup) is in the way"},
	{contract.CodeCannotSwitch, "the repository is a mount point, on another file system than its parent, or in an overlay's lower layer: it cannot be exchanged (nothing was done)"},
	{contract.CodeBadRequest, "the request or the flags make no sense; \"field\" names the culprit"},
	{contract.CodeNotRoot, "apply and rollback must run as root"},
	{contract.CodeGroupNotFound, "the slot's token group does not exist on the host"},
	{contract.CodeGroupMismatch, "the repository's group is not the token group's gid on this host (a chroot's or container's repository?): nothing was done"},
	{contract.CodeSlotNotInitialized, "the slot's repository does not exist, or holds no NVTOK.DAT: the token was never initialised (info: missing)"},
	{contract.CodeNoSpace, "a file system apply writes lacks the space or inodes the plan says it needs (with its margin): nothing was done"},
	{contract.CodeReadOnly, "a file system apply writes is read-only: nothing was done"},
	{contract.CodeIO, "a read or write failed"},
	{contract.CodeVerifyFailed, "the migrated copy did not decrypt to the original objects, or someone else renamed the repository or the working copy during the switch; nothing was switched"},
	{contract.CodeNothingToRollBack, "rollback found no backup to switch back to and no tokversion line a migration set"},
	{contract.CodeRewrittenByLibrary, "the token library rewrote NVTOK.DAT of a migrated repository opened under a conf without tokversion = 3.12: rollback switches the original back"},
	{contract.CodeInterrupted, "a run of other slots was interrupted (opencryptoki.conf_PKCSTOK_MIGRATE_JOURNAL names them): apply them again to finish it, or roll them back"},
	{contract.CodeInternal, "a bug: please report it"},
}

// files the tool reads or makes, for the man page.
var files = []struct{ path, desc string }{
	{"/etc/opencryptoki/opencryptoki.conf", "the slots; apply sets tokversion = 3.12 in the slot's block and changes no other line"},
	{"/var/lib/opencryptoki/<tokname or swtok|lite|ccatok|ep11tok>", "a slot's token repository (<store>): NVTOK.DAT, MK_SO, MK_USER, TOK_OBJ/"},
	{"<store>" + layout.SuffixBak, "the repository as it was before apply (remove it after testing the migrated token)"},
	{"<store>" + layout.SuffixTmp, "apply's working copy, root-only and marked as the tool's until it is switched in; left only by a killed run, which the next apply removes and rebuilds (anything else there is refused and left alone)"},
	{"<store>" + layout.SuffixJournal, "apply's journal while it switches (root's, 0600); the next apply finishes a killed run from it, and refuses a journal that is not root's own"},
	{"<confdir>/" + layout.ConfBakName, "opencryptoki.conf as it was before the first migration of any slot (a hard link of the original); made once, never replaced, never in the way"},
	{"<confdir>/" + layout.HostJournal, "the slots of a run under way (root's, 0600): apply of the same slots finishes an interrupted run, rollback reverts it, a run of other slots is refused meanwhile"},
	{"<confdir>/" + layout.ConfPrev, "the conf before the run under way (a hard link): a run that fails puts it back with one rename"},
	{"<store>_ROLLED_BACK, <store>_ROLLED_BACK_2, ...", "the repository each rollback switched away from (the first free name: never replaced)"},
}

// examples for the man page.
var examples = []struct{ desc, cmd string }{
	{"What would change for slot 3? Exit 0: nothing, 2: changes to make.", "pkcstok-migrate plan --slot 3 --so-pin-file so.pin --user-pin-file user.pin"},
	{"The same request as JSON on stdin; PINs never need the command line.", `echo '{"slot":3,"so_pin":"...","user_pin":"..."}' | pkcstok-migrate plan --request -`},
	{"Save a plan (safe as a CI artifact: it holds no PIN) and apply exactly that.", "pkcstok-migrate plan --slot 3 --out plan.json\npkcstok-migrate apply --plan plan.json --so-pin-file so.pin --user-pin-file user.pin"},
	{"Plan afresh and apply; a second run reports \"changed\": false.", "pkcstok-migrate apply --slot 3 --so-pin-file so.pin --user-pin-file user.pin"},
	{"A host: several slots in one run, all or nothing, a PIN file per slot ({slot} is each slot's number).", "pkcstok-migrate apply --slots 1,2,3,4 --so-pin-file /root/pins/so-{slot} --user-pin-file /root/pins/user-{slot}"},
	{"Switch one slot back; the other slots stay migrated.", "pkcstok-migrate rollback --slot 3"},
	{"Every slot of the host: what needs migrating, backups, journals. Needs no PINs.", "pkcstok-migrate info --json=false"},
	{"Upstream's interface, with upstream's messages and question.", "pkcstok-migrate -s 3 -d /var/lib/opencryptoki/swtok -c /etc/opencryptoki"},
}

func upperFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// wrap breaks text into lines of at most width bytes (words longer than that stay whole).
func wrap(text string, width int, indent string) string {
	var b strings.Builder
	line := indent
	for _, w := range strings.Fields(text) {
		if len(line) > len(indent) && len(line)+1+len(w) > width {
			b.WriteString(line + "\n")
			line = indent
		}
		if len(line) > len(indent) {
			line += " "
		}
		line += w
	}
	b.WriteString(line)
	return b.String()
}
