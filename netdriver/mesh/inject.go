package mesh

import "github.com/homeswarm/homeswarm/netdriver/conn"

// Headroom is the space an Injector needs in front of each packet, and
// BufSize the size of the buffers it expects: the packet is sealed in
// place.
const (
	Headroom = headroom
	BufSize  = bufSize
)

// Injector sends IP packets that did not come from TUN (container
// networks) through the mesh, routed like TUN's by destination address.
// One Injector belongs to one goroutine; create one per reader.
type Injector struct {
	m *Mesh
	w worker
}

// NewInjector returns an Injector for one goroutine.
func (m *Mesh) NewInjector() *Injector {
	return &Injector{m: m, w: worker{out: make([]conn.Message, 0, 64)}}
}

// Send queues the IP packet buf[Headroom:Headroom+n] for the peer owning
// its destination; buf must be BufSize long and stays in use until Flush.
// Packets without a route or a session are dropped and counted (or queued
// until the session is up), as TUN's are.
func (in *Injector) Send(buf []byte, n int) {
	if len(buf) < bufSize || n <= 0 || n > MaxMTU {
		in.m.drop(dropMalformed)
		return
	}
	in.m.sendPacket(&in.w, buf, n, in.m.now())
}

// Flush sends what Send queued; the buffers may then be reused.
func (in *Injector) Flush() { in.m.flush(&in.w) }
