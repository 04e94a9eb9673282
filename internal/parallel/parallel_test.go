package parallel

import (
	"errors"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestForVisitsEveryIndexOnce(t *testing.T) {
	for _, n := range []int{0, 1, 7, 1000} {
		seen := make([]atomic.Int32, n)
		require.NoError(t, For(n, func(i int) error { seen[i].Add(1); return nil }))
		for i := range seen {
			require.EqualValues(t, 1, seen[i].Load(), "n=%d i=%d", n, i)
		}
	}
}

func TestForReturnsTheLowestFailingIndex(t *testing.T) {
	err := For(100, func(i int) error {
		if i == 3 {
			return fmt.Errorf("item %d", i)
		}
		return nil
	})
	require.EqualError(t, err, "item 3")
	bad := errors.New("bad")
	require.ErrorIs(t, For(5, func(int) error { return bad }), bad)
}

// Each goroutine gets its own state; one worker runs everything in order on the caller.
func TestWorkersStatePerGoroutine(t *testing.T) {
	var made atomic.Int32
	sum := make([]int, 100)
	require.NoError(t, Workers(100, 4, func() func(int) error {
		made.Add(1)
		local := 0
		return func(i int) error { local++; sum[i] = local; return nil }
	}))
	require.LessOrEqual(t, made.Load(), int32(4))
	var order []int
	require.NoError(t, Workers(5, 1, func() func(int) error {
		return func(i int) error { order = append(order, i); return nil }
	}))
	require.Equal(t, []int{0, 1, 2, 3, 4}, order)
	require.NoError(t, Workers(0, 3, func() func(int) error { t.Fatal("no work, no worker"); return nil }))
}
