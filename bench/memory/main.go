//go:build linux

// Command memory measures the idle memory (VmRSS) of each of homeswarm's
// processes on the seed topology (scripts/topo.sh), side by side with what
// a person would otherwise run, in one run:
//
//   - syncvol (the plugin process, /syncvol, on every engine node) holding
//     -volumes volumes, against Debian's plain `syncthing`: one process per
//     node count (4), each sharing the same number of folders with the 3
//     others over loopback (no GUI, discovery, relays or NAT traversal);
//   - meshnet (/meshnet on every node, its mesh up with all peers) against
//     wireguard-go: one process per node count, each with the 3 others as
//     peers and a 25 s keepalive, handshaken over loopback;
//   - edge (/edge on the VPS, watching the Swarm), for which no process does
//     the same job alone (Traefik's swarm provider lives inside Traefik): no
//     anchor.
//
// Plugins are found by their entrypoint (argv[0] "/syncvol", "/meshnet")
// among the processes of each node's network namespace (plugins and edge
// use the host network). Everything is left to settle (-settle), then
// sampled -samples times a second apart; a process's figure is the median
// of its samples, a row's value the largest over the nodes (the target,
// < 60 MiB, is per process). The anchors run in a network namespace of
// their own, <prefix>-memanchor, during the same settling time.
//
// Run it with bench/memory.sh, which brings up a topology instance of its
// own (or reuses one, BENCH_REUSE=1). Results go to a JSON file in the
// shared bench schema (bench/schema) and a table on stdout.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/homeswarm/homeswarm/bench/schema"
	"github.com/homeswarm/homeswarm/bench/swarmtopo"
	"github.com/homeswarm/homeswarm/bench/syncthing"
)

var nodes = []string{"vps", "home1", "home2", "home3"}

type config struct {
	volumes     int
	settle      time.Duration
	samples     int
	out         string
	wireguardGo string
	edge        bool
}

// logf and fail write the bench's log lines and its fatal error on stderr.
var logf, fail = swarmtopo.Log("bench/memory").Printf, swarmtopo.Log("bench/memory").Fatalf

func main() {
	var c config
	flag.IntVar(&c.volumes, "volumes", 3, "syncvol volumes (and plain Syncthing folders)")
	flag.DurationVar(&c.settle, "settle", 45*time.Second, "idle time before sampling")
	flag.IntVar(&c.samples, "samples", 5, "RSS samples per process, a second apart")
	flag.StringVar(&c.out, "out", "bench/results/memory.json", "JSON results file")
	flag.StringVar(&c.wireguardGo, "wireguard-go", "/var/cache/homeswarm/wireguard", "wireguard-go binary")
	flag.BoolVar(&c.edge, "edge", true, "also run edge on the VPS and measure it")
	flag.Parse()
	b := &bench{t: swarmtopo.FromEnv("hf"), c: c}
	res := swarmtopo.Log("bench/memory").Main(c.out, b.measure, b.cleanup)
	printSummary(res, c.out)
}

type bench struct {
	t        swarmtopo.Topo
	c        config
	anchorNS string
	procs    []anchorProc
	dir      string // anchors' state
	volumes  []string
	edge     bool // edge service created
	network  string
}

const mib = 1 << 20

