package mesh

import (
	cryptorand "crypto/rand"
	"net/netip"
	"time"

	"github.com/flynn/noise"
	"github.com/sirupsen/logrus"

	"github.com/homeswarm/homeswarm/netdriver/wire"
)

// maxPendingHandshakes bounds responder state kept for unfinished
// handshakes; beyond it the oldest is forgotten, so that no flood can keep
// a new node from getting a slot.
const maxPendingHandshakes = 4096

// initiate starts a handshake towards p. The first attempt uses the path
// that works now; retries alternate between the direct endpoint and a relay.
func (m *Mesh) initiate(w *worker, p *peer, now int64) {
	p.mu.Lock()
	var pt path
	direct := path{ep: p.endpoint}
	var relayed path
	if r := p.relayCandidateLocked(); r != nil {
		relayed = path{via: r, id: p.id}
	} else if p.via != nil && p.via.directOK() {
		relayed = path{via: p.via, id: p.id}
	}
	switch cur := p.path.Load(); {
	case p.attempts == 0 && cur != nil && p.current != nil:
		pt = *cur
	case p.attempts%2 == 0 && direct.valid():
		pt = direct
	case relayed.valid():
		pt = relayed
	default:
		pt = direct
	}
	if pt.via == nil && p.endpointGossiped && pt.ep == p.endpoint && !m.allowProbe(pt.ep.Addr(), now) {
		// An endpoint we only know from gossip: a member could name any
		// address, so probes to it are limited (the relay is not).
		m.drop(dropProbeRate)
		pt = relayed
		if !pt.valid() {
			p.attempts++
			p.lastInit = now
			p.mu.Unlock()
			return
		}
	}
	if !pt.valid() {
		p.mu.Unlock()
		return
	}
	h, msg := m.newInitiation(now)
	if h == nil {
		p.mu.Unlock()
		return
	}
	h.peer, h.path = p, pt
	if p.hs != nil {
		m.dropIndex(p.hs.local)
	}
	p.hs = h
	p.attempts++
	p.lastInit = now
	p.mu.Unlock()
	m.sendRaw(w, pt, msg)
}

// allowProbe charges a handshake to a gossiped endpoint at address a to the
// probe limits: per address, and for all such addresses together.
func (m *Mesh) allowProbe(a netip.Addr, now int64) bool {
	return m.probeAddr.allow(a, now) && m.probeAll.allow(netip.Addr{}, now)
}

// newInitiation registers a new initiator handshake and returns message 1.
func (m *Mesh) newInitiation(now int64) (*handshake, []byte) {
	h := &handshake{initiator: true, created: now, msg1: wire.TimestampOf(m.clock()).Append(nil), psk: m.psks[0]}
	if _, err := cryptorand.Read(h.eseed[:]); err != nil {
		m.log.WithError(err).Error("handshake setup")
		return nil, nil
	}
	st, err := m.newNoise(true, &h.eseed, h.psk)
	if err != nil {
		m.log.WithError(err).Error("handshake setup")
		return nil, nil
	}
	n, _, _, err := st.WriteMessage(nil, h.msg1)
	if err != nil {
		m.log.WithError(err).Error("handshake message 1")
		return nil, nil
	}
	h.state = st
	h.local = m.newIndex(indexEntry{hs: h})
	msg, err := wire.HandshakeInit{Sender: h.local, Noise: n}.Append(nil)
	if err != nil {
		m.dropIndex(h.local)
		return nil, nil
	}
	return h, msg
}

// initiateSeed dials a bootstrap address whose key we may not know.
func (m *Mesh) initiateSeed(w *worker, s *seed, addr path, now int64) {
	h, msg := m.newInitiation(now)
	if h == nil {
		return
	}
	h.seed, h.path = s, addr
	m.mu.Lock()
	if s.hs != nil {
		m.dropIndex(s.hs.local)
	}
	s.hs = h
	s.attempts++
	s.lastInit = now
	m.mu.Unlock()
	m.sendRaw(w, addr, msg)
}

