//go:build linux

package faults

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ocktools/pkcstok-migrate/internal/conf"
	"github.com/ocktools/pkcstok-migrate/internal/layout"
)

// dsName is the repository's directory in every trial (beside it: the working copy, the
// journal, the backup).
const dsName = "swtok"

// moment is when a fault hits a run: before it, when an entry appears (the run is stopped
// right there with SIGSTOP, the fault made, the run continued), or after a fixed delay.
type moment struct {
	name   string
	entry  string // an entry whose appearance is the moment
	inConf bool   // the entry is in the conf directory, not beside the repository
	delay  time.Duration
}

func (m moment) dir(c *cli) string {
	if m.inConf {
		return c.conf
	}
	return filepath.Dir(c.ds)
}

var (
	atStart   = moment{name: "before"}
	atTmp     = moment{name: "tmp", entry: dsName + layout.SuffixTmp}
	atJournal = moment{name: "journal", entry: dsName + layout.SuffixJournal}
	atBak     = moment{name: "bak", entry: dsName + layout.SuffixBak}
	atConfBak = moment{name: "conf_bak", entry: layout.ConfBakName, inConf: true}
	// moments are the named ones, in the order a run reaches them: the working copy is
	// begun, the journal written (the copy is complete and verified), the original renamed
	// to the backup (the exchange is done), the conf backup linked (the new conf is written,
	// not renamed yet).
	moments = []moment{atTmp, atJournal, atBak, atConfBak}
)

// outcome is one run of the binary.
type outcome struct {
	op      string
	exit    int // -1: killed by a signal
	code    string
	msg     string
	changed bool
	stdout  []byte
	stderr  []byte
	fired   string // what the moment's fault did, when one was armed
	at      string // where the run was stopped for it (phase), "" when it was not
}

// short is the outcome as a table cell: ok, ok·unchanged, the error's code, or the exit.
func (o *outcome) short() string {
	switch {
	case o == nil:
		return ""
	case o.exit == 0 && o.op == "plan":
		return "plan 0"
	case o.exit == 0 && !o.changed:
		return "ok·unchanged"
	case o.exit == 0:
		return "ok"
	case o.exit == 1 && o.code != "":
		// The errno under the error, when its message names one: which fault reached the
		// tool, and whether the code says so.
		for _, e := range []struct{ text, name string }{
			{"no space left on device", "ENOSPC"}, {"read-only file system", "EROFS"}, {"input/output error", "EIO"},
		} {
			if strings.Contains(o.msg, e.text) {
				return o.code + "(" + e.name + ")"
			}
		}
		return o.code
	case o.exit == 2 && o.op == "plan":
		return "plan 2"
	}
	return fmt.Sprintf("exit %d", o.exit)
}

// clean says what is wrong with the outcome as an answer of the tool: an exit other than 0
// or 1 (plan: 2 too), an error that is not a JSON error with a code, the code internal, an
// EIO answered with another code than io_error, or a panic. "" when it is a clean answer.
func (o *outcome) clean() string {
	for _, s := range []string{"panic:", "goroutine ", "fatal error:", "SIGSEGV"} {
		if bytes.Contains(o.stderr, []byte(s)) || bytes.Contains(o.stdout, []byte(s)) {
			return fmt.Sprintf("%s: %q in its output: %s", o.op, s, firstLines(o.stderr, 5))
		}
	}
	switch {
	case o.exit == 0, o.exit == 2 && o.op == "plan":
		return ""
	case o.exit != 1:
		return fmt.Sprintf("%s: exit %d (stdout %s, stderr %s)", o.op, o.exit, firstLines(o.stdout, 5), firstLines(o.stderr, 5))
	case o.code == "":
		return fmt.Sprintf("%s: exit 1 without a JSON error with a code: %s", o.op, firstLines(o.stdout, 5))
	case o.code == "internal":
		return fmt.Sprintf("%s: error code internal: %s", o.op, o.msg)
	case o.msg == "":
		return fmt.Sprintf("%s: error %s without a message", o.op, o.code)
	case strings.Contains(o.msg, "input/output error") && o.code != "io_error":
		// What the disk did not answer is neither corrupt, nor invalid, nor changed.
		return fmt.Sprintf("%s: EIO answered as %s: %s", o.op, o.code, o.msg)
	}
	return ""
}

func firstLines(b []byte, n int) string {
	lines := strings.SplitN(strings.TrimSpace(string(b)), "\n", n+1)
	if len(lines) > n {
		lines = append(lines[:n], "...")
	}
	return strings.Join(lines, " | ")
}

// cli runs the binary on one slot.
type cli struct {
	bin      string
	env      []string
	soPIN    string // PIN files, 0600, outside every image
	userPIN  string
	slot     int
	ds, conf string
}

