package store

import (
	"os"
	"path/filepath"
	"testing"
)

// TestBindMounterForReal makes a real bind mount (root only) and checks that
// Mounted sees it and Unmount removes it, twice without error.
func TestBindMounterForReal(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("bind mounts need root")
	}
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "src dir"), filepath.Join(dir, "dst dir") // a space exercises mountinfo escapes
	os.Mkdir(src, 0o755)
	os.Mkdir(dst, 0o755)
	os.WriteFile(filepath.Join(src, "f"), []byte("x"), 0o644)
	var m BindMounter
	if ok, err := m.Mounted(dst); ok || err != nil {
		t.Fatalf("Mounted before mount = %v, %v", ok, err)
	}
	if err := m.Mount(src, dst); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Unmount(dst) })
	if ok, err := m.Mounted(dst); !ok || err != nil {
		t.Fatalf("Mounted after mount = %v, %v", ok, err)
	}
	if b, err := os.ReadFile(filepath.Join(dst, "f")); err != nil || string(b) != "x" {
		t.Fatalf("read through the mount: %q %v", b, err)
	}
	if err := m.Unmount(dst); err != nil {
		t.Fatal(err)
	}
	if err := m.Unmount(dst); err != nil {
		t.Fatalf("second Unmount: %v", err)
	}
	if ok, _ := m.Mounted(dst); ok {
		t.Fatal("still mounted")
	}
}
