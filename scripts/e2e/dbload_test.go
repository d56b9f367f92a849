//go:build e2e

package e2e

import (
	"bufio"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/homeswarm/homeswarm/internal/netns"
)

// A database workload that counts its own acknowledgements, for the
// database failover test. No Go driver: each database's own CLI reads SQL
// from a pipe (a busybox sh loop writing it) and prints "ack N" once the
// COMMIT of transaction N has returned. Every transaction inserts row N
// (a pad of dbPad bytes) and updates an older row. Acknowledgements reach
// the test through a TCP collector in the VPS's namespace (busybox nc):
// one counts only once the collector has read it, so an ack still in a
// dying node's pipe or socket never counts.
//
//   - SQLite is embedded: the task itself runs the load on its volume, so
//     its acks have to leave the node before they count.
//   - PostgreSQL and MariaDB are servers: the task runs the server, the
//     load runs in a client container on the VPS reaching tasks.<service>
//     over a meshnet network, reconnecting after a move.
//
// Each connection numbers its transactions from its start second × 10⁶, so
// a number is never reused: a lost row cannot be written again under the
// same number and hide the loss.

// dbPad is the size of each row's pad (bytes); dbRate caps the load's
// commits per second (the generator sleeps 10/dbRate s every 10
// transactions; a slower database just falls behind it).
var (
	dbPad  = envOr("E2E_DB_PAD", "1800")
	dbRate = envOr("E2E_DB_RATE", "200")
)

// dbKind is how to run, load and check one database.
type dbKind struct {
	name     string
	image    string
	embedded bool     // the task runs the load itself (SQLite)
	taskArgs []string // service arguments after the image
	// sh commands run in the task's container
	ready string // succeeds once the database answers (its crash recovery done)
	check string // the database's own consistency check: exit 0 and no output on stderr when consistent
	query string // every n in t, one a line
	// the load: prelude SQL (echo commands), one transaction ($n, $old), the client reading SQL from stdin
	prelude, txn, client string
}

var dbKinds = map[string]*dbKind{
	"sqlite": {
		name: "sqlite", image: "homeswarm/sqlite", embedded: true,
		ready: `sqlite3 -bail /data/db.sqlite ".timeout 20000" "SELECT count(*) FROM t;" >/dev/null`,
		check: `out=$(sqlite3 -bail /data/db.sqlite ".timeout 20000" "PRAGMA integrity_check;") && [ "$out" = ok ] || { echo "integrity_check: $out" >&2; exit 1; }`,
		query: `sqlite3 -bail /data/db.sqlite ".timeout 20000" "SELECT n FROM t;"`,
		prelude: `echo ".timeout 10000"; echo "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; ` +
			`CREATE TABLE IF NOT EXISTS t(n INTEGER PRIMARY KEY, pad BLOB NOT NULL, upd INTEGER NOT NULL DEFAULT 0);"`,
		txn:    `BEGIN; INSERT INTO t(n,pad) VALUES($n, randomblob($PAD)); UPDATE t SET upd=upd+1 WHERE n=$old; COMMIT; SELECT 'ack', $n;`,
		client: `sqlite3 -bail -batch -separator ' ' /data/db.sqlite`,
	},
	"postgres": {
		name: "postgres", image: "homeswarm/postgres",
		ready:   `psql -X -Atc "SELECT 1" >/dev/null`,
		check:   `pg_amcheck --install-missing --heapallindexed -d postgres`,
		query:   `psql -X -At -v ON_ERROR_STOP=1 -c "SELECT n FROM t"`,
		prelude: `echo "CREATE TABLE IF NOT EXISTS t(n bigint PRIMARY KEY, pad text NOT NULL, upd int NOT NULL DEFAULT 0);"`,
		txn:     `BEGIN; INSERT INTO t(n,pad) VALUES($n, repeat('x', $PAD)); UPDATE t SET upd=upd+1 WHERE n=$old; COMMIT; SELECT 'ack', $n;`,
		client:  `psql -X -h tasks.$SVC -U postgres -d postgres -At -F ' ' -q -v ON_ERROR_STOP=1`,
	},
	"mariadb": {
		name: "mariadb", image: "homeswarm/mariadb",
		ready:   `mariadb -N -e "SELECT 1" >/dev/null`,
		check:   `out=$(mariadb-check --all-databases) || exit 1; echo "$out" | grep -v ' OK$' | grep . >&2 && exit 1; exit 0`,
		query:   `mariadb -N -B -e "SELECT n FROM db.t"`,
		prelude: `echo "CREATE DATABASE IF NOT EXISTS db; USE db; CREATE TABLE IF NOT EXISTS t(n BIGINT PRIMARY KEY, pad BLOB NOT NULL, upd INT NOT NULL DEFAULT 0) ENGINE=InnoDB;"`,
		txn:     `BEGIN; INSERT INTO t(n,pad) VALUES($n, REPEAT('x', $PAD)); UPDATE t SET upd=upd+1 WHERE n=$old; COMMIT; SELECT 'ack', $n;`,
		client:  `mariadb -h tasks.$SVC -u root -N -B --unbuffered --skip-reconnect --connect-timeout=5`,
	},
}

