package netdriver

import (
	"errors"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"

	"github.com/homeswarm/homeswarm/netdriver/dataplane"
)

// NetlinkLinks is Links through netlink, in the process's namespace or in
// the one of NL and Do (tests).
type NetlinkLinks struct {
	// NL is the netlink handle to use. Nil: the process's namespace.
	NL *netlink.Handle
	// Do runs f inside NL's namespace (to open packet sockets there).
	// Nil: f runs here.
	Do func(f func() error) error
}

var _ Links = NetlinkLinks{}

func (l NetlinkLinks) h() *netlink.Handle {
	if l.NL != nil {
		return l.NL
	}
	return &netlink.Handle{}
}

// AddVeth implements Links.
func (l NetlinkLinks) AddVeth(host, peer string, mtu int, mac net.HardwareAddr) error {
	h := l.h()
	for _, name := range []string{host, peer} {
		if l, err := h.LinkByName(name); err == nil {
			h.LinkDel(l)
		}
	}
	v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: host, MTU: mtu, TxQLen: 1000}, PeerName: peer,
		PeerHardwareAddr: mac}
	if err := h.LinkAdd(v); err != nil {
		return fmt.Errorf("add veth %s: %w", host, err)
	}
	fail := func(err error) error {
		h.LinkDel(v)
		return err
	}
	p, err := h.LinkByName(peer)
	if err != nil {
		return fail(err)
	}
	if err := h.LinkSetMTU(p, mtu); err != nil {
		return fail(fmt.Errorf("set mtu of %s: %w", peer, err))
	}
	if len(mac) > 0 && p.Attrs().HardwareAddr.String() != mac.String() {
		if err := h.LinkSetHardwareAddr(p, mac); err != nil {
			return fail(fmt.Errorf("set mac of %s: %w", peer, err))
		}
	}
	if err := h.LinkSetUp(v); err != nil {
		return fail(fmt.Errorf("set %s up: %w", host, err))
	}
	return nil
}

// Delete implements Links.
func (l NetlinkLinks) Delete(name string) error {
	if name == "" {
		return nil
	}
	h := l.h()
	link, err := h.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil
		}
		return err
	}
	return h.LinkDel(link)
}

// Exists implements Links.
func (l NetlinkLinks) Exists(name string) bool {
	_, err := l.h().LinkByName(name)
	return err == nil
}

// Open implements Links.
func (l NetlinkLinks) Open(name string) (dataplane.Port, error) {
	if l.Do == nil {
		return dataplane.OpenPort(name)
	}
	var p dataplane.Port
	err := l.Do(func() (err error) { p, err = dataplane.OpenPort(name); return err })
	return p, err
}
