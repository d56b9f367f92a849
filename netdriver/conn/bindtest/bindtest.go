// Package bindtest is an in-memory UDP network for testing the mesh: Binds
// attached to a Network exchange datagrams through Go channels, and the test
// can drop, partition and NAT them to reproduce home networks in-process.
package bindtest

import (
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/homeswarm/homeswarm/netdriver/conn"
)

type datagram struct {
	b   []byte
	src netip.AddrPort
}

// Network connects Binds. The zero value is not usable; call NewNetwork.
type Network struct {
	mu     sync.Mutex
	binds  map[netip.AddrPort]*Bind
	nats   []*NAT
	filter func(from, to netip.AddrPort, b []byte) bool
	pool   sync.Pool

	// Delivered and Dropped count datagrams.
	Delivered, Dropped atomic.Uint64
}

// NewNetwork returns an empty network.
func NewNetwork() *Network {
	n := &Network{binds: map[netip.AddrPort]*Bind{}}
	n.pool.New = func() any { b := make([]byte, 2048); return &b }
	return n
}

// SetFilter installs f, called with the sending and receiving Binds' own
// addresses and the datagram (which f must not keep or modify); the
// datagram is dropped when f returns false. nil allows all. f may be used
// to capture traffic.
func (n *Network) SetFilter(f func(from, to netip.AddrPort, b []byte) bool) {
	n.mu.Lock()
	n.filter = f
	n.mu.Unlock()
}

// Bind attaches a host with a public address.
func (n *Network) Bind(addr netip.AddrPort) *Bind {
	return n.attach(addr, nil)
}

func (n *Network) attach(addr netip.AddrPort, nat *NAT) *Bind {
	b := &Bind{net: n, addr: addr, nat: nat, in: make(chan datagram, 1024), closed: make(chan struct{})}
	n.mu.Lock()
	defer n.mu.Unlock()
	if old, dup := n.binds[addr]; dup {
		select {
		case <-old.closed: // closed: the address can be bound again (a restart)
		default:
			panic(fmt.Sprintf("bindtest: address %v in use", addr))
		}
	}
	n.binds[addr] = b
	return b
}

// NAT is a port-restricted cone NAT: an inside host's datagrams leave from
// Public with a port allocated per inside address; replies come back only
// from remote endpoints the inside host has sent to, unless a port is
// forwarded. Datagrams between two inside hosts take the LAN directly.
// Hairpinning (inside host to the NAT's own public address) is not
// supported, as on many home routers.
type NAT struct {
	net      *Network
	public   netip.Addr
	nextPort uint16
	out      map[netip.AddrPort]uint16                  // inside -> public port
	in       map[uint16]netip.AddrPort                  // public port -> inside
	allowed  map[netip.AddrPort]map[netip.AddrPort]bool // inside -> remotes it sent to
	forwards map[uint16]bool
}

// NewNAT creates a NAT with the given public address.
func (n *Network) NewNAT(public netip.Addr) *NAT {
	t := &NAT{net: n, public: public, nextPort: 40000, out: map[netip.AddrPort]uint16{},
		in: map[uint16]netip.AddrPort{}, allowed: map[netip.AddrPort]map[netip.AddrPort]bool{}, forwards: map[uint16]bool{}}
	n.mu.Lock()
	n.nats = append(n.nats, t)
	n.mu.Unlock()
	return t
}

// Bind attaches a host behind the NAT at the private address inside.
func (t *NAT) Bind(inside netip.AddrPort) *Bind { return t.net.attach(inside, t) }

// Forward forwards public UDP port port to inside, like a home router's
// port forwarding; the inside host's own datagrams then leave from port too.
func (t *NAT) Forward(port uint16, inside netip.AddrPort) {
	t.net.mu.Lock()
	defer t.net.mu.Unlock()
	t.out[inside] = port
	t.in[port] = inside
	t.forwards[port] = true
}

// SetPublic changes the NAT's public address (a new lease from the ISP);
// mappings keep their ports.
func (t *NAT) SetPublic(a netip.Addr) {
	t.net.mu.Lock()
	t.public = a
	t.net.mu.Unlock()
}

// PublicAddr returns the public endpoint of inside, if mapped.
func (t *NAT) PublicAddr(inside netip.AddrPort) (netip.AddrPort, bool) {
	t.net.mu.Lock()
	defer t.net.mu.Unlock()
	p, ok := t.out[inside]
	return netip.AddrPortFrom(t.public, p), ok
}

