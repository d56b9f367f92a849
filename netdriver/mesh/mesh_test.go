package mesh

import (
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/homeswarm/homeswarm/netdriver/conn"
	"github.com/homeswarm/homeswarm/netdriver/conn/bindtest"
	"github.com/homeswarm/homeswarm/netdriver/tun/tuntest"
	"github.com/homeswarm/homeswarm/netdriver/wire"
)

func TestTwoNodes(t *testing.T) {
	t.Parallel()
	net := bindtest.NewNetwork()
	a := newNode(t, net.Bind(ap("192.0.2.1:3210")), "10.254.0.1/24", []string{"192.0.2.2:3210"})
	b := newNode(t, net.Bind(ap("192.0.2.2:3210")), "10.254.0.2/24", nil)
	ping(t, a, b, 5*time.Second)
	ping(t, b, a, 5*time.Second)
	for range 50 {
		a.tun.Inbound <- tuntest.Packet(a.ip, b.ip, []byte("bulk"))
	}
	waitFor(t, 5*time.Second, "50 packets", func() bool { return len(b.tun.Outbound) >= 50 })

	st := a.m.Status()
	if len(st.Peers) != 1 || st.Peers[0].State != "up" || st.Peers[0].PublicKey != b.m.PublicKey().String() {
		t.Fatalf("status peers: %+v", st.Peers)
	}
	if st.Peers[0].TxBytes == 0 || st.Peers[0].RxBytes == 0 || st.Peers[0].LastHandshake.IsZero() {
		t.Fatalf("no counters: %+v", st.Peers[0])
	}
	js, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("status: %s", js)
	if routes := a.m.Routes(); len(routes) != 1 || routes[0].Prefix != netip.MustParsePrefix("10.254.0.2/32") {
		t.Fatalf("routes %v", routes)
	}
}

func TestThreeNodesGossip(t *testing.T) {
	t.Parallel()
	net := bindtest.NewNetwork()
	// A and C only know B; they learn each other through B's gossip.
	b := newNode(t, net.Bind(ap("192.0.2.2:3210")), "10.254.0.2/24", nil)
	a := newNode(t, net.Bind(ap("192.0.2.1:3210")), "10.254.0.1/24", []string{"192.0.2.2:3210"})
	c := newNode(t, net.Bind(ap("192.0.2.3:3210")), "10.254.0.3/24", []string{"192.0.2.2:3210"})
	nodes := []*node{a, b, c}
	for _, x := range nodes {
		for _, y := range nodes {
			if x != y {
				ping(t, x, y, 5*time.Second)
			}
		}
	}
	ps, ok := c.peerStatus(a.m.PublicKey())
	if !ok || ps.Via != "" || ps.Endpoint != "192.0.2.1:3210" {
		t.Fatalf("C should reach A directly: %+v", ps)
	}
}

func TestWrongClusterKeyNeverEstablishes(t *testing.T) {
	t.Parallel()
	net := bindtest.NewNetwork()
	b := newNode(t, net.Bind(ap("192.0.2.2:3210")), "10.254.0.2/24", nil)
	x := newNode(t, net.Bind(ap("192.0.2.9:3210")), "10.254.0.9/24", []string{"192.0.2.2:3210"},
		func(o *Options) { o.ClusterKey = []byte("not the cluster key") })
	if err := tryPing(x, b, 700*time.Millisecond); err == nil {
		t.Fatal("node with wrong key delivered a packet")
	}
	if n := b.m.Status().Drops["handshake_auth"]; n == 0 {
		t.Fatalf("handshakes with the wrong key not counted: %+v", b.m.Status().Drops)
	}
	if len(b.m.Status().Peers) != 0 || b.m.Status().Handshakes != 0 {
		t.Fatalf("B knows a peer: %+v", b.m.Status())
	}
}

// capture records datagrams and optionally withholds them.
type capture struct {
	mu       sync.Mutex
	pkts     [][]byte
	withhold atomic.Int32 // withhold this many matching datagrams
	typ      byte
	to       netip.AddrPort
}

