// Command dblag measures replication lag under a live database, and what a
// crash of the writer costs, for three systems side by side in one run on
// this machine over loopback (127.0.0.1 only):
//
//   - syncvol snapshot volumes (package volumedriver/snapvol): three
//     in-process nodes, each on its own btrfs (an image on a loop device),
//     at the shipped Interval (200 ms) and Lease (8 s); the database lives
//     in the writer's live directory (Node.Acquire on node 0), node 1 is
//     the receiver that is measured and takes over after the crash (three
//     nodes, so that node 1 and node 2 are a majority without node 0);
//   - plain Syncthing (Debian's package, package bench/syncthing): two
//     processes sharing one folder, fsWatcherDelayS=1 (its best tuned
//     setting, bench/sync);
//   - lsyncd (Debian's package): inotify-driven rsync of the writer's
//     directory into a second directory, delay 0.
//
// The senders' directories sit on the first btrfs, the receivers' on the
// second, so every system's database pays the same fsync.
//
// The workload is the same for each: Debian's sqlite3 CLI reading SQL from
// a pipe (WAL mode, synchronous=FULL), one transaction every 1/-rate s,
// each inserting a row (id N, a -blob-byte random blob) and updating an
// older one, then printing "ack|N" after COMMIT; the ack's time is when
// this program reads that line. Meanwhile the receiver is probed every
// -probe: its copy (snapvol: the newest complete generation of node 1;
// the others: the receiving folder) is copied (db and -wal, a reflink on
// btrfs) into a scratch directory and opened with sqlite3, which replays
// the WAL as a restarted database would; the copy's max(id) is the newest
// commit visible there. A commit's lag is the end of the first copy in
// which it is visible minus its ack. After -load, the writer crashes: the
// sqlite3 process is SIGKILLed together with the sender (snapvol: node 0
// is Closed without Release; Syncthing: the sending process; lsyncd:
// lsyncd and its rsync). After -settle the receiver's copy is checked
// (opens? PRAGMA integrity_check? acked rows missing, age of the oldest
// missing ack); recovery is the time from the crash until a copy the next
// database would use opens and passes the check (snapvol: Acquire on node
// 1, then sqlite3 on its live directory; the others: the receiving folder,
// copied and checked every -probe). Each of -rounds rounds runs the three
// systems in turn, so they share the machine's conditions; figures are the
// medians of the rounds. The result is written in the shared bench schema.
package main

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"math"
	"math/big"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/homeswarm/homeswarm/bench/schema"
	"github.com/homeswarm/homeswarm/bench/swarmtopo"
	"github.com/homeswarm/homeswarm/bench/syncthing"
	"github.com/homeswarm/homeswarm/volumedriver/snapvol"
)

// The systems, as the rows name them.
const (
	sysSnapvol   = "syncvol snapshots"
	sysSyncthing = "syncthing fsWatcherDelayS=1"
	sysLsyncd    = "lsyncd delay 0"
)

// dbName is the database file in each writer's directory.
const dbName = "bench.db"

type config struct {
	out       string
	rounds    int
	rate      float64
	blob      int
	load      time.Duration
	warm      time.Duration
	tail      time.Duration
	settle    time.Duration
	probe     time.Duration
	recoverTO time.Duration
	interval  time.Duration
	lease     time.Duration
	sqlite    string
	syncthing string
	lsyncd    string
	systems   string
	keep      bool
}

func main() {
	var c config
	flag.StringVar(&c.out, "out", "bench/results/dblag.json", "where to write the JSON result (empty: none)")
	flag.IntVar(&c.rounds, "rounds", 3, "rounds (each runs every system once)")
	flag.Float64Var(&c.rate, "rate", 200, "transactions per second offered to the database")
	flag.IntVar(&c.blob, "blob", 32768, "bytes of random blob per inserted row (32 KiB at 200/s: 6.5 MB/s, the issue's ≥ 5 MB/s)")
	flag.DurationVar(&c.load, "load", 15*time.Second, "how long the database runs before the crash")
	flag.DurationVar(&c.warm, "warm", 2*time.Second, "commits of the first this long are not counted in the lag")
	flag.DurationVar(&c.tail, "tail", 3*time.Second, "commits of the last this long before the crash are not counted in the lag (they are what a crash loses)")
	flag.DurationVar(&c.settle, "settle", 3*time.Second, "wait after the crash before checking the receiver's copy")
	flag.DurationVar(&c.probe, "probe", 50*time.Millisecond, "interval between two probes of the receiver")
	flag.DurationVar(&c.recoverTO, "recover-timeout", 20*time.Second, "give up on recovery after this long")
	flag.DurationVar(&c.interval, "interval", 0, "snapvol Interval (0: its default, 200ms, as shipped)")
	flag.DurationVar(&c.lease, "lease", 0, "snapvol Lease (0: its default, 8s, as shipped)")
	flag.StringVar(&c.sqlite, "sqlite3", "sqlite3", "sqlite3 CLI")
	flag.StringVar(&c.syncthing, "syncthing", syncthing.Bin, "plain Syncthing binary")
	flag.StringVar(&c.lsyncd, "lsyncd", "lsyncd", "lsyncd binary")
	flag.StringVar(&c.systems, "systems", "snapvol,syncthing,lsyncd", "which systems to run (a subset writes no JSON)")
	flag.BoolVar(&c.keep, "keep", false, "keep the work directory and its btrfs mounts (for debugging)")
	flag.Parse()
	log.SetFlags(log.Ltime | log.Lmicroseconds)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, c); err != nil {
		log.Printf("bench dblag: %v", err)
		stop()
		os.Exit(1)
	}
}

