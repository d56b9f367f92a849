//go:build linux

package nstest

import (
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"time"
)

// SendTCP listens on addr inside to, connects to it from inside from
// (retrying for 10 s while routes settle), sends data and checks that it
// arrives whole and intact. It returns how long sending took.
func SendTCP(from, to *NS, addr string, data []byte) (time.Duration, error) {
	var ln net.Listener
	if err := to.Do(func() (err error) { ln, err = net.Listen("tcp4", addr); return err }); err != nil {
		return 0, err
	}
	defer ln.Close()
	type result struct {
		sum [32]byte
		n   int64
		err error
	}
	res := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			res <- result{err: err}
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(60 * time.Second))
		h := sha256.New()
		n, err := io.Copy(h, c)
		r := result{n: n, err: err}
		copy(r.sum[:], h.Sum(nil))
		res <- r
	}()
	// One dial for the whole deadline, retried only on errors that came
	// back at once (no route yet): a dial given up while the kernel
	// retransmits its SYN can still complete on the other side, and the
	// goroutine above would then take that connection instead of ours.
	var c net.Conn
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := from.Do(func() (err error) { c, err = net.DialTimeout("tcp4", addr, time.Until(deadline)); return err })
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("dial %s: %w", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.SetDeadline(time.Now().Add(60 * time.Second))
	start := time.Now()
	if _, err := c.Write(data); err != nil {
		c.Close()
		return 0, fmt.Errorf("write to %s: %w", addr, err)
	}
	c.Close()
	var r result
	select {
	case r = <-res:
	case <-time.After(60 * time.Second):
		return 0, fmt.Errorf("transfer to %s timed out", addr)
	}
	elapsed := time.Since(start)
	if want := sha256.Sum256(data); r.err != nil || r.n != int64(len(data)) || r.sum != want {
		return 0, fmt.Errorf("to %s: received %d of %d bytes, err %v, checksum ok %v", addr, r.n, len(data), r.err, r.sum == want)
	}
	return elapsed, nil
}
