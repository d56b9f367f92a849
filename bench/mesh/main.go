//go:build linux

// Command mesh measures meshnet's data path side by side with its anchors in
// one run: TCP throughput, round-trip time and CPU per Gbit/s from home to
// vps through a masquerading NAT, over
//
//   - the bare veth path (home → NAT → WAN bridge → vps),
//   - wireguard-go (golang.zx2c4.com/wireguard, configured with `wg`), the
//     userspace Go anchor, and
//   - meshnet: two netdriver/mesh engines, each run by this program
//     re-executed as `mesh node` in its namespace, with a real TUN device
//     (tun.CreateOffload, falling back to tun.Create) and the UDP socket
//     the plugin uses (netdriver/conn, batched and with UDP GSO sends).
//
// The topology (network namespaces <prefix>-home, -nat, -wan, -vps) is built
// and torn down by bench/mesh.sh, which runs this program; see there. Each
// round runs one iperf3 client per path (order rotated every round, so slow
// drift of the machine's load hits every path alike), measuring the CPU
// time (utime+stime from /proc/<pid>/stat) of both tunnel processes over
// the run. RTT is the median of busybox ping's times on idle tunnels, in
// rounds interleaved the same way. The result is
// written as JSON in the shared bench schema (bench/README.md).
package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/homeswarm/homeswarm/bench/schema"
	"github.com/homeswarm/homeswarm/bench/swarmtopo"
	"github.com/homeswarm/homeswarm/netdriver/mesh"
)

// The three paths, as they are named in the results.
const (
	pathBare = "bare veth path"
	pathWG   = "wireguard-go"
	pathMesh = "meshnet"
	pathBase = "meshnet before" // -baseline: another build of this program
)

// Tunnel addresses: vps is .1, home is .2.
const (
	meshNet       = "10.254.0"
	wgVPS, wgHome = "10.253.0.1", "10.253.0.2"
	wgPort        = 51820
	meshDev       = "bmesh0"
	baseNet       = "10.252.0"
	baseDev       = "bmesh1"
)

type config struct {
	out         string
	prefix      string
	wireguardGo string
	wanVPS      string
	meshPort    int
	runs        int
	seconds     int
	omit        int
	pings       int
	profile     string
	plain       bool
	baseline    string // another build of this program: its nodes are pathBase
	baseLabel   string
	load        int // busy processes running beside every path's runs
}

// benchName is the results' name: a loaded run (-load) is reported
// beside the quiet one, not instead of it.
func (c config) benchName() string {
	if c.load > 0 {
		return "mesh-loaded"
	}
	return "mesh"
}

// rttRounds is how many rounds the pings are spread over: one per
// throughput run, at least one.
func (c config) rttRounds() int { return max(1, c.runs) }