// system is one replication setup for one round.
type system interface {
	// start sets it up and returns the writer's directory.
	start(ctx context.Context, round int) (string, error)
	// copyReceiver copies the receiver's database files into dst (empty).
	copyReceiver(dst string) error
	// crash kills the sender, as its node dying would.
	crash()
	// recoverDB returns the directory the next database would open, once
	// it can (snapvol: after Acquire on the receiver); "" means the
	// receiver's folder, copied by copyReceiver.
	recoverDB(ctx context.Context) (string, error)
	close()
}

// roundResult is one system's figures from one round.
type roundResult struct {
	lags      []float64 // s, per window commit; censored ones hold their lower bound
	censored  int       // window commits never visible before the crash
	commits   int       // acked commits
	rate      float64   // commits/s achieved
	opens     bool      // the settled copy opened and passed integrity_check
	lost      float64   // acked commits missing from the settled copy
	oldest    float64   // s from the oldest missing ack to the crash
	recovery  float64   // s from the crash to a copy that passes; NaN: never
	recovered string    // what recovery found (lost commits there)
	probes    int
	unread    int     // probes whose copy did not open
	period    float64 // s, median time between two probes
	recNever  bool    // no copy passed within -recover-timeout (recovery holds it)
}

func run(ctx context.Context, c config) error {
	need := []string{c.sqlite, "stdbuf", "mkfs.btrfs"}
	if strings.Contains(c.systems, "lsyncd") {
		need = append(need, c.lsyncd, "rsync")
	}
	if strings.Contains(c.systems, "syncthing") {
		need = append(need, c.syncthing)
	}
	for _, bin := range need {
		if _, err := exec.LookPath(bin); err != nil {
			return fmt.Errorf("needs %s (bench/dblag.sh installs sqlite3, syncthing, lsyncd, rsync, btrfs-progs): %w", bin, err)
		}
	}
	if os.Geteuid() != 0 {
		return errors.New("needs root (loop devices, btrfs)")
	}
	work, err := os.MkdirTemp("", "bs-dblag-")
	if err != nil {
		return err
	}
	var mounts []string
	defer func() {
		if c.keep {
			log.Printf("work dir %s kept (mounts %v)", work, mounts)
			return
		}
		for _, m := range mounts {
			exec.Command("umount", "-l", m).Run()
		}
		os.RemoveAll(work)
	}()
	for i := 0; i < 3; i++ {
		m, err := btrfsMount(work, i)
		if err != nil {
			return err
		}
		mounts = append(mounts, m)
	}
	// The snapvol nodes log to a file; warnings only.
	lf, err := os.Create(filepath.Join(work, "snapvol.log"))
	if err != nil {
		return err
	}
	defer lf.Close()
	lg := logrus.New()
	lg.SetOutput(lf)
	lg.SetLevel(logrus.InfoLevel)

	loadStart := swarmtopo.LoadAvg()
	started := time.Now()
	type named struct {
		name string
		mk   func() system
	}
	var systems []named
	for _, s := range strings.Split(c.systems, ",") {
		switch strings.TrimSpace(s) {
		case "snapvol":
			systems = append(systems, named{sysSnapvol, func() system { return &snapSys{c: c, mounts: mounts, log: lg} }})
		case "syncthing":
			systems = append(systems, named{sysSyncthing, func() system { return &stSys{c: c, mounts: mounts} }})
		case "lsyncd":
			systems = append(systems, named{sysLsyncd, func() system { return &lsSys{c: c, mounts: mounts} }})
		default:
			return fmt.Errorf("-systems: unknown %q", s)
		}
	}
	results := map[string][]roundResult{}
	for r := 1; r <= c.rounds; r++ {
		for _, s := range systems {
			log.Printf("round %d/%d: %s", r, c.rounds, s.name)
			res, err := runRound(ctx, c, s.mk(), r, filepath.Join(mounts[1], fmt.Sprintf("scratch-%d", r), sanitize(s.name)))
			if err != nil {
				return fmt.Errorf("round %d, %s: %w", r, s.name, err)
			}
			log.Printf("round %d, %s: %d commits (%.0f/s); lag p50 %.3fs p99 %.3fs (%d never visible); settled copy opens+passes %v, lost %.0f (oldest %.2fs); recovery %.2fs %s; %d probes, %d unreadable",
				r, s.name, res.commits, res.rate, schema.Pct(res.lags, 50), schema.Pct(res.lags, 99), res.censored, res.opens, res.lost, res.oldest, res.recovery, res.recovered, res.probes, res.unread)
			results[s.name] = append(results[s.name], res)
		}
	}
	log.Printf("total bench time %v", time.Since(started).Round(time.Second))
	if c.out == "" || len(systems) != 3 {
		return nil
	}
	res := schema.Result{Bench: "dblag", Date: time.Now().UTC().Format(time.RFC3339),
		Machine: fmt.Sprintf("%s; sqlite3 %s, syncthing %s, lsyncd %s; loopback, btrfs on loop devices; load average %s at start, %s at end (the machine is shared)",
			swarmtopo.Machine(), sqliteVersion(c.sqlite), syncthing.Version(c.syncthing), lsyncdVersion(c.lsyncd), loadStart, swarmtopo.LoadAvg())}
	res.Rows = buildRows(c, results)
	if err := schema.Write(c.out, res); err != nil {
		return err
	}
	log.Printf("wrote %s", c.out)
	return nil
}

