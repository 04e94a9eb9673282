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
	seq     int
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
	c.seq++
	o.seq = c.seq
	for _, a := range o.aspects() {
		c.pending[a] = append(c.pending[a], o)
	}
	return nil
}

// flush makes every pending op of a durable. A Cross op among them takes the ops its other
// directory had before it along: it is one transaction of both.
func (c *Cut) flush(a aspect) error {
	for len(c.pending[a]) > 0 {
		o := c.pending[a][0]
		if o.Cross {
			for _, b := range o.aspects() {
				if b == a {
					continue
				}
				for len(c.pending[b]) > 0 && c.pending[b][0] != o {
					if err := c.flushOne(b); err != nil {
						return err
					}
				}
				if len(c.pending[b]) == 0 {
					return fmt.Errorf("%s: not in the queue of its second directory: %w", o, errModel)
				}
				c.pending[b] = c.pending[b][1:]
				if len(c.pending[b]) == 0 {
					delete(c.pending, b)
				}
			}
		}
		if err := c.durable.apply(o); err != nil {
			return err
		}
		c.pending[a] = c.pending[a][1:]
	}
	delete(c.pending, a)
	return nil
}

// flushOne makes the first pending op of a durable (with what a Cross op takes along).
func (c *Cut) flushOne(a aspect) error {
	q := c.pending[a]
	if len(q) == 0 {
		return nil
	}
	rest := q[1:]
	c.pending[a] = q[:1]
	if err := c.flush(a); err != nil {
		return err
	}
	if len(rest) > 0 {
		c.pending[a] = append(c.pending[a], rest...)
	}
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
// A Cross op survives in both of its directories or in neither: where one queue's prefix
// keeps it and the other's does not, the longer prefix is cut before it, until no such op is
// left. The surviving ops are applied in the order they were made.
func (c *Cut) state(keep func(n int) int) (*Tree, error) {
	s := c.durable.clone()
	keys := c.keys()
	kept := make(map[aspect]int, len(keys))
	pos := map[*Op]map[aspect]int{}
	for _, a := range keys {
		q := c.pending[a]
		kept[a] = keep(len(q))
		for i, o := range q {
			if o.Cross {
				if pos[o] == nil {
					pos[o] = map[aspect]int{}
				}
				pos[o][a] = i
			}
		}
	}
	for changed := true; changed; {
		changed = false
		for _, ps := range pos {
			in, out := false, false
			for a, i := range ps {
				if i < kept[a] {
					in = true
				} else {
					out = true
				}
			}
			if in && out {
				for a, i := range ps {
					if i < kept[a] {
						kept[a] = i
					}
				}
				changed = true
			}
		}
	}
	var ops []*Op
	seen := map[*Op]bool{}
	for _, a := range keys {
		for _, o := range c.pending[a][:kept[a]] {
			if !seen[o] {
				seen[o] = true
				ops = append(ops, o)
			}
		}
	}
	sort.Slice(ops, func(i, j int) bool { return ops[i].seq < ops[j].seq })
	for _, o := range ops {
		if err := s.apply(o); err != nil {
			return nil, err
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
