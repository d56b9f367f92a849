package builder

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestBuildTCPUDP(t *testing.T) {
	t.Parallel()
	o := Options{TCPPorts: []int{25, 587, 993, 5222, 64738}, UDPPorts: []int{9987, 64738}, CertResolver: "le"}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name     string
		services []Service
		tcp      []TCPRoute
		udp      []UDPRoute
		http     int      // HTTP routes expected
		diags    []string // substrings, in order
	}{
		{
			name:     "edge plain TCP by public port",
			services: []Service{svc("mail", "edge.tcp.smtp.port", "25", "edge.tcp.smtp.entrypoint", "25")},
			tcp: []TCPRoute{{Name: "mail-tcp-smtp", Service: "mail", Dialect: DialectEdge, Rule: "HostSNI(`*`)",
				EntryPoints: []string{"tcp-25"}, Address: "mail:25"}},
		},
		{
			name: "edge entry point by name, PROXY protocol v2, and an HTTP route beside it",
			services: []Service{svc("mail", "edge.tcp.sub.port", "587", "edge.tcp.sub.entrypoint", "tcp-587",
				"edge.tcp.sub.proxy-protocol", "2", "edge.host", "mail.example.org", "edge.port", "80")},
			tcp: []TCPRoute{{Name: "mail-tcp-sub", Service: "mail", Dialect: DialectEdge, Rule: "HostSNI(`*`)",
				EntryPoints: []string{"tcp-587"}, Address: "mail:587", ProxyProtocol: 2}},
			http: 1,
		},
		{
			name:     "edge TLS by SNI: passthrough on the HTTPS entry point by default",
			services: []Service{svc("xmpp", "edge.tcp.c2s.port", "5223", "edge.tcp.c2s.sni", "XMPP.example.org,chat.example.org")},
			tcp: []TCPRoute{{Name: "xmpp-tcp-c2s", Service: "xmpp", Dialect: DialectEdge,
				Rule: "HostSNI(`xmpp.example.org`) || HostSNI(`chat.example.org`)", SNI: []string{"xmpp.example.org", "chat.example.org"},
				EntryPoints: []string{"websecure"}, TLS: &TCPTLS{Passthrough: true}, Address: "xmpp:5223"}},
		},
		{
			name: "edge TLS terminated by Traefik with ACME on a TCP port",
			services: []Service{svc("imap", "edge.tcp.imaps.port", "143", "edge.tcp.imaps.entrypoint", "993",
				"edge.tcp.imaps.sni", "imap.example.org", "edge.tcp.imaps.certresolver", "le")},
			tcp: []TCPRoute{{Name: "imap-tcp-imaps", Service: "imap", Dialect: DialectEdge, Rule: "HostSNI(`imap.example.org`)",
				SNI: []string{"imap.example.org"}, EntryPoints: []string{"tcp-993"}, TLS: &TCPTLS{CertResolver: "le"}, Address: "imap:143"}},
		},
		{
			name:     "edge TLS terminated, every name, default certificate",
			services: []Service{svc("s", "edge.tcp.x.port", "1", "edge.tcp.x.entrypoint", "5222", "edge.tcp.x.tls", "terminate")},
			tcp: []TCPRoute{{Name: "s-tcp-x", Service: "s", Dialect: DialectEdge, Rule: "HostSNI(`*`)",
				EntryPoints: []string{"tcp-5222"}, TLS: &TCPTLS{}, Address: "s:1"}},
		},
		{
			name: "Mumble: TCP and UDP on the same public port",
			services: []Service{svc("mumble", "edge.tcp.voice.port", "64738", "edge.tcp.voice.entrypoint", "64738",
				"edge.udp.voice.port", "64738", "edge.udp.voice.entrypoint", "64738")},
			tcp: []TCPRoute{{Name: "mumble-tcp-voice", Service: "mumble", Dialect: DialectEdge, Rule: "HostSNI(`*`)",
				EntryPoints: []string{"tcp-64738"}, Address: "mumble:64738"}},
			udp: []UDPRoute{{Name: "mumble-udp-voice", Service: "mumble", Dialect: DialectEdge,
				EntryPoints: []string{"udp-64738"}, Address: "mumble:64738"}},
		},
		{
			name: "undeclared ports and entry points are refused clearly, the rest stands",
			services: []Service{svc("x",
				"edge.tcp.a.port", "2525", "edge.tcp.a.entrypoint", "2525",
				"edge.tcp.b.port", "80", "edge.tcp.b.entrypoint", "web",
				"edge.tcp.c.port", "80", "edge.tcp.c.entrypoint", "websecure",
				"edge.tcp.d.port", "25",
				"edge.udp.e.port", "53", "edge.udp.e.entrypoint", "53",
				"edge.udp.ok.port", "9987", "edge.udp.ok.entrypoint", "udp-9987")},
			udp: []UDPRoute{{Name: "x-udp-ok", Service: "x", Dialect: DialectEdge, EntryPoints: []string{"udp-9987"}, Address: "x:9987"}},
			diags: []string{
				"edge.tcp.a.entrypoint=\"2525\": invalid port: public TCP port 2525 is not declared", "-tcp-ports declares 25,587,993,5222,64738",
				"edge.tcp.b.entrypoint=\"web\"", "is not one edge may fill",
				"edge.tcp.c.entrypoint=\"websecure\"", "needs TLS server names",
				"edge.tcp.d.entrypoint", "is required",
				"edge.udp.e.entrypoint=\"53\"", "public UDP port 53 is not declared",
			},
		},
		{
			name: "bad labels skip only their route",
			services: []Service{svc("x",
				"edge.tcp.a.port", "http", "edge.tcp.a.entrypoint", "25",
				"edge.tcp.b.port", "1", "edge.tcp.b.entrypoint", "587", "edge.tcp.b.bogus", "1",
				"edge.tcp.c.port", "1", "edge.tcp.c.sni", "not a host",
				"edge.tcp.d.port", "1", "edge.tcp.d.sni", "d.example.org", "edge.tcp.d.tls", "none",
				"edge.tcp.e.port", "1", "edge.tcp.e.entrypoint", "993", "edge.tcp.e.proxy-protocol", "3",
				"edge.tcp.f.port", "1", "edge.tcp.f.entrypoint", "993", "edge.tcp.f.certresolver", "le", "edge.tcp.f.tls", "passthrough",
				"edge.tcp", "x", "edge.tcp.g", "1",
				"edge.tcp.ok.port", "1", "edge.tcp.ok.entrypoint", "5222")},
			tcp: []TCPRoute{{Name: "x-tcp-ok", Service: "x", Dialect: DialectEdge, Rule: "HostSNI(`*`)",
				EntryPoints: []string{"tcp-5222"}, Address: "x:1"}},
			diags: []string{"edge.tcp=\"x\"", "unknown edge label", // edge.tcp alone is not an L4 key
				"edge.tcp.a.port", "invalid port", "edge.tcp.b.bogus", "unknown edge.tcp option",
				"edge.tcp.c.sni", "invalid host", "edge.tcp.e.proxy-protocol", "use 1 or 2",
				"edge.tcp.g", "incomplete label",
				"edge.tcp.d.sni", "needs TLS", "edge.tcp.f.certresolver", "tls=terminate"},
			http: 0,
		},
		{
			name: "a public port belongs to the first service",
			services: []Service{
				at(svc("aaa", "edge.tcp.x.port", "25", "edge.tcp.x.entrypoint", "25"), "a", t0.Add(time.Hour)),
				at(svc("postfix", "edge.tcp.smtp.port", "25", "edge.tcp.smtp.entrypoint", "25"), "p", t0),
				at(svc("bbb", "edge.tcp.y.port", "25", "edge.tcp.y.entrypoint", "25", "edge.tcp.y.sni", "b.example.org"), "b", t0.Add(time.Hour)),
				at(svc("ccc", "edge.udp.x.port", "9987", "edge.udp.x.entrypoint", "9987"), "c", t0.Add(time.Hour)),
				at(svc("ts", "edge.udp.voice.port", "9987", "edge.udp.voice.entrypoint", "9987"), "t", t0),
			},
			tcp: []TCPRoute{{Name: "postfix-tcp-smtp", Service: "postfix", Dialect: DialectEdge, Rule: "HostSNI(`*`)",
				EntryPoints: []string{"tcp-25"}, Address: "postfix:25"}},
			udp: []UDPRoute{{Name: "ts-udp-voice", Service: "ts", Dialect: DialectEdge, EntryPoints: []string{"udp-9987"}, Address: "ts:9987"}},
			diags: []string{"service aaa: router aaa-tcp-x: entry point tcp-25 (public port) already carries every connection to service postfix",
				"service bbb: router bbb-tcp-y: entry point tcp-25", "service ccc: router ccc-udp-x: UDP entry point udp-9987 (public port) is already routed to service ts"},
		},
		{
			name: "a TLS name is a host: first service wins, HTTP or TCP",
			services: []Service{
				at(svc("gogs", "edge.host", "gogs.example.org", "edge.port", "3000"), "g", t0),
				at(svc("aaa", "edge.tcp.x.port", "443", "edge.tcp.x.sni", "gogs.example.org"), "a", t0.Add(time.Hour)),
				at(svc("xmpp", "edge.tcp.x.port", "5223", "edge.tcp.x.sni", "xmpp.example.org"), "x", t0),
				at(svc("bbb", "edge.host", "xmpp.example.org", "edge.port", "80"), "b", t0.Add(time.Hour)),
				at(svc("ccc", "edge.tcp.x.port", "1", "edge.tcp.x.entrypoint", "websecure", "edge.tcp.x.sni", "xmpp.example.org"), "c", t0.Add(time.Hour)),
			},
			http: 1,
			tcp: []TCPRoute{{Name: "xmpp-tcp-x", Service: "xmpp", Dialect: DialectEdge, Rule: "HostSNI(`xmpp.example.org`)",
				SNI: []string{"xmpp.example.org"}, EntryPoints: []string{"websecure"}, TLS: &TCPTLS{Passthrough: true}, Address: "xmpp:5223"}},
			diags: []string{"service gogs",
				"service xmpp", // none for these two
			},
		},
		{
			name: "traefik TCP and UDP labels",
			services: []Service{svc("t",
				"traefik.tcp.routers.smtp.rule", "HostSNI(`*`)", "traefik.tcp.routers.smtp.entrypoints", "tcp-25",
				"traefik.tcp.routers.smtp.service", "smtp",
				"traefik.tcp.services.smtp.loadbalancer.server.port", "25",
				"traefik.tcp.services.smtp.loadbalancer.proxyprotocol.version", "1",
				"traefik.tcp.routers.tls.rule", "HostSNI(`a.example.org`, `b.example.org`)", "traefik.tcp.routers.tls.entrypoints", "websecure",
				"traefik.tcp.routers.tls.tls.passthrough", "true", "traefik.tcp.routers.tls.service", "tls",
				"traefik.tcp.services.tls.loadbalancer.server.port", "8443",
				"traefik.udp.routers.voice.entrypoints", "udp-9987",
				"traefik.udp.services.voice.loadbalancer.server.port", "9987",
			)},
			tcp: []TCPRoute{
				{Name: "t-smtp", Service: "t", Dialect: DialectTraefikV2, Rule: "HostSNI(`*`)", EntryPoints: []string{"tcp-25"},
					Address: "t:25", ProxyProtocol: 1},
				{Name: "t-tls", Service: "t", Dialect: DialectTraefikV2, Rule: "HostSNI(`a.example.org`) || HostSNI(`b.example.org`)",
					SNI: []string{"a.example.org", "b.example.org"}, EntryPoints: []string{"websecure"}, TLS: &TCPTLS{Passthrough: true}, Address: "t:8443"},
			},
			udp: []UDPRoute{{Name: "t-voice", Service: "t", Dialect: DialectTraefikV2, EntryPoints: []string{"udp-9987"}, Address: "t:9987"}},
		},
		{
			name: "traefik TCP labels edge cannot honour",
			services: []Service{svc("t",
				"traefik.tcp.routers.a.rule", "ClientIP(`10.0.0.0/8`)", "traefik.tcp.routers.a.entrypoints", "tcp-25",
				"traefik.tcp.routers.b.rule", "HostSNI(`b.example.org`)", "traefik.tcp.routers.b.entrypoints", "tcp-993",
				"traefik.tcp.routers.c.rule", "HostSNI(`*`)", "traefik.tcp.routers.c.entrypoints", "tcp-587", "traefik.tcp.routers.c.middlewares", "x",
				"traefik.tcp.routers.d.rule", "HostSNI(`*`)", "traefik.tcp.routers.d.entrypoints", "tcp-2525",
				"traefik.tcp.services.s.loadbalancer.server.port", "25",
				"traefik.udp.routers.u.entrypoints", "udp-9987",
			)},
			diags: []string{"traefik.tcp.routers.a.rule", "only the HostSNI matcher",
				"traefik.tcp.routers.c.middlewares", "TCP router option not supported",
				"traefik.tcp.routers.b.rule", "needs TLS",
				"traefik.tcp.routers.d.entrypoints", "is not one edge may fill",
				"traefik.udp.routers.u.service", "define 0 UDP services"},
		},
		{
			name: "edge.tcp wins over traefik.tcp; traefik.enable=false leaves edge's",
			services: []Service{svc("t", "traefik.enable", "false",
				"edge.tcp.a.port", "25", "edge.tcp.a.entrypoint", "25",
				"traefik.tcp.routers.smtp.rule", "HostSNI(`*`)", "traefik.tcp.routers.smtp.entrypoints", "tcp-587",
				"traefik.tcp.services.smtp.loadbalancer.server.port", "25")},
			tcp: []TCPRoute{{Name: "t-tcp-a", Service: "t", Dialect: DialectEdge, Rule: "HostSNI(`*`)",
				EntryPoints: []string{"tcp-25"}, Address: "t:25"}},
			diags: []string{"traefik.tcp.*/traefik.udp.* labels are ignored"},
		},
		{
			name: "network check applies",
			services: []Service{{Name: "off", Networks: []string{"other"},
				Labels: map[string]string{"edge.tcp.a.port": "25", "edge.tcp.a.entrypoint": "25", "edge.udp.b.port": "9987", "edge.udp.b.entrypoint": "9987"}}},
			diags: []string{"service off: service is not attached to network web"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			opts := o
			opts.Network = "web"
			got, diags := Build(tt.services, opts)
			if !reflect.DeepEqual(got.TCP, tt.tcp) || !reflect.DeepEqual(got.UDP, tt.udp) {
				g, _ := json.MarshalIndent([]any{got.TCP, got.UDP}, "", "  ")
				w, _ := json.MarshalIndent([]any{tt.tcp, tt.udp}, "", "  ")
				t.Errorf("got  %s\nwant %s\n%s", g, w, diagText(diags))
			}
			if len(got.Routes) != tt.http {
				t.Errorf("%d HTTP routes, want %d", len(got.Routes), tt.http)
			}
			all := diagText(diags)
			rest := all
			for _, want := range tt.diags {
				if want == "service gogs" || want == "service xmpp" {
					if strings.Contains(all, want+":") {
						t.Errorf("diagnostics about %s:\n%s", want, all)
					}
					continue
				}
				i := strings.Index(rest, want)
				if i < 0 {
					t.Errorf("diagnostics lack %q (in order) in:\n%s", want, all)
					break
				}
				rest = rest[i+len(want):]
			}
			if len(tt.diags) == 0 && len(diags) > 0 {
				t.Errorf("unexpected diagnostics:\n%s", all)
			}
		})
	}
}

