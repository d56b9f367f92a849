//go:build e2e

package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/homeswarm/homeswarm/internal/netns"
	"github.com/homeswarm/homeswarm/internal/nxdns"
)

// The edge tests run Traefik (file provider, no docker.sock) and edge (the
// only holder of docker.sock) as Swarm services on the VPS, and web services
// labelled in each dialect, and send requests through Traefik from the VPS's
// network namespace.
//
// Web services run at home (EDGE_E2E_CONSTRAINT, node.labels.location==home
// by default), behind the NAT: Traefik on the VPS reaches them over a
// meshnet network they share, encrypted by the mesh.
//
// Web services use --endpoint-mode dnsrr (TestEdgeRollingUpdate also the
// default VIP mode): this kernel has no IPVS, so Swarm VIPs do not answer
// here. edge routes to the tasks' addresses (task-level balancing), which
// works in both modes.
var (
	edgeConstraint = envOr("EDGE_E2E_CONSTRAINT", "node.labels.location==home")
	topoPrefix     = envOr("TOPO_PREFIX", "hs")
	topoRun        = envOr("TOPO_RUN", "/run/"+topoPrefix)
)

const vpsAddr = "203.0.113.10"

// edgeStack is Traefik and edge running on the topology.
type edgeStack struct {
	client *http.Client
	https  bool   // client speaks HTTPS to Traefik's :443 (see httpsClient)
	routes string // host directory edge writes and Traefik watches
	status string // edge's status address, in the VPS's namespace
}

// startEdgeStack imports the images, starts the services and returns when
// Traefik answers; everything is removed when t ends.
func startEdgeStack(t *testing.T) *edgeStack {
	t.Helper()
	edgeImages(t)
	return runEdgeStack(t, edgeOpts())
}

// edgeImages imports edge and Traefik into the VPS and the web image into
// the nodes the web services run on.
func edgeImages(t *testing.T) {
	t.Helper()
	cmd := exec.Command(filepath.Join(repo, "scripts/images.sh"), "vps")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("images: %v: %s", err, out)
	}
	if !strings.Contains(edgeConstraint, "manager") {
		cmd := exec.Command(filepath.Join(repo, "scripts/images.sh"), "home1", "home2", "home3")
		cmd.Env = append(os.Environ(), "IMAGES=web")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("images: %v: %s", err, out)
		}
	}
}

// edgeOpts are startEdgeStack's: a meshnet network "web", which webService
// attaches to.
func edgeOpts() edgeStackOpts {
	return edgeStackOpts{routes: "edge-routes", network: "web", netArgs: []string{"-d", meshnetDriver},
		netRemove: 30 * time.Second, edgeListen: "127.0.0.1:8089", traefikLog: "INFO", timeout: 2 * time.Second,
		traefikUp: 60 * time.Second, probe: "nothing.e2e.test"}
}

// edgeStackOpts name and shape one Traefik + edge pair on the VPS.
type edgeStackOpts struct {
	// traefikFlags are more `service create` flags for Traefik (ports,
	// mounts, environment); traefikArgs more of Traefik's own arguments
	// (entry points, certificate resolvers).
	traefikFlags, traefikArgs []string

	prefix     string        // of the services' names: prefix+"traefik", prefix+"edge"
	routes     string        // directory under the VPS's state that edge writes and Traefik watches
	network    string        // created here, shared by Traefik and the routed services
	netArgs    []string      // driver and options of network
	netRemove  time.Duration // how long removing it may take at the end
	edgeListen string        // edge's status address
	traefikLog string        // Traefik's log level
	timeout    time.Duration // of each request through Traefik
	traefikUp  time.Duration // how long Traefik may take to answer
	probe      string        // a host name nothing routes
	// l4 are the TCP/UDP ports Traefik declares as entry points (published
	// in host mode) and edge fills (EDGE_TCP_PORTS/EDGE_UDP_PORTS); none: HTTP only.
	tcpPorts, udpPorts []int
}

// startWebStack imports the edge and Traefik images into the VPS and
// runs them (runEdgeStack).
func startWebStack(t *testing.T, o edgeStackOpts) *edgeStack {
	t.Helper()
	cmd := exec.Command(filepath.Join(repo, "scripts/images.sh"), "vps")
	cmd.Env = append(os.Environ(), "IMAGES=edge traefik")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("images: %v: %s", err, out)
	}
	return runEdgeStack(t, o)
}

