package builder

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/types/swarm"
)

func svc(name string, labels ...string) Service {
	s := Service{Name: name, Labels: map[string]string{}, Networks: []string{"web"}}
	for i := 0; i+1 < len(labels); i += 2 {
		s.Labels[labels[i]] = labels[i+1]
	}
	return s
}

func TestBuild(t *testing.T) {
	t.Parallel()
	le := Options{CertResolver: "le", Network: "web"}
	tests := []struct {
		name     string
		opts     Options
		services []Service
		want     []Route
		// diags are substrings expected, in order, in the diagnostics.
		diags []string
	}{
		{
			name:     "edge minimal plain",
			services: []Service{svc("gogs", "edge.host", "gogs.example.org", "edge.port", "3000")},
			want: []Route{{Name: "gogs", Service: "gogs", Dialect: DialectEdge, Rule: "Host(`gogs.example.org`)",
				Hosts: []string{"gogs.example.org"}, EntryPoints: []string{"web"}, Backend: "gogs", URL: "http://gogs:3000"}},
		},
		{
			// a stack file's edge.certresolver: "${CERT_RESOLVER:-}" left empty
			name:     "edge empty cert resolver is plain",
			services: []Service{svc("blog", "edge.host", "blog.example.org", "edge.port", "80", "edge.certresolver", "")},
			want: []Route{{Name: "blog", Service: "blog", Dialect: DialectEdge, Rule: "Host(`blog.example.org`)",
				Hosts: []string{"blog.example.org"}, EntryPoints: []string{"web"}, Backend: "blog", URL: "http://blog:80"}},
		},
		{
			name:     "edge default ACME and redirect",
			opts:     le,
			services: []Service{svc("gogs", "edge.host", "gogs.example.org", "edge.port", "3000")},
			want: []Route{{Name: "gogs", Service: "gogs", Dialect: DialectEdge, Rule: "Host(`gogs.example.org`)",
				Hosts: []string{"gogs.example.org"}, EntryPoints: []string{"websecure"}, TLS: &TLS{CertResolver: "le"},
				RedirectFrom: []string{"web"}, Backend: "gogs", URL: "http://gogs:3000"}},
		},
		{
			name: "edge several hosts, path, middlewares, own resolver, no redirect",
			services: []Service{svc("nc", "edge.host", " Cloud.example.org, nc.example.org ", "edge.port", "80",
				"edge.path", "/nextcloud", "edge.middlewares", "auth@file,compress", "edge.certresolver", "other",
				"edge.redirect-https", "false", "edge.entrypoints", "websecure,alt", "edge.priority", "10", "edge.scheme", "https")},
			want: []Route{{Name: "nc", Service: "nc", Dialect: DialectEdge,
				Rule:  "(Host(`cloud.example.org`) || Host(`nc.example.org`)) && PathPrefix(`/nextcloud`)",
				Hosts: []string{"cloud.example.org", "nc.example.org"}, PathPrefix: "/nextcloud",
				EntryPoints: []string{"websecure", "alt"}, Middlewares: []string{"auth@file", "compress"}, Priority: 10,
				TLS: &TLS{CertResolver: "other"}, Backend: "nc", URL: "https://nc:80"}},
		},
		{
			name:     "edge tls=false overrides default resolver",
			opts:     le,
			services: []Service{svc("a", "edge.host", "a.example.org", "edge.port", "80", "edge.tls", "false")},
			want: []Route{{Name: "a", Service: "a", Dialect: DialectEdge, Rule: "Host(`a.example.org`)",
				Hosts: []string{"a.example.org"}, EntryPoints: []string{"web"}, Backend: "a", URL: "http://a:80"}},
		},
		{
			name:     "edge tls=true without resolver uses default certificate",
			services: []Service{svc("a", "edge.host", "a.example.org", "edge.port", "80", "edge.tls", "true")},
			want: []Route{{Name: "a", Service: "a", Dialect: DialectEdge, Rule: "Host(`a.example.org`)",
				Hosts: []string{"a.example.org"}, EntryPoints: []string{"websecure"}, TLS: &TLS{},
				RedirectFrom: []string{"web"}, Backend: "a", URL: "http://a:80"}},
		},
		{
			name:     "edge.enable=false disables",
			services: []Service{svc("a", "edge.host", "a.example.org", "edge.port", "80", "edge.enable", "false")},
		},
		{
			name: "edge malformed labels skip only their service",
			services: []Service{
				svc("badport", "edge.host", "a.example.org", "edge.port", "http"),
				svc("bigport", "edge.host", "b.example.org", "edge.port", "70000"),
				svc("emptyhost", "edge.host", "", "edge.port", "80"),
				svc("emptyinlist", "edge.host", "a.example.org,,b.example.org", "edge.port", "80"),
				svc("badhost", "edge.host", "a_b.example.org", "edge.port", "80"),
				svc("wildcard", "edge.host", "*.example.org", "edge.port", "80"),
				svc("nohost", "edge.port", "80"),
				svc("noport", "edge.host", "c.example.org"),
				svc("typo", "edge.host", "d.example.org", "edge.port", "80", "edge.middleware", "auth"),
				svc("badpath", "edge.host", "e.example.org", "edge.port", "80", "edge.path", "api"),
				svc("badbool", "edge.host", "f.example.org", "edge.port", "80", "edge.tls", "yes please"),
				svc("conflict", "edge.host", "g.example.org", "edge.port", "80", "edge.tls", "false", "edge.certresolver", "le"),
				svc("redirnotls", "edge.host", "h.example.org", "edge.port", "80", "edge.redirect-https", "true"),
				svc("good", "edge.host", "good.example.org", "edge.port", "80"),
			},
			want: []Route{{Name: "good", Service: "good", Dialect: DialectEdge, Rule: "Host(`good.example.org`)",
				Hosts: []string{"good.example.org"}, EntryPoints: []string{"web"}, Backend: "good", URL: "http://good:80"}},
			diags: []string{
				"service badbool: label edge.tls", "invalid boolean",
				"service badhost: label edge.host", "invalid host name",
				"service badpath: label edge.path", "must start with /",
				"service badport: label edge.port", "invalid port",
				"service bigport: label edge.port", "invalid port",
				"service conflict: label edge.certresolver", "edge.tls=false",
				"service emptyhost: label edge.host", "empty host name",
				"service emptyinlist: label edge.host", "empty host name",
				"service nohost: label edge.host", "edge.host is required",
				"service noport: label edge.port", "edge.port is required",
				"service redirnotls: label edge.redirect-https", "needs TLS",
				"service typo: label edge.middleware", "unknown edge label",
				"service wildcard: label edge.host", "invalid host name",
			},
		},
		{
			name: "traefik v1 seed labels",
			opts: le,
			services: []Service{svc("web", "traefik.frontend.rule", "Host:test.example.org", "traefik.port", "8080",
				"traefik.docker.network", "web", "traefik.backend.loadbalancer.swarm", "true", "traefik.frontend.passHostHeader", "true")},
			want: []Route{{Name: "web", Service: "web", Dialect: DialectTraefikV1, Rule: "Host(`test.example.org`)",
				Hosts: []string{"test.example.org"}, EntryPoints: []string{"websecure"}, TLS: &TLS{CertResolver: "le"},
				RedirectFrom: []string{"web"}, Backend: "web", URL: "http://web:8080"}},
			diags: []string{"label traefik.backend.loadbalancer.swarm", "label ignored"},
		},
		{
			name: "traefik v1 several hosts, path prefix, backend, plain",
			services: []Service{svc("api", "traefik.frontend.rule", "Host:a.example.org,b.example.org;PathPrefix:/api",
				"traefik.port", "9000", "traefik.backend", "apis", "traefik.protocol", "http")},
			want: []Route{{Name: "api", Service: "api", Dialect: DialectTraefikV1,
				Rule:  "(Host(`a.example.org`) || Host(`b.example.org`)) && PathPrefix(`/api`)",
				Hosts: []string{"a.example.org", "b.example.org"}, PathPrefix: "/api",
				EntryPoints: []string{"web"}, Backend: "apis", URL: "http://api:9000"}},
		},
		{
			name: "traefik v1 entry points http,https map to web/websecure with redirect",
			services: []Service{svc("x", "traefik.frontend.rule", "Host:x.example.org", "traefik.port", "80",
				"traefik.frontend.entryPoints", "http,https")},
			want: []Route{{Name: "x", Service: "x", Dialect: DialectTraefikV1, Rule: "Host(`x.example.org`)",
				Hosts: []string{"x.example.org"}, EntryPoints: []string{"websecure"}, TLS: &TLS{},
				RedirectFrom: []string{"web"}, Backend: "x", URL: "http://x:80"}},
		},
		{
			name: "traefik v1 shared backend keeps both servers",
			services: []Service{
				svc("a1", "traefik.frontend.rule", "Host:a.example.org", "traefik.port", "80", "traefik.backend", "a"),
				svc("a2", "traefik.frontend.rule", "Host:a2.example.org", "traefik.port", "80", "traefik.backend", "a"),
			},
			want: []Route{
				{Name: "a1", Service: "a1", Dialect: DialectTraefikV1, Rule: "Host(`a.example.org`)", Hosts: []string{"a.example.org"},
					EntryPoints: []string{"web"}, Backend: "a", URL: "http://a1:80"},
				{Name: "a2", Service: "a2", Dialect: DialectTraefikV1, Rule: "Host(`a2.example.org`)", Hosts: []string{"a2.example.org"},
					EntryPoints: []string{"web"}, Backend: "a", URL: "http://a2:80"},
			},
		},
		{
			name: "traefik v1 malformed",
			services: []Service{
				svc("noport", "traefik.frontend.rule", "Host:a.example.org"),
				svc("norule", "traefik.port", "80"),
				svc("badrule", "traefik.frontend.rule", "Hostx:a.example.org", "traefik.port", "80"),
				svc("nocolon", "traefik.frontend.rule", "a.example.org", "traefik.port", "80"),
				svc("auth", "traefik.frontend.rule", "Host:b.example.org", "traefik.port", "80", "traefik.frontend.auth.basic.users", "u:h"),
				svc("off", "traefik.frontend.rule", "Host:c.example.org", "traefik.port", "80", "traefik.enable", "false"),
			},
			diags: []string{
				"service auth: label traefik.frontend.auth.basic.users", "not supported",
				"service badrule: label traefik.frontend.rule", "Host, PathPrefix and Path",
				"service nocolon: label traefik.frontend.rule", "matchers look like",
				"service noport: label traefik.port", "required",
				"service norule: label traefik.frontend.rule", "required",
			},
		},
		{
			name: "traefik v2 router, service, TLS resolver, middlewares",
			opts: Options{CertResolver: "ignored-for-v2"},
			services: []Service{svc("blog",
				"traefik.enable", "true",
				"traefik.http.routers.blog.rule", "Host(`blog.example.org`) && PathPrefix(`/`)",
				"traefik.http.routers.blog.entrypoints", "websecure",
				"traefik.http.routers.blog.tls", "true",
				"traefik.http.routers.blog.tls.certresolver", "le",
				"traefik.http.routers.blog.middlewares", "secure-headers@file",
				"traefik.http.services.blog.loadbalancer.server.port", "2368",
			)},
			want: []Route{{Name: "blog-blog", Service: "blog", Dialect: DialectTraefikV2,
				Rule: "Host(`blog.example.org`) && PathPrefix(`/`)", Hosts: []string{"blog.example.org"},
				EntryPoints: []string{"websecure"}, Middlewares: []string{"secure-headers@file"},
				TLS: &TLS{CertResolver: "le"}, RedirectFrom: []string{"web"}, Backend: "blog-blog", URL: "http://blog:2368"}},
		},
		{
			name: "traefik v2 two routers, explicit linkage, v2 multi-host rule rewritten, mixed-case keys",
			services: []Service{svc("app",
				"traefik.http.routers.pub.rule", "Host(`a.example.org`, `B.example.org`)",
				"traefik.http.routers.pub.service", "front",
				"traefik.http.routers.admin.rule", `Host("admin.example.org") && Headers(`+"`X-A`, `1`)",
				"traefik.http.routers.admin.service", "back",
				"traefik.http.routers.admin.priority", "5",
				"traefik.http.services.front.loadBalancer.server.port", "80",
				"traefik.http.services.back.loadbalancer.server.port", "8081",
				"traefik.http.services.back.loadbalancer.server.scheme", "https",
			)},
			want: []Route{
				{Name: "app-admin", Service: "app", Dialect: DialectTraefikV2,
					Rule: "Host(`admin.example.org`) && Header(`X-A`, `1`)", Hosts: []string{"admin.example.org"},
					EntryPoints: []string{"web"}, Priority: 5, Backend: "app-back", URL: "https://app:8081"},
				{Name: "app-pub", Service: "app", Dialect: DialectTraefikV2,
					Rule: "(Host(`a.example.org`) || Host(`b.example.org`))", Hosts: []string{"a.example.org", "b.example.org"},
					EntryPoints: []string{"web"}, Backend: "app-front", URL: "http://app:80"},
			},
		},
		{
			name: "traefik v2 router using an external service",
			opts: Options{InternalServices: []string{"api@internal"}},
			services: []Service{svc("x",
				"traefik.http.routers.r.rule", "Host(`x.example.org`)",
				"traefik.http.routers.r.service", "api@internal")},
			want: []Route{{Name: "x-r", Service: "x", Dialect: DialectTraefikV2, Rule: "Host(`x.example.org`)",
				Hosts: []string{"x.example.org"}, EntryPoints: []string{"web"}, Backend: "api@internal"}},
		},
		{
			name: "traefik v2 malformed routers are skipped, good ones stay",
			services: []Service{svc("m",
				"traefik.http.routers.ok.rule", "Host(`ok.example.org`)",
				"traefik.http.routers.ok.service", "s",
				"traefik.http.routers.noport.rule", "Host(`np.example.org`)",
				"traefik.http.routers.noport.service", "missing",
				"traefik.http.routers.norule.service", "s",
				"traefik.http.routers.badrule.rule", "Host(`unterminated)",
				"traefik.http.routers.badrule.service", "s",
				"traefik.http.routers.opt.rule", "Host(`opt.example.org`)",
				"traefik.http.routers.opt.tls.domains[0].main", "example.org",
				"traefik.http.routers.lm.rule", "Host(`lm.example.org`)",
				"traefik.http.routers.lm.service", "s",
				"traefik.http.routers.lm.middlewares", "auth",
				"traefik.http.middlewares.auth.basicauth.users", "u:h",
				"traefik.http.services.s.loadbalancer.server.port", "8080",
				"traefik.tcp.routers.t.rule", "HostSNI(`*`)",
			)},
			want: []Route{{Name: "m-ok", Service: "m", Dialect: DialectTraefikV2, Rule: "Host(`ok.example.org`)",
				Hosts: []string{"ok.example.org"}, EntryPoints: []string{"web"}, Backend: "m-s", URL: "http://m:8080"}},
			diags: []string{
				"label traefik.http.routers.badrule.rule", "unterminated string",
				"label traefik.http.routers.opt.tls.domains[0].main", "router option not supported",
				"label traefik.http.middlewares.auth.basicauth.users", "define auth in Traefik's file provider", "label ignored",
				"label traefik.http.routers.lm.middlewares", "defined by labels",
				"label traefik.http.routers.noport.service", "which no traefik.http.services.missing",
				"label traefik.http.routers.norule.rule", "has no rule",
				"label traefik.tcp.routers.t.service", "must name its service",
			},
		},
		{
			name: "traefik v2 router without service port",
			services: []Service{svc("np",
				"traefik.http.routers.r.rule", "Host(`np.example.org`)")},
			diags: []string{"router r has no service port"},
		},
		{
			name: "traefik v2 ambiguous service",
			services: []Service{svc("amb",
				"traefik.http.routers.r.rule", "Host(`amb.example.org`)",
				"traefik.http.services.a.loadbalancer.server.port", "1",
				"traefik.http.services.b.loadbalancer.server.port", "2")},
			diags: []string{"must name its service"},
		},
		{
			name: "traefik v2 bad service port skips its routers",
			services: []Service{svc("bp",
				"traefik.http.routers.r.rule", "Host(`bp.example.org`)",
				"traefik.http.services.s.loadbalancer.server.port", "0")},
			diags: []string{"label traefik.http.services.s.loadbalancer.server.port", "invalid port", "router r skipped"},
		},
		{
			name: "traefik.enable=false disables traefik dialects",
			services: []Service{svc("off", "traefik.enable", "false",
				"traefik.http.routers.r.rule", "Host(`off.example.org`)",
				"traefik.http.services.s.loadbalancer.server.port", "80")},
		},
		{
			name: "dialect conflict: edge wins and traefik labels are reported",
			services: []Service{svc("mix", "edge.host", "mix.example.org", "edge.port", "80",
				"traefik.frontend.rule", "Host:old.example.org", "traefik.port", "81")},
			want: []Route{{Name: "mix", Service: "mix", Dialect: DialectEdge, Rule: "Host(`mix.example.org`)",
				Hosts: []string{"mix.example.org"}, EntryPoints: []string{"web"}, Backend: "mix", URL: "http://mix:80"}},
			diags: []string{"service mix: traefik.* routing labels are ignored", "label ignored"},
		},
		{
			name: "dialect conflict: v2 wins over v1",
			services: []Service{svc("mix",
				"traefik.frontend.rule", "Host:old.example.org", "traefik.port", "81",
				"traefik.http.routers.r.rule", "Host(`new.example.org`)",
				"traefik.http.services.s.loadbalancer.server.port", "82")},
			want: []Route{{Name: "mix-r", Service: "mix", Dialect: DialectTraefikV2, Rule: "Host(`new.example.org`)",
				Hosts: []string{"new.example.org"}, EntryPoints: []string{"web"}, Backend: "mix-s", URL: "http://mix:82"}},
			diags: []string{"Traefik v1 labels are ignored"},
		},
		{
			name: "same rule on two services: the second is skipped",
			services: []Service{
				svc("b", "edge.host", "same.example.org", "edge.port", "80"),
				svc("a", "traefik.frontend.rule", "Host:same.example.org", "traefik.port", "80"),
			},
			want: []Route{{Name: "a", Service: "a", Dialect: DialectTraefikV1, Rule: "Host(`same.example.org`)",
				Hosts: []string{"same.example.org"}, EntryPoints: []string{"web"}, Backend: "a", URL: "http://a:80"}},
			diags: []string{"service b: router b: host same.example.org belongs to service a"},
		},
		{
			name: "traefik v2 usual redirect pattern: label redirectscheme middleware, http and https routers",
			services: []Service{svc("blog",
				"traefik.http.middlewares.to-https.redirectscheme.scheme", "https",
				"traefik.http.middlewares.to-https.redirectscheme.permanent", "true",
				"traefik.http.routers.blog-http.rule", "Host(`blog.example.org`)",
				"traefik.http.routers.blog-http.entrypoints", "web",
				"traefik.http.routers.blog-http.middlewares", "to-https@docker",
				"traefik.http.routers.blog.rule", "Host(`blog.example.org`)",
				"traefik.http.routers.blog.entrypoints", "websecure",
				"traefik.http.routers.blog.tls.certresolver", "le",
				"traefik.http.services.blog.loadbalancer.server.port", "2368",
			)},
			want: []Route{
				{Name: "blog-blog", Service: "blog", Dialect: DialectTraefikV2, Rule: "Host(`blog.example.org`)",
					Hosts: []string{"blog.example.org"}, EntryPoints: []string{"websecure"}, TLS: &TLS{CertResolver: "le"},
					Backend: "blog-blog", URL: "http://blog:2368"},
				{Name: "blog-blog-http", Service: "blog", Dialect: DialectTraefikV2, Rule: "Host(`blog.example.org`)",
					Hosts: []string{"blog.example.org"}, EntryPoints: []string{"web"}, Middlewares: []string{RedirectMiddleware},
					Backend: "blog-blog", URL: "http://blog:2368"},
			},
		},
		{
			name: "same host on other entry points or priorities is refused",
			services: []Service{
				svc("a", "edge.host", "same.example.org", "edge.port", "80", "edge.entrypoints", "internal"),
				svc("b", "edge.host", "same.example.org", "edge.port", "80"),
				svc("c", "edge.host", "same.example.org", "edge.port", "80", "edge.priority", "100"),
			},
			want: []Route{
				{Name: "a", Service: "a", Dialect: DialectEdge, Rule: "Host(`same.example.org`)", Hosts: []string{"same.example.org"},
					EntryPoints: []string{"internal"}, Backend: "a", URL: "http://a:80"},
			},
			diags: []string{"service b: router b: host same.example.org belongs to service a",
				"service c: router c: host same.example.org belongs to service a"},
		},
		{
			name: "edge.enable=true alone keeps the traefik dialect",
			services: []Service{svc("t", "edge.enable", "true",
				"traefik.frontend.rule", "Host:t.example.org", "traefik.port", "80")},
			want: []Route{{Name: "t", Service: "t", Dialect: DialectTraefikV1, Rule: "Host(`t.example.org`)",
				Hosts: []string{"t.example.org"}, EntryPoints: []string{"web"}, Backend: "t", URL: "http://t:80"}},
		},
		{
			name: "edge.enable=false disables every dialect",
			services: []Service{svc("t", "edge.enable", "false",
				"traefik.frontend.rule", "Host:t.example.org", "traefik.port", "80")},
		},
		{
			name: "network check",
			opts: Options{Network: "web"},
			services: []Service{
				{Name: "off", Labels: map[string]string{"edge.host": "off.example.org", "edge.port": "80"}, Networks: []string{"other"}},
				svc("lbl", "edge.host", "lbl.example.org", "edge.port", "80", "edge.network", "other"),
				svc("v1", "traefik.frontend.rule", "Host:v1.example.org", "traefik.port", "80", "traefik.docker.network", "web"),
			},
			want: []Route{{Name: "v1", Service: "v1", Dialect: DialectTraefikV1, Rule: "Host(`v1.example.org`)",
				Hosts: []string{"v1.example.org"}, EntryPoints: []string{"web"}, Backend: "v1", URL: "http://v1:80"}},
			diags: []string{
				"service lbl: label edge.network", "edge routes through network web",
				"service off: service is not attached to network web", "docker service update --network-add web off",
			},
		},
		{
			name:     "services without routing labels are ignored silently",
			services: []Service{svc("db", "com.example.backup", "daily"), svc("plain")},
		},
		{
			name:     "backend URL override",
			opts:     Options{BackendURL: func(service, scheme string, port int) string { return "http://127.0.0.1:1234" }},
			services: []Service{svc("t", "edge.host", "t.example.org", "edge.port", "80")},
			want: []Route{{Name: "t", Service: "t", Dialect: DialectEdge, Rule: "Host(`t.example.org`)",
				Hosts: []string{"t.example.org"}, EntryPoints: []string{"web"}, Backend: "t", URL: "http://127.0.0.1:1234"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, diags := Build(tt.services, tt.opts)
			if !reflect.DeepEqual(got.Routes, tt.want) {
				g, _ := json.MarshalIndent(got.Routes, "", "  ")
				w, _ := json.MarshalIndent(tt.want, "", "  ")
				t.Errorf("routes:\ngot  %s\nwant %s", g, w)
			}
			var all strings.Builder
			for _, d := range diags {
				all.WriteString(d.String() + "\n")
			}
			rest := all.String()
			for _, want := range tt.diags {
				i := strings.Index(rest, want)
				if i < 0 {
					t.Errorf("diagnostics lack %q (in order) in:\n%s", want, all.String())
					break
				}
				rest = rest[i+len(want):]
			}
			if len(tt.diags) == 0 && len(diags) > 0 {
				t.Errorf("unexpected diagnostics:\n%s", all.String())
			}
		})
	}
}

func TestBuildIsDeterministic(t *testing.T) {
	t.Parallel()
	services := []Service{
		svc("z", "edge.host", "z.example.org", "edge.port", "80", "edge.bogus", "1"),
		svc("a", "traefik.http.routers.r2.rule", "Host(`r2.example.org`)", "traefik.http.routers.r1.rule", "Host(`r1.example.org`)",
			"traefik.http.services.s.loadbalancer.server.port", "80", "traefik.foo", "x", "traefik.bar", "y"),
	}
	t1, d1 := Build(services, Options{})
	for i := 0; i < 20; i++ {
		rev := []Service{services[1], services[0]}
		t2, d2 := Build(rev, Options{})
		if !reflect.DeepEqual(t1, t2) || !reflect.DeepEqual(d1, d2) {
			t.Fatalf("Build is not deterministic:\n%v %v\n%v %v", t1, d1, t2, d2)
		}
	}
}

func TestFromSwarm(t *testing.T) {
	t.Parallel()
	var s swarm.Service
	s.ID = "svcid"
	s.Meta.CreatedAt = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	s.Spec.Name = "gogs"
	s.Spec.Labels = map[string]string{"edge.host": "g.example.org"}
	s.Spec.TaskTemplate.Networks = []swarm.NetworkAttachmentConfig{{Target: "id1"}, {Target: "id2"}}
	got := FromSwarm(s, map[string]string{"id1": "web"})
	want := Service{Name: "gogs", Labels: s.Spec.Labels, Networks: []string{"web", "id2"}, ID: "svcid", CreatedAt: s.Meta.CreatedAt}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("FromSwarm = %+v, want %+v", got, want)
	}
}

