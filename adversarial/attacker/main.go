// Command attacker is the unprivileged member of the token group in the adversarial suite
// (see ../README.md). The test starts it with her uid and gid; it never runs as root.
//
//	attacker [-n MAX] [-t DUR] ACTION ARGS...
//
// One-shot actions do one thing and exit. Racing actions loop until MAX iterations, DUR, or
// SIGTERM, whichever comes first; they print "ready" when they start looping, and on the
// way out undo their swaps (xchg by inode; symflap by name in every -undo directory) and
// print "iterations N".
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

var (
	maxIter = flag.Int("n", 100000, "most iterations of a racing action")
	maxDur  = flag.Duration("t", 30*time.Second, "longest a racing action loops")
	undoDir = flag.String("undo", "", "colon-separated directories the undo step looks at")
)

func main() {
	flag.Parse()
	args := flag.Args()
	if len(args) == 0 {
		fail(errors.New("no action"))
	}
	act, rest := args[0], args[1:]
	var err error
	switch act {
	case "rename": // SRC DST
		err = need(rest, 2, func() error { return os.Rename(rest[0], rest[1]) })
	case "symlink": // TARGET LINK
		err = need(rest, 2, func() error { return os.Symlink(rest[0], rest[1]) })
	case "link": // TARGET LINK (a hard link: needs fs.protected_hardlinks=0)
		err = need(rest, 2, func() error { return os.Link(rest[0], rest[1]) })
	case "mkfifo": // PATH
		err = need(rest, 1, func() error { return unix.Mkfifo(rest[0], 0o600) })
	case "writestdin": // PATH MODE: stdin to a new file of hers
		err = need(rest, 2, func() error { return writeStdin(rest[0], rest[1]) })
	case "forge": // SRC DST: DST replaced by her own file with SRC's bytes
		err = need(rest, 2, func() error { return forge(rest[0], rest[1]) })
	case "stale": // DATASTORE: drop the last object and its OBJ.IDX line, then an empty journal
		err = need(rest, 1, func() error { return stale(rest[0]) })
	case "sparse": // DIR N SIZE
		err = need(rest, 3, func() error { return sparse(rest[0], rest[1], rest[2]) })
	case "manyfiles": // DIR N: N new empty files with long names in DIR, on every core
		err = need(rest, 2, func() error { return manyFiles(rest[0], rest[1]) })
	case "swapin": // PARENT NAME OWN: exchange her OWN directory with root's PARENT/NAME
		err = need(rest, 3, func() error { return loop(swapin(rest[0], rest[1], rest[2], false), nil) })
	case "swapin1": // PARENT NAME OWN: the same once, OWN being any entry (root's victim)
		err = need(rest, 3, func() error { return loop(swapin(rest[0], rest[1], rest[2], true), nil) })
	case "symflap": // DIR NAME TARGET: a symlink NAME created and removed
		err = need(rest, 3, func() error { return loop(symflap(rest[0], rest[1], rest[2]), undoSymflap(rest[1])) })
	case "afterswitch": // PATH TARGET: once PATH is another directory than at the start, a symlink to TARGET in its place
		err = need(rest, 2, func() error { return afterSwitch(rest[0], rest[1]) })
	case "xchg": // A B: RENAME_EXCHANGE of A (hers: a symlink, FIFO, device) and B, and back
		err = need(rest, 2, func() error { return loopXchg(rest[0], rest[1]) })
	default:
		err = fmt.Errorf("unknown action %q", act)
	}
	if err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintf(os.Stderr, "attacker: %v\n", err)
	os.Exit(1)
}

func need(args []string, n int, f func() error) error {
	if len(args) != n {
		return fmt.Errorf("want %d arguments, got %d", n, len(args))
	}
	return f()
}

