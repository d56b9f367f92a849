package builder

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/moby/moby/api/types/swarm"
)

// withTasks gives s running tasks with addresses on network "web".
func withTasks(s Service, ips ...string) Service {
	for i, ip := range ips {
		s.Tasks = append(s.Tasks, Task{ID: string(rune('a' + i)), Addrs: map[string]string{"web": ip, "other": "192.0.2.1"}})
	}
	return s
}

func TestTaskRouting(t *testing.T) {
	t.Parallel()
	tasks := Options{TaskRouting: true, Network: "web"}
	tests := []struct {
		name    string
		opts    Options
		svc     Service
		url     string
		tasks   bool
		servers []string
		hc      *HealthCheck
		sticky  *Sticky
		mws     []string
		diags   []string // substrings, in order
	}{
		{name: "edge labels, task addresses on the shared network", opts: tasks,
			svc: withTasks(svc("web1", "edge.host", "a.test", "edge.port", "8080"), "10.0.1.6", "10.0.1.5"),
			url: "http://web1:8080", tasks: true, servers: []string{"http://10.0.1.5:8080", "http://10.0.1.6:8080"}},
		{name: "no running task: an empty server list, not the VIP", opts: tasks,
			svc: svc("web1", "edge.host", "a.test", "edge.port", "8080"),
			url: "http://web1:8080", tasks: true, servers: []string{}},
		{name: "edge.lb=vip keeps the VIP", opts: tasks,
			svc: withTasks(svc("web1", "edge.host", "a.test", "edge.port", "8080", "edge.lb", "vip"), "10.0.1.5"),
			url: "http://web1:8080"},
		{name: "edge.lb=tasks without edge's default", opts: Options{},
			svc: withTasks(svc("web1", "edge.host", "a.test", "edge.port", "8080", "edge.lb", "tasks"), "10.0.1.5"),
			url: "http://web1:8080", tasks: true, servers: []string{"http://10.0.1.5:8080"}},
		{name: "bad edge.lb skips the route", opts: tasks,
			svc:   withTasks(svc("web1", "edge.host", "a.test", "edge.port", "8080", "edge.lb", "ipvs"), "10.0.1.5"),
			diags: []string{`unknown load-balancing mode "ipvs"`}},
		{name: "v2 lbswarm=true keeps the VIP", opts: tasks,
			svc: withTasks(svc("web1", "traefik.http.routers.r.rule", "Host(`a.test`)",
				"traefik.http.services.s.loadbalancer.server.port", "80", "traefik.swarm.lbswarm", "true"), "10.0.1.5"),
			url: "http://web1:80"},
		{name: "v2 health check and sticky cookie pass through", opts: tasks,
			svc: withTasks(svc("web1", "traefik.http.routers.r.rule", "Host(`a.test`)",
				"traefik.http.services.s.loadbalancer.server.port", "80",
				"traefik.http.services.s.loadbalancer.healthcheck.path", "/health",
				"traefik.http.services.s.loadbalancer.healthcheck.interval", "1s",
				"traefik.http.services.s.loadbalancer.healthcheck.timeout", "500ms",
				"traefik.http.services.s.loadbalancer.sticky.cookie.name", "srv",
				"traefik.http.services.s.loadbalancer.sticky.cookie.httponly", "true"), "10.0.1.5"),
			url: "http://web1:80", tasks: true, servers: []string{"http://10.0.1.5:80"},
			hc: &HealthCheck{Path: "/health", Interval: "1s", Timeout: "500ms"}, sticky: &Sticky{Name: "srv", HTTPOnly: true}},
		{name: "v2 bad health check interval skips the router", opts: tasks,
			svc: withTasks(svc("web1", "traefik.http.routers.r.rule", "Host(`a.test`)",
				"traefik.http.services.s.loadbalancer.server.port", "80",
				"traefik.http.services.s.loadbalancer.healthcheck.path", "/health",
				"traefik.http.services.s.loadbalancer.healthcheck.interval", "often"), "10.0.1.5"),
			diags: []string{`invalid name duration "often"`, "router r skipped"}},
		{name: "edge health check needs a path", opts: tasks,
			svc:   withTasks(svc("web1", "edge.host", "a.test", "edge.port", "8080", "edge.healthcheck.interval", "1s"), "10.0.1.5"),
			diags: []string{"a health check needs its path"}},
		{name: "edge health check and sticky", opts: tasks,
			svc: withTasks(svc("web1", "edge.host", "a.test", "edge.port", "8080", "edge.healthcheck.path", "/",
				"edge.sticky", "true"), "10.0.1.5"),
			url: "http://web1:8080", tasks: true, servers: []string{"http://10.0.1.5:8080"},
			hc: &HealthCheck{Path: "/"}, sticky: &Sticky{}},
		{name: "v1 labels, task addresses", opts: tasks,
			svc: withTasks(svc("web1", "traefik.frontend.rule", "Host:a.test", "traefik.port", "8080"), "10.0.1.5"),
			url: "http://web1:8080", tasks: true, servers: []string{"http://10.0.1.5:8080"}},
		{name: "retry middleware appended", opts: Options{TaskRouting: true, Network: "web", RetryAttempts: 3},
			svc: withTasks(svc("web1", "edge.host", "a.test", "edge.port", "8080", "edge.middlewares", "auth@file"), "10.0.1.5"),
			url: "http://web1:8080", tasks: true, servers: []string{"http://10.0.1.5:8080"}, mws: []string{"auth@file", RetryMiddleware}},
		{name: "several networks and no -network: the VIP, reported", opts: Options{TaskRouting: true},
			svc: func() Service {
				s := withTasks(svc("web1", "edge.host", "a.test", "edge.port", "8080"), "10.0.1.5")
				s.Networks = []string{"web", "other"}
				return s
			}(),
			url: "http://web1:8080", diags: []string{"several networks"}},
		{name: "only network, no -network", opts: Options{TaskRouting: true},
			svc: withTasks(svc("web1", "edge.host", "a.test", "edge.port", "8080"), "10.0.1.5"),
			url: "http://web1:8080", tasks: true, servers: []string{"http://10.0.1.5:8080"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tab, diags := Build([]Service{tt.svc}, tt.opts)
			var ds []string
			for _, d := range diags {
				ds = append(ds, d.String())
			}
			all := strings.Join(ds, "\n")
			rest := all
			for _, want := range tt.diags {
				i := strings.Index(rest, want)
				if i < 0 {
					t.Fatalf("diagnostics lack %q (in order):\n%s", want, all)
				}
				rest = rest[i+len(want):]
			}
			if tt.url == "" {
				if len(tab.Routes) != 0 {
					t.Fatalf("routes %+v, want none", tab.Routes)
				}
				return
			}
			if len(tt.diags) == 0 && len(diags) > 0 {
				t.Errorf("unexpected diagnostics:\n%s", all)
			}
			if len(tab.Routes) != 1 {
				t.Fatalf("routes %+v, want one", tab.Routes)
			}
			r := tab.Routes[0]
			if r.URL != tt.url || r.Tasks != tt.tasks || !reflect.DeepEqual(r.Servers, tt.servers) {
				t.Errorf("URL %q tasks %v servers %#v, want %q %v %#v", r.URL, r.Tasks, r.Servers, tt.url, tt.tasks, tt.servers)
			}
			if !reflect.DeepEqual(r.HealthCheck, tt.hc) || !reflect.DeepEqual(r.Sticky, tt.sticky) {
				t.Errorf("health check %+v sticky %+v, want %+v %+v", r.HealthCheck, r.Sticky, tt.hc, tt.sticky)
			}
			if tt.mws != nil && !reflect.DeepEqual(r.Middlewares, tt.mws) {
				t.Errorf("middlewares %v, want %v", r.Middlewares, tt.mws)
			}
		})
	}
}

