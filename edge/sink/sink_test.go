package sink

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/homeswarm/homeswarm/edge/builder"
)

func table(hosts ...string) builder.Table {
	var t builder.Table
	for _, h := range hosts {
		svc := strings.Split(h, ".")[0]
		t.Routes = append(t.Routes, builder.Route{Name: svc, Service: svc, Rule: "Host(`" + h + "`)",
			EntryPoints: []string{"websecure"}, TLS: &builder.TLS{CertResolver: "le"}, RedirectFrom: []string{"web"},
			Backend: svc, URL: "http://" + svc + ":80"})
	}
	return t
}

func TestRender(t *testing.T) {
	t.Parallel()
	tb := builder.Table{Routes: []builder.Route{
		{Name: "a1", Rule: "Host(`a.example.org`)", EntryPoints: []string{"web"}, Backend: "a", URL: "http://a1:80"},
		{Name: "a2", Rule: "Host(`a2.example.org`)", EntryPoints: []string{"web"}, Backend: "a", URL: "http://a2:80", Priority: 3},
		{Name: "g", Rule: "Host(`g.example.org`) && PathPrefix(`/x`)", EntryPoints: []string{"websecure"},
			Middlewares: []string{"auth@file"}, TLS: &builder.TLS{CertResolver: "le"}, RedirectFrom: []string{"web"},
			Backend: "g", URL: "http://g:3000"},
		{Name: "x-r", Rule: "Host(`x.example.org`)", EntryPoints: []string{"web"}, Backend: "api@internal"},
	}}
	got, err := Render(tb)
	if err != nil {
		t.Fatal(err)
	}
	want := header + `http:
  routers:
    a1:
      rule: Host(` + "`a.example.org`" + `)
      entryPoints: [web]
      service: a
    a2:
      rule: Host(` + "`a2.example.org`" + `)
      entryPoints: [web]
      service: a
      priority: 3
    g:
      rule: Host(` + "`g.example.org`" + `) && PathPrefix(` + "`/x`" + `)
      entryPoints: [websecure]
      middlewares: [auth@file]
      service: g
      tls:
        certResolver: le
    g-redirect-https:
      rule: Host(` + "`g.example.org`" + `) && PathPrefix(` + "`/x`" + `)
      entryPoints: [web]
      middlewares: [edge-redirect-https]
      service: g
    x-r:
      rule: Host(` + "`x.example.org`" + `)
      entryPoints: [web]
      service: api@internal
  services:
    a:
      loadBalancer:
        servers:
          - url: http://a1:80
          - url: http://a2:80
    g:
      loadBalancer:
        servers:
          - url: http://g:3000
  middlewares:
    edge-redirect-https:
      redirectScheme:
        scheme: https
        permanent: true
`
	if string(got) != want {
		t.Errorf("Render:\n%s\nwant:\n%s", got, want)
	}
	again, _ := Render(tb)
	if !bytes.Equal(got, again) {
		t.Error("Render is not deterministic")
	}
}

func TestRenderEmptyIsValidYAML(t *testing.T) {
	t.Parallel()
	got, err := Render(builder.Table{})
	if err != nil {
		t.Fatal(err)
	}
	var v map[string]any
	if err := yaml.Unmarshal(got, &v); err != nil || v["http"] == nil {
		t.Fatalf("empty table rendered %q: %v", got, err)
	}
	if strings.Contains(string(got), "routers") {
		t.Errorf("empty table has routers:\n%s", got)
	}
}

func TestNewFile(t *testing.T) {
	t.Parallel()
	if _, err := NewFile(Options{Dir: filepath.Join(t.TempDir(), "missing")}); !errors.Is(err, ErrNoDir) {
		t.Errorf("missing dir: err = %v, want ErrNoDir", err)
	}
	if _, err := NewFile(Options{Dir: t.TempDir(), File: "edge.json"}); err == nil {
		t.Error("edge.json accepted; Traefik would not read it")
	}
	dir := t.TempDir()
	stale := filepath.Join(dir, ".edge.yml.tmp-123")
	os.WriteFile(stale, []byte("x"), 0o644)
	if _, err := NewFile(Options{Dir: dir}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("stale temp file not removed: %v", err)
	}
}

