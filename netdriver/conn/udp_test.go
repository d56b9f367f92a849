package conn_test

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/homeswarm/homeswarm/netdriver/conn"
)

func TestUDPBatch(t *testing.T) {
	t.Parallel()
	a, b := mustListen(t, conn.Listen), mustListen(t, conn.Listen)
	if a.LocalPort() == 0 || a.BatchSize() < 2 {
		t.Fatalf("port %d batch %d", a.LocalPort(), a.BatchSize())
	}
	to := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), b.LocalPort())
	const n = 100 // more than one batch
	out := make([]conn.Message, n)
	for i := range out {
		out[i] = conn.Message{Buf: fmt.Appendf(nil, "datagram %03d", i), Addr: to}
	}
	if err := a.WriteBatch(out); err != nil {
		t.Fatal(err)
	}
	in := make([]conn.Message, 16)
	for i := range in {
		in[i].Buf = make([]byte, 2048)
	}
	got := 0
	for got < n {
		k, err := b.ReadBatch(in)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range in[:k] {
			if want := fmt.Sprintf("datagram %03d", got); string(m.Buf[:m.N]) != want {
				t.Fatalf("got %q want %q", m.Buf[:m.N], want)
			}
			if m.Addr != netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), a.LocalPort()) {
				t.Fatalf("source %v", m.Addr)
			}
			got++
		}
	}
	if err := a.WriteBatch([]conn.Message{{Buf: []byte("x")}}); !errors.Is(err, conn.ErrNoAddr) {
		t.Fatalf("write without address: %v", err)
	}
	// Close unblocks a pending read
	errc := make(chan error, 1)
	go func() { _, err := b.ReadBatch(in); errc <- err }()
	time.Sleep(10 * time.Millisecond)
	b.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("read after close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not unblock ReadBatch")
	}
}

func BenchmarkUDPWriteBatch(b *testing.B) {
	a, _ := conn.Listen(0)
	defer a.Close()
	sink, _ := conn.Listen(0)
	defer sink.Close()
	to := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), sink.LocalPort())
	msgs := make([]conn.Message, 32)
	for i := range msgs {
		msgs[i] = conn.Message{Buf: make([]byte, 1424), Addr: to}
	}
	go func() {
		in := make([]conn.Message, 32)
		for i := range in {
			in[i].Buf = make([]byte, 2048)
		}
		for {
			if _, err := sink.ReadBatch(in); err != nil {
				return
			}
		}
	}()
	b.SetBytes(32 * 1424)
	b.ReportAllocs()
	for b.Loop() {
		if err := a.WriteBatch(msgs); err != nil {
			b.Fatal(err)
		}
	}
}

// TestUDPMixedRuns: runs of equal sizes (sent as one GSO send where the
// kernel can) broken by shorter and longer datagrams and by a second
// destination arrive whole and in order at each receiver.
// Both read paths: with UDP_GRO (the runs arrive coalesced) and without.
func TestUDPMixedRuns(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name   string
		listen func(int) (*conn.UDP, error)
	}{{"gro", conn.Listen}, {"nogro", conn.ListenNoGRO}} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			testMixedRuns(t, c.listen)
		})
	}
}

func testMixedRuns(t *testing.T, listen func(int) (*conn.UDP, error)) {
	a := mustListen(t, conn.Listen)
	var rx [2]*conn.UDP
	var to [2]netip.AddrPort
	for i := range rx {
		rx[i] = mustListen(t, listen)
		to[i] = netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), rx[i].LocalPort())
	}
	sizes := []int{1400, 1400, 1400, 700, 1400, 1400, 1500, 1500, 64, 1400}
	var out []conn.Message
	var want [2][]string
	for i := 0; i < 150; i++ {
		d := 0
		if i%40 >= 30 {
			d = 1
		}
		buf := make([]byte, sizes[i%len(sizes)])
		copy(buf, fmt.Sprintf("d%d #%03d", d, i))
		buf[len(buf)-1] = byte(i)
		out = append(out, conn.Message{Buf: buf, Addr: to[d]})
		want[d] = append(want[d], string(buf))
	}
	if err := a.WriteBatch(out); err != nil {
		t.Fatal(err)
	}
	in := make([]conn.Message, 16)
	for i := range in {
		in[i].Buf = make([]byte, 2048)
	}
	for d := range rx {
		for got := 0; got < len(want[d]); {
			k, err := rx[d].ReadBatch(in)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range in[:k] {
				if string(m.Buf[:m.N]) != want[d][got] {
					t.Fatalf("receiver %d datagram %d: %d bytes %q…, want %d bytes %q…", d, got, m.N, m.Buf[:8], len(want[d][got]), want[d][got][:8])
				}
				got++
			}
		}
	}
}

// TestUDPCoalescedReads: a GSO send of many datagrams to a UDP_GRO reader
// arrives as coalesced messages, which ReadBatch hands out one datagram per
// message, in order, across calls whose batch is smaller than a message,
// with each datagram's buffer capped at its own length; datagrams from two
// senders stay apart.
func TestUDPCoalescedReads(t *testing.T) {
	t.Parallel()
	rx := mustListen(t, conn.Listen)
	to := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), rx.LocalPort())
	var tx [2]*conn.UDP
	for i := range tx {
		tx[i] = mustListen(t, conn.Listen)
	}
	const perSender = 3 * 64
	var want [2][]string
	for s := range tx {
		var out []conn.Message
		for i := range perSender {
			size := 1432
			if i%64 == 63 {
				size = 200 // a short datagram ends each GSO run
			}
			buf := make([]byte, size)
			copy(buf, fmt.Sprintf("s%d #%03d", s, i))
			buf[size-1] = byte(i)
			out = append(out, conn.Message{Buf: buf, Addr: to})
			want[s] = append(want[s], string(buf))
		}
		if err := tx[s].WriteBatch(out); err != nil {
			t.Fatal(err)
		}
	}
	in := make([]conn.Message, 7) // smaller than a coalesced message
	var got [2]int
	for got[0]+got[1] < 2*perSender {
		k, err := rx.ReadBatch(in)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range in[:k] {
			s := -1
			for i := range tx {
				if m.Addr.Port() == tx[i].LocalPort() {
					s = i
				}
			}
			if s < 0 {
				t.Fatalf("datagram from %v", m.Addr)
			}
			if got[s] >= perSender || string(m.Buf[:m.N]) != want[s][got[s]] {
				t.Fatalf("sender %d datagram %d: %d bytes %q…", s, got[s], m.N, m.Buf[:min(8, m.N)])
			}
			if cap(m.Buf) != m.N {
				t.Fatalf("datagram buffer has room for %d bytes past its end", cap(m.Buf)-m.N)
			}
			got[s]++
		}
	}
	if c := rx.Coalesced(); c < perSender {
		t.Fatalf("%d of %d datagrams arrived coalesced: UDP_GRO reads are not in use", c, 2*perSender)
	}
}

// mustListen opens a socket on a free port, closed when the test ends.
func mustListen(t *testing.T, listen func(int) (*conn.UDP, error)) *conn.UDP {
	t.Helper()
	u, err := listen(0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { u.Close() })
	return u
}