func (c *capture) filter(from, to netip.AddrPort, b []byte) bool {
	if to != c.to || wire.Type(b) != c.typ || len(b) <= wire.TransportMinLen {
		return true
	}
	c.mu.Lock()
	c.pkts = append(c.pkts, append([]byte(nil), b...))
	c.mu.Unlock()
	if c.withhold.Load() > 0 {
		c.withhold.Add(-1)
		return false
	}
	return true
}

func (c *capture) get(i int) []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	if i >= len(c.pkts) {
		return nil
	}
	return c.pkts[i]
}

func (c *capture) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.pkts)
}

func TestForgedAndReplayedPacketsDropped(t *testing.T) {
	t.Parallel()
	net := bindtest.NewNetwork()
	capt := &capture{typ: wire.TypeData, to: ap("192.0.2.2:3210")}
	net.SetFilter(capt.filter)
	a := newNode(t, net.Bind(ap("192.0.2.1:3210")), "10.254.0.1/24", []string{"192.0.2.2:3210"})
	b := newNode(t, net.Bind(ap("192.0.2.2:3210")), "10.254.0.2/24", nil)
	evil := net.Bind(ap("198.51.100.66:666"))
	ping(t, a, b, 5*time.Second)
	waitFor(t, time.Second, "captured data packet", func() bool { return capt.len() > 0 })
	good := capt.get(0)
	drain := func() {
		for len(b.tun.Outbound) > 0 {
			<-b.tun.Outbound
		}
	}
	drain()

	// forged packets carry a fresh counter so they pass the replay window
	forged := func(f func([]byte) []byte) []byte {
		b := append([]byte(nil), good...)
		b[12] = 0x7f
		return f(b)
	}
	tests := []struct {
		name   string
		pkt    []byte
		reason string
	}{
		{"replayed", good, "replay"},
		{"flipped ciphertext", forged(func(b []byte) []byte { b[len(b)-20] ^= 1; return b }), "auth"},
		{"flipped header", forged(func(b []byte) []byte { b[0] = wire.TypeGossip; return b }), "auth"},
		{"unknown index", forged(func(b []byte) []byte { b[4] ^= 0xff; return b }), "unknown_index"},
		{"garbage", []byte("GET / HTTP/1.0\r\n\r\n"), "malformed"},
		{"truncated", good[:wire.TransportMinLen-1], "malformed"},
		{"forged handshake response", append([]byte{wire.TypeHandshakeResp, 0, 0, 0}, make([]byte, 200)...), "unknown_index"},
	}
	for _, tt := range tests {
		before := b.m.Status().Drops[tt.reason]
		if err := evil.WriteBatch([]conn.Message{{Buf: tt.pkt, Addr: ap("192.0.2.2:3210")}}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 2*time.Second, tt.name+" counted as "+tt.reason, func() bool { return b.m.Status().Drops[tt.reason] > before })
	}
	if len(b.tun.Outbound) != 0 {
		t.Fatal("a forged or replayed packet reached TUN")
	}
	if ps, _ := b.peerStatus(a.m.PublicKey()); ps.Endpoint != "192.0.2.1:3210" || ps.Roams != 0 {
		t.Fatalf("forged packets moved the peer: %+v", ps)
	}
}

