package crashsim

import (
	"fmt"
	"math/rand"
	"sort"
)

// Cut is the moment after the first K ops: what is durable and what is not yet.
type Cut struct {
	K       int
	durable *fsState
	pending map[aspect][]*Op
}

// Cuts calls fn for every cut point, K = 0 (before the first op) to len(Ops) (after the
// last), in order, until fn returns false or an error.
func (s *Sim) Cuts(fn func(c *Cut) (bool, error)) error {
	c := &Cut{durable: s.initial.clone(), pending: map[aspect][]*Op{}}
	for k := 0; ; k++ {
		c.K = k
		more, err := fn(c)
		if err != nil || !more || k == len(s.Ops) {
			return err
		}
		if err := c.add(&s.Ops[k]); err != nil {
			return fmt.Errorf("crashsim: op %d (%s): %w", k, s.Ops[k], err)
		}
	}
}

// add takes one more op: a change waits in its aspect's queue, a barrier flushes queues.
func (c *Cut) add(o *Op) error {
	switch o.Kind {
	case OpSyncfs:
		for a := range c.pending {
			if err := c.flush(a); err != nil {
				return err
			}
		}
		return nil
	case OpFsync, OpFdatasync:
		n, err := c.durable.get(o.Ino)
		if err != nil {
			return err
		}
		parts := []uint8{partContent}
		if n.kind == Dir {
			// A directory's "content" is its entries.
			parts = []uint8{partEntries}
		}
		if o.Kind == OpFsync {
			parts = append(parts, partMeta)
		}
		for _, p := range parts {
			if err := c.flush(aspect{o.Ino, p}); err != nil {
				return err
			}
		}
		return nil
	}
	a := o.aspect()
	c.pending[a] = append(c.pending[a], o)
	return nil
}

func (c *Cut) flush(a aspect) error {
	for _, o := range c.pending[a] {
		if err := c.durable.apply(o); err != nil {
			return err
		}
	}
	delete(c.pending, a)
	return nil
}

// Pending is how many ops are not durable at this cut.
func (c *Cut) Pending() int {
	n := 0
	for _, q := range c.pending {
		n += len(q)
	}
	return n
}

func (c *Cut) keys() []aspect {
	keys := make([]aspect, 0, len(c.pending))
	for a := range c.pending {
		keys = append(keys, a)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].ino != keys[j].ino {
			return keys[i].ino < keys[j].ino
		}
		return keys[i].part < keys[j].part
	})
	return keys
}

// state applies, to a copy of the durable state, the first keep(a, n) of the n pending ops
// of every aspect a.
func (c *Cut) state(keep func(n int) int) (*Tree, error) {
	s := c.durable.clone()
	for _, a := range c.keys() {
		q := c.pending[a]
		for _, o := range q[:keep(len(q))] {
			if err := s.apply(o); err != nil {
				return nil, err
			}
		}
	}
	return s.tree(0)
}

// Strict is the state a power cut at this moment leaves when nothing survives that a
// barrier did not cover.
func (c *Cut) Strict() (*Tree, error) { return c.state(func(int) int { return 0 }) }

// Lenient is the state when everything done so far survives (as after a kill).
func (c *Cut) Lenient() (*Tree, error) { return c.state(func(n int) int { return n }) }

// Mix is a state between the two: of every file's content, every inode's metadata and
// every directory's entries, a prefix of random length of what was not durable survives.
// The same seed gives the same state.
func (c *Cut) Mix(seed int64) (*Tree, error) {
	r := rand.New(rand.NewSource(seed))
	return c.state(func(n int) int { return r.Intn(n + 1) })
}

// WithoutBarrier is the same run as if op i, a barrier, had never been called: the process
// does not depend on what fsync does, so its other calls stay as they were. It tells which
// barriers a protocol really needs.
func (s *Sim) WithoutBarrier(i int) (*Sim, error) {
	if i < 0 || i >= len(s.Ops) || !s.Ops[i].Barrier() {
		return nil, fmt.Errorf("crashsim: op %d is not a barrier", i)
	}
	ops := make([]Op, 0, len(s.Ops)-1)
	ops = append(ops, s.Ops[:i]...)
	ops = append(ops, s.Ops[i+1:]...)
	return &Sim{Ops: ops, initial: s.initial, final: s.final}, nil
}
