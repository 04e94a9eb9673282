//go:build linux

package faults

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// stopperEnv makes the test binary a stopper helper (TestMain): the name of the entry to
// wait for.
const stopperEnv = "PKCSTOK_FAULTS_STOPPER"

func TestMain(m *testing.M) {
	if name := os.Getenv(stopperEnv); name != "" {
		os.Exit(stopperHelper(name))
	}
	os.Exit(m.Run())
}

// stopper stops a run as soon as an entry appears in a directory (created, linked or renamed
// there). The directory is watched (inotify) from before the run starts, so no entry comes
// unseen; the waiting is done by a helper process (this test binary again) on a thread that
// runs under SCHED_FIFO, so that it gets a CPU at once on a loaded machine, and that has
// nothing else to do: in this process a woken thread may wait for the Go scheduler (a P, its
// lock, a stop of the world), whose other threads the load keeps off the CPU, for tens of
// milliseconds while the run goes on. The helper stops the run (freezer) before it has gone
// much further: the few system calls that do not sleep and that it makes before the signals
// reach it; a thread inside one that sleeps (an fsync) finishes it first.
type stopper struct {
	there  bool     // the entry was there already
	sock   *os.File // this end of the socket pair to the helper
	helper *exec.Cmd
}

func newStopper(dir, name string) (*stopper, error) {
	ifd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("inotify_init1: %w", err)
	}
	ino := os.NewFile(uintptr(ifd), "inotify")
	defer ino.Close() // the helper has its own copy
	if _, err := unix.InotifyAddWatch(ifd, dir, unix.IN_CREATE|unix.IN_MOVED_TO); err != nil {
		return nil, fmt.Errorf("inotify_add_watch %s: %w", dir, err)
	}
	s := &stopper{}
	_, err = os.Lstat(filepath.Join(dir, name))
	s.there = err == nil
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("socketpair: %w", err)
	}
	if err := unix.SetNonblock(pair[0], true); err != nil { // pollable: Close ends a Read
		unix.Close(pair[0])
		unix.Close(pair[1])
		return nil, err
	}
	s.sock = os.NewFile(uintptr(pair[0]), "stopper")
	theirs := os.NewFile(uintptr(pair[1]), "stopper helper")
	defer theirs.Close()
	s.helper = exec.Command(os.Args[0])
	s.helper.Env = append(os.Environ(), stopperEnv+"="+name)
	s.helper.ExtraFiles = []*os.File{ino, theirs} // fds 3 and 4
	s.helper.Stderr = os.Stderr
	if err := s.helper.Start(); err != nil {
		s.sock.Close()
		return nil, fmt.Errorf("start the stopper helper: %w", err)
	}
	if msg, err := s.read(); err != nil || msg != "ready" {
		s.cancel()
		return nil, fmt.Errorf("the stopper helper did not get ready: %q %v", msg, err)
	}
	return s, nil
}

func (s *stopper) read() (string, error) {
	b := make([]byte, 512)
	n, err := s.sock.Read(b)
	return string(b[:n]), err
}

// arm hands the run to the helper (its pid, pidfd and task directory, which fz holds and which
// are closed here) and returns what the helper says: nil once the run is stopped.
func (s *stopper) arm(fz *freezer) <-chan error {
	res := make(chan error, 1)
	defer fz.close()
	msg := fmt.Sprintf("%d %t", fz.pid, s.there)
	if err := unix.Sendmsg(int(s.sock.Fd()), []byte(msg), unix.UnixRights(fz.pidfd, fz.tasks), nil, 0); err != nil {
		res <- fmt.Errorf("hand the run to the stopper helper: %w", err)
		return res
	}
	go func() {
		msg, err := s.read()
		switch {
		case err != nil:
			res <- fmt.Errorf("the stopper helper ended: %w", err)
		case msg != "stopped":
			res <- errors.New(msg)
		default:
			res <- nil
		}
	}()
	return res
}

// cancel ends the helper, whether it has stopped the run or still waits.
func (s *stopper) cancel() {
	_ = s.helper.Process.Kill()
	_ = s.helper.Wait()
	s.sock.Close()
}

