package mesh

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/homeswarm/homeswarm/netdriver/conn/bindtest"
	"github.com/homeswarm/homeswarm/netdriver/tun/tuntest"
)

// routeOwner returns the public key n routes prefix to, or "".
func (n *node) routeOwner(prefix string) string {
	pf := netip.MustParsePrefix(prefix)
	for _, r := range n.m.Routes() {
		if r.Prefix == pf {
			return r.Peer
		}
	}
	return ""
}

func (n *node) announces(k Key, prefix string) bool {
	ps, ok := n.peerStatus(k)
	return ok && slices.Contains(ps.Prefixes, prefix)
}

func withKey(k Key) func(*Options) { return func(o *Options) { o.PrivateKey = k } }

// TestMemberCannotTakeMeshAddress: a third member announcing another
// node's mesh address (issue 12, item 1) takes nothing: the address stays
// bound to the key that announced it first, across a restart, and the
// member cannot send as it.
func TestMemberCannotTakeMeshAddress(t *testing.T) {
	t.Parallel()
	net := bindtest.NewNetwork()
	book := filepath.Join(t.TempDir(), "addresses.json")
	ak, err := GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	withBook := func(o *Options) { o.AddrBookFile = book }
	a := newNode(t, net.Bind(ap("192.0.2.1:3210")), "10.254.0.1/24", nil, withKey(ak), withBook)
	b := newNode(t, net.Bind(ap("192.0.2.2:3210")), "10.254.0.2/24", []string{"192.0.2.1:3210"})
	ping(t, b, a, 5*time.Second)
	c := newNode(t, net.Bind(ap("192.0.2.3:3210")), "10.254.0.3/24", []string{"192.0.2.1:3210"})
	ping(t, c, a, 5*time.Second)
	if err := c.m.AddPrefix(netip.MustParsePrefix("10.254.0.2/32")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 3*time.Second, "A hears C's claim", func() bool { return a.announces(c.m.PublicKey(), "10.254.0.2/32") })
	time.Sleep(300 * time.Millisecond) // a few gossip rounds and timer ticks
	if o := a.routeOwner("10.254.0.2/32"); o != b.m.PublicKey().String() {
		t.Fatalf("B's mesh address routed to %q, want B", o)
	}
	ping(t, a, b, 5*time.Second)
	ps, _ := a.peerStatus(c.m.PublicKey())
	if !slices.Contains(ps.Refused, "10.254.0.2/32") || a.m.Status().RefusedClaims == 0 {
		t.Fatalf("refused claim not shown: %+v", ps)
	}
	// C cannot send as B either
	before := a.m.Status().Drops["source_not_allowed"]
	c.tun.Inbound <- tuntest.Packet(netip.MustParseAddr("10.254.0.2"), a.ip, []byte("as B"))
	waitFor(t, 3*time.Second, "C's packet as B dropped", func() bool { return a.m.Status().Drops["source_not_allowed"] > before })

	// The binding is on disk: A restarted, with B away and C back first,
	// still refuses C's claim.
	data, err := os.ReadFile(book)
	if err != nil || !strings.Contains(string(data), b.m.PublicKey().String()) {
		t.Fatalf("address book %q: %v", data, err)
	}
	a.m.Close()
	b.m.Close()
	a2 := newNode(t, net.Bind(ap("192.0.2.11:3210")), "10.254.0.1/24", []string{"192.0.2.3:3210"}, withKey(ak), withBook)
	ping(t, a2, c, 5*time.Second)
	waitFor(t, 3*time.Second, "A hears C's claim again", func() bool { return a2.announces(c.m.PublicKey(), "10.254.0.2/32") })
	time.Sleep(300 * time.Millisecond)
	if o := a2.routeOwner("10.254.0.2/32"); o != "" {
		t.Fatalf("after a restart B's mesh address is routed to %q", o)
	}
}

// TestContainerAddressMovesOnlyWhenReleased: a container address moves
// from B to C only once B no longer announces it or is unreachable; while
// B holds it, C's claim (a member's hijack) takes nothing, and a later
// claim by B does not take it back from C.
func TestContainerAddressMovesOnlyWhenReleased(t *testing.T) {
	t.Parallel()
	net := bindtest.NewNetwork()
	a := newNode(t, net.Bind(ap("192.0.2.1:3210")), "10.254.0.1/24", nil)
	b := newNode(t, net.Bind(ap("192.0.2.2:3210")), "10.254.0.2/24", []string{"192.0.2.1:3210"})
	c := newNode(t, net.Bind(ap("192.0.2.3:3210")), "10.254.0.3/24", []string{"192.0.2.1:3210"})
	ping(t, b, a, 5*time.Second)
	ping(t, c, a, 5*time.Second)
	const moved = "10.0.1.5/32"
	mp := netip.MustParsePrefix(moved)
	bk, ck := b.m.PublicKey().String(), c.m.PublicKey().String()
	if err := b.m.AddPrefix(mp); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 3*time.Second, "address routed to B", func() bool { return a.routeOwner(moved) == bk })
	if err := c.m.AddPrefix(mp); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 3*time.Second, "A hears C's claim", func() bool { return a.announces(c.m.PublicKey(), moved) })
	for range 10 {
		time.Sleep(50 * time.Millisecond)
		if o := a.routeOwner(moved); o != bk {
			t.Fatalf("C took the address while B holds it: routed to %s", o)
		}
	}
	// B withdraws it (its container left): it moves to C
	if err := b.m.RemovePrefix(mp); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 3*time.Second, "address routed to C", func() bool { return a.routeOwner(moved) == ck })
	// B announcing it again does not take it back
	if err := b.m.AddPrefix(mp); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 3*time.Second, "A hears B's claim", func() bool { return a.announces(b.m.PublicKey(), moved) })
	for range 10 {
		time.Sleep(50 * time.Millisecond)
		if o := a.routeOwner(moved); o != ck {
			t.Fatalf("address went back to %s", o)
		}
	}
	// C dies without withdrawing: once it is unreachable, B has it
	c.m.Close()
	waitFor(t, 5*time.Second, "address back to B after C died", func() bool { return a.routeOwner(moved) == bk })
}
