//go:build linux

package mesh_test

import (
	"context"
	"log"
	"net/netip"

	"github.com/sirupsen/logrus"

	"github.com/homeswarm/homeswarm/netdriver/conn"
	"github.com/homeswarm/homeswarm/netdriver/mesh"
	"github.com/homeswarm/homeswarm/netdriver/tun"
)

// Example wires a mesh node to the real kernel: the host's mesh address
// on a TUN device and a UDP port (cmd/meshnet adds the container switch).
func Example() {
	addr := netip.MustParsePrefix("10.254.0.1/24") // MESH_ADDR
	key, err := mesh.LoadOrCreatePrivateKey("/var/lib/meshnet/private.key")
	if err != nil {
		log.Fatal(err)
	}
	dev, err := tun.CreateOffload("meshnet0", mesh.DefaultMTU) // TSO + GRO
	if err != nil {
		dev, err = tun.Create("meshnet0", mesh.DefaultMTU) // kernel without offloads
	}
	if err != nil {
		log.Fatal(err)
	}
	if err := tun.ConfigureLink(nil, dev.Name(), addr, mesh.DefaultMTU); err != nil {
		log.Fatal(err)
	}
	bind, err := conn.Listen(3210) // MESH_PORT
	if err != nil {
		log.Fatal(err)
	}
	m, err := mesh.New(mesh.Options{
		PrivateKey: key,
		ClusterKey: []byte("MESH_KEY value"),
		Addr:       addr,
		Peers:      []string{"vps.example.org:3210"}, // MESH_PEERS
		TUN:        dev,
		Bind:       bind,
		Logger:     logrus.NewEntry(logrus.StandardLogger()),
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := m.Run(context.Background()); err != nil {
		log.Fatal(err)
	}
}
