//go:build linux

package main

import (
	"bufio"
	"context"
	"fmt"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/homeswarm/homeswarm/bench/schema"
	"github.com/homeswarm/homeswarm/bench/swarmtopo"
	"github.com/homeswarm/homeswarm/internal/netns"
)

// TCP and UDP routes (-l4): every Traefik declares the entry points
// tcp-<l4Port> and udp-<l4Port>, published on the VPS at l4Port plus the
// provider's index, and edge fills them (EDGE_TCP_PORTS/EDGE_UDP_PORTS).
// The services are l4echo (scripts/l4echo: a TCP banner/echo and a UDP echo
// on one port) with Traefik v3's traefik.tcp.* / traefik.udp.* labels,
// which edge and the swarm provider both read.
const l4Port = 7000

// l4Published is the VPS port of provider i's TCP and UDP entry points.
func l4Published(i int) int { return l4Port + i }

// l4Args are the Traefik flags and publishes of provider i's TCP/UDP entry points.
func l4Args(i int) (publish, flags []string) {
	for _, proto := range []string{"tcp", "udp"} {
		publish = append(publish, "--publish", fmt.Sprintf("mode=host,published=%d,target=%d,protocol=%s", l4Published(i), l4Port, proto))
		flags = append(flags, fmt.Sprintf("--entryPoints.%s-%d.address=:%d/%s", proto, l4Port, l4Port, proto))
	}
	return publish, flags
}

// l4Sample is one repetition's figures for one provider, in seconds: the
// task running → first banner through Traefik (TCP) and first echoed
// datagram (UDP). (A removed service's port stops answering when its task
// dies, whichever Traefik still routes it: no "route down" figure.)
type l4Sample struct{ tcp, udp float64 }

// banner connects to addr through d, reads the banner line, sends a line
// and reads its echo: one whole connection's exchange, as a client of a
// server-first protocol (SMTP) has.
func banner(ctx context.Context, d *netns.Dialer, addr string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	r := bufio.NewReader(c)
	l, err := r.ReadString('\n')
	if err != nil || !strings.HasPrefix(l, "l4echo ") {
		return fmt.Errorf("banner %q: %v", l, err)
	}
	if _, err := c.Write([]byte("ping\n")); err != nil {
		return err
	}
	if l, err = r.ReadString('\n'); err != nil || !strings.HasSuffix(l, " ping\n") {
		return fmt.Errorf("echo %q: %v", l, err)
	}
	return nil
}

// datagram sends one datagram to addr from a new socket (a new Traefik UDP
// session) and waits 200 ms for its echo.
func datagram(ctx context.Context, d *netns.Dialer, addr string) error {
	c, err := d.DialContext(ctx, "udp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(200 * time.Millisecond))
	if _, err := c.Write([]byte("ping")); err != nil {
		return err
	}
	buf := make([]byte, 1500)
	n, err := c.Read(buf)
	if err == nil && !strings.HasSuffix(string(buf[:n]), " ping") {
		err = fmt.Errorf("answer %q", buf[:n])
	}
	return err
}

// pollUntil starts f every 20 ms, without waiting for the attempts still
// running (a connection Traefik forwards to a task that is not reachable
// yet can wait for a SYN retransmission), until one returns an error ok
// accepts; it returns when that attempt ended.
func (b *bench) pollUntil(ctx context.Context, what string, f func() error, ok func(error) bool) (time.Time, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		at  time.Time
		err error
	}
	results := make(chan result, 1)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(b.timeout)
	var last error
	for {
		go func() {
			err := f()
			if ok(err) {
				select {
				case results <- result{time.Now(), nil}:
				case <-ctx.Done():
				}
				return
			}
			select {
			case results <- result{err: err}:
			default:
			}
		}()
		for waiting := true; waiting; {
			select {
			case r := <-results:
				if r.err == nil {
					return r.at, nil
				}
				last = r.err
			case <-tick.C:
				waiting = false
			case <-deadline:
				return time.Time{}, fmt.Errorf("%s: not within %s (last: %v)", what, b.timeout, last)
			case <-ctx.Done():
				return time.Time{}, ctx.Err()
			}
		}
	}
}