func main() {
	if len(os.Args) > 1 && os.Args[1] == "spin" {
		spin()
		return
	}
	if len(os.Args) > 1 && os.Args[1] == "node" {
		if err := runNode(os.Args[2:]); err != nil {
			fmt.Fprintf(os.Stderr, "mesh node: %v\n", err)
			os.Exit(1)
		}
		return
	}
	var c config
	flag.StringVar(&c.out, "out", "", "where to write the JSON result (default bench/results/mesh.json, mesh-loaded.json with -load)")
	flag.StringVar(&c.prefix, "prefix", "bm", "namespace prefix of the topology (bench/mesh.sh)")
	flag.StringVar(&c.wireguardGo, "wireguard-go", "/var/cache/homeswarm/wireguard", "wireguard-go binary")
	flag.StringVar(&c.wanVPS, "wan-vps", "198.51.100.10", "vps's WAN address")
	flag.IntVar(&c.meshPort, "mesh-port", 3210, "mesh UDP port (the one the NAT forwards)")
	flag.IntVar(&c.runs, "runs", 5, "iperf3 runs per path")
	flag.IntVar(&c.seconds, "t", 8, "seconds measured per iperf3 run")
	flag.IntVar(&c.omit, "omit", 1, "seconds of each iperf3 run left out first (TCP ramp-up)")
	flag.IntVar(&c.pings, "pings", 200, "pings per path, 50 ms apart, spread over -runs rounds")
	flag.StringVar(&c.profile, "profile", "", "write CPU profiles of both mesh nodes (node-home.pprof, node-vps.pprof) to this directory")
	flag.BoolVar(&c.plain, "plain", false, "mesh nodes use TUN without offloads")
	flag.StringVar(&c.baseline, "baseline", "", "another build of this program (bench/mesh at an earlier commit): its mesh nodes are a fourth path, \""+pathBase+"\", for a before/after in one run")
	flag.StringVar(&c.baseLabel, "baseline-label", "", "what -baseline was built from (a commit), for the results")
	flag.IntVar(&c.load, "load", 0, "processes that each keep a core busy during the RTT and throughput rounds (a loaded machine on demand: every path meets the same load)")
	flag.Parse()
	if c.out == "" {
		c.out = "bench/results/" + c.benchName() + ".json"
	}
	log.SetFlags(log.Ltime)
	log.SetPrefix("[bench/mesh] ")
	if c.runs < 1 {
		// Every path then has samples: the medians below are never of none.
		log.Fatal("-runs must be at least 1")
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, c); err != nil {
		log.Printf("error: %v", err)
		stop()
		os.Exit(1)
	}
}

// tunnel is one path under test.
type tunnel struct {
	name    string
	target  string    // vps's address on this path
	daemons []*daemon // the processes doing the tunnel's work, both ends
}

func (t *tunnel) pids() []int {
	var p []int
	for _, d := range t.daemons {
		p = append(p, d.pid())
	}
	return p
}

// measured is everything measured on one path.
type measured struct {
	gbps    []float64 // per run
	cpuGbit []float64 // CPU seconds per Gbit, per run (tunnels only)
	retrans []int
	wirePkt []float64 // mean bytes per packet (skb) received on vps's WAN link, per run
	rtts    []float64 // ms
}

