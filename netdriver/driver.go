package netdriver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/docker/go-plugins-helpers/network"
	"github.com/sirupsen/logrus"

	"github.com/homeswarm/homeswarm/internal/atomicfile"
	"github.com/homeswarm/homeswarm/netdriver/dataplane"
)

// Links creates and removes the veth pairs of endpoints and opens the
// switch's port on their host end. The real one is NetlinkLinks.
type Links interface {
	// AddVeth creates a veth pair: host stays in the host's namespace
	// (up, no address), peer is what Docker moves into the container,
	// with mac set. Any existing link named host or peer is replaced.
	AddVeth(host, peer string, mtu int, mac net.HardwareAddr) error
	// Delete removes a link; a missing link is not an error.
	Delete(name string) error
	// Exists reports whether a link of that name is in the host's
	// namespace.
	Exists(name string) bool
	// Open opens the switch's port on a host interface.
	Open(name string) (dataplane.Port, error)
}

// Announcer routes an address to this node across the mesh; *mesh.Mesh
// is one.
type Announcer interface {
	AddPrefix(netip.Prefix) error
	RemovePrefix(netip.Prefix) error
}

// Switch is the container data plane; *dataplane.Switch is one.
type Switch interface {
	AddNetwork(id string, pools []netip.Prefix)
	RemoveNetwork(id string)
	Attach(ep dataplane.Endpoint, p dataplane.Port) error
	Detach(id string)
}

// Network is a meshnet network as this node knows it.
type Network struct {
	ID      string         `json:"id"`
	Pools   []netip.Prefix `json:"pools"`
	Options NetworkOptions `json:"options"`
}

// Endpoint is a container's attachment to a network.
type Endpoint struct {
	ID      string     `json:"id"`
	Network string     `json:"network"`
	Addr    netip.Addr `json:"addr"`
	Bits    int        `json:"bits"`
	MAC     string     `json:"mac"`
	// Host and Peer are the veth names while joined (Host empty if not).
	Host string `json:"host,omitempty"`
	Peer string `json:"peer,omitempty"`
}

// state is what the driver persists, so a plugin restart finds its
// networks and reattaches running containers.
type state struct {
	Networks  map[string]*Network  `json:"networks"`
	Endpoints map[string]*Endpoint `json:"endpoints"`
}

// Driver is meshnet's Docker network driver. Every call works on local
// state and returns at once; nothing waits for peers.
type Driver struct {
	links Links
	ann   Announcer
	sw    Switch
	mesh  netip.Prefix // the mesh's own subnet: container pools must not overlap it
	mtu   int          // the mesh's MTU: the largest an endpoint may have
	path  string       // state file; empty: not persisted
	log   *logrus.Entry
	sweep time.Duration

	mu sync.Mutex
	st state
}

var _ network.Driver = (*Driver)(nil)

// DriverOptions configure NewDriver.
type DriverOptions struct {
	Links     Links
	Announcer Announcer
	Switch    Switch
	// MeshPrefix is the mesh interface's subnet (MESH_ADDR).
	MeshPrefix netip.Prefix
	// MTU is the mesh MTU, the default and the largest endpoint MTU.
	MTU int
	// StateFile persists networks and endpoints. Empty: in memory only.
	StateFile string
	// Logger receives the driver's logs. Zero: logrus' standard logger.
	Logger *logrus.Entry
	// SweepInterval is how often Run calls Sweep. Zero: 3 s.
	SweepInterval time.Duration
}

