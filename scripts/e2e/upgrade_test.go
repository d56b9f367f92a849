//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestPluginUpgrade (issue 13, items 6 and 7): the plugins as a user gets
// them, and upgraded under a running database.
//
//  1. Every node installs both plugins from the topology's registry
//     (`TOPO_PLUGINS=registry topo.sh install-plugins`: `make push` to
//     Debian's docker-registry on the VPS, then `docker plugin install
//     --grant-all-permissions --alias NAME REPO/NAME:latest KEY=value…`
//     as README tells a user), unless the topology came up that way.
//  2. A new build (VERSION stamped) is pushed under a second tag.
//  3. SQLite at home on a syncvol volume and a meshnet network commits
//     continuously (dbload_test.go counts its acks); on its node meshnet,
//     then syncvol are upgraded in place with scripts/upgrade-plugin.sh
//     (layers fetched first, then disable -f, upgrade, state.source again,
//     enable), README's procedure, no drain. The same container keeps committing
//     (Swarm never restarted the task), the new builds run, the container
//     still reaches a container on the VPS over the meshnet network, the
//     database passes its own check and holds every ack.
//  4. `make install` (remove and recreate) of both plugins on that node,
//     the same checks.
//  5. The node is drained: the next node's database holds every ack, so
//     the upgraded syncvol kept shipping the volume.
func TestPluginUpgrade(t *testing.T) {
	k := dbKinds[envOr("E2E_UPGRADE_DB", "sqlite")]
	if k == nil {
		t.Fatalf("E2E_UPGRADE_DB: unknown database %q (sqlite, postgres, mariadb)", os.Getenv("E2E_UPGRADE_DB"))
	}
	repoRef := "203.0.113.10:5000/homeswarm"

	// 1. from the registry, on every node
	start := time.Now()
	fromRegistry := true
	for _, n := range []string{"vps", "home1", "home2", "home3"} {
		for _, p := range []string{"meshnet", "syncvol"} {
			ref, _ := dk(n, "plugin", "inspect", p, "--format", "{{.PluginReference}}")
			if !strings.HasPrefix(ref, repoRef+"/"+p+":") {
				fromRegistry = false
			}
		}
	}
	if !fromRegistry {
		if out, err := topoEnv([]string{"TOPO_PLUGINS=registry"}, "install-plugins"); err != nil {
			t.Fatalf("install from the registry: %v %s", err, out)
		}
		allReady(t, 120*time.Second)
		t.Logf("every node installed both plugins from %s with docker plugin install in %.1f s",
			repoRef, time.Since(start).Seconds())
	}
	for _, n := range []string{"vps", "home1", "home2", "home3"} {
		for _, p := range []string{"meshnet", "syncvol"} {
			ref := mustDk(t, n, "plugin", "inspect", p, "--format", "{{.PluginReference}} {{.Enabled}}")
			if !strings.HasPrefix(ref, repoRef+"/"+p+":") || !strings.HasSuffix(ref, " true") {
				t.Fatalf("%s on %s: %q, want installed from %s/%s and enabled", p, n, ref, repoRef, p)
			}
		}
	}

	// 2. the new version
	tag := "v2-" + runID
	start = time.Now()
	if out, err := topoEnv([]string{"VERSION=" + tag}, "push-plugins", tag); err != nil {
		t.Fatalf("push %s: %v %s", tag, err, out)
	}
	t.Logf("make push REPO=%s TAG=%s (build stamped %s) in %.1f s", repoRef, tag, tag, time.Since(start).Seconds())

	// 3. the database and a peer on the VPS on the same meshnet network
	importDBImages(t, []string{k.name})
	network := "up-net-" + runID
	createNetwork(t, network, "--attachable")
	peer := "up-peer-" + runID
	mustDk(t, "vps", "run", "-d", "--name", peer, "--network", network, "busybox", "sleep", "3600")
	t.Cleanup(func() { dk("vps", "rm", "-f", peer) })
	peerIP := containerIP(t, "vps", peer, network)

	svc := "up-" + k.name + "-" + runID
	l, node, c := startDBService(t, k, svc, network, 500)
	reach := func(what string) {
		t.Helper()
		start := time.Now()
		if err := poll(30*time.Second, func() error {
			_, err := dk(node, "exec", c, "ping", "-c1", "-W1", peerIP)
			return err
		}); err != nil {
			own := containerIP(t, node, c, network)
			meshDiag(t, map[string]bool{peerIP: true, peerIP + "/32": true, own: true, own + "/32": true})
			t.Fatalf("%s: the task (%s on %s) does not reach %s over %s within 30 s: %v", what, own, node, peerIP, network, err)
		}
		t.Logf("%s: the task on %s reaches the VPS's container over meshnet (%.1f s)", what, node, time.Since(start).Seconds())
	}
	reach("before the upgrade")

	upgrade := func(what string, steps func() error) {
		t.Helper()
		began := time.Now()
		if err := steps(); err != nil {
			t.Fatalf("%s on %s: %v", what, node, err)
		}
		took := time.Since(began)
		reach("after " + what)
		// the volume's crash safety is back: this node writes it again
		// and ships fresh generations
		var st map[string]string
		eventually(t, 30*time.Second, "after "+what+": "+node+" writes and ships "+svc+" again", func() (err error) {
			if st, err = volumeStatus(node, svc); err != nil {
				return err
			}
			age, err := time.ParseDuration(st["generationAge"])
			if st["role"] != "writer" || err != nil || age > 2*time.Second || st["fenced"] != "" {
				return fmt.Errorf("status %v", st)
			}
			return nil
		})
		t.Logf("after %s: %s writes the volume (epoch %s), generations shipping again %.1f s after the upgrade began (lag p99 %s)",
			what, node, st["epoch"], time.Since(began).Seconds(), st["lagP99"])
		l.waitAcks(t, 200, 60*time.Second)
		if c2 := taskContainer(t, svc); c2 != c {
			t.Errorf("after %s the task's container is %s, was %s: Swarm restarted the task", what, c2, c)
		}
		if hist := mustDk(t, "vps", "service", "ps", "-q", svc); len(strings.Fields(hist)) != 1 {
			t.Errorf("after %s service %s has tasks %q: Swarm restarted it", what, svc, hist)
		}
		gap, at := l.maxGap(began.Add(-2*time.Second), time.Now())
		r := l.verify(t, node, c, time.Time{}, began)
		t.Logf("%s on %s took %.1f s; %d acks during it, the longest pause between two acks %.2f s (at %s); same container; %s",
			what, node, took.Seconds(), l.countBetween(began, began.Add(took)), gap.Seconds(), at.Format("15:04:05.000"), r)
	}

	// 3. docker plugin upgrade, in place: meshnet, then syncvol
	upgrade("docker plugin upgrade meshnet+syncvol", func() error {
		for _, p := range []string{"meshnet", "syncvol"} {
			s := time.Now()
			out, err := onNode(node, filepath.Join(repo, "scripts/upgrade-plugin.sh"), p, repoRef+"/"+p+":"+tag)
			if err != nil {
				return fmt.Errorf("upgrade-plugin.sh %s: %v %s", p, err, out)
			}
			t.Logf("upgrade-plugin.sh %s %s/%s:%s on %s: %.2f s (%s)", p, repoRef, p, tag, node, time.Since(s).Seconds(), out)
		}
		return nil
	})
	for _, p := range []string{"meshnet", "syncvol"} {
		if ref := mustDk(t, node, "plugin", "inspect", p, "--format", "{{.PluginReference}} {{.Enabled}}"); ref != repoRef+"/"+p+":"+tag+" true" {
			t.Errorf("%s on %s after the upgrade: %q", p, node, ref)
		}
		if !pluginLogged(node, p, tag) {
			t.Errorf("%s on %s: no 'starting … version=%s' in the engine's log: the new build does not run", p, node, tag)
		}
	}

	// 4. make install: remove and recreate from the built bundles
	upgrade("make install meshnet+syncvol", func() error {
		s := time.Now()
		out, err := onNode(node, "make", "-s", "-C", repo, "install")
		t.Logf("make install on %s: %.2f s", node, time.Since(s).Seconds())
		if err != nil {
			return fmt.Errorf("make install: %v %s", err, out)
		}
		return nil
	})

	// 5. drain: the volume was still replicated by the upgraded plugin
	drained := time.Now()
	drainAndRestore(t, node)
	node2, c2 := waitMoved(t, svc, node, 180*time.Second)
	mustDk(t, "vps", "node", "update", "--availability", "active", node)
	l.ackedSince(drained, 0, 60*time.Second)
	r := l.verify(t, node2, c2, time.Time{}, drained)
	t.Logf("drain %s → %s after the upgrades: task running there %.1f s after the drain; %s",
		node, node2, time.Since(drained).Seconds(), r)
}