func (b *bench) vpsDialer() *netns.Dialer {
	d := &netns.Dialer{Path: netns.Path(prefix + "-vps")}
	d.Timeout = time.Second
	return d
}

// l4Labels route service name's port l4Port by TCP and UDP, in Traefik
// v3's labels.
func l4Labels(name string) []string {
	r := strings.ReplaceAll(name, "-", "")
	var out []string
	for _, l := range []string{
		"traefik.tcp.routers." + r + ".rule=HostSNI(`*`)",
		fmt.Sprintf("traefik.tcp.routers.%s.entrypoints=tcp-%d", r, l4Port),
		"traefik.tcp.routers." + r + ".service=" + r,
		fmt.Sprintf("traefik.tcp.services.%s.loadbalancer.server.port=%d", r, l4Port),
		fmt.Sprintf("traefik.udp.routers.%s.entrypoints=udp-%d", r, l4Port),
		"traefik.udp.routers." + r + ".service=" + r + "u",
		fmt.Sprintf("traefik.udp.services.%su.loadbalancer.server.port=%d", r, l4Port),
	} {
		out = append(out, "--label", l)
	}
	return out
}

func (b *bench) createL4(name string) error {
	args := append([]string{"service", "create", "-q", "--detach", "--no-resolve-image", "--name", name,
		"--network", "web", "--constraint", b.l4Constraint, "--stop-grace-period", "2s"}, l4Labels(name)...)
	_, err := docker(append(args, "homeswarm/l4echo", "tcp", "-udp", "-port", fmt.Sprint(l4Port))...)
	return err
}

// measureL4 runs n repetitions: create an l4echo service, time its TCP and
// UDP routes on every Traefik from the task running, remove it and wait
// until no Traefik routes it (the next repetition reuses the port: a stale
// router beside the new one would slow the swarm provider down).
func (b *bench) measureL4(ctx context.Context, n int) (map[string][]l4Sample, error) {
	res := map[string][]l4Sample{}
	d := b.vpsDialer()
	for i := 1; i <= n; i++ {
		name := fmt.Sprintf("bench-l4-%d", i)
		if err := pause(ctx); err != nil {
			return nil, err
		}
		if err := b.createL4(name); err != nil {
			return nil, err
		}
		created := time.Now()
		s := make([]l4Sample, len(b.providers))
		tcpAt, udpAt := make([]time.Time, len(b.providers)), make([]time.Time, len(b.providers))
		err := b.each(ctx, func(j int, p *provider) error {
			addr := fmt.Sprintf("%s:%d", vpsAddr, l4Published(j))
			up := func(err error) bool { return err == nil }
			udpErr := make(chan error, 1)
			go func() { // both at once
				var err error
				udpAt[j], err = b.pollUntil(ctx, p.service+" UDP "+name, func() error { return datagram(ctx, d, addr) }, up)
				udpErr <- err
			}()
			var err error
			tcpAt[j], err = b.pollUntil(ctx, p.service+" TCP "+name, func() error { return banner(ctx, d, addr) }, up)
			if uerr := <-udpErr; err == nil {
				err = uerr
			}
			return err
		})
		var running time.Time
		if err == nil {
			running, err = taskRunning(name)
		}
		if err != nil {
			docker("service", "rm", name)
			return nil, err
		}
		if err := pause(ctx); err != nil {
			docker("service", "rm", name)
			return nil, err
		}
		if _, err := docker("service", "rm", name); err != nil {
			return nil, err
		}
		err = b.each(ctx, func(j int, p *provider) error {
			addr := fmt.Sprintf("%s:%d", vpsAddr, l4Published(j))
			down := func(err error) bool { return err != nil }
			if _, err := b.pollUntil(ctx, p.service+" TCP "+name+" removed", func() error { return banner(ctx, d, addr) }, down); err != nil {
				return err
			}
			_, err := b.pollUntil(ctx, p.service+" UDP "+name+" removed", func() error { return datagram(ctx, d, addr) }, down)
			return err
		})
		if err == nil { // one whole poll of the 15 s provider: its router is gone too
			err = swarmtopo.Sleep(ctx, 16*time.Second)
		}
		if err != nil {
			return nil, err
		}
		var parts []string
		for j, p := range b.providers {
			s[j].tcp = math.Max(0, tcpAt[j].Sub(running).Seconds())
			s[j].udp = math.Max(0, udpAt[j].Sub(running).Seconds())
			res[p.name] = append(res[p.name], s[j])
			parts = append(parts, fmt.Sprintf("%s TCP %.2fs UDP %.2fs", p.service, s[j].tcp, s[j].udp))
		}
		logf("l4 %d/%d (task running %.2fs after create): %s", i, n, running.Sub(created).Seconds(), strings.Join(parts, ", "))
	}
	return res, nil
}

