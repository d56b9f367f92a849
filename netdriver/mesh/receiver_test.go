package mesh

import (
	"bytes"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/homeswarm/homeswarm/netdriver/conn/bindtest"
	"github.com/homeswarm/homeswarm/netdriver/tun/tuntest"
	"github.com/homeswarm/homeswarm/netdriver/wire"
)

// recorder is a Receiver that takes the packets to one address and keeps
// them until Flush, as the container switch does.
type recorder struct {
	take netip.Addr

	mu           sync.Mutex
	held, got    [][]byte
	flushes      int
	emptyFlushes int
}

func (r *recorder) Deliver(pkt []byte) bool {
	if dst, _ := wire.IPv4Dst(pkt); dst != r.take {
		return false
	}
	r.mu.Lock()
	r.held = append(r.held, append([]byte(nil), pkt...))
	r.mu.Unlock()
	return true
}

func (r *recorder) Flush() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.flushes++
	if len(r.held) == 0 {
		r.emptyFlushes++
	}
	r.got = append(r.got, r.held...)
	r.held = nil
}

func (r *recorder) state() (got [][]byte, flushes, empty int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([][]byte(nil), r.got...), r.flushes, r.emptyFlushes
}

// TestReceiver: packets the Receiver takes reach it and not TUN, the rest
// reach TUN, and Flush follows only batches in which it took a packet.
func TestReceiver(t *testing.T) {
	t.Parallel()
	net := bindtest.NewNetwork()
	container := netip.MustParseAddr("10.10.9.9")
	r := &recorder{take: container}
	a := newNode(t, net.Bind(ap("192.0.2.1:3210")), "10.254.0.1/24", []string{"192.0.2.2:3210"})
	b := newNode(t, net.Bind(ap("192.0.2.2:3210")), "10.254.0.2/24", nil, func(o *Options) { o.Receiver = r })
	if err := b.m.AddPrefix(netip.MustParsePrefix("10.10.0.0/16")); err != nil {
		t.Fatal(err)
	}
	ping(t, a, b, 5*time.Second) // handshakes, gossip, a packet for TUN
	if _, flushes, _ := r.state(); flushes != 0 {
		t.Fatalf("%d flushes before any packet for the receiver", flushes)
	}
	pkt := tuntest.Packet(a.ip, container, []byte("for a container"))
	n := 0
	waitFor(t, 5*time.Second, "packet at the receiver", func() bool {
		if n++; n%10 == 1 {
			a.tun.Inbound <- pkt
		}
		got, _, _ := r.state()
		return len(got) > 0
	})
	got, flushes, empty := r.state()
	if !bytes.Equal(got[0], pkt) || flushes == 0 || empty != 0 {
		t.Fatalf("received % x after %d flushes (%d empty)", got[0], flushes, empty)
	}
	select {
	case p := <-b.tun.Outbound:
		if bytes.Equal(p, pkt) {
			t.Fatal("packet taken by the receiver also written to TUN")
		}
	case <-time.After(100 * time.Millisecond):
	}
	ping(t, a, b, 2*time.Second)
	if _, _, empty := r.state(); empty != 0 {
		t.Fatalf("%d flushes after batches the receiver took nothing from", empty)
	}
}
