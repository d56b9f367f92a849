package mesh

import (
	"errors"
	"net"
	"net/netip"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/homeswarm/homeswarm/netdriver/conn"
	"github.com/homeswarm/homeswarm/netdriver/tun"
	"github.com/homeswarm/homeswarm/netdriver/wire"
)

// worker is the per-goroutine state of a loop: crypto scratch and the
// batches it is building. Only its owning goroutine touches it.
type worker struct {
	scratch
	out       []conn.Message // UDP datagrams to send
	tunOut    [][]byte       // IP packets for TUN
	delivered bool           // Receiver took a packet since its last Flush
}

// flush sends what the worker has batched.
func (m *Mesh) flush(w *worker) {
	if len(w.out) > 0 {
		if err := m.opts.Bind.WriteBatch(w.out); err != nil && !m.closed() && !errors.Is(err, net.ErrClosed) {
			m.log.WithError(err).Debug("udp write")
		}
		for i := range w.out {
			w.out[i] = conn.Message{}
		}
		w.out = w.out[:0]
	}
	if len(w.tunOut) > 0 {
		n, err := m.opts.TUN.Write(w.tunOut, 0)
		if err != nil && !errors.Is(err, tun.ErrClosed) {
			for range len(w.tunOut) - n {
				m.drop(dropTUNWrite)
			}
		}
		clear(w.tunOut)
		w.tunOut = w.tunOut[:0]
	}
}

// tunLoop moves packets from TUN to peers.
func (m *Mesh) tunLoop() {
	defer m.wg.Done()
	bs := max(1, m.opts.TUN.BatchSize())
	bufs := make([][]byte, bs)
	sizes := make([]int, bs)
	for i := range bufs {
		bufs[i] = make([]byte, bufSize)
	}
	w := &worker{out: make([]conn.Message, 0, bs)}
	for {
		n, err := m.opts.TUN.Read(bufs, sizes, headroom)
		if err != nil {
			if m.closed() || errors.Is(err, tun.ErrClosed) {
				if !m.closed() {
					m.fail(err)
				}
				return
			}
			m.log.WithError(err).Warn("tun read")
			select {
			case <-m.closing:
				return
			case <-time.After(10 * time.Millisecond):
			}
			continue
		}
		now := m.now()
		for i := range n {
			m.sendPacket(w, bufs[i], sizes[i], now)
		}
		m.flush(w)
	}
}

// sendPacket seals the IP packet at buf[headroom:headroom+n] for the peer
// owning its destination and queues it on w.
func (m *Mesh) sendPacket(w *worker, buf []byte, n int, now int64) {
	pkt := buf[headroom : headroom+n]
	dst, ok := wire.IPv4Dst(pkt)
	if !ok {
		m.drop(dropNotIPv4)
		return
	}
	p := m.routes.Load().lookup(dst)
	if p == nil {
		m.drop(dropNoRoute)
		return
	}
	kp := p.sendable(now)
	if kp == nil {
		if !p.enqueue(pkt) {
			m.drop(dropNoSession)
		}
		m.kickTimer()
		return
	}
	m.sealTo(w, p, kp, wire.TypeData, buf, n, now)
}

// sealTo seals buf[headroom:headroom+n] with kp and queues it on p's path.
func (m *Mesh) sealTo(w *worker, p *peer, kp *keypair, typ byte, buf []byte, n int, now int64) {
	pt := p.path.Load()
	if pt == nil {
		m.drop(dropNoSession)
		return
	}
	out := kp.seal(&w.scratch, typ, buf[headroom-wire.HeaderLen:], n)
	if out == nil {
		m.drop(dropNoSession)
		m.kickTimer()
		return
	}
	if pt.via == nil {
		w.out = append(w.out, conn.Message{Buf: out, Addr: pt.ep})
	} else if !m.wrapRelay(w, pt.via, pt.id, buf, len(out), now) {
		return
	}
	p.txBytes.Add(uint64(len(out)))
	p.lastTx.Store(now)
	if typ == wire.TypeData && n > 0 && p.unanswered.Load() == 0 {
		p.unanswered.CompareAndSwap(0, now)
	}
	m.stats.txBytes.Add(uint64(len(out)))
}

