//go:build e2e

// Package e2e drives the real engines of the seed topology (scripts/topo.sh):
// four dockerd, each in its own network namespace, in one Swarm behind a
// NAT box, with the plugins installed by `make install`. Run it with
// `make test-e2e` (as root); it brings the topology up, runs, and tears it
// down, leaving nothing behind.
package e2e

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

var (
	repo     string
	topoRoot = envOr("TOPO_ROOT", defaultTopoRoot())
)

// defaultTopoRoot is topo.sh's: another prefix than hs has its own root.
func defaultTopoRoot() string {
	if p := envOr("TOPO_PREFIX", "hs"); p != "hs" {
		return "/var/lib/homeswarm-topo-" + p
	}
	return "/var/lib/homeswarm-topo"
}

func envOr(k, d string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return d
}

func TestMain(m *testing.M) {
	_, file, _, _ := runtime.Caller(0)
	repo = filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
	if os.Geteuid() != 0 {
		fmt.Println("e2e: skipped, needs root for network namespaces and dockerd")
		os.Exit(0)
	}
	// As root (CI) the tests must run: a missing engine fails them.
	if _, err := exec.LookPath("dockerd"); err != nil {
		fmt.Println("e2e: FAIL: running as root but dockerd is not installed:", err)
		os.Exit(1)
	}
	reuse := os.Getenv("E2E_REUSE") == "1" // a topology is already up
	if !reuse {
		cmd := exec.Command(filepath.Join(repo, "scripts/topo.sh"), "up")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Println("e2e: topology did not come up:", err)
			down()
			os.Exit(1)
		}
	}
	code := m.Run()
	if !reuse && os.Getenv("E2E_KEEP") != "1" {
		if err := down(); err != nil {
			fmt.Println("e2e: teardown:", err)
			code = 1
		}
	}
	os.Exit(code)
}

func down() error {
	cmd := exec.Command(filepath.Join(repo, "scripts/topo.sh"), "down")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	return cmd.Run()
}

// topo runs scripts/topo.sh with args and returns its trimmed stdout.
func topo(args ...string) (string, error) {
	cmd := exec.Command(filepath.Join(repo, "scripts/topo.sh"), args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		err = fmt.Errorf("topo.sh %s: %v: %s%s", strings.Join(args, " "), err, errb.String(), out.String())
	}
	return strings.TrimSpace(out.String()), err
}

// dk runs the docker CLI against node's engine; stderr is part of the error.
func dk(node string, args ...string) (string, error) {
	return topo(append([]string{"docker", node}, args...)...)
}

func mustDk(t *testing.T, node string, args ...string) string {
	t.Helper()
	out, err := dk(node, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// eventually polls f until it returns nil or the deadline passes.
func eventually(t *testing.T, d time.Duration, what string, f func() error) {
	t.Helper()
	if err := poll(d, f); err != nil {
		t.Fatalf("%s: not within %s: %v", what, d, err)
	}
}

// poll calls f every 200 ms until it returns nil or d has passed, and
// returns f's last error: eventually for a caller that has more to do
// (a diagnosis) before failing.
func poll(d time.Duration, f func() error) error {
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// runningTask waits for service's single task to run and returns its node
// and container ID.
func runningTask(t *testing.T, service string, d time.Duration) (node, container string) {
	t.Helper()
	eventually(t, d, "task of "+service+" running", func() error {
		out, err := dk("vps", "service", "ps", service, "--filter", "desired-state=running",
			"--format", "{{.Node}} {{.CurrentState}}")
		if err != nil {
			return err
		}
		for _, line := range strings.Split(out, "\n") {
			f := strings.Fields(line)
			if len(f) >= 2 && f[1] == "Running" {
				node = f[0]
				c, err := dk(node, "ps", "-q", "--filter", "label=com.docker.swarm.service.name="+service)
				if err != nil || c == "" {
					return fmt.Errorf("task on %s has no container yet (%v)", node, err)
				}
				container = strings.Fields(c)[0]
				return nil
			}
		}
		return fmt.Errorf("tasks: %q", out)
	})
	return node, container
}

// createService starts a one-replica service and removes it when t ends.
func createService(t *testing.T, name string, args ...string) {
	t.Helper()
	base := []string{"service", "create", "-q", "--detach", "--no-resolve-image", "--name", name,
		"--restart-delay", "1s", "--stop-grace-period", "5s"}
	mustDk(t, "vps", append(base, args...)...)
	t.Cleanup(func() { removeService(name) })
}

// removeService removes a service and waits until its containers are gone,
// so the volume is unmounted.
func removeService(name string) {
	dk("vps", "service", "rm", name)
	deadline := time.Now().Add(40 * time.Second)
	for _, n := range []string{"home1", "home2", "home3", "vps"} {
		for time.Now().Before(deadline) {
			out, err := dk(n, "ps", "-aq", "--filter", "label=com.docker.swarm.service.name="+name)
			if err != nil || out == "" {
				break
			}
			time.Sleep(300 * time.Millisecond)
		}
	}
}

// loop is a container command that traps TERM so tasks stop at once.
func loop(script string) []string {
	return []string{"sh", "-c", "trap 'exit 0' TERM; " + script + "; while :; do sleep 1; done"}
}
