package builder

import (
	"strings"
	"testing"
	"time"
)

func at(s Service, id string, created time.Time) Service {
	s.ID, s.CreatedAt = id, created
	return s
}

func diagText(diags []Diagnostic) string {
	var sb strings.Builder
	for _, d := range diags {
		sb.WriteString(d.String() + "\n")
	}
	return sb.String()
}

func routeFor(t Table, service string) *Route {
	for i := range t.Routes {
		if t.Routes[i].Service == service {
			return &t.Routes[i]
		}
	}
	return nil
}

// TestHostBelongsToFirstService is issue 12's edge item: a newcomer cannot
// take a host another service routes, whatever its name, priority, path or
// rule, and cannot reach Traefik's internal services unless the operator
// allows them.
func TestHostBelongsToFirstService(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	gogs := at(svc("gogs", "edge.host", "gogs.example.org", "edge.port", "3000"), "zzzz", t0)
	later := func(s Service) Service { return at(s, "aaaa", t0.Add(time.Hour)) }
	tests := []struct {
		name      string
		opts      Options
		intruder  Service
		wantDiag  string // in the intruder's diagnostics; empty: its route stands
		wantRule  string // the intruder's rule when it stands
		gogsFirst bool
	}{
		{name: "same host, name sorting first",
			intruder: later(svc("aaa", "edge.host", "gogs.example.org", "edge.port", "80")),
			wantDiag: "service aaa: router aaa: host gogs.example.org belongs to service gogs"},
		{name: "same host, huge priority",
			intruder: later(svc("aaa", "edge.host", "gogs.example.org", "edge.port", "80", "edge.priority", "100000")),
			wantDiag: "host gogs.example.org belongs to service gogs"},
		{name: "same host, a path of it",
			intruder: later(svc("aaa", "edge.host", "gogs.example.org", "edge.port", "80", "edge.path", "/user/login")),
			wantDiag: "host gogs.example.org belongs to service gogs"},
		{name: "same host among others, v1",
			intruder: later(svc("aaa", "traefik.frontend.rule", "Host:mine.example.org,gogs.example.org", "traefik.port", "80")),
			wantDiag: "host gogs.example.org belongs to service gogs"},
		{name: "same host, v2 with another entry point and priority",
			intruder: later(svc("aaa", "traefik.http.routers.r.rule", "Host(`GOGS.example.org`) && PathPrefix(`/`)",
				"traefik.http.routers.r.priority", "100000", "traefik.http.routers.r.entrypoints", "alt",
				"traefik.http.services.s.loadbalancer.server.port", "80")),
			wantDiag: "host gogs.example.org belongs to service gogs"},
		{name: "HostRegexp catch-all to api@internal",
			intruder: later(svc("aaa", "traefik.http.routers.r.rule", "HostRegexp(`.+`)",
				"traefik.http.routers.r.service", "api@internal", "traefik.http.routers.r.priority", "100000")),
			wantDiag: "Traefik's internal service api@internal is not one edge's operator allows"},
		{name: "dashboard@internal not allowed when only api@internal is",
			opts: Options{InternalServices: []string{"api@internal"}},
			intruder: later(svc("aaa", "traefik.http.routers.r.rule", "Host(`traefik.example.org`)",
				"traefik.http.routers.r.service", "dashboard@internal")),
			wantDiag: "dashboard@internal is not one edge's operator allows"},
		{name: "allowed internal service, but on every host",
			opts: Options{InternalServices: []string{"api@internal"}},
			intruder: later(svc("aaa", "traefik.http.routers.r.rule", "HostRegexp(`.+`)",
				"traefik.http.routers.r.service", "api@internal")),
			wantDiag: "must name its hosts"},
		{name: "allowed internal service on its own host",
			opts: Options{InternalServices: []string{"api@internal"}},
			intruder: later(svc("aaa", "traefik.http.routers.r.rule", "Host(`traefik.example.org`)",
				"traefik.http.routers.r.service", "api@internal")),
			wantRule: "Host(`traefik.example.org`)"},
		{name: "HostRegexp catch-all is confined away from other services' hosts",
			intruder: later(svc("aaa", "traefik.http.routers.r.rule", "HostRegexp(`.+`)", "traefik.http.routers.r.priority", "100000",
				"traefik.http.services.s.loadbalancer.server.port", "80")),
			wantRule: "(HostRegexp(`.+`)) && !Host(`gogs.example.org`)"},
		{name: "a rule without Host is confined",
			intruder: later(svc("aaa", "traefik.http.routers.r.rule", "PathPrefix(`/`)",
				"traefik.http.services.s.loadbalancer.server.port", "80")),
			wantRule: "(PathPrefix(`/`)) && !Host(`gogs.example.org`)"},
		{name: "a negated Host is confined",
			intruder: later(svc("aaa", "traefik.http.routers.r.rule", "!Host(`x.example.org`)",
				"traefik.http.services.s.loadbalancer.server.port", "80")),
			wantRule: "(!Host(`x.example.org`)) && !Host(`gogs.example.org`)"},
		{name: "|| binds looser than &&: a Host alternative with a bare path is any host",
			intruder: later(svc("aaa", "traefik.http.routers.r.rule", "Host(`mine.example.org`) && PathPrefix(`/a`) || PathPrefix(`/b`)",
				"traefik.http.services.s.loadbalancer.server.port", "80")),
			wantRule: "(Host(`mine.example.org`) && PathPrefix(`/a`) || PathPrefix(`/b`)) && !Host(`gogs.example.org`)"},
		{name: "|| of hosts names them: gogs among them is refused",
			intruder: later(svc("aaa", "traefik.http.routers.r.rule", "Host(`mine.example.org`) || PathPrefix(`/b`) && Host(`gogs.example.org`)",
				"traefik.http.services.s.loadbalancer.server.port", "80")),
			wantDiag: "host gogs.example.org belongs to service gogs"},
		{name: "v1 path-only rule is confined",
			intruder: later(svc("aaa", "traefik.frontend.rule", "PathPrefix:/", "traefik.port", "80")),
			wantRule: "(PathPrefix(`/`)) && !Host(`gogs.example.org`)"},
		{name: "another host is fine",
			intruder: later(svc("aaa", "edge.host", "aaa.example.org", "edge.port", "80", "edge.priority", "100000")),
			wantRule: "Host(`aaa.example.org`)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			// Either order of the listing gives the same answer.
			for _, in := range [][]Service{{gogs, tt.intruder}, {tt.intruder, gogs}} {
				table, diags := Build(in, tt.opts)
				all := diagText(diags)
				g := routeFor(table, "gogs")
				if g == nil || g.Rule != "Host(`gogs.example.org`)" {
					t.Fatalf("gogs lost its route: %+v\n%s", table.Routes, all)
				}
				a := routeFor(table, "aaa")
				if tt.wantDiag != "" {
					if a != nil {
						t.Errorf("the intruder got a route: %+v", *a)
					}
					if !strings.Contains(all, tt.wantDiag) {
						t.Errorf("diagnostics lack %q:\n%s", tt.wantDiag, all)
					}
					continue
				}
				if a == nil || a.Rule != tt.wantRule {
					t.Errorf("intruder route = %+v, want rule %s\n%s", a, tt.wantRule, all)
				}
			}
		})
	}
}

