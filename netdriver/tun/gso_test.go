package tun

import (
	"bytes"
	"encoding/binary"
	"testing"
)

func tcpChecksumOK(seg []byte) bool {
	iphl := int(seg[0]&0xf) * 4
	var ph [12]byte
	copy(ph[:8], seg[12:20])
	ph[9] = 6
	binary.BigEndian.PutUint16(ph[10:], uint16(len(seg)-iphl))
	return checksum(seg[iphl:], uint32(checksum(ph[:], 0))) == 0xffff
}

// TestSegmenterUndoesCoalescer splits what the coalescer merged, across
// several small batches, and gets the original segments back.
func TestSegmenterUndoesCoalescer(t *testing.T) {
	t.Parallel()
	var orig [][]byte
	for i := range 7 {
		p := bytes.Repeat([]byte{byte('a' + i)}, 1000)
		flags := byte(tcpFlagACK)
		if i == 6 {
			p, flags = p[:123], flags|tcpFlagPSH
		}
		orig = append(orig, tcp4(1, 2, 9, uint32(5000+i*1000), flags, p))
	}
	var c coalescer
	var gso []byte
	c.groups(orig, 0, func(run [][]byte, segs []tcpSeg) error {
		gso = append([]byte(nil), c.build(segs, 0)...)
		return nil
	})
	var s segmenter
	if pkt, ok := s.load(gso, 0); !ok || pkt != nil || !s.pending() {
		t.Fatal("GSO packet not queued")
	}
	var got [][]byte
	for s.pending() {
		bufs := [][]byte{make([]byte, 1600), make([]byte, 1600), make([]byte, 1600)}
		sizes := make([]int, 3)
		n := s.fill(bufs, sizes, 8, 0)
		for i := range n {
			got = append(got, bufs[i][8:8+sizes[i]])
		}
	}
	if len(got) != len(orig) {
		t.Fatalf("%d segments, want %d", len(got), len(orig))
	}
	for i, g := range got {
		if checksum(g[:20], 0) != 0xffff || !tcpChecksumOK(g) {
			t.Fatalf("segment %d: bad checksum", i)
		}
		if binary.BigEndian.Uint16(g[4:]) != uint16(i) {
			t.Fatalf("segment %d: IP ID %d", i, binary.BigEndian.Uint16(g[4:]))
		}
		// apart from the IP ID and both checksums, it is the original
		o := append([]byte(nil), orig[i]...)
		for _, b := range [][]byte{o, g} {
			b[4], b[5], b[10], b[11], b[36], b[37] = 0, 0, 0, 0, 0, 0
		}
		if !bytes.Equal(o, g) {
			t.Fatalf("segment %d differs:\n% x\n% x", i, o[:60], g[:60])
		}
	}
}

func TestSegmenterCompletesChecksum(t *testing.T) {
	t.Parallel()
	pkt := tcp4(1, 2, 9, 1, tcpFlagACK, []byte("hello"))
	// as the kernel hands it over with checksum offload: pseudo-header sum only
	var ph [12]byte
	copy(ph[:8], pkt[12:20])
	ph[9] = 6
	binary.BigEndian.PutUint16(ph[10:], uint16(len(pkt)-20))
	binary.BigEndian.PutUint16(pkt[36:], checksum(ph[:], 0))
	b := make([]byte, VirtioNetHdrLen, VirtioNetHdrLen+len(pkt))
	putVirtioHdr(b, virtioNetHdrFNeedsCsum, virtioNetHdrGSONone, 0, 0, 20, 16)
	b = append(b, pkt...)
	var s segmenter
	out, ok := s.load(b, 0)
	if !ok || out == nil || !tcpChecksumOK(out) {
		t.Fatal("checksum not completed")
	}
	if _, ok := s.load([]byte{1, 2, 3}, 0); ok {
		t.Fatal("short read accepted")
	}
	b[1] = 4 // TCPv6 GSO: not requested, dropped
	if _, ok := s.load(b, 0); ok {
		t.Fatal("unexpected GSO type accepted")
	}
}

// TestL2Offset: with an Ethernet header between the virtio header and the
// IP header (a packet socket), the Coalescer leaves room for it and counts
// it in csum_start and hdr_len, and the Segmenter reads such frames back.
func TestL2Offset(t *testing.T) {
	t.Parallel()
	const eth = 14
	var orig [][]byte
	for i := range 3 {
		orig = append(orig, tcp4(1, 2, 9, uint32(100+i*500), tcpFlagACK, bytes.Repeat([]byte{byte('a' + i)}, 500)))
	}
	orig = append(orig, tcp4(1, 2, 9, 7, tcpFlagSYN, nil)) // not merged
	var frames [][]byte
	c := Coalescer{L2Len: eth}
	c.Frames(orig, func(f []byte) error {
		frames = append(frames, append([]byte(nil), f...))
		return nil
	})
	if len(frames) != 2 {
		t.Fatalf("%d frames, want a merged one and a plain one", len(frames))
	}
	g := frames[0]
	if g[1] != virtioNetHdrGSOTCPv4 || binary.LittleEndian.Uint16(g[2:]) != eth+52 ||
		binary.LittleEndian.Uint16(g[6:]) != eth+20 || len(g) != VirtioNetHdrLen+eth+52+1500 {
		t.Fatalf("GSO frame header % x, length %d", g[:VirtioNetHdrLen], len(g))
	}
	if u := frames[1]; u[0] != 0 || u[1] != 0 || !bytes.Equal(u[VirtioNetHdrLen+eth:], orig[3]) {
		t.Fatalf("plain frame % x", u)
	}

	s := Segmenter{L2Len: eth}
	if pkt, ok := s.Load(g); !ok || pkt != nil || !s.Pending() {
		t.Fatal("GSO frame not queued")
	}
	bufs := [][]byte{make([]byte, 1600), make([]byte, 1600), make([]byte, 1600)}
	sizes := make([]int, 3)
	if n := s.Fill(bufs, sizes, 0, 0); n != 3 || s.Pending() {
		t.Fatalf("%d segments", n)
	}
	for i := range 3 {
		if g := bufs[i][:sizes[i]]; !tcpChecksumOK(g) || !bytes.Equal(g[52:], orig[i][52:]) {
			t.Fatalf("segment %d differs", i)
		}
	}
	if pkt, ok := s.Load(frames[1]); !ok || !bytes.Equal(pkt, orig[3]) {
		t.Fatalf("plain frame read back as % x", pkt)
	}

	// checksum offload: csum_start counts the link-layer header
	pkt := tcp4(1, 2, 9, 1, tcpFlagACK, []byte("hello"))
	var ph [12]byte
	copy(ph[:8], pkt[12:20])
	ph[9] = 6
	binary.BigEndian.PutUint16(ph[10:], uint16(len(pkt)-20))
	binary.BigEndian.PutUint16(pkt[36:], checksum(ph[:], 0))
	f := make([]byte, VirtioNetHdrLen+eth, VirtioNetHdrLen+eth+len(pkt))
	putVirtioHdr(f, virtioNetHdrFNeedsCsum, virtioNetHdrGSONone, 0, 0, eth+20, 16)
	f = append(f, pkt...)
	if out, ok := s.Load(f); !ok || !tcpChecksumOK(out) || out[0] != 0x45 {
		t.Fatal("checksum not completed")
	}
	binary.LittleEndian.PutUint16(f[6:], eth-1) // checksum starting in the Ethernet header
	if _, ok := s.Load(f); ok {
		t.Fatal("csum_start inside the link-layer header accepted")
	}
}
