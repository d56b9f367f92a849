package main

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/homeswarm/homeswarm/edge/builder"
	"github.com/homeswarm/homeswarm/edge/sink"
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
			err := run("unix:///nonexistent.sock", tt.dir, tt.file, "", tt.level, time.Second, time.Millisecond, builder.Options{})
			if !tt.check(err) {
				t.Errorf("run = %v", err)
			}
		})
	}
}

func TestEnvDuration(t *testing.T) {
	t.Setenv("EDGE_TEST_D", "150ms")
	if d := envDuration("EDGE_TEST_D", time.Second); d != 150*time.Millisecond {
		t.Errorf("envDuration = %v", d)
	}
	t.Setenv("EDGE_TEST_D", "soon")
	if d := envDuration("EDGE_TEST_D", time.Second); d != time.Second {
		t.Errorf("envDuration(bad) = %v, want the default", d)
	}
}