func run(ctx context.Context, c config) error {
	tp := topo{prefix: c.prefix}
	for _, n := range []string{"home", "vps"} {
		if _, err := os.Stat("/run/netns/" + tp.ns(n)); err != nil {
			return fmt.Errorf("namespace %s missing: run bench/mesh.sh, which builds the topology", tp.ns(n))
		}
	}
	loadStart := swarmtopo.LoadAvg()
	start := time.Now().UTC()
	log.Printf("load average %s", loadStart)

	var all []*daemon
	defer func() {
		for _, d := range all {
			d.stop(3 * time.Second)
		}
	}()

	srv, err := tp.start("iperf3 server", "vps", nil, "iperf3", "-s")
	if err != nil {
		return err
	}
	all = append(all, srv)

	wg, wgDaemons, err := startWireGuard(ctx, tp, c)
	all = append(all, wgDaemons...)
	if err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	mt, mode, err := startMesh(ctx, tp, c, meshSpec{name: pathMesh, bin: self, profile: "node", net: meshNet, port: c.meshPort, dev: meshDev})
	if mt != nil {
		all = append(all, mt.daemons...)
	}
	if err != nil {
		return err
	}
	tunnels := []*tunnel{{name: pathBare, target: c.wanVPS}, wg, mt}
	meshes := []*tunnel{mt}
	if c.baseline != "" {
		bt, _, err := startMesh(ctx, tp, c, meshSpec{name: pathBase, bin: c.baseline, profile: "base", net: baseNet, port: c.meshPort + 1, dev: baseDev})
		if bt != nil {
			all = append(all, bt.daemons...)
		}
		if err != nil {
			return err
		}
		tunnels = append(tunnels, bt)
		meshes = append(meshes, bt)
	}

	for _, t := range tunnels {
		if err := waitPing(ctx, tp, t.target, 20*time.Second); err != nil {
			return fmt.Errorf("%s: %w", t.name, err)
		}
	}
	log.Printf("all %d paths answer; meshnet TUN mode: %s", len(tunnels), mode)

	res := map[string]*measured{}
	for _, t := range tunnels {
		res[t.name] = &measured{}
	}
	for range c.load {
		d, err := tp.start("spinner", "vps", nil, self, "spin")
		if err != nil {
			return err
		}
		all = append(all, d)
	}
	if c.load > 0 {
		log.Printf("%d spinners keep cores busy from here on", c.load)
	}
	// RTT in rounds, the paths' order rotated each round as for
	// throughput, so that the machine's drift (a VM's idle states, a
	// neighbour's load) hits every path alike.
	rounds := c.rttRounds()
	per := max(1, (c.pings+rounds-1)/rounds)
	for r := range rounds {
		for i := range tunnels {
			t := tunnels[(i+r)%len(tunnels)]
			out, err := tp.run(ctx, "home", "busybox", "ping", "-c", strconv.Itoa(per), "-i", "0.05", "-W", "2", t.target)
			if err != nil {
				return fmt.Errorf("ping %s: %w", t.name, err)
			}
			rtts := parsePing(out)
			if len(rtts) == 0 {
				return fmt.Errorf("ping %s: no replies", t.name)
			}
			res[t.name].rtts = append(res[t.name].rtts, rtts...)
		}
	}
	for _, t := range tunnels {
		m := res[t.name]
		log.Printf("%-25s RTT median %.3f ms, mean %.3f ms over %d pings", t.name, schema.Median(m.rtts), schema.Mean(m.rtts), len(m.rtts))
	}

	for r := range c.runs {
		for i := range tunnels {
			t := tunnels[(i+r)%len(tunnels)]
			ir, cpu, err := iperf(ctx, tp, c, t)
			if err != nil {
				return fmt.Errorf("%s run %d: %w", t.name, r+1, err)
			}
			m := res[t.name]
			gbps := ir.BitsPerSecond / 1e9
			m.gbps = append(m.gbps, gbps)
			m.retrans = append(m.retrans, ir.Retransmits)
			m.wirePkt = append(m.wirePkt, ir.WireBytesPerPacket)
			line := fmt.Sprintf("run %d %-25s %6.2f Gbit/s, %d retransmits, %.0f B per packet into vps", r+1, t.name, gbps, ir.Retransmits, ir.WireBytesPerPacket)
			if len(t.daemons) > 0 {
				per := cpu / (ir.Bytes * 8 / 1e9)
				m.cpuGbit = append(m.cpuGbit, per)
				line += fmt.Sprintf(", tunnel CPU %.2f cores (%.2f CPU-s per Gbit)", cpu/ir.Seconds, per)
			}
			log.Print(line)
		}
	}

	// Stop the nodes now to read their counters (and end their profiles).
	var meshNote []string
	for _, t := range meshes {
		for _, d := range t.daemons {
			for _, l := range d.stop(5 * time.Second) {
				var st mesh.Status
				if json.Unmarshal([]byte(l), &st) == nil && st.PublicKey != "" {
					meshNote = append(meshNote, fmt.Sprintf("%s drops: %s", d.name, formatDrops(st.Drops)))
				}
			}
		}
	}
	if c.profile != "" {
		log.Printf("CPU profiles of the mesh nodes in %s (go tool pprof -top %s)", c.profile, filepath.Join(c.profile, "node-home.pprof"))
	}

	machine := fmt.Sprintf("%s, %s; load average %s at start, %s at end", swarmtopo.Host(), runtime.Version(), loadStart, swarmtopo.LoadAvg())
	if c.load > 0 {
		machine += fmt.Sprintf("; -load %d: that many busy processes beside every round", c.load)
	}
	out := result{Bench: c.benchName(), Machine: machine, Date: start.Format(time.RFC3339)}
	out.Rows = rows(res, c, mode, strings.Join(meshNote, "; "))
	if err := schema.Write(c.out, out); err != nil {
		return err
	}
	printSummary(res, out, c.out)
	return nil
}

