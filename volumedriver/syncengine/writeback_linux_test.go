package syncengine

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestWritebackNeverBlocks: a container can name anything like a Syncthing
// temporary. A FIFO nobody writes to (an open for reading would block
// forever, and the plugin's shutdown waits for the writeback goroutine), a
// symlink to a file outside the volume, and a directory are all ignored at
// once.
func TestWritebackNeverBlocks(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	fifo := filepath.Join(dir, ".syncthing.db.tmp")
	if err := unix.Mkfifo(fifo, 0o644); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	outside := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(outside, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, ".syncthing.link.tmp")
	if err := os.Symlink(outside, link); err != nil {
		t.Fatal(err)
	}
	sub := filepath.Join(dir, ".syncthing.dir.tmp")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{fifo, link, sub} {
		done := make(chan struct{})
		go func() { startWriteback(p); close(done) }()
		select {
		case <-done:
		case <-time.After(2 * time.Second):
			// Unblock the stuck open so the test binary can finish.
			if w, err := os.OpenFile(p, os.O_WRONLY, 0); err == nil {
				w.Close()
			}
			t.Fatalf("startWriteback(%s) blocked", filepath.Base(p))
		}
	}
}
