//go:build linux

package netns

import (
	"context"
	"net"
	"os"
	"testing"
	"time"
)

// The caller's own namespace stands in for another: what is tested is that
// sockets made on the entered thread work from any goroutine afterwards.
func TestDialAndListenInNamespace(t *testing.T) {
	const self = "/proc/self/ns/net"
	pc, err := ListenPacket(self, "udp4", "127.0.0.1:0")
	if err != nil {
		if os.Geteuid() != 0 {
			t.Skip("cannot enter a network namespace here (needs CAP_SYS_ADMIN):", err)
		}
		t.Fatal("running as root, cannot enter a network namespace:", err)
	}
	defer pc.Close()

	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		if c, err := ln.Accept(); err == nil {
			c.Write([]byte("hi"))
			c.Close()
		}
	}()
	d := &Dialer{Path: self}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp4", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 2)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(buf); err != nil || string(buf) != "hi" {
		t.Fatalf("read %q, %v", buf, err)
	}
}

func TestDoMissingNamespace(t *testing.T) {
	t.Parallel()
	if err := Do("/nonexistent/netns", func() error { return nil }); err == nil {
		t.Fatal("entering a missing namespace succeeded")
	}
}
