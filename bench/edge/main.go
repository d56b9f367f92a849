//go:build linux

// Command edge measures, on the one-machine Swarm (scripts/topo.sh), how
// fast a route follows a Swarm service through Traefik, side by side in one
// run:
//
//   - edge + Traefik's file provider (Traefik without docker.sock),
//   - Traefik's own swarm provider at its defaults (docker.sock mounted,
//     refreshSeconds=15: the anchor),
//   - the swarm provider with refreshSeconds=1.
//
// The three Traefiks run as Swarm services on the VPS (entry points on
// 203.0.113.10:80, :81, :82) and watch the same web services, which carry
// Traefik v3 labels that both edge and the swarm provider read. Each
// repetition creates one web service and polls all three Traefiks for its
// first 200 (timed from `docker service create` returning), then removes it
// and polls for the first 404 (timed from `docker service rm` returning).
// Results go to a JSON file (the schema every bench/ program writes) and a
// table on stdout.
//
// Run it with bench/edge.sh, which brings up a topology instance of its own.
package main

import (
	"context"
	"flag"
	"fmt"
	"github.com/homeswarm/homeswarm/bench/schema"
	"github.com/homeswarm/homeswarm/bench/swarmtopo"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/homeswarm/homeswarm/internal/netns"
	"github.com/homeswarm/homeswarm/internal/nxdns"
)

const vpsAddr = "203.0.113.10"

// provider is one way of feeding Traefik routes; each has its own Traefik.
type provider struct {
	name    string // row name
	service string // Swarm service of its Traefik
	port    int    // published entry point on the VPS
	args    []string
	sock    bool // docker.sock mounted into Traefik
	client  *http.Client
}

// sample is one repetition's figures for one provider, in seconds: route up
// (create → first 200), route seen (create → first answer but Traefik's 404),
// route down (rm → first 404), the task's start (create → task running, the
// same for every provider) and the route's lag behind it (up − task).
type sample struct{ up, seen, down, task, lag float64 }

// row is the shared bench schema (package schema).
type row = schema.Row

// report is the shared bench schema (package schema).
type report = schema.Result

var (
	prefix = envOr("TOPO_PREFIX", "hb")
	root   = envOr("TOPO_ROOT", "/var/lib/homeswarm-topo-"+prefix)
	run    = envOr("TOPO_RUN", "/run/"+prefix)
)

func envOr(k, d string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return d
}

// logf and fail write the bench's log lines and its fatal error on stderr.
var logf, fail = swarmtopo.Log("bench/edge").Printf, swarmtopo.Log("bench/edge").Fatalf