func TestParseTCPRule(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		want []string
		err  bool
	}{
		{in: "HostSNI(`*`)"},
		{in: " HostSNI( `B.example.org` ) || (HostSNI(`a.example.org`))", want: []string{"a.example.org", "b.example.org"}},
		{in: `HostSNI("a.example.org","b.example.org")`, want: []string{"a.example.org", "b.example.org"}},
		{in: "HostSNI(`*`) || HostSNI(`a.example.org`)", err: true},
		{in: "HostSNI(`a.example.org`) && ClientIP(`1.2.3.4`)", err: true},
		{in: "HostSNIRegexp(`.+`)", err: true},
		{in: "HostSNI()", err: true},
		{in: "HostSNI(`a", err: true},
		{in: "", err: true},
		{in: "(((", err: true},
	} {
		got, err := parseTCPRule(tc.in)
		if (err != nil) != tc.err || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("parseTCPRule(%q) = %v, %v", tc.in, got, err)
		}
	}
}

// FuzzParseTCPRule: no panic, and the rule edge writes for the names parses
// back to the same names.
func FuzzParseTCPRule(f *testing.F) {
	for _, s := range []string{"HostSNI(`*`)", "HostSNI(`a.example.org`) || HostSNI(`b.example.org`)", "HostSNI(\"a\",\"b\")", "((", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		names, err := parseTCPRule(in)
		if err != nil {
			return
		}
		again, err := parseTCPRule(sniRule(names))
		if err != nil || !reflect.DeepEqual(again, names) {
			t.Fatalf("parseTCPRule(%q) = %v; its rule %q parses to %v, %v", in, names, sniRule(names), again, err)
		}
	})
}

