package status

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/homeswarm/homeswarm/edge/builder"
)

func get(t *testing.T, h http.Handler, method, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, path, nil))
	return rec.Code, rec.Body.String()
}

func testServer() *Server {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	s := New(Options{
		Now:    func() time.Time { return now },
		Docker: func() Docker { return Docker{Connected: false, LastError: "connection refused"} },
		Metrics: func() []Metric {
			return []Metric{{Name: "edge_syncs_total", Help: "Syncs.", Type: "counter", Value: 7}}
		},
	})
	s.Publish(Report{
		UpdatedAt: now.Add(-2 * time.Second),
		Routes: []builder.Route{{Name: "gogs", Service: "gogs", Dialect: builder.DialectEdge, Rule: "Host(`gogs.example.org`)",
			EntryPoints: []string{"websecure"}, TLS: &builder.TLS{CertResolver: "le"}, RedirectFrom: []string{"web"},
			Backend: "gogs", URL: "http://gogs:3000"}},
		TCP: []builder.TCPRoute{{Name: "m-tcp-smtp", Service: "m", Dialect: builder.DialectEdge, Rule: "HostSNI(`*`)",
			EntryPoints: []string{"tcp-25"}, Address: "m:25", Tasks: true, Servers: []string{"10.0.1.5:25"}, ProxyProtocol: 2}},
		UDP: []builder.UDPRoute{{Name: "m-udp-v", Service: "m", Dialect: builder.DialectEdge, EntryPoints: []string{"udp-9987"},
			Address: "m:9987", Tasks: true, Servers: []string{}}},
		Skipped: []builder.Diagnostic{
			{Service: "blog", Label: "edge.port", Value: "http", Reason: "invalid port", Skipped: true},
			{Service: "old", Label: "traefik.backend.loadbalancer.swarm", Value: "true", Reason: "not used"},
		},
	})
	return s
}

func TestPages(t *testing.T) {
	t.Parallel()
	s := testServer()
	tests := []struct {
		name, method, path string
		code               int
		contains           []string
	}{
		{"text", "GET", "/", 200, []string{
			"edge: 1 routes (+1 TCP, 1 UDP), 2 diagnostics, updated 2s ago; Docker UNUSABLE (connection refused), keeping the last routes",
			"gogs", "Host(`gogs.example.org`)", "acme:le (redirect from web)", "http://gogs:3000",
			`service blog: label edge.port="http": invalid port (route skipped)`,
			"1 task(s) of m:25: 10.0.1.5:25 (PROXY v2)", "0 task(s) of m:9987",
		}},
		{"json", "GET", "/routes", 200, []string{`"name": "gogs"`, `"reason": "invalid port"`, `"connected": false`}},
		{"metrics", "GET", "/metrics", 200, []string{
			"# TYPE edge_routes gauge\nedge_routes 1\n",
			"edge_labels_skipped 1\n", "edge_labels_ignored 1\n",
			"# HELP edge_syncs_total Syncs.\n# TYPE edge_syncs_total counter\nedge_syncs_total 7\n",
			"edge_routes_updated_timestamp_seconds 1.767268798e+09",
		}},
		{"healthz", "GET", "/healthz", 200, []string{"ok"}},
		{"unknown", "GET", "/nope", 404, nil},
		{"post", "POST", "/", 405, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			code, body := get(t, s, tt.method, tt.path)
			if code != tt.code {
				t.Fatalf("%s %s = %d, want %d", tt.method, tt.path, code, tt.code)
			}
			for _, c := range tt.contains {
				if !strings.Contains(body, c) {
					t.Errorf("%s lacks %q:\n%s", tt.path, c, body)
				}
			}
		})
	}
}

func TestJSONDecodes(t *testing.T) {
	t.Parallel()
	_, body := get(t, testServer(), "GET", "/routes")
	var got struct {
		Report
		Docker *Docker `json:"docker"`
	}
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Routes) != 1 || got.Routes[0].URL != "http://gogs:3000" || len(got.Skipped) != 2 || got.Docker == nil {
		t.Errorf("decoded %+v", got)
	}
	// Before the first report, lists are empty arrays, not null.
	_, body = get(t, New(Options{}), "GET", "/routes")
	if !strings.Contains(body, `"routes": []`) || !strings.Contains(body, `"diagnostics": []`) {
		t.Errorf("empty report: %s", body)
	}
	_, body = get(t, New(Options{}), "GET", "/")
	if !strings.Contains(body, "no Swarm state seen yet") {
		t.Errorf("empty text report: %s", body)
	}
}

func TestServe(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := testServer()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	resp, err := http.Get("http://" + ln.Addr().String() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "ok\n" {
		t.Errorf("healthz = %q", b)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve = %v, want nil after cancel", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return")
	}
}