func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			return r
		}
		return '-'
	}, strings.ToLower(s))
}

// runRound runs the workload on one system, crashes it and measures.
func runRound(ctx context.Context, c config, s system, round int, scratch string) (res roundResult, err error) {
	defer s.close()
	if err := os.MkdirAll(scratch, 0o755); err != nil {
		return res, err
	}
	dir, err := s.start(ctx, round)
	if err != nil {
		return res, err
	}
	w, err := startWriter(ctx, c, filepath.Join(dir, dbName), filepath.Join(scratch, "sqlite3.stderr"))
	if err != nil {
		return res, err
	}
	defer w.kill()
	// Probe the receiver until the crash.
	pctx, pstop := context.WithCancel(ctx)
	var probes []probe
	var pwg sync.WaitGroup
	pwg.Add(1)
	go func() {
		defer pwg.Done()
		probes = probeLoop(pctx, c, s, scratch)
	}()
	loadStart := time.Now()
	if err := swarmtopo.Sleep(ctx, c.load); err != nil {
		pstop()
		return res, err
	}
	if err := w.failed(); err != nil {
		pstop()
		return res, err
	}
	// The crash: the database and the sender die together (both are
	// signalled before either is reaped, so the sender never sees the
	// database's files closed).
	crashed := time.Now()
	w.signal()
	s.crash()
	w.kill()
	pstop()
	pwg.Wait()
	acks := w.acks()
	res.commits = len(acks)
	res.rate = float64(len(acks)) / crashed.Sub(loadStart).Seconds()
	res.probes = len(probes)
	var gaps []float64
	for i, p := range probes {
		if p.visible < 0 {
			res.unread++
		}
		if i > 0 {
			gaps = append(gaps, p.at.Sub(probes[i-1].at).Seconds())
		}
	}
	res.period = schema.Median(gaps)
	res.lags, res.censored = lags(acks, probes, loadStart.Add(c.warm), crashed.Add(-c.tail), crashed)

	// Recovery runs from the crash; the settled check meanwhile.
	type rec struct {
		at  time.Duration
		chk check
		err error
	}
	recCh := make(chan rec, 1)
	go func() {
		rctx, cancel := context.WithTimeout(ctx, c.recoverTO)
		defer cancel()
		chk, err := recoverCheck(rctx, c, s, filepath.Join(scratch, "recover"), len(acks))
		recCh <- rec{time.Since(crashed), chk, err}
	}()
	if err := swarmtopo.Sleep(ctx, time.Until(crashed.Add(c.settle))); err != nil {
		return res, err
	}
	settled := filepath.Join(scratch, "settled")
	chk := check{}
	if err := s.copyReceiver(settled); err == nil {
		chk = checkDB(c, filepath.Join(settled, dbName), len(acks))
	} else {
		chk.err = err.Error()
	}
	res.opens = chk.ok
	res.lost, res.oldest = lostOf(chk, acks, crashed)
	rr := <-recCh
	res.recovery = math.NaN()
	switch {
	case rr.err != nil:
		res.recovery, res.recNever = c.recoverTO.Seconds(), true
		res.recovered = "(no copy passed within " + c.recoverTO.String() + ": " + rr.err.Error() + ")"
	default:
		res.recovery = rr.at.Seconds()
		lost, _ := lostOf(rr.chk, acks, crashed)
		res.recovered = fmt.Sprintf("(recovered copy: %.0f acked commits lost)", lost)
	}
	if !chk.ok {
		log.Printf("settled copy: %s", chk.err)
	}
	return res, nil
}

// lostOf returns how many acked commits the checked copy lacks and how old
// the oldest of them was at the crash (0 when none is lost). A copy that
// does not open or pass the check loses every acked commit.
func lostOf(chk check, acks []time.Time, crashed time.Time) (float64, float64) {
	first := chk.firstMissing // 1-based id of the oldest missing commit
	if !chk.ok {
		first = 1
	}
	if first < 1 || first > len(acks) {
		return 0, 0
	}
	lost := len(acks) - chk.present
	if !chk.ok {
		lost = len(acks)
	}
	return float64(lost), crashed.Sub(acks[first-1]).Seconds()
}

// recoverCheck waits until the copy the next database would use opens and
// passes the check.
func recoverCheck(ctx context.Context, c config, s system, scratch string, acked int) (check, error) {
	dir, err := s.recoverDB(ctx)
	if err != nil {
		return check{}, err
	}
	if dir != "" {
		chk := checkDB(c, filepath.Join(dir, dbName), acked)
		if !chk.ok {
			return chk, errors.New(chk.err)
		}
		return chk, nil
	}
	var last string
	for i := 0; ; i++ {
		d := filepath.Join(scratch, strconv.Itoa(i))
		if err := s.copyReceiver(d); err == nil {
			if chk := checkDB(c, filepath.Join(d, dbName), acked); chk.ok {
				return chk, nil
			} else {
				last = chk.err
			}
		} else {
			last = err.Error()
		}
		os.RemoveAll(d)
		if err := swarmtopo.Sleep(ctx, c.probe); err != nil {
			return check{}, fmt.Errorf("last: %s", last)
		}
	}
}

