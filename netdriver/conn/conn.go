// Package conn is the mesh's UDP transport: a Bind sends and receives
// batches of datagrams addressed by netip.AddrPort.
//
// It exists so that the mesh never opens a socket itself: the plugin
// passes a UDP Bind from Listen (recvmmsg/sendmmsg batching through
// golang.org/x/net/ipv4), tests pass a bindtest network that can drop,
// partition and NAT packets in memory.
package conn

import (
	"errors"
	"net/netip"
)

// Message is one datagram in a batch.
type Message struct {
	// Buf is the buffer to fill on read (its whole length is usable) and the
	// datagram on write. After a read the datagram is Buf[:N]; a Bind may
	// instead point Buf at memory of its own, valid until the next
	// ReadBatch (UDP does with UDP_GRO), so a caller must not keep it
	// past that call and must not count on its own buffer being filled.
	Buf []byte
	// N is the datagram length after a read.
	N int
	// Addr is the source after a read and the destination for a write.
	Addr netip.AddrPort
}

// Bind is a UDP socket that works in batches.
//
// ReadBatch must not be called concurrently with itself; WriteBatch may be
// called from several goroutines at once. Close makes pending and future
// calls return an error wrapping net.ErrClosed; it is idempotent.
type Bind interface {
	// ReadBatch blocks until at least one datagram arrives, fills up to
	// len(msgs) messages and returns how many it filled.
	ReadBatch(msgs []Message) (n int, err error)
	// WriteBatch sends every message. It does not retain the buffers. An
	// error for one destination does not stop the others; the first error
	// is returned.
	WriteBatch(msgs []Message) error
	// BatchSize is the largest useful len(msgs).
	BatchSize() int
	// LocalPort is the UDP port the Bind listens on.
	LocalPort() uint16
	Close() error
}

// ErrNoAddr is returned by WriteBatch for a message without a valid address.
var ErrNoAddr = errors.New("conn: message has no destination address")
