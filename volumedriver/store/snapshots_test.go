package store

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeSnapshots stands in for snapvol: Acquire makes the live directory
// (running init for a new volume), Release and Remove are counted.
type fakeSnapshots struct {
	root     string
	mu       sync.Mutex
	acquired map[string]int
	released map[string]int
	removed  map[string]bool
	writing  map[string]bool
	inUse    bool          // Acquire waits for ctx, then fails as if another node wrote
	holder   string        // what Holder answers
	holdErr  error         // what Holder fails with
	replErr  error         // what Replicated fails with
	delay    time.Duration // Acquire takes this long, whatever its ctx says
	failures int           // the next failures Acquires fail as if no majority answered
}

func (f *fakeSnapshots) Replicated(ctx context.Context, name string) error { return f.replErr }

func (f *fakeSnapshots) Holder(ctx context.Context, name string) (string, error) {
	return f.holder, f.holdErr
}

func newFakeSnapshots(root string) *fakeSnapshots {
	return &fakeSnapshots{root: root, acquired: map[string]int{}, released: map[string]int{}, removed: map[string]bool{}, writing: map[string]bool{}}
}

func (f *fakeSnapshots) LiveDir(name string) string { return filepath.Join(f.root, name, "live") }

func (f *fakeSnapshots) Acquire(ctx context.Context, name string, init func(string) error) (string, error) {
	time.Sleep(f.delay)
	f.mu.Lock()
	fail := f.failures > 0
	if fail {
		f.failures--
	}
	f.mu.Unlock()
	if fail {
		return "", errors.New("cannot reach a majority of the cluster's nodes (3 of 7 granted the claim); retry")
	}
	if f.inUse {
		<-ctx.Done()
		return "", errors.New("volume is in use on another node")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.acquired[name]++
	dir := f.LiveDir(name)
	if _, err := os.Stat(dir); err != nil {
		if err := init(dir); err != nil {
			return "", err
		}
	}
	f.writing[name] = true
	return dir, nil
}

func (f *fakeSnapshots) Release(ctx context.Context, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.released[name]++
	f.writing[name] = false
	return nil
}

func (f *fakeSnapshots) Remove(name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.removed[name] = true
	return nil
}

func (f *fakeSnapshots) Writing(name string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.writing[name]
}

func (f *fakeSnapshots) Status(name string) map[string]string {
	return map[string]string{"generation": "test"}
}

func newSnapStore(t *testing.T, f func(*fakeSnapshots)) (*Store, *fakeSnapshots, *fakeMounter, *fakeReplicator) {
	t.Helper()
	dir := t.TempDir()
	snaps := newFakeSnapshots(filepath.Join(dir, "state", "volumes"))
	if f != nil {
		f(snaps)
	}
	m, r := &fakeMounter{}, newFakeReplicator()
	s, err := New(Options{Root: filepath.Join(dir, "state"), MountRoot: filepath.Join(dir, "mnt"), Mounter: m,
		Replicator: r, Snapshots: snaps, MountTimeout: 200 * time.Millisecond, Logger: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	return s, snaps, m, r
}

// With a Snapshotter, a volume is a snapshot volume by default: Mount
// acquires it and mounts its live directory (made with the volume's uid
// and mode), the last Unmount releases it; no Syncthing folder is made.
func TestSnapshotVolumeLifecycle(t *testing.T) {
	t.Parallel()
	s, snaps, m, r := newSnapStore(t, nil)
	if err := s.Create("db", map[string]string{"mode": "0700"}); err != nil {
		t.Fatal(err)
	}
	// Swarm creates it again on the next node with the same -o options:
	// the default replication is not a difference.
	if err := s.Create("db", map[string]string{"mode": "0700"}); err != nil {
		t.Fatalf("idempotent create: %v", err)
	}
	if err := s.Create("db", map[string]string{"mode": "0700", "replication": "files"}); err == nil {
		t.Fatal("create with another replication succeeded")
	}
	if _, ok := r.added["db"]; ok {
		t.Fatal("a snapshot volume got a Syncthing folder")
	}
	if len(r.registered) == 0 || r.registered[0] != "db" {
		t.Fatalf("snapshot volume not registered cluster-wide: %v", r.registered)
	}
	v, _ := s.Get("db")
	if v.Options["replication"] != "snapshots" {
		t.Fatalf("options %v", v.Options)
	}
	mp, err := s.Mount("db", "c1")
	if err != nil {
		t.Fatal(err)
	}
	if src := m.mounts[mp]; src != snaps.LiveDir("db") {
		t.Fatalf("mounted %q, want the live dir", src)
	}
	if fi, err := os.Stat(snaps.LiveDir("db")); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("live dir: %v %v", fi, err)
	}
	if _, err := s.Mount("db", "c2"); err != nil {
		t.Fatal(err)
	}
	if snaps.acquired["db"] != 1 {
		t.Fatalf("acquired %d times for two containers", snaps.acquired["db"])
	}
	s.Unmount("db", "c1")
	if snaps.released["db"] != 0 {
		t.Fatal("released while a container still uses it")
	}
	s.Unmount("db", "c2")
	if snaps.released["db"] != 1 || len(m.mounts) != 0 {
		t.Fatalf("released %d, mounts %v", snaps.released["db"], m.mounts)
	}
	if err := s.Remove("db"); err != nil || !snaps.removed["db"] {
		t.Fatalf("remove: %v, removed %v", err, snaps.removed)
	}
}

// A Mount that cannot get the volume (another node's lease) fails within
// the mount timeout with an error saying so, and mounts nothing.
func TestSnapshotMountInUseFailsInTime(t *testing.T) {
	t.Parallel()
	s, _, m, _ := newSnapStore(t, func(f *fakeSnapshots) { f.inUse = true })
	if err := s.Create("db", nil); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err := s.Mount("db", "c1")
	if err == nil || !strings.Contains(err.Error(), "in use on another node") || time.Since(start) > 2*time.Second {
		t.Fatalf("mount: %v after %s", err, time.Since(start))
	}
	if len(m.mounts) != 0 {
		t.Fatalf("mounted anyway: %v", m.mounts)
	}
}

// share= needs file-by-file replication; replication=snapshots needs a
// Snapshotter.
func TestSnapshotOptionsRefused(t *testing.T) {
	t.Parallel()
	s, _ := newTestStore(t, &fakeMounter{}, newFakeReplicator())
	if err := s.Create("x", map[string]string{"replication": "snapshots"}); err == nil || !strings.Contains(err.Error(), "btrfs") {
		t.Fatalf("snapshots without btrfs: %v", err)
	}
	if err := s.Create("y", nil); err != nil {
		t.Fatal(err)
	}
	if v, _ := s.Get("y"); v.Options["replication"] != "files" {
		t.Fatalf("default without btrfs: %v", v.Options)
	}
	s2, _, _, _ := newSnapStore(t, nil)
	if err := s2.Create("z", map[string]string{"share": "ABCDEFG-ABCDEFG-ABCDEFG-ABCDEFG-ABCDEFG-ABCDEFG-ABCDEFG-ABCDEFG"}); err != nil {
		t.Fatal(err)
	}
	if v, _ := s2.Get("z"); v.Options["replication"] != "files" {
		t.Fatalf("share= must make a files volume: %v", v.Options)
	}
}

// After an engine crash the recorded users are dead containers whose
// Unmount never comes: the next container's Mount claims the volume again,
// and its Unmount releases it (a stale user must not hold it here).
func TestSnapshotStaleUsersAfterCrash(t *testing.T) {
	t.Parallel()
	s, snaps, r := mountedSnapVolume(t, "dead")
	// The plugin restarts with the engine; nobody writes the volume now.
	snaps.writing["db"] = false
	s2, err := New(Options{Root: s.opts.Root, MountRoot: s.opts.MountRoot, Mounter: &fakeMounter{}, Replicator: r,
		Snapshots: snaps, MountTimeout: 200 * time.Millisecond, Logger: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if snaps.acquired["db"] != 1 {
		t.Fatalf("claimed again at start for a user that may be dead: %d", snaps.acquired["db"])
	}
	if _, err := s2.Mount("db", "new"); err != nil {
		t.Fatal(err)
	}
	if snaps.acquired["db"] != 2 {
		t.Fatalf("acquired %d times", snaps.acquired["db"])
	}
	if err := s2.Unmount("db", "new"); err != nil {
		t.Fatal(err)
	}
	if snaps.released["db"] != 1 {
		t.Fatal("the last real user's Unmount did not release the volume")
	}
}

// TestSnapshotResumeRetriesTheClaim: after a plugin restart, a container
// that still writes the volume here gets it claimed again; a claim that
// fails (the mesh restarting beside the plugin: no majority yet) is tried
// again until it succeeds. It was tried once: the container went on
// writing with nothing shipped (TestPluginUpgrade after make install).
func TestSnapshotResumeRetriesTheClaim(t *testing.T) {
	t.Parallel()
	s, snaps, r := mountedSnapVolume(t, "running")
	snaps.mu.Lock()
	snaps.writing["db"] = false // the plugin restarts; the container runs on
	snaps.failures = 2
	snaps.mu.Unlock()
	s2, err := New(Options{Root: s.opts.Root, MountRoot: s.opts.MountRoot, Mounter: &fakeMounter{}, Replicator: r,
		Snapshots: snaps, MountTimeout: 200 * time.Millisecond, Logger: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	deadline := time.Now().Add(10 * time.Second)
	for i := 0; !snaps.Writing("db"); i++ {
		if time.Now().After(deadline) {
			snaps.mu.Lock()
			defer snaps.mu.Unlock()
			t.Fatalf("the volume written here was not claimed again: %d failures left, %d claims", snaps.failures, snaps.acquired["db"])
		}
		// The container commits.
		if err := os.WriteFile(filepath.Join(snaps.LiveDir("db"), "db"), []byte{byte(i)}, 0o644); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	snaps.mu.Lock()
	defer snaps.mu.Unlock()
	if snaps.failures != 0 || snaps.acquired["db"] != 2 {
		t.Fatalf("%d failures left, %d claims; want 0 and 2", snaps.failures, snaps.acquired["db"])
	}
}

// mountedSnapVolume returns a store whose snapshot volume "db" is mounted
// by container id.
func mountedSnapVolume(t *testing.T, id string) (*Store, *fakeSnapshots, *fakeReplicator) {
	t.Helper()
	s, snaps, _, r := newSnapStore(t, nil)
	if err := s.Create("db", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Mount("db", id); err != nil {
		t.Fatal(err)
	}
	return s, snaps, r
}