func TestRekey(t *testing.T) {
	t.Parallel()
	net := bindtest.NewNetwork()
	capt := &capture{typ: wire.TypeData, to: ap("192.0.2.2:3210")}
	net.SetFilter(capt.filter)
	slow := func(o *Options) {
		o.RekeyAfter = 600 * time.Millisecond
		o.HandshakeTimeout = 400 * time.Millisecond // also the grace of a replaced session
		o.RejectAfter = 1500 * time.Millisecond
		o.KeepaliveInterval = time.Hour
	}
	a := newNode(t, net.Bind(ap("192.0.2.1:3210")), "10.254.0.1/24", []string{"192.0.2.2:3210"}, slow)
	b := newNode(t, net.Bind(ap("192.0.2.2:3210")), "10.254.0.2/24", nil, slow)
	ping(t, a, b, 5*time.Second)
	// withhold two packets of the first session: in flight across a rekey
	capt.withhold.Store(2)
	first := capt.len()
	a.tun.Inbound <- tuntest.Packet(a.ip, b.ip, []byte("held 1"))
	a.tun.Inbound <- tuntest.Packet(a.ip, b.ip, []byte("held 2"))
	waitFor(t, time.Second, "held packets", func() bool { return capt.withhold.Load() == 0 })
	held1, held2 := capt.get(first), capt.get(first+1)
	hs := a.m.Status().Handshakes

	waitFor(t, 3*time.Second, "a rekey", func() bool { return a.m.Status().Handshakes > hs })
	// the old session still accepts in-flight packets for a moment
	evil := net.Bind(ap("198.51.100.1:1"))
	evil.WriteBatch([]conn.Message{{Buf: held1, Addr: ap("192.0.2.2:3210")}})
	waitFor(t, time.Second, "in-flight packet from the old session", func() bool { return len(b.tun.Outbound) > 0 })
	<-b.tun.Outbound

	// traffic continues across several rekeys without loss
	deadline := time.Now().Add(3 * time.Second)
	sent, got := 0, 0
	for time.Now().Before(deadline) {
		a.tun.Inbound <- tuntest.Packet(a.ip, b.ip, []byte("steady"))
		sent++
		time.Sleep(5 * time.Millisecond)
		for len(b.tun.Outbound) > 0 {
			<-b.tun.Outbound
			got++
		}
	}
	waitFor(t, time.Second, "last packets", func() bool { got += len(b.tun.Outbound); drainN(b.tun.Outbound); return got >= sent })
	if a.m.Status().Handshakes < hs+3 {
		t.Fatalf("expected several rekeys, got %d handshakes", a.m.Status().Handshakes)
	}
	// the first session is long dead: its packets are refused
	before := b.m.Status().Drops
	evil.WriteBatch([]conn.Message{{Buf: held2, Addr: ap("192.0.2.2:3210")}})
	waitFor(t, time.Second, "dead session's packet dropped", func() bool {
		d := b.m.Status().Drops
		return d["unknown_index"]+d["expired"] > before["unknown_index"]+before["expired"]
	})
	if len(b.tun.Outbound) != 0 {
		t.Fatal("packet of a dead session delivered")
	}
}

func drainN(c chan []byte) {
	for len(c) > 0 {
		<-c
	}
}

func TestNATRoaming(t *testing.T) {
	t.Parallel()
	net := bindtest.NewNetwork()
	nat := net.NewNAT(netip.MustParseAddr("203.0.113.1"))
	vps := newNode(t, net.Bind(ap("192.0.2.2:3210")), "10.254.0.2/24", nil)
	home := newNode(t, nat.Bind(ap("192.168.1.10:3210")), "10.254.0.10/24", []string{"192.0.2.2:3210"})
	ping(t, home, vps, 5*time.Second)
	ping(t, vps, home, 5*time.Second)
	pub, _ := nat.PublicAddr(ap("192.168.1.10:3210"))
	if ps, _ := vps.peerStatus(home.m.PublicKey()); ps.Endpoint != pub.String() {
		t.Fatalf("vps sees home at %q, want %v", ps.Endpoint, pub)
	}
	// the ISP hands the home router a new address
	nat.SetPublic(netip.MustParseAddr("203.0.113.77"))
	ping(t, vps, home, 5*time.Second) // the home keepalive lets the VPS follow
	ps, _ := vps.peerStatus(home.m.PublicKey())
	if ps.Roams == 0 || ps.Endpoint != netip.AddrPortFrom(netip.MustParseAddr("203.0.113.77"), pub.Port()).String() {
		t.Fatalf("vps did not follow the move: %+v", ps)
	}
	if st := vps.m.Status(); st.Peers[0].State != "up" {
		t.Fatalf("%+v", st)
	}
	if got := home.m.Status().PublicEndpoint; got == "" {
		t.Fatal("home did not learn its public endpoint from gossip")
	}
}

