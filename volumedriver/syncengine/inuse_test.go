package syncengine

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestRemoveEverywhereSparesAVolumeInUse: a volume a container uses on b
// is not deleted by a removal everywhere on a. a refuses once it knows of
// the use (b's member record), naming b; and a deletion that reaches b
// before a knew (written straight into the registry here) is undone by b,
// which keeps its data and gives the volume back to the cluster.
func TestRemoveEverywhereSparesAVolumeInUse(t *testing.T) {
	t.Parallel()
	a, b := connectedPair(t)
	if err := b.AddVolume(context.Background(), "web", b.vol("web"), nil, nil); err != nil {
		t.Fatal(err)
	}
	data := []byte("written on a, used on b")
	bFile := writtenOnA(t, a, b, "web", data, 20*time.Second)

	b.SetInUse("web", true)
	waitFor(t, 10*time.Second, "a sees web in use on b", func() bool { return len(a.UsedBy("web")) > 0 })
	err := a.RemoveVolume(context.Background(), "web", true)
	if !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), "b") {
		t.Fatalf("RemoveVolume everywhere while b uses it = %v, want ErrInUse naming b", err)
	}
	if !slices.Contains(volumeNames(a), "web") {
		t.Fatal("a refused removal still marked web deleted")
	}

	// The race: a deletion written before a learnt of the use.
	rec, err := a.readVolumeRecord("web")
	if err != nil {
		t.Fatal(err)
	}
	rec.Deleted, rec.DeletedAt = true, time.Now().UTC()
	if err := writeJSONAtomic(a.volumeRecordPath("web"), rec); err != nil {
		t.Fatal(err)
	}
	a.touchFolder(RegistryFolderID, "volumes")
	waitFor(t, 20*time.Second, "the removal undone on a", func() bool {
		r, err := a.readVolumeRecord("web")
		return err == nil && !r.Deleted && r.DeletedAt.IsZero()
	})
	b.reconcile()
	if !hasContent(bFile, data) {
		t.Fatal("b's replica was wiped under its container")
	}
	if _, ok := b.cfg.Folder(FolderID("web")); !ok {
		t.Fatal("b stopped replicating a volume in use")
	}

	// Once nobody uses it, removing everywhere works.
	b.SetInUse("web", false)
	waitFor(t, 10*time.Second, "a sees web unused", func() bool { return len(a.UsedBy("web")) == 0 })
	if err := a.RemoveVolume(context.Background(), "web", true); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "web wiped on b", func() bool { return !exists(bFile) })
}

// TestCreatedAgainAfterRemoveEverywhere: a volume removed everywhere and
// created again under the same name replicates again to the node that
// wiped its replica. That node's index still holds the first volume, so
// Syncthing does not mark the empty directory itself and refused it
// ("folder marker missing"): the engine marks it (markNewFolders).
func TestCreatedAgainAfterRemoveEverywhere(t *testing.T) {
	t.Parallel()
	a, b := connectedPair(t)
	old := []byte("the first volume")
	bFile := writtenOnA(t, a, b, "acme", old, 30*time.Second)
	if err := a.RemoveVolume(context.Background(), "acme", true); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "acme wiped on b", func() bool { return !exists(bFile) })

	// The glue removes the data on the node that removed it (store.Remove);
	// then the volume is created again there.
	if err := os.RemoveAll(a.vol("acme")); err != nil {
		t.Fatal(err)
	}
	if err := a.AddVolume(context.Background(), "acme", a.vol("acme"), nil, nil); err != nil {
		t.Fatal(err)
	}
	again := []byte("the second volume, same name")
	writeFile(t, filepath.Join(a.vol("acme"), "f"), again)
	a.Touched("acme")
	waitFor(t, 30*time.Second, "the new f on b", func() bool { return hasContent(bFile, again) })
}

// connectedPair starts nodes a and b of one cluster and waits until they
// are connected.
func connectedPair(t *testing.T) (a, b *node) {
	t.Helper()
	a = startNode(t, "a", testKey, nil)
	b = startNode(t, "b", testKey, nil, a)
	waitFor(t, 20*time.Second, "a and b connected", func() bool { return connected(a, b) })
	return a, b
}

// writtenOnA adds volume vol on a, writes data to its file f there and
// waits up to within until b has it; it returns the file's path on b.
func writtenOnA(t *testing.T, a, b *node, vol string, data []byte, within time.Duration) string {
	t.Helper()
	if err := a.AddVolume(context.Background(), vol, a.vol(vol), nil, nil); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(a.vol(vol), "f"), data)
	a.Touched(vol)
	bFile := filepath.Join(b.vol(vol), "f")
	waitFor(t, within, "f on b", func() bool { return hasContent(bFile, data) })
	return bFile
}
