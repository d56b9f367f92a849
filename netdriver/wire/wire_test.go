package wire

import (
	"bytes"
	"errors"
	"net/netip"
	"slices"
	"testing"
	"time"
)

func seedInit() []byte {
	b, _ := HandshakeInit{Sender: 0xdeadbeef, Noise: bytes.Repeat([]byte{7}, InitNoiseLen)}.Append(nil)
	return b
}

func seedResp() []byte {
	b, _ := HandshakeResp{Sender: 1, Receiver: 2, Noise: bytes.Repeat([]byte{9}, handshakeRespMin-12+5)}.Append(nil)
	return b
}

func seedFinal() []byte {
	b, _ := HandshakeFinal{Receiver: 3, Noise: bytes.Repeat([]byte{1}, handshakeFinalMin-8+9)}.Append(nil)
	return b
}

func seedTransport() []byte {
	b := make([]byte, TransportMinLen+20)
	TransportHeader{Type: TypeData, Receiver: 42, Counter: 1 << 40}.Put(b)
	return b
}

func seedGossip() []byte {
	var k1, k2 [32]byte
	k1[0], k2[31] = 1, 2
	b, err := Gossip{Entries: []GossipEntry{
		{Key: k1, Prefixes: []netip.Prefix{netip.MustParsePrefix("10.254.0.1/32"), netip.MustParsePrefix("10.10.0.0/16")}},
		{Key: k2, Endpoint: netip.MustParseAddrPort("192.0.2.7:3210")},
		{Key: k2, Endpoint: netip.MustParseAddrPort("[2001:db8::1]:9")},
	}}.Append(nil)
	if err != nil {
		panic(err)
	}
	return b
}

func seedNodeInfo() []byte {
	b, err := NodeInfo{Prefixes: []netip.Prefix{netip.MustParsePrefix("10.254.0.3/32"), netip.MustParsePrefix("fd00::/64")}}.Append(nil)
	if err != nil {
		panic(err)
	}
	return b
}

func seedRelay() []byte {
	return RelayEnvelope{Peer: 0x0102030405060708, Inner: seedTransport()}.Append(nil)
}

func TestShortInputRejected(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		seed  []byte
		min   int
		parse func([]byte) error
	}{
		{"init", seedInit(), handshakeInitLen, func(b []byte) error { _, err := ParseHandshakeInit(b); return err }},
		{"resp", seedResp(), handshakeRespMin, func(b []byte) error { _, err := ParseHandshakeResp(b); return err }},
		{"final", seedFinal(), handshakeFinalMin, func(b []byte) error { _, err := ParseHandshakeFinal(b); return err }},
		{"transport", seedTransport(), TransportMinLen, func(b []byte) error { _, err := ParseTransportHeader(b); return err }},
		{"gossip", seedGossip(), len(seedGossip()), func(b []byte) error { _, err := ParseGossip(b); return err }},
		{"nodeinfo", seedNodeInfo(), len(seedNodeInfo()), func(b []byte) error { _, err := ParseNodeInfo(b); return err }},
		{"relay", seedRelay(), PeerIDLen + 4, func(b []byte) error { _, err := ParseRelayEnvelope(b); return err }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if err := tt.parse(tt.seed); err != nil {
				t.Fatalf("seed does not parse: %v", err)
			}
			for n := 0; n < tt.min; n++ {
				if err := tt.parse(tt.seed[:n]); err == nil {
					t.Fatalf("parse of %d-byte prefix succeeded", n)
				}
			}
		})
	}
}

func TestTypeAndReserved(t *testing.T) {
	t.Parallel()
	b := seedTransport()
	b[2] = 1
	if _, err := ParseTransportHeader(b); !errors.Is(err, ErrReserved) {
		t.Fatalf("reserved byte accepted: %v", err)
	}
	if Type(b) != 0 {
		t.Fatal("Type accepted non-zero reserved byte")
	}
	b = seedInit()
	b[0] = TypeData
	if _, err := ParseHandshakeInit(b); !errors.Is(err, ErrType) {
		t.Fatalf("wrong type accepted: %v", err)
	}
}

func TestIPv4Addrs(t *testing.T) {
	t.Parallel()
	pkt := make([]byte, 20)
	pkt[0] = 0x45
	copy(pkt[12:], []byte{10, 0, 0, 1, 10, 0, 0, 2})
	if s, ok := IPv4Src(pkt); !ok || s != netip.MustParseAddr("10.0.0.1") {
		t.Fatalf("src %v %v", s, ok)
	}
	if d, ok := IPv4Dst(pkt); !ok || d != netip.MustParseAddr("10.0.0.2") {
		t.Fatalf("dst %v %v", d, ok)
	}
	if _, ok := IPv4Dst(pkt[:19]); ok {
		t.Fatal("short packet accepted")
	}
	pkt[0] = 0x60
	if _, ok := IPv4Dst(pkt); ok {
		t.Fatal("IPv6 accepted as IPv4")
	}
}

