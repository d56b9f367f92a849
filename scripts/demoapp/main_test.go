package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestCounterAndNotes(t *testing.T) {
	a := &app{dir: t.TempDir(), host: "h1"}
	get := func(method, path, body string) (int, string) {
		rec := httptest.NewRecorder()
		a.ServeHTTP(rec, httptest.NewRequest(method, path, strings.NewReader(body)))
		return rec.Code, rec.Body.String()
	}
	for i, want := range []string{"visits=1 host=h1\n", "visits=2 host=h1\n"} {
		if code, body := get("GET", "/", ""); code != 200 || body != want {
			t.Fatalf("visit %d: %d %q", i, code, body)
		}
	}
	// A restarted app (another node, same data) continues the count.
	b := &app{dir: a.dir, host: "h2"}
	rec := httptest.NewRecorder()
	b.ServeHTTP(rec, httptest.NewRequest("GET", "/count", nil))
	if rec.Body.String() != "visits=2 host=h2\n" {
		t.Fatalf("count on another instance: %q", rec.Body.String())
	}
	if code, _ := get("PUT", "/notes/todo", "buy milk"); code != 200 {
		t.Fatal("store note")
	}
	if code, body := get("GET", "/notes/todo", ""); code != 200 || body != "buy milk" {
		t.Fatalf("read note: %d %q", code, body)
	}
	for _, bad := range []string{"/notes/../x", "/notes/", "/notes/a.b"} {
		if code, _ := get("GET", bad, ""); code != http.StatusBadRequest && code != http.StatusNotFound {
			t.Errorf("%s: %d", bad, code)
		}
	}
}
