//go:build linux

package conn

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// mmsgReader reads batches with recvmmsg directly: x/net returns a freshly
// allocated *net.UDPAddr per datagram, this parses the kernel's sockaddr
// into a netip.AddrPort in place, so the receive path does not allocate.
type mmsgReader struct {
	rc    syscall.RawConn
	hdrs  []unix.Mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrInet6 // large enough for IPv4 too
	fn    func(fd uintptr) bool   // preallocated closure
	k     int                     // datagrams asked for
	n     int                     // datagrams read
	errno unix.Errno
}

func (u *UDP) initFastRead() {
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
	u.fast = r
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
	k := min(len(msgs), len(r.hdrs))
	for i := range k {
		buf := msgs[i].Buf
		r.iovs[i].Base = unsafe.SliceData(buf)
		r.iovs[i].SetLen(len(buf))
		h := &r.hdrs[i].Hdr
		h.Iov = &r.iovs[i]
		h.SetIovlen(1)
		h.Name = (*byte)(unsafe.Pointer(&r.names[i]))
		h.Namelen = unix.SizeofSockaddrInet6
		h.Control, h.Controllen, h.Flags = nil, 0, 0
	}
	r.k, r.n, r.errno = k, 0, 0
	err := r.rc.Read(r.fn)
	for i := range k {
		r.iovs[i].Base = nil // do not pin caller buffers
	}
	if err != nil {
		return 0, fmt.Errorf("udp read: %w", err)
	}
	if r.errno != 0 {
		return 0, fmt.Errorf("udp read: %w", r.errno)
	}
	for i := range r.n {
		msgs[i].N = int(r.hdrs[i].Len)
		msgs[i].Addr = sockaddrToAddrPort(&r.names[i])
	}
	return r.n, nil
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
