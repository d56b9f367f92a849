//go:build linux

// Command failover measures, on the seed topology (scripts/topo.sh), how long
// a service at home takes to come back on another home node with its syncvol
// volume's data readable, side by side with its anchor, Swarm's own
// reschedule time: a plain service without a volume, moved by the same event
// in the same round.
//
// Each round places both services (busybox, one replica each, constraint
// node.labels.location==home) on one home node, writes a token into the
// volume and waits until the other home nodes' replicas hold it, then
// either drains that node (`docker node update --availability drain`) or
// kills its engine outright (`scripts/topo.sh engine-stop NODE --kill`:
// dockerd, containerd, the plugins and the containers, SIGKILL). From the
// moment the drain or kill is issued, both services are polled in parallel
// until a task of theirs runs on another node and answers an exec: for the
// volume's service, `cat /data/token` must print the token (the data
// followed), for the plain one, any exec (the container runs). The node
// rounds rotate over the home nodes. The volume's service either holds a
// token written once, or runs SQLite committing continuously (then it is
// back when the database opens, passes its own check and holds the row
// marked before the event). Target (issue 7): failover ≤ Swarm's
// reschedule + 2 s.
//
// Run it with bench/failover.sh, which brings up a topology instance of its
// own (or reuses one, BENCH_REUSE=1). Results go to a JSON file in the
// shared bench schema (bench/schema) and a table on stdout.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/homeswarm/homeswarm/bench/schema"
	"github.com/homeswarm/homeswarm/bench/swarmtopo"
)

var homes = []string{"home1", "home2", "home3"}

// holdLabel keeps the services off the nodes carrying it while they are
// placed; it is removed before the drain or kill, so every other home node
// is a candidate for the move.
const holdLabel = "bench.failover.hold"

// Service options both services share: a short restart delay (Swarm's
// default is 5 s) and a short stop grace, as the e2e tests use.
var common = []string{"--restart-delay", "1s", "--stop-grace-period", "5s",
	"--constraint", "node.labels.location==home", "--constraint", "node.labels." + holdLabel + "!=1"}

type config struct {
	rounds    int
	modes     []string
	workloads []string
	out       string
	timeout   time.Duration
}

// workload is what the volume's service does while it is moved.
type workload struct {
	image string
	cmd   string // the service's command (sh -c)
	mark  string // writes the token (%[1]s) before the event
	check string // prints what want (%[1]s) must be once it is back (a format of the token too: %.0[1]s when it needs none)
	want  string
	label string // in row names
}

var workloads = map[string]workload{
	// A token in a file, written once.
	"token": {image: "busybox", cmd: "trap 'exit 0' TERM; while :; do sleep 1; done",
		mark: "echo %[1]s > /data/token && sync", check: "cat /data/token%.0[1]s", want: "%[1]s", label: "data"},
	// SQLite (Debian's, scripts/dbimages.sh) committing continuously:
	// one row of 4 KB per transaction, WAL, synchronous=FULL, ~100 a
	// second; back means the database opens after its crash recovery,
	// passes its own check and holds the row marked before the event.
	"sqlite": {image: "homeswarm/sqlite",
		cmd: "trap 'exit 0' TERM; (echo 'PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; CREATE TABLE IF NOT EXISTS t(n INTEGER PRIMARY KEY, pad BLOB); CREATE TABLE IF NOT EXISTS marks(v TEXT);';" +
			" while :; do echo 'INSERT INTO t(pad) VALUES(randomblob(4000));'; sleep 0.01; done) | sqlite3 -cmd '.timeout 5000' /data/db & wait",
		mark:  "echo %[1]s > /data/token && sqlite3 -cmd '.timeout 5000' /data/db \"INSERT INTO marks VALUES('%[1]s')\" && sync",
		check: "sqlite3 -cmd '.timeout 5000' /data/db \"PRAGMA integrity_check; SELECT v FROM marks WHERE v='%[1]s'\"",
		want:  "ok\n%[1]s", label: "a database (SQLite committing)"},
}

