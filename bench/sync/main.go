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
	"context"
	"crypto/sha256"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/homeswarm/homeswarm/bench/schema"
	"github.com/homeswarm/homeswarm/bench/swarmtopo"
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
	loadStart := loadAvg1()
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
		log.Printf("syncvol/rsync = %.2f (medians); total bench time %v", schema.Median(*svPush.out)/schema.Median(*rsPush.out), time.Since(started).Round(time.Second))
		return nil
	}
	svLat, err := smallFiles(ctx, c, sv.a, sv.b, c.nSyncvol, 15*time.Second)
	if err != nil {
		return fmt.Errorf("syncvol: %w", err)
	}
	log.Printf("syncvol: small p50=%.3fs p99=%.3fs", schema.Pct(svLat, 50), schema.Pct(svLat, 99))
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
		log.Printf("syncthing defaults: p50=%.3fs p99=%.3fs", schema.Pct(defLat, 50), schema.Pct(defLat, 99))
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
	log.Printf("syncthing tuned: p50=%.3fs p99=%.3fs", schema.Pct(tunLat, 50), schema.Pct(tunLat, 99))

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
		Machine: fmt.Sprintf("%s; load average (1 min) %s at start, %s at end (the machine is shared)", machine(c), loadStart, loadAvg1())}
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
		log.Printf("large file %-18s median %.1f MB/s", p.name, schema.Median(*p.out))
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

// machine describes the machine and the anchors' versions, for the
// result's machine field.
func machine(c config) string {
	return fmt.Sprintf("%s/%s, %s, %s, loopback 127.0.0.1; anchors: syncthing %s, rsync daemon",
		runtime.GOOS, runtime.GOARCH, swarmtopo.Host(), runtime.Version(), syncthing.Version(c.syncthing))
}

// loadAvg1 is the 1-minute load average, since other work on the machine
// skews every figure.
func loadAvg1() string { return strings.Fields(swarmtopo.LoadAvg())[0] }
