package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/homeswarm/homeswarm/volumedriver"
	"github.com/homeswarm/homeswarm/volumedriver/store"
	"github.com/homeswarm/homeswarm/volumedriver/syncengine"
)

// replicator adapts the sync engine to what the store asks of a Replicator.
type replicator struct{ *syncengine.Engine }

var _ store.Replicator = replicator{}

// configTimeout bounds the engine's configuration changes, which have no
// deadline of their own, so Create and Remove always answer dockerd.
const configTimeout = 20 * time.Second

// bounded runs f, but returns after configTimeout whether or not f is done;
// f then finishes in the background.
func bounded(what string, f func() error) error {
	done := make(chan error, 1)
	go func() { done <- f() }()
	select {
	case err := <-done:
		return err
	case <-time.After(configTimeout):
		return fmt.Errorf("%s: the sync engine did not answer within %s; it goes on in the background, retry", what, configTimeout)
	}
}

func (r replicator) AddVolume(name, dir string, share []string, options map[string]string) error {
	return bounded("add volume "+name, func() error { return r.Engine.AddVolumeWithOptions(name, dir, share, options) })
}

func (r replicator) RemoveVolume(name string, everywhere bool) error {
	return bounded("remove volume "+name, func() error { return r.Engine.RemoveVolume(name, everywhere) })
}

func (r replicator) Volumes() []store.ClusterVolume {
	recs := r.Engine.Volumes()
	out := make([]store.ClusterVolume, len(recs))
	for i, v := range recs {
		out[i] = store.ClusterVolume{Name: v.Name, Options: v.Options, CreatedAt: v.Created, Deleted: v.Deleted}
	}
	return out
}

// startReplicator starts the sync engine for cfg, or returns nil for
// local-only volumes (no CLUSTER_KEY). The engine's data directories are the
// store's replica directories, so a volume created on another node is
// replicated where Docker will find it here.
func startReplicator(ctx context.Context, cfg volumedriver.Config, log *logrus.Entry, replicaDir func(string) string) (store.Replicator, func() error, error) {
	if cfg.ClusterKey == "" {
		log.Warn("CLUSTER_KEY is not set: volumes stay on this node")
		return nil, func() error { return nil }, nil
	}
	name := cfg.NodeName
	if name == "" {
		name, _ = os.Hostname()
	}
	eng, err := syncengine.New(syncengine.Options{
		StateDir:       cfg.StateDir + "/sync",
		ListenAddr:     ":" + strconv.Itoa(cfg.ListenPort),
		AdvertiseAddrs: cfg.Advertise,
		ClusterKey:     cfg.ClusterKey,
		Peers:          cfg.Peers,
		DeviceName:     name,
		VolumeDir:      replicaDir,
		Logger:         log.WithField("part", "sync"),
	})
	if err != nil {
		return nil, nil, fmt.Errorf("sync engine: %w", err)
	}
	if err := eng.Start(ctx); err != nil {
		return nil, nil, fmt.Errorf("sync engine: %w", err)
	}
	for _, id := range cfg.Forget {
		if err := eng.ForgetMember(id); err != nil {
			log.WithError(err).WithField("device", id).Warn("cannot forget removed node")
		}
	}
	log.WithField("device", eng.DeviceID()).WithField("listen", eng.ListenAddr()).Info("replication on")
	return replicator{eng}, eng.Close, nil
}
