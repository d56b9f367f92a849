package edge

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/types/events"
	"github.com/moby/moby/api/types/swarm"
	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"

	"github.com/homeswarm/homeswarm/edge/builder"
	"github.com/homeswarm/homeswarm/edge/sink"
	"github.com/homeswarm/homeswarm/edge/watcher"
	"github.com/homeswarm/homeswarm/edge/watcher/dockertest"
)

func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func watcherState(s []swarm.Service) watcher.State { return watcher.State{Services: s} }

func get(t *testing.T, h http.Handler, path string) string {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
	return rec.Body.String()
}

func quietLog() *logrus.Entry {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return logrus.NewEntry(l)
}

func httpGet(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// TestDaemon drives the whole daemon with a fake Docker: services appear,
// change, break and vanish, and Docker goes away and comes back.
func TestDaemon(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	out, err := sink.NewFile(sink.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	fake := dockertest.New(map[string]string{"n-web": "web"})
	fake.SetServices(dockertest.Service("gogs", []string{"n-web"}, "edge.host", "gogs.example.org", "edge.port", "3000"))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	log := quietLog()
	logs := logtest.NewLocal(log.Logger)
	d, err := New(Options{Docker: fake, Sink: out, Listener: ln, Log: log,
		Build:    builder.Options{CertResolver: "le", Network: "web"},
		Debounce: 10 * time.Millisecond, Resync: time.Hour, MinBackoff: 10 * time.Millisecond, MaxBackoff: 20 * time.Millisecond})
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
	read := func() string { b, _ := os.ReadFile(out.Path()); return string(b) }
	base := "http://" + ln.Addr().String()

	waitFor(t, "first routes", 2*time.Second, func() bool { return strings.Contains(read(), "http://gogs:3000") })
	if f := read(); !strings.Contains(f, "certResolver: le") || !strings.Contains(f, "gogs-redirect-https") {
		t.Errorf("file lacks TLS or redirect:\n%s", f)
	}

	// A new service with a malformed label and one not on Traefik's network.
	waitFor(t, "subscription", 2*time.Second, func() bool { return fake.Subscribers() == 1 })
	fake.SetServices(
		dockertest.Service("gogs", []string{"n-web"}, "edge.host", "gogs.example.org", "edge.port", "3000"),
		dockertest.Service("blog", []string{"n-web"}, "traefik.frontend.rule", "Host:blog.example.org", "traefik.port", "2368"),
		dockertest.Service("bad", []string{"n-web"}, "edge.host", "bad.example.org", "edge.port", "http"),
		dockertest.Service("lonely", nil, "edge.host", "lonely.example.org", "edge.port", "80"),
	)
	fake.Emit(events.ActionCreate, "blog")
	waitFor(t, "blog route", 2*time.Second, func() bool { return strings.Contains(read(), "http://blog:2368") })
	// The status page is updated right after the file.
	waitFor(t, "status update", 2*time.Second, func() bool { return strings.Contains(httpGet(t, base+"/"), "edge: 2 routes") })
	page := httpGet(t, base+"/")
	for _, want := range []string{"edge: 2 routes, 2 diagnostics", `service bad: label edge.port="http": invalid port`,
		"service lonely: service is not attached to network web", "Docker connected"} {
		if !strings.Contains(page, want) {
			t.Errorf("status page lacks %q:\n%s", want, page)
		}
	}
	if m := httpGet(t, base+"/metrics"); !strings.Contains(m, "edge_routes 2\n") || !strings.Contains(m, "edge_docker_up 1\n") ||
		!strings.Contains(m, "edge_docker_events_total 1\n") {
		t.Errorf("metrics:\n%s", m)
	}

	// Docker goes away: the routes stay, the status says so.
	before := read()
	fake.SetServices() // would remove every route if it were listed
	fake.SetDown(true)
	waitFor(t, "Docker down in status", 2*time.Second, func() bool {
		return strings.Contains(httpGet(t, base+"/"), "Docker UNUSABLE")
	})
	time.Sleep(100 * time.Millisecond)
	if read() != before {
		t.Fatal("routes changed while Docker was unreachable")
	}

	// Docker comes back with the services removed: the routes follow.
	fake.SetDown(false)
	waitFor(t, "routes removed after recovery", 2*time.Second, func() bool { return !strings.Contains(read(), "gogs") })
	waitFor(t, "status update", 2*time.Second, func() bool { return strings.Contains(httpGet(t, base+"/"), "edge: 0 routes") })
	if m := httpGet(t, base+"/metrics"); !strings.Contains(m, "edge_routes 0\n") || !strings.Contains(m, "edge_route_changes_total 3\n") {
		t.Errorf("metrics after recovery:\n%s", m)
	}
	// The watcher's lines name their part as meshnet's and syncvol's do.
	found := false
	for _, e := range logs.AllEntries() {
		if e.Message == "cannot use Docker; keeping the last routes and retrying" {
			found = true
			if e.Data["part"] != "watcher" {
				t.Errorf("watcher line %q has fields %v, want part=watcher", e.Message, e.Data)
			}
		}
	}
	if !found {
		t.Error("the watcher logged nothing when Docker went away")
	}
}

func TestNewRequiresDockerAndSink(t *testing.T) {
	t.Parallel()
	if _, err := New(Options{}); !errors.Is(err, ErrOptions) {
		t.Errorf("New(zero) = %v, want ErrOptions", err)
	}
}

// flakySink fails while broken is set.
type flakySink struct {
	broken bool
	writes int
}

func (s *flakySink) Write(builder.Table) (bool, error) {
	if s.broken {
		return false, errors.New("disk full")
	}
	s.writes++
	return true, nil
}

func TestSinkErrorKeepsLastGoodRoutesInStatus(t *testing.T) {
	t.Parallel()
	fake := dockertest.New(nil)
	sk := &flakySink{}
	d, err := New(Options{Docker: fake, Sink: sk, Log: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	fake.SetServices(dockertest.Service("a", nil, "edge.host", "a.example.org", "edge.port", "80"))
	st, _ := fake.Services(context.Background())
	d.apply(watcherState(st))
	sk.broken = true
	d.apply(watcherState(nil))
	page := get(t, d.Status(), "/")
	for _, want := range []string{"edge: 1 routes", "ERROR: disk full; Traefik keeps the routes below", "a.example.org"} {
		if !strings.Contains(page, want) {
			t.Errorf("status lacks %q:\n%s", want, page)
		}
	}
	if m := get(t, d.Status(), "/metrics"); !strings.Contains(m, "edge_sink_errors_total 1\n") {
		t.Errorf("metrics:\n%s", m)
	}
}
