package syncengine

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/syncthing/syncthing/lib/config"
	"github.com/syncthing/syncthing/lib/events"
)

// TestWipeDeletedWhateverOrder: a node that learns a volume was deleted
// everywhere wipes its replica even when the volume's folder left its
// config before the deleted record was read: the record went missing for a
// while, or the node crashed after saving the config without the folder
// and before wiping.
func TestWipeDeletedWhateverOrder(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		// dropFolder takes the volume's folder out of n's config without a
		// deleted record; it may replace the engine (and returns the one
		// running afterwards).
		dropFolder func(t *testing.T, n *node) *Engine
	}{
		{"record missing first", func(t *testing.T, n *node) *Engine {
			if err := os.Remove(n.volumeRecordPath("v")); err != nil {
				t.Fatal(err)
			}
			n.triggerReconcile()
			waitFor(t, 10*time.Second, "folder dropped", func() bool { _, ok := n.cfg.Folder(FolderID("v")); return !ok })
			return n.Engine
		}},
		{"crash between config save and wipe", func(t *testing.T, n *node) *Engine {
			n.Close()
			path := filepath.Join(n.opts.StateDir, "config.xml")
			w, _, err := config.Load(path, n.myID, events.NoopLogger)
			if err != nil {
				t.Fatal(err)
			}
			c := w.RawCopy()
			var kept []config.FolderConfiguration
			for _, f := range c.Folders {
				if f.ID != FolderID("v") {
					kept = append(kept, f)
				}
			}
			c.Folders = kept
			if err := config.Wrap(path, c, n.myID, events.NoopLogger).Save(); err != nil {
				t.Fatal(err)
			}
			e, err := New(n.opts)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { e.Close() })
			return e
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			n := startNode(t, "n", testKey, nil)
			// The volume was made on another node: only its record is here.
			rec := VolumeRecord{Name: "v", Created: time.Now().UTC(), CreatedBy: "elsewhere"}
			if err := writeJSONAtomic(n.volumeRecordPath("v"), rec); err != nil {
				t.Fatal(err)
			}
			n.triggerReconcile()
			waitFor(t, 10*time.Second, "folder configured", func() bool { _, ok := n.cfg.Folder(FolderID("v")); return ok })
			data := filepath.Join(n.vol("v"), "x")
			writeFile(t, data, []byte("x"))

			e := tc.dropFolder(t, n)
			if !exists(data) {
				t.Fatal("replica wiped before the volume was deleted")
			}
			rec.Deleted, rec.DeletedAt = true, time.Now().UTC()
			if err := writeJSONAtomic(n.volumeRecordPath("v"), rec); err != nil {
				t.Fatal(err)
			}
			if e != n.Engine {
				run(t, e)
			}
			e.triggerReconcile()
			waitFor(t, 10*time.Second, "replica wiped", func() bool { return !exists(data) })
		})
	}
}
