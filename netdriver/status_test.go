package netdriver

import (
	"context"
	"encoding/json"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/docker/go-plugins-helpers/network"
	"github.com/sirupsen/logrus"

	"github.com/homeswarm/homeswarm/netdriver/conn/bindtest"
	"github.com/homeswarm/homeswarm/netdriver/dataplane"
	"github.com/homeswarm/homeswarm/netdriver/mesh"
	"github.com/homeswarm/homeswarm/netdriver/tun/tuntest"
)

// TestWriteStatus: status.json is written at once with the mesh, the
// switch and the networks, and WriteStatus returns when ctx is done.
func TestWriteStatus(t *testing.T) {
	f := newFixture(t)
	d := f.driver(t)
	if err := d.CreateNetwork(&network.CreateNetworkRequest{NetworkID: netA, IPv4Data: []*network.IPAMData{{Pool: "10.0.1.0/24"}}}); err != nil {
		t.Fatal(err)
	}
	k, err := mesh.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	l := logrus.New()
	l.SetOutput(io.Discard)
	log := logrus.NewEntry(l)
	sw, m, err := dataplane.NewMesh(mesh.Options{PrivateKey: k, ClusterKey: []byte("k"), Addr: netip.MustParsePrefix("10.254.0.1/24"),
		TUN: tuntest.New("mesh0", mesh.DefaultMTU), Bind: bindtest.NewNetwork().Bind(netip.MustParseAddrPort("192.0.2.1:3210")), Logger: log}, log)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	path := filepath.Join(t.TempDir(), "status.json")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { WriteStatus(ctx, path, m, sw, d, log); close(done) }()
	var st Status
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, err := os.ReadFile(path)
		if err == nil && json.Unmarshal(b, &st) == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status.json not written: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if st.PublicKey != k.PublicKey().String() || st.Addr != "10.254.0.1/24" || len(st.Networks) != 1 || st.Networks[0].ID != netA || st.Switch.Drops == nil {
		t.Fatalf("status %+v", st)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("WriteStatus still running after ctx was done")
	}
}

// TestDriverRunSweeps: Run leaves an endpoint whose link went, without a
// call to Sweep, and returns when ctx is done.
func TestDriverRunSweeps(t *testing.T) {
	f := newFixture(t)
	l := logrus.New()
	l.SetOutput(io.Discard)
	d, err := NewDriver(DriverOptions{Links: f.links, Announcer: f.ann, Switch: f.sw, MeshPrefix: netip.MustParsePrefix("10.254.0.0/24"),
		MTU: 1392, Logger: logrus.NewEntry(l), SweepInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.CreateNetwork(&network.CreateNetworkRequest{NetworkID: netA, IPv4Data: []*network.IPAMData{{Pool: "10.0.1.0/24"}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.CreateEndpoint(&network.CreateEndpointRequest{NetworkID: netA, EndpointID: ep1,
		Interface: &network.EndpointInterface{Address: "10.0.1.5/24"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Join(&network.JoinRequest{NetworkID: netA, EndpointID: ep1}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { d.Run(ctx); close(done) }()
	f.links.Delete("mnh11111111111")
	deadline := time.Now().Add(5 * time.Second)
	for f.sw.isAttached(ep1) {
		if time.Now().After(deadline) {
			t.Fatal("endpoint of a dead container not swept")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run still running after ctx was done")
	}
}
