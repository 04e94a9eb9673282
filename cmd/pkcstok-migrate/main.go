// Command pkcstok-migrate migrates openCryptoki token repositories (Soft, ICA, CCA, EP11)
// from the old pre-3.12 format to the 3.12 format and sets tokversion = 3.12 in
// opencryptoki.conf.
//
//	pkcstok-migrate plan     --slot N --confdir DIR [--datastore DIR] [--out FILE]
//	pkcstok-migrate apply    --slot N --confdir DIR [--datastore DIR] [--plan FILE]
//	pkcstok-migrate rollback --slot N --confdir DIR [--datastore DIR]
//	pkcstok-migrate info     [--confdir DIR] [--state-dir DIR]
//	pkcstok-migrate schema   [request|plan|result|error|info]
//	pkcstok-migrate -s SLOT -d DATASTORE -c CONFDIR [-u PIN] [-p PIN] [-v LEVEL]   (upstream interface)
//
// The flags and subcommands are one table (cli.go) that drives the parser, the help, the man
// page and the bash completion. Output is one JSON document on stdout. Exit status: 0 success or nothing to do, 1 error,
// 2 plan found changes to make.
package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"
)

// env is what the command reads from and writes to, so tests can run it in-process.
type env struct {
	args   []string
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	getenv func(string) string
	euid   int
}

func main() {
	// The repository rule wants files 0660 (doc/format.md §1.4): a umask that keeps the
	// group's read and write bits lets apply create each file with its final mode instead
	// of one fchmod per file. Only those bits are released; what the umask says of others
	// stays.
	old := syscall.Umask(0o077)
	syscall.Umask(old &^ 0o660)
	e := &env{args: os.Args, stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv, euid: os.Geteuid()}
	os.Exit(run(e))
}

func run(e *env) int {
	args := e.args[1:]
	if len(args) == 0 {
		fmt.Fprint(e.stderr, usageText())
		return 1
	}
	cmd := args[0]
	if c := commandByName(cmd); c != nil && len(c.flags) == 0 && len(args) > 1 && (args[1] == "-h" || args[1] == "--help") {
		fmt.Fprint(e.stdout, c.help())
		return 0
	}
	switch {
	case cmd == "plan" || cmd == "apply" || cmd == "rollback" || cmd == "remove-backups":
		return runOperation(e, cmd, args[1:])
	case cmd == "info":
		return runInfo(e, args[1:])
	case cmd == "schema":
		return runSchema(e, args[1:])
	case cmd == "version" || cmd == "--version":
		fmt.Fprintf(e.stdout, "pkcstok-migrate %s\n", toolVersion())
		return 0
	case cmd == "help" || cmd == "--help":
		return runHelp(e, args[1:])
	case strings.HasPrefix(cmd, "-"):
		return runLegacy(e, args)
	default:
		fmt.Fprintf(e.stderr, "pkcstok-migrate: unknown command %q\n\n%s", cmd, usageText())
		return 1
	}
}

// runHelp prints the usage, or the help of one command.
func runHelp(e *env, args []string) int {
	if len(args) == 0 {
		fmt.Fprint(e.stdout, usageText())
		return 0
	}
	c := commandByName(args[0])
	if c == nil || len(args) > 1 {
		fmt.Fprintf(e.stderr, "pkcstok-migrate: help: unknown command %q\n\n%s", strings.Join(args, " "), usageText())
		return 1
	}
	fmt.Fprint(e.stdout, c.help())
	return 0
}
