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
