//go:build linux

package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"syscall"

	"github.com/sirupsen/logrus"

	"github.com/homeswarm/homeswarm/netdriver/conn"
	"github.com/homeswarm/homeswarm/netdriver/mesh"
	"github.com/homeswarm/homeswarm/netdriver/tun"
)

// nodeReady is the line a node prints on stdout once its mesh runs; the
// TUN mode follows it.
const nodeReady = "node ready"

// runNode is `mesh node …`: one mesh node wired to the kernel as the plugin
// wires it (netdriver/mesh's Example), in the network namespace it was
// started in, until SIGTERM or SIGINT. The cluster key comes from MESH_KEY.
// On exit it prints the mesh's Status as one JSON line on stdout.
func runNode(args []string) error {
	fs := flag.NewFlagSet("node", flag.ContinueOnError)
	addr := fs.String("addr", "", "this node's mesh address, CIDR (MESH_ADDR)")
	port := fs.Int("port", 3210, "UDP port (MESH_PORT)")
	peers := fs.String("peers", "", "comma-separated host:port peers (MESH_PEERS)")
	dev := fs.String("dev", "bmesh0", "TUN interface name")
	plain := fs.Bool("plain", false, "TUN without offloads (tun.Create)")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile of the node's whole life to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	key := os.Getenv("MESH_KEY")
	if key == "" {
		return errors.New("MESH_KEY is not set")
	}
	prefix, err := netip.ParsePrefix(*addr)
	if err != nil {
		return fmt.Errorf("-addr: %w", err)
	}
	var peerList []string
	if *peers != "" {
		peerList = strings.Split(*peers, ",")
	}

	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}

	mode := "offload"
	var d *tun.Native
	if !*plain {
		d, err = tun.CreateOffload(*dev, mesh.DefaultMTU)
	}
	if *plain || err != nil {
		mode = "plain"
		if d, err = tun.Create(*dev, mesh.DefaultMTU); err != nil {
			return err
		}
	}
	if err := tun.ConfigureLink(nil, d.Name(), prefix, mesh.DefaultMTU); err != nil {
		d.Close()
		return err
	}
	bind, err := conn.Listen(*port)
	if err != nil {
		d.Close()
		return err
	}
	priv, err := mesh.GeneratePrivateKey()
	if err != nil {
		d.Close()
		bind.Close()
		return err
	}
	l := logrus.New()
	l.Out = os.Stderr
	l.SetLevel(logrus.WarnLevel)
	m, err := mesh.New(mesh.Options{
		PrivateKey: priv,
		ClusterKey: []byte(key),
		Addr:       prefix,
		Peers:      peerList,
		TUN:        d,
		Bind:       bind,
		Logger:     logrus.NewEntry(l).WithField("node", prefix.Addr()),
	})
	if err != nil {
		d.Close()
		bind.Close()
		return err
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	errc := make(chan error, 1)
	go func() { errc <- m.Run(context.Background()) }()
	fmt.Printf("%s %s\n", nodeReady, mode)
	select {
	case <-sig:
	case err := <-errc:
		return err
	}
	st := m.Status()
	m.Close()
	if err := <-errc; err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(st)
}