// logf and fail write the bench's log lines and its fatal error on stderr.
var logf, fail = swarmtopo.Log("bench/failover").Printf, swarmtopo.Log("bench/failover").Fatalf

func main() {
	var c config
	modes := flag.String("modes", "drain,kill", "events to measure, comma-separated: drain, kill")
	wls := flag.String("workloads", "token,sqlite", "what the volume's service does, comma-separated: token (a file written once), sqlite (a database committing)")
	flag.IntVar(&c.rounds, "rounds", 3, "rounds per event")
	flag.StringVar(&c.out, "out", "bench/results/failover.json", "JSON results file")
	flag.DurationVar(&c.timeout, "timeout", 120*time.Second, "give up on one move after this long")
	flag.Parse()
	for _, m := range strings.Split(*modes, ",") {
		if m != "drain" && m != "kill" {
			fail("-modes: unknown event %q (drain, kill)", m)
		}
		c.modes = append(c.modes, m)
	}
	for _, w := range strings.Split(*wls, ",") {
		if _, ok := workloads[w]; !ok {
			fail("-workloads: unknown workload %q (token, sqlite)", w)
		}
		c.workloads = append(c.workloads, w)
	}
	if c.rounds < 1 {
		fail("-rounds must be at least 1")
	}
	b := &bench{t: swarmtopo.FromEnv("hf"), c: c, run: randHex(3)}
	res := swarmtopo.Log("bench/failover").Main(c.out, b.measure, b.cleanup)
	printSummary(res, c.out)
}

type bench struct {
	t        swarmtopo.Topo
	c        config
	run      string   // distinguishes this run's names from leftovers
	services []string // to remove at the end
	killed   []string // engines to start again at the end
}

// sample is one round: seconds from the event to the service running on
// another node and answering (for the volume's service: with its data).
type sample struct {
	workload  string
	from, to  string
	withData  float64 // syncvol service: running elsewhere and the token read back
	plain     float64 // plain service: running elsewhere and answering an exec
	dataTask  float64 // engine's timestamp of the syncvol task running, from the event
	plainTask float64 // engine's timestamp of the plain task running, from the event
}

func (b *bench) measure(ctx context.Context) (schema.Result, error) {
	start := time.Now().UTC()
	load0 := swarmtopo.LoadAvg()
	for _, n := range append([]string{"vps"}, homes...) {
		if !b.t.Up(ctx, n) {
			return schema.Result{}, fmt.Errorf("engine %s of topology %s does not answer: run bench/failover.sh, which brings it up", n, b.t.Prefix)
		}
	}
	samples := map[string][]sample{}
	i := 0
	for _, wl := range b.c.workloads {
		for _, mode := range b.c.modes {
			for r := range b.c.rounds {
				target := homes[i%len(homes)]
				i++
				s, err := b.round(ctx, mode, r, target, wl)
				if err != nil {
					return schema.Result{}, fmt.Errorf("%s %s round %d on %s: %w", wl, mode, r+1, target, err)
				}
				logf("%s %s %d: %s → %s: with data %.2f s, plain %.2f s (tasks running after %.2f / %.2f s)",
					wl, mode, r+1, s.from, s.to, s.withData, s.plain, s.dataTask, s.plainTask)
				samples[wl+" "+mode] = append(samples[wl+" "+mode], s)
			}
		}
	}
	machine := fmt.Sprintf("%s; topology %s (scripts/topo.sh, Swarm over meshnet); load average %s at start, %s at end",
		swarmtopo.Machine(), b.t.Prefix, load0, swarmtopo.LoadAvg())
	return schema.Result{Bench: "failover", Rows: rows(samples), Machine: machine, Date: start.Format(time.RFC3339)}, nil
}

