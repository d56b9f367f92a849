package syncengine

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestQueueWriteback: requests for one temporary are spaced by
// writebackEvery, other files are not held back, a full queue never
// blocks, and the writeback itself runs on a real file (and ignores a
// missing one).
func TestQueueWriteback(t *testing.T) {
	t.Parallel()
	e := &Engine{wbQueue: make(chan string, 2), wbLast: map[string]time.Time{}}
	e.queueWriteback("a")
	e.queueWriteback("a") // too soon: dropped
	e.queueWriteback("b")
	if got := len(e.wbQueue); got != 2 {
		t.Fatalf("queued %d requests, want 2 (a once, b)", got)
	}
	e.queueWriteback("c") // queue full: must not block
	if got := <-e.wbQueue; got != "a" {
		t.Fatalf("first request %q, want a", got)
	}
	<-e.wbQueue
	e.wbMu.Lock()
	e.wbLast["a"] = time.Now().Add(-writebackEvery)
	e.wbMu.Unlock()
	e.queueWriteback("a") // spaced enough: queued again
	if got := len(e.wbQueue); got != 1 {
		t.Fatalf("queued %d requests after the pause, want 1", got)
	}

	dir := t.TempDir()
	path := filepath.Join(dir, ".syncthing.f.tmp")
	if err := os.WriteFile(path, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	startWriteback(path)
	startWriteback(filepath.Join(dir, "missing"))
}
