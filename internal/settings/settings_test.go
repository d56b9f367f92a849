package settings

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
)

// checkErr fails t unless err is nil when wantErr is false, or an
// ErrInvalid naming key (and never hiding the bad value) when it is true.
func checkErr(t *testing.T, err error, wantErr bool, key, v string) {
	t.Helper()
	switch {
	case !wantErr && err != nil:
		t.Fatalf("unexpected error: %v", err)
	case wantErr && err == nil:
		t.Fatal("no error")
	case wantErr && (!errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), key+"=") || !strings.Contains(err.Error(), v)):
		t.Fatalf("error %q is not an ErrInvalid naming %s and %q", err, key, v)
	}
}

func TestPort(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		v       string
		want    int
		wantErr bool
	}{
		{"", 3210, false},
		{"1", 1, false},
		{"22000", 22000, false},
		{"65535", 65535, false},
		{"0", 0, true},
		{"65536", 0, true},
		{"-1", 0, true},
		{"http", 0, true},
		{" 80", 0, true},
	} {
		t.Run(tc.v, func(t *testing.T) {
			t.Parallel()
			got, err := Port("MESH_PORT", tc.v, 3210)
			checkErr(t, err, tc.wantErr, "MESH_PORT", tc.v)
			if !tc.wantErr && got != tc.want {
				t.Fatalf("Port(%q) = %d, want %d", tc.v, got, tc.want)
			}
		})
	}
}

func TestLogLevel(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		v       string
		want    logrus.Level
		wantErr bool
	}{
		{"", logrus.InfoLevel, false},
		{"debug", logrus.DebugLevel, false},
		{"WARN", logrus.WarnLevel, false},
		{"warning", logrus.WarnLevel, false},
		{"error", logrus.ErrorLevel, false},
		{"trace", logrus.TraceLevel, false},
		{"loud", 0, true},
	} {
		t.Run(tc.v, func(t *testing.T) {
			t.Parallel()
			got, err := LogLevel("LOG_LEVEL", tc.v)
			checkErr(t, err, tc.wantErr, "LOG_LEVEL", tc.v)
			if !tc.wantErr && got != tc.want {
				t.Fatalf("LogLevel(%q) = %v, want %v", tc.v, got, tc.want)
			}
		})
	}
}

func TestDuration(t *testing.T) {
	t.Parallel()
	const def = 20 * time.Second
	for _, tc := range []struct {
		name    string
		v       string
		lo, hi  time.Duration
		want    time.Duration
		wantErr bool
	}{
		{"empty is the default", "", time.Nanosecond, 100 * time.Second, def, false},
		{"in range", "25s", time.Nanosecond, 100 * time.Second, 25 * time.Second, false},
		{"upper bound", "100s", time.Nanosecond, 100 * time.Second, 100 * time.Second, false},
		{"above", "5m", time.Nanosecond, 100 * time.Second, 0, true},
		{"zero below lo", "0s", time.Nanosecond, 100 * time.Second, 0, true},
		{"no unit", "20", time.Nanosecond, 100 * time.Second, 0, true},
		{"not a duration", "soon", 0, 0, 0, true},
		{"no upper bound", "48h", 0, 0, 48 * time.Hour, false},
		{"zero allowed", "0s", 0, 0, 0, false},
		{"negative", "-1s", 0, 0, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := Duration("MOUNT_TIMEOUT", tc.v, def, tc.lo, tc.hi)
			checkErr(t, err, tc.wantErr, "MOUNT_TIMEOUT", tc.v)
			if !tc.wantErr && got != tc.want {
				t.Fatalf("Duration(%q) = %v, want %v", tc.v, got, tc.want)
			}
		})
	}
}

func TestParsePeers(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		v       string
		want    string
		wantErr bool
	}{
		{"", "", false},
		{"vps.example.org", "vps.example.org:22000", false},
		{"a:1, 10.0.0.2:22001\t[fd00::1]:23 fd00::2", "a:1 10.0.0.2:22001 [fd00::1]:23 [fd00::2]:22000", false},
		{"a:99999", "", true},
		{"a:0", "", true},
		{"a_b!:1", "", true},
		{"-a:1", "", true},
		{":1", "", true},
	} {
		t.Run(tc.v, func(t *testing.T) {
			t.Parallel()
			got, err := ParsePeers("PEERS", tc.v, 22000)
			if tc.wantErr {
				if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "PEERS entry") {
					t.Fatalf("ParsePeers(%q) error %v, want an ErrInvalid naming PEERS", tc.v, err)
				}
				return
			}
			if err != nil || strings.Join(got, " ") != tc.want {
				t.Fatalf("ParsePeers(%q) = %q, %v; want %q", tc.v, got, err, tc.want)
			}
		})
	}
}

func TestKeyBits(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		key      string
		min, max float64
	}{
		{"", 0, 0},
		{"aaaaaaaaaaaaaaaa", 0, 10},
		{"0123456789abcdef", 64, 64},                           // 16 hex digits
		{strings.Repeat("ab12", 8), 0, 30},                     // a period of 4
		{"9f86d081884c7d659a2feaa0c55ad0159f86d081", 100, 160}, // 40 hex digits (counted as at most 2 per distinct one)
		{"not-the-mesh-key-at-all", 100, 200},                  // the e2e tests' wrong key must be accepted
	} {
		if b := KeyBits(tc.key); b < tc.min || b > tc.max {
			t.Errorf("KeyBits(%q) = %.1f, want %v..%v", tc.key, b, tc.min, tc.max)
		}
	}
}
