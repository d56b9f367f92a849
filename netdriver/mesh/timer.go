package mesh

import (
	"context"
	"maps"
	"net/netip"
	"slices"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/homeswarm/homeswarm/netdriver/conn"
	"github.com/homeswarm/homeswarm/netdriver/wire"
)

// tickInterval is how often the timer goroutine runs without being kicked.
func (m *Mesh) tickInterval() time.Duration {
	d := min(m.opts.HandshakeTimeout, m.opts.KeepaliveInterval, m.opts.RekeyAfter) / 5
	return min(max(d, 5*time.Millisecond), time.Second)
}

// timerLoop runs handshakes, rekeys, keepalives, gossip and expiry.
func (m *Mesh) timerLoop() {
	defer m.wg.Done()
	t := time.NewTicker(m.tickInterval())
	defer t.Stop()
	w := &worker{out: make([]conn.Message, 0, 16)}
	lastPrune := int64(0)
	for {
		select {
		case <-m.closing:
			return
		case <-t.C:
		case <-m.kick:
		}
		now := m.now()
		m.tick(w, now)
		m.flush(w)
		if now-lastPrune > int64(time.Second) {
			m.limiter.prune(now)
			m.probeAddr.prune(now)
			m.probeAll.prune(now)
			m.pruneHandshakes(now)
			lastPrune = now
		}
	}
}

func (m *Mesh) tick(w *worker, now int64) {
	m.mu.Lock()
	peers := slices.Collect(maps.Values(m.peers))
	type dial struct {
		s  *seed
		pt path
	}
	var dials []dial
	for _, s := range m.seeds {
		if s.self || len(s.addrs) == 0 {
			continue
		}
		if s.hasKey {
			// DNS is the truth for a peer we cannot reach
			if p := m.peers[s.key]; p != nil {
				p.mu.Lock()
				if p.current == nil && p.hs == nil && !slices.Contains(s.addrs, p.endpoint) {
					p.endpoint, p.endpointGossiped = s.addrs[0], false
					m.setPathLocked(p, m.choosePathLocked(p, now))
				}
				p.mu.Unlock()
				continue
			}
		}
		if s.hs != nil && now-s.hs.created < int64(m.opts.HandshakeTimeout) {
			continue
		}
		if s.attempts > 0 && now-s.lastInit < m.backoff(s.attempts) {
			continue
		}
		dials = append(dials, dial{s, path{ep: s.addrs[s.attempts%len(s.addrs)]}})
	}
	m.mu.Unlock()
	for _, d := range dials {
		m.initiateSeed(w, d.s, d.pt, now)
	}
	changed := false
	for _, p := range peers {
		if m.tickPeer(w, p, now) {
			changed = true
		}
	}
	if m.expirePeers(now) {
		changed = true
	}
	if m.contested.Load() {
		changed = true // a claimant's liveness may have changed
	}
	if changed {
		m.rebuildRoutes()
	}
}

// expirePeers forgets peers that have had no session and no mention for
// PeerExpiry, unless a configured peer address belongs to them.
func (m *Mesh) expirePeers(now int64) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	var gone []*peer
	for k, p := range m.peers {
		p.mu.Lock()
		idle := p.current == nil && p.previous == nil && now-p.seen > int64(m.opts.PeerExpiry) &&
			now-p.lastRx.Load() > int64(m.opts.PeerExpiry)
		if idle {
			for _, s := range m.seeds {
				if s.hasKey && s.key == k {
					idle = false
				}
			}
		}
		if idle {
			if p.hs != nil {
				m.dropIndex(p.hs.local)
				p.hs = nil
			}
			p.queue = nil
			gone = append(gone, p)
		}
		p.mu.Unlock()
	}
	for _, p := range gone {
		if r := p.introducer; r != nil {
			r.unvouched--
			p.introducer = nil
		}
		delete(m.peers, p.key)
		if m.byID[p.id] == p {
			delete(m.byID, p.id)
		}
		m.log.WithField("peer", p.key.Short()).Info("forgot idle peer")
	}
	if len(gone) > 0 {
		for _, q := range m.peers {
			q.mu.Lock()
			for _, p := range gone {
				delete(q.relays, p)
				if q.via == p {
					q.via = nil
					m.setPathLocked(q, m.choosePathLocked(q, now))
				}
			}
			q.mu.Unlock()
		}
	}
	return len(gone) > 0
}

// backoff is the pause before handshake attempt n+1 to an unresponsive peer.
func (m *Mesh) backoff(attempts int) int64 {
	d := m.opts.HandshakeTimeout
	if attempts > 4 {
		d *= time.Duration(min(1<<((attempts-4)/2), 6))
	}
	return int64(d)
}