// Only tasks Swarm wants running and that run are routed: a task being
// shut down (desired state shutdown) leaves at once, one still starting
// is not routed yet.
func TestFromSwarmTasks(t *testing.T) {
	t.Parallel()
	var s swarm.Service
	s.ID = "svcid"
	s.Spec.Name = "web1"
	s.Spec.TaskTemplate.Networks = []swarm.NetworkAttachmentConfig{{Target: "nid"}}
	task := func(id, svc string, desired, state swarm.TaskState, addr string) swarm.Task {
		var t swarm.Task
		t.ID, t.ServiceID, t.DesiredState, t.Status.State = id, svc, desired, state
		var a swarm.NetworkAttachment
		a.Network.ID = "nid"
		a.Addresses = []netip.Prefix{netip.MustParsePrefix(addr)}
		t.NetworksAttachments = []swarm.NetworkAttachment{a}
		return t
	}
	run, shut := swarm.TaskStateRunning, swarm.TaskStateShutdown
	got := FromSwarm(s, map[string]string{"nid": "web"},
		task("t3", "svcid", run, run, "10.0.1.7/24"),
		task("t1", "svcid", shut, run, "10.0.1.5/24"), // being shut down
		task("t2", "svcid", run, swarm.TaskStateStarting, "10.0.1.6/24"),
		task("t0", "other", run, run, "10.0.1.9/24"),
		task("t4", "svcid", run, run, "10.0.1.8/24"))
	want := []Task{{ID: "t3", Addrs: map[string]string{"web": "10.0.1.7"}}, {ID: "t4", Addrs: map[string]string{"web": "10.0.1.8"}}}
	if !reflect.DeepEqual(got.Tasks, want) {
		t.Fatalf("Tasks = %+v, want %+v", got.Tasks, want)
	}
}

