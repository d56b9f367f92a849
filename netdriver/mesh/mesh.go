// Package mesh is meshnet's core: an encrypted layer-3 peer-to-peer
// mesh over UDP between the nodes of a cluster.
//
// It exists to replace a static-key VPN (vpncloud) with one that has
// authenticated key exchange and forward secrecy, survives NAT and dynamic
// addresses, and relays where nodes cannot reach each other, while knowing
// nothing of Docker: it reads IP packets from a tun.Device, seals them for
// the peer that owns the destination address, and sends them through a
// conn.Bind, and the reverse. The plugin glue wires real devices; tests wire
// tuntest and bindtest.
//
// # What happens to a packet
//
// The TUN goroutine reads a packet into a pooled buffer at an offset that
// leaves room for headers, looks its IPv4 destination up in the route table
// (an immutable snapshot swapped atomically), seals it in place with the
// peer's current session and sends it, batched, directly or inside a relay
// envelope. The UDP goroutine reads a batch, drops anything that does not
// name a live session, fails the replay window or fails authentication
// (counting each reason, never logging per packet), checks that the inner
// source address belongs to the sending peer, and writes the batch to TUN.
// A timer goroutine runs handshakes, rekeys, keepalives, gossip and expiry.
//
// # Sessions
//
// See session.go for the Noise handshake. Sessions are rekeyed every
// RekeyAfter (or after RekeyAfterMessages); the replaced session keeps
// receiving for HandshakeTimeout so in-flight packets are not lost, and no
// session is used after RejectAfter. A stranger's handshake messages are
// dropped before they cost a Diffie-Hellman or a reply: malformed, not
// sealed with the cluster key, outside the clock window (message 1 carries
// a TAI64N timestamp), a replayed copy of a message 1 already answered, or
// naming no handshake in flight; only then is the source address charged
// to its rate limit. A forged message 2 or 3 cannot kill the handshake it
// names, and unfinished responder state is bounded (the oldest goes).
//
// # Relay
//
// When A and C cannot reach each other but both reach B, A seals a packet
// for C with the A–C session as usual (end to end: B cannot read it), puts
// it in a relay envelope naming C and seals that for B. B opens the outer
// layer, re-seals the envelope (now naming A) for C. Handshakes travel the
// same way, so the A–C session is established through B, and B learns
// nothing but that A and C talk. Relaying is one hop only.
//
// # MTU
//
// The outer packet must fit a PPPoE path of 1492 bytes without
// fragmentation, relayed or not: 1492 - 20 (IPv4) - 8 (UDP) - 16 (our
// header) - 16 (tag) = 1432 bytes for a direct packet, and another 16+8+16
// for a relay envelope: 1492 - 28 - 72 = 1392. DefaultMTU is 1392.
//
// # Limits
//
//   - A cluster member may relay, and may announce IPv4 prefixes, but it
//     cannot take what another holds: a mesh address belongs to the first
//     key that announced it (kept in Options.AddrBookFile), a prefix stays
//     with its current holder while that holder announces it and is live,
//     and nothing overlapping this node's own addresses is routed away.
//   - Nodes behind one NAT reach each other through a public peer's relay
//     unless the NAT hairpins, or they list each other's LAN address in
//     Peers (then they talk directly).
//   - Relaying is one hop; the outer transport is IPv4 (conn.UDP).
//   - Each direction's crypto runs on one goroutine (TUN reader, UDP
//     reader). TUN offloads are the device's business: tun.CreateOffload
//     splits kernel TSO packets on read and merges TCP segments on write,
//     which roughly halves the kernel's per-packet work.
package mesh

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flynn/noise"
	"github.com/sirupsen/logrus"

	"github.com/homeswarm/homeswarm/netdriver/wire"
)

const (
	// DefaultMTU is the inner MTU that keeps every outer packet, even
	// relayed, within a 1492-byte PPPoE path (see package doc).
	DefaultMTU = 1492 - 20 - 8 - wire.RelayOverhead - wire.Overhead
	// headroom is reserved in front of a packet read from TUN: a transport
	// header, and a relay header (outer header + peer ID) in front of that.
	headroom = wire.HeaderLen + wire.PeerIDLen + wire.HeaderLen
	// bufSize is the size of every packet buffer.
	bufSize = 2048
	// MaxMTU is the largest TUN MTU the buffers allow.
	MaxMTU = bufSize - headroom - 2*wire.TagLen
)