// stopperHelper is the helper's main: fd 3 is the inotify watch, fd 4 its socket.
func stopperHelper(name string) int {
	const ifd, sock = 3, 4
	runtime.LockOSThread()
	_ = unix.SchedSetAttr(0, &unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: unix.SCHED_FIFO, Priority: 10}, 0)
	say := func(msg string) { _, _ = unix.Write(sock, []byte(msg)) }
	say("ready")
	b, oob := make([]byte, 512), make([]byte, unix.CmsgSpace(2*4))
	n, oobn, _, _, err := unix.Recvmsg(sock, b, oob, 0)
	if err != nil || n == 0 {
		return 0 // cancelled before the run started
	}
	pid, there, err := parseArm(string(b[:n]))
	var fds []int
	if err == nil {
		var msgs []unix.SocketControlMessage
		if msgs, err = unix.ParseSocketControlMessage(oob[:oobn]); err == nil && len(msgs) == 1 {
			fds, err = unix.ParseUnixRights(&msgs[0])
		}
	}
	if err != nil || len(fds) != 2 {
		say(fmt.Sprintf("the stopper helper got no pid and descriptors: %v", err))
		return 1
	}
	fz := &freezer{pid: pid, pidfd: fds[0], tasks: fds[1], dents: make([]byte, 8192)}
	stop := func() int {
		if err := fz.stop(); err != nil {
			say(err.Error())
			return 1
		}
		say("stopped")
		return 0
	}
	if there {
		return stop()
	}
	buf := make([]byte, 64<<10)
	fdset := []unix.PollFd{{Fd: ifd, Events: unix.POLLIN}, {Fd: sock, Events: unix.POLLIN}}
	want := []byte(name)
	for {
		fdset[0].Revents, fdset[1].Revents = 0, 0
		if _, err := unix.Ppoll(fdset, nil, nil); err != nil {
			if err == unix.EINTR {
				continue
			}
			say("ppoll: " + err.Error())
			return 1
		}
		if fdset[1].Revents != 0 {
			return 0 // the test is done with this run
		}
		n, err := unix.Read(ifd, buf)
		if err == unix.EAGAIN || err == unix.EINTR {
			continue
		}
		if err != nil {
			say("read inotify: " + err.Error())
			return 1
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
			start := off + unix.SizeofInotifyEvent
			end := start + int(ev.Len)
			if end > n {
				break
			}
			if bytes.Equal(bytes.TrimRight(buf[start:end], "\x00"), want) {
				return stop()
			}
			off = end
		}
	}
}

func parseArm(msg string) (pid int, there bool, err error) {
	f := strings.Fields(msg)
	if len(f) != 2 {
		return 0, false, fmt.Errorf("bad message %q", msg)
	}
	if pid, err = strconv.Atoi(f[0]); err != nil {
		return 0, false, err
	}
	there, err = strconv.ParseBool(f[1])
	return pid, there, err
}

// freezer stops a child process: SIGSTOP to the process and to each of its threads, by raw
// system calls on descriptors opened while the child could not be reaped yet (its pidfd, its
// /proc task directory). The process-directed signal alone is taken by one thread, and only
// when that thread runs does the group stop begin: on a loaded machine it may wait for a CPU
// while another thread goes on for milliseconds. A signal to each thread makes every one stop
// at its next return to user space (one inside a system call that sleeps finishes it first).
type freezer struct {
	pid, pidfd, tasks int
	dents             []byte
}

func newFreezer(pid int) (*freezer, error) {
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil, fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	tasks, err := unix.Open(fmt.Sprintf("/proc/%d/task", pid), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		unix.Close(pidfd)
		return nil, fmt.Errorf("open /proc/%d/task: %w", pid, err)
	}
	return &freezer{pid: pid, pidfd: pidfd, tasks: tasks, dents: make([]byte, 8192)}, nil
}

func (f *freezer) stop() error {
	if _, _, e := unix.RawSyscall6(unix.SYS_PIDFD_SEND_SIGNAL, uintptr(f.pidfd), uintptr(unix.SIGSTOP), 0, 0, 0, 0); e != 0 {
		return fmt.Errorf("pidfd_send_signal: %w", e)
	}
	if _, _, e := unix.RawSyscall(unix.SYS_LSEEK, uintptr(f.tasks), 0, 0); e != 0 {
		return nil // the process-directed signal is sent: the stop comes, later
	}
	for {
		n, _, e := unix.RawSyscall(unix.SYS_GETDENTS64, uintptr(f.tasks), uintptr(unsafe.Pointer(&f.dents[0])), uintptr(len(f.dents)))
		if e != 0 || n == 0 {
			return nil
		}
		// struct linux_dirent64: d_ino (8), d_off (8), d_reclen (2), d_type (1), d_name.
		for off := 0; off+19 < int(n); {
			reclen := int(binary.NativeEndian.Uint16(f.dents[off+16:]))
			if reclen == 0 {
				break
			}
			tid := 0
			for _, c := range f.dents[off+19 : off+reclen] {
				if c < '0' || c > '9' {
					break
				}
				tid = tid*10 + int(c-'0')
			}
			if tid > 0 {
				unix.RawSyscall(unix.SYS_TGKILL, uintptr(f.pid), uintptr(tid), uintptr(unix.SIGSTOP))
			}
			off += reclen
		}
	}
}

func (f *freezer) close() {
	unix.Close(f.tasks)
	unix.Close(f.pidfd)
}