// startWireGuard starts wireguard-go in home and vps and configures it
// with wg: vps listens on wgPort; home, behind the NAT, names vps as its
// endpoint and keeps the mapping open.
func startWireGuard(ctx context.Context, tp topo, c config) (*tunnel, []*daemon, error) {
	t := &tunnel{name: pathWG, target: wgVPS}
	keys := map[string][2]string{} // node → private, public
	for _, n := range []string{"home", "vps"} {
		priv, err := cmdOut(ctx, "", "wg", "genkey")
		if err != nil {
			return nil, nil, err
		}
		pub, err := cmdOut(ctx, priv+"\n", "wg", "pubkey")
		if err != nil {
			return nil, nil, err
		}
		keys[n] = [2]string{priv, pub}
	}
	dir, err := os.MkdirTemp("", "bm-wg")
	if err != nil {
		return nil, nil, err
	}
	defer os.RemoveAll(dir)
	for _, x := range []struct{ node, peer, addr, peerAddr string }{
		{"vps", "home", wgVPS, wgHome},
		{"home", "vps", wgHome, wgVPS},
	} {
		dev := c.prefix + "wg" + x.node[:1] // bmwgv, bmwgh: its UAPI socket is /var/run/wireguard/<dev>.sock
		d, err := tp.start("wireguard-go "+x.node, x.node, []string{"WG_PROCESS_FOREGROUND=1", "LOG_LEVEL=error"}, c.wireguardGo, "-f", dev)
		if err != nil {
			return nil, t.daemons, err
		}
		t.daemons = append(t.daemons, d)
		sock := "/var/run/wireguard/" + dev + ".sock"
		if err := swarmtopo.Poll(ctx, 10*time.Second, 100*time.Millisecond, func() error { _, err := os.Stat(sock); return err }); err != nil {
			return nil, t.daemons, fmt.Errorf("wireguard-go %s: no %s: %s", x.node, sock, d.log.String())
		}
		kf := filepath.Join(dir, x.node+".key")
		if err := os.WriteFile(kf, []byte(keys[x.node][0]+"\n"), 0o600); err != nil {
			return nil, t.daemons, err
		}
		args := []string{"wg", "set", dev, "private-key", kf}
		if x.node == "vps" {
			args = append(args, "listen-port", strconv.Itoa(wgPort))
		}
		args = append(args, "peer", keys[x.peer][1], "allowed-ips", x.peerAddr+"/32")
		if x.node == "home" {
			args = append(args, "endpoint", fmt.Sprintf("%s:%d", c.wanVPS, wgPort), "persistent-keepalive", "25")
		}
		for _, argv := range [][]string{
			args,
			{"ip", "addr", "add", x.addr + "/24", "dev", dev},
			{"ip", "link", "set", dev, "up"},
		} {
			if _, err := tp.run(ctx, x.node, argv...); err != nil {
				return nil, t.daemons, err
			}
		}
	}
	return t, t.daemons, nil
}

// meshSpec is one pair of mesh nodes.
type meshSpec struct {
	name    string // path name
	bin     string // the program whose `node` runs them
	profile string // CPU profiles are <profile>-<node>.pprof
	net     string // the mesh's /24, e.g. "10.254.0": vps .1, home .2
	port    int
	dev     string
}