func (b *bench) measure(ctx context.Context) (schema.Result, error) {
	start := time.Now().UTC()
	load0 := swarmtopo.LoadAvg()
	for _, n := range nodes {
		if !b.t.Up(ctx, n) {
			return schema.Result{}, fmt.Errorf("engine %s of topology %s does not answer: run bench/memory.sh, which brings it up", n, b.t.Prefix)
		}
	}
	if err := b.volumesUp(ctx); err != nil {
		return schema.Result{}, err
	}
	if b.c.edge {
		if err := b.edgeUp(ctx); err != nil {
			return schema.Result{}, err
		}
	}
	stVersion, err := b.syncthingUp(ctx)
	if err != nil {
		return schema.Result{}, err
	}
	wgVersion, err := b.wireguardUp(ctx)
	if err != nil {
		return schema.Result{}, err
	}
	logf("settling %s", b.c.settle)
	if err := swarmtopo.Sleep(ctx, b.c.settle); err != nil {
		return schema.Result{}, err
	}

	// The anchors must be doing their job: connected, handshaken.
	if err := b.anchorsConnected(ctx); err != nil {
		return schema.Result{}, err
	}

	// Every process to sample, by row.
	targets := map[string][]target{}
	for _, n := range nodes {
		for _, exe := range []string{"/syncvol", "/meshnet"} {
			pid, err := b.t.FindProc(ctx, n, exe)
			if err != nil {
				return schema.Result{}, err
			}
			targets[exe[1:]] = append(targets[exe[1:]], target{name: n, pid: pid})
		}
	}
	if b.c.edge {
		pid, err := b.t.FindProc(ctx, "vps", "/edge")
		if err != nil {
			return schema.Result{}, err
		}
		targets["edge"] = []target{{name: "vps", pid: pid}}
	}
	for _, p := range b.procs {
		// ip netns exec execs the program: the PID is the program's.
		targets[p.kind] = append(targets[p.kind], target{name: fmt.Sprintf("%s %d", p.kind, len(targets[p.kind])+1), pid: p.cmd.Process.Pid})
	}
	for i := range b.c.samples {
		for _, ts := range targets {
			for j := range ts {
				rss, err := swarmtopo.RSS(ts[j].pid)
				if err != nil {
					return schema.Result{}, fmt.Errorf("%s: %w", ts[j].name, err)
				}
				ts[j].rss = append(ts[j].rss, float64(rss)/mib)
			}
		}
		if i+1 < b.c.samples {
			if err := swarmtopo.Sleep(ctx, time.Second); err != nil {
				return schema.Result{}, err
			}
		}
	}
	for k, ts := range targets {
		for _, t := range ts {
			logf("%-12s %-14s pid %-7d RSS %.1f MiB", k, t.name, t.pid, schema.Median(t.rss))
		}
	}
	machine := fmt.Sprintf("%s; topology %s (scripts/topo.sh, Swarm over meshnet); load average %s at start, %s at end",
		swarmtopo.Machine(), b.t.Prefix, load0, swarmtopo.LoadAvg())
	return schema.Result{Bench: "memory", Rows: b.rows(targets, stVersion, wgVersion), Machine: machine,
		Date: start.Format(time.RFC3339)}, nil
}

// anchorProc is an anchor process and its row ("syncthing", "wireguard-go").
type anchorProc struct {
	cmd  *exec.Cmd
	kind string
}

type target struct {
	name string
	pid  int
	rss  []float64 // MiB
}

// volumesUp creates the volumes on home1 and waits until every node holds
// a replica of each.
func (b *bench) volumesUp(ctx context.Context) error {
	// Fresh names each run: a name removed earlier stays known to the
	// cluster; remove=everywhere so that cleanup takes them off every node.
	run := strconv.FormatInt(time.Now().Unix()%100000, 36)
	for i := range b.c.volumes {
		v := fmt.Sprintf("bench-mem-%s-%d", run, i+1)
		if _, err := b.t.Docker(ctx, "home1", "volume", "create", "-d", "syncvol", "-o", "remove=everywhere", v); err != nil {
			return err
		}
		b.volumes = append(b.volumes, v)
	}
	logf("%d syncvol volumes created on home1; waiting for every node's replica", b.c.volumes)
	return swarmtopo.Poll(ctx, 90*time.Second, 500*time.Millisecond, func() error {
		for _, n := range nodes {
			for _, v := range b.volumes {
				if _, err := os.Stat(filepath.Join(b.t.Root, n, "syncvol", "volumes", v, "replica")); err != nil {
					return fmt.Errorf("%s has no replica of %s", n, v)
				}
			}
		}
		return nil
	})
}

