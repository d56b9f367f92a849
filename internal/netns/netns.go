//go:build linux

// Package netns opens sockets inside another network namespace from a
// process that stays in its own, so a test or benchmark on the host can talk
// to the one-machine topology's nodes (scripts/topo.sh) with Go's own
// net/http instead of spawning a client per request.
//
// A socket belongs to the namespace of the thread that created it, for its
// whole life. Each call here creates its socket on a fresh OS thread that
// enters the namespace and is never unlocked, so Go retires that thread
// instead of reusing it in the wrong namespace.
package netns

import (
	"context"
	"fmt"
	"net"
	"runtime"

	"golang.org/x/sys/unix"
)

// Path is the file of the namespace `ip netns add NAME` made.
func Path(name string) string { return "/run/netns/" + name }

// Do runs f on an OS thread inside the namespace at path and returns its
// error. f must not start goroutines that expect to be in the namespace.
func Do(path string, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- fmt.Errorf("netns: open %s: %w", path, err)
			return
		}
		defer unix.Close(fd)
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("netns: enter %s: %w", path, err)
			return
		}
		errc <- f()
	}()
	return <-errc
}

// Dialer dials from inside the namespace at Path; its DialContext fits
// http.Transport.DialContext.
type Dialer struct {
	Path string
	net.Dialer
}

// DialContext connects to address from inside the namespace.
func (d *Dialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	var c net.Conn
	err := Do(d.Path, func() error {
		var err error
		c, err = d.Dialer.DialContext(ctx, network, address)
		return err
	})
	return c, err
}

// ListenPacket opens a packet socket on address inside the namespace.
func ListenPacket(path, network, address string) (net.PacketConn, error) {
	var c net.PacketConn
	err := Do(path, func() error {
		var err error
		c, err = net.ListenPacket(network, address)
		return err
	})
	return c, err
}