// tickPeer does one peer's periodic work and reports whether its routes
// may have changed.
func (m *Mesh) tickPeer(w *worker, p *peer, now int64) bool {
	p.mu.Lock()
	// expire sessions
	if prev := p.previous; prev != nil {
		cur := p.current
		// A replaced session keeps receiving for a grace period, and for
		// as long as the peer still sends on it: after simultaneous
		// handshakes the two sides may each prefer a different session.
		grace := int64(m.opts.HandshakeTimeout)
		if prev.expired(now) || (cur != nil && cur.confirmed.Load() && now-p.replacedAt > grace && now-prev.lastRx.Load() > grace) {
			m.dropIndex(prev.local)
			p.previous = nil
		}
	}
	if cur := p.current; cur != nil && cur.expired(now) {
		m.dropIndex(cur.local)
		p.current = nil
		m.log.WithField("peer", p.key.Short()).Info("session expired")
	}
	p.updateSendLocked(now)
	if p.hs != nil && now-p.hs.created >= int64(m.opts.HandshakeTimeout) {
		m.dropIndex(p.hs.local)
		p.hs = nil
	}
	// decide on a handshake
	need := false
	cur := p.current
	switch {
	case cur == nil:
		need = p.endpoint.IsValid() || len(p.relays) > 0 || p.via != nil
	case now-cur.created >= int64(m.opts.RekeyAfter) && cur.initiator:
		need = true
	case now-cur.created >= int64(m.opts.RekeyAfter+m.opts.HandshakeTimeout):
		need = true // the initiator did not rekey; do it ourselves
	case cur.sendNonce.Load() >= m.opts.RekeyAfterMessages:
		need = true
	case cur.initiator && !cur.confirmed.Load() && now-cur.created >= int64(m.opts.HandshakeTimeout):
		need = true // our final message may be lost
	case p.unanswered.Load() != 0 && now-p.unanswered.Load() > int64(m.opts.KeepaliveInterval/2+m.opts.HandshakeTimeout):
		// We sent data and nothing came back for longer than the peer's
		// answer takes (it sends a keepalive within KeepaliveInterval/2 of
		// receiving data, below): it lost the session, e.g. restarted.
		need = true
	case now-p.lastRx.Load() > m.pathTimeout && now-cur.created > int64(m.opts.HandshakeTimeout):
		// Both sides send keepalives, so silence means the peer does not
		// use this session (it lost it, or after crossing handshakes it
		// prefers one we dropped) or the path is gone: start afresh.
		need = true
	}
	switch {
	case !need || p.hs != nil:
		need = false
	case cur == nil && p.attempts > 0 && now-p.lastInit < m.backoff(p.attempts):
		need = false
	case cur != nil && now-p.lastInit < int64(m.opts.HandshakeTimeout):
		need = false
	}
	// refresh the path from what has recently worked
	m.setPathLocked(p, m.choosePathLocked(p, now))
	relayed := false
	if pt := p.path.Load(); pt != nil && pt.via != nil {
		relayed = true
	}
	ep := p.endpoint
	gossip := p.gossipDue || now-p.lastGossip >= int64(m.opts.GossipInterval) ||
		(p.gossipRepeats > 0 && now-p.lastGossip >= int64(m.tickInterval()/2))
	p.mu.Unlock()

	if need {
		m.initiate(w, p, now)
	}
	kp := p.sendable(now)
	if kp == nil {
		return false
	}
	lastTx := p.lastTx.Load()
	if now-lastTx >= int64(m.opts.KeepaliveInterval) ||
		(p.lastDataRx.Load() > lastTx && now-lastTx >= int64(m.opts.KeepaliveInterval/2)) {
		// a keepalive when idle, and one soon after data that we had
		// nothing to answer, so the sender knows the session is alive
		m.sendSealed(w, p, kp, wire.TypeData, nil, nil)
		if relayed && ep.IsValid() {
			// probe the direct path: if it works again the peer answers directly
			m.sendSealed(w, p, kp, wire.TypeData, nil, &path{ep: ep})
		}
	}
	if gossip {
		m.sendGossip(w, p, kp, now)
	}
	return false
}

// pruneHandshakes forgets responder handshakes that never finished.
func (m *Mesh) pruneHandshakes(now int64) {
	limit := int64(2 * m.opts.HandshakeTimeout)
	m.idxMu.Lock()
	for i, e := range m.index {
		if e.hs != nil && now-e.hs.created > limit {
			m.deleteIndexLocked(i)
		}
	}
	m.idxMu.Unlock()
	m.inits.prune(m.clock().Add(-2 * m.opts.MaxClockSkew)) // a copy is fresh until ts+skew, ts up to skew ahead
}

// resolveLoop resolves bootstrap host names now and every ResolveInterval.
func (m *Mesh) resolveLoop() {
	defer m.wg.Done()
	t := time.NewTicker(m.opts.ResolveInterval)
	defer t.Stop()
	for {
		m.resolve()
		select {
		case <-m.closing:
			return
		case <-t.C:
		}
	}
}