// loadScript is the sh loop: connect, stream transactions, print acks into
// the collector; on any failure wait a second and start over.
func (k *dbKind) loadScript() string {
	return `trap 'exit 0' TERM
while :; do
  s=$(( $(date +%s) * 1000000 ))
  { ` + k.prelude + `
    i=0; while :; do i=$((i+1)); n=$((s+i)); old=$((n-50)); echo "` + k.txn + `"; [ $((i % 10)) = 0 ] && sleep $SLICE; done
  } | ` + k.client + ` 2>&1 | nc $COLLECTOR
  sleep 1
done &
wait`
}

// importDBImages imports the images of kinds into every node engine.
func importDBImages(t *testing.T, kinds []string) {
	t.Helper()
	importDebImages(t, "dbimages", kinds, "vps", "home1", "home2", "home3")
}

// importDebImages imports the images names of scripts/SCRIPT.sh (dbimages
// or appimages: built from Debian's packages, cached) into nodes.
func importDebImages(t *testing.T, script string, names []string, nodes ...string) {
	t.Helper()
	start := time.Now()
	cmd := exec.Command(filepath.Join(repo, "scripts", script+".sh"), nodes...)
	cmd.Env = append(os.Environ(), strings.ToUpper(script)+"="+strings.Join(names, " "))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v: %s", script, err, out)
	}
	t.Logf("images %s in %s after %.1f s", strings.Join(names, " "), strings.Join(nodes, " "), time.Since(start).Seconds())
}

// dbAck is one acknowledged transaction: its number and when the collector
// read it.
type dbAck struct {
	n  int64
	at time.Time
}

// dbLoad is a running workload against one service.
type dbLoad struct {
	kind    *dbKind
	service string
	ln      net.Listener
	addr    string // the collector, as the load's nc sees it
	client  string // client container on the VPS (server databases)

	mu    sync.Mutex
	acks  []dbAck
	other []string // the last lines that were not acks (client errors)
	conns int
	// excused are acks an earlier move was allowed to lose and did (the
	// last instants before a kill): gone for good, never counted again.
	excused map[int64]bool
}

// newDBLoad starts the collector; the load starts with the service
// (embedded) or with startClient (servers).
func newDBLoad(t *testing.T, k *dbKind, service string) *dbLoad {
	t.Helper()
	l := &dbLoad{kind: k, service: service}
	err := netns.Do(netns.Path(topoPrefix+"-vps"), func() (err error) {
		l.ln, err = net.Listen("tcp4", "0.0.0.0:0")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	l.addr = fmt.Sprintf("%s %d", vpsAddr, l.ln.Addr().(*net.TCPAddr).Port)
	go l.accept()
	t.Cleanup(l.stop)
	return l
}

func (l *dbLoad) accept() {
	for {
		c, err := l.ln.Accept()
		if err != nil {
			return
		}
		l.mu.Lock()
		l.conns++
		l.mu.Unlock()
		go func() {
			defer c.Close()
			sc := bufio.NewScanner(c)
			for sc.Scan() {
				at := time.Now()
				f := strings.Fields(sc.Text())
				var n int64
				var err error
				if len(f) == 2 && f[0] == "ack" {
					n, err = strconv.ParseInt(f[1], 10, 64)
				}
				l.mu.Lock()
				if len(f) == 2 && f[0] == "ack" && err == nil {
					l.acks = append(l.acks, dbAck{n, at})
				} else if t := sc.Text(); t != "wal" && t != "" {
					l.other = append(l.other, at.Format("15:04:05.000 ")+t)
					if len(l.other) > 20 {
						l.other = l.other[1:]
					}
				}
				l.mu.Unlock()
			}
		}()
	}
}

// serviceArgs are the arguments after `service create … ` options: the image and its arguments.
func (l *dbLoad) serviceArgs() []string {
	if l.kind.embedded {
		return append(l.env(), l.kind.image, "-c", l.kind.loadScript())
	}
	return append([]string{"--stop-grace-period", "20s", l.kind.image}, l.kind.taskArgs...)
}

// env is the load's settings, as --env flags.
func (l *dbLoad) env() []string {
	rate, err := strconv.ParseFloat(dbRate, 64)
	if err != nil || rate <= 0 {
		rate = 200
	}
	return []string{"--env", "COLLECTOR=" + l.addr, "--env", "PAD=" + dbPad, "--env", "SVC=" + l.service,
		"--env", fmt.Sprintf("SLICE=%.4f", 10/rate)}
}

// startDBService runs database k as service svc at home on a syncvol
// volume named after it, on network (dnsrr), with its load, and returns
// once acks commits were acknowledged: the load, and the task's node and
// container.
func startDBService(t *testing.T, k *dbKind, svc, network string, acks int) (l *dbLoad, node, container string) {
	t.Helper()
	l = newDBLoad(t, k, svc)
	createService(t, svc, append([]string{"--constraint", "node.labels.location==home",
		"--network", network, "--endpoint-mode", "dnsrr",
		"--mount", "type=volume,source=" + svc + ",target=/data,volume-driver=syncvol"}, l.serviceArgs()...)...)
	node, container = runningTask(t, svc, 120*time.Second)
	l.startClient(t, network)
	l.waitAcks(t, acks, 120*time.Second)
	return l, node, container
}

// startClient starts the load of a server database: a client container on
// the VPS on network.
func (l *dbLoad) startClient(t *testing.T, network string) {
	t.Helper()
	if l.kind.embedded {
		return
	}
	l.client = l.service + "-load"
	mustDk(t, "vps", append([]string{"run", "-d", "--name", l.client, "--network", network},
		append(l.env(), "--entrypoint", "sh", l.kind.image, "-c", l.kind.loadScript())...)...)
}

func (l *dbLoad) stop() {
	if l.client != "" {
		dk("vps", "rm", "-f", l.client)
		l.client = ""
	}
	l.ln.Close()
}

func (l *dbLoad) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.acks)
}

