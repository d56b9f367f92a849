//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// stream sends requests to host through Traefik from two clients, each
// every 20 ms, until stop is called, and records every answer.
type stream struct {
	mu      sync.Mutex
	answers []answer
	stop    func()
	wg      sync.WaitGroup
}

type answer struct {
	at   time.Time
	code int
	body string
	err  error
}

func (s *edgeStack) stream(host string) *stream {
	ctx, cancel := context.WithCancel(context.Background())
	st := &stream{}
	for i := 0; i < 2; i++ {
		st.wg.Add(1)
		go func() {
			defer st.wg.Done()
			for ctx.Err() == nil {
				code, body, err := s.get(host)
				st.mu.Lock()
				st.answers = append(st.answers, answer{time.Now(), code, body, err})
				st.mu.Unlock()
				time.Sleep(20 * time.Millisecond)
			}
		}()
	}
	st.stop = func() { cancel(); st.wg.Wait() }
	return st
}

// failed returns the answers that were not a 200.
func (st *stream) failed() []string {
	st.mu.Lock()
	defer st.mu.Unlock()
	var bad []string
	for _, a := range st.answers {
		if a.err != nil || a.code != http.StatusOK {
			bad = append(bad, fmt.Sprintf("%s: %d %q %v", a.at.Format("15:04:05.000"), a.code, a.body, a.err))
		}
	}
	return bad
}

// spans returns, for each body (a task's hostname), when it first and last
// answered, in order of first answer.
func (st *stream) spans() []string {
	st.mu.Lock()
	defer st.mu.Unlock()
	type span struct{ first, last time.Time }
	seen := map[string]*span{}
	var order []string
	for _, a := range st.answers {
		if a.code != http.StatusOK {
			continue
		}
		if seen[a.body] == nil {
			seen[a.body] = &span{a.at, a.at}
			order = append(order, a.body)
		}
		seen[a.body].last = a.at
	}
	var out []string
	t0 := st.answers[0].at
	for _, b := range order {
		out = append(out, fmt.Sprintf("%s %.2f-%.2f s", b, seen[b].first.Sub(t0).Seconds(), seen[b].last.Sub(t0).Seconds()))
	}
	return out
}

// rollDiag logs, for a failed update of service, where each of its tasks
// ran and at which address, what edge routes, what every node's meshnet
// routes, announces and dropped, and how host answers now: which hop lost
// the requests, and whether it still does.
func (s *edgeStack) rollDiag(t *testing.T, service, host string) {
	t.Helper()
	ps, _ := dk("vps", "service", "ps", "--no-trunc", "--format", "{{.ID}} {{.Node}} {{.DesiredState}} {{.CurrentState}} {{.Error}}", service)
	t.Logf("diag: tasks of %s:\n%s", service, ps)
	want := map[string]bool{} // the tasks' addresses, bare and as /32
	for _, line := range strings.Split(strings.TrimSpace(ps), "\n") {
		id, _, _ := strings.Cut(line, " ")
		out, _ := dk("vps", "inspect", "--format", "{{range .NetworksAttachments}}{{.Network.Spec.Name}}={{range .Addresses}}{{.}} {{end}}{{end}}", id)
		t.Logf("diag: task %.12s: %s", id, strings.TrimSpace(out))
		for _, f := range strings.Fields(out) {
			if _, a, ok := strings.Cut(f, "="); ok {
				f = a
			}
			if a, _, ok := strings.Cut(f, "/"); ok {
				want[a], want[a+"/32"] = true, true
			}
		}
	}
	b, _ := os.ReadFile(filepath.Join(s.routes, "edge.yml"))
	t.Logf("diag: edge.yml:\n%s", b)
	meshDiag(t, want)
	time.Sleep(5 * time.Second)
	var now []string
	for range 6 {
		code, body, err := s.get(host)
		now = append(now, fmt.Sprintf("%d %q %v", code, body, err))
	}
	t.Logf("diag: %s 5 s later: %s", host, strings.Join(now, "; "))
}

var taskURL = regexp.MustCompile(`url: http://\d+\.\d+\.\d+\.\d+:8080`)

