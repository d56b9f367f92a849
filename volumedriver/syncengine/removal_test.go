package syncengine

import (
	"testing"
	"time"
)

// TestRemovalIsEachNodesOwn (issue 12, item 4): a removal record written
// into the registry by a member (hostile, or just mistaken) evicts no one,
// while REMOVED_NODES on a node keeps the removed device out of that node
// for good, connected or not, without touching the others' view.
func TestRemovalIsEachNodesOwn(t *testing.T) {
	t.Parallel()
	a := startNode(t, "a", testKey, nil)
	b := startNode(t, "b", testKey, nil, a)
	c := startNode(t, "c", testKey, nil, a)
	waitFor(t, 20*time.Second, "a, b and c connected", func() bool { return connected(a, b) && connected(a, c) && connected(b, c) })

	// c forges b's removal, as any member could write it.
	if err := writeJSONAtomic(c.memberRecordPath(b.myID), memberRecord{DeviceID: b.myID.String(), Updated: time.Now().UTC(), Removed: true}); err != nil {
		t.Fatal(err)
	}
	c.touchFolder(RegistryFolderID, "members")
	a.Touched(RegistryFolderID)
	// Let the record travel and every node reconcile a few times.
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		a.reconcile()
		if !connected(a, b) {
			t.Fatal("a forged removal record cut a from b")
		}
		if refused, _ := refuses(a, b); refused {
			t.Fatal("a refuses b on a forged removal record")
		}
		time.Sleep(100 * time.Millisecond)
	}

	// The admin removes c on a (REMOVED_NODES): a restarted with it
	// refuses c; b, which was not told, keeps it.
	aDir := a.opts.StateDir
	a.Close()
	a2 := startNode(t, "a", testKey, func(o *Options) {
		o.StateDir = aDir
		o.Removed = []string{c.DeviceID()}
	}, b)
	// b keeps c all along: configured, never refused. A connection that
	// blinks (the package's tests run in parallel, under qemu for arm64)
	// is not a removal; b forgetting or refusing c is.
	bKeepsC := func() {
		t.Helper()
		if _, ok := b.cfg.Device(c.myID); !ok {
			t.Fatal("b forgot c, though only a removed it")
		}
		if refused, why := refuses(b, c); refused {
			t.Fatalf("b refuses c (%s), though only a removed it", why)
		}
	}
	waitFor(t, 20*time.Second, "a back with b", func() bool { bKeepsC(); return connected(a2, b) })
	waitFor(t, 15*time.Second, "a forgets c", func() bool {
		bKeepsC()
		_, ok := a2.cfg.Device(c.myID)
		return !ok && !a2.st.IsConnectedTo(c.myID)
	})
	if !connected(b, c) {
		t.Log("b and c are not connected at the moment a forgot c: waiting for their connection")
	}
	waitFor(t, 20*time.Second, "b and c connected after a removed c", func() bool { bKeepsC(); return connected(b, c) })
}

// TestClusterKeyRotationSyncvol (issue 12, item 4): with CLUSTER_KEY_ACCEPT
// as the overlap, a member proving the new key and one still proving the
// old admit each other; a node that only knows the old key is refused by
// a member that no longer accepts it.
func TestClusterKeyRotationSyncvol(t *testing.T) {
	t.Parallel()
	const newKey = "a new cluster key after rotation"
	a := startNode(t, "a", newKey, func(o *Options) { o.AcceptClusterKey = testKey })
	b := startNode(t, "b", testKey, func(o *Options) { o.AcceptClusterKey = newKey }, a)
	waitFor(t, 20*time.Second, "a (new key) and b (old key) connected", func() bool { return connected(a, b) })
	d := startNode(t, "d", newKey, nil, a)
	waitFor(t, 20*time.Second, "d (new key only) and a connected", func() bool { return connected(a, d) })
	m := startNode(t, "m", testKey, nil, d)
	waitFor(t, 15*time.Second, "d refuses m (old key only)", func() bool {
		refused, _ := refuses(d, m)
		return refused
	})
	if d.st.IsConnectedTo(m.myID) {
		t.Fatal("d is connected to a node with only the old key")
	}
}
