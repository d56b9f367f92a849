// Command netdrv measures container-to-container TCP throughput and
// round-trip time across the home NAT through a meshnet network, side by
// side in one run with Docker's own overlay network running over the
// mesh interface (the topology's Swarm data path is the mesh), and with
// overlay's --opt encrypted (IPsec) where the kernel allows it.
//
// For each network a server container runs on the VPS and a client
// container on home1 (behind the NAT); iperf3 and ping (Debian's) run
// inside the containers' network namespaces (nsenter), so the traffic is
// the containers' own. Rounds are interleaved between networks. It writes
// bench/results/netdrv.json (bench/schema) and prints a table. Run it with
// bench/netdrv.sh, which brings the topology up.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/homeswarm/homeswarm/bench/schema"
	"github.com/homeswarm/homeswarm/bench/swarmtopo"
)

type netCase struct {
	key, name, driver string
	opts              []string
	note              string
	// filled in
	server, client string // container IDs
	serverIP       string
	clientPid      string
	serverPid      string
	err            error
	gbits, rtt     []float64
}

// logf writes the bench's log lines on stderr.
var logf = swarmtopo.Log("netdrv").Printf

func main() {
	rounds := flag.Int("rounds", 3, "interleaved rounds per network")
	secs := flag.Int("seconds", 6, "iperf3 seconds per round (after 1 s left out)")
	out := flag.String("out", "bench/results/netdrv.json", "result file")
	flag.Parse()
	if err := run(*rounds, *secs, *out); err != nil {
		fmt.Fprintln(os.Stderr, "netdrv:", err)
		os.Exit(1)
	}
}

func run(rounds, secs int, out string) error {
	ctx := context.Background()
	t := swarmtopo.FromEnv("hn")
	for _, n := range []string{"vps", "home1"} {
		if !t.Up(ctx, n) {
			return fmt.Errorf("engine %s of topology %s does not answer: run bench/netdrv.sh, which brings it up", n, t.Prefix)
		}
	}
	start := time.Now()
	machine := swarmtopo.Machine() + ", load " + swarmtopo.LoadAvg()
	// The overlay's VXLAN (50 bytes) must fit the mesh MTU (1392).
	cases := []*netCase{
		{key: "host", name: "host mesh path"}, // no network: the nodes' own mesh interface
		{key: "meshnet", name: "bn-meshnet", driver: "meshnet:latest"},
		{key: "overlay", name: "bn-overlay", driver: "overlay", opts: []string{"-o", "com.docker.network.driver.mtu=1342"}},
		{key: "overlay-encrypted", name: "bn-overlay-enc", driver: "overlay",
			opts: []string{"-o", "com.docker.network.driver.mtu=1342", "--opt", "encrypted"}},
	}
	defer func() {
		for _, c := range cases {
			if c.driver == "" {
				continue
			}
			for _, id := range []struct{ node, id string }{{"vps", c.server}, {"home1", c.client}} {
				if id.id != "" {
					t.Docker(ctx, id.node, "rm", "-f", id.id)
				}
			}
			t.Docker(ctx, "vps", "network", "rm", c.name)
		}
	}()
	for _, c := range cases {
		c.err = setup(ctx, t, c)
		if c.err != nil {
			logf("%s: %v", c.key, c.err)
		}
	}
	for r := range rounds {
		for _, c := range cases {
			if c.err != nil {
				continue
			}
			g, err := iperf(ctx, c, secs)
			if err != nil {
				logf("%s round %d: %v", c.key, r+1, err)
				c.err = err
				continue
			}
			rtt, err := ping(ctx, c)
			if err != nil {
				logf("%s round %d ping: %v", c.key, r+1, err)
			}
			c.gbits = append(c.gbits, g)
			if rtt > 0 {
				c.rtt = append(c.rtt, rtt)
			}
			logf("%s round %d: %.3f Gbit/s, rtt %.3f ms", c.key, r+1, g, rtt)
		}
	}
	res := schema.Result{Bench: "netdrv", Machine: machine, Date: start.Format(time.RFC3339), Rows: rows(cases, secs)}
	if err := schema.Write(out, res); err != nil {
		return err
	}
	for _, r := range res.Rows {
		fmt.Printf("%-55s %8.3f %-8s anchor %-40s %8.3f ratio %.2f\n", r.Name, r.Value, r.Unit, r.Anchor, r.AnchorValue, r.Ratio)
	}
	return nil
}