// wrapRelay wraps the packet at buf[HeaderLen+PeerIDLen:][:n] in a
// relay-forward envelope for via, in place, and queues it.
func (m *Mesh) wrapRelay(w *worker, via *peer, id uint64, buf []byte, n int, now int64) bool {
	vkp := via.sendable(now)
	vpt := via.path.Load()
	if vkp == nil || vpt == nil || vpt.via != nil {
		m.drop(dropRelay)
		return false
	}
	wire.PutPeerID(buf[wire.HeaderLen:], id)
	out := vkp.seal(&w.scratch, wire.TypeRelayForward, buf, wire.PeerIDLen+n)
	if out == nil {
		m.drop(dropRelay)
		return false
	}
	w.out = append(w.out, conn.Message{Buf: out, Addr: vpt.ep})
	via.lastTx.Store(now)
	return true
}

// sendRaw sends an unsealed-by-session packet (a handshake message, or an
// already sealed packet) along pt, allocating: not for the data path.
func (m *Mesh) sendRaw(w *worker, pt path, pkt []byte) {
	if pt.via == nil {
		if pt.ep.IsValid() {
			w.out = append(w.out, conn.Message{Buf: append([]byte(nil), pkt...), Addr: pt.ep})
		}
		return
	}
	buf := make([]byte, wire.HeaderLen+wire.PeerIDLen+len(pkt)+wire.TagLen)
	copy(buf[wire.HeaderLen+wire.PeerIDLen:], pkt)
	m.wrapRelay(w, pt.via, pt.id, buf, len(pkt), m.now())
}

// sendSealed seals plaintext for p with its sending session along pt (p's
// current path if pt is nil). Not for the data path: it allocates.
func (m *Mesh) sendSealed(w *worker, p *peer, kp *keypair, typ byte, plaintext []byte, pt *path) {
	buf := make([]byte, headroom+len(plaintext)+2*wire.TagLen)
	copy(buf[headroom:], plaintext)
	now := m.now()
	if pt == nil {
		m.sealTo(w, p, kp, typ, buf, len(plaintext), now)
		return
	}
	out := kp.seal(&w.scratch, typ, buf[headroom-wire.HeaderLen:], len(plaintext))
	if out == nil {
		return
	}
	m.sendRaw(w, *pt, out)
	p.lastTx.Store(now)
}

// udpLoop moves datagrams from the network to TUN and to the handshake and
// relay logic.
func (m *Mesh) udpLoop() {
	defer m.wg.Done()
	bs := max(1, m.opts.Bind.BatchSize())
	msgs := make([]conn.Message, bs)
	for i := range msgs {
		msgs[i].Buf = make([]byte, bufSize)
	}
	w := &worker{out: make([]conn.Message, 0, bs), tunOut: make([][]byte, 0, bs)}
	for {
		n, err := m.opts.Bind.ReadBatch(msgs)
		if err != nil {
			if m.closed() || errors.Is(err, net.ErrClosed) {
				if !m.closed() {
					m.fail(err)
				}
				return
			}
			m.log.WithError(err).Debug("udp read")
			continue
		}
		now := m.now()
		for i := range n {
			m.receive(w, msgs[i].Buf[:msgs[i].N], msgs[i].Addr, nil, 0, now)
		}
		m.flush(w)
		if w.delivered {
			w.delivered = false
			m.opts.Receiver.Flush()
		}
	}
}

// receive handles one datagram b from src, or, when relay is set, the inner
// packet of an envelope that relay delivered on behalf of peer ID relayID.
func (m *Mesh) receive(w *worker, b []byte, src netip.AddrPort, relay *peer, relayID uint64, now int64) {
	t := wire.Type(b)
	switch {
	case t >= wire.TypeHandshakeInit && t <= wire.TypeHandshakeFinal:
		// each handler charges src's rate limit only after the checks
		// that cost no Diffie-Hellman
		from := path{ep: src}
		if relay != nil {
			from = path{via: relay, id: relayID}
		}
		switch t {
		case wire.TypeHandshakeInit:
			m.handleInit(w, b, src, from, now)
		case wire.TypeHandshakeResp:
			m.handleResp(w, b, src, from, now)
		default:
			m.handleFinal(w, b, src, from, now)
		}
	case wire.IsTransport(t):
		m.handleTransport(w, b, src, relay, now)
	default:
		m.drop(dropMalformed)
	}
}

