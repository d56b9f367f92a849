package conn

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"

	"golang.org/x/net/ipv4"
)

// BatchSize is how many datagrams UDP reads and writes move per syscall.
const BatchSize = 64

// UDP is an IPv4 UDP Bind using recvmmsg/sendmmsg on Linux (and one
// datagram per syscall elsewhere). IPv6 endpoints are not supported yet.
//
// On Linux neither reads nor writes allocate per datagram.
type UDP struct {
	c    *net.UDPConn
	pc   *ipv4.PacketConn
	port uint16

	rmsgs []ipv4.Message // reader scratch; ReadBatch is single-caller
	fast  *mmsgReader    // allocation-free recvmmsg where available
	gso   *gsoWriter     // UDP GSO sends where available
	wpool sync.Pool      // *writeScratch
}

type writeScratch struct {
	msgs  []ipv4.Message
	addrs []net.UDPAddr
	ips   [][16]byte // 16-byte form: net.IP.To16 on it does not allocate
}

var _ Bind = (*UDP)(nil)

// Listen opens a UDP socket on port (0 picks one) on all IPv4 addresses.
func Listen(port int) (*UDP, error) { return listen(port, true) }

// listen is Listen, with UDP_GRO reads where the kernel has them if gro.
func listen(port int, gro bool) (*UDP, error) {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{Port: port})
	if err != nil {
		return nil, fmt.Errorf("listen udp port %d: %w", port, err)
	}
	// Larger socket buffers absorb bursts between batches; failures are harmless.
	_ = c.SetReadBuffer(4 << 20)
	_ = c.SetWriteBuffer(4 << 20)
	u := &UDP{c: c, pc: ipv4.NewPacketConn(c), port: uint16(c.LocalAddr().(*net.UDPAddr).Port)}
	u.rmsgs = make([]ipv4.Message, BatchSize)
	for i := range u.rmsgs {
		u.rmsgs[i].Buffers = make([][]byte, 1)
	}
	u.initFastRead(gro)
	u.initGSO()
	u.wpool.New = func() any {
		s := &writeScratch{msgs: make([]ipv4.Message, BatchSize), addrs: make([]net.UDPAddr, BatchSize), ips: make([][16]byte, BatchSize)}
		for i := range s.msgs {
			s.msgs[i].Buffers = make([][]byte, 1)
		}
		return s
	}
	return u, nil
}

// ReadBatch implements Bind.
func (u *UDP) ReadBatch(msgs []Message) (int, error) {
	if u.fast != nil {
		return u.readFast(msgs)
	}
	n := min(len(msgs), len(u.rmsgs))
	rm := u.rmsgs[:n]
	for i := range rm {
		rm[i].Buffers[0] = msgs[i].Buf
	}
	got, err := u.pc.ReadBatch(rm, 0)
	if err != nil {
		return 0, fmt.Errorf("udp read: %w", err)
	}
	for i := 0; i < got; i++ {
		msgs[i].N = rm[i].N
		if a, ok := rm[i].Addr.(*net.UDPAddr); ok {
			msgs[i].Addr = a.AddrPort()
			msgs[i].Addr = netip.AddrPortFrom(msgs[i].Addr.Addr().Unmap(), msgs[i].Addr.Port())
		} else {
			msgs[i].Addr = netip.AddrPort{}
		}
		rm[i].Addr = nil
	}
	return got, nil
}

// WriteBatch implements Bind. Where the kernel can, runs of datagrams to
// one peer leave as one UDP GSO send; elsewhere as one sendmmsg.
func (u *UDP) WriteBatch(msgs []Message) error {
	if u.gso != nil && !u.gso.off.Load() {
		return u.writeGSO(msgs)
	}
	return u.writeMMsg(msgs)
}

// writeMMsg sends msgs with sendmmsg, BatchSize at a time.
func (u *UDP) writeMMsg(msgs []Message) error {
	s := u.wpool.Get().(*writeScratch)
	defer u.wpool.Put(s)
	var first error
	for len(msgs) > 0 {
		n := 0
		for _, m := range msgs[:min(len(msgs), BatchSize)] {
			a := m.Addr.Addr().Unmap()
			if !a.Is4() {
				if first == nil {
					first = fmt.Errorf("udp write to %v: %w", m.Addr, ErrNoAddr)
				}
				continue
			}
			s.ips[n] = netip.AddrFrom4(a.As4()).As16()
			s.addrs[n] = net.UDPAddr{IP: s.ips[n][:], Port: int(m.Addr.Port())}
			s.msgs[n].Buffers[0] = m.Buf
			s.msgs[n].Addr = &s.addrs[n]
			n++
		}
		msgs = msgs[min(len(msgs), BatchSize):]
		for off := 0; off < n; {
			sent, err := u.pc.WriteBatch(s.msgs[off:n], 0)
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return fmt.Errorf("udp write: %w", err)
				}
				if first == nil {
					first = fmt.Errorf("udp write to %v: %w", s.msgs[off].Addr, err)
				}
				sent = 1 // skip the datagram that failed
			}
			if sent <= 0 {
				sent = 1 // never spin on a batch the kernel refuses
			}
			off += sent
		}
	}
	for i := range s.msgs {
		s.msgs[i].Buffers[0] = nil
	}
	return first
}

// BatchSize implements Bind.
func (u *UDP) BatchSize() int { return BatchSize }

// LocalPort implements Bind.
func (u *UDP) LocalPort() uint16 { return u.port }

// Close implements Bind.
func (u *UDP) Close() error {
	err := u.c.Close()
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}
