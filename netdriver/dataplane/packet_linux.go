package dataplane

import (
	"errors"
	"fmt"
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// packetIgnoreOutgoing is PACKET_IGNORE_OUTGOING (Linux 4.20).
const packetIgnoreOutgoing = 23

// packetPort is a Port on a host interface: an AF_PACKET socket with a
// virtio-net header, non-blocking under Go's poller so Close ends Read.
type packetPort struct {
	f  *os.File
	rc interface {
		Read(func(uintptr) bool) error
		Write(func(uintptr) bool) error
	}
	ignoreOut bool
}

// OpenPort opens a Port on the host interface named ifname.
func OpenPort(ifname string) (Port, error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, err
	}
	proto := htons(unix.ETH_P_ALL)
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, int(proto))
	if err != nil {
		return nil, fmt.Errorf("packet socket: %w", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VNET_HDR, 1); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("packet socket: virtio header: %w", err)
	}
	ignoreOut := unix.SetsockoptInt(fd, unix.SOL_PACKET, packetIgnoreOutgoing, 1) == nil
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: proto, Ifindex: ifi.Index}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("packet socket: bind %s: %w", ifname, err)
	}
	f := os.NewFile(uintptr(fd), "packet:"+ifname)
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	return &packetPort{f: f, rc: rc, ignoreOut: ignoreOut}, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func (p *packetPort) Read(b []byte) (int, error) {
	var n int
	var rerr error
	err := p.rc.Read(func(fd uintptr) bool {
		for {
			var from unix.Sockaddr
			n, from, rerr = unix.Recvfrom(int(fd), b, 0)
			if rerr == unix.EINTR {
				continue
			}
			if rerr == unix.EAGAIN {
				return false
			}
			if rerr == nil && !p.ignoreOut {
				if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
					continue // our own writes
				}
			}
			return true
		}
	})
	if err != nil {
		if errors.Is(err, os.ErrClosed) {
			return 0, ErrPortClosed
		}
		return 0, err
	}
	return n, rerr
}

func (p *packetPort) Write(hdr, pkt []byte) error {
	var werr error
	err := p.rc.Write(func(fd uintptr) bool {
		for {
			_, werr = unix.Writev(int(fd), [][]byte{hdr, pkt})
			if werr != unix.EINTR {
				return werr != unix.EAGAIN
			}
		}
	})
	if err != nil {
		return err
	}
	return werr
}

func (p *packetPort) Close() error { return p.f.Close() }
