package watcher

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/api/types/events"
)

// fakeEngine is a Docker Engine API 1.41 (Docker 20.10) on 127.0.0.1 that
// answers the three calls edge makes and records the paths it was asked.
func fakeEngine(t *testing.T) (host string, paths func() []string) {
	t.Helper()
	var mu sync.Mutex
	var seen []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.URL.Path+"?"+r.URL.RawQuery)
		mu.Unlock()
		w.Header().Set("Api-Version", "1.41")
		switch {
		case r.URL.Path == "/_ping":
			w.Write([]byte("OK"))
		case r.URL.Path == "/v1.41/networks":
			json.NewEncoder(w).Encode([]map[string]any{{"Id": "n1", "Name": "web", "Scope": "swarm"}})
		case r.URL.Path == "/v1.41/services":
			json.NewEncoder(w).Encode([]map[string]any{{"ID": "s1", "Spec": map[string]any{
				"Name": "gogs", "Labels": map[string]string{"edge.host": "gogs.example.org"},
				"TaskTemplate": map[string]any{"Networks": []map[string]string{{"Target": "n1"}}}}}})
		case r.URL.Path == "/v1.41/events":
			w.Header().Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(map[string]any{"Type": "service", "Action": "update",
				"Actor": map[string]any{"ID": "s1"}, "scope": "swarm"})
			w.(http.Flusher).Flush()
			<-r.Context().Done()
		default:
			http.Error(w, `{"message":"unexpected path"}`, http.StatusNotFound)
		}
	}))
	t.Cleanup(srv.Close)
	return "tcp://" + strings.TrimPrefix(srv.URL, "http://"), func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), seen...)
	}
}

func TestMobyAgainstAPI141(t *testing.T) {
	t.Setenv("DOCKER_API_VERSION", "")
	host, paths := fakeEngine(t)
	m, err := NewMoby(host)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	nets, err := m.Networks(ctx)
	if err != nil || nets["n1"] != "web" {
		t.Fatalf("Networks = %v, %v", nets, err)
	}
	svcs, err := m.Services(ctx)
	if err != nil || len(svcs) != 1 || svcs[0].Spec.Name != "gogs" || svcs[0].Spec.TaskTemplate.Networks[0].Target != "n1" {
		t.Fatalf("Services = %+v, %v", svcs, err)
	}
	ectx, ecancel := context.WithCancel(ctx)
	msgs, errs := m.Events(ectx)
	select {
	case msg := <-msgs:
		if msg.Type != events.ServiceEventType || msg.Action != events.ActionUpdate {
			t.Errorf("event = %+v", msg)
		}
	case err := <-errs:
		t.Fatalf("events: %v", err)
	case <-ctx.Done():
		t.Fatal("no event")
	}
	ecancel()
	select {
	case <-errs:
	case <-ctx.Done():
		t.Fatal("event stream did not end after cancel")
	}

	all := strings.Join(paths(), "\n")
	for _, want := range []string{"/_ping", "/v1.41/networks?filters=", "scope", "/v1.41/services?", "/v1.41/events?filters=", "service"} {
		if !strings.Contains(all, want) {
			t.Errorf("requests lack %q:\n%s", want, all)
		}
	}
}