// edgeUp runs edge as the product runs it: a Swarm service on the manager
// with docker.sock, writing Traefik's file provider directory.
func (b *bench) edgeUp(ctx context.Context) error {
	cmd := exec.CommandContext(ctx, filepath.Join(b.t.Repo, "scripts/images.sh"), "vps")
	cmd.Env = append(b.t.Env(), "IMAGES=edge")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("scripts/images.sh: %v: %s", err, out)
	}
	routes := filepath.Join(b.t.Root, "vps", "bench-mem-routes")
	if err := os.MkdirAll(routes, 0o755); err != nil {
		return err
	}
	b.network = "bench-mem-web"
	b.t.Docker(ctx, "vps", "network", "rm", b.network)
	if _, err := b.t.Docker(ctx, "vps", "network", "create", "-d", "overlay", "--attachable", b.network); err != nil {
		return err
	}
	b.t.Docker(ctx, "vps", "service", "rm", "bench-mem-edge")
	b.edge = true
	_, err := b.t.Docker(ctx, "vps", "service", "create", "-q", "--detach", "--no-resolve-image", "--name", "bench-mem-edge",
		"--constraint", "node.role==manager", "--network", "host",
		"--mount", "type=bind,source="+b.t.Socket("vps")+",target=/var/run/docker.sock",
		"--mount", "type=bind,source="+routes+",target=/routes",
		"--env", "EDGE_NETWORK="+b.network, "--env", "EDGE_LISTEN=127.0.0.1:8098", "homeswarm/edge")
	if err != nil {
		return err
	}
	return swarmtopo.Poll(ctx, 60*time.Second, 500*time.Millisecond, func() error {
		_, err := b.t.FindProc(ctx, "vps", "/edge")
		return err
	})
}

// anchorNamespace makes the anchors' network namespace (loopback only).
func (b *bench) anchorNamespace(ctx context.Context) error {
	if b.anchorNS != "" {
		return nil
	}
	ns := b.t.Prefix + "-memanchor"
	exec.CommandContext(ctx, "ip", "netns", "delete", ns).Run()
	if out, err := exec.CommandContext(ctx, "ip", "netns", "add", ns).CombinedOutput(); err != nil {
		return fmt.Errorf("ip netns add %s: %v: %s", ns, err, out)
	}
	b.anchorNS = ns
	if out, err := exec.CommandContext(ctx, "ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
		return fmt.Errorf("lo up: %v: %s", err, out)
	}
	d, err := os.MkdirTemp("", "bench-memory")
	b.dir = d
	return err
}

// start runs argv in the anchors' namespace, in the background.
func (b *bench) start(kind string, env []string, logName string, argv ...string) (*exec.Cmd, error) {
	cmd := exec.Command("ip", append([]string{"netns", "exec", b.anchorNS}, argv...)...)
	cmd.Env = append(os.Environ(), env...)
	f, err := os.Create(filepath.Join(b.dir, logName))
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, err
	}
	f.Close()
	b.procs = append(b.procs, anchorProc{cmd: cmd, kind: kind})
	return cmd, nil
}