func TestTwoNodesBehindOneNAT(t *testing.T) {
	t.Parallel()
	net := bindtest.NewNetwork()
	nat := net.NewNAT(netip.MustParseAddr("203.0.113.1"))
	nat.Forward(3210, ap("192.168.1.11:3210"))
	vps := newNode(t, net.Bind(ap("192.0.2.2:3210")), "10.254.0.2/24", []string{"203.0.113.1:3210"})
	h1 := newNode(t, nat.Bind(ap("192.168.1.11:3210")), "10.254.0.11/24", []string{"192.0.2.2:3210"})
	h2 := newNode(t, nat.Bind(ap("192.168.1.12:3210")), "10.254.0.12/24", []string{"192.0.2.2:3210"})
	nodes := []*node{vps, h1, h2}
	for _, x := range nodes {
		for _, y := range nodes {
			if x != y {
				ping(t, x, y, 5*time.Second)
			}
		}
	}
	st := vps.m.Status()
	if len(st.Peers) != 2 {
		t.Fatalf("vps should see two distinct peers behind one address: %+v", st.Peers)
	}
	for _, p := range st.Peers {
		if a := netip.MustParseAddrPort(p.Endpoint).Addr(); a != netip.MustParseAddr("203.0.113.1") {
			t.Fatalf("peer endpoint %v", p.Endpoint)
		}
	}
}

func TestRelay(t *testing.T) {
	t.Parallel()
	net := bindtest.NewNetwork()
	aAddr, cAddr := ap("192.0.2.1:3210"), ap("192.0.2.3:3210")
	net.SetFilter(func(from, to netip.AddrPort, _ []byte) bool {
		return !(from == aAddr && to == cAddr) && !(from == cAddr && to == aAddr)
	})
	b := newNode(t, net.Bind(ap("192.0.2.2:3210")), "10.254.0.2/24", nil)
	a := newNode(t, net.Bind(aAddr), "10.254.0.1/24", []string{"192.0.2.2:3210"})
	c := newNode(t, net.Bind(cAddr), "10.254.0.3/24", []string{"192.0.2.2:3210"})
	ping(t, a, c, 5*time.Second)
	ping(t, c, a, 5*time.Second)
	for range 20 {
		a.tun.Inbound <- tuntest.Packet(a.ip, c.ip, []byte("via b"))
	}
	waitFor(t, 3*time.Second, "relayed burst", func() bool { return len(c.tun.Outbound) >= 20 })
	ps, _ := a.peerStatus(c.m.PublicKey())
	if ps.Via != b.m.PublicKey().String() || ps.State != "up" {
		t.Fatalf("A should reach C via B: %+v", ps)
	}
	if b.m.Status().Relayed == 0 {
		t.Fatal("B relayed nothing")
	}
	// B cannot read the relayed traffic: it has no A-C session
	if _, ok := b.peerStatus(b.m.PublicKey()); ok {
		t.Fatal("B lists itself")
	}
	// when the direct path heals, A and C stop relaying
	net.SetFilter(nil)
	waitFor(t, 5*time.Second, "direct path after healing", func() bool {
		ps, _ := a.peerStatus(c.m.PublicKey())
		return ps.Via == "" && ps.State == "up"
	})
	ping(t, a, c, 5*time.Second)
}

type fakeResolver struct {
	mu    sync.Mutex
	addrs map[string][]netip.Addr
	calls atomic.Int32
}

func (r *fakeResolver) set(host string, a ...netip.Addr) {
	r.mu.Lock()
	r.addrs[host] = a
	r.mu.Unlock()
}

func (r *fakeResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	r.calls.Add(1)
	r.mu.Lock()
	defer r.mu.Unlock()
	if a, ok := r.addrs[host]; ok {
		return a, nil
	}
	return nil, errors.New("no such host")
}

func TestDNSReresolved(t *testing.T) {
	t.Parallel()
	net := bindtest.NewNetwork()
	res := &fakeResolver{addrs: map[string][]netip.Addr{}}
	res.set("home.example.org", netip.MustParseAddr("192.0.2.200")) // stale address: nobody there
	b := newNode(t, net.Bind(ap("192.0.2.2:3210")), "10.254.0.2/24", nil)
	a := newNode(t, net.Bind(ap("192.0.2.1:3210")), "10.254.0.1/24", []string{"home.example.org:3210"},
		func(o *Options) { o.Resolver = res })
	if err := tryPing(a, b, 300*time.Millisecond); err == nil {
		t.Fatal("delivered to a stale address")
	}
	res.set("home.example.org", netip.MustParseAddr("192.0.2.2"))
	ping(t, a, b, 5*time.Second)
	if res.calls.Load() < 2 {
		t.Fatal("name not re-resolved")
	}
}

