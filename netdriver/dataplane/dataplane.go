// Package dataplane is meshnet's container switch: it moves the packets
// of container endpoints between their veth links and the mesh, entirely
// in user space.
//
// Each endpoint is a veth pair; Docker moves one end into the container,
// the other stays in the host's namespace, with no address and no route,
// and the switch reads and writes Ethernet frames on it through a packet
// socket (Port). The host's IP stack never forwards container traffic: the
// frames a container sends are addressed to the switch's virtual MAC, not
// to the host end's, so the kernel drops its own copy as "other host". So
// no iptables rule, no sysctl and no routing table of the host is touched,
// and Docker's FORWARD policy does not matter.
//
// The switch answers every ARP request for an address of the endpoint's
// network with its virtual MAC (a router's proxy ARP), checks that an
// IPv4 packet's source is the endpoint's own address (no spoofing) and
// that its destination is in the endpoint's network (isolation: networks
// never reach each other, not even on one node), then writes it to the
// local endpoint owning the destination, or hands it to the mesh, which
// routes it by destination to the node that announced that address and
// encrypts it. Packets from the mesh are delivered to a local endpoint
// only if their source is in that endpoint's network.
//
// TCP segmentation offload is kept: the packet socket has a virtio-net
// header, so a container's 64 KiB TSO packet arrives as one read and is
// cut into MTU-sized packets here (tun.Segmenter).
package dataplane

import (
	"encoding/binary"
	"errors"
	"maps"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/homeswarm/homeswarm/netdriver/mesh"
	"github.com/homeswarm/homeswarm/netdriver/tun"
	"github.com/homeswarm/homeswarm/netdriver/wire"
)

// Frame layout on a Port: a virtio-net header, then Ethernet.
const (
	vnetLen  = tun.VirtioNetHdrLen
	ethLen   = 14
	frameHdr = vnetLen + ethLen // in front of the IP header

	etherIPv4 = 0x0800
	etherARP  = 0x0806

	// readSize holds a 64 KiB GSO packet with its headers.
	readSize = 65536 + frameHdr
	batch    = 64
)

// VirtualMAC is the address the switch answers ARP with: locally
// administered, never a real interface's (so the host's own stack ignores
// frames sent to it).
var VirtualMAC = net.HardwareAddr{0x02, 0x6d, 0x65, 0x73, 0x68, 0x01}

// Port is an endpoint's link as the switch sees it: frames with a
// virtio-net header in front (see package doc). Write may be called from
// several goroutines at once; Read from one.
type Port interface {
	// Read reads one frame into b and returns its length.
	Read(b []byte) (int, error)
	// Write sends the frame hdr+pkt (hdr: virtio header and Ethernet).
	Write(hdr, pkt []byte) error
	// Close ends Read with an error.
	Close() error
}

// Sender sends IP packets through the mesh; *mesh.Injector is one.
type Sender interface {
	// Send queues buf[mesh.Headroom:mesh.Headroom+n]; buf stays in use
	// until Flush.
	Send(buf []byte, n int)
	Flush()
}

// Endpoint is one container's address on one network.
type Endpoint struct {
	ID      string
	Network string
	Addr    netip.Addr
	MAC     net.HardwareAddr
	Pools   []netip.Prefix // the network's subnets
}

// Stats counts what the switch did, as read by Stats.
type Stats struct {
	Endpoints int               `json:"endpoints"`
	Networks  int               `json:"networks"`
	ToMesh    uint64            `json:"to_mesh"`
	FromMesh  uint64            `json:"from_mesh"`
	Local     uint64            `json:"local"`
	ARP       uint64            `json:"arp_replies"`
	Drops     map[string]uint64 `json:"drops"`
}

type dropReason int

const (
	dropMalformed dropReason = iota
	dropSpoofed
	dropOtherNetwork
	dropNoEndpoint
	dropNotIPv4
	dropWrite
	numDrops
)

var dropNames = [numDrops]string{"malformed", "spoofed_source", "other_network", "no_endpoint", "not_ipv4", "write_error"}

// port is an attached endpoint.
type port struct {
	ep   Endpoint
	mac  atomic.Pointer[net.HardwareAddr] // learned from its frames
	p    Port
	done chan struct{}

	rx     [][]byte // packets from the mesh held until Flush (mesh goroutine only)
	queued bool     // in Switch.dirty (mesh goroutine only)

	closed atomic.Bool
}

func (p *port) closedPort() bool { return p.closed.Load() }

func (p *port) close() {
	p.closed.Store(true)
	p.p.Close()
}

// table is an immutable snapshot read by the packet paths.
type table struct {
	byAddr map[netip.Addr]*port
	pools  []netip.Prefix // of every known network
}

