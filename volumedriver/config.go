package volumedriver

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
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
	// MountTimeout bounds Mount's wait for a replica to catch up (30s).
	MountTimeout time.Duration
	// FlushTimeout bounds the last Unmount's wait for a peer (30s).
	FlushTimeout time.Duration
	// LogLevel is a logrus level name (info).
	LogLevel logrus.Level
	// NodeName names this node to its peers; empty means the hostname.
	NodeName string
}

// ErrConfig marks a setting that cannot be used.
var ErrConfig = errors.New("invalid plugin setting")

// MinClusterKeyLen keeps CLUSTER_KEY out of brute-force reach.
const MinClusterKeyLen = 16

// ConfigFromEnv validates the plugin's settings. getenv is os.Getenv in
// the plugin, a map in tests. Every error names the setting and how to fix it.
func ConfigFromEnv(getenv func(string) string) (Config, error) {
	c := Config{
		StateDir:     orDefault(getenv("STATE_DIR"), "/state"),
		MountRoot:    orDefault(getenv("MOUNT_ROOT"), "/mnt/volumes"),
		ClusterKey:   getenv("CLUSTER_KEY"),
		NodeName:     strings.TrimSpace(getenv("NODE_NAME")),
		ListenPort:   22000,
		MountTimeout: 30 * time.Second,
		FlushTimeout: 30 * time.Second,
		LogLevel:     logrus.InfoLevel,
	}
	if c.ClusterKey != "" && len(c.ClusterKey) < MinClusterKeyLen {
		return c, fmt.Errorf("%w: CLUSTER_KEY must be at least %d characters (try: openssl rand -hex 32)", ErrConfig, MinClusterKeyLen)
	}
	if v := getenv("LISTEN_PORT"); v != "" {
		p, err := strconv.Atoi(v)
		if err != nil || p < 1 || p > 65535 {
			return c, fmt.Errorf("%w: LISTEN_PORT=%q is not a port number (1-65535)", ErrConfig, v)
		}
		c.ListenPort = p
	}
	adv, err := ParsePeers(getenv("ADVERTISE"), c.ListenPort)
	if err != nil {
		return c, fmt.Errorf("%w (in ADVERTISE)", err)
	}
	c.Advertise = adv
	peers, err := ParsePeers(getenv("PEERS"), c.ListenPort)
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
		if v := getenv(d.key); v != "" {
			t, err := time.ParseDuration(v)
			// Docker gives a volume call at most two minutes.
			if err != nil || t <= 0 || t > 100*time.Second {
				return c, fmt.Errorf("%w: %s=%q is not a duration between 1ms and 100s (Docker abandons a plugin call after 2m)", ErrConfig, d.key, v)
			}
			*d.dst = t
		}
	}
	if v := getenv("LOG_LEVEL"); v != "" {
		l, err := logrus.ParseLevel(v)
		if err != nil {
			return c, fmt.Errorf("%w: LOG_LEVEL=%q; use one of panic, fatal, error, warn, info, debug, trace", ErrConfig, v)
		}
		c.LogLevel = l
	}
	return c, nil
}

// ParsePeers splits a PEERS value (commas or spaces) into host:port
// strings, adding defaultPort where none is given. Hosts may be names, IPv4
// or bracketed IPv6 addresses.
func ParsePeers(v string, defaultPort int) ([]string, error) {
	var out []string
	for _, p := range strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' || r == '\n' || r == '\t' }) {
		host, port := p, strconv.Itoa(defaultPort)
		if h, pt, err := net.SplitHostPort(p); err == nil {
			host, port = h, pt
		} else if strings.Count(p, ":") > 1 && !strings.HasPrefix(p, "[") {
			host = p // bare IPv6 address
		}
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 {
			return nil, fmt.Errorf("%w: PEERS entry %q has a bad port; use host[:port], several separated by commas", ErrConfig, p)
		}
		if host == "" || !validHost(host) {
			return nil, fmt.Errorf("%w: PEERS entry %q is not host[:port]; use a DNS name or an IP address", ErrConfig, p)
		}
		out = append(out, net.JoinHostPort(host, port))
	}
	return out, nil
}

func validHost(h string) bool {
	if net.ParseIP(h) != nil {
		return true
	}
	if len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(strings.TrimSuffix(h, "."), ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				return false
			}
		}
	}
	return true
}

func orDefault(v, d string) string {
	if v == "" {
		return d
	}
	return v
}
