package mesh

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/homeswarm/homeswarm/netdriver/wire"
)

// path is how packets reach a peer: directly at ep, or inside relay
// envelopes through via, which forwards them to the peer with ID id.
type path struct {
	ep  netip.AddrPort
	via *peer
	id  uint64
}

func (p path) valid() bool { return p.ep.IsValid() || p.via != nil }

// peer is another node, identified by its static key only: never by
// address, so several nodes behind one NAT are distinct peers.
type peer struct {
	key Key
	id  uint64

	// read lock-free by the data path
	sendKP     atomic.Pointer[keypair]
	path       atomic.Pointer[path]
	rxBytes    atomic.Uint64
	txBytes    atomic.Uint64
	roams      atomic.Uint64
	lastTx     atomic.Int64
	lastRx     atomic.Int64 // any authenticated packet
	lastDataRx atomic.Int64 // a data packet with a payload
	// unanswered is when we sent the first data packet with a payload
	// since the last authenticated packet from the peer (0: none): a peer
	// that lost the session (restarted) never answers, and a new handshake
	// is started soon instead of after a whole path timeout (wireguard-go's
	// new-handshake timer).
	unanswered   atomic.Int64
	lastDirectRx atomic.Int64
	lastRelayRx  atomic.Int64

	mu               sync.Mutex
	current          *keypair
	previous         *keypair
	replacedAt       int64
	hs               *handshake // our handshake in flight to this peer
	attempts         int
	lastInit         int64
	endpoint         netip.AddrPort         // last known direct address
	endpointGossiped bool                   // endpoint came from gossip, not yet from the peer itself
	via              *peer                  // relay that last delivered its packets
	relays           map[*peer]int64        // peers that gossiped a direct path to it
	prefixes         []netip.Prefix         // what it announced, authenticated
	prefixSince      map[netip.Prefix]int64 // when it first announced each of them
	refused          map[netip.Prefix]bool  // claims refused (logged once)
	queue            [][]byte               // packets waiting for a session, at headroom
	gossipDue        bool
	gossipRepeats    int // more sends of a changed prefix set, a tick apart
	lastGossip       int64
	lastHandshake    time.Time
	seen             int64 // last time we heard of it at all, for expiry

	// guarded by Mesh.mu
	introducer *peer // the gossiper that made us create it, until it handshakes
	unvouched  int   // peers this one introduced that have not handshaken yet
}

// setPrefixesLocked records what p announces now, keeping the time each
// prefix was first announced (a claim that appears later is newer).
func (p *peer) setPrefixesLocked(ps []netip.Prefix, now int64) {
	since := make(map[netip.Prefix]int64, len(ps))
	for _, pf := range ps {
		if t, ok := p.prefixSince[pf]; ok {
			since[pf] = t
		} else {
			since[pf] = now
		}
	}
	p.prefixes, p.prefixSince = ps, since
}

func newPeer(k Key) *peer {
	return &peer{key: k, id: wire.PeerID(k), relays: map[*peer]int64{}}
}

// sendable returns the keypair to seal with, or nil.
func (p *peer) sendable(now int64) *keypair {
	kp := p.sendKP.Load()
	if kp == nil || kp.expired(now) {
		return nil
	}
	return kp
}

// updateSendLocked picks the sending keypair: the newest one, unless we
// initiated it and have not yet heard on it (the responder may not have
// it if our final message was lost) while an older one still works.
func (p *peer) updateSendLocked(now int64) {
	cur, prev := p.current, p.previous
	if cur != nil && !cur.confirmed.Load() && cur.initiator && prev != nil && !prev.expired(now) {
		p.sendKP.Store(prev)
		return
	}
	p.sendKP.Store(cur)
}

const maxQueue = 32

// enqueue keeps a copy of a packet (at headroom) until a session exists.
func (p *peer) enqueue(pkt []byte) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.queue) >= maxQueue {
		return false
	}
	b := make([]byte, bufSize)
	copy(b[headroom:], pkt)
	p.queue = append(p.queue, b[:headroom+len(pkt)])
	return true
}

// choosePathLocked decides how to send, from what has recently worked.
func (m *Mesh) choosePathLocked(p *peer, now int64) path {
	directFresh := p.endpoint.IsValid() && now-p.lastDirectRx.Load() < m.pathTimeout
	viaOK := p.via != nil && p.via.directOK()
	relayFresh := viaOK && now-p.lastRelayRx.Load() < m.pathTimeout
	switch {
	case directFresh:
		return path{ep: p.endpoint}
	case relayFresh:
		return path{via: p.via, id: p.id}
	case p.endpoint.IsValid():
		return path{ep: p.endpoint}
	case viaOK:
		return path{via: p.via, id: p.id}
	}
	return path{}
}

// directOK reports whether a peer can serve as a relay: we reach it directly.
func (p *peer) directOK() bool {
	pt := p.path.Load()
	return pt != nil && pt.via == nil && pt.ep.IsValid() && p.sendKP.Load() != nil
}

func (m *Mesh) setPathLocked(p *peer, np path) {
	if cur := p.path.Load(); cur != nil && *cur == np {
		return
	}
	if !np.valid() {
		p.path.Store(nil)
		return
	}
	p.path.Store(&np)
}

// relayCandidateLocked picks the peer that most recently told us it
// reaches p directly and that we reach directly.
func (p *peer) relayCandidateLocked() *peer {
	var best *peer
	var when int64
	for r, t := range p.relays {
		if r != p && t > when && r.directOK() {
			best, when = r, t
		}
	}
	return best
}
