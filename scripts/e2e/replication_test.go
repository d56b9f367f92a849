//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/homeswarm/homeswarm/bench/syncthing"
)

// treeScript writes the tree of issue 3 into /data: many small files in
// subdirectories, one large file, a rename and a delete, then DONE. A task
// that finds DONE (it moved here with its data) writes nothing.
const treeScript = `[ -f /data/DONE ] || { mkdir -p /data/t; i=0; while [ $i -lt 300 ]; do mkdir -p /data/t/d$((i%10)); echo "file $i $(hostname)" > /data/t/d$((i%10))/f$i; i=$((i+1)); done;
dd if=/dev/urandom of=/data/big bs=1M count=24 2>/dev/null;
mv /data/t/d1/f1 /data/t/renamed; rm /data/t/d2/f2;
echo done > /data/DONE; }`

// sumScript prints a checksum line for every file under /data, sorted.
const sumScript = `cd /data && find . -type f ! -name 'seq' | sort | xargs md5sum`

// runID keeps the names of one run apart from an earlier run's leftovers
// when the topology is reused (E2E_REUSE=1).
var runID = strconv.FormatInt(time.Now().Unix()%1000000, 36)

// sumDiff lists the checksum lines that differ between two sumScript
// outputs (before → after).
func sumDiff(before, after string) string {
	a, b := map[string]bool{}, map[string]bool{}
	for _, l := range strings.Split(before, "\n") {
		a[l] = true
	}
	for _, l := range strings.Split(after, "\n") {
		b[l] = true
	}
	var out []string
	for l := range a {
		if !b[l] {
			out = append(out, "- "+l)
		}
	}
	for l := range b {
		if !a[l] {
			out = append(out, "+ "+l)
		}
	}
	sort.Strings(out)
	if len(out) > 20 {
		out = append(out[:20], fmt.Sprintf("… %d more", len(out)-20))
	}
	return strings.Join(out, "\n")
}

// waitReplica waits until node holds file of vol (the newest generation
// of a snapshot volume moves on as it is written, so the path is looked
// up at every poll).
func waitReplica(t *testing.T, node, vol, file string, d time.Duration) {
	t.Helper()
	eventually(t, d, "file "+file+" of "+vol+" on "+node, func() error { _, err := os.Stat(replicaFile(node, vol, file)); return err })
}

func drainAndRestore(t *testing.T, node string) {
	t.Helper()
	mustDk(t, "vps", "node", "update", "--availability", "drain", node)
	t.Cleanup(func() { dk("vps", "node", "update", "--availability", "active", node) })
}

// TestReplicationDrainMovesTree: a service at home writes a tree; its node
// is drained; the task restarts on another home node and finds exactly the
// same tree.
func TestReplicationDrainMovesTree(t *testing.T) {
	vol := "e2e-drain-" + runID
	createService(t, vol, append([]string{"--constraint", "node.labels.location==home",
		"--mount", "type=volume,source=" + vol + ",target=/data,volume-driver=syncvol",
		"busybox"}, loop(treeScript)...)...)
	node, c := runningTask(t, vol, 60*time.Second)
	waitReplica(t, node, vol, "DONE", 60*time.Second)
	before := mustDk(t, node, "exec", c, "sh", "-c", sumScript)
	if n := len(strings.Split(before, "\n")); n != 300-1+1+1 { // 300 small − 1 deleted + big + DONE
		t.Fatalf("tree has %d files", n)
	}

	start := time.Now()
	drainAndRestore(t, node)
	var n2, c2 string
	eventually(t, 90*time.Second, "task on another node", func() error {
		n2, c2 = runningTask(t, vol, 90*time.Second)
		if n2 == node {
			return fmt.Errorf("still on %s", node)
		}
		return nil
	})
	t.Logf("drain: task moved %s → %s in %s", node, n2, time.Since(start).Round(time.Millisecond))
	after := mustDk(t, n2, "exec", c2, "sh", "-c", sumScript)
	if after != before {
		t.Fatalf("tree differs after the move:\n%s", sumDiff(before, after))
	}
}

