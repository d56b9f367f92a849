//go:build !linux

package sink

import (
	"os"
	"testing"
)

// noRoom returns an empty directory and fill: after fill no new file can
// be created in the directory, by its permissions. Root ignores those; CI
// runs the Linux variant, which uses a tmpfs.
func noRoom(t *testing.T) (dir string, fill func()) {
	t.Helper()
	if os.Geteuid() == 0 {
		t.Skip("root ignores directory permissions")
	}
	dir = t.TempDir()
	return dir, func() {
		if err := os.Chmod(dir, 0o555); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Chmod(dir, 0o755) })
	}
}
