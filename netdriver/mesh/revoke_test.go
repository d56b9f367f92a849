package mesh

import (
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/homeswarm/homeswarm/netdriver/conn/bindtest"
	"github.com/homeswarm/homeswarm/netdriver/tun/tuntest"
)

// mustNotPing fails if a packet from a reaches b within d.
func mustNotPing(t *testing.T, a, b *node, d time.Duration) {
	t.Helper()
	if err := tryPing(a, b, d); err == nil {
		t.Fatalf("%v reached %v, which refuses it", a.ip, b.ip)
	}
}

func mustKey(t *testing.T) Key {
	t.Helper()
	k, err := GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func withBookAt(path string) func(*Options) { return func(o *Options) { o.AddrBookFile = path } }

// TestRevokedNodeStaysOut (issue 12, item 4): a node taken out of the
// cluster is refused by each member that lists it in MESH_REVOKED — by key,
// or by mesh address, which also keeps it out when it comes back with a
// new key at its old address — and no member learns it from the gossip of
// one that has not revoked it yet.
func TestRevokedNodeStaysOut(t *testing.T) {
	t.Parallel()
	net := bindtest.NewNetwork()
	dir := t.TempDir()
	ak, bk, ck := mustKey(t), mustKey(t), mustKey(t)
	bookA, bookB := filepath.Join(dir, "a.json"), filepath.Join(dir, "b.json")
	a := newNode(t, net.Bind(ap("192.0.2.1:3210")), "10.254.0.1/24", nil, withKey(ak), withBookAt(bookA))
	b := newNode(t, net.Bind(ap("192.0.2.2:3210")), "10.254.0.2/24", []string{"192.0.2.1:3210"}, withKey(bk), withBookAt(bookB))
	c := newNode(t, net.Bind(ap("192.0.2.3:3210")), "10.254.0.3/24", []string{"192.0.2.1:3210"}, withKey(ck))
	ping(t, c, a, 5*time.Second)
	ping(t, c, b, 5*time.Second)
	ping(t, b, a, 5*time.Second)

	// The admin revokes C: on A by its mesh address, on B by its key.
	// Each member restarts with the setting; C keeps trying.
	a.m.Close()
	b.m.Close()
	a = newNode(t, net.Bind(ap("192.0.2.11:3210")), "10.254.0.1/24", nil, withKey(ak), withBookAt(bookA),
		func(o *Options) { o.RevokedAddrs = []netip.Addr{netip.MustParseAddr("10.254.0.3")} })
	b = newNode(t, net.Bind(ap("192.0.2.12:3210")), "10.254.0.2/24", []string{"192.0.2.11:3210", "192.0.2.3:3210"}, withKey(bk), withBookAt(bookB),
		func(o *Options) { o.RevokedKeys = []Key{ck.PublicKey()} })
	ping(t, b, a, 5*time.Second)
	c.m.Close()
	c = newNode(t, net.Bind(ap("192.0.2.13:3210")), "10.254.0.3/24", []string{"192.0.2.11:3210", "192.0.2.12:3210"}, withKey(ck))
	mustNotPing(t, c, a, time.Second)
	mustNotPing(t, c, b, time.Second)
	for _, n := range []*node{a, b} {
		st := n.m.Status()
		if st.Drops["revoked"] == 0 || len(st.Revoked) != 1 {
			t.Fatalf("node %v: revoked drops %d, revoked list %v", n.ip, st.Drops["revoked"], st.Revoked)
		}
		if _, ok := n.peerStatus(ck.PublicKey()); ok {
			t.Fatalf("node %v keeps the revoked node as a peer", n.ip)
		}
	}

	// C comes back with a new key at its old address: A still refuses it
	// (the address stays revoked, and bound to C's old key in A's book).
	c.m.Close()
	c2 := newNode(t, net.Bind(ap("192.0.2.23:3210")), "10.254.0.3/24", []string{"192.0.2.11:3210"})
	mustNotPing(t, c2, a, time.Second)

	// D, a member that has not revoked C, talks with C and gossips about
	// it; B (which revoked C's key) never learns C from D's gossip.
	c.m.Close()
	c3 := newNode(t, net.Bind(ap("192.0.2.33:3210")), "10.254.0.3/24", nil, withKey(ck))
	d := newNode(t, net.Bind(ap("192.0.2.4:3210")), "10.254.0.4/24", []string{"192.0.2.12:3210", "192.0.2.33:3210"})
	ping(t, d, c3, 5*time.Second)
	ping(t, d, b, 5*time.Second)
	before := b.m.Status().Drops["revoked"]
	waitFor(t, 3*time.Second, "D's gossip about C reaches B", func() bool { return b.m.Status().Drops["revoked"] > before })
	if _, ok := b.peerStatus(ck.PublicKey()); ok {
		t.Fatal("B learned the revoked node from gossip")
	}
}

// TestRevokedSelfRefused: a node whose own key or address is revoked says
// so at start instead of knocking at every door.
func TestRevokedSelfRefused(t *testing.T) {
	t.Parallel()
	k := mustKey(t)
	net := bindtest.NewNetwork()
	o := Options{PrivateKey: k, ClusterKey: testClusterKey, Addr: netip.MustParsePrefix("10.254.0.5/24"),
		TUN: tuntest.New("mesh-r", DefaultMTU), Bind: net.Bind(ap("192.0.2.5:3210")), RevokedKeys: []Key{k.PublicKey()}}
	if _, err := New(o); err == nil {
		t.Fatal("New accepted a node whose own key is revoked")
	}
	o.RevokedKeys, o.RevokedAddrs = nil, []netip.Addr{netip.MustParseAddr("10.254.0.5")}
	if _, err := New(o); err == nil {
		t.Fatal("New accepted a node whose own address is revoked")
	}
}

// TestClusterKeyRotation (issue 12, item 4): the cluster key is replaced
// one node at a time, with MESH_KEY_ACCEPT as the overlap, and the cluster
// stays connected at every step; at the end a node that holds only the
// old key (a revoked node that made itself a new identity) is refused.
func TestClusterKeyRotation(t *testing.T) {
	t.Parallel()
	oldKey, newKey := testClusterKey, []byte("a second cluster key for rotation tests")
	net := bindtest.NewNetwork()
	ak, bk := mustKey(t), mustKey(t)
	port := 0
	next := func() netip.AddrPort {
		port++
		return netip.AddrPortFrom(netip.MustParseAddr("192.0.2.100"), uint16(4000+port))
	}
	keys := func(primary []byte, accept ...[]byte) func(*Options) {
		return func(o *Options) { o.ClusterKey, o.AcceptClusterKeys = primary, accept }
	}
	aEP := next()
	a := newNode(t, net.Bind(aEP), "10.254.0.1/24", nil, withKey(ak), keys(oldKey))
	b := newNode(t, net.Bind(next()), "10.254.0.2/24", []string{aEP.String()}, withKey(bk), keys(oldKey))
	ping(t, b, a, 5*time.Second)
	// Each step restarts one node with its new settings; the other is
	// still at the step before.
	steps := []struct {
		name    string
		a       bool // restart A (else B)
		primary []byte
		accept  [][]byte
	}{
		{"1: A accepts the new key", true, oldKey, [][]byte{newKey}},
		{"1: B accepts the new key", false, oldKey, [][]byte{newKey}},
		{"2: A proves the new key, accepts the old", true, newKey, [][]byte{oldKey}},
		{"2: B proves the new key, accepts the old", false, newKey, [][]byte{oldKey}},
		{"3: A drops the old key", true, newKey, nil},
		{"3: B drops the old key", false, newKey, nil},
	}
	bPrimary, bAccept := oldKey, [][]byte(nil)
	for _, s := range steps {
		if s.a {
			a.m.Close()
			aEP = next()
			a = newNode(t, net.Bind(aEP), "10.254.0.1/24", nil, withKey(ak), keys(s.primary, s.accept...))
		} else {
			bPrimary, bAccept = s.primary, s.accept
		}
		// B restarts too when A moved: it dials A's new endpoint
		b.m.Close()
		b = newNode(t, net.Bind(next()), "10.254.0.2/24", []string{aEP.String()}, withKey(bk), keys(bPrimary, bAccept...))
		if err := tryPing(b, a, 5*time.Second); err != nil {
			t.Fatalf("step %s: %v", s.name, err)
		}
		if err := tryPing(a, b, 5*time.Second); err != nil {
			t.Fatalf("step %s: %v", s.name, err)
		}
	}
	before := a.m.Status().Drops["handshake_auth"]
	m := newNode(t, net.Bind(next()), "10.254.0.9/24", []string{aEP.String()}, keys(oldKey))
	mustNotPing(t, m, a, time.Second)
	if a.m.Status().Drops["handshake_auth"] == before {
		t.Fatal("a node with only the old key was not refused as handshake_auth")
	}
}

// TestRehandshakeAfterPeerRestart: the VPS (no peers of its own) restarts
// and forgets every session; a home node that sends to it on the old
// session starts a new handshake once its data goes unanswered for
// KeepaliveInterval/2 + HandshakeTimeout, instead of after a whole path
// timeout (2×KeepaliveInterval + HandshakeTimeout) of silence. Before,
// every home node was cut off for up to 45 s after a VPS plugin restart.
func TestRehandshakeAfterPeerRestart(t *testing.T) {
	t.Parallel()
	net := bindtest.NewNetwork()
	slow := func(o *Options) { o.KeepaliveInterval, o.HandshakeTimeout = 2*time.Second, 200*time.Millisecond }
	vk := mustKey(t)
	vEP := ap("192.0.2.1:3210")
	v := newNode(t, net.Bind(vEP), "10.254.0.1/24", nil, withKey(vk), slow)
	h := newNode(t, net.Bind(ap("192.0.2.2:3210")), "10.254.0.2/24", []string{vEP.String()}, slow)
	ping(t, h, v, 5*time.Second)
	time.Sleep(300 * time.Millisecond) // both sides idle on a confirmed session
	v.m.Close()
	v = newNode(t, net.Bind(vEP), "10.254.0.1/24", nil, withKey(vk), slow)
	start := time.Now()
	ping(t, h, v, 10*time.Second)
	// new-handshake threshold 1.2 s, path timeout 4.2 s
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("the home node reached the restarted VPS after %v; want well under the 4.2 s path timeout", d)
	}
	t.Logf("reached the restarted peer after %v", time.Since(start).Round(time.Millisecond))
}
