package sink

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// noRoom returns an empty directory and fill: after fill no new file can
// be created in the directory, while the files already there stay
// writable in place (so a sink that wrote in place would not fail).
//
// A normal user gets this from directory permissions. Root ignores those,
// so as root (CI) the directory is a tmpfs with three inodes: itself, the
// route file, and the one fill takes. Not being able to mount fails t.
func noRoom(t *testing.T) (dir string, fill func()) {
	t.Helper()
	dir = t.TempDir()
	if os.Geteuid() != 0 {
		return dir, func() {
			if err := os.Chmod(dir, 0o555); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.Chmod(dir, 0o755) })
		}
	}
	if err := unix.Mount("sinktest", dir, "tmpfs", 0, "nr_inodes=3,size=1m,mode=0755"); err != nil {
		t.Fatalf("mount a tmpfs on %s: %v", dir, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir, func() {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, "filler"), nil, 0o644); err != nil {
			t.Fatalf("take the tmpfs's last inode: %v", err)
		}
		if err := os.WriteFile(filepath.Join(dir, "one-more"), nil, 0o644); err == nil {
			t.Fatal("the tmpfs still has room for a file")
		}
	}
}