// lastLines is what the load printed besides acks, for failure messages.
func (l *dbLoad) lastLines() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.other, "\n")
}

// waitAcks waits until n more acks than now have been read, and returns
// how long that took.
func (l *dbLoad) waitAcks(t *testing.T, n int, d time.Duration) time.Duration {
	t.Helper()
	start, from := time.Now(), l.count()
	eventually(t, d, fmt.Sprintf("%d acks from %s", n, l.service), func() error {
		if got := l.count() - from; got < n {
			return fmt.Errorf("%d acks (%d collector connections); load's last lines:\n%s", got, l.conns, l.lastLines())
		}
		return nil
	})
	return time.Since(start)
}

// firstAckAfter is when the first ack read after at was read (zero: none).
func (l *dbLoad) firstAckAfter(at time.Time) time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, a := range l.acks {
		if a.at.After(at) {
			return a.at
		}
	}
	return time.Time{}
}

// dbReport is what a check after a move found.
type dbReport struct {
	rows       int           // rows in the new task's database
	acks       int           // acks read before the query started
	mustHold   int           // of those, acks read before the instant given
	lost       int           // of mustHold, not in the database
	lostAll    int           // of acks, not in the database (including the last moments)
	oldestLost time.Duration // how long before ref the oldest lost ack was read (any of lostAll)
	openErr    string        // the database did not start, open or answer the query: everything is lost
	checkErr   string        // its own check failed
	checkOut   string
}

func (r dbReport) String() string {
	s := fmt.Sprintf("%d acks, %d rows; %d acks that must survive, %d lost", r.acks, r.rows, r.mustHold, r.lost)
	if r.openErr != "" {
		s += " (the database does not open)"
	}
	if r.checkErr != "" {
		s += " (its own check fails)"
	}
	if r.lostAll > 0 {
		s += fmt.Sprintf("; %d lost in all, the oldest read %.0f ms before the reference instant", r.lostAll, ms(r.oldestLost))
	}
	return s
}

