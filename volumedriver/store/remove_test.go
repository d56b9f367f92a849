package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRemoveEverywhereRefusedWhileUsedElsewhere: `docker volume rm` (or a
// prune) of a remove=everywhere volume on a node the service has left must
// not delete it under the container that uses it on another node — as the
// node's published use shows (files and snapshot volumes), or, for a
// snapshot volume, a live writer lease at a peer, or when the peers cannot
// be asked. The refusal names the node and deletes nothing, here or there.
func TestRemoveEverywhereRefusedWhileUsedElsewhere(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		repl    string
		usedBy  []string
		holder  string
		holdErr error
		want    string // in the error; "" means the removal goes ahead
	}{
		{"files, used on home3", "files", []string{"home3 (AAAAAAA)"}, "", nil, "home3"},
		{"snapshots, used on home3", "snapshots", []string{"home3 (AAAAAAA)"}, "", nil, "home3"},
		{"snapshots, home3 holds the lease", "snapshots", nil, "BBBBBBB (as CCCCCCC reports)", nil, "BBBBBBB"},
		{"snapshots, no majority", "snapshots", nil, "", errors.New("cannot reach a majority"), "cannot tell"},
		{"files, unused", "files", nil, "", nil, ""},
		{"snapshots, unused", "snapshots", nil, "", nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, snaps, _, r := newSnapStore(t, func(f *fakeSnapshots) { f.holder, f.holdErr = tc.holder, tc.holdErr })
			if err := s.Create("web", map[string]string{"replication": tc.repl, "remove": "everywhere"}); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Mount("web", "c1"); err != nil {
				t.Fatal(err)
			}
			if err := s.Unmount("web", "c1"); err != nil {
				t.Fatal(err)
			}
			r.mu.Lock()
			r.usedBy = map[string][]string{"web": tc.usedBy}
			r.mu.Unlock()
			err := s.Remove("web")
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Remove of an unused volume: %v", err)
				}
				if everywhere, ok := r.removed["web"]; !ok || !everywhere {
					t.Fatalf("not removed everywhere: %v", r.removed)
				}
				return
			}
			if !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Remove = %v, want ErrInUse naming %q", err, tc.want)
			}
			if v, _ := s.Get("web"); len(tc.usedBy) > 0 && v.Status["usedOn"] != tc.usedBy[0] {
				t.Fatalf("inspect shows usedOn %q, want %q", v.Status["usedOn"], tc.usedBy[0])
			}
			if _, ok := r.removed["web"]; ok {
				t.Fatal("the cluster was asked to delete it anyway")
			}
			if snaps.removed["web"] {
				t.Fatal("this node's generations were deleted anyway")
			}
			if _, err := os.Stat(s.recordPath("web")); err != nil {
				t.Fatalf("local record gone: %v", err)
			}
		})
	}
}

// TestMountPublishesUse: the first Mount publishes the use before it waits
// (a removal everywhere made meanwhile must not wipe what it presents), a
// failed Mount and the last Unmount withdraw it, and a restart under
// running containers publishes it again.
func TestMountPublishesUse(t *testing.T) {
	t.Parallel()
	r := newFakeReplicator()
	r.entered = make(chan string, 1)
	s, dir := newTestStore(t, &fakeMounter{}, r)
	if err := s.Create("web", map[string]string{"replication": "files"}); err != nil {
		t.Fatal(err)
	}
	inUse := func() bool { r.mu.Lock(); defer r.mu.Unlock(); return r.inUse["web"] }
	done := make(chan error)
	go func() { _, err := s.Mount("web", "c1"); done <- err }()
	<-r.entered
	if !inUse() {
		t.Fatal("use not published while Mount waits")
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := s.Unmount("web", "c1"); err != nil {
		t.Fatal(err)
	}
	if inUse() {
		t.Fatal("use still published after the last Unmount")
	}
	r.mu.Lock()
	r.behind, r.entered = true, nil
	r.mu.Unlock()
	if _, err := s.Mount("web", "c2"); err == nil {
		t.Fatal("Mount of a replica behind its peers succeeded")
	}
	if inUse() {
		t.Fatal("a failed Mount left the use published")
	}
	r.mu.Lock()
	r.behind = false
	r.mu.Unlock()
	if _, err := s.Mount("web", "c3"); err != nil {
		t.Fatal(err)
	}
	r2 := newFakeReplicator()
	if _, err := New(Options{Root: filepath.Join(dir, "state"), MountRoot: filepath.Join(dir, "mnt"), Mounter: &fakeMounter{},
		Replicator: r2, Logger: quietLog()}); err != nil {
		t.Fatal(err)
	}
	if !r2.inUse["web"] {
		t.Fatal("a restart under a running container did not publish the use")
	}
}

// TestRemoveLocalKeepsUnreplicatedChanges: dropping this node's replica
// (remove=local, the default) is refused while it holds changes no other
// node has — a last Unmount whose flush reached no peer — and goes ahead
// once a peer has them.
func TestRemoveLocalKeepsUnreplicatedChanges(t *testing.T) {
	t.Parallel()
	for _, repl := range []string{"files", "snapshots"} {
		t.Run(repl, func(t *testing.T) {
			t.Parallel()
			notYet := fmt.Errorf("%w: 3 files (1 MiB) not yet held by any connected peer", ErrNotReplicated)
			s, snaps, _, r := newSnapStore(t, nil)
			if err := s.Create("web", map[string]string{"replication": repl}); err != nil {
				t.Fatal(err)
			}
			r.mu.Lock()
			r.flushErr = notYet
			r.mu.Unlock()
			snaps.mu.Lock()
			snaps.replErr = notYet
			snaps.mu.Unlock()
			err := s.Remove("web")
			if !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), "no other node has") {
				t.Fatalf("Remove with unreplicated changes = %v", err)
			}
			if _, ok := r.removed["web"]; ok || snaps.removed["web"] {
				t.Fatal("removed anyway")
			}
			if _, err := os.Stat(s.volumeDir("web")); err != nil {
				t.Fatalf("local data gone: %v", err)
			}
			r.mu.Lock()
			r.flushErr = errors.New("volume web: volume not replicated on this node") // not a loss
			r.mu.Unlock()
			snaps.mu.Lock()
			snaps.replErr = nil
			snaps.mu.Unlock()
			if err := s.Remove("web"); err != nil {
				t.Fatalf("Remove once replicated: %v", err)
			}
		})
	}
}