// TestReplicationEngineKill: the engine of the node running the task is
// killed outright; the task comes back elsewhere with everything written
// more than a couple of seconds before the kill.
func TestReplicationEngineKill(t *testing.T) {
	vol := "e2e-kill-" + runID
	createService(t, vol, append([]string{"--constraint", "node.labels.location==home",
		"--mount", "type=volume,source=" + vol + ",target=/data,volume-driver=syncvol",
		"busybox"}, loop(treeScript+"; i=0; while :; do i=$((i+1)); echo $i >> /data/seq; sleep 0.1; done")...)...)
	node, _ := runningTask(t, vol, 60*time.Second)
	waitReplica(t, node, vol, "DONE", 60*time.Second)
	sums := mustDk(t, node, "run", "--rm", "-v", vol+":/data", "busybox", "sh", "-c", sumScript+" | grep -v DONE")
	time.Sleep(2 * time.Second)
	b, _ := os.ReadFile(replicaFile(node, vol, "seq"))
	acked := len(strings.Fields(string(b))) // lines on disk 2 s before the kill
	time.Sleep(2 * time.Second)

	if _, err := topo("engine-stop", node, "--kill"); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	t.Cleanup(func() { topo("engine-start", node) })
	var n2, c2 string
	eventually(t, 120*time.Second, "task rescheduled", func() error {
		out, err := dk("vps", "service", "ps", vol, "--filter", "desired-state=running", "--format", "{{.Node}} {{.CurrentState}}")
		if err != nil {
			return err
		}
		for _, l := range strings.Split(out, "\n") {
			if f := strings.Fields(l); len(f) > 1 && f[0] != node && f[1] == "Running" {
				n2 = f[0]
				c, err := dk(n2, "ps", "-q", "--filter", "label=com.docker.swarm.service.name="+vol)
				if err != nil || c == "" {
					return fmt.Errorf("no container yet on %s", n2)
				}
				c2 = strings.Fields(c)[0]
				return nil
			}
		}
		return fmt.Errorf("tasks: %q", out)
	})
	t.Logf("kill: task back on %s %s after the kill; %d lines were on disk 2 s before it", n2, time.Since(killed).Round(time.Millisecond), acked)
	seq := mustDk(t, n2, "exec", c2, "cat", "/data/seq")
	lines := strings.Fields(seq)
	// The new task appends from 1 again; the old lines come first.
	for i := 0; i < acked; i++ {
		if i >= len(lines) || lines[i] != strconv.Itoa(i+1) {
			t.Fatalf("line %d of %d written 2 s before the kill is lost (have %d lines)", i+1, acked, len(lines))
		}
	}
	if got := mustDk(t, n2, "exec", c2, "sh", "-c", sumScript+" | grep -v DONE"); got != sums {
		t.Fatalf("tree differs after the kill:\n%s", sumDiff(sums, got))
	}
}

