// Package tuntest is an in-memory tun.Device for tests: the test plays the
// kernel, injecting packets the mesh reads and collecting packets it writes.
package tuntest

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"sync"

	"github.com/homeswarm/homeswarm/netdriver/tun"
)

// Device is a channel-backed tun.Device.
type Device struct {
	// Inbound carries packets "from the kernel" to the mesh (Read).
	Inbound chan []byte
	// Outbound receives a copy of every packet the mesh writes.
	Outbound chan []byte

	name      string
	mtu       int
	closed    chan struct{}
	closeOnce sync.Once
}

var _ tun.Device = (*Device)(nil)

// New returns a Device with buffered channels.
func New(name string, mtu int) *Device {
	return &Device{
		Inbound:  make(chan []byte, 256),
		Outbound: make(chan []byte, 1024),
		name:     name,
		mtu:      mtu,
		closed:   make(chan struct{}),
	}
}

// Read implements tun.Device.
func (d *Device) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	select {
	case <-d.closed:
		return 0, tun.ErrClosed
	case p := <-d.Inbound:
		sizes[0] = copy(bufs[0][offset:], p)
	}
	n := 1
	for n < len(bufs) {
		select {
		case p := <-d.Inbound:
			sizes[n] = copy(bufs[n][offset:], p)
			n++
		default:
			return n, nil
		}
	}
	return n, nil
}

// Write implements tun.Device. It blocks while Outbound is full.
func (d *Device) Write(bufs [][]byte, offset int) (int, error) {
	for i, b := range bufs {
		p := append([]byte(nil), b[offset:]...)
		select {
		case <-d.closed:
			return i, tun.ErrClosed
		case d.Outbound <- p:
		}
	}
	return len(bufs), nil
}

// MTU implements tun.Device.
func (d *Device) MTU() int { return d.mtu }

// Name implements tun.Device.
func (d *Device) Name() string { return d.name }

// BatchSize implements tun.Device.
func (d *Device) BatchSize() int { return 16 }

// Close implements tun.Device.
func (d *Device) Close() error {
	d.closeOnce.Do(func() { close(d.closed) })
	return nil
}

// Packet builds a minimal IPv4/UDP packet from src to dst carrying payload,
// with valid header lengths (checksums are left zero).
func Packet(src, dst netip.Addr, payload []byte) []byte {
	if !src.Is4() || !dst.Is4() {
		panic(fmt.Sprintf("tuntest: not IPv4: %v -> %v", src, dst))
	}
	p := make([]byte, 28+len(payload))
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	p[8] = 64
	p[9] = 17 // UDP
	s, d := src.As4(), dst.As4()
	copy(p[12:], s[:])
	copy(p[16:], d[:])
	binary.BigEndian.PutUint16(p[20:], 4000)
	binary.BigEndian.PutUint16(p[22:], 4000)
	binary.BigEndian.PutUint16(p[24:], uint16(8+len(payload)))
	copy(p[28:], payload)
	return p
}
