package mesh

import (
	"sync"
	"time"
)

// maxInitCache bounds the messages 1 remembered. Only cluster members can
// make new ones (they are sealed with the cluster key), at HandshakeRate
// per source address; a handful of nodes make a few a minute.
const maxInitCache = 16384

// initCache remembers the messages 1 this node answered, by their
// ephemeral key, for as long as their timestamp is within the clock
// window: a copy replayed by a stranger is then dropped after one hash and
// one AEAD open, with no Diffie-Hellman, no reply and no state. (In the
// XX pattern message 1 does not say who sent it, so WireGuard's "greatest
// timestamp per peer" cannot be checked before answering; the window and
// this cache give the same protection.) When full, the oldest entry goes.
type initCache struct {
	mu   sync.Mutex
	seen map[[32]byte]time.Time // ephemeral -> when it was added
	ring [][32]byte             // insertion order, for the bound
	next int
	max  int
}

func newInitCache(max int) *initCache {
	return &initCache{seen: map[[32]byte]time.Time{}, max: max}
}

func (c *initCache) seenBefore(e [32]byte) bool {
	c.mu.Lock()
	_, ok := c.seen[e]
	c.mu.Unlock()
	return ok
}

// add records e; now is the local time.
func (c *initCache) add(e [32]byte, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.seen[e]; ok {
		return
	}
	if len(c.ring) < c.max {
		c.ring = append(c.ring, e)
	} else {
		delete(c.seen, c.ring[c.next])
		c.ring[c.next] = e
		c.next = (c.next + 1) % c.max
	}
	c.seen[e] = now
}

// prune forgets entries added before cutoff: their messages are outside
// the clock window by now and would be dropped as stale anyway.
func (c *initCache) prune(cutoff time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.seen) == 0 {
		return
	}
	for e, t := range c.seen {
		if t.Before(cutoff) {
			delete(c.seen, e)
		}
	}
	if len(c.seen) == 0 {
		c.ring, c.next = c.ring[:0], 0
	}
}

func (c *initCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.seen)
}
