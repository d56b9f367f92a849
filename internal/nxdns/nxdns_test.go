//go:build linux

package nxdns

import (
	"bytes"
	"net"
	"testing"
	"time"
)

// query for "w1." type A, class IN, with RD set and an EDNS OPT record.
var query = []byte{
	0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 1,
	2, 'w', '1', 0, 0, 1, 0, 1,
	0, 0, 41, 0x10, 0, 0, 0, 0, 0, 0, 0,
}

func TestNXDomain(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		in   []byte
		want []byte
	}{
		{"query", query, []byte{0x12, 0x34, 0x81, 0x83, 0, 1, 0, 0, 0, 0, 0, 0, 2, 'w', '1', 0, 0, 1, 0, 1}},
		{"short", query[:11], nil},
		{"response", append([]byte{0x12, 0x34, 0x81}, query[3:]...), nil},
		{"truncated name", query[:14], nil},
		{"no type", query[:17], nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := NXDomain(tc.in); !bytes.Equal(got, tc.want) {
				t.Fatalf("NXDomain = %x, want %x", got, tc.want)
			}
		})
	}
}

func TestServer(t *testing.T) {
	t.Parallel()
	s, err := Listen("", "127.0.0.1:0")
	if err != nil {
		t.Skip("no UDP on loopback:", err)
	}
	defer s.Close()
	c, err := net.Dial("udp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write(query); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 512)
	if _, err := c.Read(buf); err != nil {
		t.Fatal(err)
	}
	if buf[3]&0x0f != 3 {
		t.Fatalf("rcode %d, want NXDOMAIN", buf[3]&0x0f)
	}
}