// Sentinel errors.
var (
	ErrNoPrivateKey = errors.New("mesh: no private key")
	ErrNoClusterKey = errors.New("mesh: no cluster key")
	ErrNoDevice     = errors.New("mesh: TUN device and UDP bind are required")
	ErrBadPeer      = errors.New("mesh: peer must be host:port")
	ErrClosed       = errors.New("mesh: closed")
	ErrStarted      = errors.New("mesh: already started")
	ErrBadPrefix    = errors.New("mesh: prefix must be a valid IPv4 prefix")
	ErrRevokedSelf  = errors.New("mesh: this node is revoked")
)

// Mesh is one node of the mesh. Create it with New, run it with Run, stop
// it with Close (or Run's ctx). Its methods are safe for concurrent use.
type Mesh struct {
	opts        Options
	log         *logrus.Entry
	static      noise.DHKey
	pub         Key
	psks        [][]byte // stretched cluster keys: ClusterKey's, then AcceptClusterKeys'
	revoked     *revocations
	epoch       time.Time
	pathTimeout int64
	limiter     *limiter
	probeAddr   *limiter // handshakes to gossiped endpoints, per address
	probeAll    *limiter // the same, all addresses (one bucket)
	kick        chan struct{}

	mu       sync.Mutex
	peers    map[Key]*peer
	byID     map[uint64]*peer
	seeds    []*seed
	prefixes []netip.Prefix // ours: Addr's host route + announced
	info     []byte         // encoded NodeInfo for handshakes
	publicEP netip.AddrPort // how peers see us, from gossip

	routes    atomic.Pointer[routeTable]
	contested atomic.Bool // some prefix has several claimants
	meshNet   netip.Prefix
	book      *addrBook

	idxMu      sync.RWMutex
	index      map[uint32]indexEntry
	responders []*handshake // unfinished responder handshakes, oldest first (some already gone)
	nResp      int          // how many of them are still in index

	inits *initCache // message 1s answered within the clock window
	clock func() time.Time

	stats stats

	startOnce sync.Once
	started   atomic.Bool
	lifeMu    sync.Mutex // start and Close's closing of closing
	closeOnce sync.Once
	closing   chan struct{}
	done      chan struct{}
	wg        sync.WaitGroup
	errMu     sync.Mutex
	err       error
}

type seed struct {
	hostport string
	host     string
	port     uint16
	addrs    []netip.AddrPort // guarded by Mesh.mu
	key      Key
	hasKey   bool
	self     bool
	hs       *handshake
	attempts int
	lastInit int64
}