// syncthingUp starts len(nodes) plain Syncthing processes sharing
// b.c.volumes folders with one another over loopback.
func (b *bench) syncthingUp(ctx context.Context) (string, error) {
	bin, err := exec.LookPath("syncthing")
	if err != nil {
		return "", errors.New("syncthing not found: apt-get install syncthing")
	}
	if err := b.anchorNamespace(ctx); err != nil {
		return "", err
	}
	version := syncthing.Version(bin)
	n := len(nodes)
	homes := make([]string, n)
	ids := make([]string, n)
	for i := range n {
		homes[i] = filepath.Join(b.dir, fmt.Sprintf("st%d", i+1))
		id, err := syncthing.Generate(ctx, bin, homes[i])
		if err != nil {
			return "", err
		}
		ids[i] = id
	}
	for i := range n {
		cfgPath := filepath.Join(homes[i], "config.xml")
		raw, err := os.ReadFile(cfgPath)
		if err != nil {
			return "", err
		}
		cfg, err := syncthing.Quiet(string(raw), fmt.Sprintf("tcp://127.0.0.1:%d", 22001+i))
		if err != nil {
			return "", err
		}
		for old, repl := range map[string]string{
			"<reconnectionIntervalS>60":  "<reconnectionIntervalS>5",
			"<address>127.0.0.1:8384":    fmt.Sprintf("<address>127.0.0.1:%d", 28384+i),
			"<announceLANAddresses>true": "<announceLANAddresses>false",
		} {
			cfg = strings.Replace(cfg, old, repl, 1)
		}
		var extra strings.Builder
		for f := range b.c.volumes {
			dir := filepath.Join(homes[i], fmt.Sprintf("folder%d", f+1))
			if err := os.MkdirAll(filepath.Join(dir, ".stfolder"), 0o755); err != nil {
				return "", err
			}
			fmt.Fprintf(&extra, `<folder id="bench-mem-%d" label="bench-mem-%d" path="%s" type="sendreceive" rescanIntervalS="3600" fsWatcherEnabled="true" fsWatcherDelayS="10">`+"\n", f+1, f+1, dir)
			for j := range n {
				fmt.Fprintf(&extra, `<device id="%s"></device>`+"\n", ids[j])
			}
			extra.WriteString("</folder>\n")
		}
		for j := range n {
			if j != i {
				fmt.Fprintf(&extra, `<device id="%s" name="st%d" compression="metadata"><address>tcp://127.0.0.1:%d</address></device>`+"\n", ids[j], j+1, 22001+j)
			}
		}
		cfg = strings.Replace(cfg, "</configuration>", extra.String()+"</configuration>", 1)
		if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
			return "", err
		}
	}
	for i := range n {
		if _, err := b.start("syncthing", []string{"STNODEFAULTFOLDER=1", "STNOUPGRADE=1", "STNORESTART=1"}, fmt.Sprintf("st%d.log", i+1),
			bin, "serve", "--home="+homes[i], "--no-browser", "--no-restart", "--no-upgrade"); err != nil {
			return "", err
		}
	}
	logf("%d plain Syncthing %s processes, %d folders each, on loopback in %s", n, version, b.c.volumes, b.anchorNS)
	return version, nil
}

// wireguardUp starts len(nodes) wireguard-go processes, each with the
// others as peers, keepalive 25 s, over loopback.
func (b *bench) wireguardUp(ctx context.Context) (string, error) {
	if _, err := os.Stat(b.c.wireguardGo); err != nil {
		return "", fmt.Errorf("wireguard-go: %w (bench/memory.sh installs it)", err)
	}
	if _, err := exec.LookPath("wg"); err != nil {
		return "", errors.New("wg not found: apt-get install wireguard-tools")
	}
	if err := b.anchorNamespace(ctx); err != nil {
		return "", err
	}
	version := "?"
	if out, err := exec.CommandContext(ctx, b.c.wireguardGo, "--version").Output(); err == nil {
		for _, f := range strings.Fields(string(out)) {
			if strings.HasPrefix(f, "v0.") {
				version = f
			}
		}
	}
	n := len(nodes)
	priv, pub := make([]string, n), make([]string, n)
	for i := range n {
		k, err := output(ctx, "", "wg", "genkey")
		if err != nil {
			return "", err
		}
		p, err := output(ctx, k+"\n", "wg", "pubkey")
		if err != nil {
			return "", err
		}
		priv[i], pub[i] = k, p
	}
	for i := range n {
		dev := fmt.Sprintf("%smwg%d", b.t.Prefix, i+1)
		if _, err := b.start("wireguard-go", []string{"WG_PROCESS_FOREGROUND=1", "LOG_LEVEL=error"}, dev+".log", b.c.wireguardGo, "-f", dev); err != nil {
			return "", err
		}
		sock := "/var/run/wireguard/" + dev + ".sock"
		if err := swarmtopo.Poll(ctx, 10*time.Second, 100*time.Millisecond, func() error { _, err := os.Stat(sock); return err }); err != nil {
			return "", fmt.Errorf("wireguard-go %s: %w", dev, err)
		}
		kf := filepath.Join(b.dir, dev+".key")
		if err := os.WriteFile(kf, []byte(priv[i]+"\n"), 0o600); err != nil {
			return "", err
		}
		args := []string{"netns", "exec", b.anchorNS, "wg", "set", dev, "private-key", kf, "listen-port", strconv.Itoa(51821 + i)}
		for j := range n {
			if j != i {
				args = append(args, "peer", pub[j], "allowed-ips", fmt.Sprintf("10.99.0.%d/32", j+1),
					"endpoint", fmt.Sprintf("127.0.0.1:%d", 51821+j), "persistent-keepalive", "25")
			}
		}
		if _, err := output(ctx, "", "ip", args...); err != nil {
			return "", err
		}
		if _, err := output(ctx, "", "ip", "netns", "exec", b.anchorNS, "ip", "link", "set", dev, "up"); err != nil {
			return "", err
		}
	}
	logf("%d wireguard-go %s processes, %d peers each, on loopback in %s", n, version, n-1, b.anchorNS)
	return version, nil
}