func TestPrefixesAndSourceCheck(t *testing.T) {
	t.Parallel()
	net := bindtest.NewNetwork()
	a := newNode(t, net.Bind(ap("192.0.2.1:3210")), "10.254.0.1/24", []string{"192.0.2.2:3210"})
	b := newNode(t, net.Bind(ap("192.0.2.2:3210")), "10.254.0.2/24", nil)
	ping(t, a, b, 5*time.Second)
	sub := netip.MustParsePrefix("10.10.0.0/16")
	if err := b.m.AddPrefix(netip.MustParsePrefix("10.10.3.4/16")); err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{netip.MustParsePrefix("10.10.0.0/16"), netip.MustParsePrefix("10.254.0.2/32")}
	waitFor(t, 3*time.Second, "routes to B and its subnet", func() bool {
		var got []netip.Prefix
		for _, r := range a.m.Routes() {
			got = append(got, r.Prefix)
		}
		return slices.Equal(got, want)
	})
	container := &node{m: b.m, tun: b.tun, ip: netip.MustParseAddr("10.10.9.9")}
	ping(t, a, container, 2*time.Second)
	ping(t, container, a, 2*time.Second)
	// B may not send from addresses it did not announce
	before := a.m.Status().Drops["source_not_allowed"]
	b.tun.Inbound <- tuntest.Packet(netip.MustParseAddr("10.99.0.1"), a.ip, []byte("spoof"))
	waitFor(t, 2*time.Second, "spoofed source dropped", func() bool { return a.m.Status().Drops["source_not_allowed"] > before })
	if err := b.m.RemovePrefix(sub); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 3*time.Second, "route withdrawn", func() bool { return len(a.m.Routes()) == 1 })
}

// TestAnnouncementSurvivesLoss: a prefix announced (a container joined)
// reaches a peer whose first copy of the news was lost, well before the
// next periodic gossip.
func TestAnnouncementSurvivesLoss(t *testing.T) {
	t.Parallel()
	net := bindtest.NewNetwork()
	slow := func(o *Options) { o.GossipInterval = time.Minute }
	a := newNode(t, net.Bind(ap("192.0.2.1:3210")), "10.254.0.1/24", []string{"192.0.2.2:3210"}, slow)
	b := newNode(t, net.Bind(ap("192.0.2.2:3210")), "10.254.0.2/24", nil, slow)
	ping(t, a, b, 5*time.Second)
	var lost atomic.Int32
	net.SetFilter(func(from, _ netip.AddrPort, pkt []byte) bool {
		if from == b.bind.Addr() && wire.Type(pkt) == wire.TypeGossip && lost.Load() == 0 {
			lost.Add(1)
			return false
		}
		return true
	})
	ctr := netip.MustParsePrefix("10.0.1.7/32")
	if err := b.m.AddPrefix(ctr); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, "A routes the container's address to B", func() bool {
		return slices.ContainsFunc(a.m.Routes(), func(r Route) bool { return r.Prefix == ctr })
	})
	if lost.Load() != 1 {
		t.Fatalf("%d gossip messages lost, want the first", lost.Load())
	}
}

func TestNoRouteCounted(t *testing.T) {
	t.Parallel()
	net := bindtest.NewNetwork()
	a := newNode(t, net.Bind(ap("192.0.2.1:3210")), "10.254.0.1/24", nil)
	a.tun.Inbound <- tuntest.Packet(a.ip, netip.MustParseAddr("10.254.0.77"), nil)
	a.tun.Inbound <- []byte{0x60, 0, 0, 0}
	waitFor(t, time.Second, "drops", func() bool {
		d := a.m.Status().Drops
		return d["no_route"] == 1 && d["not_ipv4"] == 1
	})
}

