package tun

import (
	"bytes"
	"encoding/binary"
	"math/bits"
)

// VirtioNetHdrLen is the size of the virtio_net_hdr that precedes every
// packet on a TUN opened with IFF_VNET_HDR.
const VirtioNetHdrLen = 10

const (
	virtioNetHdrFNeedsCsum = 1
	virtioNetHdrGSONone    = 0
	virtioNetHdrGSOTCPv4   = 1

	maxCoalescedLen = 65535
	tcpFlagFIN      = 0x01
	tcpFlagSYN      = 0x02
	tcpFlagRST      = 0x04
	tcpFlagPSH      = 0x08
	tcpFlagACK      = 0x10
)

// putVirtioHdr writes a virtio_net_hdr (little endian, as the host) into b.
func putVirtioHdr(b []byte, flags, gsoType uint8, hdrLen, gsoSize, csumStart, csumOffset uint16) {
	b[0], b[1] = flags, gsoType
	binary.LittleEndian.PutUint16(b[2:], hdrLen)
	binary.LittleEndian.PutUint16(b[4:], gsoSize)
	binary.LittleEndian.PutUint16(b[6:], csumStart)
	binary.LittleEndian.PutUint16(b[8:], csumOffset)
}

// tcpSeg describes an IPv4 TCP packet that may be coalesced.
type tcpSeg struct {
	pkt     []byte
	hdrLen  int // IP + TCP header
	payload int
	seq     uint32
	flags   byte
}

// parseTCP4 returns the segment if pkt is a plain IPv4 TCP packet that GRO
// may merge: no IP options, not fragmented, only ACK (and PSH) set.
func parseTCP4(pkt []byte) (tcpSeg, bool) {
	if len(pkt) < 40 || pkt[0] != 0x45 || pkt[9] != 6 {
		return tcpSeg{}, false
	}
	if int(binary.BigEndian.Uint16(pkt[2:])) != len(pkt) {
		return tcpSeg{}, false
	}
	if binary.BigEndian.Uint16(pkt[6:])&0x3fff != 0 { // MF or fragment offset
		return tcpSeg{}, false
	}
	thl := int(pkt[32]>>4) * 4
	if thl < 20 || 20+thl > len(pkt) {
		return tcpSeg{}, false
	}
	flags := pkt[33]
	if flags&^(tcpFlagACK|tcpFlagPSH) != 0 || flags&tcpFlagACK == 0 {
		return tcpSeg{}, false
	}
	return tcpSeg{pkt: pkt, hdrLen: 20 + thl, payload: len(pkt) - 20 - thl, seq: binary.BigEndian.Uint32(pkt[24:]), flags: flags}, true
}

// canFollow reports whether s continues the flow of first directly after
// a group whose next expected sequence number is next.
func canFollow(first, s tcpSeg, next uint32) bool {
	a, b := first.pkt, s.pkt
	return s.hdrLen == first.hdrLen && s.seq == next && s.payload > 0 &&
		s.payload <= first.payload &&
		a[1] == b[1] && a[8] == b[8] && // TOS, TTL
		a[6]&0x40 == b[6]&0x40 && // DF
		bytes.Equal(a[12:24], b[12:24]) && // addresses and ports
		bytes.Equal(a[28:32], b[28:32]) && // ack number
		bytes.Equal(a[34:36], b[34:36]) && // window
		bytes.Equal(a[40:first.hdrLen], b[40:s.hdrLen]) // TCP options
}

// coalescer merges runs of consecutive in-order TCP segments of one flow
// into GSO super-packets, so the kernel receives one large segment instead
// of dozens: the receive-side half of TUN offloads (GRO).
type coalescer struct {
	scratch []byte // one super-packet being built, with its virtio header
}

// groups splits pkts into runs that can be written as one packet each and
// calls emit for every run (a single packet or a merged group).
func (c *coalescer) groups(pkts [][]byte, offset int, emit func(run [][]byte, segs []tcpSeg) error) error {
	var run [][]byte
	var segs []tcpSeg
	var runBuf [64][]byte
	var segBuf [64]tcpSeg
	next := uint32(0)
	total := 0
	flush := func() error {
		if len(run) == 0 {
			return nil
		}
		err := emit(run, segs)
		run, segs = runBuf[:0], segBuf[:0]
		return err
	}
	run, segs = runBuf[:0], segBuf[:0]
	for _, b := range pkts {
		p := b[offset:]
		s, ok := parseTCP4(p)
		if !ok {
			if err := flush(); err != nil {
				return err
			}
			run = append(run, p)
			if err := flush(); err != nil {
				return err
			}
			continue
		}
		if len(segs) > 0 {
			first, last := segs[0], segs[len(segs)-1]
			if len(run) < len(runBuf) && last.flags&tcpFlagPSH == 0 && last.payload == first.payload &&
				total+s.payload <= maxCoalescedLen && canFollow(first, s, next) {
				run = append(run, p)
				segs = append(segs, s)
				next += uint32(s.payload)
				total += s.payload
				continue
			}
			if err := flush(); err != nil {
				return err
			}
		}
		run = append(run, p)
		segs = append(segs, s)
		next = s.seq + uint32(s.payload)
		total = len(p)
	}
	return flush()
}

