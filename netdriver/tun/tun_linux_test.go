//go:build linux

package tun_test

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/homeswarm/homeswarm/netdriver/internal/nstest"
	"github.com/homeswarm/homeswarm/netdriver/tun"
)

func TestNativeTUN(t *testing.T) {
	nstest.Require(t)
	ns := nstest.New(t, "tun")
	var dev *tun.Native
	if err := ns.Do(func() (err error) { dev, err = tun.Create("mt0", 1392); return err }); err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	addr := netip.MustParsePrefix("10.99.0.1/24")
	if err := tun.ConfigureLink(ns.NL, dev.Name(), addr, 1392); err != nil {
		t.Fatal(err)
	}
	link, err := ns.NL.LinkByName("mt0")
	if err != nil {
		t.Fatal(err)
	}
	if link.Attrs().MTU != 1392 || link.Attrs().Flags&net.FlagUp == 0 {
		t.Fatalf("link %+v", link.Attrs())
	}
	addrs, _ := ns.NL.AddrList(link, netlink.FAMILY_V4)
	if len(addrs) != 1 || addrs[0].IPNet.String() != "10.99.0.1/24" {
		t.Fatalf("addresses %v", addrs)
	}
	// kernel -> TUN: a UDP datagram to a peer on mt0's subnet
	var c *net.UDPConn
	if err := ns.Do(func() (err error) {
		c, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(10, 99, 0, 1), Port: 7777})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.WriteToUDP([]byte("to tun"), &net.UDPAddr{IP: net.IPv4(10, 99, 0, 2), Port: 9}); err != nil {
		t.Fatal(err)
	}
	bufs := [][]byte{make([]byte, 2048)}
	sizes := []int{0}
	for {
		n, err := dev.Read(bufs, sizes, 10)
		if err != nil || n != 1 {
			t.Fatal(n, err)
		}
		pkt := bufs[0][10 : 10+sizes[0]]
		if pkt[0]>>4 == 4 && pkt[9] == 17 && string(pkt[28:]) == "to tun" {
			if netip.AddrFrom4([4]byte(pkt[16:20])) != netip.MustParseAddr("10.99.0.2") {
				t.Fatalf("dst %v", pkt[16:20])
			}
			break
		}
	}

	// TUN -> kernel: a datagram to our socket
	pkt := udpPacket(netip.MustParseAddr("10.99.0.2"), netip.MustParseAddr("10.99.0.1"), 5555, 7777, []byte("from tun"))
	if _, err := dev.Write([][]byte{append(make([]byte, 4), pkt...)}, 4); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b := make([]byte, 100)
	n, from, err := c.ReadFromUDP(b)
	if err != nil || string(b[:n]) != "from tun" || from.Port != 5555 {
		t.Fatalf("read %q from %v: %v", b[:n], from, err)
	}

	// Close unblocks a pending Read
	errc := make(chan error, 1)
	go func() {
		for {
			if _, err := dev.Read(bufs, sizes, 0); err != nil {
				errc <- err
				return
			}
		}
	}()
	time.Sleep(20 * time.Millisecond)
	dev.Close()
	dev.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, tun.ErrClosed) {
			t.Fatalf("read after close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not unblock Read")
	}
}

// udpPacket builds an IPv4/UDP packet with a valid header checksum and no
// UDP checksum.
func udpPacket(src, dst netip.Addr, sport, dport uint16, payload []byte) []byte {
	p := make([]byte, 28+len(payload))
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	p[8] = 64
	p[9] = 17
	s, d := src.As4(), dst.As4()
	copy(p[12:], s[:])
	copy(p[16:], d[:])
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(p[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(p[10:], ^uint16(sum))
	binary.BigEndian.PutUint16(p[20:], sport)
	binary.BigEndian.PutUint16(p[22:], dport)
	binary.BigEndian.PutUint16(p[24:], uint16(8+len(payload)))
	copy(p[28:], payload)
	return p
}
