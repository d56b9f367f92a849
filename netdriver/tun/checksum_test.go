package tun

import (
	"encoding/binary"
	"fmt"
	"math/rand"
	"testing"
)

// checksumRef is RFC 1071 word by word, the definition checksum must equal.
func checksumRef(b []byte, initial uint32) uint16 {
	sum := initial
	for len(b) >= 2 {
		sum += uint32(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		sum += uint32(b[0]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return uint16(sum)
}

func TestChecksumMatchesRFC1071(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewSource(1))
	for _, n := range []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 15, 17, 31, 32, 33, 39, 63, 1392, 1500, 65535} {
		for _, fill := range []byte{0x00, 0xff, 0} {
			b := make([]byte, n)
			for i := range b {
				if fill == 0 {
					b[i] = byte(rng.Intn(256))
				} else {
					b[i] = fill
				}
			}
			for _, initial := range []uint32{0, 0xffff, 0x1fffe, rng.Uint32() & 0xfffff} {
				if got, want := checksum(b, initial), checksumRef(b, initial); got != want {
					t.Fatalf("n=%d fill=%#x initial=%#x: %#04x, want %#04x", n, fill, initial, got, want)
				}
			}
		}
	}
}

// BenchmarkChecksum compares checksum with the word-by-word reference
// (the implementation it replaced), per packet size.
func BenchmarkChecksum(b *testing.B) {
	for _, n := range []int{1392, 65535} {
		buf := make([]byte, n)
		for name, f := range map[string]func([]byte, uint32) uint16{"words64": checksum, "rfc1071": checksumRef} {
			b.Run(fmt.Sprintf("%s/%d", name, n), func(b *testing.B) {
				b.SetBytes(int64(n))
				b.ReportAllocs()
				for b.Loop() {
					f(buf, 0)
				}
			})
		}
	}
}
