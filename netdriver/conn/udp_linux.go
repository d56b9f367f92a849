//go:build linux

package conn

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// mmsgReader reads batches with recvmmsg directly: x/net returns a freshly
// allocated *net.UDPAddr per datagram, this parses the kernel's sockaddr
// into a netip.AddrPort in place, so the receive path does not allocate.
//
// Where the kernel allows it the socket has UDP_GRO on: a run of datagrams
// from one sender that arrives as one GSO packet (the other end's UDP GSO
// send, forwarded whole by every hop of a veth or bridge path) is queued
// and read as one message, with its segment size in a control message,
// instead of being cut into an skb per datagram on the way in. The reader
// then reads into buffers of its own, groBufs of 64 KiB, and hands the
// segments out as messages pointing into them, keeping what does not fit
// the caller's batch for the next ReadBatch.
type mmsgReader struct {
	rc    syscall.RawConn
	hdrs  []unix.Mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrInet6 // large enough for IPv4 too
	fn    func(fd uintptr) bool   // preallocated closure
	k     int                     // datagrams asked for
	n     int                     // datagrams read
	errno unix.Errno

	gro     bool     // UDP_GRO is on: read into big, split by segSize
	big     [][]byte // groBufs buffers of groBufSize
	ctrl    []byte   // one control buffer of ctrlLen per header
	segSize []int    // per message read: its datagrams' length (all of it: one datagram)
	addrs   []netip.AddrPort
	next    int // first message read not yet fully handed out
	off     int // bytes of message next handed out
	split   atomic.Uint64
}

// groBufs is how many coalesced messages one recvmmsg reads with UDP_GRO
// on: each holds up to 64 KiB, about 45 datagrams of the mesh's size.
const (
	groBufs    = 8
	groBufSize = 1 << 16
	ctrlLen    = 64 // room for the UDP_GRO message (an int) and any other
)

func (u *UDP) initFastRead(gro bool) {
	rc, err := u.c.SyscallConn()
	if err != nil {
		return
	}
	r := &mmsgReader{
		rc:    rc,
		hdrs:  make([]unix.Mmsghdr, BatchSize),
		iovs:  make([]unix.Iovec, BatchSize),
		names: make([]unix.RawSockaddrInet6, BatchSize),
	}
	r.fn = r.read
	if gro && enableGRO(rc) {
		r.gro = true
		r.big = make([][]byte, groBufs)
		for i := range r.big {
			r.big[i] = make([]byte, groBufSize)
		}
		r.ctrl = make([]byte, groBufs*ctrlLen)
		r.segSize = make([]int, groBufs)
		r.addrs = make([]netip.AddrPort, groBufs)
	}
	u.fast = r
}

// enableGRO turns UDP_GRO on for the socket; false if the kernel refuses.
func enableGRO(rc syscall.RawConn) bool {
	var serr error
	err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_GRO, 1)
	})
	return err == nil && serr == nil
}

func (r *mmsgReader) read(fd uintptr) bool {
	n, _, errno := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&r.hdrs[0])), uintptr(r.k), unix.MSG_DONTWAIT, 0, 0)
	switch errno {
	case 0:
		r.n = int(n)
		return true
	case unix.EAGAIN:
		return false // wait until readable
	case unix.EINTR:
		return r.read(fd)
	}
	r.errno = errno
	return true
}

func (u *UDP) readFast(msgs []Message) (int, error) {
	r := u.fast
	if r.gro {
		return r.readGRO(msgs)
	}
	k := min(len(msgs), len(r.hdrs))
	for i := range k {
		r.setup(i, msgs[i].Buf, nil)
	}
	if err := r.recv(k); err != nil {
		return 0, err
	}
	for i := range r.n {
		msgs[i].N = int(r.hdrs[i].Len)
		msgs[i].Addr = sockaddrToAddrPort(&r.names[i])
	}
	return r.n, nil
}

