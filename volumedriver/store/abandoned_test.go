package store

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// TestMountTimeoutCapped: a mount-timeout Docker would never wait for is
// refused with the reason and the maximum; one an older release recorded
// for a volume the cluster knows is read as the maximum, so Swarm's
// Create with the service's options keeps working.
func TestMountTimeoutCapped(t *testing.T) {
	t.Parallel()
	r := newFakeReplicator()
	s, _ := newTestStore(t, &fakeMounter{}, r)
	for _, v := range []string{"26s", "2m", "10m"} {
		err := s.Create("web", map[string]string{"mount-timeout": v})
		if !errors.Is(err, ErrInvalidOption) || !strings.Contains(err.Error(), "at most 25s") {
			t.Fatalf("mount-timeout=%s: %v, want a refusal naming the maximum", v, err)
		}
	}
	if err := s.Create("web", map[string]string{"mount-timeout": "25s"}); err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	r.cluster = []ClusterVolume{{Name: "old", Options: map[string]string{"mount-timeout": "2m0s", "replication": "files"}}}
	r.mu.Unlock()
	if err := s.Create("old", map[string]string{"mount-timeout": "2m", "replication": "files"}); err != nil {
		t.Fatalf("Create of a volume an older release made with mount-timeout=2m: %v", err)
	}
	if v, _ := s.Get("old"); v.Options["mount-timeout"] != "25s" {
		t.Fatalf("recorded options %v, want mount-timeout=25s", v.Options)
	}
}

// TestAbandonedMountLeavesNoTrace: a Mount that cannot finish within the
// time Docker waits — stuck behind a slow Unmount's flush, or a writer
// lease that came too late — fails in time and leaves nothing behind: no
// recorded user (docker volume rm would say "in use" for good), no mount,
// no lease held.
func TestAbandonedMountLeavesNoTrace(t *testing.T) {
	t.Parallel()
	t.Run("behind a slow unmount", func(t *testing.T) {
		t.Parallel()
		r := newFakeReplicator()
		m := &fakeMounter{}
		s, _ := newTestStore(t, m, r)
		s.callTimeout = 300 * time.Millisecond
		if err := s.Create("web", map[string]string{"replication": "files"}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Mount("web", "c1"); err != nil {
			t.Fatal(err)
		}
		block := make(chan struct{})
		r.mu.Lock()
		r.flushBlock = block
		r.mu.Unlock()
		unmounted := make(chan error)
		go func() { unmounted <- s.Unmount("web", "c1") }()
		waitUntil(t, func() bool { r.mu.Lock(); defer r.mu.Unlock(); return r.flushes > 0 })
		began := time.Now()
		_, err := s.Mount("web", "c2")
		took := time.Since(began)
		if err == nil || took > time.Second {
			t.Fatalf("Mount behind a slow Unmount = %v after %s; want a failure within the call's bound", err, took)
		}
		close(block)
		if err := <-unmounted; err != nil {
			t.Fatal(err)
		}
		if v, _ := s.Get("web"); v.Mounts != 0 {
			t.Fatalf("%d users recorded after the failed Mount", v.Mounts)
		}
		if err := s.Remove("web"); err != nil {
			t.Fatalf("Remove after an abandoned Mount: %v", err)
		}
	})
	t.Run("lease granted too late", func(t *testing.T) {
		t.Parallel()
		s, snaps, m, r := newSnapStore(t, func(f *fakeSnapshots) { f.delay = 600 * time.Millisecond })
		s.callTimeout = 300 * time.Millisecond
		if err := s.Create("db", nil); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Mount("db", "c1"); err == nil {
			t.Fatal("a Mount that took longer than Docker waits succeeded")
		}
		if v, _ := s.Get("db"); v.Mounts != 0 {
			t.Fatalf("%d users recorded after the abandoned Mount", v.Mounts)
		}
		if ok, _ := m.Mounted(s.MountPoint("db")); ok {
			t.Fatal("the abandoned Mount's bind mount stayed")
		}
		waitUntil(t, func() bool { return !snaps.Writing("db") })
		r.mu.Lock()
		stillInUse := r.inUse["db"]
		r.mu.Unlock()
		if stillInUse {
			t.Fatal("the abandoned Mount left the volume published in use")
		}
		if err := s.Remove("db"); err != nil {
			t.Fatalf("Remove after an abandoned Mount: %v", err)
		}
	})
}

func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
