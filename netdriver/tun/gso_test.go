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
		gso = append([]byte(nil), c.build(segs)...)
		return nil
	})
	var s segmenter
	if pkt, ok := s.load(gso); !ok || pkt != nil || !s.pending() {
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
	out, ok := s.load(b)
	if !ok || out == nil || !tcpChecksumOK(out) {
		t.Fatal("checksum not completed")
	}
	if _, ok := s.load([]byte{1, 2, 3}); ok {
		t.Fatal("short read accepted")
	}
	b[1] = 4 // TCPv6 GSO: not requested, dropped
	if _, ok := s.load(b); ok {
		t.Fatal("unexpected GSO type accepted")
	}
}
