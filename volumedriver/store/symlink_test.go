package store

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// plant replaces a files volume's data directory by a symlink to target,
// as a device sharing the replicated folder can (Syncthing applies a
// peer's delete of the directory, then its symlink).
func plant(t *testing.T, s *Store, name, target string) {
	t.Helper()
	if err := os.RemoveAll(s.DataDir(name)); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, s.DataDir(name)); err != nil {
		t.Fatal(err)
	}
}

// TestMountRefusesPlantedSymlink: a data directory replaced by a symlink
// (to another volume, or anywhere on the host) is never mounted.
func TestMountRefusesPlantedSymlink(t *testing.T) {
	t.Parallel()
	m := &fakeMounter{}
	s, dir := newTestStore(t, m, nil)
	for _, n := range []string{"web", "other"} {
		if err := s.Create(n, map[string]string{"replication": "files"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(s.DataDir("other"), "secret"), []byte("other's data"), 0o600); err != nil {
		t.Fatal(err)
	}
	hostKey := filepath.Join(dir, "key")
	os.Mkdir(hostKey, 0o700)
	for _, target := range []string{s.DataDir("other"), "../../other/replica/data", hostKey} {
		plant(t, s, "web", target)
		mp, err := s.Mount("web", "c1")
		if !errors.Is(err, ErrUnsafePath) {
			t.Fatalf("Mount with data -> %s = %q, %v; want ErrUnsafePath", target, mp, err)
		}
		if ok, _ := m.Mounted(s.MountPoint("web")); ok {
			t.Fatalf("data -> %s: mounted %s", target, m.mounts[s.MountPoint("web")])
		}
		if v, _ := s.Get("web"); v.Mounts != 0 {
			t.Fatalf("a refused mount left %d users recorded", v.Mounts)
		}
	}
	// A plain directory mounts, and the mounter is handed that directory.
	os.Remove(s.DataDir("web"))
	os.Mkdir(s.DataDir("web"), 0o755)
	if _, err := s.Mount("web", "c1"); err != nil {
		t.Fatal(err)
	}
	if src := m.mounts[s.MountPoint("web")]; src != s.DataDir("web") {
		t.Fatalf("mounted %s, want %s", src, s.DataDir("web"))
	}
}

// TestCreateNeverChmodsThroughSymlink: Create on a node where the
// replicated folder arrived first sets the root's mode and owner; a
// planted symlink must not carry that to a directory outside the volume.
func TestCreateNeverChmodsThroughSymlink(t *testing.T) {
	t.Parallel()
	s, dir := newTestStore(t, &fakeMounter{}, nil)
	outside := filepath.Join(dir, "outside")
	if err := os.Mkdir(outside, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(s.ReplicaDir("web"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, s.DataDir("web")); err != nil {
		t.Fatal(err)
	}
	err := s.Create("web", map[string]string{"replication": "files", "mode": "0777"})
	if !errors.Is(err, ErrUnsafePath) {
		t.Fatalf("Create through a planted symlink = %v, want ErrUnsafePath", err)
	}
	fi, err := os.Stat(outside)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o700 {
		t.Fatalf("the directory outside the volume became %v", fi.Mode().Perm())
	}
}

// TestBindMountNeverFollowsPlantedSymlink makes real bind mounts (root
// only): a volume mounts, and a data directory replaced by a symlink to
// another directory is refused — by the store, and by BindMounter itself
// should the symlink land after the store's check — so its content never
// shows at the mount point.
func TestBindMountNeverFollowsPlantedSymlink(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("bind mounts need root")
	}
	s, dir := newTestStore(t, BindMounter{}, nil)
	if err := s.Create("web", map[string]string{"replication": "files"}); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(s.DataDir("web"), "index.html"), []byte("hi"), 0o644)
	mp, err := s.Mount("web", "c1")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { BindMounter{}.Unmount(mp) })
	if b, err := os.ReadFile(filepath.Join(mp, "index.html")); err != nil || string(b) != "hi" {
		t.Fatalf("read through the mount: %q %v", b, err)
	}
	if err := s.Unmount("web", "c1"); err != nil {
		t.Fatal(err)
	}
	secret := filepath.Join(dir, "secret")
	os.Mkdir(secret, 0o700)
	os.WriteFile(filepath.Join(secret, "key.pem"), []byte("KEY"), 0o600)
	plant(t, s, "web", secret)
	if _, err := s.Mount("web", "c2"); !errors.Is(err, ErrUnsafePath) {
		t.Fatalf("Mount with a planted symlink = %v, want ErrUnsafePath", err)
	}
	if _, err := os.Stat(filepath.Join(mp, "key.pem")); err == nil {
		t.Fatal("the planted symlink's target is visible at the mount point")
	}
	os.MkdirAll(mp, 0o755)
	if err := (BindMounter{}).Mount(s.DataDir("web"), mp); !errors.Is(err, ErrUnsafePath) {
		BindMounter{}.Unmount(mp)
		t.Fatalf("BindMounter.Mount of a symlink = %v, want ErrUnsafePath", err)
	}
	if _, err := os.Stat(filepath.Join(mp, "key.pem")); err == nil {
		t.Fatal("BindMounter followed the symlink")
	}
}
