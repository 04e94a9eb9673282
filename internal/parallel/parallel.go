// Package parallel runs independent pieces of work on every core.
package parallel

import (
	"runtime"
	"sync"
	"sync/atomic"
)

// For calls fn(i) for every i in [0, n), on GOMAXPROCS goroutines, and waits. After the first
// error, indexes not yet started are skipped. It returns the error of the lowest index that
// failed, so the result does not depend on scheduling when only one item is bad.
func For(n int, fn func(i int) error) error {
	return Workers(n, runtime.GOMAXPROCS(0), func() func(int) error { return fn })
}

// Workers is For with state per goroutine (a buffer, a hash): each of at most workers
// goroutines calls newWorker once and uses the function it returns for the indexes it
// takes. With one worker (or one item) everything runs on the calling goroutine.
func Workers(n, workers int, newWorker func() func(i int) error) error {
	workers = min(workers, n)
	if workers <= 1 {
		if n == 0 {
			return nil
		}
		fn := newWorker()
		for i := 0; i < n; i++ {
			if err := fn(i); err != nil {
				return err
			}
		}
		return nil
	}
	var (
		next     atomic.Int64
		failed   atomic.Bool
		mu       sync.Mutex
		firstIdx = n
		firstErr error
		wg       sync.WaitGroup
	)
	for w := 0; w < workers; w++ {
		wg.Go(func() {
			fn := newWorker()
			for !failed.Load() {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := fn(i); err != nil {
					mu.Lock()
					if i < firstIdx {
						firstIdx, firstErr = i, err
					}
					mu.Unlock()
					failed.Store(true)
					return
				}
			}
		})
	}
	wg.Wait()
	return firstErr
}