// setup creates the network and the two containers and finds their
// namespaces.
func setup(ctx context.Context, t swarmtopo.Topo, c *netCase) error {
	if c.driver == "" {
		return setupHost(ctx, t, c)
	}
	t.Docker(ctx, "vps", "network", "rm", c.name)
	args := append([]string{"network", "create", "-d", c.driver, "--attachable"}, c.opts...)
	if _, err := t.Docker(ctx, "vps", append(args, c.name)...); err != nil {
		return err
	}
	sleep := []string{"busybox", "sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1; done"}
	var err error
	if c.server, err = t.Docker(ctx, "vps", append([]string{"run", "-d", "--network", c.name}, sleep...)...); err != nil {
		return err
	}
	if c.client, err = t.Docker(ctx, "home1", append([]string{"run", "-d", "--network", c.name}, sleep...)...); err != nil {
		return err
	}
	if c.serverIP, err = t.Docker(ctx, "vps", "inspect", c.server, "--format", `{{(index .NetworkSettings.Networks "`+c.name+`").IPAddress}}`); err != nil {
		return err
	}
	if c.serverPid, err = t.Docker(ctx, "vps", "inspect", c.server, "--format", "{{.State.Pid}}"); err != nil {
		return err
	}
	if c.clientPid, err = t.Docker(ctx, "home1", "inspect", c.client, "--format", "{{.State.Pid}}"); err != nil {
		return err
	}
	// reachable at all?
	return swarmtopo.Poll(ctx, 20*time.Second, 300*time.Millisecond, func() error {
		_, err := nsexec(ctx, c.clientPid, "busybox", "ping", "-c1", "-W1", c.serverIP)
		return err
	})
}

// setupHost measures the host mesh path, the anchor of the container
// path: iperf3 between the node namespaces of home1 and the VPS, to the
// VPS's address on meshnet's own interface (the path the Swarm and syncvol
// use), with no container or network in between.
func setupHost(ctx context.Context, t swarmtopo.Topo, c *netCase) error {
	c.clientPid = "/run/netns/" + t.Namespace("home1")
	c.serverPid = "/run/netns/" + t.Namespace("vps")
	meshNet := "10.254.0." // scripts/topo.sh's MESH_NET
	if v := os.Getenv("MESH_NET"); v != "" {
		meshNet = v + "."
	}
	out, err := exec.CommandContext(ctx, "ip", "-n", t.Namespace("vps"), "-4", "-o", "addr", "show").Output()
	if err != nil {
		return fmt.Errorf("vps addresses: %w", err)
	}
	for _, f := range strings.Fields(string(out)) {
		if a, _, ok := strings.Cut(f, "/"); ok && strings.HasPrefix(a, meshNet) {
			c.serverIP = a
		}
	}
	if c.serverIP == "" {
		return fmt.Errorf("vps has no address in %s0/24: %s", meshNet, out)
	}
	return swarmtopo.Poll(ctx, 20*time.Second, 300*time.Millisecond, func() error {
		_, err := nsexec(ctx, c.clientPid, "busybox", "ping", "-c1", "-W1", c.serverIP)
		return err
	})
}

// nsCmd runs args in the network namespace of process pid, or of the
// namespace file pid names when it is a path.
func nsCmd(ctx context.Context, pid string, args ...string) *exec.Cmd {
	target := []string{"-t", pid, "-n"}
	if strings.HasPrefix(pid, "/") {
		target = []string{"--net=" + pid}
	}
	return exec.CommandContext(ctx, "nsenter", append(target, args...)...)
}

func nsexec(ctx context.Context, pid string, args ...string) (string, error) {
	cmd := nsCmd(ctx, pid, args...)
	b, err := cmd.CombinedOutput()
	if err != nil {
		return string(b), fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(b)))
	}
	return string(b), nil
}