func TestNormalizeRule(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want, err string }{
		{in: "Host(`a.example.org`)", want: "Host(`a.example.org`)"},
		{in: "  Host( `a.example.org` )&&PathPrefix(`/x`) ", want: "Host(`a.example.org`) && PathPrefix(`/x`)"},
		{in: "!Method(`GET`, `POST`) || (Path(`/a`,`/b`))", want: "!(Method(`GET`) || Method(`POST`)) || ((Path(`/a`) || Path(`/b`)))"},
		{in: "Query(`a`, `b`)", want: "Query(`a`, `b`)"},
		{in: "", err: "rule ends early"},
		{in: "Host(`a`", err: "missing , or )"},
		{in: "Host()", err: "quoted"},
		{in: "Host(`a`) &&", err: "ends early"},
		{in: "Nope(`a`)", err: "unknown matcher"},
		{in: "Host(`a`) Host(`b`)", err: "unexpected"},
		{in: "Host(`bad host`)", err: "invalid host"},
		{in: "(((Host(`a`))", err: "missing )"},
		{in: "Host(`a`) $", err: "unexpected"},
	}
	for _, tt := range tests {
		got, _, err := normalizeRule(tt.in)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("normalizeRule(%q) error = %v, want %q", tt.in, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("normalizeRule(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

// FuzzNormalizeRule checks that any label value parses without panicking and
// that a normalized rule is a fixed point.
func FuzzNormalizeRule(f *testing.F) {
	for _, s := range []string{"Host(`a.example.org`)", "Host(`a`,`b`) && !PathPrefix(`/x`)", "((", "Host(\"x\")", "Headers(`a`, `b`)", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out, _, err := normalizeRule(in)
		if err != nil {
			return
		}
		again, _, err := normalizeRule(out)
		if err != nil || again != out {
			t.Fatalf("normalize(%q) = %q, renormalized %q, %v", in, out, again, err)
		}
	})
}

// FuzzV1Rule checks that Traefik v1 rules never panic and always convert to
// a rule the v3 parser accepts.
func FuzzV1Rule(f *testing.F) {
	for _, s := range []string{"Host:a.example.org", "Host:a,b;PathPrefix:/x", "Path:/a", ";", ":"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		rule, _, _, err := v1Rule(in)
		if err != nil {
			return
		}
		if _, _, err := normalizeRule(rule); err != nil {
			t.Fatalf("v1Rule(%q) = %q, which does not parse: %v", in, rule, err)
		}
	})
}