func (c *cli) args(op string) []string {
	a := []string{op, "--slot", strconv.Itoa(c.slot), "--confdir", c.conf, "--datastore", c.ds}
	if op == "apply" {
		a = append(a, "--so-pin-file", c.soPIN, "--user-pin-file", c.userPIN)
	}
	return a
}

func (c *cli) command(op string) (*exec.Cmd, *bytes.Buffer, *bytes.Buffer) {
	cmd := exec.Command(c.bin, c.args(op)...)
	cmd.Env = c.env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	return cmd, &stdout, &stderr
}

// run runs op to its end.
func (c *cli) run(op string) *outcome {
	return c.runAt(op, moment{}, nil)
}

// runAt runs op; when the moment comes (an entry appears, or a delay passes), the process is
// stopped (SIGSTOP, every thread), inject runs, and the process goes on (SIGCONT). What
// inject says, where the run was stopped, and whether the moment came before the process
// ended, is in outcome.fired.
func (c *cli) runAt(op string, m moment, inject func() string) *outcome {
	cmd, stdout, stderr := c.command(op)
	o := &outcome{op: op}
	// The watch is armed before the process starts: no entry can come unseen.
	var sp *stopper
	if inject != nil && m.entry != "" {
		var err error
		if sp, err = newStopper(m.dir(c), m.entry); err != nil {
			o.exit, o.msg = -1, err.Error()
			return o
		}
		defer sp.cancel()
	}
	if err := cmd.Start(); err != nil {
		o.exit, o.msg = -1, err.Error()
		return o
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	if inject != nil {
		var stopped <-chan error
		fz, err := newFreezer(cmd.Process.Pid) // before any wait: the child is not reaped
		switch {
		case err != nil:
			ch := make(chan error, 1)
			ch <- err
			stopped = ch
		case sp != nil:
			stopped = sp.arm(fz)
		case m.delay > 0:
			ch := make(chan error, 1)
			go func() {
				defer fz.close()
				tm := time.NewTimer(m.delay)
				defer tm.Stop()
				select {
				case <-tm.C:
					ch <- fz.stop()
				case <-done:
				}
			}()
			stopped = ch
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			select {
			case err = <-stopped:
			case <-done:
				o.fired = "not reached: the run ended first"
				return
			}
			if err != nil {
				o.fired = inject() + " (after the run ended: " + err.Error() + ")"
				return
			}
			waitStopped(cmd.Process.Pid)
			o.at = c.phase()
			o.fired = inject() + " (" + o.at + ")"
			_ = cmd.Process.Signal(syscall.SIGCONT)
		}()
	}
	err := cmd.Wait()
	close(done)
	wg.Wait()
	o.stdout, o.stderr = stdout.Bytes(), stderr.Bytes()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		o.exit = ee.ExitCode() // -1 when a signal ended it
	default:
		o.exit, o.msg = -1, err.Error()
		return o
	}
	var res struct {
		Changed *bool `json:"changed"`
		Error   *struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(o.stdout, &res) == nil {
		if res.Error != nil {
			o.code, o.msg = res.Error.Code, res.Error.Message
		}
		if res.Changed != nil {
			o.changed = *res.Changed
		}
	}
	return o
}

// phase names the entries of the run present now: where the run was stopped.
func (c *cli) phase() string {
	var seen []string
	for _, m := range moments {
		if _, err := os.Lstat(filepath.Join(m.dir(c), m.entry)); err == nil {
			seen = append(seen, m.name)
		}
	}
	if _, err := os.Lstat(filepath.Join(c.conf, conf.TempName)); err == nil {
		seen = append(seen, "conf_new")
	}
	if len(seen) == 0 {
		return "at: none yet"
	}
	return "at: " + strings.Join(seen, "+")
}

// waitStopped waits until every thread of pid is stopped (or gone): a thread inside a system
// call that sleeps (a syncfs on a busy disk) stops when the call returns. Bounded only against
// a hang: after about a minute it goes on regardless.
func waitStopped(pid int) {
	for i := 0; i < 60000; i++ {
		tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
		if err != nil {
			return
		}
		all := true
		for _, task := range tasks {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/stat", pid, task.Name()))
			if err != nil {
				continue
			}
			// state is the field after "(comm)"; comm may hold spaces and parentheses.
			i := bytes.LastIndexByte(b, ')')
			if i < 0 || i+2 >= len(b) {
				continue
			}
			switch b[i+2] {
			case 'T', 't', 'Z', 'X':
			default:
				all = false
			}
		}
		if all {
			return
		}
		time.Sleep(time.Millisecond)
	}
}