// ------------------------------------------------------------- workload

// writer is the sqlite3 CLI committing transactions fed through a pipe.
type writer struct {
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	done    chan struct{}
	mu      sync.Mutex
	ack     []time.Time // ack[i] is when commit i+1 was acknowledged
	err     error
	once    sync.Once
	errPath string
}

func startWriter(ctx context.Context, c config, db, errPath string) (*writer, error) {
	// stdbuf: the CLI's stdout is a pipe, which stdio would buffer; each
	// ack line must come out as soon as its COMMIT returned.
	cmd := exec.Command("stdbuf", "-oL", c.sqlite, "-batch", db)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	ef, err := os.Create(errPath)
	if err != nil {
		return nil, err
	}
	cmd.Stderr = ef
	if err := cmd.Start(); err != nil {
		ef.Close()
		return nil, err
	}
	ef.Close()
	w := &writer{cmd: cmd, stdin: stdin, done: make(chan struct{}), errPath: errPath}
	go func() {
		defer close(w.done)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			now := time.Now()
			line := sc.Text()
			n, ok := strings.CutPrefix(line, "ack|")
			if !ok {
				continue
			}
			id, err := strconv.Atoi(n)
			w.mu.Lock()
			if err != nil || id != len(w.ack)+1 {
				w.err = fmt.Errorf("sqlite3: ack %q out of order (after %d)", line, len(w.ack))
			} else {
				w.ack = append(w.ack, now)
			}
			w.mu.Unlock()
		}
	}()
	if _, err := io.WriteString(stdin, "PRAGMA journal_mode=WAL;\nPRAGMA synchronous=FULL;\n"+
		"CREATE TABLE t(id INTEGER PRIMARY KEY, ts INTEGER NOT NULL, n INTEGER NOT NULL DEFAULT 0, b BLOB);\n"); err != nil {
		w.kill()
		return nil, err
	}
	go w.feed(ctx, c)
	return w, nil
}

// feed offers one transaction every 1/rate s, at most 20 ahead of the acks.
func (w *writer) feed(ctx context.Context, c config) {
	start := time.Now()
	bw := bufio.NewWriter(w.stdin)
	for n := 1; ; n++ {
		next := start.Add(time.Duration(float64(n-1) / c.rate * float64(time.Second)))
		for {
			w.mu.Lock()
			acked := len(w.ack)
			w.mu.Unlock()
			if n-acked <= 20 {
				break
			}
			select {
			case <-w.done:
				return
			case <-ctx.Done():
				return
			case <-time.After(time.Millisecond):
			}
		}
		if d := time.Until(next); d > 0 {
			select {
			case <-w.done:
				return
			case <-ctx.Done():
				return
			case <-time.After(d):
			}
		}
		ts := time.Now().UnixNano()
		fmt.Fprintf(bw, "BEGIN; INSERT INTO t(id, ts, b) VALUES(%d, %d, randomblob(%d)); UPDATE t SET n = n + 1, ts = %d WHERE id = %d; COMMIT; SELECT 'ack', %d;\n",
			n, ts, c.blob, ts, max(1, n-100), n)
		if bw.Flush() != nil {
			return
		}
	}
}

func (w *writer) acks() []time.Time {
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.ack)
}

// failed reports a writer that stopped or misbehaved before the crash.
func (w *writer) failed() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return w.err
	}
	select {
	case <-w.done:
		b, _ := os.ReadFile(w.errPath)
		return fmt.Errorf("sqlite3 stopped early after %d commits: %s", len(w.ack), b)
	default:
	}
	if len(w.ack) == 0 {
		return errors.New("sqlite3 acknowledged nothing")
	}
	return nil
}

// signal SIGKILLs the sqlite3 process without waiting for it.
func (w *writer) signal() { _ = syscall.Kill(-w.cmd.Process.Pid, syscall.SIGKILL) }

// kill SIGKILLs the sqlite3 process and reaps it (idempotent).
func (w *writer) kill() {
	w.once.Do(func() {
		_ = syscall.Kill(-w.cmd.Process.Pid, syscall.SIGKILL)
		_ = w.cmd.Wait()
	})
}

// ---------------------------------------------------------------- probes

type probe struct {
	at      time.Time // the receiver's files were copied by then
	visible int       // max(id) in the copy; -1: did not open
}

func probeLoop(ctx context.Context, c config, s system, scratch string) []probe {
	var out []probe
	for i := 0; ctx.Err() == nil; i++ {
		d := filepath.Join(scratch, "probe")
		os.RemoveAll(d)
		if err := s.copyReceiver(d); err == nil {
			at := time.Now()
			v := -1
			if o, err := sqlite(c, filepath.Join(d, dbName), "SELECT coalesce(max(id), 0) FROM t;"); err == nil {
				if n, err := strconv.Atoi(strings.TrimSpace(o)); err == nil {
					v = n
				}
			}
			out = append(out, probe{at, v})
		}
		swarmtopo.Sleep(ctx, c.probe)
	}
	return out
}