// build assembles a merged group into c.scratch: virtio header, l2 bytes
// left for a link-layer header, the first segment's headers with lengths
// and checksums fixed for GSO, then every payload. The kernel splits it
// again only if it must forward it.
func (c *coalescer) build(segs []tcpSeg, l2 int) []byte {
	first := segs[0]
	n := VirtioNetHdrLen + l2 + first.hdrLen
	for _, s := range segs {
		n += s.payload
	}
	if cap(c.scratch) < n {
		c.scratch = make([]byte, n, maxCoalescedLen+VirtioNetHdrLen+l2+64)
	}
	b := c.scratch[:n]
	pkt := b[VirtioNetHdrLen+l2:]
	copy(pkt, first.pkt[:first.hdrLen])
	off := first.hdrLen
	for _, s := range segs {
		off += copy(pkt[off:], s.pkt[s.hdrLen:])
	}
	// IPv4 header: total length and checksum
	binary.BigEndian.PutUint16(pkt[2:], uint16(len(pkt)))
	pkt[10], pkt[11] = 0, 0
	binary.BigEndian.PutUint16(pkt[10:], ^checksum(pkt[:20], 0))
	// TCP: PSH from the last segment; checksum field holds the pseudo-header
	// sum, the kernel completes it (CHECKSUM_PARTIAL)
	if segs[len(segs)-1].flags&tcpFlagPSH != 0 {
		pkt[33] |= tcpFlagPSH
	}
	tcpLen := len(pkt) - 20
	var ph [12]byte
	copy(ph[0:8], pkt[12:20])
	ph[9] = 6
	binary.BigEndian.PutUint16(ph[10:], uint16(tcpLen))
	binary.BigEndian.PutUint16(pkt[36:], checksum(ph[:], 0))
	putVirtioHdr(b, virtioNetHdrFNeedsCsum, virtioNetHdrGSOTCPv4, uint16(l2+first.hdrLen), uint16(first.payload), uint16(l2+20), 16)
	return b
}

// checksum returns the folded ones' complement sum of b added to initial.
func checksum(b []byte, initial uint32) uint16 {
	// The ones' complement sum does not depend on byte order (RFC 1071
	// 2(B)): b is summed as little-endian 64-bit words with end-around
	// carries, folded to 16 bits and byte-swapped to network order, one
	// addition per 8 bytes (this runs over every byte the mesh offloads).
	var s, c uint64
	for len(b) >= 32 {
		s, c = bits.Add64(s, binary.LittleEndian.Uint64(b), c)
		s, c = bits.Add64(s, binary.LittleEndian.Uint64(b[8:]), c)
		s, c = bits.Add64(s, binary.LittleEndian.Uint64(b[16:]), c)
		s, c = bits.Add64(s, binary.LittleEndian.Uint64(b[24:]), c)
		b = b[32:]
	}
	for len(b) >= 8 {
		s, c = bits.Add64(s, binary.LittleEndian.Uint64(b), c)
		b = b[8:]
	}
	var tail uint64
	switch n := len(b); {
	case n >= 4:
		tail = uint64(binary.LittleEndian.Uint32(b))
		b = b[4:]
		fallthrough
	default:
		var t uint64
		if len(b) >= 2 {
			t = uint64(binary.LittleEndian.Uint16(b))
			b = b[2:]
		}
		if len(b) == 1 {
			t += uint64(b[0])
		}
		tail += t
	}
	s, c = bits.Add64(s, tail, c)
	s, c = bits.Add64(s, c, 0)
	s += c // cannot carry again: s is 0 if the last addition did
	s = s>>32 + s&0xffffffff
	s = s>>16 + s&0xffff
	s = s>>16 + s&0xffff
	sum := uint32(bits.ReverseBytes16(uint16(s))) + initial
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return uint16(sum)
}

// Coalescer merges runs of consecutive TCP segments of one flow into GSO
// super-packets, for writers other than a TUN device (a packet socket
// with a virtio header).
type Coalescer struct {
	// L2Len is the room left for a link-layer header between the virtio
	// header and the IP header of each frame: 14 for Ethernet on a packet
	// socket. The emitted csum_start and hdr_len count it, as the kernel
	// expects. Zero: frames are virtio header and IP packet.
	L2Len int

	c coalescer
}

// Frames calls emit with each packet of pkts or merged run of them as a
// frame: virtio header, L2Len bytes for the caller to fill with a
// link-layer header, IP packet. The frame is only valid during the call.
func (c *Coalescer) Frames(pkts [][]byte, emit func(frame []byte) error) error {
	l2 := c.L2Len
	return c.c.groups(pkts, 0, func(run [][]byte, segs []tcpSeg) error {
		if len(run) > 1 {
			return emit(c.c.build(segs, l2))
		}
		n := VirtioNetHdrLen + l2 + len(run[0])
		if cap(c.c.scratch) < n {
			c.c.scratch = make([]byte, n, max(n, maxCoalescedLen+VirtioNetHdrLen+l2+64))
		}
		b := c.c.scratch[:n]
		clear(b[:VirtioNetHdrLen])
		copy(b[VirtioNetHdrLen+l2:], run[0])
		return emit(b)
	})
}
