package bindtest

import (
	"net/netip"
	"testing"

	"github.com/homeswarm/homeswarm/netdriver/conn"
)

func recv(t *testing.T, b *Bind) (string, netip.AddrPort, bool) {
	t.Helper()
	select {
	case d := <-b.in:
		return string(d.b), d.src, true
	default:
		return "", netip.AddrPort{}, false
	}
}

func TestNAT(t *testing.T) {
	t.Parallel()
	ap := netip.MustParseAddrPort
	n := NewNetwork()
	nat := n.NewNAT(netip.MustParseAddr("203.0.113.1"))
	vps := n.Bind(ap("192.0.2.2:1"))
	other := n.Bind(ap("192.0.2.3:1"))
	h1 := nat.Bind(ap("192.168.1.1:1"))
	h2 := nat.Bind(ap("192.168.1.2:1"))

	send := func(from *Bind, to netip.AddrPort, s string) {
		from.WriteBatch([]conn.Message{{Buf: []byte(s), Addr: to}})
	}
	// unsolicited inbound is dropped
	send(vps, ap("203.0.113.1:40001"), "x")
	if _, _, ok := recv(t, h1); ok {
		t.Fatal("unsolicited datagram passed the NAT")
	}
	send(h1, vps.Addr(), "out")
	s, src, ok := recv(t, vps)
	if !ok || s != "out" || src.Addr() != netip.MustParseAddr("203.0.113.1") {
		t.Fatalf("%q from %v", s, src)
	}
	send(vps, src, "back")
	if s, _, ok := recv(t, h1); !ok || s != "back" {
		t.Fatal("reply did not pass the NAT")
	}
	// port restricted: another host may not use the mapping
	send(other, src, "intruder")
	if _, _, ok := recv(t, h1); ok {
		t.Fatal("restricted NAT let a stranger in")
	}
	// LAN traffic is direct, hairpin is not supported
	send(h1, h2.Addr(), "lan")
	if s, from, ok := recv(t, h2); !ok || s != "lan" || from != h1.Addr() {
		t.Fatal("LAN datagram lost")
	}
	send(h2, src, "hairpin")
	if _, _, ok := recv(t, h1); ok {
		t.Fatal("hairpin delivered")
	}
	// a new public address keeps the port
	nat.SetPublic(netip.MustParseAddr("203.0.113.9"))
	send(h1, vps.Addr(), "moved")
	if _, src2, ok := recv(t, vps); !ok || src2 != netip.AddrPortFrom(netip.MustParseAddr("203.0.113.9"), src.Port()) {
		t.Fatalf("after move: %v", src2)
	}
	// port forwarding admits anyone
	nat.Forward(3210, h2.Addr())
	send(other, ap("203.0.113.9:3210"), "fwd")
	if s, _, ok := recv(t, h2); !ok || s != "fwd" {
		t.Fatal("forwarded port closed")
	}
}