// lags returns, for every commit acked in [from, to), the time from its
// ack to the first probe in which it is visible (probes are in time
// order). A commit visible in no probe before the crash counts its lower
// bound, crash − ack, and is counted in censored.
func lags(acks []time.Time, probes []probe, from, to, crashed time.Time) ([]float64, int) {
	var out []float64
	censored := 0
	j := 0
	for i, at := range acks {
		if at.Before(from) || !at.Before(to) {
			continue
		}
		id := i + 1
		for j < len(probes) && probes[j].visible < id {
			j++
		}
		// Probes before j show older commits only; later ones may regress
		// (an unreadable copy), but the first that shows id counts.
		if j == len(probes) {
			censored++
			out = append(out, crashed.Sub(at).Seconds())
			continue
		}
		out = append(out, max(0, probes[j].at.Sub(at).Seconds()))
	}
	return out, censored
}

// check is what sqlite3 says of a copy.
type check struct {
	ok           bool // opens and passes integrity_check
	err          string
	present      int // acked commits (ids ≤ acked) present
	firstMissing int // lowest id ≤ acked not present; 0: none
}

// checkDB opens the database at path (replaying its WAL), runs
// integrity_check and counts which of the acked commits 1..acked it holds.
func checkDB(c config, path string, acked int) check {
	o, err := sqlite(c, path, fmt.Sprintf("PRAGMA integrity_check; SELECT count(*) FROM t WHERE id <= %d; "+
		"SELECT coalesce((SELECT min(id) + 1 FROM t WHERE id < %d AND id + 1 NOT IN (SELECT id FROM t)), 0), "+
		"EXISTS(SELECT 1 FROM t WHERE id = 1);", acked, acked))
	if err != nil {
		return check{err: err.Error()}
	}
	lines := strings.Split(strings.TrimSpace(o), "\n")
	if len(lines) != 3 || lines[0] != "ok" {
		return check{err: "integrity_check: " + strings.Join(lines, "; ")}
	}
	chk := check{ok: true}
	chk.present, _ = strconv.Atoi(lines[1])
	f := strings.Split(lines[2], "|")
	if len(f) == 2 {
		chk.firstMissing, _ = strconv.Atoi(f[0])
		if f[1] == "0" {
			chk.firstMissing = 1
		}
	}
	if chk.firstMissing == 0 && chk.present < acked {
		chk.firstMissing = chk.present + 1 // 1..present all there
	}
	return chk
}

func sqlite(c config, path, sql string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, c.sqlite, "-batch", "-bail", path, sql).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("sqlite3: %w: %s", err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// copyDB copies the database and its WAL from src into dst (made here),
// as reflinks when both are on the same btrfs. A missing WAL is fine; a
// missing database is an error.
func copyDB(src, dst string) error {
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	for _, name := range []string{dbName, dbName + "-wal"} {
		if err := copyFile(filepath.Join(src, name), filepath.Join(dst, name)); err != nil {
			if name != dbName && errors.Is(err, os.ErrNotExist) {
				continue
			}
			return err
		}
	}
	return nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if unix.IoctlFileClone(int(out.Fd()), int(in.Fd())) == nil {
		return out.Close()
	}
	_, err = io.Copy(out, in)
	return errors.Join(err, out.Close())
}

// ---------------------------------------------------------------- snapvol

type snapSys struct {
	c      config
	mounts []string
	log    *logrus.Logger
	nodes  []*snapvol.Node
	dirs   []string
	done   []chan struct{}
	closed []bool
}

const snapVol = "db"

func (s *snapSys) start(ctx context.Context, round int) (string, error) {
	n := 3
	certs := make([]tls.Certificate, n)
	ids := make([]string, n)
	for i := range n {
		var err error
		if certs[i], ids[i], err = selfCert(); err != nil {
			return "", err
		}
		s.dirs = append(s.dirs, filepath.Join(s.mounts[i], fmt.Sprintf("snapvol-%d", round), fmt.Sprint("node", i)))
	}
	var mu sync.Mutex
	addrs := make([]string, n)
	for i := range n {
		dir := s.dirs[i]
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return "", err
		}
		nd, err := snapvol.New(snapvol.Options{
			Self:      ids[i],
			VolumeDir: func(name string) string { return filepath.Join(dir, name) },
			ValidName: func(name string) error {
				if name != snapVol {
					return errors.New("unknown volume")
				}
				return nil
			},
			Cert: certs[i],
			Verify: func(raw []byte) (string, bool) {
				sum := sha256.Sum256(raw)
				id := hex.EncodeToString(sum[:8])
				return id, slices.Contains(ids, id)
			},
			Peers: func() []snapvol.Peer {
				mu.Lock()
				defer mu.Unlock()
				var out []snapvol.Peer
				for j := range n {
					if j != i && addrs[j] != "" {
						out = append(out, snapvol.Peer{ID: ids[j], Addrs: []string{addrs[j]}})
					}
				}
				return out
			},
			ListenAddr: "127.0.0.1:0",
			Interval:   s.c.interval,
			Lease:      s.c.lease,
			Logger:     logrus.NewEntry(s.log).WithField("node", i),
		})
		if err != nil {
			return "", err
		}
		mu.Lock()
		addrs[i] = nd.Addr()
		mu.Unlock()
		done := make(chan struct{})
		go func() { defer close(done); nd.Run(context.Background()) }()
		s.nodes, s.done, s.closed = append(s.nodes, nd), append(s.done, done), append(s.closed, false)
	}
	actx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	return s.nodes[0].Acquire(actx, snapVol, nil)
}