// TestReplicationJoinAndWrongKey: a fourth engine with only the cluster key
// and one peer receives existing volumes; one with a wrong key receives
// nothing and is refused.
func TestReplicationJoinAndWrongKey(t *testing.T) {
	const vol = "e2e-join"
	mustDk(t, "home2", "volume", "create", "-d", "syncvol", vol)
	mustDk(t, "home2", "run", "--rm", "-v", vol+":/data", "busybox", "sh", "-c", "echo joined > /data/hello")
	t.Cleanup(func() { dk("home2", "volume", "rm", vol) })

	if _, err := topo("add-node", "home4"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "home4 lists the volume", func() error {
		out, err := dk("home4", "volume", "ls", "-q")
		if err != nil || !strings.Contains(out, vol) {
			return fmt.Errorf("%q %v", out, err)
		}
		return nil
	})
	eventually(t, 60*time.Second, "home4 holds the data", func() error {
		b, err := os.ReadFile(replicaFile("home4", vol, "hello"))
		if err != nil || string(b) != "joined\n" {
			return fmt.Errorf("%q %v", b, err)
		}
		return nil
	})
	if out := mustDk(t, "home4", "run", "--rm", "-v", vol+":/data", "busybox", "cat", "/data/hello"); out != "joined" {
		t.Fatalf("container on home4 reads %q", out)
	}

	// Only what the VPS logs from here on counts: earlier tests' refusals
	// (strangers, revoked nodes) are in the same log.
	vpsLog := filepath.Join(topoRoot, "vps", "dockerd.log")
	var logged int64
	if fi, err := os.Stat(vpsLog); err == nil {
		logged = fi.Size()
	}
	cmd := exec.Command(filepath.Join(repo, "scripts/topo.sh"), "add-node", "home5")
	cmd.Env = append(os.Environ(), "TOPO_CLUSTER_KEY=this-is-not-the-cluster-key")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("add-node home5: %v\n%s", err, out)
	}
	// home5 dials the VPS; the VPS must log the refusal, and home5 must
	// never see a volume.
	eventually(t, 60*time.Second, "refusal logged on the VPS", func() error {
		b, _ := os.ReadFile(vpsLog)
		if !regexp.MustCompile(`(?i)refus`).Match(b[min(int(logged), len(b)):]) {
			return fmt.Errorf("no refusal in the VPS's log yet")
		}
		return nil
	})
	time.Sleep(3 * time.Second)
	if out := mustDk(t, "home5", "volume", "ls", "-q"); out != "" {
		t.Fatalf("wrong-key node lists volumes: %q", out)
	}
	if _, err := os.Stat(replicaFile("home5", vol, "hello")); !os.IsNotExist(err) {
		t.Fatalf("wrong-key node received data: %v", err)
	}
}

// TestReplicationPartitionKeepsBoth: a home node is cut off, the same file
// is written on both sides, the link heals: both versions survive (one as a
// Syncthing conflict copy).
func TestReplicationPartitionKeepsBoth(t *testing.T) {
	const vol = "e2e-part"
	// Many writers at once is what replication=files is for.
	mustDk(t, "home1", "volume", "create", "-d", "syncvol", "-o", "replication=files", vol)
	t.Cleanup(func() {
		topo("heal", "home3")
		for _, n := range []string{"home1", "home3"} {
			dk(n, "volume", "rm", vol)
		}
	})
	mustDk(t, "home1", "run", "--rm", "-v", vol+":/data", "busybox", "sh", "-c", "echo base > /data/f")
	eventually(t, 30*time.Second, "home3 has the file", func() error {
		b, err := os.ReadFile(replicaFile("home3", vol, "f"))
		if err != nil || string(b) != "base\n" {
			return fmt.Errorf("%q %v", b, err)
		}
		return nil
	})
	if _, err := topo("cut", "home3"); err != nil {
		t.Fatal(err)
	}
	mustDk(t, "home1", "run", "--rm", "-v", vol+":/data", "busybox", "sh", "-c", "echo side-A > /data/f")
	mustDk(t, "home3", "run", "--rm", "-v", vol+":/data", "busybox", "sh", "-c", "echo side-B > /data/f")
	if _, err := topo("heal", "home3"); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"home1", "home3"} {
		eventually(t, 90*time.Second, "both versions on "+n, func() error {
			dir := filepath.Dir(replicaFile(n, vol, "f"))
			ents, err := os.ReadDir(dir)
			if err != nil {
				return err
			}
			seen := map[string]bool{}
			for _, e := range ents {
				if e.Name() == "f" || strings.HasPrefix(e.Name(), "f.sync-conflict-") {
					b, _ := os.ReadFile(filepath.Join(dir, e.Name()))
					seen[strings.TrimSpace(string(b))] = true
				}
			}
			if !seen["side-A"] || !seen["side-B"] {
				return fmt.Errorf("versions on %s: %v", n, seen)
			}
			return nil
		})
	}
}

