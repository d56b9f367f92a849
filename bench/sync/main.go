// Command sync measures syncvol's replication side by side with its anchors
// in one run, on this machine over loopback (127.0.0.1 only):
//
//   - syncvol: two syncengine.Engine instances (node A, node B) sharing one
//     volume. Small files are written on A one at a time; each one's
//     propagation latency is the time from the start of its write until B's
//     copy has the right content (B's directory polled every -poll). Then a
//     large file is written on A and timed until it is complete on B.
//   - plain Syncthing: a pair of /usr/bin/syncthing processes (Debian's
//     package) with generated homes sharing one folder, first at their
//     defaults (fsWatcherDelayS=10), then tuned (fsWatcherDelayS=1), same
//     small-file method; the tuned pair also moves the large file.
//   - rsync: the large file pushed to an rsync daemon on 127.0.0.1.
//
// Every latency is measured the same way: write one file, wait until it is
// on the other side, pause -gap (as an application between requests), next.
// The result is written as JSON in the shared bench schema (see
// bench/README.md). Everything runs in a temporary directory that is removed
// at the end; every child process is killed when the bench ends or dies.
package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"github.com/homeswarm/homeswarm/bench/schema"
	"log"
	"math"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/homeswarm/homeswarm/volumedriver/syncengine"

	"github.com/homeswarm/homeswarm/bench/syncthing"
)

const (
	anchorDefaults = "syncthing defaults"
	anchorTuned    = "syncthing fsWatcherDelayS=1"
	anchorRsync    = "rsync daemon"
)

type config struct {
	out         string
	nSyncvol    int
	nDefaults   int
	nTuned      int
	gap         time.Duration
	poll        time.Duration
	smallSize   int
	largeMiB    int
	largeRuns   int
	syncthing   string
	rsync       string
	keep        bool
	skipDefault bool
	largeOnly   bool
	cpuProfile  string
}

func main() {
	var c config
	flag.StringVar(&c.out, "out", "bench/results/sync.json", "where to write the JSON result")
	flag.IntVar(&c.nSyncvol, "n", 60, "small files written on syncvol")
	flag.IntVar(&c.nDefaults, "n-defaults", 10, "small files for plain Syncthing at defaults (~10 s each)")
	flag.IntVar(&c.nTuned, "n-tuned", 50, "small files for plain Syncthing with fsWatcherDelayS=1")
	flag.DurationVar(&c.gap, "gap", 150*time.Millisecond, "pause between two small-file writes")
	flag.DurationVar(&c.poll, "poll", 5*time.Millisecond, "poll interval of the receiving directory")
	flag.IntVar(&c.smallSize, "small-size", 1024, "size of a small file in bytes")
	flag.IntVar(&c.largeMiB, "large-mib", 256, "size of the large file in MiB")
	flag.IntVar(&c.largeRuns, "large-runs", 3, "large-file rounds (each moves a fresh file over every system)")
	flag.StringVar(&c.syncthing, "syncthing", "/usr/bin/syncthing", "plain Syncthing binary")
	flag.StringVar(&c.rsync, "rsync", "rsync", "rsync binary")
	flag.BoolVar(&c.keep, "keep", false, "keep the work directory (for debugging)")
	flag.BoolVar(&c.skipDefault, "skip-defaults", false, "skip plain Syncthing at defaults (saves ~2 min)")
	flag.BoolVar(&c.largeOnly, "large-only", false, "only the large-file rounds of syncvol and rsync (no small files, no plain Syncthing); prints figures, writes no JSON")
	flag.StringVar(&c.cpuProfile, "cpuprofile", "", "write CPU profiles of this process (both syncvol engines) while syncvol moves the large file, one per round: FILE.0, FILE.1, …")
	flag.Parse()
	log.SetFlags(log.Ltime | log.Lmicroseconds)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, c); err != nil {
		log.Printf("bench sync: %v", err)
		stop()
		os.Exit(1)
	}
}

// result is the shared bench schema (package schema).
type result = schema.Result

// row is the shared bench schema (package schema).
type row = schema.Row

