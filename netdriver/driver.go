package netdriver

import (
	"errors"

	"github.com/docker/go-plugins-helpers/network"
)

// ErrNoNetworks is what every network request gets until container
// networks are built (issue 5): the plugin's job today is the host mesh
// interface that carries the Swarm.
var ErrNoNetworks = errors.New("meshnet: container networks are not available in this version; the host interface carries the Swarm (use Docker's overlay driver over it)")

// Driver answers Docker's network-driver API. It declares global scope, so
// Swarm would hand it networks, and refuses each request with
// ErrNoNetworks rather than pretending to create one.
type Driver struct{}

var _ network.Driver = Driver{}

// GetCapabilities declares global scope and global connectivity scope, as
// Swarm requires of a multi-host driver.
func (Driver) GetCapabilities() (*network.CapabilitiesResponse, error) {
	return &network.CapabilitiesResponse{Scope: network.GlobalScope, ConnectivityScope: network.GlobalScope}, nil
}

func (Driver) CreateNetwork(*network.CreateNetworkRequest) error { return ErrNoNetworks }
func (Driver) AllocateNetwork(*network.AllocateNetworkRequest) (*network.AllocateNetworkResponse, error) {
	return nil, ErrNoNetworks
}
func (Driver) DeleteNetwork(*network.DeleteNetworkRequest) error { return nil }
func (Driver) FreeNetwork(*network.FreeNetworkRequest) error     { return nil }
func (Driver) CreateEndpoint(*network.CreateEndpointRequest) (*network.CreateEndpointResponse, error) {
	return nil, ErrNoNetworks
}
func (Driver) DeleteEndpoint(*network.DeleteEndpointRequest) error { return nil }
func (Driver) EndpointInfo(*network.InfoRequest) (*network.InfoResponse, error) {
	return nil, ErrNoNetworks
}
func (Driver) Join(*network.JoinRequest) (*network.JoinResponse, error) { return nil, ErrNoNetworks }
func (Driver) Leave(*network.LeaveRequest) error                        { return nil }

// DiscoverNew and DiscoverDelete are hints (Docker's advertise addresses),
// not instructions: the mesh learns peers by itself.
func (Driver) DiscoverNew(*network.DiscoveryNotification) error    { return nil }
func (Driver) DiscoverDelete(*network.DiscoveryNotification) error { return nil }
func (Driver) ProgramExternalConnectivity(*network.ProgramExternalConnectivityRequest) error {
	return nil
}
func (Driver) RevokeExternalConnectivity(*network.RevokeExternalConnectivityRequest) error {
	return nil
}
