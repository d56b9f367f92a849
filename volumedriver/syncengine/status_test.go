package syncengine

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestBehindString(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		b    behind
		want []string
	}{
		{"behind", behind{files: 3, bytes: 5 << 20, state: "syncing", connected: 2}, []string{"3 files", "5.0 MiB", "2 connected", "syncing"}},
		{"waiting only", behind{waiting: "waiting for peers to connect"}, []string{"waiting for peers to connect"}},
		{"waiting with counts", behind{files: 1, bytes: 10, state: "idle", connected: 1, waiting: "waiting for the index of peer X"}, []string{"at least 1 files", "10 B", "waiting for the index"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.b.String()
			for _, w := range tc.want {
				if !strings.Contains(got, w) {
					t.Errorf("%q lacks %q", got, w)
				}
			}
		})
	}
}

// TestSingleNode covers status reporting and the no-peer fast paths of a
// lone engine.
func TestSingleNode(t *testing.T) {
	n := startNode(t, "solo", testKey, nil)
	if st := n.Status("nope"); st["state"] != "not replicated on this node" || st["folderID"] != FolderID("nope") {
		t.Fatalf("status of unknown volume: %v", st)
	}
	if err := n.WaitSynced(context.Background(), "nope"); !errors.Is(err, ErrUnknownVolume) {
		t.Fatalf("WaitSynced(unknown) = %v", err)
	}
	if err := n.AddVolume("../x", t.TempDir(), nil, nil); !errors.Is(err, ErrInvalidName) {
		t.Fatalf("AddVolume(../x) = %v", err)
	}
	if err := n.AddVolume("v", n.vol("v"), []string{"bogus"}, nil); err == nil {
		t.Fatal("bad share accepted")
	}
	writeFile(t, n.vol("v")+"/a.txt", []byte("12345"))
	if err := n.AddVolume("v", n.vol("v"), nil, nil); err != nil {
		t.Fatal(err)
	}
	// A new volume and no peers: both return at once.
	if err := n.WaitSynced(context.Background(), "v"); err != nil {
		t.Fatal(err)
	}
	if err := n.Flush(context.Background(), "v"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "scan", func() bool { st := n.Status("v"); return st["localFiles"] == "1" && st["lastChange"] != "" })
	st := n.Status("v")
	for k, want := range map[string]string{"peersConnected": "0", "peersTotal": "0", "inSync": "true", "needFiles": "0", "conflicts": "0", "localBytes": "5", "state": "idle"} {
		if st[k] != want {
			t.Errorf("status[%s] = %q, want %q (%v)", k, st[k], want, st)
		}
	}
	if st["lastChange"] == "" {
		t.Errorf("no lastChange: %v", st)
	}
	vs := n.Volumes()
	if len(vs) != 1 || vs[0].Name != "v" || vs[0].CreatedBy != n.DeviceID() {
		t.Fatalf("Volumes() = %+v", vs)
	}
	// Restart: state persists (device ID, volumes, config).
	id := n.DeviceID()
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	e2, err := New(n.opts)
	if err != nil {
		t.Fatal(err)
	}
	defer e2.Close()
	if e2.DeviceID() != id {
		t.Fatal("device ID changed across restart")
	}
	if err := e2.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if vs := e2.Volumes(); len(vs) != 1 || vs[0].Name != "v" {
		t.Fatalf("after restart Volumes() = %+v", vs)
	}
	if _, ok := e2.cfg.Folder(FolderID("v")); !ok {
		t.Fatal("volume folder not restored after restart")
	}
}
