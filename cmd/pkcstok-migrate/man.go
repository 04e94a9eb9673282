package main

import (
	"fmt"
	"strings"
)

// manPage renders pkcstok-migrate(1) in roff (man(7) macros) from the command table in
// cli.go. The page carries no date and no version, so the committed copy
// (packaging/pkcstok-migrate.1, checked by TestManPageUpToDate) changes only when the table does.
func manPage() string {
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	w(".\\\" pkcstok-migrate(1). Generated from the command table in cmd/pkcstok-migrate/cli.go\n")
	w(".\\\" by 'make man'; do not edit.\n")
	w(".TH PKCSTOK\\-MIGRATE 1 \"\" \"pkcstok\\-migrate\" \"System Administration\"\n")
	w(".nh\n.SH NAME\npkcstok\\-migrate \\- migrate openCryptoki token repositories to the 3.12 format\n")

	w(".SH SYNOPSIS\n")
	for i := range commands {
		c := &commands[i]
		w(".SY \"pkcstok\\-migrate %s\"\n", c.name)
		for _, name := range c.flags {
			f := flagByName(name)
			if f.arg == "" {
				w(".OP %s\n", roff(strings.TrimSuffix(f.flagLine(), "=false"))+boolSuffix(f))
			} else {
				w(".OP %s %s\n", roff("--"+f.name), roff(f.arg))
			}
		}
		if c.args != "" {
			w("%s\n", roffLine(c.args))
		}
		w(".YS\n")
	}
	w(".SY pkcstok\\-migrate\n")
	for _, o := range legacyOpts[1:] {
		switch o.short {
		case 's', 'd', 'c':
			w(".B \\-%c\n.I %s\n", o.short, strings.ToUpper(o.arg))
		default:
			w(".OP \\-%c %s\n", o.short, strings.ToUpper(o.arg))
		}
	}
	w(".OP \\-h\n.YS\n")

	w(".SH DESCRIPTION\n")
	w("%s\n", roffLine("pkcstok-migrate migrates the token repositories of openCryptoki's Soft, ICA, CCA and EP11 tokens from the format of openCryptoki before 3.12 to the FIPS-compliant 3.12 format, and sets tokversion = 3.12 for the slot in opencryptoki.conf. It does what upstream's pkcstok_migrate does and accepts its options (see UPSTREAM INTERFACE), and it is built for automation: a read-only plan, an apply that is safe to kill at any point and to run twice, JSON in and out, and PINs from files, a JSON request on stdin or a terminal prompt, never needed on the command line."))
	w(".PP\n%s\n", roffLine("Output is one JSON document on stdout (with --json=false a readable summary), a short summary on stderr when it is a terminal, and a progress bar for large tokens. No output, log or error ever holds a PIN or a key. The JSON Schemas of every document are printed by the schema command."))

	w(".SH COMMANDS\n")
	for i := range commands {
		c := &commands[i]
		head := "pkcstok-migrate " + c.name
		if c.args != "" {
			head += " " + c.args
		}
		w(".SS %s\n", roffQuoted(head))
		w("%s.\n", roffLine(upperFirst(c.summary)))
		for _, p := range c.desc {
			w(".PP\n%s\n", roffLine(p))
		}
		if len(c.choices) > 0 {
			w(".PP\n%s\n", roffLine(strings.Trim(c.args, "[]")+" is one of: "+strings.Join(c.choices, ", ")+"."))
		}
		for _, name := range c.flags {
			f := flagByName(name)
			w(".TP\n.B %s\n%s\n", roffQuoted(f.flagLine()), roffLine(f.fullUsage()+"."))
		}
		w(".PP\nExit status: %s.\n", roffLine(c.exit))
	}

	w(".SH UPSTREAM INTERFACE\n")
	w("%s\n", roffLine("Called with an option first, pkcstok-migrate behaves as upstream's pkcstok_migrate: the same options, summary, token information, y/n question, messages and _BAK files. It differs on purpose where upstream's behaviour is a bug: a missing -s, -d or -c, an unsupported token and an unreadable PIN exit 1 (upstream: 0); an object that cannot be migrated fails the run before anything is switched; opencryptoki.conf is edited in place instead of being rewritten."))
	for _, o := range legacyOpts {
		if o.arg == "" {
			w(".TP\n.BR \\-%c \", \" \\-\\-%s\n", o.short, roff(o.long))
		} else {
			w(".TP\n.BR \\-%c \", \" \\-\\-%s \" \" \\fI%s\\fR\n", o.short, roff(o.long), roff(o.arg))
		}
		w("%s.\n", roffLine(upperFirst(o.usage)))
	}

	w(".SH PINS\n")
	w("%s\n", roffLine("plan and apply take the SO PIN and the user PIN from a JSON request (--request, \"so_pin\"/\"user_pin\" or \"so_pin_file\"/\"user_pin_file\"), from --so-pin-file and --user-pin-file (the first line; a file that group or others may access is refused, as ssh does), or prompt for them with echo off when stdin is a terminal. --so-pin and --user-pin still work, with a warning: the command line is visible to other users of the host. plan without PINs is complete about what changes but cannot check the PINs; apply needs both. rollback and info need none."))

	w(".SH EXIT STATUS\n")
	for _, x := range exitCodes {
		w(".TP\n.B %s\n%s.\n", x.code, roffLine(upperFirst(x.desc)))
	}

	w(".SH ERROR CODES\n")
	w("%s\n", roffLine(`A failure prints {"error": {"code": "...", "message": "...", "field": "...", "details": {...}}} on stdout and exits 1. The codes are stable; automation branches on them:`))
	for _, x := range errorCodes {
		w(".TP\n.B %s\n%s.\n", roff(string(x.code)), roffLine(upperFirst(x.desc)))
	}

	w(".SH FILES\n")
	for _, f := range files {
		w(".TP\n.I %s\n%s.\n", roffQuoted(f.path), roffLine(upperFirst(f.desc)))
	}

	w(".SH EXAMPLES\n")
	for i, x := range examples {
		if i > 0 {
			w(".PP\n")
		}
		w("%s\n.PP\n.RS\n.EX\n", roffLine(x.desc))
		for _, line := range strings.Split(x.cmd, "\n") {
			w("%s\n", roffLine(line))
		}
		w(".EE\n.RE\n")
	}

	w(".SH SEE ALSO\n")
	w(".BR pkcsconf (1),\n.BR pkcsslotd (8),\n.BR opencryptoki.conf (5),\n.BR pkcstok_migrate (1)\n")
	return b.String()
}

func boolSuffix(f *flagSpec) string {
	if f.boolDef {
		return "=false"
	}
	return ""
}

// roff escapes text for use inside a roff line: backslashes and hyphen-minus signs.
func roff(s string) string {
	s = strings.ReplaceAll(s, `\`, `\e`)
	return strings.ReplaceAll(s, "-", `\-`)
}

// roffLine escapes a text line and keeps it from being read as a request (leading . or ').
func roffLine(s string) string {
	s = roff(s)
	if strings.HasPrefix(s, ".") || strings.HasPrefix(s, "'") {
		s = `\&` + s
	}
	return s
}

// roffQuoted is a macro argument: quoted, with its quotes doubled.
func roffQuoted(s string) string {
	return `"` + strings.ReplaceAll(roff(s), `"`, `""`) + `"`
}
