//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestDatabasePartition ("one writer"): SQLite at home on a syncvol volume,
// its load running inside the task (dbload_test.go); the writer's node is
// cut off while its task keeps running. Swarm marks the node down and starts
// a new task on another home node. Then:
//
//  1. the cut-off writer fenced itself — a write inside the old container
//     fails with EROFS and its plugin says "fenced" — before the new node
//     presents the volume ("writing the volume here") and before the new
//     task's first ack;
//  2. the new task's database recovers, passes its own check and holds
//     every ack read at least 2 s before the cut;
//  3. after the heal, the old node keeps its copy aside (Status.diverged,
//     volumes/<name>/diverged/) and the live volume holds only the new
//     writer's history: none of the old task's writes made during the
//     partition (the rows of the diverged copy, the old task's acks that
//     reach the collector only after the heal) shows up in it.
//
// Acks of the old task cannot reach the collector on the VPS while its node
// is cut off: those it printed during the partition stay in its pipe and
// socket and may arrive after the heal. Acks are told apart by their
// connection's number prefix (its start second, dbload_test.go): those read
// before the cut are the old task's, those read while the node is cut off
// can only be the new task's.
func TestDatabasePartition(t *testing.T) {
	k := dbKinds["sqlite"]
	importDBImages(t, []string{k.name})
	network := "dbp-net-" + runID
	createNetwork(t, network, "--attachable")

	svc := "dbp-" + k.name + "-" + runID
	l, old, oldC := startDBService(t, k, svc, network, 100) // embedded: no client
	took := l.waitAcks(t, 1000, 120*time.Second)
	t.Logf("%s on %s: %.0f commits/s", k.name, old, 1000/took.Seconds())
	if out, err := dk(old, "exec", oldC, "sh", "-c", k.check); err != nil {
		t.Fatalf("%s on %s fails its own check before the cut: %v %s", k.name, old, err, out)
	}

	// the cut: the old task keeps running, cut off
	healed := false
	heal := func() {
		if !healed {
			healed = true
			topo("heal", old)
		}
	}
	t.Cleanup(func() { heal(); allReady(t, 120*time.Second) })
	cut := time.Now()
	if _, err := topo("cut", old); err != nil {
		t.Fatal(err)
	}
	probe := startFenceProbe(old, oldC)

	// Swarm moves the task; the new task's database answers
	node2, c2 := waitMoved(t, svc, old, 180*time.Second)
	running := time.Now()
	p := probe.wait(30 * time.Second) // the fence is due 6–8 s after the cut
	isNew := func(n int64) bool { return n/1000000 > cut.Unix() }
	firstNew := l.firstAck(cut, isNew, 90*time.Second)
	if firstNew.IsZero() {
		t.Fatalf("no ack from the new task on %s within 90 s of it running; load's last lines:\n%s", node2, l.lastLines())
	}

	// 1. the old writer fenced itself before the new one presented the volume
	fenceLog := pluginLogTime(old, "fenced:", svc, cut.Add(-time.Second))
	writing := pluginLogTime(node2, "writing the volume here", svc, cut.Add(-time.Second))
	t.Logf("cut %s at %s; probe on %s: last write accepted %s after the cut, first EROFS %s after (%d writes accepted after the cut; other errors: %q); %s",
		old, cut.Format("15:04:05.000"), old, since(cut, p.lastOK), since(cut, p.firstRO), p.okAfterCut, p.otherErr, fencedStatus(old, svc))
	t.Logf("timings: cut → fence %s (plugin log %s, 1 s resolution), cut → %s writes the volume %s (plugin log), cut → new task running %.1f s, cut → first ack of the new task %.1f s",
		since(cut, p.firstRO), since(cut, fenceLog), node2, since(cut, writing), running.Sub(cut).Seconds(), firstNew.Sub(cut).Seconds())
	switch {
	case p.firstRO.IsZero():
		t.Errorf("writes inside the old container on %s never failed read-only within 30 s of the cut (last accepted %s after the cut; errors: %q)",
			old, since(cut, p.lastOK), p.otherErr)
	case !p.firstRO.Before(firstNew):
		t.Errorf("two writers: the old container on %s accepted writes until %s after the cut (first EROFS %s), the new task on %s acknowledged a commit %s after the cut",
			old, since(cut, p.lastOK), since(cut, p.firstRO), node2, since(cut, firstNew))
	}
	if !p.lastOK.IsZero() && !p.lastOK.Before(firstNew) {
		t.Errorf("two writers: the old container on %s accepted a write %s after the cut, after the new task's first ack (%s)", old, since(cut, p.lastOK), since(cut, firstNew))
	}
	switch {
	case fenceLog.IsZero():
		t.Errorf("%s's plugin log has no \"fenced\" line for %s since the cut; its last lines for the volume:\n%s", old, svc, pluginLogLines(old, svc, 10))
	case writing.IsZero():
		t.Errorf("%s's plugin log has no \"writing the volume here\" line for %s since the cut; its last lines for the volume:\n%s", node2, svc, pluginLogLines(node2, svc, 10))
	case writing.Before(fenceLog):
		t.Errorf("two writers: %s wrote the volume from %s, %s fenced itself only at %s (plugin logs)",
			node2, writing.Format("15:04:05"), old, fenceLog.Format("15:04:05"))
	}
	// the fence is meant to come Lease−2 s after the last renewal, before
	// the lease runs out at the other nodes: say when it did not
	if m := fenceFor.FindStringSubmatch(pluginLogLine(old, "fenced:", svc, cut.Add(-time.Second))); m != nil {
		if d, _ := strconv.ParseFloat(m[1], 64); d >= 8 {
			t.Logf("NOTE: %s fenced itself only after %s s without renewing, the whole 8 s lease (meant: 6 s, 2 s before the lease runs out at the others)", old, m[1])
		}
	}
	if !p.firstRO.IsZero() && !writing.IsZero() && !p.firstRO.Before(writing) {
		// within the log's one-second resolution: not a proof either way
		t.Logf("note: the first EROFS on %s (%s) is not before the second %s took the volume in (%s)",
			old, p.firstRO.Format("15:04:05.000"), node2, writing.Format("15:04:05"))
	}

	// 2. the new database recovered and holds every ack read 2 s before the cut
	r := l.verify(t, node2, c2, cut.Add(-2*time.Second), cut)
	t.Logf("%s cut %s → %s: %s", k.name, old, node2, r)

	// the new task writes on for a while, its node still cut off
	l.ackedSince(firstNew, 5*time.Second, 30*time.Second)
	before, err := dbRows(node2, c2, k)
	if err != nil {
		t.Fatalf("%s on %s: %v", k.name, node2, err)
	}
	healAt := time.Now()
	heal()

	// acks read while the node was cut off are the new task's; those read
	// before the cut, and those of connections started before the heal but
	// never heard of while cut off, are the old task's
	acks := l.snapshot()
	newPrefix := map[int64]bool{}
	for _, a := range acks {
		if a.at.After(cut.Add(time.Second)) && a.at.Before(healAt) {
			newPrefix[a.n/1000000] = true
		}
	}
	for pfx := range newPrefix {
		if pfx <= cut.Unix() {
			t.Errorf("an ack numbered from %s (before the cut) reached the collector while %s was cut off", time.Unix(pfx, 0).Format("15:04:05"), old)
		}
	}
	oldTask := func(n int64) bool { return !newPrefix[n/1000000] && n/1000000 <= healAt.Unix() }

	// 3. the old node keeps its copy aside once Swarm stopped the old task
	allReady(t, 120*time.Second)
	var diverged string
	eventually(t, 120*time.Second, "the diverged copy of "+svc+" on "+old, func() error {
		st, err := volumeStatus(old, svc)
		if err != nil {
			return err
		}
		if st["diverged"] == "" {
			return fmt.Errorf("Status %v", st)
		}
		ents, _ := os.ReadDir(filepath.Join(topoRoot, old, "syncvol", "volumes", svc, "diverged"))
		if len(ents) == 0 {
			return fmt.Errorf("Status.diverged %s but no diverged/ directory", st["diverged"])
		}
		diverged = filepath.Join(topoRoot, old, "syncvol", "volumes", svc, "diverged", ents[len(ents)-1].Name())
		return nil
	})
	keptAt := time.Now()
	t.Logf("%s keeps its copy aside %.1f s after the heal: %s", old, keptAt.Sub(healAt).Seconds(), diverged)
	aside, err := divergedRows(t, old, diverged, k)
	if err != nil {
		t.Errorf("the diverged copy on %s: %v", old, err)
	}
	if _, err := os.Stat(filepath.Join(diverged, "fence-probe")); p.okAfterCut > 0 && err != nil {
		t.Errorf("the probe's writes on %s after the cut are not in its diverged copy: %v", old, err)
	}

	// the live volume keeps the new writer's history only: let replication
	// run a few rounds (idle catch-up every 5 s) with the old node back
	l.ackedSince(keptAt, 8*time.Second, 30*time.Second)
	if c, _ := dk(node2, "ps", "-q", "--filter", "label=com.docker.swarm.service.name="+svc); c == "" || strings.Fields(c)[0] != c2 {
		t.Fatalf("the task on %s is no longer %s after the heal (now %q): service ps:\n%s", node2, c2, c, mustDk(t, "vps", "service", "ps", svc))
	}
	queried := time.Now()
	after, err := dbRows(node2, c2, k)
	if err != nil {
		t.Fatalf("%s on %s after the heal: %v", k.name, node2, err)
	}
	if out, err := dk(node2, "exec", c2, "sh", "-c", k.check); err != nil {
		t.Errorf("%s on %s fails its own check after the heal: %v %s", k.name, node2, err, out)
	}
	if out, _ := dk(node2, "exec", c2, "ls", "/data"); strings.Contains(out, "fence-probe") {
		t.Errorf("the old container's writes after the cut (fence-probe) are in the live volume on %s: %s", node2, out)
	}

	// the old task's rows: as the new database had them before the heal
	// (the newest generation shipped before the cut), and after
	var maxOld int64
	oldBefore, oldAfter := 0, 0
	for n := range before {
		if oldTask(n) {
			oldBefore++
			maxOld = max(maxOld, n)
		}
	}
	var merged []int64
	for n := range after {
		if oldTask(n) {
			oldAfter++
			if !before[n] {
				merged = append(merged, n)
			}
		}
	}
	if len(merged) > 0 {
		sort.Slice(merged, func(i, j int) bool { return merged[i] < merged[j] })
		t.Errorf("%d rows of the old task appeared in the live database on %s after the heal (first %d): its partition writes were merged", len(merged), node2, merged[0])
	}
	if oldAfter != oldBefore {
		t.Errorf("the old task's rows in the live database on %s: %d before the heal, %d after", node2, oldBefore, oldAfter)
	}
	// the partition writes kept aside never reach the live volume
	partition, inLive := 0, 0
	for n := range aside {
		if oldTask(n) && n > maxOld {
			partition++
			if after[n] {
				inLive++
			}
		}
	}
	if partition == 0 {
		t.Errorf("the diverged copy on %s holds no row past the live volume's newest row of the old task (%d rows in it): the old task's writes during the partition are not kept aside", old, len(aside))
	}
	if inLive > 0 {
		t.Errorf("%d of the %d rows the old task wrote during the partition (kept aside on %s) are in the live database on %s", inLive, partition, old, node2)
	}
	// acks of the old task read after the new task's first one (they
	// arrive after the heal) are of writes the live volume must not hold;
	// every ack of the new task must be in it
	late, lateIn, newAcks, newLost := 0, 0, 0, 0
	var lateFirst time.Time
	for _, a := range l.snapshot() {
		if !a.at.Before(queried) {
			continue
		}
		switch {
		case oldTask(a.n) && a.at.After(firstNew):
			late++
			if lateFirst.IsZero() {
				lateFirst = a.at
			}
			if after[a.n] {
				lateIn++
			}
		case !oldTask(a.n):
			newAcks++
			if !after[a.n] {
				newLost++
			}
		}
	}
	if lateIn > 0 {
		t.Errorf("%d of %d acks of the old task read after the new task's first ack are rows of the live database on %s", lateIn, late, node2)
	}
	if newLost > 0 {
		t.Errorf("%d of the new task's %d acks are not in its database on %s after the heal", newLost, newAcks, node2)
	}
	late1 := "none arrived"
	if late > 0 {
		late1 = fmt.Sprintf("the first read %.1f s after the heal", lateFirst.Sub(healAt).Seconds())
	}
	t.Logf("after the heal: live database on %s has %d rows (%d of the old task, newest %d; %d of the new task's acks); the diverged copy on %s has %d rows, %d of them written by the old task during the partition, none in the live volume: %v; old task's acks read after the new task's first: %d (%s), in the live volume: %d",
		node2, len(after), oldAfter, maxOld, newAcks, old, len(aside), partition, inLive == 0, late, late1, lateIn)
}

