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

// Example wires a mesh node to the real kernel, as the plugin does.
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
	logger := logrus.NewEntry(logrus.StandardLogger())
	m, err := mesh.New(mesh.Options{
		PrivateKey: key,
		ClusterKey: []byte("MESH_KEY value"),
		Addr:       addr,
		Peers:      []string{"vps.example.org:3210"}, // MESH_PEERS
		TUN:        dev,
		Bind:       bind,
		Logger:     logger,
		OnRoutesChanged: func(remote []netip.Prefix) {
			// peers' mesh addresses are inside addr already; route the rest
			// (a real caller also deletes the routes that disappeared)
			for _, p := range remote {
				if !addr.Contains(p.Addr()) {
					if err := tun.AddRoute(nil, dev.Name(), p); err != nil {
						logger.WithError(err).Warn("add route")
					}
				}
			}
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := m.Run(context.Background()); err != nil {
		log.Fatal(err)
	}
}
