package apply

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ocktools/pkcstok-migrate/internal/repofs"
)

func TestWriteBehindEvery(t *testing.T) {
	assert.Equal(t, 256, writeBehindEvery(0))
	assert.Equal(t, 256, writeBehindEvery(1000))
	assert.Equal(t, 1000, writeBehindEvery(10000))
}

// TestWriteBehindOwnDescription: the background syncfs never goes through the descriptor
// the relied-upon syncfs uses (a write-back error is reported once per open file
// description), and closing waits for it.
func TestWriteBehindOwnDescription(t *testing.T) {
	wc, err := repofs.OpenDir(t.TempDir())
	require.NoError(t, err)
	defer wc.Close()
	w := newWriteBehind(wc, 10)
	require.NotNil(t, w.d)
	assert.NotEqual(t, wc.Fd(), w.d.Fd())
	var calls atomic.Int32
	real := w.sync
	w.sync = func() error { calls.Add(1); return real() }
	for i := 0; i < 256; i++ {
		w.file("TOK_OBJ/X")
	}
	w.close()
	assert.Equal(t, int32(1), calls.Load(), "one syncfs after 256 files")
	assert.Equal(t, -1, w.d.Fd(), "closed")
}

// TestWriteBehindCoalesces: requests while a syncfs runs start one more after it, not one
// each, and never two at once.
func TestWriteBehindCoalesces(t *testing.T) {
	release := make(chan struct{})
	var calls, running, overlap atomic.Int32
	w := &writeBehind{d: &repofs.Dir{} /* never closed here */, every: 1, sync: func() error {
		if running.Add(1) > 1 {
			overlap.Add(1)
		}
		defer running.Add(-1)
		if calls.Add(1) == 1 {
			<-release
		}
		return nil
	}}
	w.kick()
	for calls.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	w.kick()
	w.kick()
	w.file("a")
	close(release)
	w.done.Wait()
	assert.Equal(t, int32(2), calls.Load())
	assert.Zero(t, overlap.Load())
}
