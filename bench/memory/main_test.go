//go:build linux

package main

import "testing"

func TestConnectedLine(t *testing.T) {
	t.Parallel()
	// A line of Debian's syncthing v1.19 log.
	line := "[ABCDE] 2026/11/23 15:54:14 INFO: Established secure connection to 7XQ3NRC at 127.0.0.1:22001-127.0.0.1:47630/tcp-client/TLS1.3-TLS_AES_128_GCM_SHA256"
	m := connected.FindStringSubmatch(line)
	if m == nil || m[1] != "7XQ3NRC" {
		t.Fatalf("connected = %v", m)
	}
}

func TestRowsLargestProcess(t *testing.T) {
	t.Parallel()
	b := &bench{c: config{volumes: 3, settle: 45e9, samples: 3}}
	targets := map[string][]target{
		"syncvol":      {{name: "vps", rss: []float64{40, 41, 42}}, {name: "home1", rss: []float64{50, 52, 51}}},
		"meshnet":      {{name: "vps", rss: []float64{12, 12, 12}}},
		"syncthing":    {{name: "syncthing 1", rss: []float64{17, 17, 17}}},
		"wireguard-go": {{name: "wireguard-go 1", rss: []float64{9, 9, 9}}},
	}
	rs := b.rows(targets, "v1.19.2", "v0.0.1")
	if rs[0].Name != "syncvol idle memory" || rs[0].Value != 51 || rs[0].AnchorValue != 17 || rs[0].Ratio != 0.333 {
		t.Errorf("syncvol row: %+v", rs[0])
	}
	if rs[1].Name != "meshnet idle memory" || rs[1].Value != 12 || rs[1].Ratio != 0.75 {
		t.Errorf("meshnet row: %+v", rs[1])
	}
	if len(rs) != 4 { // no edge row without an edge process
		t.Errorf("%d rows, want 4", len(rs))
	}
}
