package edge_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/types/events"
	"github.com/sirupsen/logrus"

	"github.com/homeswarm/homeswarm/edge"
	"github.com/homeswarm/homeswarm/edge/builder"
	"github.com/homeswarm/homeswarm/edge/sink"
	"github.com/homeswarm/homeswarm/edge/traefiktest"
	"github.com/homeswarm/homeswarm/edge/watcher/dockertest"
)

// backend is a tiny HTTP service on 127.0.0.1 standing in for a Swarm VIP.
func backend(t *testing.T) (url string) {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "backend saw "+r.Host+r.URL.Path)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// status GETs url through Traefik and returns the status code, body and Location.
func status(c *http.Client, url string) (int, string, string) {
	resp, err := c.Get(url)
	if err != nil {
		return 0, err.Error(), ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header.Get("Location")
}

// until polls url until it answers code and returns how long that took.
func until(t *testing.T, c *http.Client, url string, code int, from time.Time) time.Duration {
	t.Helper()
	deadline := from.Add(10 * time.Second)
	for {
		got, body, _ := status(c, url)
		if got == code {
			return time.Since(from)
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s: still %d %q after 10s, want %d", url, got, body, code)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func svc(name string, labels ...string) builder.Service {
	s := builder.Service{Name: name, Labels: map[string]string{}}
	for i := 0; i+1 < len(labels); i += 2 {
		s.Labels[labels[i]] = labels[i+1]
	}
	return s
}

func summary(d []time.Duration) string {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return "min " + s[0].Round(time.Millisecond).String() + " median " + s[len(s)/2].Round(time.Millisecond).String() +
		" max " + s[len(s)-1].Round(time.Millisecond).String()
}

// TestTraefikAppliesRoutes feeds a real Traefik through the file sink with
// routes of all three dialects, and measures how long Traefik takes to apply
// a new route (first 200) and a removal (first 404).
func TestTraefikAppliesRoutes(t *testing.T) {
	dir := t.TempDir()
	out, err := sink.NewFile(sink.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := out.Write(builder.Table{}); err != nil {
		t.Fatal(err)
	}
	// An ACME resolver whose CA is a closed local port: Traefik accepts the
	// routes that use it and serves them with its default certificate.
	tr := traefiktest.Start(t, dir,
		"--certificatesResolvers.le.acme.caServer=https://127.0.0.1:1/directory",
		"--certificatesResolvers.le.acme.storage="+t.TempDir()+"/acme.json",
		"--certificatesResolvers.le.acme.httpChallenge.entryPoint=web")
	c := tr.Client()
	be := backend(t)
	opts := builder.Options{BackendURL: func(string, string, int) string { return be }, CertResolver: "le"}

	base := []builder.Service{
		svc("v1", "traefik.frontend.rule", "Host:v1.test,v1b.test;PathPrefix:/api", "traefik.port", "8080"),
		svc("v2", "traefik.http.routers.r.rule", "Host(`v2.test`)",
			"traefik.http.services.s.loadbalancer.server.port", "8080"),
		svc("v2r", // the usual v2 pattern: a redirecting router on web, a TLS one on websecure
			"traefik.http.middlewares.to-https.redirectscheme.scheme", "https",
			"traefik.http.routers.http.rule", "Host(`v2r.test`)", "traefik.http.routers.http.entrypoints", "web",
			"traefik.http.routers.http.middlewares", "to-https",
			"traefik.http.routers.https.rule", "Host(`v2r.test`)", "traefik.http.routers.https.entrypoints", "websecure",
			"traefik.http.routers.https.tls.certresolver", "le",
			"traefik.http.services.s.loadbalancer.server.port", "8080"),
		svc("secure", "edge.host", "secure.test", "edge.port", "80"),
		svc("plain", "edge.host", "plain.test", "edge.port", "80", "edge.tls", "false"),
		svc("broken", "edge.host", "broken.test", "edge.port", "http"),
	}
	table, diags := builder.Build(base, opts)
	if len(table.Routes) != 6 || len(diags) != 1 {
		t.Fatalf("table %+v, diags %v", table, diags)
	}
	if _, err := out.Write(table); err != nil {
		t.Fatal(err)
	}
	until(t, c, "http://v2.test/", 200, time.Now())
	for _, tc := range []struct {
		url, body string
		code      int
	}{
		{"https://v1.test/api/x", "backend saw v1.test/api/x", 200},
		{"https://v1b.test/api", "backend saw v1b.test/api", 200},
		{"https://v1.test/other", "", 404},
		{"http://v2.test/", "backend saw v2.test/", 200},
		{"https://secure.test/", "backend saw secure.test/", 200},
		{"https://v2r.test/", "backend saw v2r.test/", 200},
		{"http://plain.test/", "backend saw plain.test/", 200},
		{"http://broken.test/", "", 404},
	} {
		code, body, _ := status(c, tc.url)
		if code != tc.code || (tc.body != "" && body != tc.body) {
			t.Errorf("GET %s = %d %q, want %d %q", tc.url, code, body, tc.code, tc.body)
		}
	}
	for _, h := range []string{"secure.test", "v1.test", "v2r.test"} {
		if code, _, loc := status(c, "http://"+h+"/api"); (code != 301 && code != 308) || loc != "https://"+h+"/api" {
			t.Errorf("plain HTTP to %s = %d Location %q, want a permanent redirect to https", h, code, loc)
		}
	}

	// Add and remove a route several times; time each apply.
	var adds, removes []time.Duration
	for i := 0; i < 5; i++ {
		with := append(append([]builder.Service(nil), base...), svc("app", "edge.host", "app.test", "edge.port", "80", "edge.tls", "false"))
		tb, _ := builder.Build(with, opts)
		if changed, err := out.Write(tb); err != nil || !changed {
			t.Fatalf("Write = %v, %v", changed, err)
		}
		adds = append(adds, until(t, c, "http://app.test/", 200, time.Now()))
		tb, _ = builder.Build(base, opts)
		if changed, err := out.Write(tb); err != nil || !changed {
			t.Fatalf("Write = %v, %v", changed, err)
		}
		removes = append(removes, until(t, c, "http://app.test/", 404, time.Now()))
	}
	// The other routes never went away.
	if code, _, _ := status(c, "http://v2.test/"); code != 200 {
		t.Errorf("v2.test = %d after the churn", code)
	}
	for _, l := range tr.Errors() {
		if !strings.Contains(l, "ACME") && !strings.Contains(l, "acme") && !strings.Contains(l, "use of closed network connection") {
			t.Errorf("Traefik logged an error: %s", l)
		}
	}
	t.Logf("Traefik %s file provider apply latency, write to first 200: %s", traefiktest.Version, summary(adds))
	t.Logf("Traefik %s file provider apply latency, write to first 404: %s", traefiktest.Version, summary(removes))
}

// TestDaemonFeedsTraefik runs the whole daemon with a fake Docker against a
// real Traefik: a service event becomes a working route, edge's default
// debounce included.
func TestDaemonFeedsTraefik(t *testing.T) {
	dir := t.TempDir()
	out, err := sink.NewFile(sink.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	tr := traefiktest.Start(t, dir)
	c := tr.Client()
	be := backend(t)
	fake := dockertest.New(nil)
	log := logrus.New()
	log.SetOutput(io.Discard)
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	d, err := edge.New(edge.Options{Docker: fake, Sink: out, Listener: ln, Log: logrus.NewEntry(log),
		Build: builder.Options{BackendURL: func(string, string, int) string { return be }}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run = %v", err)
		}
	}()
	deadline := time.Now().Add(5 * time.Second)
	for fake.Subscribers() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("daemon never subscribed to events")
		}
		time.Sleep(5 * time.Millisecond)
	}

	var adds, removes []time.Duration
	for i := 0; i < 5; i++ {
		fake.SetServices(dockertest.Service("gogs", nil, "edge.host", "gogs.test", "edge.port", "3000"))
		start := time.Now()
		fake.Emit(events.ActionCreate, "gogs")
		adds = append(adds, until(t, c, "http://gogs.test/", 200, start))
		fake.SetServices()
		start = time.Now()
		fake.Emit(events.ActionRemove, "gogs")
		removes = append(removes, until(t, c, "http://gogs.test/", 404, start))
	}
	if code, body, _ := status(http.DefaultClient, "http://"+ln.Addr().String()+"/metrics"); code != 200 ||
		!strings.Contains(body, "edge_docker_events_total 10") {
		t.Errorf("metrics = %d\n%s", code, body)
	}
	t.Logf("event to first 200 through Traefik (edge debounce 75ms included): %s", summary(adds))
	t.Logf("event to first 404 through Traefik (edge debounce 75ms included): %s", summary(removes))
}
