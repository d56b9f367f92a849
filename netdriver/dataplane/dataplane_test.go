package dataplane

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/homeswarm/homeswarm/netdriver/mesh"
	"github.com/homeswarm/homeswarm/netdriver/tun"
	"github.com/homeswarm/homeswarm/netdriver/tun/tuntest"
	"github.com/homeswarm/homeswarm/netdriver/wire"
)

// chanPort is a Port fed by a channel; writes are recorded.
type chanPort struct {
	in     chan []byte
	closed chan struct{}
	once   sync.Once
	mu     sync.Mutex
	out    [][]byte
	got    chan struct{}
}

func newChanPort() *chanPort {
	return &chanPort{in: make(chan []byte, 16), closed: make(chan struct{}), got: make(chan struct{}, 64)}
}

func (p *chanPort) Read(b []byte) (int, error) {
	select {
	case f := <-p.in:
		return copy(b, f), nil
	case <-p.closed:
		return 0, errors.New("closed")
	}
}

func (p *chanPort) Write(hdr, pkt []byte) error {
	p.mu.Lock()
	p.out = append(p.out, append(append([]byte(nil), hdr...), pkt...))
	p.mu.Unlock()
	select {
	case p.got <- struct{}{}:
	default:
	}
	return nil
}

func (p *chanPort) Close() error { p.once.Do(func() { close(p.closed) }); return nil }

// wait returns the next written frame (virtio header stripped).
func (p *chanPort) wait(t *testing.T) []byte {
	t.Helper()
	select {
	case <-p.got:
	case <-time.After(2 * time.Second):
		t.Fatal("no frame written")
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	f := p.out[0]
	p.out = p.out[1:]
	return f[vnetLen:]
}

func (p *chanPort) none(t *testing.T) {
	t.Helper()
	select {
	case <-p.got:
		t.Fatal("unexpected frame written")
	case <-time.After(100 * time.Millisecond):
	}
}

// fakeSender records what would go to the mesh.
type fakeSender struct {
	mu   sync.Mutex
	sent [][]byte
}

func (s *fakeSender) Send(buf []byte, n int) {
	s.mu.Lock()
	s.sent = append(s.sent, append([]byte(nil), buf[mesh.Headroom:mesh.Headroom+n]...))
	s.mu.Unlock()
}
func (s *fakeSender) Flush() {}
func (s *fakeSender) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sent)
}

var (
	pool1 = []netip.Prefix{netip.MustParsePrefix("10.0.1.0/24")}
	pool2 = []netip.Prefix{netip.MustParsePrefix("10.0.2.0/24")}
	macA  = net.HardwareAddr{2, 0x42, 10, 0, 1, 5}
	macB  = net.HardwareAddr{2, 0x42, 10, 0, 1, 6}
	macC  = net.HardwareAddr{2, 0x42, 10, 0, 2, 5}
)

// ipv4 builds an IPv4/UDP packet (tuntest.Packet) from address strings.
func ipv4(src, dst string, payload []byte) []byte {
	return tuntest.Packet(netip.MustParseAddr(src), netip.MustParseAddr(dst), payload)
}

// frame wraps an IP packet or ARP message as a port delivers it.
func frame(src, dst net.HardwareAddr, typ uint16, payload []byte) []byte {
	f := make([]byte, frameHdr+len(payload))
	e := f[vnetLen:]
	copy(e[0:], dst)
	copy(e[6:], src)
	binary.BigEndian.PutUint16(e[12:], typ)
	copy(e[ethLen:], payload)
	return f
}

func arpRequest(sha net.HardwareAddr, spa, tpa string) []byte {
	a := make([]byte, 28)
	binary.BigEndian.PutUint16(a[0:], 1)
	binary.BigEndian.PutUint16(a[2:], etherIPv4)
	a[4], a[5] = 6, 4
	binary.BigEndian.PutUint16(a[6:], 1)
	copy(a[8:], sha)
	s, t := netip.MustParseAddr(spa).As4(), netip.MustParseAddr(tpa).As4()
	copy(a[14:], s[:])
	copy(a[24:], t[:])
	return a
}