// round runs one drain or kill of target with both services on it.
func (b *bench) round(ctx context.Context, mode string, r int, target, wl string) (sample, error) {
	w := workloads[wl]
	id := fmt.Sprintf("%s-%s%s%d", b.run, wl[:1], mode[:1], r)
	vol, plain, volume := "fo-data-"+id, "fo-plain-"+id, "fo-"+id
	token := randHex(8)
	s := sample{workload: wl, from: target}

	// Place both on target: hold the other home nodes.
	for _, n := range homes {
		if n != target {
			if _, err := b.t.Docker(ctx, "vps", "node", "update", "--label-add", holdLabel+"=1", n); err != nil {
				return s, err
			}
		}
	}
	b.services = append(b.services, vol, plain)
	create := []string{"service", "create", "-q", "--detach", "--no-resolve-image"}
	args := append(append(append([]string{}, create...), "--name", vol), common...)
	args = append(args, "--mount", "type=volume,source="+volume+",target=/data,volume-driver=syncvol",
		"--entrypoint", "/bin/sh", w.image, "-c", w.cmd) // the images differ in their entrypoints
	if _, err := b.t.Docker(ctx, "vps", args...); err != nil {
		return s, err
	}
	args = append(append(append([]string{}, create...), "--name", plain), common...)
	args = append(args, "busybox", "sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1; done")
	if _, err := b.t.Docker(ctx, "vps", args...); err != nil {
		return s, err
	}
	var c string
	err := swarmtopo.Poll(ctx, 90*time.Second, 200*time.Millisecond, func() error {
		if _, err := b.runningOn(ctx, plain, target); err != nil {
			return err
		}
		var err error
		c, err = b.runningOn(ctx, vol, target)
		return err
	})
	if err != nil {
		return s, fmt.Errorf("services on %s: %w", target, err)
	}
	if _, err := b.t.Docker(ctx, target, "exec", c, "sh", "-c", fmt.Sprintf(w.mark, token)); err != nil {
		return s, err
	}
	// The data is on every other home node before the event: what is
	// measured is the failover, not the replication of the last write.
	err = swarmtopo.Poll(ctx, 60*time.Second, 200*time.Millisecond, func() error {
		for _, n := range homes {
			p := replicaFile(filepath.Join(b.t.Root, n, "syncvol", "volumes", volume), "token")
			if got, err := os.ReadFile(p); err != nil || strings.TrimSpace(string(got)) != token {
				return fmt.Errorf("%s's replica has no token yet (%v)", n, err)
			}
		}
		return nil
	})
	if err != nil {
		return s, err
	}
	for _, n := range homes {
		if n != target {
			if _, err := b.t.Docker(ctx, "vps", "node", "update", "--label-rm", holdLabel, n); err != nil {
				return s, err
			}
		}
	}

	// The event, and both services polled from it.
	t0 := time.Now()
	switch mode {
	case "drain":
		_, err = b.t.Docker(ctx, "vps", "node", "update", "--availability", "drain", target)
	case "kill":
		b.killed = append(b.killed, target)
		_, err = b.t.Script(ctx, "engine-stop", target, "--kill")
	}
	if err != nil {
		return s, err
	}
	var wg sync.WaitGroup
	var errData, errPlain error
	wg.Add(2)
	go func() {
		defer wg.Done()
		s.to, s.withData, s.dataTask, errData = b.back(ctx, vol, target, t0, []string{"sh", "-c", fmt.Sprintf(w.check, token)}, fmt.Sprintf(w.want, token))
	}()
	go func() {
		defer wg.Done()
		_, s.plain, s.plainTask, errPlain = b.back(ctx, plain, target, t0, []string{"cat", "/etc/passwd"}, "")
	}()
	wg.Wait()
	if err := errors.Join(errData, errPlain); err != nil {
		return s, err
	}

	// Restore: services gone, the node back and active.
	alive := slices.DeleteFunc(append([]string{"vps"}, homes...), func(n string) bool { return mode == "kill" && n == target })
	b.t.RemoveService(ctx, vol, alive)
	b.t.RemoveService(ctx, plain, alive)
	b.services = slices.DeleteFunc(b.services, func(x string) bool { return x == vol || x == plain })
	if mode == "kill" {
		if _, err := b.t.Script(ctx, "engine-start", target); err != nil {
			return s, err
		}
		b.killed = slices.DeleteFunc(b.killed, func(x string) bool { return x == target })
	}
	if _, err := b.t.Docker(ctx, "vps", "node", "update", "--availability", "active", target); err != nil {
		return s, err
	}
	if err := b.t.WaitReady(ctx, target, 90*time.Second); err != nil {
		return s, err
	}
	// Let the restarted node's plugins settle before the next round.
	return s, swarmtopo.Sleep(ctx, 3*time.Second)
}

