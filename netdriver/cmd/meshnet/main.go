// Command meshnet is the meshnet managed plugin: it brings up the host's
// mesh interface (MESH_ADDR on mesh0), runs the encrypted UDP mesh on
// MESH_PORT, and serves Docker's network-driver API on
// /run/docker/plugins/meshnet.sock. Its status is written every few seconds
// to status.json in its state directory (host: /var/lib/meshnet).
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"

	"github.com/docker/go-plugins-helpers/network"
	"github.com/sirupsen/logrus"

	"github.com/homeswarm/homeswarm/netdriver"
	"github.com/homeswarm/homeswarm/netdriver/conn"
	"github.com/homeswarm/homeswarm/netdriver/dataplane"
	"github.com/homeswarm/homeswarm/netdriver/mesh"
	"github.com/homeswarm/homeswarm/netdriver/tun"
)

// version is the build's version, set by `make VERSION=…` (-ldflags -X
// main.version); it is in the plugin's first log line, so an upgrade shows
// which build runs.
var version = "dev"

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "meshnet:", err)
		os.Exit(1)
	}
}

func run() error {
	cfg, err := netdriver.ConfigFromEnv(os.Getenv)
	if err != nil {
		return err
	}
	logrus.SetLevel(cfg.LogLevel)
	logrus.SetFormatter(&logrus.TextFormatter{FullTimestamp: true})
	log := logrus.WithField("plugin", "meshnet")
	log.WithField("version", version).Info("starting")

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return err
	}
	priv, err := mesh.LoadOrCreatePrivateKey(filepath.Join(cfg.StateDir, "private.key"))
	if err != nil {
		return err
	}
	// TSO/GRO offloads move 64 KiB segments per read; kernels without
	// them get the plain device.
	dev, err := tun.CreateOffload(cfg.Interface, cfg.MTU)
	if err != nil {
		log.WithError(err).Info("TUN offloads unavailable; using a plain TUN device")
		dev, err = tun.Create(cfg.Interface, cfg.MTU)
	}
	if err != nil {
		return err
	}
	if err := tun.ConfigureLink(nil, cfg.Interface, cfg.Addr, cfg.MTU); err != nil {
		dev.Close()
		return err
	}
	bind, err := conn.Listen(cfg.Port)
	if err != nil {
		dev.Close()
		return err
	}
	sw, m, err := dataplane.NewMesh(mesh.Options{
		PrivateKey:        priv,
		ClusterKey:        []byte(cfg.Key),
		AcceptClusterKeys: acceptKeys(cfg.AcceptKey),
		RevokedKeys:       cfg.RevokedKeys,
		RevokedAddrs:      cfg.RevokedAddrs,
		Addr:              cfg.Addr,
		Peers:             cfg.Peers,
		TUN:               dev,
		Bind:              bind,
		Logger:            log.WithField("part", "mesh"),
		// which key owns which mesh address: first join wins, for good
		AddrBookFile: filepath.Join(cfg.StateDir, "addresses.json"),
	}, log.WithField("part", "switch"))
	if err != nil {
		dev.Close()
		bind.Close()
		return err
	}
	defer sw.Close()
	drv, err := netdriver.NewDriver(netdriver.DriverOptions{
		Links: netdriver.NetlinkLinks{}, Announcer: m, Switch: sw,
		MeshPrefix: cfg.Addr.Masked(), MTU: cfg.MTU,
		StateFile: filepath.Join(cfg.StateDir, "networks.json"),
		Logger:    log.WithField("part", "driver"),
	})
	if err != nil {
		m.Close()
		return err
	}
	meshc := make(chan error, 1)
	go func() { meshc <- m.Run(ctx) }()
	defer func() { m.Close(); <-meshc }()
	log.WithFields(logrus.Fields{"addr": cfg.Addr, "port": cfg.Port, "interface": cfg.Interface,
		"mtu": cfg.MTU, "peers": cfg.Peers, "public_key": m.PublicKey().String()}).Info("mesh up")

	// The status writer and the endpoint sweep stop (and are waited for)
	// before the mesh closes.
	loops, stopLoops := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { stopLoops(); wg.Wait() }()
	wg.Go(func() { netdriver.WriteStatus(loops, filepath.Join(cfg.StateDir, "status.json"), m, sw, drv, log) })
	wg.Go(func() { drv.Run(loops) })

	h := network.NewHandler(drv)
	errc := make(chan error, 1)
	go func() { errc <- h.ServeUnix("meshnet", 0) }()
	select {
	case err := <-errc:
		return err
	case err := <-meshc:
		meshc <- err // for the deferred wait
		return err
	case <-ctx.Done():
		log.Info("stopping")
		return nil
	}
}

// acceptKeys is MESH_KEY_ACCEPT as mesh.Options wants it.
func acceptKeys(k string) [][]byte {
	if k == "" {
		return nil
	}
	return [][]byte{[]byte(k)}
}