func run(ctx context.Context, c config) (err error) {
	work, err := os.MkdirTemp("", "bs-sync-")
	if err != nil {
		return err
	}
	if c.keep {
		log.Printf("work dir %s kept", work)
	} else {
		defer os.RemoveAll(work)
	}
	// The embedded Syncthing logs to stdout (captured at its init): send
	// that to a file; the bench itself logs to stderr.
	engineLog := filepath.Join(work, "engine.log")
	if f, err := os.Create(engineLog); err == nil {
		_ = syscall.Dup3(int(f.Fd()), 1, 0)
		f.Close()
	}
	defer func() {
		if err != nil {
			if out, rerr := os.ReadFile(engineLog); rerr == nil {
				log.Printf("engine log:\n%s", tail(out, 4000))
			}
		}
	}()

	started := time.Now()
	loadStart := loadAvg()
	// a) syncvol: small files on the pair as shipped (fsync on); a second
	// pair with fsync off joins the large-file rounds as a diagnostic.
	log.Printf("syncvol: starting two engines on 127.0.0.1")
	sv, err := startSyncvol(ctx, c, filepath.Join(work, "syncvol"), false)
	if err != nil {
		return fmt.Errorf("syncvol: %w", err)
	}
	defer sv.close()
	rs, err := startRsync(ctx, c, filepath.Join(work, "rsync"))
	if err != nil {
		return fmt.Errorf("rsync: %w", err)
	}
	defer rs.close()
	var svCPU, svWait []float64
	svPush := pusher{"syncvol", func(d []byte, h [32]byte) (float64, error) {
		return syncPush(ctx, c, sv.a, sv.b, d, h, &svCPU, &svWait)
	}, new([]float64)}
	rsPush := pusher{"rsync", func(d []byte, h [32]byte) (float64, error) { return rs.push(ctx, d, h, "-a") }, new([]float64)}
	if c.largeOnly {
		if err := largeRounds(c, []pusher{svPush, rsPush}); err != nil {
			return err
		}
		log.Printf("syncvol/rsync = %.2f (medians); total bench time %v", median(*svPush.out)/median(*rsPush.out), time.Since(started).Round(time.Second))
		return nil
	}
	svLat, err := smallFiles(ctx, c, sv.a, sv.b, c.nSyncvol, 15*time.Second)
	if err != nil {
		return fmt.Errorf("syncvol: %w", err)
	}
	log.Printf("syncvol: small p50=%.3fs p99=%.3fs", pct(svLat, 50), pct(svLat, 99))
	svNo, err := startSyncvol(ctx, c, filepath.Join(work, "syncvol-nofsync"), true)
	if err != nil {
		return fmt.Errorf("syncvol (fsync off): %w", err)
	}
	defer svNo.close()

	// b) plain Syncthing, defaults then tuned.
	var defLat []float64
	if !c.skipDefault {
		log.Printf("syncthing defaults: %d small files (~10 s each)", c.nDefaults)
		st, err := syncthing.Start(ctx, c.syncthing, filepath.Join(work, "st-defaults", "a"), filepath.Join(work, "st-defaults", "b"), 0, c.poll)
		if err != nil {
			return fmt.Errorf("syncthing defaults: %w", err)
		}
		defLat, err = smallFiles(ctx, c, st.A.Dir, st.B.Dir, c.nDefaults, 90*time.Second)
		st.Close(err)
		if err != nil {
			return fmt.Errorf("syncthing defaults: %w", err)
		}
		log.Printf("syncthing defaults: p50=%.3fs p99=%.3fs", pct(defLat, 50), pct(defLat, 99))
	}
	log.Printf("syncthing fsWatcherDelayS=1: %d small files", c.nTuned)
	st, err := syncthing.Start(ctx, c.syncthing, filepath.Join(work, "st-tuned", "a"), filepath.Join(work, "st-tuned", "b"), 1, c.poll)
	if err != nil {
		return fmt.Errorf("syncthing tuned: %w", err)
	}
	defer func() { st.Close(err) }()
	tunLat, err := smallFiles(ctx, c, st.A.Dir, st.B.Dir, c.nTuned, 90*time.Second)
	if err != nil {
		return fmt.Errorf("syncthing tuned: %w", err)
	}
	log.Printf("syncthing tuned: p50=%.3fs p99=%.3fs", pct(tunLat, 50), pct(tunLat, 99))

	// c) the large-file rounds: every system moves the same fresh file in
	// turn, so they share the machine's conditions.
	pushers := []pusher{
		svPush,
		rsPush,
		{"syncthing tuned", func(d []byte, h [32]byte) (float64, error) {
			return syncPush(ctx, c, st.A.Dir, st.B.Dir, d, h, nil, nil)
		}, new([]float64)},
		{"rsync --fsync", func(d []byte, h [32]byte) (float64, error) { return rs.push(ctx, d, h, "-a", "--fsync") }, new([]float64)},
		{"syncvol fsync off", func(d []byte, h [32]byte) (float64, error) { return syncPush(ctx, c, svNo.a, svNo.b, d, h, nil, nil) }, new([]float64)},
	}
	if err := largeRounds(c, pushers); err != nil {
		return err
	}
	log.Printf("total bench time %v", time.Since(started).Round(time.Second))
	res := result{Bench: "sync", Date: time.Now().UTC().Format(time.RFC3339),
		Machine: fmt.Sprintf("%s; load average (1 min) %s at start, %s at end (the machine is shared)", machine(), loadStart, loadAvg())}
	res.Rows = buildRows(c, measures{svLat, defLat, tunLat,
		*pushers[0].out, *pushers[4].out, *pushers[2].out, *pushers[1].out, *pushers[3].out, svCPU, svWait})
	if err := schema.Write(c.out, res); err != nil {
		return err
	}
	log.Printf("wrote %s", c.out)
	return nil
}

