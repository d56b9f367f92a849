//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// replicaFile is where node holds file of volume vol: in the replicated
// folder of a file-by-file volume, or in the newest complete generation of
// a snapshot volume (the live data on a node that has none yet).
func replicaFile(node, vol, file string) string {
	base := filepath.Join(topoRoot, node, "syncvol", "volumes", vol)
	if _, err := os.Stat(filepath.Join(base, "replica")); err == nil {
		return filepath.Join(base, "replica", "data", file)
	}
	if gens, _ := filepath.Glob(filepath.Join(base, "gens", "*")); len(gens) > 0 {
		sort.Strings(gens)
		return filepath.Join(gens[len(gens)-1], file)
	}
	return filepath.Join(base, "live", file)
}

// TestSyncvolServiceAtHome: a Swarm service constrained to the home nodes,
// with a syncvol volume, starts there and writes into the node's replica.
func TestSyncvolServiceAtHome(t *testing.T) {
	createService(t, "e2e-home", append([]string{"--constraint", "node.labels.location==home",
		"--mount", "type=volume,source=e2e-home,target=/data,volume-driver=syncvol",
		"busybox"}, loop("hostname > /data/who; echo written > /data/marker")...)...)
	node, c := runningTask(t, "e2e-home", 60*time.Second)
	if !strings.HasPrefix(node, "home") {
		t.Fatalf("task runs on %s, want a home node", node)
	}
	eventually(t, 10*time.Second, "marker in the container", func() error {
		out, err := dk(node, "exec", c, "cat", "/data/marker")
		if err != nil || out != "written" {
			return fmt.Errorf("%q %v", out, err)
		}
		return nil
	})
	// A snapshot volume's newest generation on the host may predate the
	// write by up to a generation interval: wait for one that holds it.
	eventually(t, 15*time.Second, "marker in the replica on "+node+"'s host", func() error {
		b, err := os.ReadFile(replicaFile(node, "e2e-home", "marker"))
		if err != nil || strings.TrimSpace(string(b)) != "written" {
			return fmt.Errorf("%q %v", b, err)
		}
		return nil
	})
	var vols []struct {
		Driver, Scope, Mountpoint string
		Status                    map[string]any
	}
	if err := json.Unmarshal([]byte(mustDk(t, node, "volume", "inspect", "e2e-home")), &vols); err != nil || len(vols) != 1 {
		t.Fatalf("inspect: %v", err)
	}
	v := vols[0]
	if !strings.HasPrefix(v.Driver, "syncvol") || v.Scope != "global" || v.Mountpoint != "/mnt/volumes/e2e-home" || v.Status["mounts"] != "1" {
		t.Fatalf("inspect = %+v", v)
	}
}

// TestSyncvolSurvivesPluginRestart: disabling and enabling the plugin keeps
// the running container's data and lets new containers mount the volume.
func TestSyncvolSurvivesPluginRestart(t *testing.T) {
	const vol = "e2e-plugin"
	createService(t, vol, append([]string{"--constraint", "node.hostname==home1",
		"--mount", "type=volume,source=" + vol + ",target=/data,volume-driver=syncvol",
		"busybox"}, loop("echo before > /data/f")...)...)
	node, c := runningTask(t, vol, 60*time.Second)
	eventually(t, 10*time.Second, "first write", func() error {
		_, err := os.Stat(replicaFile(node, vol, "f"))
		return err
	})
	mustDk(t, node, "plugin", "disable", "-f", "syncvol")
	mustDk(t, node, "plugin", "enable", "syncvol")
	if out := mustDk(t, node, "exec", c, "sh", "-c", "echo after >> /data/f; cat /data/f"); out != "before\nafter" {
		t.Fatalf("running container after plugin restart sees %q", out)
	}
	// The plugin found its user again.
	if st := mustDk(t, node, "volume", "inspect", "-f", "{{index .Status \"mounts\"}}", vol); st != "1" {
		t.Fatalf("mounts after plugin restart = %q, want 1", st)
	}
	// A new container mounts the volume through the restarted plugin.
	if out := mustDk(t, node, "run", "--rm", "-v", vol+":/data", "busybox", "cat", "/data/f"); out != "before\nafter" {
		t.Fatalf("new container after plugin restart sees %q", out)
	}
	removeService(vol)
	if st := mustDk(t, node, "volume", "inspect", "-f", "{{index .Status \"mounts\"}}", vol); st != "0" {
		t.Fatalf("mounts after the service is gone = %q, want 0", st)
	}
	if b, _ := os.ReadFile(replicaFile(node, vol, "f")); string(b) != "before\nafter\n" {
		t.Fatalf("replica after everything = %q", b)
	}
}

