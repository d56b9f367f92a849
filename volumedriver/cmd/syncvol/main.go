// Command syncvol is the syncvol managed volume plugin: it serves Docker's
// VolumeDriver API on /run/docker/plugins/syncvol.sock.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"

	"github.com/docker/go-plugins-helpers/volume"
	"github.com/sirupsen/logrus"

	"github.com/homeswarm/homeswarm/volumedriver"
	"github.com/homeswarm/homeswarm/volumedriver/store"
	"github.com/homeswarm/homeswarm/volumedriver/syncengine"
)

// version is the build's version, set by `make VERSION=…` (-ldflags -X
// main.version); it is in the plugin's first log line, so an upgrade shows
// which build runs.
var version = "dev"

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "syncvol:", err)
		os.Exit(1)
	}
}

func run() error {
	cfg, err := volumedriver.ConfigFromEnv(os.Getenv)
	if err != nil {
		return err
	}
	// embedded Syncthing logs members' names, proofs included, to stdout
	if err := syncengine.RedactStdout(); err != nil {
		return err
	}
	logrus.SetLevel(cfg.LogLevel)
	logrus.SetFormatter(&logrus.TextFormatter{FullTimestamp: true})
	log := logrus.WithField("plugin", "syncvol")
	log.WithField("version", version).Info("starting")

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	// The store's layout decides where replicas live; the engine is told
	// before the store opens, so that volumes it resumes find their replicas.
	replicaDir := func(name string) string { return store.Layout(cfg.StateDir).ReplicaDir(name) }
	repl, closeRepl, err := startReplicator(ctx, cfg, log, replicaDir)
	if err != nil {
		return err
	}
	defer closeRepl()
	var opened atomic.Pointer[store.Store] // the snapshot node starts before the store opens
	snaps, closeSnaps, err := startSnapshots(ctx, cfg, log, repl, func() []string {
		if st := opened.Load(); st != nil {
			return st.SnapshotVolumes()
		}
		return nil
	})
	if err != nil {
		return err
	}
	defer closeSnaps()
	st, err := store.New(store.Options{
		Root:         cfg.StateDir,
		MountRoot:    cfg.MountRoot,
		Replicator:   repl,
		Snapshots:    snaps,
		MountTimeout: cfg.MountTimeout,
		FlushTimeout: cfg.FlushTimeout,
		Logger:       log,
	})
	if err != nil {
		return err
	}
	opened.Store(st)
	swept := make(chan error, 1)
	go func() { swept <- st.Run(ctx) }()
	defer func() { st.Close(); <-swept }()
	h := volume.NewHandler(volumedriver.NewDriver(st, log))
	errc := make(chan error, 1)
	go func() { errc <- h.ServeUnix("syncvol", 0) }()
	log.WithField("state", cfg.StateDir).WithField("replication", repl != nil).Info("syncvol ready")
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		log.Info("stopping")
		return nil
	}
}
