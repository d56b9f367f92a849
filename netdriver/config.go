// Package netdriver is meshnet's plugin glue: it reads the plugin's
// settings, and translates Docker's network-driver requests into calls on
// the mesh (package mesh), which knows nothing of Docker.
package netdriver

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/sirupsen/logrus"

	"github.com/homeswarm/homeswarm/internal/settings"
	"github.com/homeswarm/homeswarm/netdriver/mesh"
)

// Config is meshnet's settings, from the environment that
// `docker plugin set meshnet KEY=value` controls.
type Config struct {
	// Key is MESH_KEY, the cluster secret (required, 16+ characters).
	Key string
	// AcceptKey is MESH_KEY_ACCEPT: a second cluster secret this node
	// accepts from peers while the cluster key is rotated (empty).
	AcceptKey string
	// RevokedKeys and RevokedAddrs are MESH_REVOKED: nodes taken out of
	// the cluster, by public key or by mesh address (empty).
	RevokedKeys  []mesh.Key
	RevokedAddrs []netip.Addr
	// Port is MESH_PORT, the UDP port (3210).
	Port int
	// Peers is MESH_PEERS: host:port of other nodes; DNS names re-resolved.
	Peers []string
	// Addr is MESH_ADDR: this node's mesh address with the mesh's prefix
	// length, e.g. 10.254.0.1/24 (required).
	Addr netip.Prefix
	// Interface is MESH_IFNAME, the host interface's name ("mesh0").
	Interface string
	// MTU is MESH_MTU, the interface MTU (mesh.DefaultMTU: no fragments on
	// a 1492-byte PPPoE path).
	MTU int
	// StateDir holds the node's private key and status.json ("/state").
	StateDir string
	// LogLevel is LOG_LEVEL (info).
	LogLevel logrus.Level
}

// ConfigFromEnv validates meshnet's settings; every error names the
// setting and how to fix it, never the key's value.
func ConfigFromEnv(getenv func(string) string) (Config, error) {
	c := Config{Key: getenv("MESH_KEY"), Port: 3210, Interface: "mesh0", MTU: mesh.DefaultMTU,
		StateDir: "/state", LogLevel: logrus.InfoLevel}
	bad := func(format string, a ...any) (Config, error) {
		return c, fmt.Errorf("%w: "+format, append([]any{settings.ErrInvalid}, a...)...)
	}
	if v := getenv("STATE_DIR"); v != "" {
		c.StateDir = v
	}
	if c.Key == "" {
		return bad("MESH_KEY must be set, at least %d characters (try: openssl rand -hex 32)", settings.MinSecretLen)
	}
	if err := settings.Secret("MESH_KEY", c.Key); err != nil {
		return c, err
	}
	if k := getenv("MESH_KEY_ACCEPT"); k != "" && k != c.Key {
		if err := settings.Secret("MESH_KEY_ACCEPT", k); err != nil {
			return c, err
		}
		c.AcceptKey = k
	}
	for _, v := range settings.List(getenv("MESH_REVOKED")) {
		if a, err := netip.ParseAddr(v); err == nil && a.Is4() {
			c.RevokedAddrs = append(c.RevokedAddrs, a)
			continue
		}
		k, err := mesh.ParseKey(v)
		if err != nil {
			return bad("MESH_REVOKED entry %q is neither a mesh address (10.254.0.14) nor a node's public key (base64, as `meshnet` logs it at start and status.json shows)", v)
		}
		c.RevokedKeys = append(c.RevokedKeys, k)
	}
	var err error
	if c.Port, err = settings.Port("MESH_PORT", getenv("MESH_PORT"), c.Port); err != nil {
		return c, err
	}
	peers, err := settings.ParsePeers("MESH_PEERS", getenv("MESH_PEERS"), c.Port)
	if err != nil {
		return c, err
	}
	c.Peers = peers
	a, err := netip.ParsePrefix(strings.TrimSpace(getenv("MESH_ADDR")))
	if err != nil || !a.Addr().Is4() || a.Bits() < 8 || a.Bits() > 30 || a.Addr() == a.Masked().Addr() {
		return bad("MESH_ADDR=%q must be this node's IPv4 address with the mesh's prefix length, e.g. 10.254.0.1/24", getenv("MESH_ADDR"))
	}
	c.Addr = a
	if v := getenv("MESH_IFNAME"); v != "" {
		if len(v) > 15 || strings.ContainsAny(v, "/ \t\n:") {
			return bad("MESH_IFNAME=%q is not an interface name (at most 15 characters, no '/', ':' or spaces)", v)
		}
		c.Interface = v
	}
	if v := getenv("MESH_MTU"); v != "" {
		m, err := strconv.Atoi(v)
		if err != nil || m < 576 || m > mesh.MaxMTU {
			return bad("MESH_MTU=%q must be between 576 and %d", v, mesh.MaxMTU)
		}
		c.MTU = m
	}
	if c.LogLevel, err = settings.LogLevel("LOG_LEVEL", getenv("LOG_LEVEL")); err != nil {
		return c, err
	}
	return c, nil
}