// Switch connects endpoints with each other and with the mesh. Its
// methods are safe for concurrent use.
type Switch struct {
	newSender func() Sender
	log       *logrus.Entry

	mu       sync.Mutex
	networks map[string][]netip.Prefix
	ports    map[string]*port // by endpoint ID
	tab      atomic.Pointer[table]

	toMesh, fromMesh, local, arp atomic.Uint64
	drops                        [numDrops]atomic.Uint64

	// packets from the mesh held until Flush, touched only by the mesh's
	// receive goroutine
	dirty []*port
	coal  tun.Coalescer
}

var _ mesh.Receiver = (*Switch)(nil)

// NewMesh creates the mesh (mesh.New(opts)) and the switch between it and
// the containers: the mesh offers the switch every packet it receives
// (opts.Receiver is the switch), the switch sends the containers' packets
// through the mesh. The caller starts the mesh and closes both.
func NewMesh(opts mesh.Options, log *logrus.Entry) (*Switch, *mesh.Mesh, error) {
	s := New(nil, log)
	opts.Receiver = s
	m, err := mesh.New(opts)
	if err != nil {
		return nil, nil, err
	}
	s.newSender = func() Sender { return m.NewInjector() }
	return s, m, nil
}

// New returns a switch sending through senders made by newSender (one per
// endpoint reader). A nil log means logrus' standard logger. NewMesh makes
// one for a mesh.
func New(newSender func() Sender, log *logrus.Entry) *Switch {
	if log == nil {
		log = logrus.NewEntry(logrus.StandardLogger())
	}
	s := &Switch{newSender: newSender, log: log, networks: map[string][]netip.Prefix{}, ports: map[string]*port{},
		coal: tun.Coalescer{L2Len: ethLen}}
	s.tab.Store(&table{byAddr: map[netip.Addr]*port{}})
	return s
}

func (s *Switch) drop(r dropReason) { s.drops[r].Add(1) }

// rebuildLocked publishes a new snapshot.
func (s *Switch) rebuildLocked() {
	t := &table{byAddr: make(map[netip.Addr]*port, len(s.ports))}
	for _, p := range s.ports {
		t.byAddr[p.ep.Addr] = p
	}
	for _, ps := range s.networks {
		t.pools = append(t.pools, ps...)
	}
	s.tab.Store(t)
}

// AddNetwork makes the switch own a network's subnets: packets from the
// mesh to those addresses go to endpoints or are dropped, never to the
// host.
func (s *Switch) AddNetwork(id string, pools []netip.Prefix) {
	s.mu.Lock()
	s.networks[id] = append([]netip.Prefix(nil), pools...)
	s.rebuildLocked()
	s.mu.Unlock()
}

// RemoveNetwork forgets a network (its endpoints must be detached).
func (s *Switch) RemoveNetwork(id string) {
	s.mu.Lock()
	delete(s.networks, id)
	s.rebuildLocked()
	s.mu.Unlock()
}

// ErrPortClosed is returned by a closed port's Read.
var ErrPortClosed = errors.New("port closed")

// ErrAddrInUse is returned by Attach when another attached endpoint has
// the address.
var ErrAddrInUse = errors.New("address already attached")

// Attach starts switching ep's frames on p. The switch owns p from then
// on and closes it on Detach.
func (s *Switch) Attach(ep Endpoint, p Port) error {
	pt := &port{ep: ep, p: p, done: make(chan struct{})}
	mac := ep.MAC
	pt.mac.Store(&mac)
	s.mu.Lock()
	if old := s.tab.Load().byAddr[ep.Addr]; old != nil && old.ep.ID != ep.ID {
		s.mu.Unlock()
		return ErrAddrInUse
	}
	old := s.ports[ep.ID]
	s.ports[ep.ID] = pt
	s.rebuildLocked()
	s.mu.Unlock()
	if old != nil {
		old.close()
		<-old.done
	}
	go s.readLoop(pt)
	return nil
}

// Detach stops switching an endpoint and closes its port. Detaching an
// unknown endpoint does nothing.
func (s *Switch) Detach(id string) {
	s.mu.Lock()
	pt := s.ports[id]
	delete(s.ports, id)
	s.rebuildLocked()
	s.mu.Unlock()
	if pt != nil {
		pt.close()
		<-pt.done
	}
}

// Attached reports whether an endpoint is attached.
func (s *Switch) Attached(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ports[id] != nil
}

// Close detaches every endpoint.
func (s *Switch) Close() {
	s.mu.Lock()
	ids := slices.Collect(maps.Keys(s.ports))
	s.mu.Unlock()
	for _, id := range ids {
		s.Detach(id)
	}
}