// loop runs step until a bound or SIGTERM, then undo for every -undo directory.
func loop(step func(), undo func(dir string)) error {
	var stop atomic.Bool
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	go func() { <-sig; stop.Store(true) }()
	deadline := time.Now().Add(*maxDur)
	fmt.Println("ready")
	n := 0
	for ; n < *maxIter && !stop.Load(); n++ {
		if n%64 == 0 && time.Now().After(deadline) {
			break
		}
		step()
	}
	if undo != nil {
		dirs := []string{""}
		if *undoDir != "" {
			dirs = strings.Split(*undoDir, ":")
		}
		for _, d := range dirs {
			undo(d)
		}
	}
	fmt.Printf("iterations %d\n", n)
	return nil
}

func writeStdin(path, mode string) error {
	m, err := strconv.ParseUint(mode, 8, 32)
	if err != nil {
		return err
	}
	b, err := io.ReadAll(io.LimitReader(os.Stdin, 1<<20))
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, b, os.FileMode(m)); err != nil {
		return err
	}
	return os.Chmod(path, os.FileMode(m))
}

func forge(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	tmp := dst + ".forged"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, dst)
}

func stale(ds string) error {
	idx := filepath.Join(ds, "TOK_OBJ", "OBJ.IDX")
	f, err := os.Open(idx)
	if err != nil {
		return err
	}
	var names []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" {
			names = append(names, l)
		}
	}
	f.Close()
	if len(names) == 0 {
		return errors.New("OBJ.IDX is empty")
	}
	last := names[len(names)-1]
	if err := os.Remove(filepath.Join(ds, "TOK_OBJ", last)); err != nil {
		return err
	}
	// OBJ.IDX is 0660 root:pkcs11: she may rewrite it in place.
	out := strings.Join(names[:len(names)-1], "\n") + "\n"
	if err := os.WriteFile(idx, []byte(out), 0o660); err != nil {
		return err
	}
	j, err := os.OpenFile(ds+"_PKCSTOK_MIGRATE_JOURNAL", os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	return j.Close()
}