// New validates opts and returns a Mesh that is not yet running. New takes
// ownership of opts.TUN and opts.Bind: Close closes them.
func New(opts Options) (*Mesh, error) {
	if opts.PrivateKey.IsZero() {
		return nil, ErrNoPrivateKey
	}
	if len(opts.ClusterKey) == 0 {
		return nil, ErrNoClusterKey
	}
	if opts.TUN == nil || opts.Bind == nil {
		return nil, ErrNoDevice
	}
	if mtu := opts.TUN.MTU(); mtu > MaxMTU {
		return nil, fmt.Errorf("mesh: TUN MTU %d above maximum %d", mtu, MaxMTU)
	}
	opts.setDefaults()
	m := &Mesh{
		opts: opts,
		log:  opts.Logger,
		// The clock starts a day in the past so that a zero timestamp
		// ("never") is always long ago.
		epoch:     time.Now().Add(-24 * time.Hour),
		limiter:   newLimiter(opts.HandshakeRate),
		probeAddr: newLimiter(probeRate),
		probeAll:  newLimiter(probeRateAll),
		kick:      make(chan struct{}, 1),
		peers:     map[Key]*peer{},
		byID:      map[uint64]*peer{},
		index:     map[uint32]indexEntry{},
		inits:     newInitCache(maxInitCache),
		clock:     time.Now,
		closing:   make(chan struct{}),
		done:      make(chan struct{}),
	}
	if m.log == nil {
		m.log = logrus.NewEntry(logrus.StandardLogger())
	}
	m.pathTimeout = int64(2*opts.KeepaliveInterval + opts.HandshakeTimeout)
	if m.opts.Resolver == nil {
		m.opts.Resolver = net.DefaultResolver
	}
	m.pub = opts.PrivateKey.PublicKey()
	m.static = noise.DHKey{Private: append([]byte(nil), opts.PrivateKey[:]...), Public: append([]byte(nil), m.pub[:]...)}
	var err error
	for _, k := range append([][]byte{opts.ClusterKey}, opts.AcceptClusterKeys...) {
		psk, err := derivePSK(k)
		if err != nil {
			return nil, err
		}
		m.psks = append(m.psks, psk)
	}
	m.revoked = newRevocations(opts.RevokedKeys, opts.RevokedAddrs)
	if m.revoked.keys[m.pub] {
		return nil, fmt.Errorf("%w: this node's own key %s is revoked", ErrRevokedSelf, m.pub)
	}
	if opts.Addr.IsValid() && m.revoked.addrs[opts.Addr.Addr()] {
		return nil, fmt.Errorf("%w: this node's own mesh address %v is revoked", ErrRevokedSelf, opts.Addr.Addr())
	}
	m.log = m.log.WithField("node", m.pub.Short())
	var own []netip.Prefix
	if opts.Addr.IsValid() {
		if !opts.Addr.Addr().Is4() {
			return nil, fmt.Errorf("mesh address %v: %w", opts.Addr, ErrBadPrefix)
		}
		own = append(own, netip.PrefixFrom(opts.Addr.Addr(), 32))
	}
	m.mu.Lock()
	err = m.setPrefixesLocked(own)
	m.mu.Unlock()
	if err != nil {
		return nil, err
	}
	for _, hp := range opts.Peers {
		host, port, err := net.SplitHostPort(hp)
		if err != nil {
			return nil, fmt.Errorf("peer %q: %w", hp, ErrBadPeer)
		}
		pn, err := strconv.ParseUint(port, 10, 16)
		if err != nil || pn == 0 || host == "" {
			return nil, fmt.Errorf("peer %q: %w", hp, ErrBadPeer)
		}
		s := &seed{hostport: hp, host: host, port: uint16(pn)}
		if a, err := netip.ParseAddr(host); err == nil {
			s.addrs = []netip.AddrPort{netip.AddrPortFrom(a.Unmap(), s.port)}
		}
		m.seeds = append(m.seeds, s)
	}
	if opts.Addr.IsValid() {
		m.meshNet = opts.Addr.Masked()
	}
	if m.book, err = loadAddrBook(opts.AddrBookFile); err != nil {
		return nil, err
	}
	m.routes.Store(&routeTable{})
	return m, nil
}

// PublicKey returns this node's static public key.
func (m *Mesh) PublicKey() Key { return m.pub }

func (m *Mesh) now() int64 { return int64(time.Since(m.epoch)) }

func (m *Mesh) setPrefixesLocked(own []netip.Prefix) error {
	if len(own) > wire.MaxPrefixes {
		return fmt.Errorf("mesh: %d prefixes, at most %d: %w", len(own), wire.MaxPrefixes, ErrBadPrefix)
	}
	slices.SortFunc(own, comparePrefix)
	own = slices.Compact(own)
	info, err := wire.NodeInfo{Prefixes: own}.Append(nil)
	if err != nil {
		return fmt.Errorf("encode node info: %w", err)
	}
	m.prefixes, m.info = own, info
	return nil
}

// start starts the mesh's goroutines and returns at once.
func (m *Mesh) start() error {
	// under lifeMu, so that Close never waits for goroutines while more
	// are being added (a Close racing the Run that starts them)
	m.lifeMu.Lock()
	defer m.lifeMu.Unlock()
	select {
	case <-m.closing:
		return ErrClosed
	default:
	}
	if !m.started.CompareAndSwap(false, true) {
		return ErrStarted
	}
	m.wg.Add(4)
	go m.tunLoop()
	go m.udpLoop()
	go m.timerLoop()
	go m.resolveLoop()
	m.log.WithFields(logrus.Fields{"addr": m.opts.Addr, "port": m.opts.Bind.LocalPort(), "peers": len(m.seeds)}).Info("mesh started")
	return nil
}

