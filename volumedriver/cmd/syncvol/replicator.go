package main

import (
	"context"

	"github.com/sirupsen/logrus"

	"github.com/homeswarm/homeswarm/volumedriver"
	"github.com/homeswarm/homeswarm/volumedriver/store"
)

// startReplicator returns the replicator for cfg, or nil for local-only
// volumes (no CLUSTER_KEY).
func startReplicator(ctx context.Context, cfg volumedriver.Config, log *logrus.Entry) (store.Replicator, error) {
	if cfg.ClusterKey == "" {
		log.Warn("CLUSTER_KEY is not set: volumes stay on this node")
		return nil, nil
	}
	log.Warn("replication is not built into this version yet: volumes stay on this node")
	return nil, nil
}