// route finds the receiving Bind and the source address it sees.
// Called with n.mu held.
func (n *Network) routeLocked(from *Bind, dst netip.AddrPort) (*Bind, netip.AddrPort) {
	src := from.addr
	if t := from.nat; t != nil {
		if to, ok := n.binds[dst]; ok && to.nat == t {
			return to, src // same LAN
		}
		port, ok := t.out[src]
		if !ok {
			t.nextPort++
			port = t.nextPort
			t.out[src] = port
			t.in[port] = src
		}
		if t.allowed[src] == nil {
			t.allowed[src] = map[netip.AddrPort]bool{}
		}
		t.allowed[src][dst] = true
		src = netip.AddrPortFrom(t.public, port)
	}
	for _, t := range n.nats {
		if t.public != dst.Addr() {
			continue
		}
		inside, ok := t.in[dst.Port()]
		if !ok || (from.nat == t) {
			return nil, src
		}
		if !t.forwards[dst.Port()] && !t.allowed[inside][src] {
			return nil, src
		}
		return n.binds[inside], src
	}
	if to, ok := n.binds[dst]; ok && to.nat == nil {
		return to, src
	}
	return nil, src
}

// Bind is one host's socket on a Network.
type Bind struct {
	net       *Network
	addr      netip.AddrPort
	nat       *NAT
	in        chan datagram
	closed    chan struct{}
	closeOnce sync.Once
}

var _ conn.Bind = (*Bind)(nil)

// Addr is the Bind's own (inside) address.
func (b *Bind) Addr() netip.AddrPort { return b.addr }

// ReadBatch implements conn.Bind.
func (b *Bind) ReadBatch(msgs []conn.Message) (int, error) {
	var d datagram
	select {
	case <-b.closed:
		return 0, net.ErrClosed
	case d = <-b.in:
	}
	n := 0
	for {
		msgs[n].N = copy(msgs[n].Buf, d.b)
		msgs[n].Addr = d.src
		bp := d.b[:cap(d.b)]
		b.net.pool.Put(&bp)
		n++
		if n == len(msgs) {
			return n, nil
		}
		select {
		case d = <-b.in:
		default:
			return n, nil
		}
	}
}

// WriteBatch implements conn.Bind. Datagrams to unknown or filtered
// destinations, or to a full receive queue, are dropped silently, as UDP is.
func (b *Bind) WriteBatch(msgs []conn.Message) error {
	select {
	case <-b.closed:
		return net.ErrClosed
	default:
	}
	for _, m := range msgs {
		if !m.Addr.IsValid() {
			return conn.ErrNoAddr
		}
		b.net.mu.Lock()
		to, src := b.net.routeLocked(b, m.Addr)
		f := b.net.filter
		b.net.mu.Unlock()
		if to == nil || (f != nil && !f(b.addr, to.addr, m.Buf)) {
			b.net.Dropped.Add(1)
			continue
		}
		bp := b.net.pool.Get().(*[]byte)
		d := datagram{b: append((*bp)[:0], m.Buf...), src: src}
		select {
		case to.in <- d:
			b.net.Delivered.Add(1)
		default:
			b.net.pool.Put(bp)
			b.net.Dropped.Add(1)
		}
	}
	return nil
}

// BatchSize implements conn.Bind.
func (b *Bind) BatchSize() int { return 32 }

// LocalPort implements conn.Bind.
func (b *Bind) LocalPort() uint16 { return b.addr.Port() }

// Close implements conn.Bind; the address can then be bound again.
func (b *Bind) Close() error {
	b.closeOnce.Do(func() { close(b.closed) })
	return nil
}

// Spoof delivers b to the public Bind at dst as if it came from src: a
// forged source address, which nothing on a real network prevents. It
// bypasses NATs and the filter, and reports whether the datagram was
// queued (false: no such Bind, or its receive queue is full).
func (n *Network) Spoof(src, dst netip.AddrPort, b []byte) bool {
	n.mu.Lock()
	to := n.binds[dst]
	n.mu.Unlock()
	if to == nil || to.nat != nil {
		return false
	}
	bp := n.pool.Get().(*[]byte)
	select {
	case to.in <- datagram{b: append((*bp)[:0], b...), src: src}:
		n.Delivered.Add(1)
		return true
	default:
		n.pool.Put(bp)
		n.Dropped.Add(1)
		return false
	}
}