// Stats returns the switch's counters.
func (s *Switch) Stats() Stats {
	s.mu.Lock()
	st := Stats{Endpoints: len(s.ports), Networks: len(s.networks)}
	s.mu.Unlock()
	st.ToMesh, st.FromMesh, st.Local, st.ARP = s.toMesh.Load(), s.fromMesh.Load(), s.local.Load(), s.arp.Load()
	st.Drops = map[string]uint64{}
	for i := range s.drops {
		if n := s.drops[i].Load(); n > 0 {
			st.Drops[dropNames[i]] = n
		}
	}
	return st
}

// readLoop switches the frames an endpoint sends until its port closes.
func (s *Switch) readLoop(pt *port) {
	defer close(pt.done)
	snd := s.newSender()
	big := make([]byte, readSize)
	bufs := make([][]byte, batch)
	sizes := make([]int, batch)
	for i := range bufs {
		bufs[i] = make([]byte, mesh.BufSize)
	}
	seg := tun.Segmenter{L2Len: ethLen}
	for {
		n, err := pt.p.Read(big)
		if err != nil {
			if errors.Is(err, ErrPortClosed) || errors.Is(err, syscall.ENETDOWN) || errors.Is(err, syscall.ENXIO) ||
				errors.Is(err, syscall.ENODEV) || pt.closedPort() {
				s.log.WithError(err).WithField("endpoint", ShortID(pt.ep.ID)).Debug("port closed")
				return
			}
			s.log.WithError(err).WithField("endpoint", ShortID(pt.ep.ID)).Debug("port read")
			time.Sleep(10 * time.Millisecond)
			continue
		}
		s.frame(pt, big[:n], &seg, bufs, sizes, snd)
		snd.Flush()
	}
}

// frame handles one frame read from pt (virtio header first).
func (s *Switch) frame(pt *port, f []byte, seg *tun.Segmenter, bufs [][]byte, sizes []int, snd Sender) {
	if len(f) < frameHdr {
		s.drop(dropMalformed)
		return
	}
	eth := f[vnetLen:]
	if src := net.HardwareAddr(eth[6:12]); src[0]&1 == 0 && !macEqual(src, *pt.mac.Load()) {
		learned := append(net.HardwareAddr(nil), src...)
		pt.mac.Store(&learned)
	}
	switch binary.BigEndian.Uint16(eth[12:14]) {
	case etherARP:
		s.answerARP(pt, eth[ethLen:])
		return
	case etherIPv4:
	default:
		s.drop(dropNotIPv4)
		return
	}
	pkt, ok := seg.Load(f)
	if !ok {
		s.drop(dropMalformed)
		return
	}
	if pkt != nil {
		if len(pkt) > mesh.BufSize-mesh.Headroom {
			s.drop(dropMalformed)
			return
		}
		sizes[0] = copy(bufs[0][mesh.Headroom:], pkt)
		s.packet(pt, bufs[0], sizes[0], snd)
		return
	}
	for seg.Pending() {
		n := seg.Fill(bufs, sizes, mesh.Headroom, 0)
		for i := range n {
			s.packet(pt, bufs[i], sizes[i], snd)
		}
		if n == 0 {
			break
		}
		snd.Flush()
	}
}

// packet routes the IP packet buf[mesh.Headroom:][:n] sent by pt.
func (s *Switch) packet(pt *port, buf []byte, n int, snd Sender) {
	pkt := buf[mesh.Headroom : mesh.Headroom+n]
	src, ok1 := wire.IPv4Src(pkt)
	dst, ok2 := wire.IPv4Dst(pkt)
	if !ok1 || !ok2 {
		s.drop(dropMalformed)
		return
	}
	if src != pt.ep.Addr {
		s.drop(dropSpoofed)
		return
	}
	if dst == src {
		s.drop(dropMalformed) // a kernel sends these over lo, never here
		return
	}
	if !InPools(pt.ep.Pools, dst) {
		s.drop(dropOtherNetwork)
		return
	}
	if to := s.tab.Load().byAddr[dst]; to != nil {
		if to.ep.Network != pt.ep.Network {
			s.drop(dropOtherNetwork)
			return
		}
		s.write(to, pkt)
		s.local.Add(1)
		return
	}
	s.toMesh.Add(1)
	snd.Send(buf, n)
}

