package mesh

import (
	"net/netip"
	"sync"
)

// limiter is a token bucket per source IP address for handshake messages,
// which cost a Diffie-Hellman each. Unknown addresses beyond maxEntries are
// refused until idle entries are pruned.
type limiter struct {
	mu         sync.Mutex
	rate       float64 // tokens per nanosecond
	burst      float64
	buckets    map[netip.Addr]*bucket
	maxEntries int
}

type bucket struct {
	tokens float64
	last   int64
}

func newLimiter(perSecond float64) *limiter {
	return &limiter{rate: perSecond / 1e9, burst: 2 * perSecond, buckets: map[netip.Addr]*bucket{}, maxEntries: 4096}
}

func (l *limiter) allow(a netip.Addr, now int64) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[a]
	if b == nil {
		if len(l.buckets) >= l.maxEntries {
			return false
		}
		b = &bucket{tokens: l.burst, last: now}
		l.buckets[a] = b
	}
	b.tokens = min(l.burst, b.tokens+float64(now-b.last)*l.rate)
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// prune forgets buckets that have refilled completely.
func (l *limiter) prune(now int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for a, b := range l.buckets {
		if b.tokens+float64(now-b.last)*l.rate >= l.burst {
			delete(l.buckets, a)
		}
	}
}