// NewDriver loads the state file (if any) and reattaches the endpoints of
// containers still running (their host veth end still exists); the others
// are marked as left.
func NewDriver(o DriverOptions) (*Driver, error) {
	d := &Driver{links: o.Links, ann: o.Announcer, sw: o.Switch, mesh: o.MeshPrefix, mtu: o.MTU,
		path: o.StateFile, log: o.Logger, sweep: o.SweepInterval,
		st: state{Networks: map[string]*Network{}, Endpoints: map[string]*Endpoint{}}}
	if d.log == nil {
		d.log = logrus.NewEntry(logrus.StandardLogger())
	}
	if d.sweep <= 0 {
		d.sweep = 3 * time.Second
	}
	if d.path != "" {
		b, err := os.ReadFile(d.path)
		switch {
		case errors.Is(err, os.ErrNotExist):
		case err != nil:
			return nil, err
		default:
			if err := json.Unmarshal(b, &d.st); err != nil {
				return nil, fmt.Errorf("%s: %w", d.path, err)
			}
			if d.st.Networks == nil {
				d.st.Networks = map[string]*Network{}
			}
			if d.st.Endpoints == nil {
				d.st.Endpoints = map[string]*Endpoint{}
			}
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, n := range d.st.Networks {
		d.sw.AddNetwork(n.ID, n.Pools)
	}
	for _, ep := range d.st.Endpoints {
		if ep.Host == "" {
			continue
		}
		if !d.links.Exists(ep.Host) {
			d.log.WithField("endpoint", dataplane.ShortID(ep.ID)).Info("container gone while the plugin was down; endpoint left")
			ep.Host, ep.Peer = "", ""
			continue
		}
		if err := d.attachLocked(ep); err != nil {
			d.log.WithError(err).WithField("endpoint", dataplane.ShortID(ep.ID)).Warn("cannot reattach endpoint")
			d.links.Delete(ep.Host)
			ep.Host, ep.Peer = "", ""
			continue
		}
		d.log.WithFields(logrus.Fields{"endpoint": dataplane.ShortID(ep.ID), "addr": ep.Addr}).Info("endpoint reattached")
	}
	return d, d.saveLocked()
}

// saveLocked writes the state file atomically.
func (d *Driver) saveLocked() error {
	if d.path == "" {
		return nil
	}
	b, err := json.MarshalIndent(&d.st, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.Write(d.path, b, 0o600); err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	return nil
}

// GetCapabilities declares global scope and global connectivity scope, as
// Swarm requires of a multi-host driver.
func (d *Driver) GetCapabilities() (*network.CapabilitiesResponse, error) {
	return &network.CapabilitiesResponse{Scope: network.GlobalScope, ConnectivityScope: network.GlobalScope}, nil
}

// AllocateNetwork runs on managers: it validates the options and subnets
// and echoes the options back, since workers only see what it returns.
func (d *Driver) AllocateNetwork(r *network.AllocateNetworkRequest) (*network.AllocateNetworkResponse, error) {
	if _, err := ParseNetworkOptions(r.Options, d.mtu); err != nil {
		return nil, err
	}
	if len(r.IPv6Data) > 0 {
		return nil, errIPv6
	}
	pools := make([]*network.IPAMData, len(r.IPv4Data))
	for i := range r.IPv4Data {
		pools[i] = &r.IPv4Data[i]
	}
	if _, err := d.parsePools(pools); err != nil {
		return nil, err
	}
	opts := maps.Clone(r.Options)
	if opts == nil {
		opts = map[string]string{}
	}
	return &network.AllocateNetworkResponse{Options: opts}, nil
}

// FreeNetwork has nothing to free: AllocateNetwork keeps no state.
func (d *Driver) FreeNetwork(*network.FreeNetworkRequest) error { return nil }

var errIPv6 = errors.New("meshnet: IPv6 is not supported: create the network without --ipv6")

func (d *Driver) parsePools(data []*network.IPAMData) ([]netip.Prefix, error) {
	var pools []netip.Prefix
	for _, a := range data {
		if a == nil {
			continue
		}
		p, err := netip.ParsePrefix(a.Pool)
		if err != nil || !p.Addr().Is4() {
			return nil, fmt.Errorf("meshnet: bad IPv4 subnet %q", a.Pool)
		}
		p = p.Masked()
		if d.mesh.IsValid() && p.Overlaps(d.mesh) {
			return nil, fmt.Errorf("meshnet: subnet %v overlaps the mesh's own subnet %v: choose another --subnet", p, d.mesh)
		}
		pools = append(pools, p)
	}
	if len(pools) == 0 {
		return nil, errors.New("meshnet: the network has no IPv4 subnet")
	}
	return pools, nil
}

// CreateNetwork records a network on this node.
func (d *Driver) CreateNetwork(r *network.CreateNetworkRequest) error {
	if r.NetworkID == "" {
		return errors.New("meshnet: network ID missing")
	}
	opts, err := ParseNetworkOptions(genericOptions(r.Options), d.mtu)
	if err != nil {
		return err
	}
	if len(r.IPv6Data) > 0 {
		return errIPv6
	}
	pools, err := d.parsePools(r.IPv4Data)
	if err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, n := range d.st.Networks {
		if n.ID == r.NetworkID {
			continue
		}
		for _, p := range n.Pools {
			for _, q := range pools {
				if p.Overlaps(q) {
					return fmt.Errorf("meshnet: subnet %v overlaps network %s's %v", q, dataplane.ShortID(n.ID), p)
				}
			}
		}
	}
	d.st.Networks[r.NetworkID] = &Network{ID: r.NetworkID, Pools: pools, Options: opts}
	d.sw.AddNetwork(r.NetworkID, pools)
	d.log.WithFields(logrus.Fields{"network": dataplane.ShortID(r.NetworkID), "subnets": pools, "mtu": opts.MTU}).Info("network created")
	return d.saveLocked()
}

// genericOptions extracts the -o options from CreateNetwork's options.
func genericOptions(o map[string]interface{}) map[string]string {
	out := map[string]string{}
	g, _ := o["com.docker.network.generic"].(map[string]interface{})
	for k, v := range g {
		switch v := v.(type) {
		case string:
			out[k] = v
		default:
			out[k] = fmt.Sprint(v)
		}
	}
	return out
}

// DeleteNetwork forgets a network and whatever endpoints it still has.
func (d *Driver) DeleteNetwork(r *network.DeleteNetworkRequest) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	for id, ep := range d.st.Endpoints {
		if ep.Network == r.NetworkID {
			d.leaveLocked(ep)
			delete(d.st.Endpoints, id)
		}
	}
	if _, ok := d.st.Networks[r.NetworkID]; ok {
		delete(d.st.Networks, r.NetworkID)
		d.sw.RemoveNetwork(r.NetworkID)
		d.log.WithField("network", dataplane.ShortID(r.NetworkID)).Info("network deleted")
	}
	return d.saveLocked()
}

// CreateEndpoint records the address Swarm allocated (never changed). If
// Docker gave no MAC address, one is derived from the address and
// returned.
func (d *Driver) CreateEndpoint(r *network.CreateEndpointRequest) (*network.CreateEndpointResponse, error) {
	if r.Interface == nil || r.Interface.Address == "" {
		return nil, errors.New("meshnet: the endpoint has no IPv4 address (meshnet needs Docker's IPAM to assign one)")
	}
	if r.Interface.AddressIPv6 != "" {
		return nil, errIPv6
	}
	addr, err := netip.ParsePrefix(r.Interface.Address)
	if err != nil || !addr.Addr().Is4() {
		return nil, fmt.Errorf("meshnet: bad endpoint address %q", r.Interface.Address)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	n := d.st.Networks[r.NetworkID]
	if n == nil {
		return nil, fmt.Errorf("meshnet: network %s is not known on this node", dataplane.ShortID(r.NetworkID))
	}
	if !dataplane.InPools(n.Pools, addr.Addr()) {
		return nil, fmt.Errorf("meshnet: address %v is outside the network's subnets %v", addr.Addr(), n.Pools)
	}
	resp := &network.CreateEndpointResponse{}
	mac := r.Interface.MacAddress
	if mac == "" {
		mac = macFromAddr(addr.Addr()).String()
		resp.Interface = &network.EndpointInterface{MacAddress: mac}
	} else if _, err := net.ParseMAC(mac); err != nil {
		return nil, fmt.Errorf("meshnet: bad MAC address %q", mac)
	}
	// An endpoint that held this address before belonged to a container
	// that is gone (Swarm never gives one address twice at once).
	for id, ep := range d.st.Endpoints {
		if id != r.EndpointID && ep.Addr == addr.Addr() {
			d.log.WithFields(logrus.Fields{"endpoint": dataplane.ShortID(id), "addr": ep.Addr}).Info("stale endpoint replaced")
			d.leaveLocked(ep)
			delete(d.st.Endpoints, id)
		}
	}
	if old := d.st.Endpoints[r.EndpointID]; old != nil {
		d.leaveLocked(old)
	}
	d.st.Endpoints[r.EndpointID] = &Endpoint{ID: r.EndpointID, Network: r.NetworkID, Addr: addr.Addr(), Bits: addr.Bits(), MAC: mac}
	return resp, d.saveLocked()
}

// macFromAddr is Docker's own choice for a container MAC: 02:42 and the
// IPv4 address.
func macFromAddr(a netip.Addr) net.HardwareAddr {
	b := a.As4()
	return net.HardwareAddr{0x02, 0x42, b[0], b[1], b[2], b[3]}
}

// DeleteEndpoint forgets an endpoint (leaving it first if needed).
func (d *Driver) DeleteEndpoint(r *network.DeleteEndpointRequest) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	ep := d.st.Endpoints[r.EndpointID]
	if ep == nil {
		return nil
	}
	d.leaveLocked(ep)
	delete(d.st.Endpoints, r.EndpointID)
	return d.saveLocked()
}

// EndpointInfo reports an endpoint's interfaces and address.
func (d *Driver) EndpointInfo(r *network.InfoRequest) (*network.InfoResponse, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	ep := d.st.Endpoints[r.EndpointID]
	if ep == nil {
		return nil, fmt.Errorf("meshnet: endpoint %s not found", dataplane.ShortID(r.EndpointID))
	}
	return &network.InfoResponse{Value: map[string]string{
		"address": netip.PrefixFrom(ep.Addr, ep.Bits).String(), "mac": ep.MAC,
		"host_interface": ep.Host, "container_interface": ep.Peer,
	}}, nil
}

// Join creates the endpoint's veth pair, starts switching it and routes
// its address to this node across the mesh. It returns no gateway: the
// container's default route stays Docker's (docker_gwbridge).
func (d *Driver) Join(r *network.JoinRequest) (*network.JoinResponse, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	ep := d.st.Endpoints[r.EndpointID]
	if ep == nil {
		return nil, fmt.Errorf("meshnet: endpoint %s not found", dataplane.ShortID(r.EndpointID))
	}
	if ep.Host != "" {
		d.leaveLocked(ep)
	}
	n := d.st.Networks[ep.Network]
	if n == nil {
		return nil, fmt.Errorf("meshnet: network %s is not known on this node", dataplane.ShortID(ep.Network))
	}
	mac, _ := net.ParseMAC(ep.MAC)
	host, peer := vethNames(ep.ID)
	if err := d.links.AddVeth(host, peer, n.Options.MTU, mac); err != nil {
		return nil, fmt.Errorf("meshnet: create veth: %w", err)
	}
	ep.Host, ep.Peer = host, peer
	if err := d.attachLocked(ep); err != nil {
		d.links.Delete(host)
		ep.Host, ep.Peer = "", ""
		return nil, err
	}
	if err := d.saveLocked(); err != nil {
		d.leaveLocked(ep)
		return nil, err
	}
	d.log.WithFields(logrus.Fields{"endpoint": dataplane.ShortID(ep.ID), "network": dataplane.ShortID(ep.Network), "addr": ep.Addr,
		"interface": host}).Info("endpoint joined")
	return &network.JoinResponse{InterfaceName: network.InterfaceName{SrcName: peer, DstPrefix: "eth"}}, nil
}

// attachLocked opens the switch's port on ep's host end and announces
// its address.
func (d *Driver) attachLocked(ep *Endpoint) error {
	n := d.st.Networks[ep.Network]
	if n == nil {
		return fmt.Errorf("meshnet: network %s is not known on this node", dataplane.ShortID(ep.Network))
	}
	p, err := d.links.Open(ep.Host)
	if err != nil {
		return fmt.Errorf("meshnet: open %s: %w", ep.Host, err)
	}
	mac, _ := net.ParseMAC(ep.MAC)
	if err := d.sw.Attach(dataplane.Endpoint{ID: ep.ID, Network: ep.Network, Addr: ep.Addr, MAC: mac, Pools: n.Pools}, p); err != nil {
		p.Close()
		return fmt.Errorf("meshnet: attach %v: %w", ep.Addr, err)
	}
	if err := d.ann.AddPrefix(netip.PrefixFrom(ep.Addr, 32)); err != nil {
		d.sw.Detach(ep.ID)
		return fmt.Errorf("meshnet: announce %v: %w", ep.Addr, err)
	}
	return nil
}

// Leave stops switching the endpoint, withdraws its address and removes
// its veth pair.
func (d *Driver) Leave(r *network.LeaveRequest) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	ep := d.st.Endpoints[r.EndpointID]
	if ep == nil {
		return nil
	}
	d.leaveLocked(ep)
	d.log.WithFields(logrus.Fields{"endpoint": dataplane.ShortID(ep.ID), "addr": ep.Addr}).Info("endpoint left")
	return d.saveLocked()
}

func (d *Driver) leaveLocked(ep *Endpoint) {
	if ep.Host == "" {
		return
	}
	d.sw.Detach(ep.ID)
	if err := d.ann.RemovePrefix(netip.PrefixFrom(ep.Addr, 32)); err != nil {
		d.log.WithError(err).Warn("withdraw endpoint address")
	}
	d.links.Delete(ep.Host)
	d.links.Delete(ep.Peer)
	ep.Host, ep.Peer = "", ""
}

// Run calls Sweep every SweepInterval until ctx is done.
func (d *Driver) Run(ctx context.Context) {
	t := time.NewTicker(d.sweep)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			d.Sweep()
		}
	}
}