// Deliver takes a packet from the mesh (mesh.Receiver): it holds it until
// Flush for the local endpoint owning its destination if its source is in
// that endpoint's network. It returns false (not ours) for destinations
// outside every known network, which then go to the host's mesh interface.
func (s *Switch) Deliver(pkt []byte) bool {
	dst, ok := wire.IPv4Dst(pkt)
	if !ok {
		return false
	}
	t := s.tab.Load()
	to := t.byAddr[dst]
	if to == nil {
		if InPools(t.pools, dst) {
			s.drop(dropNoEndpoint)
			return true
		}
		return false
	}
	src, _ := wire.IPv4Src(pkt)
	if !InPools(to.ep.Pools, src) {
		s.drop(dropOtherNetwork)
		return true
	}
	s.fromMesh.Add(1)
	if len(to.rx) == batch {
		s.flushPort(to) // the held packets go first: they came first
	}
	if !to.queued {
		to.queued = true
		s.dirty = append(s.dirty, to)
	}
	to.rx = append(to.rx, pkt)
	return true
}

// Flush writes the packets Deliver held (mesh.Receiver), each container's
// TCP segments merged into GSO super-packets where TCP allows: one write
// instead of dozens.
func (s *Switch) Flush() {
	for _, to := range s.dirty {
		s.flushPort(to)
		to.queued = false
	}
	clear(s.dirty)
	s.dirty = s.dirty[:0]
}

// flushPort writes the packets held for one container (mesh goroutine).
func (s *Switch) flushPort(to *port) {
	mac := *to.mac.Load()
	s.coal.Frames(to.rx, func(f []byte) error {
		putEth(f[vnetLen:frameHdr], mac, etherIPv4)
		if err := to.p.Write(f[:frameHdr], f[frameHdr:]); err != nil {
			s.drop(dropWrite)
		}
		return nil
	})
	clear(to.rx)
	to.rx = to.rx[:0]
}

// write sends an IP packet to an endpoint's container.
func (s *Switch) write(to *port, pkt []byte) {
	s.send(to.p, *to.mac.Load(), etherIPv4, pkt)
}

// send writes payload to p behind an empty virtio header and an Ethernet
// header from VirtualMAC to dst of type typ; a failed write is counted.
func (s *Switch) send(p Port, dst net.HardwareAddr, typ uint16, payload []byte) bool {
	var hdr [frameHdr]byte
	putEth(hdr[vnetLen:], dst, typ)
	if err := p.Write(hdr[:], payload); err != nil {
		s.drop(dropWrite)
		return false
	}
	return true
}

// putEth writes an Ethernet header from VirtualMAC to dst of type typ.
func putEth(eth []byte, dst net.HardwareAddr, typ uint16) {
	copy(eth[0:6], dst)
	copy(eth[6:12], VirtualMAC)
	binary.BigEndian.PutUint16(eth[12:], typ)
}

// answerARP replies to an ARP request for an address of pt's network
// (other than pt's own) with VirtualMAC.
func (s *Switch) answerARP(pt *port, a []byte) {
	// Ethernet/IPv4 ARP: htype 1, ptype 0x0800, hlen 6, plen 4
	if len(a) < 28 || binary.BigEndian.Uint16(a[0:]) != 1 || binary.BigEndian.Uint16(a[2:]) != etherIPv4 ||
		a[4] != 6 || a[5] != 4 {
		s.drop(dropMalformed)
		return
	}
	if binary.BigEndian.Uint16(a[6:]) != 1 { // only requests
		return
	}
	spa := netip.AddrFrom4([4]byte(a[14:18]))
	tpa := netip.AddrFrom4([4]byte(a[24:28]))
	if tpa == spa || tpa == pt.ep.Addr || !InPools(pt.ep.Pools, tpa) || isEdge(pt.ep.Pools, tpa) {
		return // gratuitous ARP, our own address, or not ours to answer
	}
	var r [28]byte
	copy(r[:6], a[:6])
	binary.BigEndian.PutUint16(r[6:], 2)
	copy(r[8:14], VirtualMAC)
	copy(r[14:18], a[24:28])
	copy(r[18:24], a[8:14])
	copy(r[24:28], a[14:18])
	if s.send(pt.p, a[8:14], etherARP, r[:]) {
		s.arp.Add(1)
	}
}

// InPools reports whether a is in one of the prefixes ps.
func InPools(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// isEdge reports whether a is the network or broadcast address of the
// pool containing it (for pools of /30 and larger).
func isEdge(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if !p.Contains(a) || p.Bits() > 30 {
			continue
		}
		b := a.As4()
		v := binary.BigEndian.Uint32(b[:])
		host := uint32(1)<<(32-p.Bits()) - 1
		return v&host == 0 || v&host == host
	}
	return false
}

func macEqual(a, b net.HardwareAddr) bool {
	return len(a) == len(b) && string(a) == string(b)
}

// ShortID is the part of a Docker ID that logs show (docker ps's 12
// characters).
func ShortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