// Run runs the mesh until ctx is done, Close is called or the mesh stops on
// an error; it then closes the mesh and returns after every goroutine
// exited: nil after a clean stop, else the error that stopped it. Run may
// be called once; after Close it returns ErrClosed.
func (m *Mesh) Run(ctx context.Context) error {
	if err := m.start(); err != nil {
		return err
	}
	select {
	case <-ctx.Done():
	case <-m.closing:
	}
	m.Close()
	return m.stopErr()
}

// stopErr returns the error that stopped the mesh, if any.
func (m *Mesh) stopErr() error {
	m.errMu.Lock()
	defer m.errMu.Unlock()
	return m.err
}

func (m *Mesh) fail(err error) {
	m.errMu.Lock()
	if m.err == nil {
		m.err = err
	}
	m.errMu.Unlock()
	go m.Close()
}

// Close stops the mesh: it closes the UDP bind and the TUN device (which
// unblocks the readers), waits for every goroutine to exit, and forgets
// every session key. It is idempotent and returns after the mesh stopped.
func (m *Mesh) Close() error {
	m.closeOnce.Do(func() {
		m.lifeMu.Lock()
		close(m.closing)
		m.lifeMu.Unlock()
		m.opts.Bind.Close()
		m.opts.TUN.Close()
		m.wg.Wait()
		m.idxMu.Lock()
		clear(m.index)
		m.idxMu.Unlock()
		m.mu.Lock()
		for _, p := range m.peers {
			p.mu.Lock()
			p.current, p.previous, p.hs = nil, nil, nil
			p.sendKP.Store(nil)
			p.mu.Unlock()
		}
		m.mu.Unlock()
		close(m.done)
		m.log.Info("mesh stopped")
	})
	<-m.done
	return nil
}

func (m *Mesh) closed() bool {
	select {
	case <-m.closing:
		return true
	default:
		return false
	}
}

// kickTimer makes the timer goroutine run soon.
func (m *Mesh) kickTimer() {
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

// AddPrefix announces p (e.g. a container subnet) as routed to this node;
// peers learn it within a moment. Adding a prefix twice is not an error.
func (m *Mesh) AddPrefix(p netip.Prefix) error {
	if !p.IsValid() || !p.Addr().Is4() {
		return fmt.Errorf("add prefix %v: %w", p, ErrBadPrefix)
	}
	m.mu.Lock()
	err := m.setPrefixesLocked(append(slices.Clone(m.prefixes), p.Masked()))
	m.announceLocked()
	m.mu.Unlock()
	m.rebuildRoutes()
	return err
}

// RemovePrefix withdraws a prefix added by AddPrefix.
func (m *Mesh) RemovePrefix(p netip.Prefix) error {
	p = p.Masked()
	m.mu.Lock()
	own := slices.DeleteFunc(slices.Clone(m.prefixes), func(q netip.Prefix) bool { return q == p })
	err := m.setPrefixesLocked(own)
	m.announceLocked()
	m.mu.Unlock()
	m.rebuildRoutes()
	return err
}

// LocalPrefixes returns the prefixes this node announces.
func (m *Mesh) LocalPrefixes() []netip.Prefix {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.prefixes)
}

// announceRepeats is how many times a changed prefix set is sent to each
// peer, a timer tick apart: gossip is a datagram, and one lost would leave
// a container that just moved unreachable there until the next periodic
// gossip (GossipInterval). Every copy is the whole set, so a late or
// repeated one changes nothing.
const announceRepeats = 3

func (m *Mesh) announceLocked() {
	for _, p := range m.peers {
		p.mu.Lock()
		p.gossipDue = true
		p.gossipRepeats = announceRepeats
		p.mu.Unlock()
	}
	m.kickTimer()
}

// Routes returns the prefixes routed to peers, sorted.
func (m *Mesh) Routes() []Route {
	t := m.routes.Load()
	var out []Route
	for a, p := range t.hosts {
		out = append(out, Route{Prefix: netip.PrefixFrom(a, 32), Peer: p.key.String()})
	}
	for _, e := range t.nets {
		out = append(out, Route{Prefix: e.prefix, Peer: e.peer.key.String()})
	}
	slices.SortFunc(out, func(a, b Route) int { return comparePrefix(a.Prefix, b.Prefix) })
	return out
}

