package netdriver

import (
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/docker/go-plugins-helpers/network"
	"github.com/sirupsen/logrus"

	"github.com/homeswarm/homeswarm/internal/plugintest"
	"github.com/homeswarm/homeswarm/netdriver/dataplane"
)

// fakeLinks stands in for netlink: a set of link names.
type fakeLinks struct {
	mu    sync.Mutex
	links map[string]net.HardwareAddr
	mtu   map[string]int
	opens int
	fail  error
}

func newFakeLinks() *fakeLinks {
	return &fakeLinks{links: map[string]net.HardwareAddr{}, mtu: map[string]int{}}
}

func (f *fakeLinks) AddVeth(host, peer string, mtu int, mac net.HardwareAddr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return f.fail
	}
	f.links[host], f.links[peer] = nil, mac
	f.mtu[host], f.mtu[peer] = mtu, mtu
	return nil
}

func (f *fakeLinks) Delete(name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.links, name)
	return nil
}

func (f *fakeLinks) Exists(name string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.links[name]
	return ok
}

func (f *fakeLinks) Open(name string) (dataplane.Port, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.links[name]; !ok {
		return nil, errors.New("no such link")
	}
	f.opens++
	return nopPort{}, nil
}

func (f *fakeLinks) names() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for n := range f.links {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

type nopPort struct{}

func (nopPort) Read([]byte) (int, error) { select {} }
func (nopPort) Write(_, _ []byte) error  { return nil }
func (nopPort) Close() error             { return nil }

// fakeAnnouncer records announced prefixes.
type fakeAnnouncer struct {
	mu sync.Mutex
	p  map[netip.Prefix]bool
}

func (a *fakeAnnouncer) AddPrefix(p netip.Prefix) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.p[p] = true
	return nil
}

func (a *fakeAnnouncer) RemovePrefix(p netip.Prefix) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.p, p)
	return nil
}

func (a *fakeAnnouncer) has(s string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.p[netip.MustParsePrefix(s)]
}

// fakeSwitch records attachments.
type fakeSwitch struct {
	mu       sync.Mutex
	networks map[string][]netip.Prefix
	attached map[string]dataplane.Endpoint
}

func newFakeSwitch() *fakeSwitch {
	return &fakeSwitch{networks: map[string][]netip.Prefix{}, attached: map[string]dataplane.Endpoint{}}
}

func (s *fakeSwitch) AddNetwork(id string, pools []netip.Prefix) {
	s.mu.Lock()
	s.networks[id] = pools
	s.mu.Unlock()
}
func (s *fakeSwitch) RemoveNetwork(id string) {
	s.mu.Lock()
	delete(s.networks, id)
	s.mu.Unlock()
}
func (s *fakeSwitch) Attach(ep dataplane.Endpoint, p dataplane.Port) error {
	s.mu.Lock()
	s.attached[ep.ID] = ep
	s.mu.Unlock()
	return nil
}
func (s *fakeSwitch) Detach(id string) {
	s.mu.Lock()
	delete(s.attached, id)
	s.mu.Unlock()
}
func (s *fakeSwitch) isAttached(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.attached[id]
	return ok
}

type fixture struct {
	links *fakeLinks
	ann   *fakeAnnouncer
	sw    *fakeSwitch
	state string
}

func newFixture(t *testing.T) *fixture {
	return &fixture{links: newFakeLinks(), ann: &fakeAnnouncer{p: map[netip.Prefix]bool{}}, sw: newFakeSwitch(),
		state: filepath.Join(t.TempDir(), "networks.json")}
}