// copyReceiver copies node 1's newest complete generation.
func (s *snapSys) copyReceiver(dst string) error {
	g := s.nodes[1].Status(snapVol)["generation"]
	if g == "" || g == (snapvol.Gen{}).String() {
		return errors.New("no generation yet")
	}
	src := filepath.Join(s.dirs[1], snapVol, "gens", g)
	if err := copyDB(src, dst); err != nil {
		// Generations are collected as newer ones arrive: retry once.
		os.RemoveAll(dst)
		return err
	}
	return nil
}

// crash stops node 0 without Release: its generations stop leaving.
func (s *snapSys) crash() { s.stop(0) }

func (s *snapSys) stop(i int) {
	if !s.closed[i] {
		s.closed[i] = true
		s.nodes[i].Close()
		<-s.done[i]
	}
}

// recoverDB makes node 1 the writer, as a Mount there after the crash
// does: it waits out node 0's lease and presents the newest generation.
func (s *snapSys) recoverDB(ctx context.Context) (string, error) {
	return s.nodes[1].Acquire(ctx, snapVol, nil)
}

func (s *snapSys) close() {
	for i := range s.nodes {
		s.stop(i)
	}
}

func selfCert() (tls.Certificate, string, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, "", err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		return tls.Certificate{}, "", err
	}
	sum := sha256.Sum256(der)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: k}, hex.EncodeToString(sum[:8]), nil
}

// -------------------------------------------------------------- Syncthing

type stSys struct {
	c      config
	mounts []string
	p      *syncthing.Pair
}

func (s *stSys) start(ctx context.Context, round int) (string, error) {
	var err error
	s.p, err = syncthing.Start(ctx, s.c.syncthing,
		filepath.Join(s.mounts[0], fmt.Sprintf("syncthing-%d", round), "a"),
		filepath.Join(s.mounts[1], fmt.Sprintf("syncthing-%d", round), "b"), 1, 20*time.Millisecond)
	if err != nil {
		return "", err
	}
	return s.p.A.Dir, nil
}

func (s *stSys) copyReceiver(dst string) error             { return copyDB(s.p.B.Dir, dst) }
func (s *stSys) crash()                                    { s.p.A.Stop() }
func (s *stSys) recoverDB(context.Context) (string, error) { return "", nil }
func (s *stSys) close() {
	if s.p != nil {
		s.p.Close(nil)
	}
}

// ----------------------------------------------------------------- lsyncd

type lsSys struct {
	c        config
	mounts   []string
	src, dst string
	cmd      *exec.Cmd
}

func (s *lsSys) start(ctx context.Context, round int) (string, error) {
	base := filepath.Join(s.mounts[0], fmt.Sprintf("lsyncd-%d", round))
	s.src, s.dst = filepath.Join(base, "src"), filepath.Join(s.mounts[1], fmt.Sprintf("lsyncd-%d", round), "dst")
	for _, d := range []string{s.src, s.dst} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return "", err
		}
	}
	if err := os.WriteFile(filepath.Join(s.src, "warmup"), []byte("warm"), 0o644); err != nil {
		return "", err
	}
	conf := filepath.Join(base, "lsyncd.conf.lua")
	// default.rsync: events are collected for delay seconds, then one rsync
	// (archive) copies the changed files; delay 0 is its minimum. At its
	// default inotifyMode (CloseWrite) lsyncd ships nothing of a file its
	// database keeps open until the process closes it (at the crash):
	// "CloseWrite or Modify" is its tuned setting for such files.
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(`settings {
	nodaemon = true,
	logfile = %q,
	statusFile = %q,
	insist = true,
	inotifyMode = "CloseWrite or Modify",
}
sync {
	default.rsync,
	source = %q,
	target = %q,
	delay = 0,
}
`, filepath.Join(base, "lsyncd.log"), filepath.Join(base, "lsyncd.status"), s.src+"/", s.dst+"/")), 0o644); err != nil {
		return "", err
	}
	lf, err := os.Create(filepath.Join(base, "lsyncd.out"))
	if err != nil {
		return "", err
	}
	defer lf.Close()
	s.cmd = exec.Command(s.c.lsyncd, conf)
	s.cmd.Stdout, s.cmd.Stderr = lf, lf
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := s.cmd.Start(); err != nil {
		return "", err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if b, err := os.ReadFile(filepath.Join(s.dst, "warmup")); err == nil && string(b) == "warm" {
			break
		}
		if time.Now().After(deadline) {
			out, _ := os.ReadFile(filepath.Join(base, "lsyncd.out"))
			return "", fmt.Errorf("lsyncd never copied the warm-up file: %s", out)
		}
		if err := swarmtopo.Sleep(ctx, 20*time.Millisecond); err != nil {
			return "", err
		}
	}
	return s.src, swarmtopo.Sleep(ctx, time.Second)
}