func main() {
	n := flag.Int("n", 8, "repetitions (>= 5; 0 with -updates or -l4: those only)")
	updates := flag.Int("updates", 0, "rounds of each rolling update (2 replicas --force; 1 replica start-first) counting failed requests per Traefik")
	l4 := flag.Int("l4", 0, "repetitions of a TCP+UDP service's routes up and down per Traefik (entry points tcp-7000/udp-7000)")
	l4Conns := flag.Int("l4-conns", 200, "with -l4: connections timed through edge's Traefik and direct to the task")
	l4Constraint := flag.String("l4-constraint", "node.role==manager", "with -l4: placement of the TCP/UDP services (node.labels.location==home: through the mesh, on a topology with meshnet)")
	out := flag.String("out", "", "JSON results file (default bench/results/edge.json; with -n 0 edge-updates.json, or edge-l4.json for -l4 alone)")
	timeout := flag.Duration("timeout", 60*time.Second, "give up on one route change after this long")
	flag.Parse()
	if *n < 5 && !(*n == 0 && (*updates > 0 || *l4 > 0)) {
		fail("-n must be at least 5 (or 0 with -updates or -l4)")
	}
	if *out == "" {
		switch {
		case *n > 0:
			*out = "bench/results/edge.json"
		case *updates > 0:
			*out = "bench/results/edge-updates.json"
		default:
			*out = "bench/results/edge-l4.json"
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	b := &bench{timeout: *timeout, routes: filepath.Join(root, "vps", "edge-routes"), l4: *l4 > 0, l4Constraint: *l4Constraint}
	err := b.setup(ctx)
	var samples map[string][]sample
	if err == nil && *n > 0 {
		samples, err = b.measure(ctx, *n)
	}
	var rolls []rollResult
	if err == nil && *updates > 0 {
		rolls, err = b.rollingUpdates(ctx, *updates)
	}
	var (
		l4Samples     map[string][]l4Sample
		route, direct []float64
	)
	if err == nil && *l4 > 0 {
		if l4Samples, err = b.measureL4(ctx, *l4); err == nil {
			route, direct, err = b.measureL4Latency(ctx, *l4Conns)
		}
	}
	b.teardown()
	if err != nil {
		fail("%v", err)
	}
	var rep report
	if *n > 0 {
		rep = b.report(samples)
	} else {
		rep = report{Bench: "edge", Machine: machine(), Date: time.Now().UTC().Format(time.RFC3339)}
	}
	rep.Rows = append(rep.Rows, b.rollRows(rolls)...)
	if *l4 > 0 {
		rep.Rows = append(rep.Rows, b.l4Rows(l4Samples, route, direct)...)
	}
	if err := schema.Write(*out, rep); err != nil {
		fail("%v", err)
	}
	printSummary(rep, *out)
}

type bench struct {
	timeout   time.Duration
	routes    string
	providers []*provider
	dns       *nxdns.Server
	services  []string // to remove at the end
	network   bool
	// l4 declares TCP and UDP entry points in every Traefik (-l4), for
	// services placed by l4Constraint.
	l4           bool
	l4Constraint string
}

// docker runs the docker CLI against the VPS's engine.
func docker(args ...string) (string, error) {
	cmd := exec.Command("docker", append([]string{"-H", "unix://" + filepath.Join(run, "vps", "docker.sock")}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("docker %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out)), nil
}

func (b *bench) setup(ctx context.Context) error {
	repo, err := os.Getwd()
	if err != nil {
		return err
	}
	logf("images into the VPS's engine (topology %s)", prefix)
	cmd := exec.CommandContext(ctx, filepath.Join(repo, "scripts/images.sh"), "vps")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("scripts/images.sh (run from the repository root): %v: %s", err, out)
	}
	vpsNS := netns.Path(prefix + "-vps")
	// The VPS's upstream DNS (package nxdns): without one, Docker's DNS stays
	// silent for a dnsrr service whose task is not up yet, and Traefik waits
	// out a 5 s resolver timeout.
	if b.dns, err = nxdns.Listen(vpsNS, vpsAddr+":53"); err != nil {
		return err
	}
	if err := os.MkdirAll(b.routes, 0o755); err != nil {
		return err
	}
	docker("network", "rm", "web")
	if _, err := docker("network", "create", "-d", "overlay", "--attachable", "web"); err != nil {
		return err
	}
	b.network = true
	sock := filepath.Join(run, "vps", "docker.sock")
	swarm := []string{"--providers.swarm=true", "--providers.swarm.endpoint=unix:///var/run/docker.sock",
		"--providers.swarm.network=web"}
	b.providers = []*provider{
		{name: "edge + traefik file provider", service: "traefik-file", port: 80,
			args: []string{"--providers.file.directory=/routes", "--providers.file.watch=true",
				"--providers.providersThrottleDuration=0s"}},
		{name: "traefik swarm provider (15s poll)", service: "traefik-swarm15", port: 81, sock: true,
			args: swarm},
		{name: "traefik swarm provider (1s poll)", service: "traefik-swarm1", port: 82, sock: true,
			args: append(append([]string(nil), swarm...), "--providers.swarm.refreshSeconds=1")},
	}
	if b.l4 {
		if err := b.l4Images(ctx, repo); err != nil {
			return err
		}
	}
	for i, p := range b.providers {
		args := []string{"service", "create", "-q", "--detach", "--no-resolve-image", "--name", p.service,
			"--constraint", "node.role==manager", "--network", "web", "--dns", vpsAddr,
			"--publish", fmt.Sprintf("mode=host,published=%d,target=80", p.port)}
		if b.l4 {
			publish, flags := l4Args(i)
			args = append(args, publish...)
			p.args = append(p.args, flags...)
		}
		if p.sock {
			args = append(args, "--mount", "type=bind,source="+sock+",target=/var/run/docker.sock")
		} else {
			args = append(args, "--mount", "type=bind,source="+b.routes+",target=/routes,readonly")
		}
		args = append(append(args, "homeswarm/traefik", "--entryPoints.web.address=:80", "--log.level=WARN"), p.args...)
		if err := b.create(args...); err != nil {
			return err
		}
		d := &netns.Dialer{Path: vpsNS}
		d.Timeout = 2 * time.Second
		p.client = &http.Client{
			Timeout:   2 * time.Second,
			Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true},
		}
	}
	if err := b.create("service", "create", "-q", "--detach", "--no-resolve-image", "--name", "edge",
		"--constraint", "node.role==manager", "--network", "host",
		"--mount", "type=bind,source="+sock+",target=/var/run/docker.sock",
		"--mount", "type=bind,source="+b.routes+",target=/routes",
		"--env", "EDGE_NETWORK=web", "--env", "EDGE_LISTEN=127.0.0.1:8089",
		"--env", fmt.Sprintf("EDGE_TCP_PORTS=%d", l4Port), "--env", fmt.Sprintf("EDGE_UDP_PORTS=%d", l4Port), "homeswarm/edge"); err != nil {
		return err
	}
	for _, p := range b.providers {
		if _, err := b.until(ctx, p, "nothing.bench.test", func(code int, _ string) bool { return code == 404 }); err != nil {
			return fmt.Errorf("%s does not answer: %w", p.service, err)
		}
	}
	if err := swarmtopo.Poll(ctx, b.timeout, 100*time.Millisecond, func() error {
		_, err := os.Stat(filepath.Join(b.routes, "edge.yml"))
		return err
	}); err != nil {
		return fmt.Errorf("edge wrote no file into %s: %w", b.routes, err)
	}
	logf("three Traefiks and edge are up")
	return nil
}

func (b *bench) create(args ...string) error {
	name := ""
	for i, a := range args {
		if a == "--name" {
			name = args[i+1]
		}
	}
	docker("service", "rm", name) // leftovers of an interrupted run
	_, err := docker(args...)
	if err == nil {
		b.services = append(b.services, name)
	}
	return err
}

func (b *bench) teardown() {
	for i := len(b.services) - 1; i >= 0; i-- {
		docker("service", "rm", b.services[i])
	}
	if b.network {
		swarmtopo.Poll(context.Background(), 30*time.Second, 500*time.Millisecond, func() error {
			_, err := docker("network", "rm", "web")
			return err
		})
	}
	if b.dns != nil {
		b.dns.Close()
	}
	os.RemoveAll(b.routes)
}

// get sends GET / with Host: host to p's Traefik.
func (p *provider) get(ctx context.Context, host string) (int, string, error) {
	req, _ := http.NewRequestWithContext(ctx, "GET", fmt.Sprintf("http://%s:%d/", vpsAddr, p.port), nil)
	req.Host = host
	resp, err := p.client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(body)), err
}

// until polls p every 20 ms until ok holds and returns the time it took.
func (b *bench) until(ctx context.Context, p *provider, host string, ok func(int, string) bool) (time.Duration, error) {
	start := time.Now()
	err := swarmtopo.Poll(ctx, b.timeout, 20*time.Millisecond, func() error {
		code, body, err := p.get(ctx, host)
		if err == nil && !ok(code, body) {
			err = fmt.Errorf("last answer %d %q", code, body)
		}
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("%s via %s: %w", host, p.service, err)
	}
	return time.Since(start), nil
}

// measure runs n repetitions and returns each provider's samples.
func (b *bench) measure(ctx context.Context, n int) (map[string][]sample, error) {
	res := map[string][]sample{}
	for i := 1; i <= n; i++ {
		name := fmt.Sprintf("bench-%d", i)
		host := name + ".bench.test"
		s, err := b.once(ctx, name, host)
		if err != nil {
			return nil, err
		}
		var parts []string
		for j, p := range b.providers {
			res[p.name] = append(res[p.name], s[j])
			parts = append(parts, fmt.Sprintf("%s up %.2fs down %.2fs", p.service, s[j].up, s[j].down))
			if j == len(b.providers)-1 {
				parts = append(parts, fmt.Sprintf("task running after %.2fs", s[j].task))
			}
		}
		logf("%d/%d: %s", i, n, strings.Join(parts, ", "))
	}
	return res, nil
}

// once creates one web service, times its route up on every provider,
// removes it and times its route down.
func (b *bench) once(ctx context.Context, name, host string) ([]sample, error) {
	s := make([]sample, len(b.providers))
	router := strings.ReplaceAll(name, "-", "")
	// Random pauses before create and rm, so both fall at random phases of
	// the pollers (otherwise each repetition locks onto the 15 s period).
	if err := pause(ctx); err != nil {
		return nil, err
	}
	_, err := docker("service", "create", "-q", "--detach", "--no-resolve-image", "--name", name,
		"--endpoint-mode", "dnsrr", "--network", "web", "--constraint", "node.role==manager",
		"--stop-grace-period", "2s", "--env", "WEB_TEXT="+name,
		"--label", "traefik.http.routers."+router+".rule=Host(`"+host+"`)",
		"--label", "traefik.http.services."+router+".loadbalancer.server.port=8080",
		"homeswarm/web")
	if err != nil {
		return nil, err
	}
	created := time.Now()
	err = b.each(ctx, func(i int, p *provider) error {
		start := created
		seen, err := b.until(ctx, p, host, func(code int, _ string) bool { return code != 404 })
		if err != nil {
			return err
		}
		s[i].seen = seen.Seconds()
		_, err = b.until(ctx, p, host, func(code int, body string) bool { return code == 200 && body == name })
		s[i].up = time.Since(start).Seconds()
		return err
	})
	if err != nil {
		docker("service", "rm", name)
		return nil, err
	}
	running, err := taskRunning(name)
	if err != nil {
		docker("service", "rm", name)
		return nil, err
	}
	for i := range s {
		s[i].task = running.Sub(created).Seconds()
		s[i].lag = math.Max(0, s[i].up-s[i].task)
	}
	if err := pause(ctx); err != nil {
		docker("service", "rm", name)
		return nil, err
	}
	if _, err := docker("service", "rm", name); err != nil {
		return nil, err
	}
	err = b.each(ctx, func(i int, p *provider) error {
		d, err := b.until(ctx, p, host, func(code int, _ string) bool { return code == 404 })
		s[i].down = d.Seconds()
		return err
	})
	return s, err
}

// pause sleeps a random 0-15 s (one period of Traefik's default poll).
func pause(ctx context.Context) error {
	return swarmtopo.Sleep(ctx, time.Duration(rand.Int64N(int64(15*time.Second))))
}

// taskRunning returns when the service's task became running, by the
// engine's clock (the same machine's).
func taskRunning(service string) (time.Time, error) {
	ids, err := docker("service", "ps", "-q", "--filter", "desired-state=running", service)
	if err != nil {
		return time.Time{}, err
	}
	for _, id := range strings.Fields(ids) {
		out, err := docker("inspect", "--format", "{{.Status.State}} {{.Status.Timestamp.Format \"2006-01-02T15:04:05.999999999Z07:00\"}}", id)
		if err != nil {
			return time.Time{}, err
		}
		if f := strings.Fields(out); len(f) == 2 && f[0] == "running" {
			return time.Parse(time.RFC3339Nano, f[1])
		}
	}
	return time.Time{}, fmt.Errorf("service %s has no running task", service)
}

// each runs f for every provider at once and returns the first error.
func (b *bench) each(ctx context.Context, f func(int, *provider) error) error {
	var wg sync.WaitGroup
	errs := make([]error, len(b.providers))
	for i, p := range b.providers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = f(i, p)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func (b *bench) report(samples map[string][]sample) report {
	anchor := b.providers[1].name
	metrics := []struct {
		name string
		pick func(sample) float64
		q    float64 // percentile
	}{
		{"route up p50", func(s sample) float64 { return s.up }, 50},
		{"route up p90", func(s sample) float64 { return s.up }, 90},
		{"route down p50", func(s sample) float64 { return s.down }, 50},
		{"route down p90", func(s sample) float64 { return s.down }, 90},
		{"route seen p50", func(s sample) float64 { return s.seen }, 50},
		{"route up after task start p50", func(s sample) float64 { return s.lag }, 50},
		{"route up after task start p90", func(s sample) float64 { return s.lag }, 90},
	}
	series := func(p string, pick func(sample) float64) []float64 {
		var xs []float64
		for _, s := range samples[p] {
			xs = append(xs, schema.Round(pick(s), 3))
		}
		return xs
	}
	const (
		target  = "< 1 s and ≥ 10× the anchor"
		noteUp  = "`docker service create` returned → first 200 through Traefik, polled every 20 ms; includes the web task's start"
		noteLag = "first 200 through Traefik − the engine's timestamp of the task becoming running: the route's own delay"
	)
	notes := map[string]string{
		"route up":                  noteUp,
		"route down":                "`docker service rm` returned → first 404 through Traefik, polled every 20 ms",
		"route seen":                "`docker service create` returned → first answer other than Traefik's 404 (a 502 while the task starts)",
		"route up after task start": noteLag,
	}
	rep := report{Bench: "edge", Machine: machine(), Date: time.Now().UTC().Format(time.RFC3339)}
	// The web task's own start, the same for every provider: the floor of
	// "route up" whatever feeds Traefik.
	task := series(b.providers[0].name, func(s sample) float64 { return s.task })
	driver, err := docker("info", "--format", "{{.Driver}}")
	if err != nil {
		driver = "unknown"
	}
	rep.Rows = append(rep.Rows, row{Name: "web task start (all providers)", Metric: "p50", Unit: "s",
		Value: schema.Round(schema.Pct(task, 50), 3), Samples: task,
		Note: fmt.Sprintf("`docker service create` returned → the engine's timestamp of the task running (one dnsrr task on the VPS, %s storage)", driver)})
	for _, m := range metrics {
		anchorXs := series(anchor, m.pick)
		av := schema.Round(schema.Pct(anchorXs, m.q), 3)
		kind, _, _ := strings.Cut(m.name, " p")
		for _, p := range b.providers {
			xs := series(p.name, m.pick)
			r := row{Name: p.name, Metric: m.name, Unit: "s", Value: schema.Round(schema.Pct(xs, m.q), 3), Samples: xs,
				Note: notes[kind] + "; Traefiks side by side, same services, same run"}
			if p.name != anchor {
				r.Anchor, r.AnchorValue = anchor, av
				if r.Value > 0 {
					r.Ratio = schema.Round(av/r.Value, 1)
				}
			}
			if p == b.providers[0] && strings.HasSuffix(m.name, "p50") && kind != "route seen" {
				met := r.Value < 1 && r.Ratio >= 10
				r.Target, r.Met = target, &met
			}
			rep.Rows = append(rep.Rows, r)
		}
	}
	return rep
}

// machine describes the machine, the VPS's Docker and Traefik, for the
// result's machine field.
func machine() string {
	tv, _ := exec.Command("docker", "-H", "unix://"+filepath.Join(run, "vps", "docker.sock"), "version", "--format", "{{.Server.Version}}").Output()
	return fmt.Sprintf("%s, Docker %s, Traefik v3.0.0, %s", swarmtopo.Host(), strings.TrimSpace(string(tv)), runtime.Version())
}

func printSummary(rep report, out string) {
	fmt.Printf("edge route latency, %s (%s)\n\n", rep.Date, rep.Machine)
	fmt.Printf("%-34s %-30s %8s %10s %7s  %s\n", "", "metric", "value", "anchor", "ratio", "target")
	anchor := ""
	for _, r := range rep.Rows {
		a, ratio, target := "-", "-", r.Target
		if r.Anchor != "" {
			anchor = r.Anchor
			a, ratio = fmt.Sprintf("%.3fs", r.AnchorValue), fmt.Sprintf("%.1fx", r.Ratio)
		}
		if r.Met != nil {
			target += map[bool]string{true: " (met)", false: " (not met)"}[*r.Met]
		}
		if r.Unit == "ms" {
			if r.Anchor != "" {
				a = fmt.Sprintf("%.3fms", r.AnchorValue)
			}
			fmt.Printf("%-34s %-30s %6.3fms %10s %7s  %s\n", r.Name, r.Metric, r.Value, a, ratio, target)
			continue
		}
		if r.Unit != "s" {
			if r.Anchor != "" {
				a, ratio = fmt.Sprintf("%.0f", r.AnchorValue), "-"
			}
			fmt.Printf("%-34s %-30s %8.0f %10s %7s  %s\n", r.Name, r.Metric, r.Value, a, ratio, target)
			continue
		}
		fmt.Printf("%-34s %-30s %7.3fs %10s %7s  %s\n", r.Name, r.Metric, r.Value, a, ratio, target)
	}
	fmt.Printf("\nanchor: %s; ratio = anchor / value (times faster)\nwritten: %s\n", anchor, out)
}

// rollResult is one rolling update's count, per provider.
type rollResult struct {
	kind            string
	failed, answers []int // per provider
}

// rollingUpdates runs rounds of each rolling update: `docker service update
// --force` of a 2-replica service (stop-first), and of a 1-replica service
// with --update-order start-first, under a steady request stream through
// every Traefik, and counts the requests that did not get a 200. The
// services use the settings edge/README.md recommends (a 2 s stop delay
// within a 5 s grace period) and Swarm's default endpoint mode: every
// provider routes to task addresses.
func (b *bench) rollingUpdates(ctx context.Context, rounds int) ([]rollResult, error) {
	var out []rollResult
	kinds := []struct {
		kind     string
		replicas int
		args     []string
	}{
		{"2 replicas, update --force", 2, nil},
		{"1 replica start-first, update --force", 1, []string{"--update-order", "start-first"}},
	}
	for r := 1; r <= rounds; r++ {
		for k, kd := range kinds {
			name := fmt.Sprintf("roll-%d-%d", k, r)
			res, err := b.rollOnce(ctx, name, kd.replicas, kd.args)
			if err != nil {
				return nil, err
			}
			res.kind = kd.kind
			var parts []string
			for i, p := range b.providers {
				parts = append(parts, fmt.Sprintf("%s %d/%d failed", p.service, res.failed[i], res.answers[i]))
			}
			logf("rolling update %d/%d (%s): %s", r, rounds, kd.kind, strings.Join(parts, ", "))
			out = append(out, res)
		}
	}
	return out, nil
}

func (b *bench) rollOnce(ctx context.Context, name string, replicas int, args []string) (rollResult, error) {
	res := rollResult{failed: make([]int, len(b.providers)), answers: make([]int, len(b.providers))}
	host := name + ".bench.test"
	router := strings.ReplaceAll(name, "-", "")
	create := append([]string{"service", "create", "-q", "--detach", "--no-resolve-image", "--name", name,
		"--replicas", fmt.Sprint(replicas), "--network", "web", "--constraint", "node.role==manager",
		"--stop-grace-period", "5s", "--env", "WEB_STOP_DELAY=2",
		"--label", "traefik.http.routers." + router + ".rule=Host(`" + host + "`)",
		"--label", "traefik.http.services." + router + ".loadbalancer.server.port=8080"}, args...)
	if _, err := docker(append(create, "homeswarm/web")...); err != nil {
		return res, err
	}
	defer docker("service", "rm", name)
	// Every Traefik serves every replica before the update.
	err := b.each(ctx, func(i int, p *provider) error {
		seen := map[string]bool{}
		_, err := b.until(ctx, p, host, func(code int, body string) bool {
			if code == 200 {
				seen[body] = true
			}
			return len(seen) == replicas
		})
		return err
	})
	if err != nil {
		return res, err
	}
	sctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var mu sync.Mutex
	for i, p := range b.providers {
		for c := 0; c < 2; c++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for sctx.Err() == nil {
					code, _, err := p.get(sctx, host)
					if sctx.Err() != nil {
						return
					}
					mu.Lock()
					res.answers[i]++
					if err != nil || code != 200 {
						res.failed[i]++
					}
					mu.Unlock()
					time.Sleep(20 * time.Millisecond)
				}
			}()
		}
	}
	swarmtopo.Sleep(ctx, time.Second)
	_, err = docker("service", "update", "-q", "--force", "--detach=false", name)
	// Long enough for a 15 s poll to notice the new tasks.
	swarmtopo.Sleep(ctx, 20*time.Second)
	stop()
	wg.Wait()
	return res, err
}

// rollRows turns the rolling updates into rows: failed requests per
// provider, summed over the rounds, samples per round.
func (b *bench) rollRows(rolls []rollResult) []row {
	var rows []row
	anchor := b.providers[1].name
	kinds := []string{}
	for _, r := range rolls {
		if !slices.Contains(kinds, r.kind) {
			kinds = append(kinds, r.kind)
		}
	}
	for _, kind := range kinds {
		sums, totals := make([]int, len(b.providers)), make([]int, len(b.providers))
		samples := make([][]float64, len(b.providers))
		for _, r := range rolls {
			if r.kind != kind {
				continue
			}
			for i := range b.providers {
				sums[i] += r.failed[i]
				totals[i] += r.answers[i]
				samples[i] = append(samples[i], float64(r.failed[i]))
			}
		}
		for i, p := range b.providers {
			rw := row{Name: p.name, Metric: "failed requests, " + kind, Unit: "requests", Value: float64(sums[i]), Samples: samples[i],
				Note: fmt.Sprintf("%d of %d requests (2 clients, every 20 ms, from 1 s before the update to 20 s after it) not a 200; services with a 2 s stop delay, --stop-grace-period 5s; Traefiks side by side, same services, same run", sums[i], totals[i])}
			if p.name != anchor {
				rw.Anchor, rw.AnchorValue = anchor, float64(sums[1])
			}
			if i == 0 {
				met := sums[i] == 0
				rw.Target, rw.Met = "0", &met
			}
			rows = append(rows, rw)
		}
	}
	return rows
}