// FuzzBuildLabels: any labels build without panicking, and every rule edge
// writes (confined catch-alls included) parses.
func FuzzBuildLabels(f *testing.F) {
	f.Add("edge.tcp.a.port", "25", "edge.tcp.a.entrypoint", "25")
	f.Add("edge.udp.a.port", "1", "edge.udp.a.entrypoint", "udp-9987")
	f.Add("traefik.tcp.routers.r.rule", "HostSNI(`*`)", "traefik.tcp.routers.r.entrypoints", "tcp-25")
	f.Add("traefik.http.routers.r.rule", "HostRegexp(`.+`)", "traefik.http.services.s.loadbalancer.server.port", "80")
	f.Add("edge.lb", "tasks", "edge.healthcheck.path", "/health")
	f.Add("traefik.http.services.s.loadbalancer.healthcheck.interval", "1s", "traefik.http.services.s.loadbalancer.sticky.cookie.samesite", "lax")
	f.Add("traefik.swarm.lbswarm", "true", "edge.sticky.maxage", "60")
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2 string) {
		svcs := []Service{
			svc("gogs", "edge.host", "gogs.example.org", "edge.port", "3000"),
			withTasks(svc("x", k1, v1, k2, v2, "traefik.tcp.services.s.loadbalancer.server.port", "25", "edge.tcp.a.port", "25"), "10.0.1.5"),
		}
		table, _ := Build(svcs, Options{TCPPorts: []int{25}, UDPPorts: []int{9987}, TaskRouting: true, RetryAttempts: 3})
		for _, r := range table.Routes {
			if _, _, err := normalizeRule(r.Rule); err != nil {
				t.Fatalf("route %s: rule %q does not parse: %v", r.Name, r.Rule, err)
			}
		}
		for _, r := range table.TCP {
			if _, err := parseTCPRule(r.Rule); err != nil {
				t.Fatalf("TCP route %s: rule %q does not parse: %v", r.Name, r.Rule, err)
			}
		}
	})
}