func TestSwitch(t *testing.T) {
	snd := &fakeSender{}
	s := New(func() Sender { return snd }, nil)
	s.AddNetwork("n1", pool1)
	s.AddNetwork("n2", pool2)
	pa, pb, pc := newChanPort(), newChanPort(), newChanPort()
	must(t, s.Attach(Endpoint{ID: "a", Network: "n1", Addr: netip.MustParseAddr("10.0.1.5"), MAC: macA, Pools: pool1}, pa))
	must(t, s.Attach(Endpoint{ID: "b", Network: "n1", Addr: netip.MustParseAddr("10.0.1.6"), MAC: macB, Pools: pool1}, pb))
	must(t, s.Attach(Endpoint{ID: "c", Network: "n2", Addr: netip.MustParseAddr("10.0.2.5"), MAC: macC, Pools: pool2}, pc))
	if err := s.Attach(Endpoint{ID: "x", Network: "n1", Addr: netip.MustParseAddr("10.0.1.6"), Pools: pool1}, newChanPort()); !errors.Is(err, ErrAddrInUse) {
		t.Fatalf("second endpoint on one address: %v", err)
	}
	defer s.Close()
	bcast := net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

	// ARP for a peer of the network: answered with the virtual MAC
	pa.in <- frame(macA, bcast, etherARP, arpRequest(macA, "10.0.1.5", "10.0.1.99"))
	r := pa.wait(t)
	if !bytes.Equal(r[0:6], macA) || !bytes.Equal(r[6:12], VirtualMAC) || binary.BigEndian.Uint16(r[12:]) != etherARP {
		t.Fatalf("ARP reply ethernet header % x", r[:14])
	}
	a := r[ethLen:]
	if binary.BigEndian.Uint16(a[6:]) != 2 || !bytes.Equal(a[8:14], VirtualMAC) ||
		netip.AddrFrom4([4]byte(a[14:18])).String() != "10.0.1.99" || !bytes.Equal(a[18:24], macA) ||
		netip.AddrFrom4([4]byte(a[24:28])).String() != "10.0.1.5" {
		t.Fatalf("ARP reply % x", a)
	}
	// not answered: other network, own address, gratuitous, broadcast
	for _, tpa := range []string{"10.0.2.7", "10.0.1.5", "10.0.1.255", "10.0.1.0"} {
		pa.in <- frame(macA, bcast, etherARP, arpRequest(macA, "10.0.1.5", tpa))
	}
	pa.none(t)

	// local delivery in one network, with the endpoint's MAC
	pkt := ipv4("10.0.1.5", "10.0.1.6", []byte("hello b"))
	pa.in <- frame(macA, VirtualMAC, etherIPv4, pkt)
	f := pb.wait(t)
	if !bytes.Equal(f[0:6], macB) || !bytes.Equal(f[6:12], VirtualMAC) || !bytes.Equal(f[ethLen:], pkt) {
		t.Fatalf("local frame % x", f)
	}
	// remote destination in the network: to the mesh
	pa.in <- frame(macA, VirtualMAC, etherIPv4, ipv4("10.0.1.5", "10.0.1.77", []byte("remote")))
	waitFor(t, func() bool { return snd.count() == 1 })
	// other network (local or remote), spoofed source, garbage: dropped
	pa.in <- frame(macA, VirtualMAC, etherIPv4, ipv4("10.0.1.5", "10.0.2.5", nil))
	pa.in <- frame(macA, VirtualMAC, etherIPv4, ipv4("10.0.1.5", "10.0.2.77", nil))
	pa.in <- frame(macA, VirtualMAC, etherIPv4, ipv4("10.0.1.6", "10.0.1.77", nil))
	pa.in <- frame(macA, VirtualMAC, etherIPv4, []byte{0x45, 0})
	pa.in <- frame(macA, VirtualMAC, 0x86dd, make([]byte, 40))
	pa.in <- []byte{1, 2, 3}
	pc.none(t)
	waitFor(t, func() bool {
		st := s.Stats()
		return st.Drops["other_network"] == 2 && st.Drops["spoofed_source"] == 1 && st.Drops["malformed"] == 2 && st.Drops["not_ipv4"] == 1
	})
	if snd.count() != 1 {
		t.Fatalf("sent to mesh: %d", snd.count())
	}

	// from the mesh: delivered only to the destination's network
	if !s.Deliver(ipv4("10.0.1.77", "10.0.1.6", []byte("from afar"))) {
		t.Fatal("mesh packet for a local endpoint not taken")
	}
	pb.none(t) // held until Flush
	s.Flush()
	if f := pb.wait(t); !bytes.Equal(f[ethLen+28:], []byte("from afar")) {
		t.Fatalf("mesh frame % x", f)
	}
	if !s.Deliver(ipv4("10.0.2.77", "10.0.1.6", nil)) { // other network's source
		t.Fatal("cross-network packet not taken (dropped)")
	}
	if !s.Deliver(ipv4("10.0.1.77", "10.0.1.99", nil)) { // in a pool, no endpoint
		t.Fatal("packet for an absent endpoint of a known network went to the host")
	}
	if s.Deliver(ipv4("10.254.0.2", "10.254.0.1", nil)) { // the host's own mesh traffic
		t.Fatal("host traffic taken by the switch")
	}
	s.Flush()
	pb.none(t)

	// a learned MAC replaces the configured one
	pb.in <- frame(net.HardwareAddr{2, 9, 9, 9, 9, 9}, VirtualMAC, etherIPv4, ipv4("10.0.1.6", "10.0.1.5", []byte("x")))
	pa.wait(t)
	s.Deliver(ipv4("10.0.1.77", "10.0.1.6", nil))
	s.Flush()
	if f := pb.wait(t); !bytes.Equal(f[0:6], net.HardwareAddr{2, 9, 9, 9, 9, 9}) {
		t.Fatalf("learned MAC not used: % x", f[:6])
	}

	// detached: no longer delivered, address free again
	s.Detach("b")
	if !s.Deliver(ipv4("10.0.1.77", "10.0.1.6", nil)) {
		t.Fatal("packet for a detached endpoint went to the host")
	}
	s.Flush()
	pb.none(t)
	must(t, s.Attach(Endpoint{ID: "x", Network: "n1", Addr: netip.MustParseAddr("10.0.1.6"), Pools: pool1}, newChanPort()))
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func waitFor(t *testing.T, ok func() bool) {
	t.Helper()
	for i := 0; i < 200; i++ {
		if ok() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("condition not reached")
}

// FuzzFrame feeds arbitrary frames from a container and arbitrary packets
// from the mesh: nothing panics, nothing leaves the endpoint's network.
func FuzzFrame(f *testing.F) {
	f.Add(frame(macA, VirtualMAC, etherIPv4, ipv4("10.0.1.5", "10.0.1.6", []byte("x"))), []byte{})
	f.Add(frame(macA, VirtualMAC, etherARP, arpRequest(macA, "10.0.1.5", "10.0.1.6")), ipv4("10.0.1.9", "10.0.1.5", nil))
	gso := frame(macA, VirtualMAC, etherIPv4, make([]byte, 3000))
	gso[0], gso[1] = 1, 1 // NEEDS_CSUM, TCPv4
	binary.LittleEndian.PutUint16(gso[4:], 1000)
	f.Add(gso, []byte{0x45})
	f.Fuzz(func(t *testing.T, fr, meshPkt []byte) {
		snd := &fakeSender{}
		s := New(func() Sender { return snd }, nil)
		s.AddNetwork("n1", pool1)
		s.AddNetwork("n2", pool2)
		pa, pc := newChanPort(), newChanPort()
		pt := &port{ep: Endpoint{ID: "a", Network: "n1", Addr: netip.MustParseAddr("10.0.1.5"), MAC: macA, Pools: pool1}, p: pa}
		pt.mac.Store(&macA)
		s.ports["a"] = pt
		s.ports["c"] = &port{ep: Endpoint{ID: "c", Network: "n2", Addr: netip.MustParseAddr("10.0.2.5"), Pools: pool2}, p: pc}
		s.ports["c"].mac.Store(&macC)
		s.rebuildLocked()
		bufs := make([][]byte, batch)
		for i := range bufs {
			bufs[i] = make([]byte, mesh.BufSize)
		}
		seg := tun.Segmenter{L2Len: ethLen}
		s.frame(pt, append([]byte(nil), fr...), &seg, bufs, make([]int, batch), snd)
		s.Deliver(meshPkt)
		s.Flush()
		for _, p := range snd.sent {
			if d, ok := wire.IPv4Dst(p); !ok || !pool1[0].Contains(d) {
				t.Fatalf("sent outside the network: % x", p)
			}
		}
		if len(pc.out) > 0 && len(meshPkt) >= 20 {
			src := netip.AddrFrom4([4]byte(meshPkt[12:16]))
			if !pool2[0].Contains(src) {
				t.Fatalf("delivered to n2 from %v", src)
			}
		}
	})
}

// tcpSeg builds an IPv4 TCP ACK segment of the flow 10.0.1.77:1000 →
// 10.0.1.6:2000 with sequence number seq.
func tcpSeg(seq uint32, payload []byte) []byte {
	p := make([]byte, 40+len(payload))
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	p[6] = 0x40
	p[8], p[9] = 64, 6
	copy(p[12:], []byte{10, 0, 1, 77, 10, 0, 1, 6})
	binary.BigEndian.PutUint16(p[20:], 1000)
	binary.BigEndian.PutUint16(p[22:], 2000)
	binary.BigEndian.PutUint32(p[24:], seq)
	p[32], p[33] = 5<<4, 0x10
	binary.BigEndian.PutUint16(p[34:], 512)
	copy(p[40:], payload)
	return p
}

// TestSwitchBatch: consecutive TCP segments from the mesh
// reach the container as one GSO frame whose virtio header counts the
// Ethernet header; other packets go as they are.
func TestSwitchBatch(t *testing.T) {
	s := New(func() Sender { return &fakeSender{} }, nil)
	s.AddNetwork("n1", pool1)
	pb := newChanPort()
	must(t, s.Attach(Endpoint{ID: "b", Network: "n1", Addr: netip.MustParseAddr("10.0.1.6"), MAC: macB, Pools: pool1}, pb))
	defer s.Close()
	pay := bytes.Repeat([]byte("x"), 1000)
	for i := range 4 {
		if !s.Deliver(tcpSeg(uint32(i*1000), pay)) {
			t.Fatal("not taken")
		}
	}
	s.Deliver(ipv4("10.0.1.77", "10.0.1.6", []byte("udp")))
	pb.none(t) // held until Flush
	s.Flush()
	for range 2 {
		select {
		case <-pb.got:
		case <-time.After(time.Second):
			t.Fatal("frames not written")
		}
	}
	pb.mu.Lock()
	defer pb.mu.Unlock()
	if len(pb.out) != 2 {
		t.Fatalf("%d frames, want 2 (one merged TCP, one UDP)", len(pb.out))
	}
	g := pb.out[0]
	if g[1] != 1 || binary.LittleEndian.Uint16(g[4:]) != 1000 || binary.LittleEndian.Uint16(g[6:]) != ethLen+20 ||
		binary.LittleEndian.Uint16(g[2:]) != ethLen+40 || len(g) != frameHdr+40+4000 || !bytes.Equal(g[vnetLen:vnetLen+6], macB) {
		t.Fatalf("GSO frame header % x, length %d", g[:frameHdr], len(g))
	}
	if u := pb.out[1]; u[1] != 0 || !bytes.HasSuffix(u, []byte("udp")) {
		t.Fatalf("plain frame % x", u)
	}
}

// TestSwitchKeepsOrder: more packets for one container than a held batch
// reach it in the order they came (a full batch is written before the
// next packet, not after it).
func TestSwitchKeepsOrder(t *testing.T) {
	s := New(func() Sender { return &fakeSender{} }, nil)
	s.AddNetwork("n1", pool1)
	pb := newChanPort()
	must(t, s.Attach(Endpoint{ID: "b", Network: "n1", Addr: netip.MustParseAddr("10.0.1.6"), MAC: macB, Pools: pool1}, pb))
	defer s.Close()
	n := batch + 3
	for i := range n {
		if !s.Deliver(ipv4("10.0.1.77", "10.0.1.6", fmt.Appendf(nil, "p%03d", i))) {
			t.Fatal("not taken")
		}
	}
	s.Flush()
	pb.mu.Lock()
	defer pb.mu.Unlock()
	if len(pb.out) != n {
		t.Fatalf("%d frames, want %d", len(pb.out), n)
	}
	for i, f := range pb.out {
		if want := fmt.Appendf(nil, "p%03d", i); !bytes.HasSuffix(f, want) {
			t.Fatalf("frame %d ends %q, want %q", i, f[len(f)-4:], want)
		}
	}
}
