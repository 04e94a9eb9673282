package apply

import (
	"sync"

	"github.com/ocktools/pkcstok-migrate/internal/repofs"
)

// writeBehind writes the working copy out while the copy is still making it: every `every`
// files it starts a syncfs of the working copy's file system in the background, one at a
// time (a request while one runs starts another right after it). The syncfs the switch
// relies on (the journal's) then finds only the last files to write instead of all of them:
// on XFS that last syncfs took 0.2-0.4 s of a 10,000-object apply, after the copy, with
// nothing else to do meanwhile.
//
// It is an extra barrier, never the one the protocol relies on, and it cannot hide an error
// from that one: it syncs through its own open file description of the working copy
// (syncfs reports a write-back error once to each open file description, errseq), and its
// own result is ignored.
type writeBehind struct {
	d     *repofs.Dir // its own description of the working copy; nil: nothing is done
	every int
	sync  func() error // d.Syncfs; tests count the calls

	mu      sync.Mutex
	files   int
	running bool
	again   bool
	done    sync.WaitGroup
}

// writeBehindEvery is how many files the copy writes between two background syncfs calls:
// a tenth of the repository, at least 256 (on XFS, more often slowed the copy more than it
// shortened the last syncfs; measured at 1,000 and 10,000 objects).
func writeBehindEvery(objects int) int {
	return max(256, objects/10)
}

// newWriteBehind opens its own description of wc. If that fails there is no write-behind:
// the copy is as durable without it.
func newWriteBehind(wc *repofs.Dir, objects int) *writeBehind {
	d, err := wc.OpenSubdir(".")
	if err != nil {
		d = nil
	}
	w := &writeBehind{d: d, every: writeBehindEvery(objects)}
	if d != nil {
		w.sync = d.Syncfs
	}
	return w
}

// file counts one file written (repofs.CopyOptions.OnFile, which the copier calls one at a
// time).
func (w *writeBehind) file(string) {
	w.mu.Lock()
	w.files++
	kick := w.files%w.every == 0
	w.mu.Unlock()
	if kick {
		w.kick()
	}
}

// kick asks for a syncfs that starts now or right after the one running.
func (w *writeBehind) kick() {
	if w.d == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.running {
		w.again = true
		return
	}
	w.running = true
	w.done.Add(1)
	go w.loop()
}

func (w *writeBehind) loop() {
	defer w.done.Done()
	for {
		_ = w.sync()
		w.mu.Lock()
		if !w.again {
			w.running = false
			w.mu.Unlock()
			return
		}
		w.again = false
		w.mu.Unlock()
	}
}

// close waits for the syncfs calls running and closes the description.
func (w *writeBehind) close() {
	w.done.Wait()
	if w.d != nil {
		_ = w.d.Close()
	}
}