// pusher moves one large file with one system and returns MB/s; out
// collects its rounds.
type pusher struct {
	name string
	push func(data []byte, sum [32]byte) (float64, error)
	out  *[]float64
}

// largeRounds moves one fresh large file per round with every pusher in
// turn (so they share the machine's conditions), appending each MB/s to its
// out. With -cpuprofile, this process (both engines of the pair) is
// profiled while the first pusher (syncvol) runs, one file per round
// (<path>.<round>; `go tool pprof` merges them).
func largeRounds(c config, pushers []pusher) error {
	large := make([]byte, c.largeMiB<<20)
	for r := 0; r < c.largeRuns; r++ {
		fillRandom(large) // fresh content: no receiver can reuse blocks
		sum := sha256.Sum256(large)
		for i, p := range pushers {
			var stopProfile func()
			if c.cpuProfile != "" && i == 0 {
				var err error
				if stopProfile, err = startProfile(fmt.Sprintf("%s.%d", c.cpuProfile, r)); err != nil {
					return err
				}
			}
			mbs, err := p.push(large, sum)
			if stopProfile != nil {
				stopProfile()
			}
			if err != nil {
				return fmt.Errorf("large file, %s: %w", p.name, err)
			}
			log.Printf("  round %d %-18s %6.1f MB/s", r, p.name, mbs)
			*p.out = append(*p.out, mbs)
		}
	}
	for _, p := range pushers {
		log.Printf("large file %-18s median %.1f MB/s", p.name, median(*p.out))
	}
	return nil
}

func startProfile(path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}

// buildRows turns the measurements into the schema's rows: one per
// (metric, anchor) pair, then the anchors' raw figures.
type measures struct {
	svLat, defLat, tunLat                      []float64 // small-file latencies, s
	svTput, svNoSync, tunTput, rsTput, rsFsync []float64 // large-file MB/s
	svCPU, svWait                              []float64 // syncvol CPU and run-queue wait per large file, s
}

