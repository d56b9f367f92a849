package netdriver

import (
	"context"
	"encoding/json"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/homeswarm/homeswarm/internal/atomicfile"
	"github.com/homeswarm/homeswarm/netdriver/dataplane"
	"github.com/homeswarm/homeswarm/netdriver/mesh"
)

const (
	// statusInterval is how often WriteStatus rewrites status.json.
	statusInterval = 2 * time.Second
	// peerLogInterval is how often WriteStatus logs every peer.
	peerLogInterval = time.Minute
)

// Status is status.json: the mesh, the container switch, the networks.
type Status struct {
	mesh.Status
	Switch    dataplane.Stats `json:"switch"`
	Networks  []Network       `json:"networks"`
	Endpoints []Endpoint      `json:"endpoints"`
}

// WriteStatus replaces path with the status of m, sw and d at once and
// every statusInterval until ctx is done, and logs a one-line summary per
// peer every minute, so `cat status.json` and the Docker engine's log both show
// peers, their state, last handshake, bytes and drops.
func WriteStatus(ctx context.Context, path string, m *mesh.Mesh, sw *dataplane.Switch, d *Driver, log *logrus.Entry) {
	t := time.NewTicker(statusInterval)
	defer t.Stop()
	last := time.Time{}
	for {
		st := m.Status()
		full := Status{Status: st, Switch: sw.Stats()}
		full.Networks, full.Endpoints = d.Networks()
		if b, err := json.MarshalIndent(full, "", "  "); err == nil {
			atomicfile.Write(path, b, 0o644)
		}
		if time.Since(last) >= peerLogInterval {
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