// TestFirstClaimIsStable: the older service keeps the host even when its
// name or ID sorts later, and the ID breaks a tie of creation times.
func TestFirstClaimIsStable(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	old := at(svc("zz-old", "edge.host", "h.example.org", "edge.port", "80"), "ffff", t0)
	nu := at(svc("aa-new", "edge.host", "h.example.org", "edge.port", "80"), "0000", t0.Add(time.Second))
	for _, in := range [][]Service{{old, nu}, {nu, old}} {
		table, _ := Build(in, Options{})
		if len(table.Routes) != 1 || table.Routes[0].Service != "zz-old" {
			t.Fatalf("routes = %+v, want only zz-old's", table.Routes)
		}
	}
	tie1 := at(svc("b", "edge.host", "h.example.org", "edge.port", "80"), "0001", t0)
	tie2 := at(svc("a", "edge.host", "h.example.org", "edge.port", "80"), "0002", t0)
	table, _ := Build([]Service{tie2, tie1}, Options{})
	if len(table.Routes) != 1 || table.Routes[0].Service != "b" {
		t.Fatalf("routes = %+v, want only b's (smaller ID)", table.Routes)
	}
}

func TestRedactKeepsReasonsReadable(t *testing.T) {
	t.Parallel()
	_, diags := Build([]Service{svc("v1", "traefik.frontend.rule", "Host:v1.example.org", "traefik.port", "80",
		"traefik.frontend.auth.basic.users", "e", "traefik.frontend.auth.basic.removeHeader", "not-a-bool-secret")}, Options{})
	all := diagText(diags)
	if strings.Contains(all, "not-a-bool-secret") || !strings.Contains(all, "Traefik v1 frontend option not supported") {
		t.Fatalf("diagnostics:\n%s", all)
	}
}