func buildRows(c config, m measures) []row {
	svLat, defLat, tunLat := m.svLat, m.defLat, m.tunLat
	lat := func(p float64, anchor string, anchorLat []float64, target, note string) row {
		v, a := pct(svLat, p), pct(anchorLat, p)
		return row{Name: "syncvol small-file propagation", Metric: fmt.Sprintf("p%g", p), Unit: "s",
			Value: round(v, 4), Anchor: anchor, AnchorValue: round(a, 4), Ratio: round(a/v, 2),
			Target: target, Samples: svLat, Note: note}
	}
	method := fmt.Sprintf("%d × %d B files written one at a time on A, %v apart; latency = write start → right content on B (polled every %v)",
		len(svLat), c.smallSize, c.gap, c.poll)
	var rows []row
	if len(defLat) > 0 {
		rows = append(rows, lat(50, anchorDefaults, defLat, "p50 < 0.2 s", method))
	}
	rows = append(rows, lat(50, anchorTuned, tunLat, "p50 < 0.2 s", method))
	if len(defLat) > 0 {
		rows = append(rows, lat(99, anchorDefaults, defLat, "p99 < 1 s", ""))
	}
	rows = append(rows, lat(99, anchorTuned, tunLat, "p99 < 1 s", ""))

	svTput, tunTput, rsTput := m.svTput, m.tunTput, m.rsTput
	sv, rs, tun := median(svTput), median(rsTput), median(tunTput)
	svNo, rsF := median(m.svNoSync), median(m.rsFsync)
	tputNote := fmt.Sprintf("one fresh %d MiB random file per round, moved in turn by every system (syncvol, rsync, Syncthing tuned, rsync --fsync, syncvol fsync off); median of %d rounds. syncvol: write start on A → complete on B, fsync on as shipped; rsync: `rsync -a` push to a daemon on 127.0.0.1, no fsync",
		c.largeMiB, len(svTput))
	rows = append(rows,
		row{Name: "syncvol large-file throughput", Metric: "throughput", Unit: "MB/s", Value: round(sv, 1),
			Anchor: anchorRsync, AnchorValue: round(rs, 1), Ratio: round(sv/rs, 2), Target: "≥ 0.8× rsync",
			Samples: svTput, Note: tputNote},
		row{Name: "syncvol large-file throughput", Metric: "throughput", Unit: "MB/s", Value: round(sv, 1),
			Anchor: anchorRsync + " --fsync", AnchorValue: round(rsF, 1), Ratio: round(sv/rsF, 2), Samples: svTput,
			Note: "informative: rsync made as durable as syncvol (fsync after each file)"},
		row{Name: "syncvol large-file throughput", Metric: "throughput", Unit: "MB/s", Value: round(sv, 1),
			Anchor: anchorTuned, AnchorValue: round(tun, 1), Ratio: round(sv/tun, 2), Samples: svTput},
		row{Name: "syncvol large-file throughput, fsync off", Metric: "throughput", Unit: "MB/s", Value: round(svNo, 1),
			Anchor: anchorRsync, AnchorValue: round(rs, 1), Ratio: round(svNo/rs, 2), Samples: m.svNoSync,
			Note: "diagnostic: engines with DisableFsync, to separate the cost of fsync from the rest of the pipeline"},
	)

	raw := func(name, metric, unit string, v float64, samples []float64, note string) row {
		return row{Name: name, Metric: metric, Unit: unit, Value: round(v, 4), Samples: samples, Note: note}
	}
	if len(defLat) > 0 {
		note := fmt.Sprintf("anchor: %d samples only (each waits the 10 s watcher delay), so p99 is the maximum", len(defLat))
		rows = append(rows,
			raw("syncthing defaults small-file propagation", "p50", "s", pct(defLat, 50), defLat, note),
			raw("syncthing defaults small-file propagation", "p99", "s", pct(defLat, 99), nil, ""))
	}
	rows = append(rows,
		raw("syncthing fsWatcherDelayS=1 small-file propagation", "p50", "s", pct(tunLat, 50), tunLat,
			fmt.Sprintf("anchor: %d samples, same method as syncvol", len(tunLat))),
		raw("syncthing fsWatcherDelayS=1 small-file propagation", "p99", "s", pct(tunLat, 99), nil, ""),
		raw("syncthing fsWatcherDelayS=1 large-file throughput", "throughput", "MB/s", round(tun, 1), tunTput, ""),
		raw("rsync daemon large-file throughput", "throughput", "MB/s", round(rs, 1), rsTput, ""),
		raw("rsync daemon --fsync large-file throughput", "throughput", "MB/s", round(rsF, 1), m.rsFsync, ""),
		raw("syncvol large-file CPU", "CPU per file", "s", round(median(m.svCPU), 2), m.svCPU,
			fmt.Sprintf("diagnostic: user+system CPU of the bench process (both engines, and the write on A) from write start to complete on B, per large file, median of the rounds; its threads also waited a median %.2f s per file for a CPU (run queue), as the machine is shared", median(m.svWait))),
	)
	return rows
}

