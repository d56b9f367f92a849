//go:build linux

package tun

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Native is a Linux TUN interface opened on /dev/net/tun in IFF_TUN|IFF_NO_PI
// mode. The file descriptor is non-blocking and registered with the Go
// runtime poller, so Close unblocks a pending Read.
//
// The interface lives in the network namespace of the calling thread at
// Create time, and stays there whichever thread later reads or writes.
type Native struct {
	f         *os.File
	rc        syscall.RawConn
	readFn    func(fd uintptr) bool // preallocated: no closure per Read
	rbufs     [][]byte
	rsizes    []int
	roffset   int
	rn        int
	rerr      error
	name      string
	mtu       int
	closeOnce sync.Once
	closeErr  error
	closed    atomic.Bool

	vnet    bool      // IFF_VNET_HDR: merge TCP segments on Write (GRO)
	tso     bool      // kernel sends TCP super-packets (TSO) for us to split
	big     []byte    // TSO read buffer
	seg     segmenter // TSO split state, kept across Reads
	coal    coalescer // Write's scratch; Write is single-caller
	wbuf    []byte
	wn      int
	werr    error
	writeFn func(fd uintptr) bool
}

var _ Device = (*Native)(nil)

// Create creates (or attaches to) the TUN interface name and sets its MTU.
// It does not bring the link up or add addresses: see ConfigureLink.
func Create(name string, mtu int) (*Native, error) { return create(name, mtu, false, false) }

// CreateGRO is Create with receive offload: the device is opened with
// IFF_VNET_HDR and Write merges runs of in-order segments of one TCP flow
// into one GSO packet, so the kernel's TCP stack handles a 64 KiB segment
// where it would handle dozens of small ones. Packets read are unchanged
// (no TSO is requested from the kernel).
func CreateGRO(name string, mtu int) (*Native, error) { return create(name, mtu, true, false) }

// CreateOffload is CreateGRO plus transmit offload: the kernel hands Read
// TCP segments of up to 64 KiB with checksums left undone (TSO and
// checksum offload), and Read splits them into MTU-sized packets with
// complete checksums. Both halves cut the kernel's per-packet work.
func CreateOffload(name string, mtu int) (*Native, error) { return create(name, mtu, true, true) }

func create(name string, mtu int, vnet, tso bool) (*Native, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/net/tun: %w", err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("tun name %q: %w", name, err)
	}
	flags := uint16(unix.IFF_TUN | unix.IFF_NO_PI)
	if vnet {
		flags |= unix.IFF_VNET_HDR
	}
	ifr.SetUint16(flags)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("create tun %q: %w", name, err)
	}
	if vnet {
		if err := unix.IoctlSetPointerInt(fd, unix.TUNSETVNETHDRSZ, VirtioNetHdrLen); err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("tun %q: set vnet header size: %w", name, err)
		}
	}
	if tso {
		if err := unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, tunFCsum|tunFTSO4); err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("tun %q: enable offloads: %w", name, err)
		}
	}
	d := &Native{f: os.NewFile(uintptr(fd), "/dev/net/tun"), name: ifr.Name(), mtu: mtu, vnet: vnet, tso: tso}
	if tso {
		d.big = make([]byte, VirtioNetHdrLen+maxCoalescedLen+1)
	}
	d.writeFn = d.writeRaw
	if d.rc, err = d.f.SyscallConn(); err != nil {
		d.f.Close()
		return nil, fmt.Errorf("tun %s: %w", d.name, err)
	}
	d.readFn = d.readBatch
	if mtu > 0 {
		if err := setMTU(d.name, mtu); err != nil {
			d.Close()
			return nil, err
		}
	}
	return d, nil
}

func setMTU(name string, mtu int) error {
	link, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("find link %s: %w", name, err)
	}
	if err := netlink.LinkSetMTU(link, mtu); err != nil {
		return fmt.Errorf("set mtu %d on %s: %w", mtu, name, err)
	}
	return nil
}

// Read implements Device. It blocks for the first packet, then takes
// whatever else is already queued, up to len(bufs), without blocking: one
// wake-up moves a burst, and the mesh can send it with one sendmmsg.
func (d *Native) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	if d.vnet && offset < VirtioNetHdrLen {
		return 0, fmt.Errorf("read %s: offset %d leaves no room for the virtio header", d.name, offset)
	}
	d.rbufs, d.rsizes, d.roffset, d.rn, d.rerr = bufs, sizes, offset, 0, nil
	err := d.rc.Read(d.readFn)
	n, rerr := d.rn, d.rerr
	d.rbufs, d.rsizes = nil, nil
	if n > 0 {
		return n, nil
	}
	if err == nil {
		err = rerr
	}
	if err != nil {
		if d.closed.Load() || errors.Is(err, os.ErrClosed) {
			return 0, fmt.Errorf("read %s: %w", d.name, ErrClosed)
		}
		return 0, fmt.Errorf("read %s: %w", d.name, err)
	}
	return 0, nil
}

// readBatch runs inside RawConn.Read; returning false waits for readability.
func (d *Native) readBatch(fd uintptr) bool {
	if d.tso {
		return d.readBatchTSO(fd)
	}
	hdr := 0
	if d.vnet {
		hdr = VirtioNetHdrLen
	}
	for d.rn < len(d.rbufs) {
		n, err := unix.Read(int(fd), d.rbufs[d.rn][d.roffset-hdr:])
		if err == unix.EINTR {
			continue
		}
		if err == unix.EAGAIN {
			return d.rn > 0
		}
		if err != nil {
			d.rerr = err
			return true
		}
		if n < hdr || (hdr > 0 && d.rbufs[d.rn][d.roffset-hdr+1] != virtioNetHdrGSONone) {
			continue // no TSO was requested: never a GSO packet
		}
		d.rsizes[d.rn] = n - hdr
		d.rn++
	}
	return true
}

