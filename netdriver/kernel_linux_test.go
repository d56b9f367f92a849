//go:build linux

package netdriver_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/network"
	"github.com/sirupsen/logrus"
	"github.com/vishvananda/netlink"

	"github.com/homeswarm/homeswarm/netdriver"
	"github.com/homeswarm/homeswarm/netdriver/conn"
	"github.com/homeswarm/homeswarm/netdriver/dataplane"
	"github.com/homeswarm/homeswarm/netdriver/internal/nstest"
	"github.com/homeswarm/homeswarm/netdriver/mesh"
	"github.com/homeswarm/homeswarm/netdriver/tun"
)

// kernelNode is one host: a namespace with a mesh (real TUN, real UDP), a
// switch and a driver whose veths live in that namespace.
type kernelNode struct {
	ns  *nstest.NS
	m   *mesh.Mesh
	sw  *dataplane.Switch
	drv *netdriver.Driver
}

func startNode(t *testing.T, ns *nstest.NS, addr string, peers []string) *kernelNode {
	t.Helper()
	var dev *tun.Native
	var bind *conn.UDP
	if err := ns.Do(func() (err error) {
		if dev, err = tun.CreateOffload("mesh0", mesh.DefaultMTU); err != nil {
			return err
		}
		bind, err = conn.Listen(3210)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	prefix := netip.MustParsePrefix(addr)
	if err := tun.ConfigureLink(ns.NL, "mesh0", prefix, mesh.DefaultMTU); err != nil {
		t.Fatal(err)
	}
	k, err := mesh.LoadOrCreatePrivateKey(t.TempDir() + "/key")
	if err != nil {
		t.Fatal(err)
	}
	l := logrus.New()
	l.SetLevel(logrus.WarnLevel)
	log := logrus.NewEntry(l).WithField("ns", ns.Name)
	n := &kernelNode{ns: ns}
	n.sw, n.m, err = dataplane.NewMesh(mesh.Options{
		PrivateKey: k, ClusterKey: []byte("netdriver kernel test key"), Addr: prefix, Peers: peers, TUN: dev, Bind: bind,
		Logger: log, HandshakeTimeout: 200 * time.Millisecond,
	}, log)
	if err != nil {
		t.Fatal(err)
	}
	n.drv, err = netdriver.NewDriver(netdriver.DriverOptions{
		Links: netdriver.NetlinkLinks{NL: ns.NL, Do: ns.Do}, Announcer: n.m, Switch: n.sw,
		MeshPrefix: prefix.Masked(), MTU: mesh.DefaultMTU, StateFile: t.TempDir() + "/networks.json", Logger: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- n.m.Run(context.Background()) }()
	t.Cleanup(func() {
		n.sw.Close()
		n.m.Close()
		if err := <-errc; err != nil {
			t.Errorf("mesh Run: %v", err)
		}
	})
	return n
}

// container plays Docker for one endpoint: CreateEndpoint, Join, then
// moves the returned interface into its own namespace as eth0 with the
// address, as libnetwork does.
func (n *kernelNode) container(t *testing.T, name, netID, addr string) *nstest.NS {
	t.Helper()
	c := nstest.New(t, name)
	epID := endpointID(name)
	if _, err := n.drv.CreateEndpoint(&network.CreateEndpointRequest{NetworkID: netID, EndpointID: epID,
		Interface: &network.EndpointInterface{Address: addr}}); err != nil {
		t.Fatal(err)
	}
	j, err := n.drv.Join(&network.JoinRequest{NetworkID: netID, EndpointID: epID, SandboxKey: "/var/run/netns/" + c.Name})
	if err != nil {
		t.Fatal(err)
	}
	if j.Gateway != "" || j.InterfaceName.DstPrefix != "eth" {
		t.Fatalf("join response %+v", j)
	}
	l, err := n.ns.NL.LinkByName(j.InterfaceName.SrcName)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.ns.NL.LinkSetNsFd(l, int(c.Handle)); err != nil {
		t.Fatal(err)
	}
	l, err = c.NL.LinkByName(j.InterfaceName.SrcName)
	if err == nil {
		err = c.NL.LinkSetName(l, "eth0")
	}
	if err == nil {
		a, _ := netlink.ParseAddr(addr)
		err = c.NL.AddrAdd(l, a)
	}
	if err == nil {
		err = c.NL.LinkSetUp(l)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		n.drv.Leave(&network.LeaveRequest{NetworkID: netID, EndpointID: epID})
		n.drv.DeleteEndpoint(&network.DeleteEndpointRequest{NetworkID: netID, EndpointID: epID})
	})
	return c
}

func createNetwork(t *testing.T, id, subnet string, nodes ...*kernelNode) {
	t.Helper()
	for _, n := range nodes {
		if err := n.drv.CreateNetwork(&network.CreateNetworkRequest{NetworkID: id,
			IPv4Data: []*network.IPAMData{{Pool: subnet}}}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestKernelContainers runs two hosts joined by a real mesh, and containers
// (namespaces) on two networks attached by the driver: containers of one
// network talk across hosts and on one host, with TCP intact end to end
// (offloads included), and never reach the other network.
func TestKernelContainers(t *testing.T) {
	nstest.Require(t)
	if testing.Short() {
		t.Skip("short")
	}
	hA, hB := nstest.New(t, "ha"), nstest.New(t, "hb")
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "mtha"}, PeerName: "mthb", PeerNamespace: netlink.NsFd(hB.Handle)}
	if err := hA.NL.LinkAdd(veth); err != nil {
		t.Fatal(err)
	}
	for _, x := range []struct {
		ns   *nstest.NS
		name string
		addr string
	}{{hA, "mtha", "192.168.78.1/24"}, {hB, "mthb", "192.168.78.2/24"}} {
		if err := tun.ConfigureLink(x.ns.NL, x.name, netip.MustParsePrefix(x.addr), 0); err != nil {
			t.Fatal(err)
		}
	}
	a := startNode(t, hA, "10.254.9.1/24", []string{"192.168.78.2:3210"})
	b := startNode(t, hB, "10.254.9.2/24", nil)

	createNetwork(t, "net1", "10.77.1.0/24", a, b)
	createNetwork(t, "net2", "10.77.2.0/24", a, b)
	a1 := a.container(t, "a1", "net1", "10.77.1.11/24")
	a2 := a.container(t, "a2", "net1", "10.77.1.12/24")
	b1 := b.container(t, "b1", "net1", "10.77.1.21/24")
	b2 := b.container(t, "b2", "net2", "10.77.2.21/24")

	// cross-host, same network: 16 MiB of TCP, checksummed
	if mbit := tcpTransfer(t, a1, b1, "10.77.1.21", 16<<20); mbit > 0 {
		t.Logf("a1 -> b1 across the mesh: %.0f Mbit/s", mbit)
	}
	// and back, from B to A
	tcpTransfer(t, b1, a1, "10.77.1.11", 1<<20)
	// same host, same network
	tcpTransfer(t, a1, a2, "10.77.1.12", 4<<20)

	// Every isolation check below dials a listener that is there: a probe
	// in the target container, shown reachable from its own network first.
	// An unanswered dial (a timeout, the switch dropping the SYN) is
	// isolation; a refusal would mean the packet arrived.
	a3 := a.container(t, "a3", "net2", "10.77.2.11/24")
	pb1 := listenProbe(t, b1, "10.77.1.21:5002")
	pb2 := listenProbe(t, b2, "10.77.2.21:5002")
	pa2 := listenProbe(t, a2, "10.77.1.12:5002")
	pb1.reachedFrom(t, a1)
	pb2.reachedFrom(t, a3)
	pa2.reachedFrom(t, a1)

	// other network: neither across hosts nor on one host, even for a
	// container that routes the other subnet to the switch itself
	for _, x := range []struct {
		c   *nstest.NS
		dst string
	}{{a1, "10.77.2.21"}, {b2, "10.77.1.21"}} {
		eth0, err := x.c.NL.LinkByName("eth0")
		if err != nil {
			t.Fatal(err)
		}
		dst := netip.MustParseAddr(x.dst)
		_, sub, _ := net.ParseCIDR(x.dst + "/24")
		if err := x.c.NL.RouteAdd(&netlink.Route{LinkIndex: eth0.Attrs().Index, Dst: sub, Scope: netlink.SCOPE_LINK}); err != nil {
			t.Fatal(err)
		}
		if err := x.c.NL.NeighAdd(&netlink.Neigh{LinkIndex: eth0.Attrs().Index, Family: netlink.FAMILY_V4,
			State: netlink.NUD_PERMANENT, IP: dst.AsSlice(), HardwareAddr: dataplane.VirtualMAC}); err != nil {
			t.Fatal(err)
		}
	}
	pb2.unreachableFrom(t, a1, 700*time.Millisecond, "a1 (net1) to b2 (net2) across hosts")
	pb1.unreachableFrom(t, b2, 700*time.Millisecond, "b2 (net2) to b1 (net1) on the same host")
	st := a.sw.Stats()
	t.Logf("A switch: %+v", st)
	if st.ToMesh == 0 || st.Local == 0 || st.ARP == 0 || st.Drops["other_network"] == 0 {
		t.Fatalf("switch counters %+v", st)
	}
	if sb := b.sw.Stats(); sb.FromMesh == 0 || sb.Drops["other_network"] == 0 {
		t.Fatalf("B switch counters %+v", sb)
	}

	// Leave removes the veth pair; nothing is left on the host.
	if err := a.drv.Leave(&network.LeaveRequest{NetworkID: "net1", EndpointID: endpointID("a2")}); err != nil {
		t.Fatal(err)
	}
	for _, l := range mustLinks(t, hA) {
		if l == "mnh"+endpointID("a2")[:11] {
			t.Fatalf("host end %s left after Leave", l)
		}
	}
	if _, err := a2.NL.LinkByName("eth0"); err == nil {
		t.Fatal("container end left after Leave")
	}
	pa2.unreachableFrom(t, a1, 500*time.Millisecond, "a1 to a2 after a2's Leave")
}

func endpointID(name string) string { return fmt.Sprintf("%x", sha256.Sum256([]byte(name))) }

func mustLinks(t *testing.T, ns *nstest.NS) []string {
	ls, err := ns.NL.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, l := range ls {
		names = append(names, l.Attrs().Name)
	}
	return names
}

// probe is a TCP listener in a container that answers every connection
// with the container's name, and counts them.
type probe struct {
	ns       *nstest.NS
	addr     string
	accepted atomic.Int64
}

func listenProbe(t *testing.T, c *nstest.NS, addr string) *probe {
	t.Helper()
	p := &probe{ns: c, addr: addr}
	var ln net.Listener
	if err := c.Do(func() (err error) { ln, err = net.Listen("tcp4", addr); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			p.accepted.Add(1)
			conn.Write([]byte(c.Name))
			conn.Close()
		}
	}()
	return p
}

// reachedFrom connects to the probe from a container (retrying for 10 s
// while routes settle) and checks that it is this probe that answers.
func (p *probe) reachedFrom(t *testing.T, from *nstest.NS) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var got []byte
		err := from.Do(func() error {
			c, err := net.DialTimeout("tcp4", p.addr, time.Second)
			if err != nil {
				return err
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			got, err = io.ReadAll(c)
			return err
		})
		if err == nil && string(got) == p.ns.Name {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s does not reach the probe at %s in %s: answer %q, %v", from.Name, p.addr, p.ns.Name, got, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// unreachableFrom checks that a connection from a container to the probe
// goes unanswered: the dial times out, the probe accepts nothing. A
// refusal or any other answer means packets got through.
func (p *probe) unreachableFrom(t *testing.T, from *nstest.NS, timeout time.Duration, what string) {
	t.Helper()
	before := p.accepted.Load()
	err := from.Do(func() error {
		c, err := net.DialTimeout("tcp4", p.addr, timeout)
		if err == nil {
			c.Close()
		}
		return err
	})
	var ne net.Error
	switch {
	case err == nil:
		t.Fatalf("%s: connected to %s", what, p.addr)
	case !errors.As(err, &ne) || !ne.Timeout():
		t.Fatalf("%s: dial %s: %v; want no answer (a timeout)", what, p.addr, err)
	}
	if n := p.accepted.Load() - before; n != 0 {
		t.Fatalf("%s: the probe at %s accepted %d connections", what, p.addr, n)
	}
}

// tcpTransfer sends size bytes from a container to a listener in another
// and checks they arrive intact; it returns the rate in Mbit/s.
func tcpTransfer(t *testing.T, from, to *nstest.NS, toAddr string, size int) float64 {
	t.Helper()
	data := bytes.Repeat([]byte("meshnet container test "), size/23)
	elapsed, err := nstest.SendTCP(from, to, toAddr+":5001", data)
	if err != nil {
		t.Fatal(err)
	}
	return float64(len(data)) * 8 / elapsed.Seconds() / 1e6
}
