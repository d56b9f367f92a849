package main

import (
	"bufio"
	"crypto/tls"
	"net"
	"net/netip"
	"testing"

	"github.com/homeswarm/homeswarm/internal/proxyproto"
)

// The banner reports the PROXY header's client, over plain TCP and TLS;
// without -proxy, the peer.
func TestSession(t *testing.T) {
	t.Parallel()
	cert, err := selfSigned("a.test")
	if err != nil {
		t.Fatal(err)
	}
	src := netip.MustParseAddrPort("203.0.113.99:40000")
	hdr := proxyproto.Append(nil, proxyproto.Header{Source: src, Dest: netip.MustParseAddrPort("203.0.113.10:2525")})
	tests := []struct {
		name, banner string
		proxy        bool
		conf         *tls.Config
	}{
		{"tcp proxy", "l4echo h client 203.0.113.99:40000\n", true, nil},
		{"tls proxy", "l4echo h client 203.0.113.99:40000\n", true, &tls.Config{Certificates: []tls.Certificate{cert}}},
		{"tcp", "l4echo h client pipe\n", false, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv, cli := net.Pipe()
			defer cli.Close()
			go func() { defer srv.Close(); session(srv, "h", tt.proxy, tt.conf) }()
			if tt.proxy {
				cli.Write(hdr) // returns once the server has read it
			}
			var c net.Conn = cli
			if tt.conf != nil {
				c = tls.Client(cli, &tls.Config{ServerName: "a.test", InsecureSkipVerify: true})
			}
			r := bufio.NewReader(c)
			if l, err := r.ReadString('\n'); err != nil || l != tt.banner {
				t.Fatalf("banner %q, %v; want %q", l, err, tt.banner)
			}
			c.Write([]byte("hi\n"))
			if l, err := r.ReadString('\n'); err != nil || l != "h hi\n" {
				t.Fatalf("echo %q, %v", l, err)
			}
		})
	}
}
