package proxyproto

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/netip"
	"testing"
)

func TestRead(t *testing.T) {
	t.Parallel()
	v4 := Header{Source: netip.MustParseAddrPort("203.0.113.99:40000"), Dest: netip.MustParseAddrPort("203.0.113.10:2525")}
	v6 := Header{Source: netip.MustParseAddrPort("[2001:db8::1]:1"), Dest: netip.MustParseAddrPort("[2001:db8::2]:2")}
	// Traefik's v2 header for a TCP4 client (go-proxyproto), with a TLV.
	traefik := append(Append(nil, v4)[:14], 0, 12+3)
	traefik = append(traefik, Append(nil, v4)[16:]...)
	traefik = append(traefik, 0x04, 0, 0) // PP2_TYPE_NOOP, empty
	tests := []struct {
		name string
		in   []byte
		want Header
		err  bool
	}{
		{"TCP4", Append(nil, v4), v4, false},
		{"TCP6", Append(nil, v6), v6, false},
		{"TLVs skipped", traefik, v4, false},
		{"LOCAL", Append(nil, Header{Local: true}), Header{Local: true}, false},
		{"v1 text", []byte("PROXY TCP4 203.0.113.99 203.0.113.10 40000 2525\r\n"), Header{}, true},
		{"short", Append(nil, v4)[:20], Header{}, true},
		{"short addresses", append(append(Append(nil, v4)[:14], 0, 4), 1, 2, 3, 4), Header{}, true},
		{"UNIX family", append([]byte(Signature), 0x21, 0x31, 0, 0), Header{}, true},
		{"empty", nil, Header{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := bufio.NewReader(bytes.NewReader(append(tt.in, "data\n"...)))
			got, err := Read(r)
			if (err != nil) != tt.err || got != tt.want {
				t.Fatalf("Read = %+v, %v; want %+v, error %v", got, err, tt.want, tt.err)
			}
			if err != nil {
				return
			}
			if rest, _ := io.ReadAll(r); string(rest) != "data\n" {
				t.Errorf("after the header: %q, want the connection's data", rest)
			}
		})
	}
	if _, err := Read(bytes.NewReader([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))); !errors.Is(err, ErrNotV2) {
		t.Errorf("HTTP request: %v, want ErrNotV2", err)
	}
}

// FuzzRead: no panic; whatever parses re-encodes to a header that parses
// the same.
func FuzzRead(f *testing.F) {
	f.Add(Append(nil, Header{Source: netip.MustParseAddrPort("203.0.113.99:40000"), Dest: netip.MustParseAddrPort("203.0.113.10:2525")}))
	f.Add(Append(nil, Header{Source: netip.MustParseAddrPort("[2001:db8::1]:1"), Dest: netip.MustParseAddrPort("[2001:db8::2]:2")}))
	f.Add(Append(nil, Header{Local: true}))
	f.Add([]byte(Signature + "\x21\x12\x00\x0c"))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := Read(bytes.NewReader(b))
		if err != nil {
			return
		}
		again, err := Read(bytes.NewReader(Append(nil, h)))
		if err != nil || again != h {
			t.Fatalf("%+v re-encoded reads as %+v, %v", h, again, err)
		}
	})
}