// verify checks the database of the task (node, container) after a move:
// it starts (its own crash recovery), passes its own check, and holds every
// ack read before mustHold (zero: every ack read before the query). ref is
// the instant lost acks' ages are measured from (the kill, the drain).
// Failures are t.Errorf: every number is reported.
func (l *dbLoad) verify(t *testing.T, node, container string, mustHold, ref time.Time) dbReport {
	t.Helper()
	var r dbReport
	k := l.kind
	// its crash recovery: servers take a while; a database that never
	// answers is reported with every ack it should hold as lost
	var err error
	deadline := time.Now().Add(90 * time.Second)
	for {
		if _, err = dk(node, "exec", container, "sh", "-c", k.ready); err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if err != nil {
		r.openErr = err.Error()
		t.Errorf("%s on %s does not start or open after the move: %v", k.name, node, err)
	} else {
		out, err := dk(node, "exec", container, "sh", "-c", k.check)
		r.checkOut = out
		if err != nil {
			r.checkErr = err.Error()
			t.Errorf("%s on %s: its own check fails: %v %s", k.name, node, err, out)
		}
	}
	queried := time.Now()
	have := map[int64]bool{}
	out, err := "", error(nil)
	if r.openErr == "" {
		if out, err = dk(node, "exec", container, "sh", "-c", k.query); err != nil {
			r.openErr = err.Error()
			t.Errorf("%s on %s: query: %v", k.name, node, err)
		}
	}
	for _, f := range strings.Fields(out) {
		n, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			t.Errorf("%s: query printed %q", k.name, f)
			continue
		}
		have[n] = true
	}
	r.rows = len(have)
	if mustHold.IsZero() || mustHold.After(queried) {
		mustHold = queried
	}
	l.mu.Lock()
	acks := append([]dbAck(nil), l.acks...)
	excused := maps.Clone(l.excused)
	l.mu.Unlock()
	var lostN, allowed []int64
	for _, a := range acks {
		if !a.at.Before(queried) || excused[a.n] {
			continue
		}
		r.acks++
		must := a.at.Before(mustHold)
		if must {
			r.mustHold++
		}
		if have[a.n] {
			continue
		}
		r.lostAll++
		r.oldestLost = max(r.oldestLost, ref.Sub(a.at))
		if must {
			r.lost++
			lostN = append(lostN, a.n)
		} else {
			allowed = append(allowed, a.n)
		}
	}
	l.mu.Lock()
	if l.excused == nil {
		l.excused = map[int64]bool{}
	}
	for _, n := range allowed {
		l.excused[n] = true
	}
	l.mu.Unlock()
	if r.lost > 0 {
		sort.Slice(lostN, func(i, j int) bool { return lostN[i] < lostN[j] })
		t.Errorf("%s on %s lost %d of %d acknowledged transactions that must survive (first lost: %d; %s)",
			k.name, node, r.lost, r.mustHold, lostN[0], r)
	}
	return r
}

// ioWritten is the bytes the container's processes caused to be written
// to storage: write_bytes of /proc/PID/io summed over the container's live
// processes, read on the host (the node engines share its PID namespace;
// inside the container root may not read another user's io).
func ioWritten(node, container string) int64 {
	out, err := dk(node, "inspect", "-f", "{{.State.Pid}}", container)
	root, _ := strconv.Atoi(out)
	if err != nil || root <= 0 {
		return 0
	}
	parent := map[int]int{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if i := strings.LastIndexByte(string(b), ')'); err == nil && i > 0 {
			if f := strings.Fields(string(b[i+1:])); len(f) > 1 {
				parent[pid], _ = strconv.Atoi(f[1])
			}
		}
	}
	var sum int64
	for pid := range parent {
		p := pid
		for p > 1 && p != root {
			p = parent[p]
		}
		if p != root {
			continue
		}
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "write_bytes: "); ok {
				n, _ := strconv.ParseInt(v, 10, 64)
				sum += n
			}
		}
	}
	return sum
}

// ackedSince waits (without failing) until an ack read after at is older
// than age, and returns when the first one was read (zero: none in d).
func (l *dbLoad) ackedSince(at time.Time, age, d time.Duration) time.Time {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if first := l.firstAckAfter(at); !first.IsZero() && time.Since(first) >= age {
			return first
		}
		time.Sleep(200 * time.Millisecond)
	}
	return l.firstAckAfter(at)
}

// waitMoved waits until service's task runs on a node other than old and
// returns that node and its container.
func waitMoved(t *testing.T, service, old string, d time.Duration) (node, container string) {
	t.Helper()
	return waitMovedOff(t, service, []string{old}, d)
}

// taskPath is the nodes service's tasks ran on, oldest first (`service
// ps` lists a slot's tasks newest first), each with its error if it failed:
// where a slow move spent its time.
func taskPath(service string) string {
	out, _ := dk("vps", "service", "ps", "--no-trunc", "--format", "{{.Node}}{{if .Error}} ({{.Error}}){{end}}", service)
	f := strings.Split(strings.TrimSpace(out), "\n")
	slices.Reverse(f)
	return strings.Join(f, " → ")
}

// waitMovedOff waits until service's task runs on a node none of old and
// returns that node and its container.
func waitMovedOff(t *testing.T, service string, old []string, d time.Duration) (node, container string) {
	t.Helper()
	eventually(t, d, service+" running elsewhere than "+strings.Join(old, ", "), func() error {
		out, err := dk("vps", "service", "ps", service, "--filter", "desired-state=running", "--format", "{{.Node}} {{.CurrentState}}")
		if err != nil {
			return err
		}
		for _, line := range strings.Split(out, "\n") {
			f := strings.Fields(line)
			if len(f) < 2 || slices.Contains(old, f[0]) || f[1] != "Running" {
				continue
			}
			c, err := dk(f[0], "ps", "-q", "--filter", "label=com.docker.swarm.service.name="+service)
			if err != nil || c == "" {
				return fmt.Errorf("task on %s has no container yet (%v)", f[0], err)
			}
			node, container = f[0], strings.Fields(c)[0]
			return nil
		}
		return fmt.Errorf("tasks: %q", out)
	})
	return node, container
}