// ---------------------------------------------------------------- syncvol

type svPair struct {
	a, b  string // the volume's directory on node A and node B
	close func()
}

// startSyncvol starts two engines on 127.0.0.1, B dialling A, and one
// volume created on A; it returns once a first file has reached B.
func startSyncvol(ctx context.Context, c config, dir string, noFsync bool) (*svPair, error) {
	lg := logrus.New()
	lg.SetLevel(logrus.WarnLevel)
	var engines []*syncengine.Engine
	p := &svPair{close: func() {
		for _, e := range engines {
			e.Close()
		}
	}}
	newNode := func(name string, peers ...string) (*syncengine.Engine, error) {
		d := filepath.Join(dir, name)
		e, err := syncengine.New(syncengine.Options{
			StateDir:          filepath.Join(d, "state"),
			ListenAddr:        "127.0.0.1:0",
			ClusterKey:        "bench-sync-key",
			Peers:             peers,
			DeviceName:        name,
			VolumeDir:         func(v string) string { return filepath.Join(d, "vols", v) },
			Logger:            lg.WithField("node", name),
			ReconnectInterval: time.Second,
			DisableFsync:      noFsync,
		})
		if err != nil {
			return nil, err
		}
		engines = append(engines, e)
		return e, e.Start(ctx)
	}
	fail := func(err error) (*svPair, error) {
		p.close()
		return nil, err
	}
	a, err := newNode("a")
	if err != nil {
		return fail(err)
	}
	if _, err := newNode("b", a.ListenAddr()); err != nil {
		return fail(err)
	}
	const vol = "bench"
	p.a, p.b = filepath.Join(dir, "a", "vols", vol), filepath.Join(dir, "b", "vols", vol)
	if err := writeFile(filepath.Join(p.a, "warmup"), []byte("warm")); err != nil {
		return fail(err)
	}
	if err := a.AddVolume(vol, p.a, nil); err != nil {
		return fail(err)
	}
	if _, err := waitContent(ctx, filepath.Join(p.b, "warmup"), []byte("warm"), c.poll, 60*time.Second); err != nil {
		return fail(fmt.Errorf("volume never reached B: %w", err))
	}
	return p, nil
}