func (f *fixture) driver(t *testing.T) *Driver {
	t.Helper()
	log := logrus.New()
	log.SetOutput(io.Discard)
	d, err := NewDriver(DriverOptions{Links: f.links, Announcer: f.ann, Switch: f.sw,
		MeshPrefix: netip.MustParsePrefix("10.254.0.0/24"), MTU: 1392, StateFile: f.state, Logger: logrus.NewEntry(log)})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// serve runs the real helper handler on a unix socket, as dockerd sees it.
func serve(t *testing.T, d *Driver) *http.Client {
	t.Helper()
	return plugintest.Serve(t, network.NewHandler(d).Serve)
}

func call(t *testing.T, c *http.Client, path, body string) (int, map[string]any) {
	t.Helper()
	return plugintest.Call(t, c, "NetworkDriver."+path, body)
}

const (
	netA = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	netB = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
	ep1  = "1111111111111111111111111111111111111111111111111111111111111111"
	ep2  = "2222222222222222222222222222222222222222222222222222222222222222"
)

func TestDriverOverSocket(t *testing.T) {
	f := newFixture(t)
	c := serve(t, f.driver(t))

	code, out := call(t, c, "GetCapabilities", `{}`)
	if code != 200 || out["Scope"] != "global" || out["ConnectivityScope"] != "global" {
		t.Fatalf("GetCapabilities = %d %v", code, out)
	}
	for _, tc := range []struct {
		name, path, body string
		wantCode         int
		wantErr          string // substring of Err; "" means no error
	}{
		{"allocate", "AllocateNetwork", `{"NetworkID":"` + netA + `","Options":{"mtu":"1300"},"IPv4Data":[{"Pool":"10.0.1.0/24","Gateway":"10.0.1.1/24"}]}`, 200, ""},
		{"allocate bad option", "AllocateNetwork", `{"NetworkID":"x","Options":{"mtuu":"1300"},"IPv4Data":[{"Pool":"10.0.1.0/24"}]}`, 500, "valid options: mtu="},
		{"allocate mtu too big", "AllocateNetwork", `{"NetworkID":"x","Options":{"mtu":"9000"},"IPv4Data":[{"Pool":"10.0.1.0/24"}]}`, 500, "576 to 1392"},
		{"allocate over the mesh", "AllocateNetwork", `{"NetworkID":"x","IPv4Data":[{"Pool":"10.254.0.0/16"}]}`, 500, "overlaps the mesh"},
		{"allocate ipv6", "AllocateNetwork", `{"NetworkID":"x","IPv4Data":[{"Pool":"10.0.1.0/24"}],"IPv6Data":[{"Pool":"fd00::/64"}]}`, 500, "IPv6"},
		{"allocate encrypted=false", "AllocateNetwork", `{"NetworkID":"x","Options":{"encrypted":"false"},"IPv4Data":[{"Pool":"10.0.1.0/24"}]}`, 500, "always encrypted"},
		{"malformed body", "CreateNetwork", `{"NetworkID":`, 400, ""},
		{"wrong types", "CreateEndpoint", `{"NetworkID":5}`, 400, ""},
		{"create", "CreateNetwork", `{"NetworkID":"` + netA + `","Options":{"com.docker.network.generic":{"mtu":"1300"},"com.docker.network.enable_ipv6":false},"IPv4Data":[{"Pool":"10.0.1.0/24","Gateway":"10.0.1.1/24"}]}`, 200, ""},
		{"create again", "CreateNetwork", `{"NetworkID":"` + netA + `","Options":{"com.docker.network.generic":{"mtu":"1300"}},"IPv4Data":[{"Pool":"10.0.1.0/24"}]}`, 200, ""},
		{"create overlapping", "CreateNetwork", `{"NetworkID":"` + netB + `","IPv4Data":[{"Pool":"10.0.1.128/25"}]}`, 500, "overlaps network"},
		{"create no subnet", "CreateNetwork", `{"NetworkID":"` + netB + `"}`, 500, "no IPv4 subnet"},
		{"create bad subnet", "CreateNetwork", `{"NetworkID":"` + netB + `","IPv4Data":[{"Pool":"10.0.1/24"}]}`, 500, "bad IPv4 subnet"},
		{"create B", "CreateNetwork", `{"NetworkID":"` + netB + `","IPv4Data":[{"Pool":"10.0.2.0/24"}]}`, 200, ""},
		{"endpoint no address", "CreateEndpoint", `{"NetworkID":"` + netA + `","EndpointID":"` + ep1 + `","Interface":{}}`, 500, "no IPv4 address"},
		{"endpoint outside subnet", "CreateEndpoint", `{"NetworkID":"` + netA + `","EndpointID":"` + ep1 + `","Interface":{"Address":"10.0.2.5/24"}}`, 500, "outside the network"},
		{"endpoint unknown network", "CreateEndpoint", `{"NetworkID":"nope","EndpointID":"` + ep1 + `","Interface":{"Address":"10.0.1.5/24"}}`, 500, "not known"},
		{"endpoint bad mac", "CreateEndpoint", `{"NetworkID":"` + netA + `","EndpointID":"` + ep1 + `","Interface":{"Address":"10.0.1.5/24","MacAddress":"zz"}}`, 500, "bad MAC"},
		{"join unknown", "Join", `{"NetworkID":"` + netA + `","EndpointID":"` + ep2 + `"}`, 500, "not found"},
		{"leave unknown", "Leave", `{"NetworkID":"` + netA + `","EndpointID":"` + ep2 + `"}`, 200, ""},
		{"discover", "DiscoverNew", `{"DiscoveryType":1,"DiscoveryData":{"Address":"192.168.50.11"}}`, 200, ""},
	} {
		code, out := call(t, c, tc.path, tc.body)
		errStr, _ := out["Err"].(string)
		if code != tc.wantCode || (tc.wantErr == "" && errStr != "") || !strings.Contains(errStr, tc.wantErr) {
			t.Errorf("%s: %d %v; want %d %q", tc.name, code, out, tc.wantCode, tc.wantErr)
		}
	}
	// AllocateNetwork echoes the options: workers only get those.
	_, out = call(t, c, "AllocateNetwork", `{"NetworkID":"x","Options":{"mtu":"1300","encrypted":""},"IPv4Data":[{"Pool":"10.0.1.0/24"}]}`)
	if o, _ := out["Options"].(map[string]any); o["mtu"] != "1300" || o["encrypted"] != "" {
		t.Fatalf("AllocateNetwork options not echoed: %v", out)
	}
	// Nothing was created by the refused calls.
	if got := f.links.names(); len(got) != 0 {
		t.Fatalf("links after refused calls: %v", got)
	}

	// The endpoint keeps Swarm's address; with no MAC given, one is chosen
	// and returned.
	code, out = call(t, c, "CreateEndpoint", `{"NetworkID":"`+netA+`","EndpointID":"`+ep1+`","Interface":{"Address":"10.0.1.5/24"}}`)
	if iface, _ := out["Interface"].(map[string]any); code != 200 || iface["MacAddress"] != "02:42:0a:00:01:05" || iface["Address"] != nil && iface["Address"] != "" {
		t.Fatalf("CreateEndpoint = %d %v", code, out)
	}
	code, out = call(t, c, "Join", `{"NetworkID":"`+netA+`","EndpointID":"`+ep1+`","SandboxKey":"/var/run/docker/netns/x"}`)
	ifn, _ := out["InterfaceName"].(map[string]any)
	if code != 200 || ifn["SrcName"] != "mnc11111111111" || ifn["DstPrefix"] != "eth" || out["Gateway"] != "" {
		t.Fatalf("Join = %d %v", code, out)
	}
	if f.links.mtu["mnc11111111111"] != 1300 || f.links.links["mnc11111111111"].String() != "02:42:0a:00:01:05" {
		t.Fatalf("veth mtu %v mac %v", f.links.mtu, f.links.links)
	}
	if !f.ann.has("10.0.1.5/32") || !f.sw.isAttached(ep1) {
		t.Fatal("joined endpoint not announced or not attached")
	}
	code, out = call(t, c, "EndpointOperInfo", `{"NetworkID":"`+netA+`","EndpointID":"`+ep1+`"}`)
	if v, _ := out["Value"].(map[string]any); code != 200 || v["address"] != "10.0.1.5/24" || v["host_interface"] != "mnh11111111111" {
		t.Fatalf("EndpointOperInfo = %d %v", code, out)
	}
	code, _ = call(t, c, "Leave", `{"NetworkID":"`+netA+`","EndpointID":"`+ep1+`"}`)
	if code != 200 || len(f.links.names()) != 0 || f.ann.has("10.0.1.5/32") || f.sw.isAttached(ep1) {
		t.Fatalf("after Leave: code %d links %v", code, f.links.names())
	}
	call(t, c, "DeleteEndpoint", `{"NetworkID":"`+netA+`","EndpointID":"`+ep1+`"}`)
	call(t, c, "DeleteNetwork", `{"NetworkID":"`+netA+`"}`)
	if _, ok := f.sw.networks[netA]; ok {
		t.Fatal("network still in the switch after DeleteNetwork")
	}
}

// TestDriverRestart: a new driver on the same state file (a plugin
// restart) reattaches endpoints whose container still runs and lets go of
// those whose link is gone.
func TestDriverRestart(t *testing.T) {
	f := newFixture(t)
	d := f.driver(t)
	if err := d.CreateNetwork(&network.CreateNetworkRequest{NetworkID: netA, IPv4Data: []*network.IPAMData{{Pool: "10.0.1.0/24"}}}); err != nil {
		t.Fatal(err)
	}
	for i, id := range []string{ep1, ep2} {
		addr := []string{"10.0.1.5/24", "10.0.1.6/24"}[i]
		if _, err := d.CreateEndpoint(&network.CreateEndpointRequest{NetworkID: netA, EndpointID: id,
			Interface: &network.EndpointInterface{Address: addr, MacAddress: "02:00:00:00:00:0" + string(rune('1'+i))}}); err != nil {
			t.Fatal(err)
		}
		if _, err := d.Join(&network.JoinRequest{NetworkID: netA, EndpointID: id}); err != nil {
			t.Fatal(err)
		}
	}
	// the plugin stops; ep2's container dies meanwhile (its veth goes)
	f.links.Delete("mnh22222222222")
	f.links.Delete("mnc22222222222")
	f.ann = &fakeAnnouncer{p: map[netip.Prefix]bool{}}
	f.sw = newFakeSwitch()
	d2 := f.driver(t)
	if !f.sw.isAttached(ep1) || !f.ann.has("10.0.1.5/32") || f.sw.networks[netA] == nil {
		t.Fatal("running endpoint not reattached after restart")
	}
	if f.sw.isAttached(ep2) || f.ann.has("10.0.1.6/32") {
		t.Fatal("dead endpoint reattached")
	}
	_, eps := d2.Networks()
	if len(eps) != 2 || eps[1].Host != "" {
		t.Fatalf("endpoints after restart: %+v", eps)
	}
	// ep1's container dies while the plugin runs: Sweep lets go of it.
	f.links.Delete("mnh11111111111")
	if n := d2.Sweep(); n != 1 || f.sw.isAttached(ep1) || f.ann.has("10.0.1.5/32") {
		t.Fatalf("Sweep = %d", n)
	}
	// A new endpoint with a dead endpoint's address replaces it.
	if _, err := d2.CreateEndpoint(&network.CreateEndpointRequest{NetworkID: netA, EndpointID: "3333",
		Interface: &network.EndpointInterface{Address: "10.0.1.6/24"}}); err != nil {
		t.Fatal(err)
	}
	if _, eps := d2.Networks(); len(eps) != 2 {
		t.Fatalf("stale endpoint not replaced: %+v", eps)
	}
	// a corrupt state file is an error, not a silent reset
	if err := writeFile(f.state, "{"); err != nil {
		t.Fatal(err)
	}
	if _, err := NewDriver(DriverOptions{Links: f.links, Announcer: f.ann, Switch: f.sw, MTU: 1392, StateFile: f.state}); err == nil {
		t.Fatal("corrupt state accepted")
	}
}

func TestParseNetworkOptions(t *testing.T) {
	for _, tc := range []struct {
		in      map[string]string
		mtu     int
		wantErr string
	}{
		{nil, 1392, ""},
		{map[string]string{"mtu": "1280"}, 1280, ""},
		{map[string]string{"com.docker.network.driver.mtu": "1000"}, 1000, ""},
		{map[string]string{"com.docker.network.enable_ipv6": "false"}, 1392, ""},
		{map[string]string{"encrypted": ""}, 1392, ""},
		{map[string]string{"encrypted": "true"}, 1392, ""},
		{map[string]string{"encrypted": "no"}, 0, "always encrypted"},
		{map[string]string{"mtu": "500"}, 0, "576 to 1392"},
		{map[string]string{"mtu": "1393"}, 0, "576 to 1392"},
		{map[string]string{"mtu": "x"}, 0, "576 to 1392"},
		{map[string]string{"subnet": "x"}, 0, `unknown option "subnet"`},
	} {
		o, err := ParseNetworkOptions(tc.in, 1392)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%v: err %v, want %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil || o.MTU != tc.mtu {
			t.Errorf("%v: %+v %v", tc.in, o, err)
		}
	}
}

func writeFile(path, s string) error { return os.WriteFile(path, []byte(s), 0o600) }