// startMesh starts a mesh node in vps and one in home that names vps as
// its peer, and returns the tunnel and the TUN mode the nodes got.
func startMesh(ctx context.Context, tp topo, c config, spec meshSpec) (*tunnel, string, error) {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, "", err
	}
	env := []string{"MESH_KEY=" + base64.StdEncoding.EncodeToString(key)}
	t := &tunnel{name: spec.name, target: spec.net + ".1"}
	modes := map[string]bool{}
	for _, x := range []struct{ node, addr, peers string }{
		{"vps", spec.net + ".1", ""},
		{"home", spec.net + ".2", fmt.Sprintf("%s:%d", c.wanVPS, spec.port)},
	} {
		argv := []string{spec.bin, "node", "-addr", x.addr + "/24", "-port", strconv.Itoa(spec.port), "-dev", spec.dev}
		if x.peers != "" {
			argv = append(argv, "-peers", x.peers)
		}
		if c.plain {
			argv = append(argv, "-plain")
		}
		if c.profile != "" {
			if err := os.MkdirAll(c.profile, 0o755); err != nil {
				return t, "", err
			}
			p, err := filepath.Abs(filepath.Join(c.profile, spec.profile+"-"+x.node+".pprof"))
			if err != nil {
				return t, "", err
			}
			argv = append(argv, "-cpuprofile", p)
		}
		d, err := tp.start(spec.name+" "+x.node, x.node, env, argv...)
		if err != nil {
			return t, "", err
		}
		t.daemons = append(t.daemons, d)
		l, err := d.waitLine(ctx, nodeReady, 10*time.Second)
		if err != nil {
			return t, "", err
		}
		modes[strings.TrimSpace(strings.TrimPrefix(l, nodeReady))] = true
	}
	var ms []string
	for m := range modes {
		ms = append(ms, m)
	}
	slices.Sort(ms)
	return t, strings.Join(ms, ", "), nil
}

// iperf runs one iperf3 client from home to t's target and returns what it
// measured and the CPU seconds t's processes used meanwhile.
func iperf(ctx context.Context, tp topo, c config, t *tunnel) (iperfResult, float64, error) {
	rx0, err := tp.rxCounters(ctx, "vps", "wan0")
	if err != nil {
		return iperfResult{}, 0, err
	}
	before, err := sumTicks(t.pids())
	if err != nil {
		return iperfResult{}, 0, err
	}
	cctx, cancel := context.WithTimeout(ctx, time.Duration(c.seconds+c.omit+20)*time.Second)
	defer cancel()
	out, err := tp.run(cctx, "home", "iperf3", "-c", t.target, "-t", strconv.Itoa(c.seconds), "-O", strconv.Itoa(c.omit), "-J")
	after, err2 := sumTicks(t.pids())
	if err != nil {
		if r, perr := parseIperf([]byte(out)); perr != nil {
			return r, 0, err
		}
	}
	if err2 != nil {
		return iperfResult{}, 0, err2
	}
	r, err := parseIperf([]byte(out))
	if err != nil {
		return r, 0, err
	}
	rx1, err := tp.rxCounters(ctx, "vps", "wan0")
	if err != nil {
		return r, 0, err
	}
	if p := rx1.Packets - rx0.Packets; p > 0 {
		r.WireBytesPerPacket = float64(rx1.Bytes-rx0.Bytes) / float64(p)
	}
	// The ticks cover the omitted ramp-up too: scale to the measured part.
	total := float64(c.seconds + c.omit)
	cpu := float64(after-before) / clkTck * float64(c.seconds) / total
	return r, cpu, nil
}

func waitPing(ctx context.Context, tp topo, target string, timeout time.Duration) error {
	err := swarmtopo.Poll(ctx, timeout, 100*time.Millisecond, func() error {
		_, err := tp.run(ctx, "home", "busybox", "ping", "-c", "1", "-W", "1", target)
		return err
	})
	if err != nil {
		return fmt.Errorf("%s does not answer: %w", target, err)
	}
	return nil
}

func cmdOut(ctx context.Context, stdin string, argv ...string) (string, error) {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdin = strings.NewReader(stdin)
	b, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%s: %w", strings.Join(argv, " "), err)
	}
	return strings.TrimSpace(string(b)), nil
}

// formatDrops renders the non-zero drop counters as "reason=n …", sorted.
func formatDrops(m map[string]uint64) string {
	var out []string
	for k, v := range m {
		if v != 0 {
			out = append(out, fmt.Sprintf("%s=%d", k, v))
		}
	}
	if len(out) == 0 {
		return "none"
	}
	slices.Sort(out)
	return strings.Join(out, " ")
}

// spin keeps one core busy until killed (-load).
func spin() {
	runtime.GOMAXPROCS(1)
	for {
	}
}
