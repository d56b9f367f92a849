//go:build linux

package main

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"

	"github.com/homeswarm/homeswarm/netdriver/conn"
)

// gsoBind is an experiment, not the shipped transport: a conn.Bind whose
// WriteBatch sends runs of equal-sized datagrams to one address as a single
// UDP GSO send (sendmsg with a UDP_SEGMENT control message), as
// wireguard-go's StdNetBind does, so that one skb instead of up to 64
// crosses the sender's stack, the veths, the bridge and the NAT. Reads are
// plain batched reads (x/net, allocating), so use it on the sending side of
// a measurement. `mesh node -gso` uses it; see the profile findings in
// bench/mesh/README.md.
type gsoBind struct {
	c     *net.UDPConn
	rc    syscall.RawConn
	pc    *ipv4.PacketConn
	port  uint16
	rmsgs []ipv4.Message

	mu     sync.Mutex // serialises writers (scratch below)
	oob    []byte
	bufs   [][]byte
	noGSO  bool
	sent   uint64 // sendmsg calls
	segs   uint64 // datagrams
	closed sync.Once
}

var _ conn.Bind = (*gsoBind)(nil)

// maxGSOSegs and maxGSOBytes bound one GSO send (UDP_MAX_SEGMENTS is 64 on
// older kernels; a UDP payload is at most 65507 bytes).
const (
	maxGSOSegs  = 64
	maxGSOBytes = 65000
)

func listenGSO(port int) (*gsoBind, error) {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{Port: port})
	if err != nil {
		return nil, fmt.Errorf("listen udp port %d: %w", port, err)
	}
	_ = c.SetReadBuffer(4 << 20)
	_ = c.SetWriteBuffer(4 << 20)
	rc, err := c.SyscallConn()
	if err != nil {
		c.Close()
		return nil, err
	}
	b := &gsoBind{c: c, rc: rc, pc: ipv4.NewPacketConn(c), port: uint16(c.LocalAddr().(*net.UDPAddr).Port)}
	b.rmsgs = make([]ipv4.Message, conn.BatchSize)
	for i := range b.rmsgs {
		b.rmsgs[i].Buffers = make([][]byte, 1)
	}
	b.oob = make([]byte, unix.CmsgSpace(2))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b.oob[0]))
	h.Level = unix.SOL_UDP
	h.Type = unix.UDP_SEGMENT
	h.SetLen(unix.CmsgLen(2))
	return b, nil
}

func (b *gsoBind) ReadBatch(msgs []conn.Message) (int, error) {
	n := min(len(msgs), len(b.rmsgs))
	for i := range n {
		b.rmsgs[i].Buffers[0] = msgs[i].Buf
	}
	got, err := b.pc.ReadBatch(b.rmsgs[:n], 0)
	if err != nil {
		return 0, fmt.Errorf("udp read: %w", err)
	}
	for i := range got {
		msgs[i].N = b.rmsgs[i].N
		if a, ok := b.rmsgs[i].Addr.(*net.UDPAddr); ok {
			msgs[i].Addr = a.AddrPort()
		}
	}
	return got, nil
}

func (b *gsoBind) WriteBatch(msgs []conn.Message) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	var first error
	for i := 0; i < len(msgs); {
		size, to := len(msgs[i].Buf), msgs[i].Addr
		j, total := i+1, size
		for !b.noGSO && j < len(msgs) && j-i < maxGSOSegs && msgs[j].Addr == to && total+len(msgs[j].Buf) <= maxGSOBytes {
			l := len(msgs[j].Buf)
			if l > size {
				break
			}
			total += l
			j++
			if l < size { // a shorter datagram can only end a run
				break
			}
		}
		if err := b.send(msgs[i:j], size, to); err != nil && first == nil {
			first = err
		}
		i = j
	}
	return first
}

// send sends run (datagrams to one address, all of size seg but maybe the
// last) in one sendmsg, with UDP_SEGMENT when there is more than one.
func (b *gsoBind) send(run []conn.Message, seg int, to netip.AddrPort) error {
	a := to.Addr().Unmap()
	if !a.Is4() {
		return fmt.Errorf("udp write to %v: %w", to, conn.ErrNoAddr)
	}
	sa := &unix.SockaddrInet4{Port: int(to.Port()), Addr: a.As4()}
	b.bufs = b.bufs[:0]
	for _, m := range run {
		b.bufs = append(b.bufs, m.Buf)
	}
	var oob []byte
	if len(run) > 1 {
		*(*uint16)(unsafe.Pointer(&b.oob[unix.CmsgLen(0)])) = uint16(seg)
		oob = b.oob
	}
	var serr error
	err := b.rc.Write(func(fd uintptr) bool {
		_, serr = unix.SendmsgBuffers(int(fd), b.bufs, oob, sa, 0)
		return serr != unix.EAGAIN
	})
	if err != nil {
		return fmt.Errorf("udp write: %w", err)
	}
	if errors.Is(serr, unix.EIO) && oob != nil {
		// No checksum offload on the route: no GSO from now on.
		b.noGSO = true
		for _, m := range run {
			if err := b.send([]conn.Message{m}, len(m.Buf), to); err != nil {
				return err
			}
		}
		return nil
	}
	if serr != nil {
		return fmt.Errorf("udp write to %v: %w", to, serr)
	}
	b.sent++
	b.segs += uint64(len(run))
	return nil
}

func (b *gsoBind) BatchSize() int    { return conn.BatchSize }
func (b *gsoBind) LocalPort() uint16 { return b.port }

func (b *gsoBind) Close() error {
	var err error
	b.closed.Do(func() { err = b.c.Close() })
	return err
}

// stats reports sendmsg calls and datagrams sent.
func (b *gsoBind) stats() (calls, datagrams uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.sent, b.segs
}