// TestEdgeRollingUpdate proves task-level balancing on the topology: a
// service in Swarm's default VIP mode, which cannot answer on this kernel
// (no IPVS), is reached through Traefik at its task's address; and rolling
// updates under a steady request stream fail no request — a 2-replica
// service (stop-first, the default) and a 1-replica service with
// --update-order start-first, in both endpoint modes. The services follow edge's README: they keep
// serving WEB_STOP_DELAY seconds after SIGTERM (within --stop-grace-period),
// while edge has already taken their address out of Traefik.
func TestEdgeRollingUpdate(t *testing.T) {
	s := startEdgeStack(t)
	web := func(t *testing.T, name, host string, args ...string) {
		t.Helper()
		base := []string{"--network", "web", "--constraint", edgeConstraint, "--label", "edge.host=" + host, "--label", "edge.port=8080"}
		createService(t, name, append(append(base, args...), "homeswarm/web")...)
	}

	t.Run("VIPModeReachable", func(t *testing.T) {
		// No --endpoint-mode dnsrr: Swarm gives the service a VIP, which
		// needs IPVS. Traefik reaches the task's own address instead.
		web(t, "e2e-vip", "vip.e2e.test", "--env", "WEB_TEXT=vip")
		start := time.Now()
		s.waitFor(t, "vip.e2e.test", http.StatusOK, "vip", 60*time.Second)
		t.Logf("VIP-mode service: first 200 through Traefik %.0f ms after `service create` returned (the task's start included)",
			time.Since(start).Seconds()*1000)
		b, _ := os.ReadFile(filepath.Join(s.routes, "edge.yml"))
		if !taskURL.Match(b) || strings.Contains(string(b), "http://e2e-vip:") {
			t.Errorf("edge.yml does not route to the task's address:\n%s", b)
		}
		mustDk(t, "vps", "service", "rm", "e2e-vip")
		s.waitFor(t, "vip.e2e.test", http.StatusNotFound, "", 10*time.Second)
	})

	update := func(t *testing.T, name, host string, replicas int, args ...string) {
		t.Helper()
		web(t, name, host, append([]string{"--replicas", fmt.Sprint(replicas),
			"--stop-grace-period", "5s", "--env", "WEB_STOP_DELAY=" + envOr("EDGE_E2E_STOP_DELAY", "2")}, args...)...)
		s.waitFor(t, host, http.StatusOK, "", 60*time.Second)
		// Every replica serves before the update begins.
		eventually(t, 60*time.Second, "all replicas running and routed", func() error {
			out, _ := dk("vps", "service", "ps", "-q", "--filter", "desired-state=running", "--format", "{{.CurrentState}}", name)
			if n := strings.Count(out, "Running"); n != replicas {
				return fmt.Errorf("%d of %d running: %s", n, replicas, out)
			}
			b, _ := os.ReadFile(filepath.Join(s.routes, "edge.yml"))
			if n := len(taskURL.FindAll(b, -1)); n != replicas && os.Getenv("EDGE_E2E_LB") != "vip" {
				return fmt.Errorf("%d task URLs in edge.yml", n)
			}
			return nil
		})
		st := s.stream(host)
		time.Sleep(time.Second)
		start := time.Now()
		out, err := dk("vps", "service", "update", "--force", "--detach=false", name)
		took := time.Since(start)
		time.Sleep(3 * time.Second) // the last old task's stop delay, and more
		st.stop()
		if err != nil {
			t.Fatalf("update: %v: %s", err, out)
		}
		bad := st.failed()
		t.Logf("%s: `service update --force` took %.1f s; %d requests through Traefik during and after it, %d failed; tasks (first-last answer): %s",
			name, took.Seconds(), len(st.answers), len(bad), strings.Join(st.spans(), ", "))
		if len(bad) > 0 {
			t.Errorf("%d requests failed during the update:\n%s", len(bad), strings.Join(bad, "\n"))
		}
		if n := len(st.spans()); n < 2*replicas {
			t.Errorf("%d tasks answered, want the %d old and %d new", n, replicas, replicas)
		}
		if t.Failed() {
			s.rollDiag(t, name, host)
		}
	}
	// Swarm's default endpoint mode (VIP, unusable here without IPVS: only
	// task-level routing reaches it), then dnsrr (where edge.lb=vip works
	// too, by DNS).
	for _, mode := range []string{"vip", "dnsrr"} {
		t.Run("TwoReplicas-"+mode, func(t *testing.T) {
			update(t, "e2e-roll2"+mode, "roll2"+mode+".e2e.test", 2, "--endpoint-mode", mode)
		})
		t.Run("OneReplicaStartFirst-"+mode, func(t *testing.T) {
			update(t, "e2e-roll1"+mode, "roll1"+mode+".e2e.test", 1, "--endpoint-mode", mode, "--update-order", "start-first")
		})
	}
}