// handleInit answers message 1. What a stranger can send is dropped
// before it costs anything but a hash and an AEAD open (and before it is
// charged to its source address's rate limit, which a stranger could
// otherwise spend in another's name): malformed, not sealed with the
// cluster key, too old or new for the clock window, or a copy of a message
// 1 already seen (replayed). Only then is the source charged and the two
// Diffie-Hellman of message 2 done.
func (m *Mesh) handleInit(w *worker, b []byte, src netip.AddrPort, from path, now int64) {
	msg, err := wire.ParseHandshakeInit(b)
	if err != nil {
		m.drop(dropMalformed)
		return
	}
	h := &handshake{remote: msg.Sender, path: from, created: now, msg1: append([]byte(nil), msg.Noise...)}
	if _, err := cryptorand.Read(h.eseed[:]); err != nil {
		return
	}
	// Message 1 is sealed under one of the cluster keys we accept (the
	// current one first; during a key rotation also the other): each try
	// costs a hash and an AEAD open, no Diffie-Hellman.
	var st *noise.HandshakeState
	var payload []byte
	for _, psk := range m.psks {
		s, err := m.newNoise(false, &h.eseed, psk)
		if err != nil {
			return
		}
		if p, _, _, err := s.ReadMessage(nil, msg.Noise); err == nil {
			st, payload, h.psk = s, p, psk
			break
		}
	}
	if st == nil {
		m.drop(dropHandshakeAuth)
		return
	}
	ts, err := wire.ParseTimestamp(payload)
	if err != nil {
		m.drop(dropHandshakeAuth)
		return
	}
	if d := m.clock().Sub(ts.Time()); d > m.opts.MaxClockSkew || d < -m.opts.MaxClockSkew {
		m.drop(dropHandshakeStale)
		return
	}
	eph := msg.InitEphemeral()
	if m.inits.seenBefore(eph) {
		m.drop(dropHandshakeReplay)
		return
	}
	if !m.limiter.allow(src.Addr(), now) {
		m.drop(dropHandshakeRate)
		return
	}
	m.inits.add(eph, m.clock())
	m.mu.Lock()
	h.sent = m.info
	m.mu.Unlock()
	n, _, _, err := st.WriteMessage(nil, h.sent)
	if err != nil {
		m.drop(dropHandshakeAuth)
		return
	}
	h.state = st
	h.local = m.newResponder(h)
	out, err := wire.HandshakeResp{Sender: h.local, Receiver: msg.Sender, Noise: n}.Append(nil)
	if err != nil {
		m.dropIndex(h.local)
		return
	}
	m.sendRaw(w, from, out)
}

// readHandshake reads message 2 or 3 into h's Noise state. A message that
// does not authenticate leaves h in place (only spoiled, rebuilt before the
// next read), so a forged copy cannot kill the handshake it names.
func (m *Mesh) readHandshake(h *handshake, noiseMsg []byte) ([]byte, *noise.CipherState, *noise.CipherState, bool) {
	if h.spoiled {
		if err := m.rebuild(h); err != nil {
			m.dropIndex(h.local)
			m.drop(dropHandshakeAuth)
			return nil, nil, nil, false
		}
	}
	payload, cs1, cs2, err := h.state.ReadMessage(nil, noiseMsg)
	if err != nil {
		h.spoiled = true
		m.drop(dropHandshakeAuth)
		return nil, nil, nil, false
	}
	// authenticated: the attempt is used up whatever follows
	m.dropIndex(h.local)
	return payload, cs1, cs2, true
}

func (m *Mesh) handleResp(w *worker, b []byte, src netip.AddrPort, from path, now int64) {
	msg, err := wire.ParseHandshakeResp(b)
	if err != nil {
		m.drop(dropMalformed)
		return
	}
	h := m.lookupIndex(msg.Receiver).hs
	if h == nil || !h.initiator {
		m.drop(dropUnknownIndex)
		return
	}
	if !m.limiter.allow(src.Addr(), now) {
		m.drop(dropHandshakeRate)
		return
	}
	payload, _, _, ok := m.readHandshake(h, msg.Noise)
	if !ok {
		return
	}
	remote := Key(h.state.PeerStatic())
	if remote == m.pub {
		m.markSelf(h)
		return
	}
	info, err := wire.ParseNodeInfo(payload)
	if err != nil {
		m.drop(dropMalformed)
		return
	}
	if m.isRevoked(remote, &info) {
		m.refuseRevoked(remote, from)
		return
	}
	m.mu.Lock()
	own := m.info
	m.mu.Unlock()
	n, cs1, cs2, err := h.state.WriteMessage(nil, own)
	if err != nil || cs1 == nil {
		m.drop(dropHandshakeAuth)
		return
	}
	out, err := wire.HandshakeFinal{Receiver: msg.Sender, Noise: n}.Append(nil)
	if err != nil {
		return
	}
	kp, err := newKeypair(cs1, cs2, now, int64(m.opts.RejectAfter))
	if err != nil {
		return
	}
	kp.local, kp.remote, kp.initiator = h.local, msg.Sender, true
	m.sendRaw(w, from, out)
	// Message 3 leaves now, before install makes kp sendable: the
	// responder has no session until it arrives, and data the TUN loop
	// seals with kp meanwhile would be dropped there (a SYN lost for a
	// one-second retransmission).
	m.flush(w)
	if s := h.seed; s != nil {
		m.mu.Lock()
		s.key, s.hasKey, s.attempts = remote, true, 0
		if s.hs == h {
			s.hs = nil
		}
		m.mu.Unlock()
	}
	m.install(w, remote, kp, info, from, h, now)
}

