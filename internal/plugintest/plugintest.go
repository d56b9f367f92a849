// Package plugintest drives a Docker plugin handler (go-plugins-helpers)
// through a real unix socket, as dockerd does, for the drivers' tests.
package plugintest

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"testing"
	"time"
)

// Serve listens on a unix socket in a temporary directory, runs serve
// (a handler's Serve method) on it until t ends, and returns an HTTP
// client that talks to it.
func Serve(t testing.TB, serve func(net.Listener) error) *http.Client {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "plugin.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	go serve(l)
	t.Cleanup(func() { l.Close() })
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		},
	}}
}

// Call posts body to the plugin method (e.g. "VolumeDriver.Create") and
// returns the status code and the decoded JSON answer (the raw text under
// "raw" if it is not JSON).
func Call(t testing.TB, c *http.Client, method, body string) (int, map[string]any) {
	t.Helper()
	resp, err := c.Post("http://plugin/"+method, "application/vnd.docker.plugins.v1.1+json", bytes.NewBufferString(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	out := map[string]any{}
	if err := json.Unmarshal(raw, &out); err != nil {
		out["raw"] = string(raw)
	}
	return resp.StatusCode, out
}
