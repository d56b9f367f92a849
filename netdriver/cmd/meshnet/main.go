// Command meshnet is the meshnet managed plugin: it brings up the host's
// mesh interface (MESH_ADDR on mesh0), runs the encrypted UDP mesh on
// MESH_PORT, and serves Docker's network-driver API on
// /run/docker/plugins/meshnet.sock. Its status is written every few seconds
// to status.json in its state directory (host: /var/lib/meshnet).
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/docker/go-plugins-helpers/network"
	"github.com/sirupsen/logrus"

	"github.com/homeswarm/homeswarm/internal/atomicfile"
	"github.com/homeswarm/homeswarm/netdriver"
	"github.com/homeswarm/homeswarm/netdriver/conn"
	"github.com/homeswarm/homeswarm/netdriver/dataplane"
	"github.com/homeswarm/homeswarm/netdriver/mesh"
	"github.com/homeswarm/homeswarm/netdriver/tun"
)

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
		PrivateKey: priv,
		ClusterKey: []byte(cfg.Key),
		Addr:       cfg.Addr,
		Peers:      cfg.Peers,
		TUN:        dev,
		Bind:       bind,
		Logger:     log.WithField("part", "mesh"),
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
	if err := m.Start(); err != nil {
		return err
	}
	defer m.Close()
	log.WithFields(logrus.Fields{"addr": cfg.Addr, "port": cfg.Port, "interface": cfg.Interface,
		"mtu": cfg.MTU, "peers": cfg.Peers, "public_key": m.PublicKey().String()}).Info("mesh up")

	go writeStatus(ctx, m, sw, drv, filepath.Join(cfg.StateDir, "status.json"), log)
	go sweep(ctx, drv)

	h := network.NewHandler(drv)
	errc := make(chan error, 1)
	go func() { errc <- h.ServeUnix("meshnet", 0) }()
	select {
	case err := <-errc:
		return err
	case <-m.Done():
		return m.Err()
	case <-ctx.Done():
		log.Info("stopping")
		return nil
	}
}

// sweep leaves, every few seconds, the endpoints of containers that died
// without a Leave (their veth went with their namespace).
func sweep(ctx context.Context, drv *netdriver.Driver) {
	t := time.NewTicker(3 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			drv.Sweep()
		}
	}
}

// status is status.json: the mesh, the container switch, the networks.
type status struct {
	mesh.Status
	Switch    dataplane.Stats      `json:"switch"`
	Networks  []netdriver.Network  `json:"networks"`
	Endpoints []netdriver.Endpoint `json:"endpoints"`
}

// writeStatus replaces path with the mesh's status every 2 s, and logs a
// one-line summary per peer every minute, so `cat status.json` and the
// engine's log both show peers, their state, last handshake, bytes and drops.
func writeStatus(ctx context.Context, m *mesh.Mesh, sw *dataplane.Switch, drv *netdriver.Driver, path string, log *logrus.Entry) {
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	last := time.Time{}
	for {
		st := m.Status()
		full := status{Status: st, Switch: sw.Stats()}
		full.Networks, full.Endpoints = drv.Networks()
		if b, err := json.MarshalIndent(full, "", "  "); err == nil {
			atomicfile.Write(path, b, 0o644)
		}
		if time.Since(last) >= time.Minute {
			last = time.Now()
			for _, p := range st.Peers {
				log.WithFields(logrus.Fields{"peer": p.PublicKey[:8], "endpoint": p.Endpoint, "via": p.Via,
					"state": p.State, "last_handshake": p.LastHandshake.Format(time.RFC3339),
					"rx": p.RxBytes, "tx": p.TxBytes}).Info("peer")
			}
			log.WithField("drops", st.Drops).WithField("handshakes", st.Handshakes).Info("mesh")
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