func (m *Mesh) handleFinal(w *worker, b []byte, src netip.AddrPort, from path, now int64) {
	msg, err := wire.ParseHandshakeFinal(b)
	if err != nil {
		m.drop(dropMalformed)
		return
	}
	h := m.lookupIndex(msg.Receiver).hs
	if h == nil || h.initiator {
		m.drop(dropUnknownIndex)
		return
	}
	if !m.limiter.allow(src.Addr(), now) {
		m.drop(dropHandshakeRate)
		return
	}
	payload, cs1, cs2, ok := m.readHandshake(h, msg.Noise)
	if !ok {
		return
	}
	if cs1 == nil {
		m.drop(dropHandshakeAuth)
		return
	}
	remote := Key(h.state.PeerStatic())
	if remote == m.pub {
		return
	}
	info, err := wire.ParseNodeInfo(payload)
	if err != nil {
		m.drop(dropMalformed)
		return
	}
	if m.isRevoked(remote, &info) {
		m.refuseRevoked(remote, from)
		return
	}
	kp, err := newKeypair(cs2, cs1, now, int64(m.opts.RejectAfter))
	if err != nil {
		return
	}
	kp.local, kp.remote = h.local, h.remote
	kp.confirmed.Store(true) // message 3 proves the initiator holds it
	p := m.install(w, remote, kp, info, from, nil, now)
	// tell the initiator we have the session, so it starts using it
	m.sendSealed(w, p, kp, wire.TypeData, nil, nil)
}

func (m *Mesh) markSelf(h *handshake) {
	if s := h.seed; s != nil {
		m.mu.Lock()
		if !s.self {
			s.self = true
			m.log.WithField("peer", s.hostport).Info("peer address is this node; ignoring it")
		}
		m.mu.Unlock()
	}
}

// install makes kp the current session with the peer holding key remote.
func (m *Mesh) install(w *worker, remote Key, kp *keypair, info wire.NodeInfo, from path, h *handshake, now int64) *peer {
	m.mu.Lock()
	p := m.peerLocked(remote, true)
	if r := p.introducer; r != nil {
		r.unvouched-- // its gossip about p was true
		p.introducer = nil
	}
	m.mu.Unlock()
	kp.peer = p
	m.setIndex(kp.local, indexEntry{kp: kp})
	m.stats.handshakes.Add(1)

	p.mu.Lock()
	// Keep as previous whichever older session the peer used last: after
	// crossing handshakes it may still be sending on either.
	old, keep := p.previous, p.current
	if old != nil && (keep == nil || old.lastRx.Load() > keep.lastRx.Load()) {
		old, keep = keep, old
	}
	p.previous, p.current = keep, kp
	p.replacedAt = now
	p.lastHandshake = time.Now()
	p.seen = now
	p.lastRx.Store(now) // the handshake message authenticated it
	p.unanswered.Store(0)
	if p.hs != nil && (p.hs == h || kp.initiator) {
		if p.hs != h {
			m.dropIndex(p.hs.local)
		}
		p.hs = nil
	}
	p.attempts = 0
	if from.via == nil {
		p.endpoint, p.endpointGossiped = from.ep, false
		p.lastDirectRx.Store(now)
	} else {
		p.via = from.via
		p.lastRelayRx.Store(now)
	}
	m.setPathLocked(p, m.choosePathLocked(p, now))
	p.setPrefixesLocked(info.Prefixes, now)
	p.updateSendLocked(now)
	queue := p.queue
	p.queue = nil
	p.gossipDue = true
	p.mu.Unlock()
	if old != nil {
		m.dropIndex(old.local)
	}
	if h != nil && h.peer != nil && h.peer != p {
		// We dialled one key and found another at that address (a node
		// reinstalled, or a name now pointing elsewhere): stop dialling
		// the old key there.
		h.peer.mu.Lock()
		if h.peer.hs == h {
			h.peer.hs = nil
		}
		if from.via == nil && h.peer.endpoint == from.ep {
			h.peer.endpoint = netip.AddrPort{}
			m.setPathLocked(h.peer, m.choosePathLocked(h.peer, now))
		}
		h.peer.mu.Unlock()
	}
	m.log.WithFields(logrus.Fields{"peer": p.key.Short(), "initiator": kp.initiator, "relayed": from.via != nil}).Debug("session established")
	m.rebuildRoutes()
	if skp := p.sendable(now); skp != nil {
		for _, b := range queue {
			m.sealTo(w, p, skp, wire.TypeData, b[:cap(b)], len(b)-headroom, now)
		}
	}
	m.kickTimer()
	return p
}
