// Command pkcstok-migrate migrates openCryptoki token repositories (Soft, ICA, CCA, EP11)
// from the old pre-3.12 format to the 3.12 format and sets tokversion = 3.12 in
// opencryptoki.conf.
//
//	pkcstok-migrate plan     --slot N --confdir DIR [--datastore DIR] [--out FILE]
//	pkcstok-migrate apply    --slot N --confdir DIR [--datastore DIR] [--plan FILE]
//	pkcstok-migrate rollback --slot N --confdir DIR [--datastore DIR]
//	pkcstok-migrate schema   [request|plan|result|error]
//	pkcstok-migrate -s SLOT -d DATASTORE -c CONFDIR [-u PIN] [-p PIN] [-v LEVEL]   (upstream interface)
//
// Output is one JSON document on stdout. Exit status: 0 success or nothing to do, 1 error,
// 2 plan found changes to make.
package main

import (
	"fmt"
	"io"
	"os"
	"strings"
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
	e := &env{args: os.Args, stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv, euid: os.Geteuid()}
	os.Exit(run(e))
}

const usage = `Usage:
  pkcstok-migrate plan     [--slot N] [--confdir DIR] [--datastore DIR] [PIN options] [--out FILE] [--all-slots] [--json=false]
  pkcstok-migrate apply    [--slot N] [--confdir DIR] [--datastore DIR] [PIN options] [--plan FILE] [--json=false]
  pkcstok-migrate rollback [--slot N] [--confdir DIR] [--datastore DIR] [--json=false]
  pkcstok-migrate schema   [request|plan|result|error]
  pkcstok-migrate version
  pkcstok-migrate -s SLOT -d DATASTORE -c CONFDIR [-u USERPIN] [-p SOPIN] [-v LEVEL] [-h]

Input:
  --request FILE|-        one JSON request (see 'schema request'); a field may not also be a flag
  --slot N                slot number in opencryptoki.conf
  --confdir DIR           directory of opencryptoki.conf (default /etc/opencryptoki)
  --datastore DIR         token repository (default: the slot's directory from the conf)
PIN options (PINs are never needed on the command line):
  --so-pin-file FILE      first line is the SO PIN; the file must not be readable by others
  --user-pin-file FILE    first line is the user PIN
  (PINs also come from the JSON request, or are prompted for on a terminal)

Exit status: 0 success or nothing to do, 1 error, 2 'plan' found changes to make.
`

func run(e *env) int {
	args := e.args[1:]
	if len(args) == 0 {
		fmt.Fprint(e.stderr, usage)
		return 1
	}
	switch cmd := args[0]; {
	case cmd == "plan" || cmd == "apply" || cmd == "rollback":
		return runOperation(e, cmd, args[1:])
	case cmd == "schema":
		return runSchema(e, args[1:])
	case cmd == "version" || cmd == "--version":
		fmt.Fprintf(e.stdout, "pkcstok-migrate %s\n", toolVersion())
		return 0
	case cmd == "help" || cmd == "--help":
		fmt.Fprint(e.stdout, usage)
		return 0
	case strings.HasPrefix(cmd, "-"):
		return runLegacy(e, args)
	default:
		fmt.Fprintf(e.stderr, "pkcstok-migrate: unknown command %q\n\n%s", cmd, usage)
		return 1
	}
}
