package mesh

import (
	"context"
	"net/netip"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/homeswarm/homeswarm/netdriver/conn"
	"github.com/homeswarm/homeswarm/netdriver/tun"
)

// Resolver resolves peer host names; *net.Resolver satisfies it.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// Options configure a Mesh. Every field documents its zero value.
type Options struct {
	// PrivateKey is this node's static X25519 private key, its identity.
	// Zero: New fails with ErrNoPrivateKey. See LoadOrCreatePrivateKey.
	PrivateKey Key

	// ClusterKey is the cluster secret (MESH_KEY). Only nodes holding the
	// same secret complete a handshake. Empty: New fails with ErrNoClusterKey.
	ClusterKey []byte

	// AcceptClusterKeys are further cluster secrets accepted from peers
	// (MESH_KEY_ACCEPT), for rotating the cluster key one node at a time:
	// a node always proves ClusterKey when it starts a handshake, and
	// answers handshakes made with ClusterKey or any of these. Zero: only
	// ClusterKey.
	AcceptClusterKeys [][]byte

	// RevokedKeys and RevokedAddrs name nodes taken out of the cluster
	// (MESH_REVOKED): a peer whose static key is listed, whose key owns a
	// listed mesh address in the address book, or that announces a listed
	// address, never completes a handshake with this node, is never learned
	// from gossip, and keeps its address book entry, so no one else takes
	// the address. Zero: none.
	RevokedKeys  []Key
	RevokedAddrs []netip.Addr

	// Addr is this node's address on the mesh with the mesh's prefix
	// length, e.g. 10.254.0.1/24. Peers route Addr's host address (/32) to
	// this node. Zero: the node has no mesh address and only relays and
	// routes the prefixes given to AddPrefix.
	Addr netip.Prefix

	// Peers are bootstrap peers as "host:port"; host names are re-resolved
	// every ResolveInterval. Zero: the node only answers others.
	Peers []string

	// TUN carries IP packets to and from the kernel. Required. Close
	// closes it.
	TUN tun.Device

	// Bind is the UDP socket. Required. Close closes it.
	Bind conn.Bind

	// Resolver resolves Peers. Zero: net.DefaultResolver.
	Resolver Resolver

	// Logger receives events (never keys, never one line per packet).
	// Zero: logrus' standard logger.
	Logger *logrus.Entry

	// KeepaliveInterval is how long a session may go without sending
	// before a keepalive is sent, holding NAT mappings open. Zero: 20s.
	KeepaliveInterval time.Duration

	// RekeyAfter is the session age at which its initiator starts a new
	// handshake. Zero: 2 minutes.
	RekeyAfter time.Duration

	// RejectAfter is the age at which a session is no longer used in
	// either direction. Zero: RekeyAfter + RekeyAfter/2.
	RejectAfter time.Duration

	// RekeyAfterMessages is the number of sent packets after which a
	// session is rekeyed. Zero: 2^60.
	RekeyAfterMessages uint64

	// HandshakeTimeout is how long to wait for a handshake answer before
	// retrying (alternating direct and relayed paths), and how long a
	// replaced session keeps accepting packets. Zero: 5s.
	HandshakeTimeout time.Duration

	// GossipInterval is how often each peer is told the peers we reach.
	// Zero: 30s.
	GossipInterval time.Duration

	// ResolveInterval is how often Peers host names are resolved. Zero: 60s.
	ResolveInterval time.Duration

	// HandshakeRate is how many handshake messages per second one source
	// IP address may make us process (burst twice that). Zero: 20.
	HandshakeRate float64

	// MaxClockSkew is how far the timestamp in a handshake's message 1 may
	// be from this node's clock: older (or newer) ones are dropped as
	// handshake_stale, and copies of those within it as handshake_replay.
	// Nodes' clocks must agree within it (NTP). Zero: 10 minutes.
	MaxClockSkew time.Duration

	// PeerExpiry is how long a peer learned from gossip is remembered
	// without any session or mention before it is forgotten. Peers from
	// Peers are kept as long as their address is. Zero: 10 minutes.
	PeerExpiry time.Duration

	// AddrBookFile is where the binding of each node's mesh address to its
	// static key (first key seen wins) is kept across restarts, e.g. next
	// to the private key. Zero: the bindings live in memory only.
	AddrBookFile string

	// Receiver, if set, is offered every received data packet before TUN
	// (meshnet's container switch). Zero: every packet goes to TUN.
	Receiver Receiver
}

// Receiver takes received data packets before they go to TUN. Both
// methods are called from the mesh's receive goroutine, never
// concurrently, and must not block.
type Receiver interface {
	// Deliver is offered every authenticated data packet, after the check
	// that its source belongs to the sending peer. It returns true when it
	// took the packet (delivered or dropped it itself), false to let it go
	// to TUN. It may keep pkt until the next Flush, no longer.
	Deliver(pkt []byte) bool
	// Flush is called after each batch of received datagrams in which
	// Deliver took a packet: the packets it kept can be written as a batch.
	Flush()
}

func (o *Options) setDefaults() {
	if o.KeepaliveInterval <= 0 {
		o.KeepaliveInterval = 20 * time.Second
	}
	if o.RekeyAfter <= 0 {
		o.RekeyAfter = 2 * time.Minute
	}
	if o.RejectAfter <= 0 {
		o.RejectAfter = o.RekeyAfter + o.RekeyAfter/2
	}
	if o.RekeyAfterMessages == 0 {
		o.RekeyAfterMessages = 1 << 60
	}
	if o.HandshakeTimeout <= 0 {
		o.HandshakeTimeout = 5 * time.Second
	}
	if o.GossipInterval <= 0 {
		o.GossipInterval = 30 * time.Second
	}
	if o.ResolveInterval <= 0 {
		o.ResolveInterval = time.Minute
	}
	if o.PeerExpiry <= 0 {
		o.PeerExpiry = 10 * time.Minute
	}
	if o.MaxClockSkew <= 0 {
		o.MaxClockSkew = 10 * time.Minute
	}
	if o.HandshakeRate <= 0 {
		o.HandshakeRate = 20
	}
}
