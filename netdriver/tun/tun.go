// Package tun is the mesh's window onto the kernel's IP stack: a Device
// hands whole IP packets to and from a TUN interface.
//
// It exists so that the mesh never touches /dev/net/tun or netlink
// directly: the mesh takes a Device, tests hand it tuntest.Device, and the
// plugin hands it the Linux implementation from Create. Link configuration
// (address, MTU) lives here too, behind the same package boundary.
//
// On Linux, CreateOffload also moves TCP in 64 KiB segments between the
// kernel and the mesh (TSO on read, GRO on write, via virtio_net_hdr), the
// main lever userspace tunnels have on per-packet cost.
package tun

import "errors"

// Device is a layer-3 packet device.
//
// Read and Write may be called concurrently with each other but each must
// not be called concurrently with itself. Close makes every pending and
// future Read and Write return an error wrapping ErrClosed.
type Device interface {
	// Read reads up to len(bufs) packets, packet i into bufs[i][offset:],
	// and sets sizes[i] to its length. It blocks until at least one packet
	// is available and returns the number of packets read.
	Read(bufs [][]byte, sizes []int, offset int) (n int, err error)
	// Write writes each bufs[i][offset:] as one packet and returns the
	// number of packets written. Write does not retain bufs.
	Write(bufs [][]byte, offset int) (n int, err error)
	// MTU is the largest packet Read returns and Write accepts.
	MTU() int
	// Name is the interface name, e.g. "meshnet0".
	Name() string
	// BatchSize is the largest useful len(bufs) for Read.
	BatchSize() int
	// Close releases the device; it is idempotent.
	Close() error
}

// ErrClosed is returned by a closed Device.
var ErrClosed = errors.New("tun: device closed")