func FuzzHandshakeInit(f *testing.F) {
	f.Add(seedInit())
	f.Add([]byte{1, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseHandshakeInit(b)
		if err != nil {
			if len(b) == handshakeInitLen && Type(b) == TypeHandshakeInit {
				t.Fatalf("valid-looking init rejected: %v", err)
			}
			return
		}
		out, err := m.Append(nil)
		if err != nil || !bytes.Equal(out, b) {
			t.Fatalf("round trip: %v %x != %x", err, out, b)
		}
	})
}

func TestTimestamp(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 1, 23, 30, 0, 123456789, time.UTC)
	b := TimestampOf(now).Append(nil)
	if len(b) != TimestampLen || b[0] != 0x40 {
		t.Fatalf("encoding %x", b)
	}
	ts, err := ParseTimestamp(b)
	if err != nil || !ts.Time().Equal(now) {
		t.Fatalf("round trip %v %v", ts.Time(), err)
	}
	if a, b := TimestampOf(now).Append(nil), TimestampOf(now.Add(time.Nanosecond)).Append(nil); bytes.Compare(a, b) >= 0 {
		t.Fatal("encoding does not sort by time")
	}
	bad := [][]byte{nil, b[:11], append(slices.Clone(b), 0), make([]byte, 12), {0x40, 0, 0, 0, 0, 0, 0, 0, 0x3b, 0x9a, 0xca, 0}, {0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}}
	for _, x := range bad {
		if _, err := ParseTimestamp(x); err == nil {
			t.Errorf("%x accepted", x)
		}
	}
}

func FuzzTimestamp(f *testing.F) {
	f.Add(TimestampOf(time.Unix(1764631800, 5)).Append(nil))
	f.Add([]byte{0x40})
	f.Fuzz(func(t *testing.T, b []byte) {
		ts, err := ParseTimestamp(b)
		if err != nil {
			return
		}
		if out := ts.Append(nil); !bytes.Equal(out, b) {
			t.Fatalf("round trip %x != %x", out, b)
		}
		if TimestampOf(ts.Time()) != ts {
			t.Fatalf("time round trip %v", ts)
		}
	})
}

func FuzzHandshakeResp(f *testing.F) {
	f.Add(seedResp())
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseHandshakeResp(b)
		if err != nil {
			return
		}
		if len(b) < handshakeRespMin {
			t.Fatal("short input accepted")
		}
		out, err := m.Append(nil)
		if err != nil || !bytes.Equal(out, b) {
			t.Fatalf("round trip: %v", err)
		}
	})
}

func FuzzHandshakeFinal(f *testing.F) {
	f.Add(seedFinal())
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseHandshakeFinal(b)
		if err != nil {
			return
		}
		if len(b) < handshakeFinalMin {
			t.Fatal("short input accepted")
		}
		out, err := m.Append(nil)
		if err != nil || !bytes.Equal(out, b) {
			t.Fatalf("round trip: %v", err)
		}
	})
}

func FuzzTransportHeader(f *testing.F) {
	f.Add(seedTransport())
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := ParseTransportHeader(b)
		if err != nil {
			return
		}
		if len(b) < TransportMinLen {
			t.Fatal("short input accepted")
		}
		out := make([]byte, HeaderLen)
		h.Put(out)
		if !bytes.Equal(out, b[:HeaderLen]) {
			t.Fatalf("round trip %x != %x", out, b[:HeaderLen])
		}
	})
}

func FuzzGossip(f *testing.F) {
	f.Add(seedGossip())
	f.Add([]byte{1, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		g, err := ParseGossip(b)
		if err != nil {
			return
		}
		out, err := g.Append(nil)
		if err != nil || !bytes.Equal(out, b) {
			t.Fatalf("round trip: %v\n%x\n%x", err, out, b)
		}
		if _, err := ParseGossip(b[:len(b)-1]); err == nil {
			t.Fatal("truncated gossip accepted")
		}
	})
}

func FuzzNodeInfo(f *testing.F) {
	f.Add(seedNodeInfo())
	f.Add([]byte{1, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		n, err := ParseNodeInfo(b)
		if err != nil {
			return
		}
		out, err := n.Append(nil)
		if err != nil || !bytes.Equal(out, b) {
			t.Fatalf("round trip: %v\n%x\n%x", err, out, b)
		}
		if _, err := ParseNodeInfo(b[:len(b)-1]); err == nil {
			t.Fatal("truncated node info accepted")
		}
	})
}

func FuzzRelayEnvelope(f *testing.F) {
	f.Add(seedRelay())
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := ParseRelayEnvelope(b)
		if err != nil {
			return
		}
		if len(b) < PeerIDLen+4 {
			t.Fatal("short input accepted")
		}
		if out := e.Append(nil); !bytes.Equal(out, b) {
			t.Fatal("round trip")
		}
	})
}