// TestSyncvolSurvivesEngineRestart: the node's dockerd stops and starts;
// the task comes back on the same node and finds its data.
func TestSyncvolSurvivesEngineRestart(t *testing.T) {
	const vol = "e2e-engine"
	createService(t, vol, append([]string{"--constraint", "node.hostname==home2",
		"--mount", "type=volume,source=" + vol + ",target=/data,volume-driver=syncvol",
		"busybox"}, loop("date +%s%N >> /data/starts")...)...)
	node, _ := runningTask(t, vol, 60*time.Second)
	eventually(t, 10*time.Second, "first start recorded", func() error {
		_, err := os.Stat(replicaFile(node, vol, "starts"))
		return err
	})
	if _, err := topo("engine-stop", node); err != nil {
		t.Fatal(err)
	}
	if _, err := topo("engine-start", node); err != nil {
		t.Fatal(err)
	}
	eventually(t, 90*time.Second, "task restarted with the old data", func() error {
		b, err := os.ReadFile(replicaFile(node, vol, "starts"))
		if err != nil {
			return err
		}
		if n := len(strings.Fields(string(b))); n < 2 {
			return fmt.Errorf("%d starts recorded", n)
		}
		return nil
	})
	n2, c := runningTask(t, vol, 60*time.Second)
	if n2 != node {
		t.Fatalf("task moved to %s", n2)
	}
	if out := mustDk(t, node, "exec", c, "cat", "/data/starts"); len(strings.Fields(out)) < 2 {
		t.Fatalf("container sees starts %q, want at least 2", out)
	}
}

// TestSyncvolVolumeCLI: docker volume create/ls/inspect/rm behave as a
// Docker user expects, and bad input gets clear errors.
func TestSyncvolVolumeCLI(t *testing.T) {
	const node = "home3"
	t.Cleanup(func() {
		dk(node, "rm", "-f", "e2e-cli-user")
		dk(node, "volume", "rm", "e2e-cli")
	})
	mustDk(t, node, "volume", "create", "-d", "syncvol", "-o", "uid=1000", "-o", "mode=0750", "e2e-cli")
	mustDk(t, node, "volume", "create", "-d", "syncvol", "-o", "uid=1000", "-o", "mode=0750", "e2e-cli") // idempotent
	if out := mustDk(t, node, "volume", "ls", "--format", "{{.Driver}} {{.Name}}"); !strings.Contains(out, "syncvol:latest e2e-cli") {
		t.Fatalf("volume ls = %q", out)
	}
	if out := mustDk(t, node, "volume", "inspect", "-f", "{{.Scope}} {{index .Status.options \"uid\"}} {{index .Status \"sync\"}}", "e2e-cli"); !strings.HasPrefix(out, "global 1000 ") {
		t.Fatalf("inspect = %q", out)
	}
	if out := mustDk(t, node, "run", "--name", "e2e-cli-user", "-v", "e2e-cli:/vol", "busybox", "sh", "-c", "stat -c '%u %a' /vol; echo x > /vol/x"); out != "1000 750" {
		t.Fatalf("volume root owner/mode = %q", out)
	}
	// In use by a (stopped) container: Docker refuses to remove it.
	if _, err := dk(node, "volume", "rm", "e2e-cli"); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("rm of a volume in use: %v", err)
	}
	mustDk(t, node, "rm", "e2e-cli-user")
	mustDk(t, node, "volume", "rm", "e2e-cli")
	if _, err := os.Stat(filepath.Dir(replicaFile(node, "e2e-cli", "x"))); !os.IsNotExist(err) {
		t.Fatalf("replica still on disk after rm: %v", err)
	}
	// remove=local (the default): the other nodes keep the volume, so the
	// cluster still lists it.
	if out, _ := dk("home1", "volume", "ls", "-q"); !strings.Contains(out, "e2e-cli") {
		t.Fatalf("local rm on %s removed the volume elsewhere: %q", node, out)
	}

	// remove=everywhere: the volume goes from every node.
	const gone = "e2e-cli-gone"
	mustDk(t, node, "volume", "create", "-d", "syncvol", "-o", "remove=everywhere", gone)
	mustDk(t, node, "run", "--rm", "-v", gone+":/vol", "busybox", "sh", "-c", "echo x > /vol/x")
	eventually(t, 30*time.Second, "volume on home1", func() error {
		_, err := os.Stat(replicaFile("home1", gone, "x"))
		return err
	})
	mustDk(t, node, "volume", "rm", gone)
	for _, n := range []string{"vps", "home1", "home2", "home3"} {
		eventually(t, 30*time.Second, "volume gone from "+n, func() error {
			if out, _ := dk(n, "volume", "ls", "-q"); strings.Contains(out, gone) {
				return fmt.Errorf("still listed on %s", n)
			}
			if _, err := os.Stat(replicaFile(n, gone, "x")); err == nil {
				return fmt.Errorf("data still on %s", n)
			}
			return nil
		})
	}

	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"unknown option", []string{"-o", "size=10G", "e2e-bad"}, "valid options:"},
		{"bad uid", []string{"-o", "uid=root", "e2e-bad"}, "is not a numeric id"},
		{"bad remove", []string{"-o", "remove=all", "e2e-bad"}, "local or everywhere"},
		{"over-long name", []string{strings.Repeat("n", 200)}, "invalid volume name"},
		{"dot dot", []string{".."}, "name"},
		{"slash", []string{"a/b"}, "name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := dk(node, append([]string{"volume", "create", "-d", "syncvol"}, tc.args...)...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("create %v: %v, want an error containing %q", tc.args, err, tc.want)
			}
		})
	}
	// Nothing was created for the refused names, on the host or in Docker.
	ents, _ := os.ReadDir(filepath.Join(topoRoot, node, "syncvol", "volumes"))
	for _, e := range ents {
		if strings.Contains(e.Name(), "bad") || strings.HasPrefix(e.Name(), "nnnn") {
			t.Fatalf("refused volume left %s", e.Name())
		}
	}
}
