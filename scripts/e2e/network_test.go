//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// meshnetDriver is the driver name Swarm resolves: a managed plugin's
// full name (Docker 20.10's Swarm allocator does not add ":latest").
const meshnetDriver = "meshnet:latest"

// createNetwork creates a meshnet network and removes it when t ends.
func createNetwork(t *testing.T, name string, args ...string) {
	t.Helper()
	mustDk(t, "vps", append(append([]string{"network", "create", "-d", meshnetDriver}, args...), name)...)
	t.Cleanup(func() {
		for i := 0; i < 20; i++ { // endpoints go away with their tasks
			if _, err := dk("vps", "network", "rm", name); err == nil {
				return
			}
			time.Sleep(500 * time.Millisecond)
		}
	})
}

// webServers is a service of busybox httpd answering its task's name
// (and a marker, to look for in captures).
func webServers(t *testing.T, name, network string, replicas int, args ...string) {
	t.Helper()
	createService(t, name, append(append([]string{"--network", network, "--replicas", fmt.Sprint(replicas),
		"--replicas-max-per-node", "1", "--constraint", "node.labels.location==home", "--hostname", "{{.Task.Name}}"}, args...),
		"busybox", "sh", "-c", `trap 'exit 0' TERM; mkdir -p /www; echo "$(hostname) `+clearMarker+`" > /www/index.html; httpd -f -p 80 -h /www & wait`)...)
	eventually(t, 60*time.Second, name+" running everywhere", func() error {
		out, err := dk("vps", "service", "ls", "--filter", "name="+name, "--format", "{{.Replicas}}")
		if want := fmt.Sprintf("%d/%d", replicas, replicas); err != nil || !strings.HasPrefix(out, want) {
			return fmt.Errorf("replicas %q (want %s) %v", out, want, err)
		}
		return nil
	})
}

// clearMarker is served by every web task: it must never be seen on the
// WAN link.
const clearMarker = "meshnet-e2e-plaintext-marker"

// client is a long-running container on the VPS attached to network.
func client(t *testing.T, name, network string) {
	t.Helper()
	mustDk(t, "vps", "run", "-d", "--name", name, "--network", network, "busybox", "sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1; done")
	t.Cleanup(func() { dk("vps", "rm", "-f", name) })
}

// fetch GETs http://addr/ from inside container c on the VPS.
func fetch(c, addr string) (string, error) {
	out, err := dk("vps", "exec", c, "sh", "-c", fmt.Sprintf(`printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 3 %s 80 | tail -1`, addr))
	if err == nil && out == "" {
		err = fmt.Errorf("no answer from %s", addr)
	}
	return out, err
}

// lookup resolves name with Docker's embedded DNS inside container c.
func lookup(t *testing.T, c, name string) []string {
	t.Helper()
	out, _ := dk("vps", "exec", c, "nslookup", name, "127.0.0.11")
	var addrs []string
	past := false
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "Name:") {
			past = true
		}
		if f := strings.Fields(l); past && len(f) == 2 && f[0] == "Address:" {
			addrs = append(addrs, f[1])
		}
	}
	slices.Sort(addrs)
	return slices.Compact(addrs)
}

// containerIP returns container c's address on network, from node's engine.
func containerIP(t *testing.T, node, c, network string) string {
	t.Helper()
	return mustDk(t, node, "inspect", "--format", `{{(index .NetworkSettings.Networks "`+network+`").IPAddress}}`, c)
}

// taskAddrs returns the addresses of service's tasks on network, from the
// engines (not from DNS).
func taskAddrs(t *testing.T, service, network string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, n := range []string{"home1", "home2", "home3"} {
		ids, _ := dk(n, "ps", "-q", "--filter", "label=com.docker.swarm.service.name="+service)
		for _, id := range strings.Fields(ids) {
			out[containerIP(t, n, id, network)] = n
		}
	}
	return out
}

// reachAll checks that every address answers from container c, with as
// many distinct task names.
func reachAll(t *testing.T, c string, addrs []string, d time.Duration) {
	t.Helper()
	names := map[string]bool{}
	for _, a := range addrs {
		eventually(t, d, "fetch "+a+" from "+c, func() error {
			body, err := fetch(c, a)
			if err == nil && !strings.Contains(body, clearMarker) {
				err = fmt.Errorf("answer %q", body)
			}
			if err == nil {
				names[strings.Fields(body)[0]] = true
			}
			return err
		})
	}
	if len(names) != len(addrs) {
		t.Fatalf("%d addresses answered with %d task names: %v", len(addrs), len(names), names)
	}
}