// anchorsConnected checks that every Syncthing is connected to its 3 peers
// (its log says so) and every wireguard-go has handshaken with its 3 peers.
func (b *bench) anchorsConnected(ctx context.Context) error {
	n := len(nodes)
	for i := range n {
		log, _ := os.ReadFile(filepath.Join(b.dir, fmt.Sprintf("st%d.log", i+1)))
		peers := map[string]bool{}
		for _, m := range connected.FindAllSubmatch(log, -1) {
			peers[string(m[1])] = true
		}
		if len(peers) < n-1 {
			return fmt.Errorf("plain Syncthing %d connected to %d of its %d peers; its log:\n%s", i+1, len(peers), n-1, log)
		}
		dev := fmt.Sprintf("%smwg%d", b.t.Prefix, i+1)
		out, err := output(ctx, "", "ip", "netns", "exec", b.anchorNS, "wg", "show", dev, "latest-handshakes")
		if err != nil {
			return err
		}
		shaken := 0
		for _, l := range strings.Split(out, "\n") {
			if f := strings.Fields(l); len(f) == 2 && f[1] != "0" {
				shaken++
			}
		}
		if shaken < n-1 {
			return fmt.Errorf("wireguard-go %s handshaken with %d of its %d peers", dev, shaken, n-1)
		}
	}
	return nil
}

var connected = regexp.MustCompile(`Established secure connection to ([A-Z0-9]{7})`)

func output(ctx context.Context, stdin string, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var errb bytes.Buffer
	cmd.Stderr = &errb
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, errb.String())
	}
	return strings.TrimSpace(string(out)), nil
}