// measureL4Latency times conns whole exchanges (connect, banner, one echo)
// to one l4echo task, alternating: through edge's Traefik on the VPS's
// public address, and directly to the task's address from Traefik's own
// network namespace (the same network path Traefik takes to the task:
// through the mesh when the task runs at home). It returns both series in
// seconds.
func (b *bench) measureL4Latency(ctx context.Context, conns int) (route, direct []float64, err error) {
	const name = "bench-l4-latency"
	if err := b.createL4(name); err != nil {
		return nil, nil, err
	}
	defer docker("service", "rm", name)
	d := b.vpsDialer()
	routeAddr := fmt.Sprintf("%s:%d", vpsAddr, l4Published(0))
	if _, err := b.pollUntil(ctx, "latency service routed", func() error { return banner(ctx, d, routeAddr) },
		func(err error) bool { return err == nil }); err != nil {
		return nil, nil, err
	}
	taskIP, err := b.taskAddr(name)
	if err != nil {
		return nil, nil, err
	}
	ctr, err := docker("ps", "-q", "--filter", "label=com.docker.swarm.service.name="+b.providers[0].service)
	if err != nil || ctr == "" {
		return nil, nil, fmt.Errorf("%s's container: %v", b.providers[0].service, err)
	}
	pid, err := docker("inspect", "--format", "{{.State.Pid}}", strings.Fields(ctr)[0])
	if err != nil {
		return nil, nil, err
	}
	inTraefik := &netns.Dialer{Path: filepath.Join("/proc", pid, "ns", "net")}
	inTraefik.Timeout = time.Second
	directAddr := net.JoinHostPort(taskIP, fmt.Sprint(l4Port))
	logf("latency: %d connections each, through Traefik (%s) and direct from Traefik's namespace (%s)", conns, routeAddr, directAddr)
	timed := func(d *netns.Dialer, addr string) (float64, error) {
		start := time.Now()
		err := banner(ctx, d, addr)
		return time.Since(start).Seconds(), err
	}
	for i := 0; i < conns; i++ {
		r, err := timed(d, routeAddr)
		if err != nil {
			return nil, nil, fmt.Errorf("through Traefik: %w", err)
		}
		x, err := timed(inTraefik, directAddr)
		if err != nil {
			return nil, nil, fmt.Errorf("direct: %w", err)
		}
		route, direct = append(route, schema.Round(r*1000, 3)), append(direct, schema.Round(x*1000, 3))
		time.Sleep(10 * time.Millisecond)
	}
	return route, direct, nil
}

// taskAddr is the address of service's one running task on network web.
func (b *bench) taskAddr(service string) (string, error) {
	ids, err := docker("service", "ps", "-q", "--filter", "desired-state=running", service)
	if err != nil {
		return "", err
	}
	for _, id := range strings.Fields(ids) {
		out, err := docker("inspect", "--format", `{{range .NetworksAttachments}}{{.Network.Spec.Name}} {{index .Addresses 0}}{{"\n"}}{{end}}`, id)
		if err != nil {
			return "", err
		}
		for _, l := range strings.Split(out, "\n") {
			if f := strings.Fields(l); len(f) == 2 && f[0] == "web" {
				ip, _, _ := strings.Cut(f[1], "/")
				return ip, nil
			}
		}
	}
	return "", fmt.Errorf("service %s has no running task on web", service)
}

