package main

import (
	"errors"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/homeswarm/homeswarm/edge/builder"
	"github.com/homeswarm/homeswarm/edge/sink"
	"github.com/homeswarm/homeswarm/edge/watcher"
	"github.com/homeswarm/homeswarm/internal/settings"
)

func TestRunRejectsBadSettings(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	tests := []struct {
		name, dir, file, level string
		check                  func(error) bool
	}{
		{"missing dir", filepath.Join(dir, "nope"), "edge.yml", "info", func(err error) bool { return errors.Is(err, sink.ErrNoDir) }},
		{"file Traefik would not read", dir, "edge.json", "info", func(err error) bool { return err != nil && strings.Contains(err.Error(), ".yml") }},
		{"bad log level", dir, "edge.yml", "loud", func(err error) bool { return err != nil && strings.Contains(err.Error(), "-log-level") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := run("unix:///nonexistent.sock", tt.dir, tt.file, "", tt.level, time.Second, time.Millisecond, -1, builder.Options{})
			if !tt.check(err) {
				t.Errorf("run = %v", err)
			}
		})
	}
}

func TestEnvDurations(t *testing.T) {
	t.Parallel()
	env := func(kv ...string) func(string) string {
		m := map[string]string{}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return func(k string) string { return m[k] }
	}
	for _, tc := range []struct {
		name             string
		env              func(string) string
		resync, debounce time.Duration
		wantErr          string
	}{
		{"defaults", env(), watcher.DefaultResync, watcher.DefaultDebounce, ""},
		{"set", env("EDGE_RESYNC", "1m", "EDGE_DEBOUNCE", "150ms"), time.Minute, 150 * time.Millisecond, ""},
		{"zero is the default", env("EDGE_DEBOUNCE", "0s"), watcher.DefaultResync, 0, ""},
		{"bad resync", env("EDGE_RESYNC", "soon"), 0, 0, "EDGE_RESYNC"},
		{"negative debounce", env("EDGE_DEBOUNCE", "-1s"), 0, 0, "EDGE_DEBOUNCE"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r, d, err := envDurations(tc.env)
			if tc.wantErr != "" {
				if !errors.Is(err, settings.ErrInvalid) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one naming %s", err, tc.wantErr)
				}
				return
			}
			if err != nil || r != tc.resync || d != tc.debounce {
				t.Fatalf("envDurations = %v, %v, %v; want %v, %v", r, d, err, tc.resync, tc.debounce)
			}
		})
	}
}

// TestStatusOnLoopbackByDefault is issue 12's item 13: the status page,
// which has no authentication, listens on loopback unless told otherwise.
func TestStatusOnLoopbackByDefault(t *testing.T) {
	t.Parallel()
	if publicListen(DefaultListen) {
		t.Fatalf("default status address %s listens beyond loopback", DefaultListen)
	}
	for addr, public := range map[string]bool{
		":8089": true, "0.0.0.0:8089": true, "[::]:8089": true, "10.254.0.1:8089": true, "vps:8089": true,
		"127.0.0.1:8089": false, "[::1]:8089": false, "localhost:8089": false,
	} {
		if got := publicListen(addr); got != public {
			t.Errorf("publicListen(%q) = %v, want %v", addr, got, public)
		}
	}
}

func TestParseInternal(t *testing.T) {
	t.Parallel()
	if got, err := parseInternal(" api@internal, dashboard@internal ,"); err != nil || len(got) != 2 || got[1] != "dashboard@internal" {
		t.Fatalf("parseInternal = %v, %v", got, err)
	}
	for _, bad := range []string{"api", "api@file", "@internal", "a pi@internal"} {
		if _, err := parseInternal(bad); !errors.Is(err, settings.ErrInvalid) {
			t.Errorf("parseInternal(%q) = %v, want ErrInvalid", bad, err)
		}
	}
}

func TestParsePorts(t *testing.T) {
	t.Parallel()
	got, err := parsePorts("-tcp-ports", " 993, 25,587,10000-10002,25 ")
	if want := []int{25, 587, 993, 10000, 10001, 10002}; err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("parsePorts = %v, %v; want %v", got, err, want)
	}
	if got, err := parsePorts("-udp-ports", ""); err != nil || got != nil {
		t.Fatalf("empty = %v, %v", got, err)
	}
	for _, bad := range []string{"0", "65536", "x", "10-5", "1-", "-3", "1-2000"} {
		if _, err := parsePorts("-tcp-ports", bad); !errors.Is(err, settings.ErrInvalid) || !strings.Contains(err.Error(), "-tcp-ports") {
			t.Errorf("parsePorts(%q) = %v, want ErrInvalid naming the setting", bad, err)
		}
	}
	flags := entryPointFlags([]int{25}, []int{9987})
	if want := []string{"--entryPoints.tcp-25.address=:25/tcp", "--entryPoints.udp-9987.address=:9987/udp"}; !reflect.DeepEqual(flags, want) {
		t.Fatalf("entryPointFlags = %v", flags)
	}
}

func TestLBSettings(t *testing.T) {
	t.Parallel()
	env := func(kv ...string) func(string) string {
		m := map[string]string{}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return func(k string) string { return m[k] }
	}
	for _, tc := range []struct {
		name    string
		env     func(string) string
		lb      string
		poll    time.Duration
		retry   int
		wantErr string
	}{
		{"defaults", env(), builder.LBTasks, watcher.DefaultTaskPoll, DefaultRetry, ""},
		{"set", env("EDGE_LB", "VIP", "EDGE_TASK_POLL", "1s", "EDGE_RETRY", "0"), builder.LBVIP, time.Second, 0, ""},
		{"bad mode", env("EDGE_LB", "ipvs"), "", 0, 0, "EDGE_LB"},
		{"bad poll", env("EDGE_TASK_POLL", "fast"), "", 0, 0, "EDGE_TASK_POLL"},
		{"bad retry", env("EDGE_RETRY", "-1"), "", 0, 0, "EDGE_RETRY"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			lb, poll, retry, err := lbSettings(tc.env)
			if tc.wantErr != "" {
				if !errors.Is(err, settings.ErrInvalid) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one naming %s", err, tc.wantErr)
				}
				return
			}
			if err != nil || lb != tc.lb || poll != tc.poll || retry != tc.retry {
				t.Fatalf("lbSettings = %q, %v, %d, %v; want %q, %v, %d", lb, poll, retry, err, tc.lb, tc.poll, tc.retry)
			}
		})
	}
}