// rebuildRoutes recomputes the route table from every peer's prefixes.
func (m *Mesh) rebuildRoutes() {
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	var claims []routeClaim
	for _, p := range m.peers {
		p.mu.Lock()
		live := now-p.lastRx.Load() < m.pathTimeout
		for _, pf := range p.prefixes {
			claims = append(claims, routeClaim{prefix: pf, peer: p, when: p.prefixSince[pf], live: live})
		}
		p.mu.Unlock()
	}
	t, refused, contested := buildRoutes(routeInput{own: m.prefixes, meshNet: m.meshNet, book: m.book, prev: m.routes.Load(), claims: claims})
	m.routes.Store(t)
	m.contested.Store(contested)
	if err := m.book.takeErr(); err != nil {
		m.log.WithError(err).Error("address book")
	}
	byPeer := map[*peer]map[netip.Prefix]bool{}
	for _, c := range refused {
		if byPeer[c.peer] == nil {
			byPeer[c.peer] = map[netip.Prefix]bool{}
		}
		byPeer[c.peer][c.prefix] = true
	}
	for _, p := range m.peers {
		now := byPeer[p]
		p.mu.Lock()
		for pf := range now {
			if p.refused[pf] {
				continue
			}
			m.stats.refusedClaims.Add(1)
			f := logrus.Fields{"peer": p.key.Short(), "prefix": pf}
			if k, ok := m.book.owner(pf.Addr()); ok && pf.IsSingleIP() {
				f["owner"] = k.Short()
			}
			m.log.WithFields(f).Warn("refused a peer's claim inside the mesh network: the address belongs to another key, or the key already has one")
		}
		p.refused = now
		p.mu.Unlock()
	}
}

// peerLocked returns the peer with key k, creating it if create is set.
func (m *Mesh) peerLocked(k Key, create bool) *peer {
	p := m.peers[k]
	if p == nil && create && k != m.pub {
		p = newPeer(k)
		p.seen = m.now()
		m.peers[k] = p
		if _, dup := m.byID[p.id]; !dup {
			m.byID[p.id] = p
		}
		m.log.WithField("peer", k.Short()).Info("new peer")
	}
	return p
}

func (m *Mesh) peerByID(id uint64) *peer {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.byID[id]
}

// newIndex registers e under a fresh random index.
func (m *Mesh) newIndex(e indexEntry) uint32 {
	m.idxMu.Lock()
	defer m.idxMu.Unlock()
	for {
		i := rand.Uint32()
		if _, used := m.index[i]; !used && i != 0 {
			m.index[i] = e
			return i
		}
	}
}

func (m *Mesh) setIndex(i uint32, e indexEntry) {
	m.idxMu.Lock()
	m.deleteIndexLocked(i)
	m.index[i] = e
	m.idxMu.Unlock()
}

func (m *Mesh) dropIndex(i uint32) {
	m.idxMu.Lock()
	m.deleteIndexLocked(i)
	m.idxMu.Unlock()
}

func (m *Mesh) deleteIndexLocked(i uint32) {
	if e, ok := m.index[i]; ok {
		if e.hs != nil && !e.hs.initiator {
			m.nResp--
		}
		delete(m.index, i)
	}
}

// newResponder registers responder handshake h under a fresh index. When
// maxPendingHandshakes are unfinished, the oldest is forgotten: its
// initiator retries, and no flood of messages 1 keeps a node out.
func (m *Mesh) newResponder(h *handshake) uint32 {
	i := m.newIndex(indexEntry{hs: h})
	m.idxMu.Lock()
	defer m.idxMu.Unlock()
	h.local = i
	m.nResp++
	m.responders = append(m.responders, h)
	for m.nResp > maxPendingHandshakes && len(m.responders) > 0 {
		old := m.responders[0]
		m.responders = m.responders[1:]
		if e := m.index[old.local]; e.hs == old {
			m.deleteIndexLocked(old.local)
			m.drop(dropPendingEvicted)
		}
	}
	if len(m.responders) > 2*m.nResp+64 { // finished ones: let them go
		live := m.responders[:0]
		for _, r := range m.responders {
			if m.index[r.local].hs == r {
				live = append(live, r)
			}
		}
		clear(m.responders[len(live):])
		m.responders = live
	}
	return i
}

func (m *Mesh) lookupIndex(i uint32) indexEntry {
	m.idxMu.RLock()
	e := m.index[i]
	m.idxMu.RUnlock()
	return e
}
