package mesh

import (
	"fmt"
	"testing"
	"time"

	"github.com/flynn/noise"

	"github.com/homeswarm/homeswarm/netdriver/conn"
	"github.com/homeswarm/homeswarm/netdriver/conn/bindtest"
	"github.com/homeswarm/homeswarm/netdriver/tun/tuntest"
	"github.com/homeswarm/homeswarm/netdriver/wire"
)

var benchSizes = []int{64, 512, 1392}

func benchKeypairs(b *testing.B) (*keypair, *keypair) {
	b.Helper()
	k1 := noise.UnsafeNewCipherState(cipherSuite, [32]byte{1}, 0)
	k2 := noise.UnsafeNewCipherState(cipherSuite, [32]byte{2}, 0)
	s, err := newKeypair(k1, k2, 0, 1<<62)
	if err != nil {
		b.Fatal(err)
	}
	r, err := newKeypair(k2, k1, 0, 1<<62)
	if err != nil {
		b.Fatal(err)
	}
	return s, r
}

// BenchmarkSealOpen measures the transport crypto of one packet in place:
// seal, replay check, open, as the data path does it.
func BenchmarkSealOpen(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(fmt.Sprintf("%dB", size), func(b *testing.B) {
			send, recv := benchKeypairs(b)
			var ss, rs scratch
			buf := make([]byte, bufSize)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				out := send.seal(&ss, wire.TypeData, buf, size)
				h, _ := wire.ParseTransportHeader(out)
				if !recv.replayCheck(h.Counter) {
					b.Fatal("replay")
				}
				if _, err := recv.open(&rs, out, h.Counter); err != nil {
					b.Fatal(err)
				}
				recv.replayAccept(h.Counter)
			}
		})
	}
}

// BenchmarkSeal measures sealing alone.
func BenchmarkSeal(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(fmt.Sprintf("%dB", size), func(b *testing.B) {
			send, _ := benchKeypairs(b)
			var ss scratch
			buf := make([]byte, bufSize)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				send.seal(&ss, wire.TypeData, buf, size)
			}
		})
	}
}

// BenchmarkEndToEnd pushes packets from A's fake TUN to B's fake TUN
// through both meshes and the in-memory network: routing, sealing,
// batching, opening, replay and source checks included.
func BenchmarkEndToEnd(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(fmt.Sprintf("%dB", size), func(b *testing.B) {
			net := bindtest.NewNetwork()
			x := newNode(b, net.Bind(ap("192.0.2.1:3210")), "10.254.0.1/24", []string{"192.0.2.2:3210"}, benchOpts)
			y := newNode(b, net.Bind(ap("192.0.2.2:3210")), "10.254.0.2/24", nil, benchOpts)
			ping(b, x, y, 5*time.Second)
			pkt := tuntest.Packet(x.ip, y.ip, make([]byte, size-28))
			b.SetBytes(int64(size))
			b.ReportAllocs()
			b.ResetTimer()
			// keep a bounded number of packets in flight so the fake
			// network's queues never overflow
			const window = 128
			sent, got := 0, 0
			for got < b.N {
				for sent < b.N && sent-got < window {
					x.tun.Inbound <- pkt
					sent++
				}
				<-y.tun.Outbound
				got++
			}
		})
	}
}

func benchOpts(o *Options) {
	o.Logger = nil
	o.KeepaliveInterval = time.Hour
	o.GossipInterval = time.Hour
}

// BenchmarkDataPath runs the mesh's own per-packet work without the fakes'
// channels: A routes and seals a packet from TUN, B authenticates it,
// checks the replay window and the source address, and queues it for TUN.
// It shows that the hot path does not allocate.
func BenchmarkDataPath(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(fmt.Sprintf("%dB", size), func(b *testing.B) {
			net := bindtest.NewNetwork()
			x := newNode(b, net.Bind(ap("192.0.2.1:3210")), "10.254.0.1/24", []string{"192.0.2.2:3210"}, benchOpts)
			y := newNode(b, net.Bind(ap("192.0.2.2:3210")), "10.254.0.2/24", nil, benchOpts)
			ping(b, x, y, 5*time.Second)
			pkt := tuntest.Packet(x.ip, y.ip, make([]byte, size-28))
			buf := make([]byte, bufSize)
			wx := &worker{out: make([]conn.Message, 0, 1)}
			wy := &worker{tunOut: make([][]byte, 0, 1)}
			now := x.m.now()
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				copy(buf[headroom:], pkt)
				x.m.sendPacket(wx, buf, len(pkt), now)
				if len(wx.out) != 1 {
					b.Fatal("not sent")
				}
				msg := wx.out[0]
				y.m.receive(wy, msg.Buf, ap("192.0.2.1:3210"), nil, 0, y.m.now())
				if len(wy.tunOut) != 1 || len(wy.tunOut[0]) != size {
					b.Fatalf("not received: %+v", y.m.Status().Drops)
				}
				wx.out, wy.tunOut = wx.out[:0], wy.tunOut[:0]
			}
		})
	}
}