// cleanup stops the anchors, removes their namespace and state, and what
// was created on the topology.
func (b *bench) cleanup() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, p := range b.procs {
		p.cmd.Process.Signal(syscall.SIGTERM)
	}
	for _, p := range b.procs {
		done := make(chan struct{})
		go func() { p.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			p.cmd.Process.Kill()
			<-done
		}
	}
	if b.anchorNS != "" {
		// Anything of ours still in the namespace (ip netns exec's children).
		if out, err := exec.Command("ip", "netns", "pids", b.anchorNS).Output(); err == nil {
			for _, f := range strings.Fields(string(out)) {
				if pid, err := strconv.Atoi(f); err == nil {
					syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		}
		exec.Command("ip", "netns", "delete", b.anchorNS).Run()
	}
	if b.dir != "" {
		os.RemoveAll(b.dir)
	}
	if b.edge {
		b.t.RemoveService(ctx, "bench-mem-edge", []string{"vps"})
	}
	if b.network != "" {
		b.t.Docker(ctx, "vps", "network", "rm", b.network)
	}
	for _, v := range b.volumes {
		b.t.Docker(ctx, "home1", "volume", "rm", v)
	}
}

func (b *bench) rows(targets map[string][]target, stVersion, wgVersion string) []schema.Row {
	// Each process's median; the row's value is the largest.
	fig := func(kind string) (float64, []float64, string) {
		var vals []float64
		var parts []string
		for _, t := range targets[kind] {
			m := schema.Median(t.rss)
			vals = append(vals, schema.Round(m, 1))
			parts = append(parts, fmt.Sprintf("%s %.1f", t.name, m))
		}
		return slices.Max(vals), vals, strings.Join(parts, ", ")
	}
	sv, svs, svNote := fig("syncvol")
	mv, mvs, mvNote := fig("meshnet")
	st, sts, _ := fig("syncthing")
	wg, wgs, _ := fig("wireguard-go")
	method := fmt.Sprintf("VmRSS after %s idle, median of %d samples 1 s apart per process, largest over the processes", b.c.settle, b.c.samples)
	rs := []schema.Row{
		{Name: "syncvol idle memory", Metric: "RSS", Unit: "MiB", Value: schema.Round(sv, 1),
			Anchor: "syncthing " + stVersion, AnchorValue: schema.Round(st, 1), Ratio: schema.Round(st/sv, 3),
			Target: "idle < 60 MiB RSS", Samples: svs,
			Note: fmt.Sprintf("%s. syncvol: the plugin process (/syncvol) on each engine node (MiB: %s) with %d volumes replicated on all 4 nodes; anchor: %d processes of Debian's syncthing %s (it embeds nothing else, but is an older Syncthing than syncvol's v1.30), each with the same %d folders shared with the 3 others over loopback, GUI, discovery, relays and NAT off",
				method, svNote, b.c.volumes, len(targets["syncthing"]), stVersion, b.c.volumes)},
		{Name: "meshnet idle memory", Metric: "RSS", Unit: "MiB", Value: schema.Round(mv, 1),
			Anchor: "wireguard-go " + wgVersion, AnchorValue: schema.Round(wg, 1), Ratio: schema.Round(wg/mv, 3),
			Target: "idle < 60 MiB RSS", Samples: mvs,
			Note: fmt.Sprintf("%s. meshnet: the plugin process (/meshnet) on each node (MiB: %s), its mesh up with the 3 other nodes; anchor: %d wireguard-go processes with the 3 others as peers (keepalive 25 s) over loopback", method, mvNote, len(targets["wireguard-go"]))},
	}
	if e := targets["edge"]; len(e) > 0 {
		ev, evs, _ := fig("edge")
		rs = append(rs, schema.Row{Name: "edge idle memory", Metric: "RSS", Unit: "MiB", Value: schema.Round(ev, 1),
			Target: "idle < 60 MiB RSS", Samples: evs,
			Note: "edge (/edge) as a Swarm service on the VPS, watching the Swarm and writing Traefik's file provider directory, idle; no anchor: nothing else does this job as its own process (Traefik's swarm provider runs inside Traefik)"})
	}
	rs = append(rs,
		schema.Row{Name: "syncthing " + stVersion + " idle memory", Metric: "RSS", Unit: "MiB", Value: schema.Round(st, 1), Samples: sts},
		schema.Row{Name: "wireguard-go " + wgVersion + " idle memory", Metric: "RSS", Unit: "MiB", Value: schema.Round(wg, 1), Samples: wgs},
	)
	return rs
}

func printSummary(r schema.Result, out string) {
	fmt.Println()
	for _, row := range r.Rows {
		line := fmt.Sprintf("%-34s %7.1f %s", row.Name, row.Value, row.Unit)
		if row.Anchor != "" {
			line += fmt.Sprintf("  vs %s %.1f %s (ratio %.2f×)", row.Anchor, row.AnchorValue, row.Unit, row.Ratio)
		}
		if row.Target != "" {
			line += "  target " + row.Target
		}
		fmt.Println(line)
	}
	fmt.Printf("\nmachine: %s\nwritten: %s\n", r.Machine, out)
}