func sparse(dir, count, size string) error {
	n, err := strconv.Atoi(count)
	if err != nil {
		return err
	}
	sz, err := strconv.ParseInt(size, 10, 64)
	if err != nil {
		return err
	}
	for i := 0; i < n && i < 64; i++ {
		f, err := os.OpenFile(filepath.Join(dir, fmt.Sprintf("SPARSE%02d", i)), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o660)
		if err != nil {
			return err
		}
		err = f.Truncate(sz)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// manyFiles fills dir with n new names of 240 bytes (the names alone take about 256 bytes of
// directory each), all of them empty files of hers: a new file every manyLinks names and hard
// links of it for the others (a link costs a quarter of a file's creation on ext4, whose
// limit is 65,000 links to a file). One goroutine: the directory's lock serializes them.
func manyFiles(dir, count string) error {
	n, err := strconv.Atoi(count)
	if err != nil {
		return err
	}
	dfd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(dfd)
	const manyLinks = 60000
	pad := strings.Repeat("m", 240-12)
	src := ""
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("%012d%s", i, pad)
		if i%manyLinks == 0 {
			fd, err := unix.Openat(dfd, name, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, 0o660)
			if err != nil {
				return err
			}
			unix.Close(fd)
			src = name
			continue
		}
		if err := unix.Linkat(dfd, src, dfd, name, 0); err != nil {
			return err
		}
	}
	return nil
}

// mine reports whether path exists and belongs to her.
func mine(path string) (exists, own bool) {
	var st unix.Stat_t
	if unix.Lstat(path, &st) != nil {
		return false, false
	}
	return true, int(st.Uid) == os.Getuid()
}

// swapin: whenever root's entry sits at PARENT/NAME, exchange it with her own directory
// (prepared once: a 592-byte NVTOK.DAT, MK files, an empty OBJ.IDX).
func swapin(parent, name, own string, once bool) func() {
	if err := prepareOwn(own); err != nil {
		fail(err)
	}
	target := filepath.Join(parent, name)
	done := false
	return func() {
		if done {
			time.Sleep(time.Millisecond) // swapped: leave the cores to root
			return
		}
		if exists, own2 := mine(target); exists && !own2 {
			if once {
				done = unix.Renameat2(unix.AT_FDCWD, own, unix.AT_FDCWD, target, unix.RENAME_EXCHANGE) == nil
				return
			}
			if err := unix.Renameat2(unix.AT_FDCWD, own, unix.AT_FDCWD, target, unix.RENAME_EXCHANGE); err == nil {
				// Root's directory is now at own: put it aside so own is free for the next one.
				_ = os.Rename(own, fmt.Sprintf("%s.root.%d", own, time.Now().UnixNano()))
				_ = prepareOwn(own)
			}
		}
	}
}

func prepareOwn(own string) error {
	if _, err := os.Lstat(own); err == nil {
		return nil
	}
	if err := os.MkdirAll(filepath.Join(own, "TOK_OBJ"), 0o770); err != nil {
		return err
	}
	for name, n := range map[string]int{"NVTOK.DAT": 592, "MK_SO": 40, "MK_USER": 40, "TOK_OBJ/OBJ.IDX": 0} {
		if err := os.WriteFile(filepath.Join(own, name), make([]byte, n), 0o660); err != nil {
			return err
		}
	}
	return nil
}

func symflap(dir, name, target string) func() {
	p := filepath.Join(dir, name)
	return func() {
		if os.Symlink(target, p) != nil {
			return
		}
		for i := 0; i < 50; i++ {
			runtime.Gosched()
		}
		if _, own := mine(p); own {
			_ = os.Remove(p)
		}
	}
}

func undoSymflap(name string) func(dir string) {
	return func(dir string) {
		p := filepath.Join(dir, name)
		if st, err := os.Lstat(p); err == nil && st.Mode()&os.ModeSymlink != 0 {
			if _, own := mine(p); own {
				_ = os.Remove(p)
			}
		}
	}
}

// loopXchg exchanges A (hers: a symlink, FIFO or device) with B and back, bound to the
// inodes both had at the start: B's parent is held open, so when root renames the
// repository around her (the switch, the backup) she keeps racing on the original tree and
// never touches root's new one; at the repository's own level (B's parent the state dir),
// where names change meaning, she exchanges only while B's name still holds the original
// and exchanges back only while it holds hers. Stopped, she puts her entry back out
// wherever it still is in the original's place.
func loopXchg(a, b string) error {
	pfd, err := unix.Open(filepath.Dir(b), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	name := filepath.Base(b)
	var sa, sb unix.Stat_t
	if err := unix.Lstat(a, &sa); err != nil {
		return err
	}
	if err := unix.Fstatat(pfd, name, &sb, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return err
	}
	holds := func(ino uint64) bool {
		var st unix.Stat_t
		return unix.Fstatat(pfd, name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && uint64(st.Ino) == ino
	}
	swap := func() bool {
		return unix.Renameat2(unix.AT_FDCWD, a, pfd, name, unix.RENAME_EXCHANGE) == nil
	}
	inoA, inoB := uint64(sa.Ino), uint64(sb.Ino)
	return loop(func() {
		if !holds(inoB) || !swap() {
			return
		}
		for i := 0; i < 50; i++ {
			runtime.Gosched()
		}
		if holds(inoA) {
			swap()
		}
	}, func(string) {
		if holds(inoA) {
			swap()
		}
	})
}

// afterSwitch waits until path holds another directory than it did at the start (root
// switched the migrated copy in), then moves that directory aside and puts a symlink to
// target at path: a name root must not resolve again after its switch. The undo puts the
// directory back.
func afterSwitch(path, target string) error {
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		return err
	}
	first, aside := uint64(st.Ino), path+".aside"
	done := false
	return loop(func() {
		if done {
			time.Sleep(time.Millisecond)
			return
		}
		var cur unix.Stat_t
		if unix.Lstat(path, &cur) != nil || cur.Mode&unix.S_IFMT != unix.S_IFDIR || uint64(cur.Ino) == first {
			return
		}
		if os.Rename(path, aside) == nil {
			done = os.Symlink(target, path) == nil
		}
	}, func(string) {
		if !done {
			return
		}
		if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSymlink != 0 {
			_ = os.Remove(path)
		}
		_ = os.Rename(aside, path)
	})
}