// runEdgeStack starts Traefik (file provider, no docker.sock) and edge (the
// only holder of docker.sock) as services on the VPS, on a network of their
// own, and returns when Traefik answers and edge has written its file. The
// caller imports the images.
func runEdgeStack(t *testing.T, o edgeStackOpts) *edgeStack {
	t.Helper()
	vpsNS := netns.Path(topoPrefix + "-vps")
	// The VPS's upstream resolver (see package nxdns): Traefik asks Docker's
	// DNS for a dnsrr service before its task is up.
	dns, err := nxdns.Listen(vpsNS, vpsAddr+":53")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dns.Close() })

	s := &edgeStack{routes: filepath.Join(topoRoot, "vps", o.routes), status: o.edgeListen}
	if err := os.MkdirAll(s.routes, 0o755); err != nil {
		t.Fatal(err)
	}
	traefik, edge := o.prefix+"traefik", o.prefix+"edge"
	dk("vps", "network", "rm", o.network) // leftovers of an interrupted run
	mustDk(t, "vps", append(append([]string{"network", "create"}, o.netArgs...), "--attachable", o.network)...)
	t.Cleanup(func() {
		for _, svc := range []string{edge, traefik} {
			removeService(svc)
		}
		eventually(t, o.netRemove, "network "+o.network+" removed", func() error {
			_, err := dk("vps", "network", "rm", o.network)
			return err
		})
		os.RemoveAll(s.routes)
	})
	var publish, entryPoints []string
	for _, p := range o.tcpPorts {
		publish = append(publish, "--publish", fmt.Sprintf("mode=host,published=%d,target=%d,protocol=tcp", p, p))
		entryPoints = append(entryPoints, fmt.Sprintf("--entryPoints.tcp-%d.address=:%d/tcp", p, p))
	}
	for _, p := range o.udpPorts {
		publish = append(publish, "--publish", fmt.Sprintf("mode=host,published=%d,target=%d,protocol=udp", p, p))
		entryPoints = append(entryPoints, fmt.Sprintf("--entryPoints.udp-%d.address=:%d/udp", p, p))
	}
	flags := append(append([]string{"--constraint", "node.role==manager", "--network", o.network,
		"--dns", vpsAddr,
		"--publish", "mode=host,published=80,target=80"}, publish...),
		"--mount", "type=bind,source="+s.routes+",target=/routes,readonly")
	flags = append(flags, o.traefikFlags...)
	createService(t, traefik, append(append(append(flags, "homeswarm/traefik",
		"--entryPoints.web.address=:80", "--providers.file.directory=/routes",
		"--providers.file.watch=true", "--providers.providersThrottleDuration=0s", "--log.level="+o.traefikLog),
		entryPoints...), o.traefikArgs...)...)
	createService(t, edge, "--constraint", "node.role==manager", "--network", "host",
		"--mount", "type=bind,source="+filepath.Join(topoRun, "vps", "docker.sock")+",target=/var/run/docker.sock",
		"--mount", "type=bind,source="+s.routes+",target=/routes",
		"--env", "EDGE_NETWORK="+o.network, "--env", "EDGE_LISTEN="+o.edgeListen,
		// EDGE_E2E_LB=vip and EDGE_E2E_RETRY=0 run edge as it was before
		// task-level balancing (routes to http://<service>:<port>, no retry).
		"--env", "EDGE_LB="+os.Getenv("EDGE_E2E_LB"), "--env", "EDGE_RETRY="+os.Getenv("EDGE_E2E_RETRY"),
		"--env", "EDGE_TCP_PORTS="+joinPorts(o.tcpPorts), "--env", "EDGE_UDP_PORTS="+joinPorts(o.udpPorts),
		"homeswarm/edge")

	s.client = vpsClient(o.timeout)
	eventually(t, o.traefikUp, "Traefik answering on the VPS", func() error {
		code, _, err := s.get(o.probe)
		if err == nil && code != http.StatusNotFound {
			err = fmt.Errorf("status %d, want 404", code)
		}
		return err
	})
	eventually(t, 60*time.Second, "edge writing its file", func() error {
		_, err := os.Stat(filepath.Join(s.routes, "edge.yml"))
		return err
	})
	t.Cleanup(func() {
		if t.Failed() {
			for _, svc := range []string{edge, traefik} {
				out, _ := dk("vps", "service", "logs", "--tail", "30", svc)
				t.Logf("%s logs:\n%s", svc, out)
			}
			b, _ := os.ReadFile(filepath.Join(s.routes, "edge.yml"))
			t.Logf("edge.yml:\n%s", b)
		}
	})
	return s
}