func TestNewValidates(t *testing.T) {
	t.Parallel()
	k, _ := GeneratePrivateKey()
	net := bindtest.NewNetwork()
	base := func() Options {
		return Options{PrivateKey: k, ClusterKey: []byte("k"), TUN: tuntest.New("t", 1400), Bind: net.Bind(netip.AddrPortFrom(netip.MustParseAddr("192.0.2.1"), uint16(time.Now().UnixNano()%60000+1)))}
	}
	tests := []struct {
		name string
		mod  func(*Options)
		want error
	}{
		{"no private key", func(o *Options) { o.PrivateKey = Key{} }, ErrNoPrivateKey},
		{"no cluster key", func(o *Options) { o.ClusterKey = nil }, ErrNoClusterKey},
		{"no tun", func(o *Options) { o.TUN = nil }, ErrNoDevice},
		{"peer without port", func(o *Options) { o.Peers = []string{"example.org"} }, ErrBadPeer},
		{"peer with bad port", func(o *Options) { o.Peers = []string{"example.org:x"} }, ErrBadPeer},
		{"ipv6 address", func(o *Options) { o.Addr = netip.MustParsePrefix("fd00::1/64") }, ErrBadPrefix},
		{"ok", func(o *Options) {}, nil},
	}
	for _, tt := range tests {
		o := base()
		tt.mod(&o)
		_, err := New(o)
		if !errors.Is(err, tt.want) {
			t.Errorf("%s: got %v, want %v", tt.name, err, tt.want)
		}
	}
}

func TestCloseIdempotent(t *testing.T) {
	t.Parallel()
	net := bindtest.NewNetwork()
	a := newNode(t, net.Bind(ap("192.0.2.1:3210")), "10.254.0.1/24", nil)
	for range 3 {
		if err := a.m.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.m.Run(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Run after close: %v", err)
	}
	if s := a.m.Status().State; s != "closed" {
		t.Fatalf("state %q", s)
	}
	// Run returns when its context ends
	b := net.Bind(ap("192.0.2.5:3210"))
	k, _ := GeneratePrivateKey()
	m, err := New(Options{PrivateKey: k, ClusterKey: testClusterKey, TUN: tuntest.New("x", 1400), Bind: b})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error)
	go func() { errc <- m.Run(ctx) }()
	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return")
	}
}