// fenceProbe writes into the old container's volume every ~250 ms from the
// cut on, until a write fails read-only.
type fenceProbe struct {
	done chan struct{}
	stop chan struct{}
	mu   sync.Mutex
	res  probeResult
}

type probeResult struct {
	lastOK     time.Time // the last write accepted returned then (the write was before)
	firstRO    time.Time // the first write refused with EROFS returned then (the fence was before)
	okAfterCut int
	otherErr   string
}

func startFenceProbe(node, container string) *fenceProbe {
	p := &fenceProbe{done: make(chan struct{}), stop: make(chan struct{})}
	go func() {
		defer close(p.done)
		deadline := time.Now().Add(60 * time.Second) // t may end first
		for i := 0; time.Now().Before(deadline); i++ {
			out, err := dk(node, "exec", container, "sh", "-c", fmt.Sprintf("echo %d >> /data/fence-probe", i))
			at := time.Now()
			p.mu.Lock()
			switch {
			case err == nil:
				p.res.lastOK = at
				p.res.okAfterCut++
			case strings.Contains(err.Error()+out, "Read-only file system"):
				p.res.firstRO = at
			default:
				p.res.otherErr = strings.TrimSpace(err.Error() + " " + out)
			}
			ro := !p.res.firstRO.IsZero()
			p.mu.Unlock()
			if ro {
				return
			}
			select {
			case <-p.stop:
				return
			case <-time.After(250 * time.Millisecond):
			}
		}
	}()
	return p
}