func joinPorts(ports []int) string {
	s := make([]string, len(ports))
	for i, p := range ports {
		s[i] = strconv.Itoa(p)
	}
	return strings.Join(s, ",")
}

// vpsClient sends requests from the VPS's network namespace (the
// topology's "internet" side of Traefik), following no redirect.
func vpsClient(timeout time.Duration) *http.Client {
	d := &netns.Dialer{Path: netns.Path(topoPrefix + "-vps")}
	d.Timeout = 2 * time.Second
	return &http.Client{
		Timeout:   timeout,
		Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true},
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// get sends GET / with Host: host to Traefik on the VPS.
func (s *edgeStack) get(host string) (code int, body string, err error) {
	return s.send("GET", host, "/", "", "")
}

// location sends GET path with Host: host and returns the status and the
// Location header (redirects are not followed).
func (s *edgeStack) location(host, path string) (code int, loc string, err error) {
	req, err := http.NewRequest("GET", s.url(host, path), nil)
	if err != nil {
		return 0, "", err
	}
	req.Host = host
	resp, err := s.client.Do(req)
	if err != nil {
		return 0, "", err
	}
	resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("Location"), nil
}

// url is where a request for host's path goes: Traefik on the VPS, by
// plain HTTP with the Host header, or by HTTPS with host as SNI.
func (s *edgeStack) url(host, path string) string {
	if s.https {
		return "https://" + host + path // httpsClient dials the VPS whatever the host
	}
	return "http://" + vpsAddr + path
}

// httpsClient is an HTTPS client that dials addr:443 through d for every
// host and trusts only root: a request it completes proved a chain to
// root for the host name. Redirects are not followed.
func httpsClient(d *netns.Dialer, addr string, root *x509.Certificate, timeout time.Duration) *http.Client {
	roots := x509.NewCertPool()
	roots.AddCert(root)
	return &http.Client{Timeout: timeout, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return d.DialContext(ctx, network, addr+":443")
		},
		TLSClientConfig:   &tls.Config{RootCAs: roots},
		DisableKeepAlives: true,
	}, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// send sends one request with Host: host to Traefik on the VPS (ctype,
// when set, is the body's Content-Type) and returns the status and the
// trimmed body.
func (s *edgeStack) send(method, host, path, ctype, body string) (code int, out string, err error) {
	req, err := http.NewRequest(method, s.url(host, path), strings.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	req.Host = host
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b)), err
}

// edgeMetric reads one sample of edge's /metrics (edge runs on the VPS's
// host network).
func (s *edgeStack) edgeMetric(name string) (float64, error) {
	resp, err := s.client.Get("http://" + s.status + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) == 2 && f[0] == name {
			return strconv.ParseFloat(f[1], 64)
		}
	}
	return 0, fmt.Errorf("no %s in edge's metrics", name)
}