// TCP and UDP routes follow the same load-balancing choice as HTTP: the
// running tasks' addresses on the shared network, or the VIP with
// edge.lb=vip / lbswarm / edge's -lb vip.
func TestTaskRoutingL4(t *testing.T) {
	t.Parallel()
	tasks := Options{TaskRouting: true, Network: "web", TCPPorts: []int{25}, UDPPorts: []int{9987}}
	vip := tasks
	vip.TaskRouting = false
	edgeL4 := []string{"edge.tcp.smtp.port", "2525", "edge.tcp.smtp.entrypoint", "25",
		"edge.udp.voice.port", "9000", "edge.udp.voice.entrypoint", "9987"}
	traefikL4 := []string{"traefik.tcp.routers.r.rule", "HostSNI(`*`)", "traefik.tcp.routers.r.entrypoints", "tcp-25",
		"traefik.tcp.services.s.loadbalancer.server.port", "2525",
		"traefik.udp.routers.u.entrypoints", "udp-9987", "traefik.udp.services.v.loadbalancer.server.port", "9000"}
	with := func(labels []string, more ...string) []string { return append(append([]string{}, labels...), more...) }
	tests := []struct {
		name       string
		opts       Options
		svc        Service
		tcp, udp   []string // want Targets(); nil: no route
		tasks      bool
		httpServer []string // the service's HTTP route's servers, when it has one
		diag       string
	}{
		{name: "edge labels: every running task", opts: tasks,
			svc: withTasks(svc("m", edgeL4...), "10.0.1.6", "10.0.1.5"),
			tcp: []string{"10.0.1.5:2525", "10.0.1.6:2525"}, udp: []string{"10.0.1.5:9000", "10.0.1.6:9000"}, tasks: true},
		{name: "Traefik labels: every running task", opts: tasks,
			svc: withTasks(svc("m", traefikL4...), "10.0.1.5"),
			tcp: []string{"10.0.1.5:2525"}, udp: []string{"10.0.1.5:9000"}, tasks: true},
		{name: "no running task: no server", opts: tasks, svc: svc("m", edgeL4...),
			tcp: []string{}, udp: []string{}, tasks: true},
		{name: "edge.lb=vip", opts: tasks, svc: withTasks(svc("m", with(edgeL4, "edge.lb", "vip")...), "10.0.1.5"),
			tcp: []string{"m:2525"}, udp: []string{"m:9000"}},
		{name: "lbswarm", opts: tasks, svc: withTasks(svc("m", with(traefikL4, "traefik.swarm.lbswarm", "true")...), "10.0.1.5"),
			tcp: []string{"m:2525"}, udp: []string{"m:9000"}},
		{name: "-lb vip", opts: vip, svc: withTasks(svc("m", edgeL4...), "10.0.1.5"),
			tcp: []string{"m:2525"}, udp: []string{"m:9000"}},
		{name: "-lb vip, edge.lb=tasks", opts: vip, svc: withTasks(svc("m", with(edgeL4, "edge.lb", "tasks")...), "10.0.1.5"),
			tcp: []string{"10.0.1.5:2525"}, udp: []string{"10.0.1.5:9000"}, tasks: true},
		{name: "one task list for HTTP and TCP", opts: tasks,
			svc: withTasks(svc("m", with(edgeL4, "edge.host", "m.test", "edge.port", "80")...), "10.0.1.5"),
			tcp: []string{"10.0.1.5:2525"}, udp: []string{"10.0.1.5:9000"}, tasks: true, httpServer: []string{"http://10.0.1.5:80"}},
		{name: "a bad edge.lb skips TCP and UDP too", opts: tasks,
			svc:  withTasks(svc("m", with(edgeL4, "edge.lb", "ipvs")...), "10.0.1.5"),
			diag: `label edge.lb="ipvs": unknown load-balancing mode`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tab, diags := Build([]Service{tt.svc}, tt.opts)
			var ds []string
			for _, d := range diags {
				ds = append(ds, d.String())
			}
			if all := strings.Join(ds, "\n"); tt.diag != "" && !strings.Contains(all, tt.diag) || tt.diag == "" && all != "" {
				t.Errorf("diagnostics:\n%s\nwant %q", all, tt.diag)
			}
			if tt.tcp == nil {
				if len(tab.TCP)+len(tab.UDP) != 0 {
					t.Fatalf("TCP %+v UDP %+v, want none", tab.TCP, tab.UDP)
				}
				return
			}
			if len(tab.TCP) != 1 || len(tab.UDP) != 1 {
				t.Fatalf("TCP %+v UDP %+v, want one each", tab.TCP, tab.UDP)
			}
			tr, ur := tab.TCP[0], tab.UDP[0]
			if !reflect.DeepEqual(tr.Targets(), tt.tcp) || tr.Tasks != tt.tasks {
				t.Errorf("TCP targets %#v (tasks %v), want %#v (%v)", tr.Targets(), tr.Tasks, tt.tcp, tt.tasks)
			}
			if !reflect.DeepEqual(ur.Targets(), tt.udp) || ur.Tasks != tt.tasks {
				t.Errorf("UDP targets %#v (tasks %v), want %#v (%v)", ur.Targets(), ur.Tasks, tt.udp, tt.tasks)
			}
			if tr.Address != "m:2525" || ur.Address != "m:9000" {
				t.Errorf("VIP addresses %q %q, want m:2525 m:9000", tr.Address, ur.Address)
			}
			if tt.httpServer != nil && (len(tab.Routes) != 1 || !reflect.DeepEqual(tab.Routes[0].Servers, tt.httpServer)) {
				t.Errorf("HTTP routes %+v, want one with servers %v", tab.Routes, tt.httpServer)
			}
		})
	}
}
