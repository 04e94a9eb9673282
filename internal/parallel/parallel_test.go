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
