//go:build linux

package ockroot

import (
	"context"
	"fmt"
	"os"
	"path"
	"strconv"
	"strings"
)

// DefaultSOPIN is the SO PIN of a token that was never initialised.
const DefaultSOPIN = "87654321"

// InitToken initialises slot (label on stdin, as pkcsconf asks for it), then sets the SO PIN
// and the user PIN. pkcsconf takes PINs only on its command line: these are test PINs, and
// pkcsconf is not the program under test.
func (r *Root) InitToken(ctx context.Context, slot int, label, soPIN, userPIN string) error {
	s := strconv.Itoa(slot)
	if _, err := r.MustRun(ctx, []byte(label+"\n"), "/usr/sbin/pkcsconf", "-I", "-c", s, "-S", DefaultSOPIN); err != nil {
		return err
	}
	if _, err := r.MustRun(ctx, nil, "/usr/sbin/pkcsconf", "-P", "-c", s, "-S", DefaultSOPIN, "-n", soPIN); err != nil {
		return err
	}
	if _, err := r.MustRun(ctx, nil, "/usr/sbin/pkcsconf", "-u", "-c", s, "-S", soPIN, "-n", userPIN); err != nil {
		return err
	}
	info, err := r.MustRun(ctx, nil, "/usr/sbin/pkcsconf", "-t", "-c", s)
	if err != nil {
		return err
	}
	if !strings.Contains(string(info), "USER_PIN_INITIALIZED") {
		return fmt.Errorf("%s: slot %d after initialisation:\n%s", r.Name(), slot, info)
	}
	return nil
}

// Tool runs opensc's pkcs11-tool on the root's openCryptoki, slot slot, logged in with pin
// when pin is not empty. A non-zero exit is returned as Result.Code, not as an error.
func (r *Root) Tool(ctx context.Context, slot int, pin string, args ...string) (*Result, error) {
	a := []string{"/usr/bin/pkcs11-tool", "--module", r.Module(), "--slot", strconv.Itoa(slot)}
	if pin != "" {
		a = append(a, "--login", "--pin", pin)
	}
	return r.Run(ctx, nil, false, append(a, args...)...)
}

// PINEnv is the environment variable through which ToolPINEnv hands pkcs11-tool the PIN.
const PINEnv = "PKCSTOK_P11_PIN"

// ToolPINEnv is Tool logged in with pin, which reaches pkcs11-tool in its environment
// (`--pin env:PKCSTOK_P11_PIN`, opensc 0.21 and later), in no command line: for a caller
// that keeps PINs out of every argv.
func (r *Root) ToolPINEnv(ctx context.Context, slot int, pin string, args ...string) (*Result, error) {
	a := append([]string{"/usr/bin/pkcs11-tool", "--module", r.Module(), "--slot", strconv.Itoa(slot), "--login", "--pin", "env:" + PINEnv}, args...)
	cmd := r.Command(ctx, false, false, a...)
	cmd.Env = append(cmd.Env, PINEnv+"="+pin)
	return r.run(ctx, cmd, nil, a)
}

// Scratch is a directory inside the root for pkcs11-tool's input and output files.
type Scratch struct {
	r   *Root
	dir string // inside the root
	n   int
}

// NewScratch makes a fresh directory under /tmp of the root.
func (r *Root) NewScratch() (*Scratch, error) {
	d, err := os.MkdirTemp(r.Path("/tmp"), "p11-")
	if err != nil {
		return nil, err
	}
	return &Scratch{r: r, dir: "/tmp/" + path.Base(d)}, nil
}

// File writes b to a new file and returns its path inside the root.
func (s *Scratch) File(b []byte) (string, error) {
	s.n++
	p := fmt.Sprintf("%s/in%d", s.dir, s.n)
	return p, os.WriteFile(s.r.Path(p), b, 0o600)
}

// Out names a new output file (inside the root); Read reads it back.
func (s *Scratch) Out() string {
	s.n++
	return fmt.Sprintf("%s/out%d", s.dir, s.n)
}

// Read reads a file of the scratch directory (a path inside the root).
func (s *Scratch) Read(p string) ([]byte, error) { return os.ReadFile(s.r.Path(p)) }