func meshnetLinks(t *testing.T, node string) []string {
	t.Helper()
	out, err := topo("exec", node, "ip", "-o", "link", "show")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) > 1 && strings.HasPrefix(f[1], "mn") {
			names = append(names, strings.SplitN(strings.TrimSuffix(f[1], ":"), "@", 2)[0])
		}
	}
	return names
}

// TestMeshnetNetwork: one meshnet network for containers on the VPS and
// at home (behind the NAT, two of them relayed by the VPS): tasks reached
// by address, by DNS (VIP and dnsrr), nothing in clear on the WAN, two
// networks isolated, and traffic back after a plugin restart and an
// engine restart with no interface left behind.
func TestMeshnetNetwork(t *testing.T) {
	needMesh(t)
	allReady(t, 30*time.Second)
	createNetwork(t, "e2e-web", "--attachable")
	createNetwork(t, "e2e-other", "--attachable")
	webServers(t, "e2e-vip", "e2e-web", 3)
	webServers(t, "e2e-rr", "e2e-web", 3, "--endpoint-mode", "dnsrr")
	client(t, "e2e-client", "e2e-web")

	// by task address (as the engines report them) and by DNS
	vipTasks := taskAddrs(t, "e2e-vip", "e2e-web")
	if len(vipTasks) != 3 {
		t.Fatalf("task addresses %v", vipTasks)
	}
	byEngine := sortedKeys((vipTasks))
	eventually(t, 10*time.Second, "tasks.e2e-vip in DNS", func() error {
		if got := lookup(t, "e2e-client", "tasks.e2e-vip"); !slices.Equal(got, byEngine) {
			return fmt.Errorf("DNS %v, engines %v", got, byEngine)
		}
		return nil
	})

	// Capture the WAN while the client fetches from every task.
	pcap := filepath.Join(t.TempDir(), "wan.pcap")
	ctx, cancel := context.WithCancel(context.Background())
	capture := exec.CommandContext(ctx, "ip", "netns", "exec", prefix+"-wan", "tcpdump", "-i", "br0", "-nn", "-U", "-w", pcap)
	if err := capture.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	start := time.Now()
	reachAll(t, "e2e-client", byEngine, 20*time.Second)
	t.Logf("3 tasks at home answered the VPS by address in %v", time.Since(start).Round(time.Millisecond))
	rr := lookup(t, "e2e-client", "e2e-rr")
	if want := sortedKeys((taskAddrs(t, "e2e-rr", "e2e-web"))); !slices.Equal(rr, want) || len(rr) != 3 {
		t.Fatalf("dnsrr: e2e-rr resolves to %v, tasks are %v", rr, want)
	}
	reachAll(t, "e2e-client", rr, 20*time.Second)
	time.Sleep(time.Second)
	cancel()
	capture.Wait()
	raw, err := os.ReadFile(pcap)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw, []byte(clearMarker)) {
		t.Fatal("container traffic in clear on the WAN link")
	}
	payloads := udpPayloads(t, pcap)
	if len(payloads) < 12 {
		t.Fatalf("only %d UDP packets on the WAN during 6 HTTP exchanges", len(payloads))
	}
	t.Logf("WAN capture: %d bytes, %d mesh datagrams, no clear payload", len(raw), len(payloads))

	// The VIP needs IPVS in the kernel (Docker load-balances with it,
	// whatever the network driver); this one may not have it.
	vip := lookup(t, "e2e-client", "e2e-vip")
	if len(vip) != 1 {
		t.Fatalf("e2e-vip resolves to %v, want its VIP", vip)
	}
	if _, err := os.Stat("/proc/net/ip_vs"); err == nil {
		eventually(t, 10*time.Second, "fetch through the VIP", func() error { _, err := fetch("e2e-client", vip[0]); return err })
	} else {
		t.Logf("VIP %s resolved; not fetched: this kernel has no IPVS (Docker's VIPs need it, overlay's too)", vip[0])
	}

	// Isolation: a container of another meshnet network, on the VPS and
	// at home, reaches no task of e2e-web, even on the same host.
	client(t, "e2e-stranger", "e2e-other")
	for a, node := range vipTasks {
		if body, err := fetch("e2e-stranger", a); err == nil {
			t.Fatalf("a container of another network reached %s (%s): %q", a, node, body)
		}
	}
	out, err := dk("home1", "run", "--rm", "--network", "e2e-other", "busybox", "sh", "-c",
		fmt.Sprintf(`printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 2 %s 80`, firstOn(vipTasks, "home1")))
	if err == nil && strings.Contains(out, clearMarker) {
		t.Fatal("another network reached a task on its own host")
	}

	// Plugin disable/enable on home1: traffic resumes, no link left over.
	mustDk(t, "home1", "plugin", "disable", "-f", meshnetDriver)
	mustDk(t, "home1", "plugin", "enable", meshnetDriver)
	start = time.Now()
	reachAll(t, "e2e-client", []string{firstOn(vipTasks, "home1")}, 20*time.Second)
	t.Logf("home1's task answered %v after the plugin came back", time.Since(start).Round(time.Millisecond))

	// Engine restart on home2: its tasks come back (new addresses) and
	// only their links remain.
	if _, err := topo("engine-stop", "home2"); err != nil {
		t.Fatal(err)
	}
	if _, err := topo("engine-start", "home2"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 90*time.Second, "both services whole again", func() error {
		for _, s := range []string{"e2e-vip", "e2e-rr"} {
			out, err := dk("vps", "service", "ls", "--filter", "name="+s, "--format", "{{.Replicas}}")
			if err != nil || !strings.HasPrefix(out, "3/3") {
				return fmt.Errorf("%s: %q %v", s, out, err)
			}
		}
		return nil
	})
	after := sortedKeys((taskAddrs(t, "e2e-vip", "e2e-web")))
	reachAll(t, "e2e-client", after, 30*time.Second)
	// every link is a joined endpoint's, and there are no more of them
	// than containers plus Swarm's load-balancer endpoint
	eventually(t, 15*time.Second, "one link per local endpoint on home2", func() error {
		links := meshnetLinks(t, "home2")
		slices.Sort(links)
		hosts := []string{}
		for _, l := range links {
			if strings.HasPrefix(l, "mnh") {
				hosts = append(hosts, l)
			}
		}
		ids, _ := dk("home2", "ps", "-q", "--filter", "network=e2e-web")
		joined := joinedLinks(t, "home2")
		if !slices.Equal(hosts, joined) || len(hosts) != len(links) || len(hosts) > len(strings.Fields(ids))+1 {
			return fmt.Errorf("links %v, joined endpoints %v, %d containers", links, joined, len(strings.Fields(ids)))
		}
		return nil
	})

	// Removing everything leaves no link anywhere.
	removeService("e2e-vip")
	removeService("e2e-rr")
	dk("vps", "rm", "-f", "e2e-client", "e2e-stranger")
	eventually(t, 30*time.Second, "networks removed", func() error {
		for _, n := range []string{"e2e-web", "e2e-other"} {
			if _, err := dk("vps", "network", "rm", n); err != nil && !strings.Contains(err.Error(), "No such network") &&
				!strings.Contains(err.Error(), "not found") {
				return err
			}
		}
		return nil
	})
	eventually(t, 20*time.Second, "no meshnet link left", func() error {
		for _, n := range []string{"vps", "home1", "home2", "home3"} {
			if l := meshnetLinks(t, n); len(l) > 0 {
				return fmt.Errorf("%s: %v", n, l)
			}
		}
		return nil
	})
}

func firstOn(tasks map[string]string, node string) string {
	for a, n := range tasks {
		if n == node {
			return a
		}
	}
	return "192.0.2.1" // none: an address that answers nothing
}

func sortedKeys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// joinedLinks are the host links of the endpoints meshnet has joined on
// node, from its status.json.
func joinedLinks(t *testing.T, node string) []string {
	t.Helper()
	var out []string
	for _, e := range readMeshStatus(t, node).Endpoints {
		if e.Host != "" {
			out = append(out, e.Host)
		}
	}
	slices.Sort(out)
	return out
}