// smallFiles writes n files in src one at a time and times each until it is
// in dst with the right content.
func smallFiles(ctx context.Context, c config, src, dst string, n int, timeout time.Duration) ([]float64, error) {
	rnd := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	var out []float64
	for i := 0; i < n; i++ {
		rel := filepath.Join(fmt.Sprintf("d%d", i%4), fmt.Sprintf("f%03d.txt", i))
		data := make([]byte, c.smallSize)
		for j := range data {
			data[j] = 'a' + byte(rnd.IntN(26))
		}
		start := time.Now()
		if err := writeFile(filepath.Join(src, rel), data); err != nil {
			return nil, err
		}
		if _, err := waitContent(ctx, filepath.Join(dst, rel), data, c.poll, timeout); err != nil {
			return nil, fmt.Errorf("small file %d: %w", i, err)
		}
		out = append(out, round(time.Since(start).Seconds(), 4))
		if err := sleep(ctx, c.gap); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// syncPush writes data as a new file in src and times it until the file
// in dst has its full size: the receivers write a temporary name and rename
// it at the end, so the full-size final name means complete. The content
// is verified after the clock stops; then the file is deleted on both
// sides. It returns MB/s (10^6 bytes); with cpuOut and waitOut it appends
// the CPU seconds this process used until complete and the time its threads
// waited for a CPU (meaningful for syncvol, whose engines run in this
// process).
func syncPush(ctx context.Context, c config, src, dst string, data []byte, sum [32]byte, cpuOut, waitOut *[]float64) (float64, error) {
	const name = "large.bin"
	// Timeline for the log: when B's temporary file first shows (the
	// sender has scanned and announced the file, the receiver is pulling).
	tmpSeen := make(chan time.Duration, 1)
	stopWatch := make(chan struct{})
	cpu0 := cpuTime()
	flt0 := minFlt()
	wait0 := runqWait()
	start := time.Now()
	go func() {
		defer close(tmpSeen)
		for {
			select {
			case <-stopWatch:
				return
			case <-time.After(c.poll):
			}
			if ents, err := os.ReadDir(dst); err == nil {
				for _, e := range ents {
					if strings.HasPrefix(e.Name(), ".syncthing."+name) || strings.HasPrefix(e.Name(), "~syncthing~"+name) {
						tmpSeen <- time.Since(start)
						return
					}
				}
			}
		}
	}()
	if err := writeFile(filepath.Join(src, name), data); err != nil {
		close(stopWatch)
		return 0, err
	}
	written := time.Since(start)
	err := waitSize(ctx, filepath.Join(dst, name), int64(len(data)), c.poll, 3*time.Minute)
	d := time.Since(start)
	cpu, wait := cpuTime()-cpu0, runqWait()-wait0
	close(stopWatch)
	if err != nil {
		return 0, err
	}
	tmp := <-tmpSeen
	if cpuOut != nil {
		*cpuOut = append(*cpuOut, round(cpu.Seconds(), 3))
		*waitOut = append(*waitOut, round(wait.Seconds(), 3))
	}
	log.Printf("    timeline: written %.3fs, receiver's temp file %.3fs, complete %.3fs; CPU of this process %.3fs; minor faults %d; runq wait %.3fs", written.Seconds(), tmp.Seconds(), d.Seconds(), cpu.Seconds(), minFlt()-flt0, wait.Seconds())
	if err := sameSum(filepath.Join(dst, name), sum); err != nil {
		return 0, err
	}
	if err := os.Remove(filepath.Join(src, name)); err != nil {
		return 0, err
	}
	err = poll(ctx, 10*time.Millisecond, time.Minute, "deletion of "+name, func() bool {
		_, err := os.Lstat(filepath.Join(dst, name))
		return errors.Is(err, os.ErrNotExist)
	})
	return round(float64(len(data))/1e6/d.Seconds(), 1), err
}

// cpuTime is the user+system CPU time this process has used (for a
// syncvol pair: both engines, plus the bench writing and polling).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// runqWait is the time this process's threads spent runnable but waiting
// for a CPU (/proc/self/task/*/schedstat): how much the machine's other
// work held it back.
func runqWait() time.Duration {
	var sum int64
	tasks, _ := os.ReadDir("/proc/self/task")
	for _, t := range tasks {
		b, err := os.ReadFile("/proc/self/task/" + t.Name() + "/schedstat")
		if f := strings.Fields(string(b)); err == nil && len(f) >= 2 {
			n, _ := strconv.ParseInt(f[1], 10, 64)
			sum += n
		}
	}
	return time.Duration(sum)
}

// minFlt is this process's count of minor page faults: memory the kernel
// had to map afresh (the first round of a fresh process pays for its heap).
func minFlt() int64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Minflt
}

// ------------------------------------------------------------------ rsync

type rsyncd struct {
	bin      string
	src, dst string
	port     int
	cmd      *exec.Cmd
}

// startRsync starts an rsync daemon on 127.0.0.1 with one writable module.
func startRsync(ctx context.Context, c config, dir string) (*rsyncd, error) {
	r := &rsyncd{bin: c.rsync, src: filepath.Join(dir, "src"), dst: filepath.Join(dir, "dst")}
	for _, d := range []string{r.src, r.dst} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	var err error
	if r.port, err = freePort(); err != nil {
		return nil, err
	}
	conf := filepath.Join(dir, "rsyncd.conf")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(`use chroot = no
uid = %d
gid = %d
log file = %s
[bench]
    path = %s
    read only = false
`, os.Getuid(), os.Getgid(), filepath.Join(dir, "rsyncd.log"), r.dst)), 0o600); err != nil {
		return nil, err
	}
	r.cmd = exec.Command(c.rsync, "--daemon", "--no-detach", "--config="+conf, "--address=127.0.0.1", "--port="+strconv.Itoa(r.port))
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := r.cmd.Start(); err != nil {
		return nil, err
	}
	if err := waitListen(ctx, fmt.Sprintf("127.0.0.1:%d", r.port), 10*time.Second); err != nil {
		r.close()
		return nil, err
	}
	return r, nil
}