// replicaFile is where a node holds file of the volume whose directory is
// dir: a files volume's replicated folder, or a snapshot volume's newest
// complete generation.
func replicaFile(dir, file string) string {
	if _, err := os.Stat(filepath.Join(dir, "replica")); err == nil {
		return filepath.Join(dir, "replica", "data", file)
	}
	gens, _ := filepath.Glob(filepath.Join(dir, "gens", "*"))
	if len(gens) == 0 {
		return filepath.Join(dir, "live", file)
	}
	slices.Sort(gens)
	return filepath.Join(gens[len(gens)-1], file)
}

// runningOn returns service's container if its task runs on node.
func (b *bench) runningOn(ctx context.Context, service, node string) (string, error) {
	ts, err := b.t.RunningTasks(ctx, service)
	if err != nil {
		return "", err
	}
	for _, t := range ts {
		if t.Node == node && t.State == "Running" {
			c, err := b.t.Container(ctx, node, service)
			if err == nil && c == "" {
				err = fmt.Errorf("no container of %s on %s yet", service, node)
			}
			return c, err
		}
	}
	return "", fmt.Errorf("%s not running on %s: %v", service, node, ts)
}

// back polls service until a task of it runs on a node other than from and
// an exec of argv in it prints want (anything when want is empty); it
// returns that node, the seconds since t0, and the seconds from t0 to the
// engine's timestamp of the task running.
func (b *bench) back(ctx context.Context, service, from string, t0 time.Time, argv []string, want string) (string, float64, float64, error) {
	var node string
	var ready time.Time
	var taskID string
	err := swarmtopo.Poll(ctx, b.c.timeout, 100*time.Millisecond, func() error {
		ts, err := b.t.RunningTasks(ctx, service)
		if err != nil {
			return err
		}
		for _, t := range ts {
			if t.Node == from || t.State != "Running" {
				continue
			}
			c, err := b.t.Container(ctx, t.Node, service)
			if err != nil || c == "" {
				return fmt.Errorf("no container on %s yet (%v)", t.Node, err)
			}
			out, err := b.t.Docker(ctx, t.Node, append([]string{"exec", c}, argv...)...)
			if err != nil {
				return err
			}
			if want != "" && out != want {
				return fmt.Errorf("%s on %s reads %q, want %q", service, t.Node, out, want)
			}
			node, ready, taskID = t.Node, time.Now(), t.ID
			return nil
		}
		return fmt.Errorf("tasks %v", ts)
	})
	if err != nil {
		return "", 0, 0, fmt.Errorf("%s back on another node: %w", service, err)
	}
	task := math.NaN()
	if ts, err := b.t.Docker(ctx, "vps", "inspect", "--type", "task", "--format", "{{.Status.Timestamp.Format \"2006-01-02T15:04:05.999999999Z07:00\"}}", taskID); err == nil {
		if at, err := time.Parse(time.RFC3339Nano, ts); err == nil {
			task = at.Sub(t0).Seconds()
		}
	}
	return node, ready.Sub(t0).Seconds(), task, nil
}