// setup points header i at buf, with ctrl for control messages.
func (r *mmsgReader) setup(i int, buf, ctrl []byte) {
	r.iovs[i].Base = unsafe.SliceData(buf)
	r.iovs[i].SetLen(len(buf))
	h := &r.hdrs[i].Hdr
	h.Iov = &r.iovs[i]
	h.SetIovlen(1)
	h.Name = (*byte)(unsafe.Pointer(&r.names[i]))
	h.Namelen = unix.SizeofSockaddrInet6
	h.Control, h.Controllen, h.Flags = nil, 0, 0
	if ctrl != nil {
		h.Control = unsafe.SliceData(ctrl)
		h.SetControllen(len(ctrl))
	}
}

// recv reads up to k messages into the headers set up.
func (r *mmsgReader) recv(k int) error {
	r.k, r.n, r.errno = k, 0, 0
	err := r.rc.Read(r.fn)
	for i := range k {
		r.iovs[i].Base = nil // do not pin caller buffers
		r.hdrs[i].Hdr.Control = nil
	}
	if err != nil {
		return fmt.Errorf("udp read: %w", err)
	}
	if r.errno != 0 {
		return fmt.Errorf("udp read: %w", r.errno)
	}
	return nil
}

// readGRO hands out the datagrams of the coalesced messages read last,
// reading more only when all of them are out. Each message's Buf is set to
// the datagram inside the reader's buffers, capped at its length (so a
// seal in place cannot spill into the next one).
func (r *mmsgReader) readGRO(msgs []Message) (int, error) {
	if r.next >= r.n {
		for i := range groBufs {
			r.setup(i, r.big[i], r.ctrl[i*ctrlLen:(i+1)*ctrlLen])
		}
		r.next, r.off = 0, 0
		if err := r.recv(groBufs); err != nil {
			r.n = 0
			return 0, err
		}
		coalesced := 0
		for i := range r.n {
			h := &r.hdrs[i].Hdr
			l := int(r.hdrs[i].Len)
			// segSize[i] is the length of each datagram but the last;
			// a message that is one datagram is one segment.
			g := groSegSize(r.ctrl[i*ctrlLen : i*ctrlLen+int(h.Controllen)])
			if g > 0 && g < l {
				coalesced += (l + g - 1) / g
			} else {
				g = max(l, 1)
			}
			r.segSize[i] = g
			r.addrs[i] = sockaddrToAddrPort(&r.names[i])
		}
		if coalesced > 0 {
			r.split.Add(uint64(coalesced))
		}
	}
	out := 0
	for out < len(msgs) && r.next < r.n {
		i := r.next
		l := int(r.hdrs[i].Len)
		seg := min(r.segSize[i], l-r.off)
		b := r.big[i][r.off : r.off+seg : r.off+seg]
		msgs[out] = Message{Buf: b, N: seg, Addr: r.addrs[i]}
		out++
		r.off += seg
		if r.off >= l {
			r.next, r.off = i+1, 0
		}
	}
	return out, nil
}

// groSegSize is the segment size in a UDP_GRO control message in oob, 0
// when there is none (the message is one datagram).
func groSegSize(oob []byte) int {
	for len(oob) >= unix.SizeofCmsghdr {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		if h.Len < unix.SizeofCmsghdr || int(h.Len) > len(oob) {
			return 0
		}
		if h.Level == unix.SOL_UDP && h.Type == unix.UDP_GRO && int(h.Len)-unix.CmsgLen(0) >= 2 {
			d := oob[unix.CmsgLen(0):h.Len]
			if len(d) >= 4 {
				return int(binary.NativeEndian.Uint32(d))
			}
			return int(binary.NativeEndian.Uint16(d))
		}
		oob = oob[min(len(oob), unix.CmsgSpace(int(h.Len)-unix.CmsgLen(0))):]
	}
	return 0
}

// Coalesced counts the datagrams that arrived inside a coalesced (UDP_GRO)
// message: 0 where the kernel delivers every datagram alone.
func (u *UDP) Coalesced() uint64 {
	if u.fast == nil {
		return 0
	}
	return u.fast.split.Load()
}

func sockaddrToAddrPort(sa *unix.RawSockaddrInet6) netip.AddrPort {
	switch sa.Family {
	case unix.AF_INET:
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&sa4.Port))[:])
		return netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), port)
	case unix.AF_INET6:
		port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:])
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), port)
	}
	return netip.AddrPort{}
}
