package netdriver

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
)

// NetworkOptions are a meshnet network's -o options.
type NetworkOptions struct {
	// MTU of the containers' interfaces: "mtu" (or Docker's generic
	// com.docker.network.driver.mtu). Default and maximum: the mesh MTU,
	// since every packet must fit the mesh unfragmented.
	MTU int `json:"mtu"`
}

// minMTU is the smallest MTU IPv4 allows a link (RFC 791's 576-byte
// datagram every host must accept).
const minMTU = 576

// networkOptionHelp lists the options, for errors.
const networkOptionHelp = "valid options: mtu=<576..mesh MTU>, encrypted (always on; accepted for compatibility with overlay)"

// ParseNetworkOptions validates `docker network create -d meshnet -o …`
// options. meshMTU is the mesh interface's MTU. Options Docker itself
// adds (com.docker.*) are ignored, except the generic MTU.
func ParseNetworkOptions(o map[string]string, meshMTU int) (NetworkOptions, error) {
	opts := NetworkOptions{MTU: meshMTU}
	for _, k := range slices.Sorted(maps.Keys(o)) {
		v := o[k]
		switch k {
		case "mtu", "com.docker.network.driver.mtu":
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil || n < minMTU || n > meshMTU {
				return opts, fmt.Errorf("meshnet: option %s=%q: want a number from %d to %d (the mesh MTU)", k, v, minMTU, meshMTU)
			}
			opts.MTU = n
		case "encrypted":
			if v != "" && v != "true" {
				return opts, fmt.Errorf("meshnet: option encrypted=%q: meshnet traffic is always encrypted; it cannot be turned off", v)
			}
		default:
			if strings.HasPrefix(k, "com.docker.") {
				continue
			}
			return opts, fmt.Errorf("meshnet: unknown option %q; %s", k, networkOptionHelp)
		}
	}
	return opts, nil
}