func (m *Mesh) handleTransport(w *worker, b []byte, src netip.AddrPort, relay *peer, now int64) {
	h, err := wire.ParseTransportHeader(b)
	if err != nil {
		m.drop(dropMalformed)
		return
	}
	kp := m.lookupIndex(h.Receiver).kp
	if kp == nil {
		m.drop(dropUnknownIndex)
		return
	}
	if now >= kp.deadline {
		m.drop(dropExpired)
		return
	}
	if !kp.replayCheck(h.Counter) {
		m.drop(dropReplay)
		return
	}
	pt, err := kp.open(&w.scratch, b, h.Counter)
	if err != nil {
		m.drop(dropAuth)
		return
	}
	if !kp.replayAccept(h.Counter) {
		m.drop(dropReplay)
		return
	}
	p := kp.peer
	kp.lastRx.Store(now)
	p.lastRx.Store(now)
	if p.unanswered.Load() != 0 {
		p.unanswered.Store(0)
	}
	if !kp.confirmed.Load() {
		kp.confirmed.Store(true)
		p.mu.Lock()
		p.updateSendLocked(now)
		p.mu.Unlock()
	}
	p.rxBytes.Add(uint64(len(b)))
	m.stats.rxBytes.Add(uint64(len(b)))
	if relay == nil {
		p.lastDirectRx.Store(now)
		if cur := p.path.Load(); cur == nil || cur.via != nil || cur.ep != src {
			m.roam(p, src, now)
		}
	} else {
		p.lastRelayRx.Store(now)
		if cur := p.path.Load(); cur == nil || (cur.via != relay && now-p.lastDirectRx.Load() >= m.pathTimeout) {
			p.mu.Lock()
			p.via = relay
			m.setPathLocked(p, m.choosePathLocked(p, now))
			p.mu.Unlock()
		}
	}
	switch h.Type {
	case wire.TypeData:
		if len(pt) == 0 {
			return // keepalive
		}
		p.lastDataRx.Store(now)
		s, ok := wire.IPv4Src(pt)
		if !ok || m.routes.Load().lookup(s) != p {
			m.drop(dropSourceNotAllowed)
			return
		}
		if m.opts.Receiver != nil && m.opts.Receiver.Deliver(pt) {
			w.delivered = true
			return
		}
		w.tunOut = append(w.tunOut, pt)
	case wire.TypeGossip:
		m.handleGossip(p, pt, now)
	case wire.TypeRelayForward:
		if relay != nil {
			m.drop(dropRelay)
			return
		}
		m.forward(w, p, b, len(pt), now)
	case wire.TypeRelayDeliver:
		if relay != nil {
			m.drop(dropRelay)
			return
		}
		env, err := wire.ParseRelayEnvelope(pt)
		if err != nil {
			m.drop(dropMalformed)
			return
		}
		m.receive(w, env.Inner, src, p, env.Peer, now)
	}
}

// roam follows a peer whose authenticated packets come from a new address.
func (m *Mesh) roam(p *peer, src netip.AddrPort, now int64) {
	p.mu.Lock()
	if p.endpoint != src {
		if p.endpoint.IsValid() {
			p.roams.Add(1)
			m.log.WithFields(logrus.Fields{"peer": p.key.Short(), "from": p.endpoint, "to": src}).Info("peer moved")
		}
		p.endpoint = src
	}
	p.endpointGossiped = false
	m.setPathLocked(p, m.choosePathLocked(p, now))
	p.mu.Unlock()
}

// forward relays an envelope from p: b is the whole opened packet, its
// plaintext (peer ID + inner packet) is b[HeaderLen:HeaderLen+n].
func (m *Mesh) forward(w *worker, from *peer, b []byte, n int, now int64) {
	env, err := wire.ParseRelayEnvelope(b[wire.HeaderLen : wire.HeaderLen+n])
	if err != nil {
		m.drop(dropMalformed)
		return
	}
	to := m.peerByID(env.Peer)
	if to == nil || to == from {
		m.drop(dropRelay)
		return
	}
	kp := to.sendable(now)
	pt := to.path.Load()
	if kp == nil || pt == nil || pt.via != nil {
		m.drop(dropRelay)
		return
	}
	wire.PutPeerID(b[wire.HeaderLen:], from.id)
	out := kp.seal(&w.scratch, wire.TypeRelayDeliver, b, n)
	if out == nil {
		m.drop(dropRelay)
		return
	}
	w.out = append(w.out, conn.Message{Buf: out, Addr: pt.ep})
	to.lastTx.Store(now)
	m.stats.relayed.Add(1)
}
