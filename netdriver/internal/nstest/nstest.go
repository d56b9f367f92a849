//go:build linux

// Package nstest creates throwaway network namespaces for tests that need a
// real kernel, so they never touch the host's own interfaces. Namespaces are
// named with the prefix "mt-" and deleted when the test ends.
package nstest

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// Require skips t unless it runs as root. As root (CI) the kernel tests
// must run: a missing /dev/net/tun fails t, and so does [New] when it
// cannot create a namespace.
func Require(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Fatalf("running as root without /dev/net/tun: %v", err)
	}
}

// NS is a named network namespace.
type NS struct {
	Name   string
	Handle netns.NsHandle
	NL     *netlink.Handle // netlink handle inside the namespace
}

// New creates the namespace "mt-<suffix>-<pid>" with lo up, and deletes it
// when t ends.
func New(t testing.TB, suffix string) *NS {
	t.Helper()
	name := fmt.Sprintf("mt-%s-%d", suffix, os.Getpid())
	_ = netns.DeleteNamed(name)
	removeStale()
	var h netns.NsHandle
	err := onThread(func() error {
		var err error
		h, err = netns.NewNamed(name)
		return err
	})
	if err != nil {
		if os.Geteuid() != 0 {
			t.Skipf("cannot create network namespace: %v", err)
		}
		t.Fatalf("running as root, cannot create network namespace: %v", err)
	}
	nl, err := netlink.NewHandleAt(h)
	if err != nil {
		t.Fatal(err)
	}
	ns := &NS{Name: name, Handle: h, NL: nl}
	t.Cleanup(func() {
		nl.Close()
		h.Close()
		if err := netns.DeleteNamed(name); err != nil {
			t.Errorf("delete namespace %s: %v", name, err)
		}
	})
	lo, err := nl.LinkByName("lo")
	if err == nil {
		err = nl.LinkSetUp(lo)
	}
	if err != nil {
		t.Fatal(err)
	}
	return ns
}

// removeStale deletes namespaces "mt-<suffix>-<pid>" left by test
// processes that were killed before their cleanup ran.
func removeStale() {
	names, _ := filepath.Glob("/var/run/netns/mt-*-*")
	for _, p := range names {
		name := filepath.Base(p)
		i := strings.LastIndexByte(name, '-')
		pid, err := strconv.Atoi(name[i+1:])
		if err != nil || pid == os.Getpid() {
			continue
		}
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			_ = netns.DeleteNamed(name)
		}
	}
}

// Do runs f on an OS thread that is inside the namespace. Sockets and TUN
// devices created by f stay in the namespace whichever thread uses them later.
func (ns *NS) Do(f func() error) error {
	return onThread(func() error {
		if err := netns.Set(ns.Handle); err != nil {
			return fmt.Errorf("enter %s: %w", ns.Name, err)
		}
		return f()
	})
}

// onThread runs f on a fresh locked OS thread and restores the thread's
// namespace afterwards; if it cannot, the thread is thrown away.
func onThread(f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- err
			return // thread discarded: still locked
		}
		defer orig.Close()
		ferr := f()
		if err := netns.Set(orig); err != nil {
			errc <- fmt.Errorf("restore namespace: %w", err)
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}