// l4Rows turns the TCP/UDP figures into rows: route up after the task runs
// and route down per provider against the swarm provider's 15 s poll, and
// the per-connection latency through Traefik against the direct one.
func (b *bench) l4Rows(samples map[string][]l4Sample, route, direct []float64) []row {
	var rows []row
	anchor := b.providers[1].name
	where := "one l4echo task (" + b.l4Constraint + "), network web"
	metrics := []struct {
		name, note string
		pick       func(l4Sample) float64
	}{
		{"TCP route up after task start p50", "the engine's timestamp of the task running → first banner and echo through Traefik on the VPS's public address (a new connection every 20 ms, each given 1 s)", func(s l4Sample) float64 { return s.tcp }},
		{"UDP route up after task start p50", "the engine's timestamp of the task running → first echoed datagram through Traefik (a new socket every 20 ms, each waiting 200 ms for the echo)", func(s l4Sample) float64 { return s.udp }},
	}
	series := func(p string, pick func(l4Sample) float64) []float64 {
		var xs []float64
		for _, s := range samples[p] {
			xs = append(xs, schema.Round(pick(s), 3))
		}
		return xs
	}
	for _, m := range metrics {
		av := schema.Round(schema.Pct(series(anchor, m.pick), 50), 3)
		for i, p := range b.providers {
			xs := series(p.name, m.pick)
			r := row{Name: p.name, Metric: m.name, Unit: "s", Value: schema.Round(schema.Pct(xs, 50), 3), Samples: xs,
				Note: m.note + "; " + where + "; Traefiks side by side, same services, same run"}
			if p.name != anchor {
				r.Anchor, r.AnchorValue = anchor, av
				if r.Value > 0 {
					r.Ratio = schema.Round(av/r.Value, 1)
				}
			}
			if i == 0 {
				met := r.Value < 1
				r.Target, r.Met = "p50 < 1 s", &met
			}
			rows = append(rows, r)
		}
	}
	if len(route) > 0 {
		rp, dp := schema.Round(schema.Pct(route, 50), 3), schema.Round(schema.Pct(direct, 50), 3)
		note := fmt.Sprintf("%d connections each, alternating: connect, read the banner, one line echoed, close; through edge's Traefik from the VPS's namespace to its public address, vs direct to the task's address from Traefik's own network namespace (the path Traefik takes); %s", len(route), where)
		rows = append(rows,
			row{Name: "TCP route through Traefik (edge)", Metric: "connection p50", Unit: "ms", Value: rp, Samples: route,
				Anchor: "direct to the task", AnchorValue: dp, Ratio: schema.Round(dp/rp, 2), Note: note},
			row{Name: "direct to the task", Metric: "connection p50", Unit: "ms", Value: dp, Samples: direct, Note: note},
			row{Name: "TCP route through Traefik (edge)", Metric: "added per connection p50", Unit: "ms", Value: schema.Round(rp-dp, 3),
				Note: "route p50 − direct p50 of the rows above; " + note})
	}
	return rows
}

// l4Images loads l4echo where the services may run.
func (b *bench) l4Images(ctx context.Context, repo string) error {
	nodes := []string{"vps"}
	if !strings.Contains(b.l4Constraint, "manager") {
		nodes = append(nodes, "home1", "home2", "home3")
	}
	cmd := exec.CommandContext(ctx, filepath.Join(repo, "scripts/images.sh"), nodes...)
	cmd.Env = append(os.Environ(), "IMAGES=l4echo")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("scripts/images.sh l4echo: %v: %s", err, out)
	}
	return nil
}