func TestWriteOnlyWhenChanged(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	f, err := NewFile(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	changed, err := f.Write(table("a.example.org"))
	if err != nil || !changed {
		t.Fatalf("first Write = %v, %v; want changed", changed, err)
	}
	fi1, _ := os.Stat(f.Path())
	changed, err = f.Write(table("a.example.org"))
	if err != nil || changed {
		t.Fatalf("same table Write = %v, %v; want unchanged", changed, err)
	}
	fi2, _ := os.Stat(f.Path())
	if !os.SameFile(fi1, fi2) || !fi1.ModTime().Equal(fi2.ModTime()) {
		t.Error("unchanged table replaced the file")
	}
	if changed, err := f.Write(table("b.example.org")); err != nil || !changed {
		t.Fatalf("new table Write = %v, %v; want changed", changed, err)
	}
	if s := f.Stats(); s != (Stats{Writes: 2, Unchanged: 1}) {
		t.Errorf("Stats = %+v", s)
	}
	// A restarted edge finds its own file and does not rewrite it.
	f2, _ := NewFile(Options{Dir: dir})
	if changed, err := f2.Write(table("b.example.org")); err != nil || changed {
		t.Errorf("after restart Write = %v, %v; want unchanged", changed, err)
	}
	// A file deleted or edited by hand is restored.
	os.Remove(f.Path())
	if changed, err := f2.Write(table("b.example.org")); err != nil || !changed {
		t.Errorf("after delete Write = %v, %v; want changed", changed, err)
	}
	os.WriteFile(f.Path(), []byte("http: {}\n"), 0o644)
	if changed, err := f2.Write(table("b.example.org")); err != nil || !changed {
		t.Errorf("after edit Write = %v, %v; want changed", changed, err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 || entries[0].Name() != DefaultFile {
		t.Errorf("directory holds %v, want only %s", entries, DefaultFile)
	}
	if fi, _ := os.Stat(f.Path()); fi.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, want 0644", fi.Mode())
	}
}

// TestWriteIsAtomic reads the file continuously while tables of very
// different sizes replace it: every read must be one complete rendering.
func TestWriteIsAtomic(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	f, err := NewFile(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	var many []string
	for i := 0; i < 300; i++ {
		many = append(many, "host"+strings.Repeat("x", i%50)+string(rune('a'+i%26))+".example.org")
	}
	small, big := table("a.example.org"), table(many...)
	smallData, _ := Render(small)
	bigData, _ := Render(big)
	if _, err := f.Write(small); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var reads, torn int
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			data, err := os.ReadFile(f.Path())
			if err != nil {
				torn++
				continue
			}
			reads++
			if !bytes.Equal(data, smallData) && !bytes.Equal(data, bigData) {
				torn++
			}
		}
	}()
	deadline := time.Now().Add(500 * time.Millisecond)
	for i := 0; time.Now().Before(deadline); i++ {
		tb := small
		if i%2 == 0 {
			tb = big
		}
		if _, err := f.Write(tb); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	if torn > 0 || reads == 0 {
		t.Fatalf("%d of %d reads saw a partial or missing file", torn, reads)
	}
}

func TestWriteFailureKeepsOldFile(t *testing.T) {
	t.Parallel()
	dir, fill := noRoom(t)
	f, err := NewFile(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(table("a.example.org")); err != nil {
		t.Fatal(err)
	}
	fill()
	if _, err := f.Write(table("b.example.org")); err == nil {
		t.Fatal("Write into a directory without room for a new file succeeded")
	}
	data, err := os.ReadFile(f.Path())
	if err != nil || !strings.Contains(string(data), "a.example.org") || strings.Contains(string(data), "b.example.org") {
		t.Errorf("old routes lost: %v\n%s", err, data)
	}
	if st := f.Stats(); st.Writes != 1 || st.Errors != 1 {
		t.Errorf("stats %+v, want 1 write and 1 error", st)
	}
}

func TestRenderTCPUDP(t *testing.T) {
	t.Parallel()
	http, err := Render(builder.Table{})
	if err != nil || strings.Contains(string(http), "tcp:") || strings.Contains(string(http), "udp:") {
		t.Fatalf("an HTTP-only table renders tcp/udp sections (files of older edges would change):\n%s", http)
	}
	out, err := Render(builder.Table{
		TCP: []builder.TCPRoute{
			{Name: "mail-tcp-smtp", Rule: "HostSNI(`*`)", EntryPoints: []string{"tcp-25"}, Address: "mail:25", ProxyProtocol: 2},
			{Name: "x-tcp-c2s", Rule: "HostSNI(`x.example.org`)", EntryPoints: []string{"websecure"}, TLS: &builder.TCPTLS{Passthrough: true}, Address: "x:5223"},
			{Name: "i-tcp-imaps", Rule: "HostSNI(`i.example.org`)", EntryPoints: []string{"tcp-993"}, TLS: &builder.TCPTLS{CertResolver: "le"}, Address: "i:143"},
		},
		UDP: []builder.UDPRoute{{Name: "ts-udp-voice", EntryPoints: []string{"udp-9987"}, Address: "ts:9987"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := `tcp:
  routers:
    i-tcp-imaps:
      rule: HostSNI(` + "`i.example.org`" + `)
      entryPoints: [tcp-993]
      service: i-tcp-imaps
      tls:
        certResolver: le
    mail-tcp-smtp:
      rule: HostSNI(` + "`*`" + `)
      entryPoints: [tcp-25]
      service: mail-tcp-smtp
    x-tcp-c2s:
      rule: HostSNI(` + "`x.example.org`" + `)
      entryPoints: [websecure]
      service: x-tcp-c2s
      tls:
        passthrough: true
  services:
    i-tcp-imaps:
      loadBalancer:
        servers:
          - address: i:143
    mail-tcp-smtp:
      loadBalancer:
        servers:
          - address: mail:25
        proxyProtocol:
          version: 2
    x-tcp-c2s:
      loadBalancer:
        servers:
          - address: x:5223
udp:
  routers:
    ts-udp-voice:
      entryPoints: [udp-9987]
      service: ts-udp-voice
  services:
    ts-udp-voice:
      loadBalancer:
        servers:
          - address: ts:9987
`
	if !strings.HasSuffix(string(out), want) {
		t.Fatalf("Render:\n%s\nwant it to end with:\n%s", out, want)
	}
}

// Task-balanced backends list their tasks (none: an empty list, so Traefik
// answers 503 rather than resolving the VIP), with the health check, sticky
// cookie and retry middleware the table asks for.
func TestRenderTasks(t *testing.T) {
	t.Parallel()
	tb := builder.Table{RetryAttempts: 3, Routes: []builder.Route{
		{Name: "w", Rule: "Host(`w.test`)", EntryPoints: []string{"web"}, Middlewares: []string{builder.RetryMiddleware},
			Backend: "w", URL: "http://w:80", Tasks: true, Servers: []string{"http://10.0.1.5:80", "http://10.0.1.6:80"},
			HealthCheck: &builder.HealthCheck{Path: "/health", Interval: "1s"}, Sticky: &builder.Sticky{Name: "srv", HTTPOnly: true}},
		{Name: "z", Rule: "Host(`z.test`)", EntryPoints: []string{"web"}, Backend: "z", URL: "http://z:80", Tasks: true, Servers: []string{}},
	}}
	got, err := Render(tb)
	if err != nil {
		t.Fatal(err)
	}
	want := header + `http:
  routers:
    w:
      rule: Host(` + "`w.test`" + `)
      entryPoints: [web]
      middlewares: [edge-retry]
      service: w
    z:
      rule: Host(` + "`z.test`" + `)
      entryPoints: [web]
      service: z
  services:
    w:
      loadBalancer:
        servers:
          - url: http://10.0.1.5:80
          - url: http://10.0.1.6:80
        healthCheck:
          path: /health
          interval: 1s
        sticky:
          cookie:
            name: srv
            httpOnly: true
    z:
      loadBalancer:
        servers: []
  middlewares:
    edge-redirect-https:
      redirectScheme:
        scheme: https
        permanent: true
    edge-retry:
      retry:
        attempts: 3
        initialInterval: 100ms
`
	if string(got) != want {
		t.Errorf("Render:\n%s\nwant:\n%s", got, want)
	}
}

// Task-balanced TCP and UDP routes list their tasks' addresses, not the
// VIP; none running: an empty list.
func TestRenderTCPUDPTasks(t *testing.T) {
	t.Parallel()
	got, err := Render(builder.Table{
		TCP: []builder.TCPRoute{
			{Name: "m-tcp-smtp", Rule: "HostSNI(`*`)", EntryPoints: []string{"tcp-25"}, Address: "m:25",
				Tasks: true, Servers: []string{"10.0.1.5:25", "10.0.1.6:25"}, ProxyProtocol: 2},
			{Name: "z-tcp-x", Rule: "HostSNI(`*`)", EntryPoints: []string{"tcp-26"}, Address: "z:1", Tasks: true, Servers: []string{}},
		},
		UDP: []builder.UDPRoute{{Name: "m-udp-v", EntryPoints: []string{"udp-9987"}, Address: "m:9987",
			Tasks: true, Servers: []string{"10.0.1.5:9987"}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := `  services:
    m-tcp-smtp:
      loadBalancer:
        servers:
          - address: 10.0.1.5:25
          - address: 10.0.1.6:25
        proxyProtocol:
          version: 2
    z-tcp-x:
      loadBalancer:
        servers: []
udp:
  routers:
    m-udp-v:
      entryPoints: [udp-9987]
      service: m-udp-v
  services:
    m-udp-v:
      loadBalancer:
        servers:
          - address: 10.0.1.5:9987
`
	if !strings.HasSuffix(string(got), want) {
		t.Errorf("Render:\n%s\nwant it to end with:\n%s", got, want)
	}
}