func TestLoadOrCreatePrivateKey(t *testing.T) {
	t.Parallel()
	path := t.TempDir() + "/sub/key"
	k1, err := LoadOrCreatePrivateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	k2, err := LoadOrCreatePrivateKey(path)
	if err != nil || k1 != k2 {
		t.Fatalf("key not persisted: %v", err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("private key mode: %v, %v; want 0600", fi, err)
	}
	if ents, _ := os.ReadDir(filepath.Dir(path)); len(ents) != 1 {
		t.Fatalf("temporaries left beside the key: %v", ents)
	}
	if _, err := ParseKey("short"); !errors.Is(err, ErrBadKey) {
		t.Fatal(err)
	}
}

func TestIdlePeerForgotten(t *testing.T) {
	t.Parallel()
	net := bindtest.NewNetwork()
	exp := func(o *Options) {
		o.PeerExpiry = 300 * time.Millisecond
		o.RekeyAfter = 200 * time.Millisecond
		o.RejectAfter = 300 * time.Millisecond
	}
	b := newNode(t, net.Bind(ap("192.0.2.2:3210")), "10.254.0.2/24", nil, exp)
	a := newNode(t, net.Bind(ap("192.0.2.1:3210")), "10.254.0.1/24", []string{"192.0.2.2:3210"}, exp)
	ping(t, a, b, 5*time.Second)
	a.m.Close() // A disappears for good
	waitFor(t, 5*time.Second, "B forgets A", func() bool { return len(b.m.Status().Peers) == 0 && len(b.m.Routes()) == 0 })
}

func TestHandshakeRateLimited(t *testing.T) {
	t.Parallel()
	net := bindtest.NewNetwork()
	b := newNode(t, net.Bind(ap("192.0.2.2:3210")), "10.254.0.2/24", nil, func(o *Options) { o.HandshakeRate = 5 })
	flood := net.Bind(ap("198.51.100.7:999"))
	send := func(pkts [][]byte) {
		msgs := make([]conn.Message, len(pkts))
		for i := range msgs {
			msgs[i] = conn.Message{Buf: pkts[i], Addr: ap("192.0.2.2:3210")}
		}
		flood.WriteBatch(msgs)
	}
	// well-formed but unauthenticated inits are refused before they cost
	// the source anything
	junk, _ := wire.HandshakeInit{Sender: 1, Noise: make([]byte, wire.InitNoiseLen)}.Append(nil)
	send(slices.Repeat([][]byte{junk}, 100))
	waitFor(t, 3*time.Second, "junk processed", func() bool { return b.m.Status().Drops["handshake_auth"] == 100 })
	if d := b.m.Status().Drops; d["handshake_rate"] != 0 {
		t.Fatalf("junk charged to the rate limit: %v", d)
	}
	// a flood of fresh, authenticated inits (a member's) from one address
	send(memberInits(t, 100, time.Now))
	waitFor(t, 3*time.Second, "flood processed", func() bool { return b.m.Status().Drops["handshake_rate"] >= 85 })
	// another source is not affected
	a := newNode(t, net.Bind(ap("192.0.2.1:3210")), "10.254.0.1/24", []string{"192.0.2.2:3210"})
	ping(t, a, b, 5*time.Second)
}

func TestKeepalivesWhenIdle(t *testing.T) {
	t.Parallel()
	net := bindtest.NewNetwork()
	a := newNode(t, net.Bind(ap("192.0.2.1:3210")), "10.254.0.1/24", []string{"192.0.2.2:3210"})
	b := newNode(t, net.Bind(ap("192.0.2.2:3210")), "10.254.0.2/24", nil)
	ping(t, a, b, 5*time.Second)
	pa, _ := a.peerStatus(b.m.PublicKey())
	pb, _ := b.peerStatus(a.m.PublicKey())
	// no traffic: keepalives (every 150ms here) must still flow both ways
	waitFor(t, 3*time.Second, "keepalives both ways", func() bool {
		qa, _ := a.peerStatus(b.m.PublicKey())
		qb, _ := b.peerStatus(a.m.PublicKey())
		return qa.RxBytes >= pa.RxBytes+3*wire.TransportMinLen && qb.RxBytes >= pb.RxBytes+3*wire.TransportMinLen
	})
}

func TestRecoversAfterLinkCut(t *testing.T) {
	t.Parallel()
	net := bindtest.NewNetwork()
	short := func(o *Options) { o.RekeyAfter = 300 * time.Millisecond; o.RejectAfter = 500 * time.Millisecond }
	nat := net.NewNAT(netip.MustParseAddr("203.0.113.1"))
	vps := newNode(t, net.Bind(ap("192.0.2.2:3210")), "10.254.0.2/24", nil, short)
	home := newNode(t, nat.Bind(ap("192.168.1.10:3210")), "10.254.0.10/24", []string{"192.0.2.2:3210"}, short)
	ping(t, home, vps, 5*time.Second)
	// cut the WAN link for longer than a session lives
	var cut atomic.Bool
	cut.Store(true)
	net.SetFilter(func(_, _ netip.AddrPort, _ []byte) bool { return !cut.Load() })
	waitFor(t, 5*time.Second, "sessions to expire", func() bool {
		ps, _ := vps.peerStatus(home.m.PublicKey())
		return ps.State != "up"
	})
	cut.Store(false)
	ping(t, vps, home, 10*time.Second)
	ping(t, home, vps, 5*time.Second)
}

// TestNoDataBeforeFinal has the initiator's TUN send to the responder
// without pause while the handshake completes: the responder has no
// session until message 3 arrives, so data sealed with the new session
// must not leave before it (it would be dropped as unknown_index, and the
// first packets of a connection, a SYN, lost for a retransmission).
func TestNoDataBeforeFinal(t *testing.T) {
	t.Parallel()
	for i := range 10 {
		net := bindtest.NewNetwork()
		b := newNode(t, net.Bind(ap("192.0.2.2:3210")), "10.254.0.2/24", nil)
		a := newNode(t, net.Bind(ap("192.0.2.1:3210")), "10.254.0.1/24", []string{"192.0.2.2:3210"})
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			pkt := tuntest.Packet(a.ip, b.ip, []byte("flood"))
			for {
				select {
				case a.tun.Inbound <- pkt:
				case <-stop:
					return
				}
			}
		}()
		waitFor(t, 5*time.Second, "a packet at b", func() bool { return len(b.tun.Outbound) > 0 })
		time.Sleep(20 * time.Millisecond)
		close(stop)
		<-done
		if d := b.m.Status().Drops["unknown_index"]; d != 0 {
			t.Fatalf("round %d: the responder dropped %d packets sealed before it had the session\n%+v", i, d, b.m.Status())
		}
		a.m.Close()
		b.m.Close()
	}
}
