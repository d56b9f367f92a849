package tun

import "encoding/binary"

// Transmit offload (TSO): with it the kernel hands the TUN reader one
// TCP super-packet of up to 64 KiB instead of dozens of MSS-sized ones, and
// leaves checksums to us. segmenter splits such a packet back into
// MTU-sized segments with complete checksums, across Read calls if the
// caller's batch is full.
const (
	tunFCsum = 0x01 // TUN_F_CSUM
	tunFTSO4 = 0x02 // TUN_F_TSO4

	virtioNetHdrGSOECN = 0x80
)

type segmenter struct {
	pkt   []byte // pending GSO packet (no virtio header), nil if none
	mss   int
	start int // payload offset of the next segment
}

// pending reports whether segments remain to be emitted.
func (s *segmenter) pending() bool { return s.pkt != nil }

// load accepts one packet as read: virtio header, l2 bytes of link-layer
// header, IP header. It returns the IP packet to deliver as is (with its
// checksum completed if needed), or nil after queueing a GSO packet for
// fill, or nil and false to drop it.
func (s *segmenter) load(b []byte, l2 int) ([]byte, bool) {
	if len(b) < VirtioNetHdrLen+l2 {
		return nil, false
	}
	flags, gsoType := b[0], b[1]&^virtioNetHdrGSOECN
	gsoSize := int(binary.LittleEndian.Uint16(b[4:]))
	csumStart := int(binary.LittleEndian.Uint16(b[6:]))
	csumOffset := int(binary.LittleEndian.Uint16(b[8:]))
	frame := b[VirtioNetHdrLen:] // csum_start counts from here
	if flags&virtioNetHdrFNeedsCsum != 0 && csumStart < l2 {
		return nil, false // a checksum starting in the link-layer header
	}
	pkt := frame[l2:]
	switch gsoType {
	case virtioNetHdrGSONone:
		if flags&virtioNetHdrFNeedsCsum != 0 {
			if csumStart+csumOffset+2 > len(frame) {
				return nil, false
			}
			// the field holds the pseudo-header sum (CHECKSUM_PARTIAL)
			binary.BigEndian.PutUint16(frame[csumStart+csumOffset:], ^checksum(frame[csumStart:], 0))
		}
		return pkt, true
	case virtioNetHdrGSOTCPv4:
		if len(pkt) < 40 || pkt[0]>>4 != 4 || pkt[9] != 6 || gsoSize <= 0 {
			return nil, false
		}
		iphl := int(pkt[0]&0xf) * 4
		if iphl < 20 || iphl+20 > len(pkt) {
			return nil, false
		}
		hl := iphl + int(pkt[iphl+12]>>4)*4
		if hl > len(pkt) {
			return nil, false
		}
		s.pkt, s.mss, s.start = pkt, gsoSize, 0
		return nil, true
	}
	return nil, false
}

// fill writes pending segments into bufs[i][offset:] from index i, and
// returns the next free index.
func (s *segmenter) fill(bufs [][]byte, sizes []int, offset, i int) int {
	pkt := s.pkt
	iphl := int(pkt[0]&0xf) * 4
	hl := iphl + int(pkt[iphl+12]>>4)*4
	payload := pkt[hl:]
	id := binary.BigEndian.Uint16(pkt[4:])
	seq := binary.BigEndian.Uint32(pkt[iphl+4:])
	flags := pkt[iphl+13]
	for ; i < len(bufs) && s.start < len(payload); i++ {
		end := min(s.start+s.mss, len(payload))
		dst := bufs[i][offset:]
		if len(dst) < hl+end-s.start {
			s.pkt = nil // segments do not fit the caller's buffers: drop the rest
			return i
		}
		copy(dst, pkt[:hl])
		n := hl + copy(dst[hl:], payload[s.start:end])
		seg := dst[:n]
		// IPv4 header
		binary.BigEndian.PutUint16(seg[2:], uint16(n))
		binary.BigEndian.PutUint16(seg[4:], id+uint16(s.start/s.mss))
		seg[10], seg[11] = 0, 0
		binary.BigEndian.PutUint16(seg[10:], ^checksum(seg[:iphl], 0))
		// TCP header
		tcp := seg[iphl:]
		binary.BigEndian.PutUint32(tcp[4:], seq+uint32(s.start))
		f := flags
		if end < len(payload) {
			f &^= tcpFlagFIN | tcpFlagPSH
		}
		if s.start > 0 {
			f &^= 0x80 // CWR only on the first segment
		}
		tcp[13] = f
		tcp[16], tcp[17] = 0, 0
		var ph [12]byte
		copy(ph[:8], seg[12:20])
		ph[9] = 6
		binary.BigEndian.PutUint16(ph[10:], uint16(len(tcp)))
		binary.BigEndian.PutUint16(tcp[16:], ^checksum(tcp, uint32(checksum(ph[:], 0))))
		sizes[i] = n
		s.start = end
	}
	if s.start >= len(payload) {
		s.pkt = nil
	}
	return i
}

// Segmenter splits the virtio-net GSO packets a TUN or AF_PACKET socket
// with a virtio header delivers into MTU-sized IPv4 packets with complete
// checksums.
type Segmenter struct {
	// L2Len is the length of the link-layer header between the virtio
	// header and the IP header: 14 for Ethernet on a packet socket, 0 (the
	// zero value) for TUN. The header's csum_start counts it, as the
	// kernel's does.
	L2Len int

	s segmenter
}

// Load takes one frame: virtio header, L2Len bytes of link-layer header,
// IP packet. It returns the IP packet to use as is, or nil and true when
// segments are pending for Fill, or nil and false to drop the frame.
func (s *Segmenter) Load(b []byte) ([]byte, bool) { return s.s.load(b, s.L2Len) }

// Pending reports whether Fill has segments left.
func (s *Segmenter) Pending() bool { return s.s.pending() }

// Fill writes pending segments into bufs[i][offset:] (lengths in sizes)
// from index i and returns the next free index.
func (s *Segmenter) Fill(bufs [][]byte, sizes []int, offset, i int) int {
	return s.s.fill(bufs, sizes, offset, i)
}
