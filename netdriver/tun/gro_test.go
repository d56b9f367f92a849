package tun

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// tcp4 builds an IPv4 TCP segment with a timestamp option.
func tcp4(src, dst byte, sport uint16, seq uint32, flags byte, payload []byte) []byte {
	const thl = 32
	p := make([]byte, 20+thl+len(payload))
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	p[6] = 0x40 // DF
	p[8] = 64
	p[9] = 6
	p[12], p[15] = 10, src
	p[16], p[19] = 10, dst
	binary.BigEndian.PutUint16(p[10:], ^checksum(p[:20], 0))
	binary.BigEndian.PutUint16(p[20:], sport)
	binary.BigEndian.PutUint16(p[22:], 5001)
	binary.BigEndian.PutUint32(p[24:], seq)
	binary.BigEndian.PutUint32(p[28:], 777)
	p[32] = thl / 4 << 4
	p[33] = flags
	binary.BigEndian.PutUint16(p[34:], 512)
	copy(p[40:], []byte{1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2})
	copy(p[20+thl:], payload)
	return p
}

func TestCoalescerGroups(t *testing.T) {
	t.Parallel()
	pl := func(c byte, n int) []byte { return bytes.Repeat([]byte{c}, n) }
	ack := byte(tcpFlagACK)
	udp := append([]byte{0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17}, make([]byte, 18)...)
	tests := []struct {
		name string
		pkts [][]byte
		want []int // packets per emitted run
	}{
		{"flow merges", [][]byte{tcp4(1, 2, 1, 0, ack, pl('a', 100)), tcp4(1, 2, 1, 100, ack, pl('b', 100)), tcp4(1, 2, 1, 200, ack, pl('c', 50))}, []int{3}},
		{"short segment ends run", [][]byte{tcp4(1, 2, 1, 0, ack, pl('a', 100)), tcp4(1, 2, 1, 100, ack, pl('b', 50)), tcp4(1, 2, 1, 150, ack, pl('c', 100))}, []int{2, 1}},
		{"psh ends run", [][]byte{tcp4(1, 2, 1, 0, ack|tcpFlagPSH, pl('a', 100)), tcp4(1, 2, 1, 100, ack, pl('b', 100))}, []int{1, 1}},
		{"gap", [][]byte{tcp4(1, 2, 1, 0, ack, pl('a', 100)), tcp4(1, 2, 1, 300, ack, pl('b', 100))}, []int{1, 1}},
		{"other flow", [][]byte{tcp4(1, 2, 1, 0, ack, pl('a', 100)), tcp4(1, 2, 2, 100, ack, pl('b', 100))}, []int{1, 1}},
		{"syn not merged", [][]byte{tcp4(1, 2, 1, 0, tcpFlagSYN, nil), tcp4(1, 2, 1, 1, ack, pl('b', 100))}, []int{1, 1}},
		{"pure acks not merged", [][]byte{tcp4(1, 2, 1, 0, ack, nil), tcp4(1, 2, 1, 0, ack, nil)}, []int{1, 1}},
		{"udp between", [][]byte{tcp4(1, 2, 1, 0, ack, pl('a', 100)), udp, tcp4(1, 2, 1, 100, ack, pl('b', 100))}, []int{1, 1, 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var c coalescer
			var got []int
			bufs := make([][]byte, len(tt.pkts))
			for i, p := range tt.pkts {
				bufs[i] = append(make([]byte, 4), p...)
			}
			c.groups(bufs, 4, func(run [][]byte, segs []tcpSeg) error {
				got = append(got, len(run))
				return nil
			})
			if !equalInts(got, tt.want) {
				t.Fatalf("runs %v, want %v", got, tt.want)
			}
		})
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestCoalescerBuild(t *testing.T) {
	t.Parallel()
	var pkts [][]byte
	var payload []byte
	for i := range 5 {
		p := bytes.Repeat([]byte{byte('a' + i)}, 1000)
		if i == 4 {
			p = p[:300]
		}
		flags := byte(tcpFlagACK)
		if i == 4 {
			flags |= tcpFlagPSH
		}
		pkts = append(pkts, tcp4(1, 2, 1, uint32(1000+i*1000), flags, p))
		payload = append(payload, p...)
	}
	var c coalescer
	var out []byte
	c.groups(pkts, 0, func(run [][]byte, segs []tcpSeg) error {
		if len(run) != 5 {
			t.Fatalf("run of %d", len(run))
		}
		out = append([]byte(nil), c.build(segs, 0)...)
		return nil
	})
	hdr, pkt := out[:VirtioNetHdrLen], out[VirtioNetHdrLen:]
	if hdr[0] != virtioNetHdrFNeedsCsum || hdr[1] != virtioNetHdrGSOTCPv4 ||
		binary.LittleEndian.Uint16(hdr[2:]) != 52 || binary.LittleEndian.Uint16(hdr[4:]) != 1000 ||
		binary.LittleEndian.Uint16(hdr[6:]) != 20 || binary.LittleEndian.Uint16(hdr[8:]) != 16 {
		t.Fatalf("virtio header % x", hdr)
	}
	if int(binary.BigEndian.Uint16(pkt[2:])) != len(pkt) || len(pkt) != 52+len(payload) {
		t.Fatalf("ip length %d, packet %d", binary.BigEndian.Uint16(pkt[2:]), len(pkt))
	}
	if checksum(pkt[:20], 0) != 0xffff {
		t.Fatal("bad IPv4 header checksum")
	}
	if !bytes.Equal(pkt[52:], payload) || binary.BigEndian.Uint32(pkt[24:]) != 1000 || pkt[33] != tcpFlagACK|tcpFlagPSH {
		t.Fatal("payload, sequence or flags wrong")
	}
	// completing the partial checksum over the TCP segment gives a valid one
	seg := append([]byte(nil), pkt[20:]...)
	partial := binary.BigEndian.Uint16(seg[16:])
	seg[16], seg[17] = 0, 0
	full := ^checksum(seg, uint32(partial))
	var ph [12]byte
	copy(ph[:8], pkt[12:20])
	ph[9] = 6
	binary.BigEndian.PutUint16(ph[10:], uint16(len(seg)))
	binary.BigEndian.PutUint16(seg[16:], full)
	if checksum(seg, uint32(checksum(ph[:], 0))) != 0xffff {
		t.Fatal("TCP checksum does not verify")
	}
}
