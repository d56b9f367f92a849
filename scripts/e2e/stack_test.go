//go:build e2e

package e2e

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/homeswarm/homeswarm/internal/netns"
	"github.com/homeswarm/homeswarm/internal/nxdns"
)

// TestStackDeploy: examples/homeswarm-stack.yml, deployed with `docker
// stack deploy` as the README shows, brings Traefik, edge and a stateful
// app up; the app answers through Traefik, and its data (a syncvol volume)
// follows its task when its node is drained.
func TestStackDeploy(t *testing.T) {
	for _, im := range [][]string{{"edge traefik", "vps"}, {"demoapp", "home1", "home2", "home3"}} {
		cmd := exec.Command(filepath.Join(repo, "scripts/images.sh"), im[1:]...)
		cmd.Env = append(os.Environ(), "IMAGES="+im[0])
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("images: %v: %s", err, out)
		}
	}
	dns, err := nxdns.Listen(netns.Path(topoPrefix+"-vps"), vpsAddr+":53")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dns.Close() })
	routes := filepath.Join(topoRoot, "vps", "stack-routes")
	if err := os.MkdirAll(routes, 0o755); err != nil {
		t.Fatal(err)
	}
	const stack, host = "hs", "app.example.org"
	t.Cleanup(func() { os.RemoveAll(routes) })
	deployStack(t, "examples/homeswarm-stack.yml", stack, []string{"ROUTES=" + routes,
		"DOCKER_SOCK=" + filepath.Join(topoRun, "vps", "docker.sock"), "DNS=" + vpsAddr})

	c := vpsClient(2 * time.Second)
	get := func(path string) (string, error) {
		req, _ := http.NewRequest("GET", "http://"+vpsAddr+path, nil)
		req.Host = host
		resp, err := c.Do(req)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("status %d: %s", resp.StatusCode, b)
		}
		return strings.TrimSpace(string(b)), err
	}
	var first string
	start := time.Now()
	eventually(t, 180*time.Second, host+" answering through Traefik", func() (err error) {
		first, err = get("/")
		return err
	})
	t.Logf("stack up: %q through Traefik %s after deploy", first, time.Since(start).Round(time.Millisecond))
	var visits int
	var node string
	if _, err := fmt.Sscanf(first, "visits=%d host=%s", &visits, &node); err != nil {
		t.Fatalf("app said %q: %v", first, err)
	}
	n, _ := runningTask(t, stack+"_app", 30*time.Second)
	if n != node {
		t.Fatalf("app says it runs on %s, Swarm says %s", node, n)
	}

	drainAndRestore(t, node)
	start = time.Now()
	var after string
	eventually(t, 120*time.Second, "the app answering from another node", func() (err error) {
		after, err = get("/")
		if err == nil && strings.HasSuffix(after, " host="+node) {
			// still there: that visit counts too
			if _, err := fmt.Sscanf(after, "visits=%d ", &visits); err != nil {
				t.Fatalf("app said %q: %v", after, err)
			}
			err = fmt.Errorf("still on %s", node)
		}
		return err
	})
	t.Logf("drained %s: %q %s later", node, after, time.Since(start).Round(time.Millisecond))
	if want := fmt.Sprintf("visits=%d ", visits+1); !strings.HasPrefix(after, want) {
		t.Fatalf("after the move the app said %q, want %q…: the counter did not follow the task", after, want)
	}
}

// deployStack runs `docker stack deploy -c FILE STACK` (FILE relative to
// the repository) on the VPS with env added to the CLI's environment (the
// file's variables). When t ends the stack is removed (its services' tasks
// and logs shown first if t failed) and its networks are waited away.
func deployStack(t *testing.T, file, stack string, env []string) {
	t.Helper()
	deploy := exec.Command(filepath.Join(repo, "scripts/topo.sh"), "docker", "vps", "stack", "deploy",
		"-c", filepath.Join(repo, file), stack)
	deploy.Env = append(os.Environ(), env...)
	if out, err := deploy.CombinedOutput(); err != nil {
		t.Fatalf("docker stack deploy %s: %v: %s", file, err, out)
	}
	t.Cleanup(func() {
		if t.Failed() {
			svcs, _ := dk("vps", "stack", "services", "--format", "{{.Name}}", stack)
			for _, svc := range strings.Fields(svcs) {
				out, _ := dk("vps", "service", "ps", "--no-trunc", svc)
				logs, _ := dk("vps", "service", "logs", "--tail", "20", svc)
				t.Logf("%s:\n%s\n%s", svc, out, logs)
			}
		}
		dk("vps", "stack", "rm", stack)
		eventually(t, 60*time.Second, "the stack's networks removed", func() error {
			if out, _ := dk("vps", "network", "ls", "-q", "--filter", "label=com.docker.stack.namespace="+stack); out != "" {
				return fmt.Errorf("networks %s still there", strings.Fields(out))
			}
			return nil
		})
	})
}
