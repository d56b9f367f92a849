//go:build linux

package mesh_test

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/vishvananda/netlink"

	"github.com/homeswarm/homeswarm/netdriver/conn"
	"github.com/homeswarm/homeswarm/netdriver/internal/nstest"
	"github.com/homeswarm/homeswarm/netdriver/mesh"
	"github.com/homeswarm/homeswarm/netdriver/tun"
)

// TestKernelTwoNodes runs two meshes, each with a real TUN interface and a
// real UDP socket in its own network namespace, joined by a veth pair, and
// moves TCP and UDP traffic between their mesh addresses.
func TestKernelTwoNodes(t *testing.T) {
	nstest.Require(t)
	if testing.Short() {
		t.Skip("short")
	}
	for _, mode := range []string{"plain", "gro", "offload"} {
		t.Run(mode, func(t *testing.T) { kernelTwoNodes(t, mode) })
	}
}

func kernelTwoNodes(t *testing.T, mode string) {
	nsA, nsB := nstest.New(t, "a"), nstest.New(t, "b")

	// veth pair: mtva in A (192.168.77.1), mtvb in B (192.168.77.2)
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "mtva"}, PeerName: "mtvb", PeerNamespace: netlink.NsFd(nsB.Handle)}
	if err := nsA.NL.LinkAdd(veth); err != nil {
		t.Fatalf("create veth: %v", err)
	}
	for _, x := range []struct {
		ns   *nstest.NS
		name string
		addr string
	}{{nsA, "mtva", "192.168.77.1/24"}, {nsB, "mtvb", "192.168.77.2/24"}} {
		if err := tun.ConfigureLink(x.ns.NL, x.name, netip.MustParsePrefix(x.addr), 0); err != nil {
			t.Fatal(err)
		}
	}

	key := []byte("kernel test cluster key")
	a := startKernelNode(t, nsA, "10.254.0.1/24", []string{"192.168.77.2:3210"}, key, mode)
	b := startKernelNode(t, nsB, "10.254.0.2/24", nil, key, mode)

	// TCP from A to B's mesh address, checked end to end
	data := bytes.Repeat([]byte("meshnet kernel test "), 32<<20/20)
	elapsed, err := nstest.SendTCP(nsA, nsB, "10.254.0.2:5001", data)
	if err != nil {
		t.Fatalf("TCP across the mesh: %v\nA: %+v\nB: %+v", err, a.Status(), b.Status())
	}
	for _, ns := range []*nstest.NS{nsA, nsB} {
		ns.Do(func() error {
			b, err := os.ReadFile("/proc/thread-self/net/snmp")
			for _, l := range strings.Split(string(b), "\n") {
				if strings.HasPrefix(l, "Udp:") || strings.HasPrefix(l, "Tcp:") {
					t.Logf("%s %s", ns.Name, l)
				}
			}
			return err
		})
	}
	for _, ns := range []*nstest.NS{nsA, nsB} {
		if l, err := ns.NL.LinkByName("mesh0"); err == nil {
			t.Logf("%s mesh0 %+v", ns.Name, *l.Attrs().Statistics)
		}
	}
	t.Logf("A: %+v", a.Status().Drops)
	t.Logf("B: %+v", b.Status().Drops)
	t.Logf("TCP %d MiB through the mesh in %v: %.0f Mbit/s (under -race if enabled)", len(data)>>20, elapsed, float64(len(data))*8/elapsed.Seconds()/1e6)

	// UDP from B back to A
	var u, v *net.UDPConn
	if err := nsA.Do(func() (err error) {
		u, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(10, 254, 0, 1), Port: 6000})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	if err := nsB.Do(func() (err error) {
		v, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(10, 254, 0, 2)})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if _, err := v.WriteToUDP([]byte("hello a"), &net.UDPAddr{IP: net.IPv4(10, 254, 0, 1), Port: 6000}); err != nil {
		t.Fatal(err)
	}
	u.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 64)
	n, _, err := u.ReadFromUDP(buf)
	if err != nil || string(buf[:n]) != "hello a" {
		t.Fatalf("udp: %q %v", buf[:n], err)
	}
	st := a.Status()
	if len(st.Peers) != 1 || st.Peers[0].State != "up" || st.Peers[0].Endpoint != "192.168.77.2:3210" {
		t.Fatalf("status %+v", st)
	}
	if d := st.Drops["auth"] + st.Drops["replay"]; d != 0 {
		t.Fatalf("drops on a clean link: %v", st.Drops)
	}
}

func startKernelNode(t *testing.T, ns *nstest.NS, addr string, peers []string, key []byte, mode string) *mesh.Mesh {
	t.Helper()
	var dev *tun.Native
	var bind *conn.UDP
	err := ns.Do(func() (err error) {
		create := map[string]func(string, int) (*tun.Native, error){
			"plain": tun.Create, "gro": tun.CreateGRO, "offload": tun.CreateOffload,
		}[mode]
		if dev, err = create("mesh0", mesh.DefaultMTU); err != nil {
			return err
		}
		bind, err = conn.Listen(3210)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	prefix := netip.MustParsePrefix(addr)
	if err := tun.ConfigureLink(ns.NL, dev.Name(), prefix, mesh.DefaultMTU); err != nil {
		t.Fatal(err)
	}
	k, err := mesh.LoadOrCreatePrivateKey(t.TempDir() + "/key")
	if err != nil {
		t.Fatal(err)
	}
	l := logrus.New()
	l.SetLevel(logrus.WarnLevel)
	m, err := mesh.New(mesh.Options{
		PrivateKey: k, ClusterKey: key, Addr: prefix, Peers: peers, TUN: dev, Bind: bind,
		Logger: logrus.NewEntry(l).WithField("ns", ns.Name), HandshakeTimeout: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- m.Run(context.Background()) }()
	t.Cleanup(func() {
		m.Close()
		if err := <-errc; err != nil {
			t.Errorf("mesh Run: %v", err)
		}
	})
	return m
}