func (s *lsSys) copyReceiver(dst string) error             { return copyDB(s.dst, dst) }
func (s *lsSys) recoverDB(context.Context) (string, error) { return "", nil }

// crash kills lsyncd and any rsync it runs (its process group).
func (s *lsSys) crash() {
	if s.cmd != nil {
		_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		_ = s.cmd.Wait()
		s.cmd = nil
	}
}
func (s *lsSys) close() { s.crash() }

// ------------------------------------------------------------------ rows

func buildRows(c config, results map[string][]roundResult) []schema.Row {
	type fig struct {
		p50, p99, lost, oldest, recovery, rate, period         float64
		passed, n, censored, windowN, probes, unread, recNever int
		lostS, recS                                            []float64
	}
	figs := map[string]fig{}
	for name, rs := range results {
		var f fig
		var p50s, p99s, olds, rates, periods []float64
		for _, r := range rs {
			p50s = append(p50s, schema.Pct(r.lags, 50))
			p99s = append(p99s, schema.Pct(r.lags, 99))
			f.lostS = append(f.lostS, r.lost)
			olds = append(olds, r.oldest)
			f.recS = append(f.recS, r.recovery)
			rates = append(rates, r.rate)
			periods = append(periods, r.period)
			f.probes += r.probes
			if r.recNever {
				f.recNever++
			}
			f.unread += r.unread
			if r.opens {
				f.passed++
			}
			f.censored += r.censored
			f.windowN += len(r.lags)
		}
		f.n = len(rs)
		f.p50, f.p99 = schema.Median(p50s), schema.Median(p99s)
		f.lost, f.oldest, f.recovery, f.rate = schema.Median(f.lostS), schema.Median(olds), schema.Median(f.recS), schema.Median(rates)
		f.period = schema.Median(periods)
		figs[name] = f
	}
	sv := figs[sysSnapvol]
	anchors := []string{sysSyncthing, sysLsyncd}
	lagNote := fmt.Sprintf("sqlite3 CLI fed %g txn/s (WAL, synchronous=FULL; each inserts a row with a %d B random blob and updates an older one, then prints an ack after COMMIT), %s of load per system and round, %d rounds, systems in turn; lag = ack → end of the first copy of the receiver (snapvol: node 1's newest complete generation; others: the receiving folder) in which the row is visible, the receiver copied (db and -wal, reflink) and the private copy opened read-write with sqlite3, which replays the WAL (immutable=1 would ignore the WAL), every %s; commits of the first %s and last %s before the crash left out; p50/p99 by nearest rank per round, median of the rounds. snapvol: 3 in-process nodes, each on its own btrfs loop mount, Interval %s, Lease %s; syncthing: two Debian processes, fsWatcherDelayS=1; lsyncd: default.rsync, delay 0, inotifyMode \"CloseWrite or Modify\" (at its default, CloseWrite, it ships nothing of a database file kept open until the process closes it), into a directory on another btrfs",
		c.rate, c.blob, c.load, c.rounds, c.probe, c.warm, c.tail, orDefault(c.interval, "200ms"), orDefault(c.lease, "8s"))
	crashNote := fmt.Sprintf("crash = SIGKILL of sqlite3 together with the sender (snapvol: node 0 Closed without Release; syncthing: the sending process; lsyncd: lsyncd and its rsync); %s later the receiver's copy is opened: commits acked before the crash that it lacks (all of them if it does not open or fails PRAGMA integrity_check), and how long before the crash the oldest of them was acked; median of %d rounds", c.settle, c.rounds)
	recNote := fmt.Sprintf("crash → a copy the next database uses opens and passes PRAGMA integrity_check; snapvol: Acquire on node 1 (it waits out node 0's lease) then sqlite3 on its live directory; syncthing, lsyncd: the receiving folder copied and checked every %s (no lease: nothing stops two writers); given up after %s; median of %d rounds", c.probe, c.recoverTO, c.rounds)
	lagNote += "; probe period (median) and probe copies that did not open:"
	for _, name := range []string{sysSnapvol, sysSyncthing, sysLsyncd} {
		f := figs[name]
		lagNote += fmt.Sprintf(" %s %.0f ms, %d of %d;", name, f.period*1000, f.unread, f.probes)
	}
	lagNote = strings.TrimSuffix(lagNote, ";")
	var rows []schema.Row
	add := func(r schema.Row) { rows = append(rows, r) }
	latRow := func(what, metric string, v float64, f func(fig) float64, target, note string) {
		for i, a := range anchors {
			r := schema.Row{Name: sysSnapvol + " " + what, Metric: metric, Unit: "s", Value: schema.Round(v, 3),
				Anchor: a, AnchorValue: schema.Round(f(figs[a]), 3), Target: target}
			if v > 0 && f(figs[a]) > 0 {
				r.Ratio = schema.Round(f(figs[a])/v, 2)
			}
			if i == 0 {
				r.Note = note
			}
			add(r)
		}
	}
	censor := func(f fig) string {
		if f.censored == 0 {
			return ""
		}
		return fmt.Sprintf("; %d of %d commits never visible on the receiver before the crash count as crash − ack, so this lag (and a ratio against it) is a lower bound", f.censored, f.windowN)
	}
	latRow("replication lag under a live database", "p50", sv.p50, func(f fig) float64 { return f.p50 }, "p50 < 0.5 s", lagNote+censor(sv))
	latRow("replication lag under a live database", "p99", sv.p99, func(f fig) float64 { return f.p99 }, "p99 < 1 s", "")
	// Losses: a count, lower is better; ratio only when both lose some.
	for i, a := range anchors {
		r := schema.Row{Name: sysSnapvol + " acked commits lost per crash", Metric: "median", Unit: "commits",
			Value: sv.lost, Anchor: a, AnchorValue: figs[a].lost}
		if sv.lost > 0 && figs[a].lost > 0 {
			r.Ratio = schema.Round(figs[a].lost/sv.lost, 2)
		}
		if i == 0 {
			r.Note = crashNote + fmt.Sprintf("; per round: snapvol %v, syncthing %v, lsyncd %v", sv.lostS, figs[sysSyncthing].lostS, figs[sysLsyncd].lostS)
		}
		add(r)
	}
	latRow("oldest lost ack before the crash", "median", sv.oldest, func(f fig) float64 { return f.oldest }, "< 1 s", "")
	met := sv.passed == sv.n
	for _, a := range anchors {
		add(schema.Row{Name: sysSnapvol + " copy opens and passes integrity_check after a crash", Metric: "rounds", Unit: "of " + strconv.Itoa(sv.n),
			Value: float64(sv.passed), Anchor: a, AnchorValue: float64(figs[a].passed), Target: "every round", Met: &met})
	}
	for _, name := range []string{sysSnapvol, sysSyncthing, sysLsyncd} {
		if f := figs[name]; f.recNever > 0 {
			recNote += fmt.Sprintf("; %s: no copy passed within %s in %d of %d rounds (counted as %s, so a lower bound)", name, c.recoverTO, f.recNever, f.n, c.recoverTO)
		}
	}
	latRow("recovery after a crash (to a checked copy)", "median", sv.recovery, func(f fig) float64 { return f.recovery }, "", recNote+fmt.Sprintf("; per round: snapvol %v, syncthing %v, lsyncd %v", schema.RoundAll(sv.recS, 2), schema.RoundAll(figs[sysSyncthing].recS, 2), schema.RoundAll(figs[sysLsyncd].recS, 2)))
	// The anchors' own figures.
	for _, a := range anchors {
		f := figs[a]
		add(schema.Row{Name: a + " replication lag under a live database", Metric: "p50", Unit: "s", Value: schema.Round(f.p50, 3), Note: strings.TrimPrefix(censor(f), "; ")})
		add(schema.Row{Name: a + " replication lag under a live database", Metric: "p99", Unit: "s", Value: schema.Round(f.p99, 3)})
		add(schema.Row{Name: a + " acked commits lost per crash", Metric: "median", Unit: "commits", Value: f.lost})
		add(schema.Row{Name: a + " recovery after a crash (to a checked copy)", Metric: "median", Unit: "s", Value: schema.Round(f.recovery, 3)})
	}
	rateNote := fmt.Sprintf("the workload each system carried (offered %g txn/s, at most 20 ahead of the acks); blobs written (MB/s):", c.rate)
	for _, name := range []string{sysSnapvol, sysSyncthing, sysLsyncd} {
		rateNote += fmt.Sprintf(" %s %.1f,", name, figs[name].rate*float64(c.blob)/1e6)
	}
	rateNote = strings.TrimSuffix(rateNote, ",")
	for i, name := range []string{sysSnapvol, sysSyncthing, sysLsyncd} {
		r := schema.Row{Name: name + " database commits during the load", Metric: "median", Unit: "commits/s", Value: schema.Round(figs[name].rate, 0)}
		if i == 0 {
			r.Note = rateNote
		}
		add(r)
	}
	return rows
}