// waitFor polls host until it answers want (and, for 200, the body text)
// and returns how long that took.
func (s *edgeStack) waitFor(t *testing.T, host string, want int, text string, d time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := start.Add(d)
	var last string
	for {
		code, body, err := s.get(host)
		if err == nil && code == want && (text == "" || body == text) {
			return time.Since(start)
		}
		last = fmt.Sprintf("status %d body %q err %v", code, body, err)
		if time.Now().After(deadline) {
			t.Fatalf("%s: no %d (%q) within %s; last: %s", host, want, text, d, last)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitRouted polls host until Traefik has a route for it (anything but its
// 404: a 502 while the task starts, or a 200) and returns how long that took.
func (s *edgeStack) waitRouted(t *testing.T, host string, d time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		code, _, err := s.get(host)
		if err == nil && code != http.StatusNotFound {
			return time.Since(start)
		}
		if time.Since(start) > d {
			t.Fatalf("%s: no route within %s (status %d, %v)", host, d, code, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// webService creates a labelled web service answering text on its port.
func webService(t *testing.T, name, text string, args ...string) {
	t.Helper()
	base := []string{"--endpoint-mode", "dnsrr", "--network", "web", "--constraint", edgeConstraint,
		"--env", "WEB_TEXT=" + text}
	createService(t, name, append(append(base, args...), "homeswarm/web")...)
}

func TestEdge(t *testing.T) {
	s := startEdgeStack(t)

	t.Run("EdgeLabels", func(t *testing.T) {
		// Route up: `service create` returned → first 200 through Traefik.
		webService(t, "e2e-edge", "edge-8080", "--label", "edge.host=edge.e2e.test", "--label", "edge.port=8080")
		start := time.Now()
		seen := s.waitRouted(t, "edge.e2e.test", 10*time.Second)
		up := time.Since(start) + s.waitFor(t, "edge.e2e.test", http.StatusOK, "edge-8080", 30*time.Second)
		t.Logf("route up: first 200 %.0f ms after `service create` returned (target < 1 s); route in Traefik (first answer other than 404; 502 until the task serves) after %.0f ms",
			up.Seconds()*1000, seen.Seconds()*1000)
		// The < 1 s target is bench/edge's (measured against Traefik's own
		// provider in one run); here, on a machine shared with other work,
		// only an order of magnitude is asserted: far below a 15 s poll.
		if seen > 5*time.Second {
			t.Errorf("route reached Traefik %s after service create: no better than polling", seen)
		}
		if up > 15*time.Second {
			t.Errorf("first 200 %s after service create: no better than Traefik's 15 s poll", up)
		}

		// The port changes: the route follows (the old port no longer answers).
		mustDk(t, "vps", "service", "update", "-q", "--detach", "--env-add", "WEB_PORT=8081",
			"--env-add", "WEB_TEXT=edge-8081", "--label-add", "edge.port=8081", "e2e-edge")
		d := s.waitFor(t, "edge.e2e.test", http.StatusOK, "edge-8081", 30*time.Second)
		t.Logf("port 8080 → 8081: served by the new port after %.0f ms", d.Seconds()*1000)
		// Task-level balancing: the route lists the task's address.
		if b, _ := os.ReadFile(filepath.Join(s.routes, "edge.yml")); !strings.Contains(string(b), ":8081") || strings.Contains(string(b), ":8080") {
			t.Errorf("edge.yml does not point at port 8081:\n%s", b)
		}

		// The host changes: the new name answers, the old one is gone.
		mustDk(t, "vps", "service", "update", "-q", "--detach", "--label-add", "edge.host=edge2.e2e.test", "e2e-edge")
		d = s.waitFor(t, "edge2.e2e.test", http.StatusOK, "edge-8081", 10*time.Second)
		s.waitFor(t, "edge.e2e.test", http.StatusNotFound, "", 5*time.Second)
		t.Logf("host edge → edge2: new host answers after %.0f ms, old host 404", d.Seconds()*1000)

		// Removed: 404.
		mustDk(t, "vps", "service", "rm", "e2e-edge")
		d = s.waitFor(t, "edge2.e2e.test", http.StatusNotFound, "", 5*time.Second)
		t.Logf("route down: first 404 %.0f ms after `service rm` returned", d.Seconds()*1000)
		if d > time.Second {
			t.Errorf("route removed %s after service rm, want < 1 s", d)
		}
	})

	t.Run("TraefikV1Labels", func(t *testing.T) {
		webService(t, "e2e-v1", "v1", "--label", "traefik.frontend.rule=Host:v1.e2e.test",
			"--label", "traefik.port=8080")
		d := s.waitFor(t, "v1.e2e.test", http.StatusOK, "v1", 30*time.Second)
		t.Logf("v1 labels: first 200 after %.0f ms", d.Seconds()*1000)
		mustDk(t, "vps", "service", "rm", "e2e-v1")
		s.waitFor(t, "v1.e2e.test", http.StatusNotFound, "", 5*time.Second)
	})

	t.Run("TraefikV2Labels", func(t *testing.T) {
		webService(t, "e2e-v2", "v2", "--label", "traefik.http.routers.site.rule=Host(`v2.e2e.test`)",
			"--label", "traefik.http.services.site.loadbalancer.server.port=8080")
		d := s.waitFor(t, "v2.e2e.test", http.StatusOK, "v2", 30*time.Second)
		t.Logf("v2/v3 labels: first 200 after %.0f ms", d.Seconds()*1000)
		mustDk(t, "vps", "service", "rm", "e2e-v2")
		s.waitFor(t, "v2.e2e.test", http.StatusNotFound, "", 5*time.Second)
	})

	t.Run("RestartKeepsRoutes", func(t *testing.T) {
		hosts := map[string]string{"r1.e2e.test": "r1", "r2.e2e.test": "r2", "r3.e2e.test": "r3"}
		webService(t, "e2e-r1", "r1", "--label", "edge.host=r1.e2e.test", "--label", "edge.port=8080")
		webService(t, "e2e-r2", "r2", "--label", "traefik.frontend.rule=Host:r2.e2e.test", "--label", "traefik.port=8080")
		webService(t, "e2e-r3", "r3", "--label", "traefik.http.routers.r.rule=Host(`r3.e2e.test`)",
			"--label", "traefik.http.services.r.loadbalancer.server.port=8080")
		for h, text := range hosts {
			s.waitFor(t, h, http.StatusOK, text, 30*time.Second)
		}
		before, _ := os.ReadFile(filepath.Join(s.routes, "edge.yml"))

		// Poll every route while edge restarts, and for a while after.
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var mu sync.Mutex
		var bad []string
		requests := 0
		var wg sync.WaitGroup
		for h, text := range hosts {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for ctx.Err() == nil {
					code, body, err := s.get(h)
					mu.Lock()
					requests++
					if err != nil || code != http.StatusOK || body != text {
						bad = append(bad, fmt.Sprintf("%s %s: %d %q %v", time.Now().Format("15:04:05.000"), h, code, body, err))
					}
					mu.Unlock()
					time.Sleep(50 * time.Millisecond)
				}
			}()
		}
		oldTask, _ := dk("vps", "service", "ps", "-q", "--filter", "desired-state=running", "edge")
		start := time.Now()
		out, err := dk("vps", "service", "update", "--force", "--detach=false", "edge")
		restart := time.Since(start)
		newTask, _ := dk("vps", "service", "ps", "-q", "--filter", "desired-state=running", "edge")
		if err == nil {
			// Until the new edge has listed the Swarm and compared its table
			// with the file: its own counter, its last listing after the restart.
			eventually(t, 30*time.Second, "the restarted edge has listed the Swarm", func() error {
				n, err := s.edgeMetric("edge_syncs_total")
				if err != nil {
					return err
				}
				at, err := s.edgeMetric("edge_last_sync_timestamp_seconds")
				if err != nil {
					return err
				}
				if n < 1 || at < float64(start.UnixNano())/1e9 {
					return fmt.Errorf("edge_syncs_total %v, last sync %.3f, restart began %.3f", n, at, float64(start.UnixNano())/1e9)
				}
				return nil
			})
			// and every route asked twice more after that
			mu.Lock()
			mark := requests
			mu.Unlock()
			eventually(t, 10*time.Second, "requests after the new edge listed", func() error {
				mu.Lock()
				defer mu.Unlock()
				if requests < mark+2*len(hosts) {
					return fmt.Errorf("%d requests since", requests-mark)
				}
				return nil
			})
		}
		cancel()
		wg.Wait()
		if err != nil {
			t.Fatalf("edge restart: %v: %s", err, out)
		}
		if oldTask == newTask {
			t.Fatalf("edge task %s was not replaced", oldTask)
		}
		t.Logf("edge restarted (task %s → %s) in %.1f s; %d requests during and after, %d not 200",
			oldTask, newTask, restart.Seconds(), requests, len(bad))
		if len(bad) > 0 {
			t.Errorf("routes failed during the restart:\n%s", strings.Join(bad, "\n"))
		}
		after, _ := os.ReadFile(filepath.Join(s.routes, "edge.yml"))
		if string(before) != string(after) {
			t.Errorf("edge.yml changed across the restart:\n%s\n---\n%s", before, after)
		}

		// The restarted edge follows changes.
		webService(t, "e2e-r4", "r4", "--label", "edge.host=r4.e2e.test", "--label", "edge.port=8080")
		s.waitFor(t, "r4.e2e.test", http.StatusOK, "r4", 30*time.Second)
		mustDk(t, "vps", "service", "rm", "e2e-r1")
		s.waitFor(t, "r1.e2e.test", http.StatusNotFound, "", 5*time.Second)
		t.Logf("after the restart: a new service is routed and a removed one is gone")
	})
}