// iperf runs one iperf3 TCP test client (home1) → server (vps) and
// returns the received rate in Gbit/s.
func iperf(ctx context.Context, c *netCase, secs int) (float64, error) {
	srv := nsCmd(ctx, c.serverPid, "iperf3", "-s", "-1", "-p", "5201")
	if err := srv.Start(); err != nil {
		return 0, err
	}
	defer func() { srv.Process.Kill(); srv.Wait() }()
	var outb string
	err := swarmtopo.Poll(ctx, 10*time.Second, 200*time.Millisecond, func() error {
		var err error
		outb, err = nsexec(ctx, c.clientPid, "iperf3", "-c", c.serverIP, "-p", "5201", "-t", strconv.Itoa(secs+1), "-O", "1", "-J")
		if strings.Contains(outb, "unable to connect") || (err != nil && strings.Contains(err.Error(), "Connection refused")) {
			return fmt.Errorf("server not listening yet: %v", err)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	var r struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
		Error string `json:"error"`
	}
	if err := json.Unmarshal([]byte(outb), &r); err != nil {
		return 0, fmt.Errorf("iperf3 output: %v: %.200s", err, outb)
	}
	if r.Error != "" || r.End.SumReceived.BitsPerSecond == 0 {
		return 0, fmt.Errorf("iperf3: %s", r.Error)
	}
	return r.End.SumReceived.BitsPerSecond / 1e9, nil
}

// ping returns the average round-trip time in ms of 20 pings.
func ping(ctx context.Context, c *netCase) (float64, error) {
	out, err := nsexec(ctx, c.clientPid, "busybox", "ping", "-c", "20", "-i", "0.05", "-q", c.serverIP)
	if err != nil {
		return 0, err
	}
	// rtt min/avg/max/mdev = 0.321/0.456/0.789/0.050 ms
	for _, l := range strings.Split(out, "\n") {
		if _, v, ok := strings.Cut(l, " = "); ok && strings.Contains(l, "min/avg") {
			f := strings.Split(v, "/")
			if len(f) >= 2 {
				return strconv.ParseFloat(f[1], 64)
			}
		}
	}
	return 0, fmt.Errorf("ping output: %q", out)
}

func rows(cases []*netCase, secs int) []schema.Row {
	by := map[string]*netCase{}
	for _, c := range cases {
		by[c.key] = c
	}
	h, m, o, e := by["host"], by["meshnet"], by["overlay"], by["overlay-encrypted"]
	note := fmt.Sprintf("iperf3 TCP container on home1 → container on the VPS through the NAT, median of %d interleaved rounds of %d s; overlay MTU 1342 (VXLAN inside the mesh MTU 1392), meshnet MTU 1392", len(m.gbits), secs)
	var out []schema.Row
	add := func(name, metric, unit string, v float64, anchor string, av float64, higherBetter bool, target, note string, samples []float64) {
		r := schema.Row{Name: name, Metric: metric, Unit: unit, Value: schema.Round(v, 3), Anchor: anchor, AnchorValue: schema.Round(av, 3), Target: target, Note: note, Samples: samples}
		if v > 0 && av > 0 {
			if higherBetter {
				r.Ratio = schema.Round(v/av, 3)
			} else {
				r.Ratio = schema.Round(av/v, 3)
			}
		}
		out = append(out, r)
	}
	if m.err != nil && len(m.gbits) == 0 {
		return []schema.Row{{Name: "meshnet network TCP throughput", Metric: "throughput", Unit: "Gbit/s", Note: "failed: " + m.err.Error()}}
	}
	ov, onote := schema.Median(o.gbits), ""
	if len(o.gbits) == 0 {
		onote = "; overlay failed: " + fmt.Sprint(o.err)
	}
	add("meshnet network TCP throughput (container → container)", "throughput", "Gbit/s", schema.Median(m.gbits),
		"Docker overlay over the mesh", ov, true, "", note+onote, m.gbits)
	if len(h.gbits) > 0 {
		add("meshnet network TCP throughput vs the host mesh path", "throughput", "Gbit/s", schema.Median(m.gbits),
			"host mesh path (home1 → VPS on meshnet's own interface)", schema.Median(h.gbits), true, "≥ 0.8× the host mesh path",
			"the same run, rounds interleaved: the cost of the container path (veth, packet socket, switch) over the mesh itself", h.gbits)
	} else {
		out[0].Note += fmt.Sprintf("; host mesh path not measured: %v", h.err)
	}
	add("meshnet network round-trip time", "latency", "ms", schema.Median(m.rtt),
		"Docker overlay over the mesh", schema.Median(o.rtt), false, "", "ping, 20 × 50 ms, median of the rounds' averages", m.rtt)
	if len(e.gbits) > 0 {
		add("meshnet network TCP throughput vs encrypted overlay", "throughput", "Gbit/s", schema.Median(m.gbits),
			"Docker overlay --opt encrypted (IPsec) over the mesh", schema.Median(e.gbits), true, "", "overlay's own encryption on top of the mesh's", e.gbits)
	} else {
		out[0].Note += fmt.Sprintf("; overlay --opt encrypted not measured: its containers could not reach each other here (%v)", e.err)
	}
	return out
}
