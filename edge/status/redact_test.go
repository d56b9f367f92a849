package status

import (
	"strings"
	"testing"

	"github.com/homeswarm/homeswarm/edge/builder"
)

// TestStatusRedactsSecrets is issue 12's item 13: label values that are
// credentials (a v1 basic-auth hash appeared on the page) never reach the
// status page, in text or JSON, while the route itself stays visible.
func TestStatusRedactsSecrets(t *testing.T) {
	t.Parallel()
	const (
		hash   = "admin:$apr1$H6uskkkW$IgXLP6ewTrSuBkTrqE8wj/"
		bcrypt = "bob:$2y$05$Q9yq0Zr4t2wzZl1sF0mK0e6l2XkOqvJ1Zs7e4fXQe2a3l3m3n3o3p"
		urlpw  = "https://user:hunter2@backup.example.org/"
		token  = "s3cr3t-t0k3n-value"
	)
	services := []builder.Service{
		{Name: "v1", Labels: map[string]string{"traefik.frontend.rule": "Host:v1.example.org", "traefik.port": "80",
			"traefik.frontend.auth.basic.users": hash}},
		{Name: "v2", Labels: map[string]string{"traefik.http.routers.r.rule": "Host(`v2.example.org`)",
			"traefik.http.services.s.loadbalancer.server.port": "80",
			"traefik.http.middlewares.auth.basicauth.users":    bcrypt}},
		{Name: "e", Labels: map[string]string{"edge.host": "e.example.org", "edge.port": "80",
			"edge.bogus": urlpw, "edge.api-token": token}},
		{Name: "hdr", Labels: map[string]string{"traefik.http.routers.r.rule": "Host(`h.example.org`) && Header(`Authorization`, `Basic YWRtaW46aHVudGVyMg==`)",
			"traefik.http.services.s.loadbalancer.server.port": "80"}},
	}
	table, diags := builder.Build(services, builder.Options{})
	if len(diags) < 3 {
		t.Fatalf("want diagnostics for the auth labels, got %v", diags)
	}
	s := New(Options{})
	s.Publish(Report{Routes: table.Routes, Skipped: diags})
	for _, path := range []string{"/", "/routes"} {
		code, body := get(t, s, "GET", path)
		if code != 200 {
			t.Fatalf("GET %s = %d", path, code)
		}
		for _, secret := range []string{"$apr1$", "IgXLP6ewTrSuBkTrqE8wj", "$2y$", "hunter2", token, "YWRtaW46aHVudGVyMg"} {
			if strings.Contains(body, secret) {
				t.Errorf("GET %s shows %q:\n%s", path, secret, body)
			}
		}
		for _, want := range []string{"traefik.frontend.auth.basic.users", "v2.example.org", builder.Redacted} {
			if !strings.Contains(body, want) {
				t.Errorf("GET %s lacks %q:\n%s", path, want, body)
			}
		}
	}
	for _, d := range diags {
		if strings.Contains(d.String(), "$apr1$") || strings.Contains(d.String(), "hunter2") || strings.Contains(d.String(), token) {
			t.Errorf("diagnostic (logged by edge) carries a secret: %s", d)
		}
	}
}