func (m *Mesh) resolve() {
	m.mu.Lock()
	seeds := slices.Clone(m.seeds)
	m.mu.Unlock()
	for _, s := range seeds {
		if _, err := netip.ParseAddr(s.host); err == nil {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		go func() {
			select {
			case <-m.closing:
				cancel()
			case <-ctx.Done():
			}
		}()
		ips, err := m.opts.Resolver.LookupNetIP(ctx, "ip4", s.host)
		cancel()
		if err != nil {
			m.log.WithFields(logrus.Fields{"peer": s.hostport}).WithError(err).Warn("resolve peer")
			continue
		}
		addrs := make([]netip.AddrPort, 0, len(ips))
		for _, ip := range ips {
			addrs = append(addrs, netip.AddrPortFrom(ip.Unmap(), s.port))
		}
		m.mu.Lock()
		if !slices.Equal(addrs, s.addrs) {
			m.log.WithFields(logrus.Fields{"peer": s.hostport, "addrs": addrs}).Info("peer address resolved")
			s.addrs = addrs
			if s.self {
				s.self = false // the name may now point elsewhere
			}
			s.attempts = 0
			s.lastInit = 0
		}
		m.mu.Unlock()
	}
	m.kickTimer()
}

// sendGossip tells p our prefixes and the peers we reach directly.
func (m *Mesh) sendGossip(w *worker, p *peer, kp *keypair, now int64) {
	m.mu.Lock()
	entries := []wire.GossipEntry{{Key: m.pub, Prefixes: m.prefixes}}
	if pt := p.path.Load(); pt != nil && pt.via == nil {
		// tell p how we see it: behind NAT, that is its public endpoint
		entries = append(entries, wire.GossipEntry{Key: p.key, Endpoint: pt.ep})
	}
	for _, q := range m.peers {
		if q == p {
			continue
		}
		pt := q.path.Load()
		if q.sendable(now) == nil || pt == nil || pt.via != nil || now-q.lastDirectRx.Load() >= m.pathTimeout {
			continue
		}
		entries = append(entries, wire.GossipEntry{Key: q.key, Endpoint: pt.ep})
	}
	m.mu.Unlock()
	for len(entries) > 0 {
		n := min(len(entries), wire.MaxGossipEntries)
		b, err := wire.Gossip{Entries: entries[:n]}.Append(nil)
		entries = entries[n:]
		if err != nil {
			m.log.WithError(err).Error("encode gossip")
			return
		}
		m.sendSealed(w, p, kp, wire.TypeGossip, b, nil)
	}
	p.mu.Lock()
	p.gossipDue = false
	p.gossipRepeats = max(0, p.gossipRepeats-1)
	p.lastGossip = now
	p.mu.Unlock()
}

// Gossip bounds: a member's gossip could otherwise make us remember any
// number of made-up peers and send handshakes to any address.
const (
	// maxUnvouched is how many peers one gossiper may have introduced
	// that have not handshaken with us yet; more are ignored until some
	// do (or expire). One gossip message holds at most as many.
	maxUnvouched = wire.MaxGossipEntries
	// maxPeers bounds the peers learned from gossip.
	maxPeers = 1024
	// probeRate is how many handshakes per second may go to one address
	// known only from gossip (burst twice that); probeRateAll is for all
	// such addresses together.
	probeRate    = 2
	probeRateAll = 20
)

// handleGossip merges what from tells us.
func (m *Mesh) handleGossip(from *peer, pt []byte, now int64) {
	g, err := wire.ParseGossip(pt)
	if err != nil {
		m.drop(dropMalformed)
		return
	}
	routes := false
	learned := false
	m.mu.Lock()
	for _, e := range g.Entries {
		k := Key(e.Key)
		switch {
		case k == from.key:
			from.mu.Lock()
			if !slices.Equal(from.prefixes, e.Prefixes) {
				from.setPrefixesLocked(e.Prefixes, now)
				routes = true
			}
			from.mu.Unlock()
		case k == m.pub:
			if e.Endpoint.IsValid() {
				m.publicEP = e.Endpoint
			}
		case m.isRevoked(k, nil):
			m.drop(dropRevoked) // never learned, never dialled, never a relay
		default:
			q := m.peers[k]
			if q == nil {
				// A peer we did not know: believe from only while the
				// peers it introduced turn out to exist (handshake).
				if from.unvouched >= maxUnvouched {
					m.drop(dropGossipUnvouched)
					continue
				}
				if len(m.peers) >= maxPeers {
					m.drop(dropPeerLimit)
					continue
				}
				q = m.peerLocked(k, true)
				q.introducer = from
				from.unvouched++
			}
			q.mu.Lock()
			if q.relays[from] == 0 {
				learned = true
			}
			q.relays[from] = now
			q.seen = now
			if e.Endpoint.IsValid() && q.current == nil && now-q.lastDirectRx.Load() >= m.pathTimeout {
				q.endpoint, q.endpointGossiped = e.Endpoint, true
			}
			q.mu.Unlock()
		}
	}
	m.mu.Unlock()
	if routes {
		m.rebuildRoutes()
	}
	if learned {
		m.kickTimer()
	}
}