// Sweep leaves the endpoints whose host link disappeared (their container
// died with its namespace, without a Leave) and returns how many. Run
// calls it every SweepInterval.
func (d *Driver) Sweep() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, ep := range d.st.Endpoints {
		if ep.Host != "" && !d.links.Exists(ep.Host) {
			d.log.WithFields(logrus.Fields{"endpoint": dataplane.ShortID(ep.ID), "addr": ep.Addr}).Info("container link gone; endpoint left")
			d.leaveLocked(ep)
			n++
		}
	}
	if n > 0 {
		if err := d.saveLocked(); err != nil {
			d.log.WithError(err).Warn("save state")
		}
	}
	return n
}

// Networks returns the known networks and their endpoints, sorted, for
// status reporting.
func (d *Driver) Networks() ([]Network, []Endpoint) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var ns []Network
	for _, n := range d.st.Networks {
		ns = append(ns, *n)
	}
	var eps []Endpoint
	for _, ep := range d.st.Endpoints {
		eps = append(eps, *ep)
	}
	sort.Slice(ns, func(i, j int) bool { return ns[i].ID < ns[j].ID })
	sort.Slice(eps, func(i, j int) bool { return eps[i].ID < eps[j].ID })
	return ns, eps
}

// DiscoverNew and DiscoverDelete are hints (Docker's advertise addresses),
// not instructions: the mesh learns peers by itself.
func (d *Driver) DiscoverNew(*network.DiscoveryNotification) error    { return nil }
func (d *Driver) DiscoverDelete(*network.DiscoveryNotification) error { return nil }

// ProgramExternalConnectivity and RevokeExternalConnectivity have nothing
// to do: published ports go through docker_gwbridge, not meshnet.
func (d *Driver) ProgramExternalConnectivity(*network.ProgramExternalConnectivityRequest) error {
	return nil
}
func (d *Driver) RevokeExternalConnectivity(*network.RevokeExternalConnectivityRequest) error {
	return nil
}

// vethNames are the host and container ends of an endpoint's veth pair
// (15 characters at most, unique per endpoint).
func vethNames(id string) (host, peer string) {
	s := id
	if len(s) > 11 {
		s = s[:11]
	}
	return "mnh" + s, "mnc" + s
}
