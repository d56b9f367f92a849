// Package deps pins the project's third-party dependencies while the packages
// that use them are being written, so go.mod and go.sum stay complete.
package deps

import (
	_ "github.com/docker/go-plugins-helpers/network"
	_ "github.com/docker/go-plugins-helpers/volume"
	_ "github.com/flynn/noise"
	_ "github.com/moby/moby/api/types/events"
	_ "github.com/moby/moby/api/types/swarm"
	_ "github.com/moby/moby/client"
	_ "github.com/sirupsen/logrus"
	_ "github.com/songgao/water"
	_ "github.com/syncthing/syncthing/lib/config"
	_ "github.com/syncthing/syncthing/lib/events"
	_ "github.com/syncthing/syncthing/lib/model"
	_ "github.com/syncthing/syncthing/lib/protocol"
	_ "github.com/syncthing/syncthing/lib/syncthing"
	_ "github.com/vishvananda/netlink"
	_ "golang.org/x/crypto/chacha20poly1305"
	_ "golang.org/x/crypto/curve25519"
	_ "golang.org/x/net/ipv4"
	_ "golang.org/x/sys/unix"
)
