package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"

	"github.com/sirupsen/logrus"

	"github.com/homeswarm/homeswarm/volumedriver"
	"github.com/homeswarm/homeswarm/volumedriver/snapvol"
	"github.com/homeswarm/homeswarm/volumedriver/store"
	"github.com/homeswarm/homeswarm/volumedriver/syncengine"
)

// replicator adapts the sync engine to what the store asks of a Replicator:
// the store's deadlines reach the engine's calls (AddVolume, RegisterVolume
// and RemoveVolume are the engine's own), its errors the store's sentinels.
type replicator struct{ *syncengine.Engine }

var _ store.Replicator = replicator{}

// Flush is the engine's, with its "not on any peer" error marked as the
// store's ErrNotReplicated.
func (r replicator) Flush(ctx context.Context, name string) error {
	err := r.Engine.Flush(ctx, name)
	if errors.Is(err, syncengine.ErrNotReplicated) {
		return fmt.Errorf("%w: %w", store.ErrNotReplicated, err)
	}
	return err
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
		StateDir:         cfg.StateDir + "/sync",
		ListenAddr:       ":" + strconv.Itoa(cfg.ListenPort),
		AdvertiseAddrs:   cfg.Advertise,
		ClusterKey:       cfg.ClusterKey,
		AcceptClusterKey: cfg.AcceptClusterKey,
		Removed:          cfg.Forget,
		Peers:            cfg.Peers,
		DeviceName:       name,
		VolumeDir:        replicaDir,
		Logger:           log.WithField("part", "sync"),
	})
	if err != nil {
		return nil, nil, fmt.Errorf("sync engine: %w", err)
	}
	// The engine stops on Close, after the store (main's deferred calls),
	// not on ctx: ctx only cuts the start-up short.
	errc := make(chan error, 1)
	go func() { errc <- eng.Run(context.Background()) }()
	select {
	case <-eng.Ready():
	case err := <-errc:
		return nil, nil, fmt.Errorf("sync engine: %w", err)
	case <-ctx.Done():
		eng.Close()
		return nil, nil, fmt.Errorf("sync engine: %w", ctx.Err())
	}
	log.WithField("device", eng.DeviceID()).WithField("listen", eng.ListenAddr()).Info("replication on")
	return replicator{eng}, eng.Close, nil // Close waits for Run
}

// startSnapshots starts snapshot replication (crash-consistent volumes)
// when the state directory is on btrfs, on LISTEN_PORT+1; nil otherwise.
func startSnapshots(ctx context.Context, cfg volumedriver.Config, log *logrus.Entry, repl store.Replicator, volumes func() []string) (store.Snapshotter, func(), error) {
	r, ok := repl.(replicator)
	if !ok {
		return nil, func() {}, nil
	}
	if !snapvol.IsBtrfs(cfg.StateDir) {
		log.Warn("the state directory is not on btrfs: volumes replicate file by file, which a busy database does not survive a crash with (see README, syncvol)")
		return nil, func() {}, nil
	}
	eng := r.Engine
	node, err := snapvol.New(snapvol.Options{
		Self:       eng.DeviceID(),
		VolumeDir:  func(name string) string { return store.Layout(cfg.StateDir).VolumeDir(name) },
		ValidName:  store.ValidateName,
		Cert:       eng.Certificate(),
		Verify:     eng.MemberOf,
		Peers:      func() []snapvol.Peer { return snapPeers(eng.Members()) },
		Volumes:    volumes,
		ListenAddr: ":" + strconv.Itoa(cfg.ListenPort+1),
		Logger:     log.WithField("part", "snapshots"),
	})
	if err != nil {
		return nil, nil, err
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := node.Run(ctx); err != nil {
			log.WithError(err).Error("snapshot replication stopped")
		}
	}()
	log.WithField("listen", node.Addr()).Info("crash-consistent volumes on (btrfs snapshots)")
	return node, func() { node.Close(); <-done }, nil
}

// snapPeers turns members into snapshot peers: each listens one port above
// its Syncthing port, on every address it advertises (a home node's LAN
// address comes first, and only its mesh address reaches it from the VPS).
func snapPeers(ms []syncengine.Member) []snapvol.Peer {
	var out []snapvol.Peer
	for _, m := range ms {
		p := snapvol.Peer{ID: m.ID}
		for _, a := range m.Addrs {
			host, port, err := net.SplitHostPort(strings.TrimPrefix(strings.TrimPrefix(a, "tcp://"), "tcp4://"))
			n, perr := strconv.Atoi(port)
			if err != nil || perr != nil {
				continue
			}
			p.Addrs = append(p.Addrs, net.JoinHostPort(host, strconv.Itoa(n+1)))
		}
		if len(p.Addrs) > 0 {
			out = append(out, p)
		}
	}
	return out
}
