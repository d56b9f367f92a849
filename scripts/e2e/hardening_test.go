//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
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
			vol := "e2e-keep-" + repl + "-" + runID
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

// TestSyncvolPlantedSymlinkNeverFollowed: a device sharing a files
// volume (here home1, a member; a share= device can do the same) replaces
// its data directory by a symlink to a directory holding a secret on the
// other nodes; Syncthing carries the symlink to home2, whose next Mount is
// refused, saying why, and no container sees the secret.
func TestSyncvolPlantedSymlinkNeverFollowed(t *testing.T) {
	const victim, peer = "home2", "home1"
	vol := "e2e-planted-" + runID
	t.Cleanup(func() {
		for _, n := range []string{victim, peer} {
			dk(n, "volume", "rm", vol)
		}
	})
	mustDk(t, victim, "volume", "create", "-d", "syncvol", "-o", "replication=files", vol)
	// Left empty: a directory with content changes under the puller as
	// the deletions land, and Syncthing then retries the symlink only a
	// minute later.
	mustDk(t, victim, "run", "--rm", "-v", vol+":/vol", "busybox", "true")
	// docker run --rm returns before the daemon unmounts: the next Mount
	// must be a first one, which opens the data directory anew.
	eventually(t, 20*time.Second, "the volume unmounted", func() error {
		out, err := dk(victim, "volume", "inspect", "-f", `{{index .Status "mounts"}}`, vol)
		if err != nil || out != "0" {
			return fmt.Errorf("mounts %q %v", out, err)
		}
		return nil
	})
	secret := filepath.Join(topoRoot, victim, "syncvol", "planted-secret")
	if err := os.MkdirAll(secret, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(secret) })
	if err := os.WriteFile(filepath.Join(secret, "key.pem"), []byte("SECRET"), 0o600); err != nil {
		t.Fatal(err)
	}
	data := func(n string) string { return filepath.Join(topoRoot, n, "syncvol", "volumes", vol, "replica", "data") }
	eventually(t, 30*time.Second, "the volume on "+peer, func() error {
		_, err := os.Stat(data(peer))
		return err
	})
	if err := os.RemoveAll(data(peer)); err != nil {
		t.Fatal(err)
	}
	// Relative, so that it points at the secret on every node, inside the
	// plugin's /state as well as on the host.
	if err := os.Symlink("../../../planted-secret", data(peer)); err != nil {
		t.Fatal(err)
	}
	eventually(t, 90*time.Second, "the symlink on "+victim, func() error {
		if fi, err := os.Lstat(data(victim)); err != nil || fi.Mode()&os.ModeSymlink == 0 {
			return fmt.Errorf("not (yet) a symlink: %v", err)
		}
		return nil
	})
	out, err := dk(victim, "run", "--rm", "-v", vol+":/vol", "busybox", "cat", "/vol/key.pem")
	if err == nil || strings.Contains(out, "SECRET") {
		t.Fatalf("a container mounted the planted symlink: %q %v", out, err)
	}
	if !strings.Contains(err.Error(), "not a plain directory") {
		t.Fatalf("refusal does not say why: %v", err)
	}
	t.Logf("refused: %v", err)
}

// TestSyncvolLogsNoProof (issue 12, item 5): embedded Syncthing logs each
// member's device name when it connects, and a member's name carries its
// proof of the cluster key; what reaches the engines' logs has the proof
// replaced, on every node, so a log cannot be used to guess the key.
func TestSyncvolLogsNoProof(t *testing.T) {
	proof := regexp.MustCompile(`#[A-Za-z0-9_-]{43}`)
	redacted := 0
	for _, n := range []string{"vps", "home1", "home2", "home3"} {
		b, err := os.ReadFile(filepath.Join(topoRoot, n, "dockerd.log"))
		if err != nil {
			t.Fatal(err)
		}
		if m := proof.Find(b); m != nil {
			t.Errorf("%s's log shows a membership proof (%s…)", n, m[:12])
		}
		redacted += strings.Count(string(b), "#<proof>")
	}
	if redacted == 0 {
		t.Fatal("no node logged a member's (redacted) name: the check saw nothing")
	}
}