// cleanup removes what a failed run left: services, holds, drained or
// killed nodes.
func (b *bench) cleanup() {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	for _, n := range b.killed {
		b.t.Script(ctx, "engine-start", n)
	}
	for _, svc := range b.services {
		b.t.RemoveService(ctx, svc, append([]string{"vps"}, homes...))
	}
	for _, n := range homes {
		b.t.Docker(ctx, "vps", "node", "update", "--label-rm", holdLabel, n)
		b.t.Docker(ctx, "vps", "node", "update", "--availability", "active", n)
	}
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// rows turns the rounds into result rows: per event, failover with data
// against the plain service's reschedule (ratio plain/with-data, > 1 when
// the data's service is faster), the per-round overhead, and the anchor's
// own figure.
func rows(samples map[string][]sample) []schema.Row {
	var rs []schema.Row
	for _, key := range []string{"token drain", "token kill", "sqlite drain", "sqlite kill"} {
		ss := samples[key]
		if len(ss) == 0 {
			continue
		}
		wl, mode, _ := strings.Cut(key, " ")
		w := workloads[wl]
		what := "`cat /data/token` in it printing the token written before the event (the syncvol volume followed)"
		if wl == "sqlite" {
			what = "SQLite in it (committing ~100 transactions of 4 KB a second, WAL, synchronous=FULL, image from Debian's packages) opening after its own crash recovery, passing `PRAGMA integrity_check` and holding the row marked before the event"
		}
		var data, plain, over, dataTask, plainTask []float64
		var moves []string
		for _, s := range ss {
			data = append(data, s.withData)
			plain = append(plain, s.plain)
			over = append(over, s.withData-s.plain)
			dataTask = append(dataTask, s.dataTask)
			plainTask = append(plainTask, s.plainTask)
			moves = append(moves, s.from+"→"+s.to)
		}
		d, p := schema.Median(data), schema.Median(plain)
		event := map[string]string{
			"drain": "`docker node update --availability drain` issued",
			"kill":  "`scripts/topo.sh engine-stop NODE --kill` issued (dockerd, containerd, plugins and containers SIGKILLed; Swarm must first notice the node is down)",
		}[mode]
		met := d <= p+2
		anchor := "Swarm reschedule (plain service, " + mode + ")"
		plainRow := []schema.Row{schema.Row{Name: "Swarm reschedule (plain service, " + mode + ")", Metric: "p50", Unit: "s",
			Value: schema.Round(p, 2), Samples: schema.RoundAll(plain, 3)}}
		if wl != "token" {
			plainRow = nil // the anchor row is the token rounds'; here it is in the ratio
		}
		rs = append(rs,
			schema.Row{Name: "failover with " + w.label + ", " + mode, Metric: "p50", Unit: "s", Value: schema.Round(d, 2),
				Anchor: anchor, AnchorValue: schema.Round(p, 2), Ratio: schema.Round(p/d, 3),
				Target: "≤ Swarm reschedule + 2 s", Met: &met, Samples: schema.RoundAll(data, 3),
				Note: fmt.Sprintf("%d rounds (%s); from %s to the service's task running on another home node and %s; anchor: a plain busybox service without a volume on the same node, moved by the same event, polled in parallel until its new task answers an exec. Both: one replica, constraint node.labels.location==home, --restart-delay 1s; engines' timestamps of the tasks running (median) %.2f s with data, %.2f s plain",
					len(ss), strings.Join(moves, ", "), event, what, schema.Median(dataTask), schema.Median(plainTask))},
			schema.Row{Name: "failover overhead of " + overhead(w) + " (with data − plain), " + mode, Metric: "p50", Unit: "s",
				Value: schema.Round(schema.Median(over), 2), Target: "≤ 2 s", Samples: schema.RoundAll(over, 3)},
		)
		rs = append(rs, plainRow...)
	}
	return rs
}

// overhead names what the overhead row is of ("the data" for the token,
// as the rows were named before there were other workloads).
func overhead(w workload) string {
	if w.label == "data" {
		return "the data"
	}
	return w.label
}

func printSummary(r schema.Result, out string) {
	fmt.Println()
	for _, row := range r.Rows {
		line := fmt.Sprintf("%-46s %-26s %7.2f %s", row.Name, row.Metric, row.Value, row.Unit)
		if row.Anchor != "" {
			line += fmt.Sprintf("  vs %s %.2f %s (ratio %.2f×)", row.Anchor, row.AnchorValue, row.Unit, row.Ratio)
		}
		if row.Met != nil {
			line += fmt.Sprintf("  target %s: %v", row.Target, *row.Met)
		}
		fmt.Println(line)
	}
	fmt.Printf("\nmachine: %s\nwritten: %s\n", r.Machine, out)
}