// TestReplicationSyncthingInterop: a real Syncthing (Debian's) in its own
// network namespace shares a volume (-o share=, with -o share-mode=readwrite:
// the NAS holds the files in the clear and may change them) and files flow
// both ways.
func TestReplicationSyncthingInterop(t *testing.T) {
	if _, err := exec.LookPath("syncthing"); err != nil {
		// e2e runs as root (CI installs it): a missing peer is a failure.
		t.Fatal("syncthing is not installed (apt-get install syncthing; .ci/run does)")
	}
	const vol = "e2e-nas"
	home := t.TempDir()
	nasID, err := syncthing.Generate(t.Context(), "syncthing", home)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := topo("add-host", "nas"); err != nil {
		t.Fatal(err)
	}
	mustDk(t, "home3", "volume", "create", "-d", "syncvol", "-o", "share="+nasID+"@192.168.50.30:22000", "-o", "share-mode=readwrite", vol)
	t.Cleanup(func() { dk("home3", "volume", "rm", vol) })
	st := mustDk(t, "home3", "volume", "inspect", "-f", `{{index .Status "folderID"}} {{index .Status "device"}}`, vol)
	f := strings.Fields(st)
	if len(f) != 2 {
		t.Fatalf("volume status lacks folderID/device: %q", st)
	}
	folderID, homeID := f[0], f[1]

	// Plain Syncthing: no discovery, relays, NAT or GUI, our device and
	// the volume's folder configured.
	folder := filepath.Join(home, "folder")
	os.MkdirAll(filepath.Join(folder, ".stfolder"), 0o755)
	cfgPath := filepath.Join(home, "config.xml")
	b, _ := os.ReadFile(cfgPath)
	cfg, err := syncthing.Quiet(string(b), "tcp://0.0.0.0:22000")
	if err != nil {
		t.Fatal(err)
	}
	extra := fmt.Sprintf(`<folder id="%s" label="%s" path="%s" type="sendreceive" rescanIntervalS="60" fsWatcherEnabled="true" fsWatcherDelayS="1">
        <device id="%s"></device>
    </folder>
    <device id="%s" name="home3" compression="metadata"><address>tcp://192.168.50.13:22000</address></device>
</configuration>`, folderID, vol, folder, homeID, homeID)
	cfg = strings.Replace(cfg, "</configuration>", extra, 1)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	logf, _ := os.Create(filepath.Join(home, "syncthing.log"))
	st1 := exec.Command("ip", "netns", "exec", envOr("TOPO_PREFIX", "hs")+"-nas", "syncthing", "serve", "--home="+home, "--no-browser", "--no-restart", "--no-upgrade")
	st1.Stdout, st1.Stderr = logf, logf
	st1.Env = append(os.Environ(), "STNODEFAULTFOLDER=1", "STNOUPGRADE=1")
	if err := st1.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st1.Process.Kill(); st1.Wait() })

	mustDk(t, "home3", "run", "--rm", "-v", vol+":/data", "busybox", "sh", "-c", "echo from-swarm > /data/a")
	eventually(t, 60*time.Second, "file reaches the plain Syncthing", func() error {
		b, err := os.ReadFile(filepath.Join(folder, "data", "a"))
		if err != nil || string(b) != "from-swarm\n" {
			return fmt.Errorf("%q %v", b, err)
		}
		return nil
	})
	if err := os.WriteFile(filepath.Join(folder, "data", "b"), []byte("from-nas\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "file from the plain Syncthing reaches the volume", func() error {
		out, err := dk("home3", "run", "--rm", "-v", vol+":/data", "busybox", "cat", "/data/b")
		if err != nil || out != "from-nas" {
			return fmt.Errorf("%q %v", out, err)
		}
		return nil
	})
}