func (r *rsyncd) close() {
	_ = syscall.Kill(-r.cmd.Process.Pid, syscall.SIGKILL)
	_ = r.cmd.Wait()
}

// push writes data to the source directory (untimed, as the file already
// exists when one runs rsync), then times `rsync args… file rsync://…`
// into the module's empty directory (no delta basis). It returns MB/s.
func (r *rsyncd) push(ctx context.Context, data []byte, sum [32]byte, args ...string) (float64, error) {
	src, dst := filepath.Join(r.src, "large.bin"), filepath.Join(r.dst, "large.bin")
	if err := writeFile(src, data); err != nil {
		return 0, err
	}
	defer os.Remove(src)
	defer os.Remove(dst)
	argv := append(slices.Clone(args), src, fmt.Sprintf("rsync://127.0.0.1:%d/bench/", r.port))
	start := time.Now()
	if b, err := exec.CommandContext(ctx, r.bin, argv...).CombinedOutput(); err != nil {
		return 0, fmt.Errorf("rsync %v: %w: %s", args, err, b)
	}
	d := time.Since(start)
	if err := sameSum(dst, sum); err != nil {
		return 0, err
	}
	return round(float64(len(data))/1e6/d.Seconds(), 1), nil
}

// ---------------------------------------------------------------- helpers

func writeFile(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o644)
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// poll calls cond every interval until it is true, ctx ends or timeout.
func poll(ctx context.Context, interval, timeout time.Duration, what string, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %v waiting for %s", timeout, what)
		}
		if err := sleep(ctx, interval); err != nil {
			return err
		}
	}
	return nil
}

func waitContent(ctx context.Context, path string, want []byte, interval, timeout time.Duration) (time.Duration, error) {
	start := time.Now()
	err := poll(ctx, interval, timeout, path, func() bool {
		got, err := os.ReadFile(path)
		return err == nil && bytes.Equal(got, want)
	})
	return time.Since(start), err
}

func waitSize(ctx context.Context, path string, size int64, interval, timeout time.Duration) error {
	return poll(ctx, interval, timeout, path, func() bool {
		fi, err := os.Stat(path)
		return err == nil && fi.Size() == size
	})
}

func waitListen(ctx context.Context, addr string, timeout time.Duration) error {
	return poll(ctx, 20*time.Millisecond, timeout, addr, func() bool {
		c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

func sameSum(path string, want [32]byte) error {
	got, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if sha256.Sum256(got) != want {
		return fmt.Errorf("%s: content differs from the source", path)
	}
	return nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// fillRandom fills b with incompressible bytes, fast.
func fillRandom(b []byte) {
	var seed [32]byte
	binaryPutTime(seed[:])
	r := rand.NewChaCha8(seed)
	_, _ = r.Read(b)
}

func binaryPutTime(b []byte) {
	t := time.Now().UnixNano()
	for i := 0; i < 8; i++ {
		b[i] = byte(t >> (8 * i))
	}
}

// pct is the nearest-rank percentile p (0–100) of xs.
func pct(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func round(x float64, digits int) float64 {
	p := math.Pow(10, float64(digits))
	return math.Round(x*p) / p
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

func machine() string {
	cpu := ""
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "model name") {
				cpu = strings.TrimSpace(l[strings.Index(l, ":")+1:])
				break
			}
		}
	}
	var u syscall.Utsname
	kernel := ""
	if syscall.Uname(&u) == nil {
		kernel = utsString(u.Release[:])
	}
	st, _ := exec.Command("/usr/bin/syncthing", "--version").Output()
	stv := strings.Fields(string(st))
	ver := ""
	if len(stv) > 1 {
		ver = stv[1]
	}
	return fmt.Sprintf("%s/%s, %d CPUs (%s), Linux %s, %s, loopback 127.0.0.1; anchors: syncthing %s, rsync daemon",
		runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), cpu, kernel, runtime.Version(), ver)
}

// loadAvg is the 1-minute load average, since other work on the machine
// skews every figure.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); err == nil && len(f) > 0 {
		return f[0]
	}
	return "?"
}

func utsString(b []int8) string {
	var s []byte
	for _, c := range b {
		if c == 0 {
			break
		}
		s = append(s, byte(c))
	}
	return string(s)
}
