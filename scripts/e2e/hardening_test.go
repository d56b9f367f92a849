//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestSyncvolRemoveEverywhereSparesUse: `docker volume rm` of a
// remove=everywhere volume on home1 (a node the service left) while a
// container on home3 uses it is refused, naming home3, and home3's
// container keeps its data; once that container is gone the removal goes
// through. Both replication modes.
func TestSyncvolRemoveEverywhereSparesUse(t *testing.T) {
	for _, repl := range []string{"files", "snapshots"} {
		t.Run(repl, func(t *testing.T) {
			vol := "e2e-keep-" + repl
			user := vol + "-user"
			t.Cleanup(func() {
				dk("home3", "rm", "-f", user)
				for _, n := range []string{"home1", "home3"} {
					dk(n, "volume", "rm", vol)
				}
			})
			mustDk(t, "home1", "volume", "create", "-d", "syncvol", "-o", "remove=everywhere", "-o", "replication="+repl, vol)
			mustDk(t, "home1", "run", "--rm", "-v", vol+":/vol", "busybox", "sh", "-c", "echo first > /vol/f")
			mustDk(t, "home3", "volume", "create", "-d", "syncvol", "-o", "remove=everywhere", "-o", "replication="+repl, vol)
			mustDk(t, "home3", "run", "-d", "--name", user, "-v", vol+":/vol", "busybox", "sh", "-c",
				"cat /vol/f > /vol/seen; echo home3 > /vol/g; sleep 3600")
			eventually(t, 30*time.Second, "home3's container sees home1's data", func() error {
				out, err := dk("home3", "exec", user, "cat", "/vol/seen")
				if err != nil || out != "first" {
					return fmt.Errorf("%q %v", out, err)
				}
				return nil
			})
			if repl == "files" {
				// The use is published in home3's member record; home1's
				// inspect shows it once the registry carried it.
				eventually(t, 20*time.Second, "home1 sees the use on home3", func() error {
					out, err := dk("home1", "volume", "inspect", "-f", `{{index .Status "usedOn"}}`, vol)
					if err != nil || !strings.Contains(out, "home3") {
						return fmt.Errorf("usedOn %q %v", out, err)
					}
					return nil
				})
			}
			_, err := dk("home1", "volume", "rm", vol)
			if err == nil || !strings.Contains(err.Error(), "home3") && !strings.Contains(err.Error(), "written by") {
				t.Fatalf("rm everywhere on home1 while home3 uses it: %v, want a refusal naming home3", err)
			}
			t.Logf("refused: %v", err)
			time.Sleep(3 * time.Second) // a deletion that slipped through would wipe by now
			if out, err := dk("home3", "exec", user, "cat", "/vol/f", "/vol/g"); err != nil || out != "first\nhome3" {
				t.Fatalf("home3's container lost its data: %q %v", out, err)
			}
			mustDk(t, "home3", "rm", "-f", user)
			eventually(t, 30*time.Second, "rm everywhere once nobody uses it", func() error {
				_, err := dk("home1", "volume", "rm", vol)
				return err
			})
			eventually(t, 30*time.Second, "data gone from home3", func() error {
				if _, err := os.Stat(replicaFile("home3", vol, "g")); err == nil {
					return fmt.Errorf("still on home3")
				}
				return nil
			})
		})
	}
}

// TestSyncvolPlantedSymlinkNeverFollowed: a files volume's data directory
// replaced by a symlink (what a device sharing the replicated folder can
// plant) to a directory holding a secret: the next Mount is refused and
// no container sees the secret.
func TestSyncvolPlantedSymlinkNeverFollowed(t *testing.T) {
	const node, vol = "home2", "e2e-planted"
	t.Cleanup(func() { dk(node, "volume", "rm", vol) })
	mustDk(t, node, "volume", "create", "-d", "syncvol", "-o", "replication=files", vol)
	mustDk(t, node, "run", "--rm", "-v", vol+":/vol", "busybox", "sh", "-c", "echo ok > /vol/f")
	base := filepath.Join(topoRoot, node, "syncvol")
	secret := filepath.Join(base, "planted-secret")
	if err := os.MkdirAll(secret, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(secret) })
	if err := os.WriteFile(filepath.Join(secret, "key.pem"), []byte("SECRET"), 0o600); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(base, "volumes", vol, "replica", "data")
	if err := os.RemoveAll(data); err != nil {
		t.Fatal(err)
	}
	// Relative, as a peer's symlink would be: it resolves inside the
	// plugin's /state as well as on the host.
	if err := os.Symlink("../../../planted-secret", data); err != nil {
		t.Fatal(err)
	}
	out, err := dk(node, "run", "--rm", "-v", vol+":/vol", "busybox", "cat", "/vol/key.pem")
	if err == nil || strings.Contains(out, "SECRET") {
		t.Fatalf("a container mounted the planted symlink: %q %v", out, err)
	}
	if !strings.Contains(err.Error(), "not a plain directory") {
		t.Fatalf("refusal does not say why: %v", err)
	}
	t.Logf("refused: %v", err)
}