// topoEnv runs topo.sh with extra environment.
func topoEnv(env []string, args ...string) (string, error) {
	cmd := exec.Command(filepath.Join(repo, "scripts/topo.sh"), args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// onNode runs a command with DOCKER_HOST set to node's engine.
func onNode(node string, name string, args ...string) (string, error) {
	host, err := topo("host", node)
	if err != nil {
		return "", err
	}
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), "DOCKER_HOST="+host)
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// taskContainer is the container of service's running task ("" if none).
func taskContainer(t *testing.T, service string) string {
	t.Helper()
	_, c := runningTask(t, service, 60*time.Second)
	return c
}

// pluginLogged reports whether node's engine log holds plugin's start line
// for version (the plugins log to their stdout, which dockerd logs).
func pluginLogged(node, plugin, version string) bool {
	b, err := os.ReadFile(filepath.Join(topoRoot, node, "dockerd.log"))
	return err == nil && strings.Contains(string(b), "msg=starting plugin="+plugin+" version="+version)
}

// maxGap is the longest pause between two consecutive acks read in
// [from, to], and when it ended.
func (l *dbLoad) maxGap(from, to time.Time) (time.Duration, time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var gap time.Duration
	var at, prev time.Time
	for _, a := range l.acks {
		if a.at.Before(from) || a.at.After(to) {
			continue
		}
		if !prev.IsZero() && a.at.Sub(prev) > gap {
			gap, at = a.at.Sub(prev), a.at
		}
		prev = a.at
	}
	return gap, at
}

// countBetween is the number of acks read in [from, to].
func (l *dbLoad) countBetween(from, to time.Time) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, a := range l.acks {
		if !a.at.Before(from) && !a.at.After(to) {
			n++
		}
	}
	return n
}