func orDefault(d time.Duration, def string) string {
	if d == 0 {
		return def
	}
	return d.String()
}

// ---------------------------------------------------------------- helpers

// btrfsMount makes a sparse 4 GiB image, formats it btrfs and mounts it.
func btrfsMount(work string, i int) (string, error) {
	img, mnt := filepath.Join(work, fmt.Sprintf("pool%d.img", i)), filepath.Join(work, fmt.Sprintf("mnt%d", i))
	if err := os.Mkdir(mnt, 0o755); err != nil {
		return "", err
	}
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		return "", err
	}
	if err := os.Truncate(img, 4<<30); err != nil {
		return "", err
	}
	if out, err := exec.Command("mkfs.btrfs", "-q", img).CombinedOutput(); err != nil {
		return "", fmt.Errorf("mkfs.btrfs: %v: %s", err, out)
	}
	if out, err := exec.Command("mount", "-o", "loop", img, mnt).CombinedOutput(); err != nil {
		return "", fmt.Errorf("mount: %v: %s", err, out)
	}
	return mnt, nil
}

func sqliteVersion(bin string) string {
	out, _ := exec.Command(bin, "-version").Output()
	if f := strings.Fields(string(out)); len(f) > 0 {
		return f[0]
	}
	return "?"
}

func lsyncdVersion(bin string) string {
	out, _ := exec.Command(bin, "--version").Output()
	if f := strings.Fields(string(out)); len(f) > 1 {
		return f[1]
	}
	return "?"
}