// wait returns the probe's result once the write failed read-only, or
// after d.
func (p *fenceProbe) wait(d time.Duration) probeResult {
	select {
	case <-p.done:
	case <-time.After(d):
		close(p.stop)
		<-p.done
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.res
}

// since is how long after from at was, for logs ("never" when zero).
func since(from, at time.Time) string {
	if at.IsZero() {
		return "never"
	}
	return fmt.Sprintf("%.1f s", at.Sub(from).Seconds())
}

// snapshot is a copy of the acks read so far.
func (l *dbLoad) snapshot() []dbAck {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]dbAck(nil), l.acks...)
}

// firstAck waits (up to d) for an ack read after at whose number is
// accepted, and returns when it was read (zero: none).
func (l *dbLoad) firstAck(at time.Time, accept func(int64) bool, d time.Duration) time.Time {
	deadline := time.Now().Add(d)
	for {
		for _, a := range l.snapshot() {
			if a.at.After(at) && accept(a.n) {
				return a.at
			}
		}
		if time.Now().After(deadline) {
			return time.Time{}
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// dbRows is every n of the database in the task's container.
func dbRows(node, container string, k *dbKind) (map[int64]bool, error) {
	out, err := dk(node, "exec", container, "sh", "-c", k.query)
	if err != nil {
		return nil, fmt.Errorf("query: %v", err)
	}
	return parseRows(out)
}

func parseRows(out string) (map[int64]bool, error) {
	have := map[int64]bool{}
	for _, f := range strings.Fields(out) {
		n, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return have, fmt.Errorf("query printed %q", f)
		}
		have[n] = true
	}
	return have, nil
}

// divergedRows opens a copy of a diverged SQLite copy (its crash recovery
// needs a writable directory) in a container on node and returns its rows;
// its own check must pass: a copy kept aside is whole.
func divergedRows(t *testing.T, node, dir string, k *dbKind) (map[int64]bool, error) {
	t.Helper()
	cp := filepath.Join(topoRoot, node, "diverged-copy-"+runID)
	os.RemoveAll(cp)
	defer os.RemoveAll(cp)
	if out, err := exec.Command("cp", "-a", dir, cp).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("cp: %v: %s", err, out)
	}
	run := func(script string) (string, error) {
		return dk(node, "run", "--rm", "-v", cp+":/data", "--entrypoint", "sh", k.image, "-c", script)
	}
	if out, err := run(k.check); err != nil {
		t.Errorf("the diverged copy on %s fails its own check: %v %s", node, err, out)
	}
	out, err := run(k.query)
	if err != nil {
		return nil, fmt.Errorf("query: %v", err)
	}
	return parseRows(out)
}

// volumeStatus is Status of `docker volume inspect` on node.
func volumeStatus(node, vol string) (map[string]string, error) {
	out, err := dk(node, "volume", "inspect", "-f", "{{json .Status}}", vol)
	if err != nil {
		return nil, err
	}
	var raw map[string]any // options is an object
	if err := json.Unmarshal([]byte(out), &raw); err != nil {
		return nil, fmt.Errorf("%v: %s", err, out)
	}
	st := map[string]string{}
	for k, v := range raw {
		if s, ok := v.(string); ok {
			st[k] = s
		} else {
			st[k] = fmt.Sprint(v)
		}
	}
	return st, nil
}

// fencedStatus is the role the old node reports for the volume, for logs.
func fencedStatus(node, vol string) string {
	st, err := volumeStatus(node, vol)
	if err != nil {
		return fmt.Sprintf("%s's volume inspect: %v", node, err)
	}
	return fmt.Sprintf("%s's volume inspect: role %q fenced %q", node, st["role"], st["fenced"])
}

// pluginLogTime is the time (1 s resolution) of the first line of the
// syncvol plugin in node's dockerd.log about vol containing what, at or
// after notBefore (zero: none).
func pluginLogTime(node, what, vol string, notBefore time.Time) time.Time {
	return logTime(pluginLogLine(node, what, vol, notBefore))
}

// pluginLogLine is that line ("": none).
func pluginLogLine(node, what, vol string, notBefore time.Time) string {
	for _, line := range pluginLog(node, vol) {
		if !strings.Contains(line, what) {
			continue
		}
		if at := logTime(line); !at.IsZero() && !at.Before(notBefore.Truncate(time.Second)) {
			return line
		}
	}
	return ""
}

var fenceFor = regexp.MustCompile(`for ([0-9.]+)s`)

// pluginLogLines is the last n lines about vol in node's dockerd.log.
func pluginLogLines(node, vol string, n int) string {
	lines := pluginLog(node, vol)
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

var innerTime = regexp.MustCompile(`time=\\"([^\\"]+)\\"`)

// logTime is the plugin's own timestamp of a line dockerd relayed.
func logTime(line string) time.Time {
	m := innerTime.FindStringSubmatch(line)
	if m == nil {
		return time.Time{}
	}
	at, _ := time.Parse(time.RFC3339, m[1])
	return at
}

func pluginLog(node, vol string) []string {
	b, _ := os.ReadFile(filepath.Join(topoRoot, node, "dockerd.log"))
	re := regexp.MustCompile(`volume=` + regexp.QuoteMeta(vol) + `([^A-Za-z0-9_.-]|$)`)
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		if re.MatchString(line) {
			out = append(out, line)
		}
	}
	return out
}
