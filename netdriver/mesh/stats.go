package mesh

import (
	"slices"
	"sync/atomic"
	"time"
)

// dropReason says why a packet was dropped. Drops are counted, never logged.
type dropReason int

const (
	dropMalformed        dropReason = iota // unparseable or unknown type
	dropUnknownIndex                       // names no session or handshake
	dropExpired                            // session too old
	dropReplay                             // counter seen or outside the window
	dropAuth                               // failed authentication
	dropHandshakeAuth                      // handshake failed (wrong cluster key, forged)
	dropHandshakeRate                      // handshake rate limit per source
	dropNoRoute                            // TUN packet to an address no peer owns
	dropNotIPv4                            // TUN packet that is not IPv4
	dropSourceNotAllowed                   // inner source address not the peer's
	dropNoSession                          // queue full while handshaking
	dropRelay                              // relay impossible or not allowed
	dropTUNWrite                           // TUN rejected a packet
	dropHandshakeStale                     // message 1's timestamp outside the clock window
	dropHandshakeReplay                    // a copy of a message 1 already answered
	dropPendingEvicted                     // unfinished responder handshake forgotten for a newer one
	dropGossipUnvouched                    // gossiped peer ignored: its gossiper has too many unverified ones
	dropPeerLimit                          // gossiped peer ignored: maxPeers known
	dropProbeRate                          // handshake to a gossiped endpoint held back by the probe limit
	dropRevoked                            // handshake or gossip of a revoked node (MESH_REVOKED)
	numDropReasons
)

var dropNames = [numDropReasons]string{
	"malformed", "unknown_index", "expired", "replay", "auth", "handshake_auth",
	"handshake_rate", "no_route", "not_ipv4", "source_not_allowed", "no_session", "relay", "tun_write",
	"handshake_stale", "handshake_replay", "handshake_evicted",
	"gossip_unvouched", "peer_limit", "probe_rate", "revoked",
}

type stats struct {
	drops      [numDropReasons]atomic.Uint64
	rxBytes    atomic.Uint64
	txBytes    atomic.Uint64
	handshakes atomic.Uint64
	relayed    atomic.Uint64

	refusedClaims atomic.Uint64 // peers' prefix claims refused (once per peer and prefix)
}

func (m *Mesh) drop(r dropReason) { m.stats.drops[r].Add(1) }

// Status is a snapshot of the mesh, made to be printed as JSON.
type Status struct {
	PublicKey      string            `json:"public_key"`
	ListenPort     uint16            `json:"listen_port"`
	Addr           string            `json:"addr,omitempty"`
	PublicEndpoint string            `json:"public_endpoint,omitempty"` // as peers see us
	Interface      string            `json:"interface"`
	MTU            int               `json:"mtu"`
	State          string            `json:"state"` // new, running, closed
	Prefixes       []string          `json:"prefixes"`
	Peers          []PeerStatus      `json:"peers"`
	RxBytes        uint64            `json:"rx_bytes"`
	TxBytes        uint64            `json:"tx_bytes"`
	Handshakes     uint64            `json:"handshakes"`
	Relayed        uint64            `json:"relayed_packets"`          // forwarded for other peers
	RefusedClaims  uint64            `json:"refused_claims,omitempty"` // address claims refused
	Drops          map[string]uint64 `json:"drops"`
	Revoked        []string          `json:"revoked,omitempty"` // MESH_REVOKED: keys and mesh addresses refused
	Routes         []Route           `json:"routes"`
}

// PeerStatus describes one peer.
type PeerStatus struct {
	PublicKey     string    `json:"public_key"`
	Endpoint      string    `json:"endpoint,omitempty"`
	Via           string    `json:"via,omitempty"` // relay's public key when relayed
	State         string    `json:"state"`         // up, handshaking, down
	LastHandshake time.Time `json:"last_handshake,omitzero"`
	RxBytes       uint64    `json:"rx_bytes"`
	TxBytes       uint64    `json:"tx_bytes"`
	Roams         uint64    `json:"roams"`
	Prefixes      []string  `json:"prefixes,omitempty"`
	Refused       []string  `json:"refused,omitempty"` // claims not routed to it (held by another key)
}

// Status returns a snapshot of the mesh.
func (m *Mesh) Status() Status {
	now := m.now()
	s := Status{
		PublicKey:     m.pub.String(),
		ListenPort:    m.opts.Bind.LocalPort(),
		Interface:     m.opts.TUN.Name(),
		MTU:           m.opts.TUN.MTU(),
		RxBytes:       m.stats.rxBytes.Load(),
		TxBytes:       m.stats.txBytes.Load(),
		Handshakes:    m.stats.handshakes.Load(),
		Relayed:       m.stats.relayed.Load(),
		RefusedClaims: m.stats.refusedClaims.Load(),
		Drops:         map[string]uint64{},
		Revoked:       m.revokedStatus(),
		Routes:        m.Routes(),
		State:         "new",
	}
	if m.opts.Addr.IsValid() {
		s.Addr = m.opts.Addr.String()
	}
	if m.started.Load() {
		s.State = "running"
	}
	if m.closed() {
		s.State = "closed"
	}
	for r := range numDropReasons {
		if n := m.stats.drops[r].Load(); n > 0 {
			s.Drops[dropNames[r]] = n
		}
	}
	m.mu.Lock()
	if m.publicEP.IsValid() {
		s.PublicEndpoint = m.publicEP.String()
	}
	for _, p := range m.prefixes {
		s.Prefixes = append(s.Prefixes, p.String())
	}
	peers := make([]*peer, 0, len(m.peers))
	for _, p := range m.peers {
		peers = append(peers, p)
	}
	m.mu.Unlock()
	slices.SortFunc(peers, func(a, b *peer) int { return slices.Compare(a.key[:], b.key[:]) })
	for _, p := range peers {
		ps := PeerStatus{PublicKey: p.key.String(), RxBytes: p.rxBytes.Load(), TxBytes: p.txBytes.Load(), Roams: p.roams.Load()}
		p.mu.Lock()
		if p.endpoint.IsValid() {
			ps.Endpoint = p.endpoint.String()
		}
		if pt := p.path.Load(); pt != nil && pt.via != nil {
			ps.Via = pt.via.key.String()
		}
		ps.LastHandshake = p.lastHandshake
		switch {
		case p.sendable(now) != nil:
			ps.State = "up"
		case p.hs != nil:
			ps.State = "handshaking"
		default:
			ps.State = "down"
		}
		for _, pf := range p.prefixes {
			ps.Prefixes = append(ps.Prefixes, pf.String())
			if p.refused[pf] {
				ps.Refused = append(ps.Refused, pf.String())
			}
		}
		p.mu.Unlock()
		s.Peers = append(s.Peers, ps)
	}
	return s
}
