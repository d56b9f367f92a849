package volumedriver

import (
	"fmt"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/homeswarm/homeswarm/internal/settings"
	"github.com/homeswarm/homeswarm/volumedriver/store"
)

// Config is the plugin's settings, read from the environment that
// `docker plugin set syncvol KEY=value` controls.
type Config struct {
	// StateDir holds volumes and the plugin's state ("/state": the settable
	// bind mount `state`, host default /var/lib/syncvol).
	StateDir string
	// MountRoot is the plugin's propagatedMount ("/mnt/volumes").
	MountRoot string
	// ClusterKey is the shared secret a node proves to join the cluster;
	// empty means local-only volumes. Never logged.
	ClusterKey string
	// Peers are host[:port] addresses of other nodes; DNS names are allowed
	// and re-resolved.
	Peers []string
	// ListenPort is the replication port (TCP), default 22000.
	ListenPort int
	// Advertise are the host[:port] addresses peers should dial to reach
	// this node; empty means every interface address.
	Advertise []string
	// MountTimeout bounds Mount's wait for a replica to catch up (20s).
	MountTimeout time.Duration
	// FlushTimeout bounds the last Unmount's wait for a peer (20s).
	FlushTimeout time.Duration
	// LogLevel is a logrus level name (info).
	LogLevel logrus.Level
	// NodeName names this node to its peers; empty means the hostname.
	NodeName string
	// AcceptClusterKey is CLUSTER_KEY_ACCEPT: a second cluster key
	// accepted from members while CLUSTER_KEY is rotated (empty).
	AcceptClusterKey string
	// Forget lists the device IDs of nodes removed from the cluster: this
	// node refuses them for good (REMOVED_NODES; set it on every node).
	Forget []string
}

// ErrConfig marks a setting that cannot be used.
var ErrConfig = settings.ErrInvalid

// ConfigFromEnv validates the plugin's settings. getenv is os.Getenv in
// the plugin, a map in tests. Every error names the setting and how to fix it.
func ConfigFromEnv(getenv func(string) string) (Config, error) {
	c := Config{
		StateDir:     orDefault(getenv("STATE_DIR"), "/state"),
		MountRoot:    orDefault(getenv("MOUNT_ROOT"), "/mnt/volumes"),
		ClusterKey:   getenv("CLUSTER_KEY"),
		NodeName:     strings.TrimSpace(getenv("NODE_NAME")),
		ListenPort:   22000,
		MountTimeout: 20 * time.Second,
		FlushTimeout: 20 * time.Second,
		LogLevel:     logrus.InfoLevel,
	}
	if c.ClusterKey != "" {
		if err := settings.Secret("CLUSTER_KEY", c.ClusterKey); err != nil {
			return c, err
		}
	}
	if k := getenv("CLUSTER_KEY_ACCEPT"); k != "" && k != c.ClusterKey {
		if c.ClusterKey == "" {
			return c, fmt.Errorf("%w: CLUSTER_KEY_ACCEPT is set but CLUSTER_KEY is empty", ErrConfig)
		}
		if err := settings.Secret("CLUSTER_KEY_ACCEPT", k); err != nil {
			return c, err
		}
		c.AcceptClusterKey = k
	}
	var err error
	if c.ListenPort, err = settings.Port("LISTEN_PORT", getenv("LISTEN_PORT"), c.ListenPort); err != nil {
		return c, err
	}
	adv, err := settings.ParsePeers("ADVERTISE", getenv("ADVERTISE"), c.ListenPort)
	if err != nil {
		return c, err
	}
	c.Advertise = adv
	peers, err := settings.ParsePeers("PEERS", getenv("PEERS"), c.ListenPort)
	if err != nil {
		return c, err
	}
	c.Peers = peers
	if len(c.Peers) > 0 && c.ClusterKey == "" {
		return c, fmt.Errorf("%w: PEERS is set but CLUSTER_KEY is empty; set the cluster's key too", ErrConfig)
	}
	for _, d := range []struct {
		key string
		dst *time.Duration
	}{{"MOUNT_TIMEOUT", &c.MountTimeout}, {"FLUSH_TIMEOUT", &c.FlushTimeout}} {
		// Up to 100s is accepted (older releases allowed it, and an
		// upgrade carries settings over); the store waits at most
		// store.MaxCallWait, since Docker gives a plugin call 30s.
		t, err := settings.Duration(d.key, getenv(d.key), *d.dst, time.Nanosecond, 100*time.Second)
		if err != nil {
			return c, fmt.Errorf("%w (at most %s is used: Docker gives a plugin call 30s)", err, store.MaxCallWait)
		}
		*d.dst = t
	}
	for _, id := range settings.List(getenv("REMOVED_NODES")) {
		if !store.IsDeviceID(strings.ToUpper(id)) {
			return c, fmt.Errorf("%w: REMOVED_NODES entry %q is not a device ID (see `docker volume inspect` on that node: Status.device)", ErrConfig, id)
		}
		c.Forget = append(c.Forget, strings.ToUpper(id))
	}
	if c.LogLevel, err = settings.LogLevel("LOG_LEVEL", getenv("LOG_LEVEL")); err != nil {
		return c, err
	}
	return c, nil
}

func orDefault(v, d string) string {
	if v == "" {
		return d
	}
	return v
}
