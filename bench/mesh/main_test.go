//go:build linux

package main

import (
	"encoding/json"
	"slices"
	"testing"
)

func TestParsePing(t *testing.T) {
	t.Parallel()
	out := `PING 10.254.0.1 (10.254.0.1): 56 data bytes
64 bytes from 10.254.0.1: seq=0 ttl=64 time=0.260 ms
64 bytes from 10.254.0.1: seq=1 ttl=64 time=1.5 ms

--- 10.254.0.1 ping statistics ---
2 packets transmitted, 2 packets received, 0% packet loss
round-trip min/avg/max = 0.260/0.880/1.500 ms
`
	if got := parsePing(out); !slices.Equal(got, []float64{0.26, 1.5}) {
		t.Fatalf("parsePing = %v", got)
	}
}

func TestParseIperf(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		in   string
		want iperfResult
		ok   bool
	}{
		{"ok", `{"end":{"sum_sent":{"retransmits":7},"sum_received":{"seconds":8.0,"bytes":1e9,"bits_per_second":1e9}}}`,
			iperfResult{BitsPerSecond: 1e9, Bytes: 1e9, Seconds: 8, Retransmits: 7}, true},
		{"error", `{"error":"unable to connect to server"}`, iperfResult{}, false},
		{"empty", `{"end":{}}`, iperfResult{}, false},
		{"garbage", `iperf3: error`, iperfResult{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseIperf([]byte(tc.in))
			if (err == nil) != tc.ok || got != tc.want {
				t.Fatalf("parseIperf = %+v, %v", got, err)
			}
		})
	}
}

func TestParseStatCPU(t *testing.T) {
	t.Parallel()
	// comm with a space and a parenthesis, as the kernel allows
	stat := "1234 (a b) c) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 9 0 100 0 0"
	if got, err := parseStatCPU(stat); err != nil || got != 325 {
		t.Fatalf("parseStatCPU = %d, %v", got, err)
	}
	if _, err := parseStatCPU("1 (x) S 1"); err == nil {
		t.Fatal("short stat accepted")
	}
}

// TestRowsNoSamples: a path without samples (the bare path has no tunnel
// CPU; -runs 0 is refused) gives rows of 0, not NaN, which the result
// file could not carry: schema.Median says NaN, schema.Round makes it 0.
func TestRowsNoSamples(t *testing.T) {
	t.Parallel()
	res := map[string]*measured{pathBare: {}, pathWG: {}, pathMesh: {}}
	rs := rows(res, config{runs: 1}, "plain", "")
	for _, r := range rs {
		if r.Value != 0 || r.AnchorValue != 0 || r.Ratio != 0 {
			t.Errorf("row %q: %v vs %v, ratio %v", r.Name, r.Value, r.AnchorValue, r.Ratio)
		}
	}
	if _, err := json.Marshal(rs); err != nil {
		t.Fatal(err)
	}
}

func TestParseLinkRx(t *testing.T) {
	t.Parallel()
	in := `[{"ifindex":5,"ifname":"wan0","stats64":{"rx":{"bytes":9673218248,"packets":979389,"errors":0},"tx":{"bytes":1,"packets":2}}}]`
	got, err := parseLinkRx([]byte(in))
	if err != nil || got != (linkRx{Bytes: 9673218248, Packets: 979389}) {
		t.Fatalf("parseLinkRx = %+v, %v", got, err)
	}
	if _, err := parseLinkRx([]byte(`[]`)); err == nil {
		t.Fatal("no link accepted")
	}
}