// readBatchTSO reads into a 64 KiB buffer and splits GSO packets.
func (d *Native) readBatchTSO(fd uintptr) bool {
	for d.rn < len(d.rbufs) {
		if d.seg.pending() {
			d.rn = d.seg.fill(d.rbufs, d.rsizes, d.roffset, d.rn)
			continue
		}
		n, err := unix.Read(int(fd), d.big)
		if err == unix.EINTR {
			continue
		}
		if err == unix.EAGAIN {
			return d.rn > 0
		}
		if err != nil {
			d.rerr = err
			return true
		}
		pkt, ok := d.seg.load(d.big[:n], 0)
		if !ok || (pkt != nil && len(pkt) > len(d.rbufs[d.rn])-d.roffset) {
			continue
		}
		if pkt != nil {
			d.rsizes[d.rn] = copy(d.rbufs[d.rn][d.roffset:], pkt)
			d.rn++
		}
	}
	return true
}

// Write implements Device.
func (d *Native) Write(bufs [][]byte, offset int) (int, error) {
	if d.vnet {
		return d.writeGRO(bufs, offset)
	}
	for i, b := range bufs {
		if _, err := d.f.Write(b[offset:]); err != nil {
			if errors.Is(err, os.ErrClosed) {
				return i, fmt.Errorf("write %s: %w", d.name, ErrClosed)
			}
			// the kernel rejects malformed packets with EINVAL; skip them
			if errors.Is(err, unix.EINVAL) {
				continue
			}
			return i, fmt.Errorf("write %s: %w", d.name, err)
		}
	}
	return len(bufs), nil
}

// MTU implements Device.
func (d *Native) MTU() int { return d.mtu }

// Name implements Device.
func (d *Native) Name() string { return d.name }

// BatchSize implements Device.
func (d *Native) BatchSize() int { return 64 }

// Close implements Device. The interface disappears with its last file
// descriptor unless it was made persistent by someone else.
func (d *Native) Close() error {
	d.closeOnce.Do(func() {
		d.closed.Store(true)
		d.closeErr = d.f.Close()
	})
	return d.closeErr
}

func handle(h *netlink.Handle) *netlink.Handle {
	if h == nil {
		return &netlink.Handle{} // netlink's package handle: the calling thread's namespace
	}
	return h
}

// ConfigureLink gives the link name the address addr (e.g. 10.254.0.1/24,
// which also routes the whole /24 to it), the MTU mtu (0 leaves it), and
// brings it up with a transmit queue of at least MinTxQueueLen. h selects the network namespace; nil means the calling
// thread's. It is idempotent.
func ConfigureLink(h *netlink.Handle, name string, addr netip.Prefix, mtu int) error {
	h = handle(h)
	link, err := h.LinkByName(name)
	if err != nil {
		return fmt.Errorf("find link %s: %w", name, err)
	}
	if mtu > 0 {
		if err := h.LinkSetMTU(link, mtu); err != nil {
			return fmt.Errorf("set mtu %d on %s: %w", mtu, name, err)
		}
	}
	if addr.IsValid() {
		a := &netlink.Addr{IPNet: prefixToIPNet(addr)}
		if err := h.AddrReplace(link, a); err != nil {
			return fmt.Errorf("add address %v to %s: %w", addr, name, err)
		}
	}
	if link.Attrs().TxQLen < MinTxQueueLen {
		// the default (500) overflows under a TCP burst before the mesh
		// drains it, and TCP reads the drops as congestion
		if err := h.LinkSetTxQLen(link, MinTxQueueLen); err != nil {
			return fmt.Errorf("set txqueuelen on %s: %w", name, err)
		}
	}
	if err := h.LinkSetUp(link); err != nil {
		return fmt.Errorf("bring up %s: %w", name, err)
	}
	return nil
}

// MinTxQueueLen is the queue length ConfigureLink gives a shorter-queued link.
const MinTxQueueLen = 2000

// writeGRO writes bufs through the coalescer, each run as one packet
// behind a virtio header.
func (d *Native) writeGRO(bufs [][]byte, offset int) (int, error) {
	written := 0
	err := d.coal.groups(bufs, offset, func(run [][]byte, segs []tcpSeg) error {
		var b []byte
		if len(run) == 1 {
			n := VirtioNetHdrLen + len(run[0])
			if cap(d.coal.scratch) < n {
				d.coal.scratch = make([]byte, n, maxCoalescedLen+VirtioNetHdrLen+64)
			}
			b = d.coal.scratch[:n]
			clear(b[:VirtioNetHdrLen])
			copy(b[VirtioNetHdrLen:], run[0])
		} else {
			b = d.coal.build(segs, 0)
		}
		d.wbuf, d.werr = b, nil
		if err := d.rc.Write(d.writeFn); err != nil {
			if d.closed.Load() || errors.Is(err, os.ErrClosed) {
				return fmt.Errorf("write %s: %w", d.name, ErrClosed)
			}
			return fmt.Errorf("write %s: %w", d.name, err)
		}
		if d.werr != nil && !errors.Is(d.werr, unix.EINVAL) {
			return fmt.Errorf("write %s: %w", d.name, d.werr)
		}
		written += len(run)
		return nil
	})
	d.wbuf = nil
	return written, err
}

// writeRaw runs inside RawConn.Write.
func (d *Native) writeRaw(fd uintptr) bool {
	for {
		_, err := unix.Write(int(fd), d.wbuf)
		if err == unix.EINTR {
			continue
		}
		if err == unix.EAGAIN {
			return false
		}
		d.werr = err
		return true
	}
}
