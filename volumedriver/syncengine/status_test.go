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
	if err := n.AddVolume(context.Background(), "../x", t.TempDir(), nil, nil); !errors.Is(err, ErrInvalidName) {
		t.Fatalf("AddVolume(../x) = %v", err)
	}
	if err := n.AddVolume(context.Background(), "v", n.vol("v"), []string{"bogus"}, nil); err == nil {
		t.Fatal("bad share accepted")
	}
	writeFile(t, n.vol("v")+"/a.txt", []byte("12345"))
	if err := n.AddVolume(context.Background(), "v", n.vol("v"), nil, nil); err != nil {
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
	if e2.DeviceID() != id {
		t.Fatal("device ID changed across restart")
	}
	run(t, e2)
	if vs := e2.Volumes(); len(vs) != 1 || vs[0].Name != "v" {
		t.Fatalf("after restart Volumes() = %+v", vs)
	}
	if _, ok := e2.cfg.Folder(FolderID("v")); !ok {
		t.Fatal("volume folder not restored after restart")
	}
}

// TestCallsEndWithTheirContext: AddVolume, RegisterVolume and RemoveVolume
// return by their ctx's end even while a reconcile pass hangs (the store's
// deadline reaches dockerd in time), and a call whose ctx already ended
// records nothing.
func TestCallsEndWithTheirContext(t *testing.T) {
	n := startNode(t, "solo", testKey, nil)
	if err := n.AddVolume(context.Background(), "kept", n.vol("kept"), nil, nil); err != nil {
		t.Fatal(err)
	}

	gone, cancel := context.WithCancel(context.Background())
	cancel()
	if err := n.AddVolume(gone, "late", n.vol("late"), nil, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("AddVolume with an ended ctx = %v, want context.Canceled", err)
	}
	if err := n.RegisterVolume(gone, "late2", map[string]string{"replication": "snapshots"}); !errors.Is(err, context.Canceled) {
		t.Fatalf("RegisterVolume with an ended ctx = %v, want context.Canceled", err)
	}
	if err := n.RemoveVolume(gone, "kept", true); !errors.Is(err, context.Canceled) {
		t.Fatalf("RemoveVolume with an ended ctx = %v, want context.Canceled", err)
	}
	for _, v := range n.Volumes() {
		if v.Name == "late" || v.Name == "late2" || v.Name == "kept" && v.Deleted {
			t.Fatalf("a call whose ctx had ended changed the registry: %+v", v)
		}
	}

	// A reconcile pass that does not finish (held here) must not hold the
	// calls past their deadline.
	n.reconcileMu.Lock()
	released := false
	defer func() {
		if !released {
			n.reconcileMu.Unlock()
		}
	}()
	for name, call := range map[string]func(context.Context) error{
		"AddVolume": func(ctx context.Context) error { return n.AddVolume(ctx, "kept", n.vol("kept"), nil, nil) },
		"RegisterVolume": func(ctx context.Context) error {
			return n.RegisterVolume(ctx, "snap", map[string]string{"replication": "snapshots"})
		},
		"RemoveVolume": func(ctx context.Context) error { return n.RemoveVolume(ctx, "snap", false) },
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		start := time.Now()
		err := call(ctx)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("%s while a pass hangs = %v, want context.DeadlineExceeded", name, err)
		}
		// registryWait (2 s) is the longest step a call may take before it
		// sees its ctx; a call that ran on would take until the pass ends.
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("%s returned %s after its 300 ms deadline", name, d)
		}
	}
	n.reconcileMu.Unlock()
	released = true
	// Once the pass can run, the engine applies what was recorded.
	waitFor(t, 10*time.Second, "snap registered", func() bool {
		for _, v := range n.Volumes() {
			if v.Name == "snap" {
				return true
			}
		}
		return false
	})
}
