package tokentest

import (
	"crypto/sha256"
	"sync"

	"github.com/ocktools/pkcstok-migrate/tokens"
)

// KeyCache unlocks repositories for a test that reads the same key files many times (a crash
// or fault sweep): each set of key files and PINs is unlocked once, by several goroutines too.
// The zero value is ready.
type KeyCache struct {
	mu   sync.Mutex
	keys map[[32]byte]*tokens.Keys
}

// Unlock returns the keys of repo, whose NVTOK.DAT is nv, with the PINs so and user.
func (c *KeyCache) Unlock(repo *tokens.Repository, nv []byte, so, user string) (*tokens.Keys, error) {
	h := sha256.New()
	for _, b := range [][]byte{nv, {0}, repo.MKSO, {0}, repo.MKUser, {0}, []byte(so), {0}, []byte(user)} {
		h.Write(b)
	}
	var id [32]byte
	h.Sum(id[:0])
	c.mu.Lock()
	k := c.keys[id]
	c.mu.Unlock()
	if k != nil {
		return k, nil
	}
	k, err := repo.Unlock([]byte(so), []byte(user))
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if c.keys == nil {
		c.keys = map[[32]byte]*tokens.Keys{}
	}
	c.keys[id] = k
	c.mu.Unlock()
	return k, nil
}
