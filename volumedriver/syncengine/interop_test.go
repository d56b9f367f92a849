package syncengine

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/syncthing/syncthing/lib/protocol"
	"github.com/syncthing/syncthing/lib/tlsutil"
)

const plainSyncthing = "/usr/bin/syncthing"

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// plainDevice is a real Syncthing process (Debian's package) sharing one
// folder with an engine.
type plainDevice struct {
	id   protocol.DeviceID
	dir  string // the folder's path on the device
	addr string // where it listens, for share=ID@addr
}

// startPlainSyncthing runs Syncthing with folder (type folderType: the
// config's sendreceive, receiveencrypted, …) shared with engine a.
func startPlainSyncthing(t *testing.T, a *node, folder, folderType string) *plainDevice {
	t.Helper()
	if _, err := os.Stat(plainSyncthing); err != nil {
		t.Fatalf("%s not installed (Debian's syncthing package; make deps installs it)", plainSyncthing)
	}
	home := t.TempDir()
	cert, err := tlsutil.NewCertificate(filepath.Join(home, "cert.pem"), filepath.Join(home, "key.pem"), "syncthing", 365)
	if err != nil {
		t.Fatal(err)
	}
	d := &plainDevice{id: protocol.NewDeviceID(cert.Certificate[0]), dir: filepath.Join(home, "nas")}
	listenPort, guiPort := freePort(t), freePort(t)
	d.addr = fmt.Sprintf("127.0.0.1:%d", listenPort)
	if err := os.MkdirAll(filepath.Join(d.dir, ".stfolder"), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`<configuration version="36">
    <folder id="%[1]s" label="nas" path="%[2]s" type="%[8]s" rescanIntervalS="3600" fsWatcherEnabled="true" fsWatcherDelayS="1">
        <device id="%[3]s"></device>
        <device id="%[4]s"></device>
    </folder>
    <device id="%[3]s" name="nas" compression="metadata"><address>dynamic</address></device>
    <device id="%[4]s" name="syncvol" compression="metadata"><address>tcp://%[5]s</address></device>
    <gui enabled="true" tls="false"><address>127.0.0.1:%[6]d</address><apikey>interop-test</apikey></gui>
    <options>
        <listenAddress>tcp://127.0.0.1:%[7]d</listenAddress>
        <globalAnnounceEnabled>false</globalAnnounceEnabled>
        <localAnnounceEnabled>false</localAnnounceEnabled>
        <relaysEnabled>false</relaysEnabled>
        <natEnabled>false</natEnabled>
        <urAccepted>-1</urAccepted>
        <autoUpgradeIntervalH>0</autoUpgradeIntervalH>
        <crashReportingEnabled>false</crashReportingEnabled>
        <startBrowser>false</startBrowser>
        <reconnectionIntervalS>1</reconnectionIntervalS>
    </options>
</configuration>
`, folder, d.dir, d.id, a.DeviceID(), a.ListenAddr(), guiPort, listenPort, folderType)
	if err := os.WriteFile(filepath.Join(home, "config.xml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(plainSyncthing, "serve", "--home="+home, "--no-browser", "--no-restart", "--no-upgrade")
	cmd.Env = append(os.Environ(), "HOME="+home, "STNOUPGRADE=1", "STNORESTART=1")
	logf, err := os.Create(filepath.Join(home, "syncthing.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		logf.Close()
		if t.Failed() {
			out, _ := os.ReadFile(filepath.Join(home, "syncthing.log"))
			t.Logf("plain syncthing log:\n%s", out)
		}
	})
	return d
}

// TestInteropPlainSyncthing shares a volume with a real Syncthing process
// (Debian's package) by its device ID, as `-o share=… -o
// share-mode=readwrite` does, and checks that files written on either side
// appear on the other.
func TestInteropPlainSyncthing(t *testing.T) {
	a := startNode(t, "a", testKey, nil)
	// The volume, shared with the plain device, which listens on 127.0.0.1.
	writeFile(t, filepath.Join(a.vol("nas"), "from-engine-before.txt"), []byte("engine 1"))
	d := startPlainSyncthing(t, a, FolderID("nas"), "sendreceive")
	share := d.id.String() + "@" + d.addr
	if err := a.AddVolume(context.Background(), "nas", a.vol("nas"), []string{share}, map[string]string{"share": share, "share-mode": "readwrite"}); err != nil {
		t.Fatal(err)
	}
	plainID, plainDir := d.id, d.dir
	listenPort := d.addr

	waitFor(t, 30*time.Second, "engine file on plain syncthing", func() bool {
		return hasContent(filepath.Join(plainDir, "from-engine-before.txt"), []byte("engine 1"))
	})
	if !a.st.IsConnectedTo(plainID) {
		t.Fatal("not connected to the plain device")
	}
	writeFile(t, filepath.Join(a.vol("nas"), "from-engine.txt"), []byte("engine 2"))
	waitFor(t, 15*time.Second, "new engine file on plain syncthing", func() bool {
		return hasContent(filepath.Join(plainDir, "from-engine.txt"), []byte("engine 2"))
	})
	writeFile(t, filepath.Join(plainDir, "sub", "from-nas.txt"), []byte("nas "+listenPort))
	waitFor(t, 20*time.Second, "plain syncthing file on engine", func() bool {
		return hasContent(filepath.Join(a.vol("nas"), "sub", "from-nas.txt"), []byte("nas "+listenPort))
	})
	// The plain device is no cluster member: it never gets the registry.
	if exists(filepath.Join(plainDir, "volumes")) {
		t.Fatal("registry leaked to the plain device")
	}
	if st := a.Status("nas"); st["peersConnected"] != "1" {
		t.Fatalf("status: %v", st)
	}
}

// TestInteropEncryptedShare (issue 12, item 9): with share-mode=encrypted
// (the default for share=) a real Syncthing device holds the volume as
// Syncthing's "Receive Encrypted": it never sees a name or a byte of the
// files in the clear, and what it changes or deletes on its side never
// reaches the volume. A device that insists on the clear text
// (sendreceive) gets nothing.
func TestInteropEncryptedShare(t *testing.T) {
	t.Parallel()
	a := startNode(t, "a", testKey, nil)
	secret := []byte("the database's secret contents")
	writeFile(t, filepath.Join(a.vol("nas"), "wp-config.php"), secret)
	d := startPlainSyncthing(t, a, FolderID("nas"), "receiveencrypted")
	share := d.id.String() + "@" + d.addr
	if err := a.AddVolume(context.Background(), "nas", a.vol("nas"), []string{share}, map[string]string{"share": share, "share-mode": "encrypted"}); err != nil {
		t.Fatal(err)
	}
	var stored []string
	waitFor(t, 30*time.Second, "encrypted files on the device", func() bool {
		stored = regularFiles(t, d.dir)
		return len(stored) > 0
	})
	for _, f := range stored {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(f, "wp-config") || bytes.Contains(b, secret) {
			t.Fatalf("the device holds %s in the clear", f)
		}
	}
	// The device overwrites and deletes what it holds: the volume keeps its file.
	for _, f := range stored {
		if err := os.WriteFile(f, []byte("tampered"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(3 * time.Second) // its watcher's delay is 1 s: a change would be announced by now
	for _, f := range stored {
		os.Remove(f)
	}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		a.Touched("nas")
		if !hasContent(filepath.Join(a.vol("nas"), "wp-config.php"), secret) {
			t.Fatal("the encrypted device changed the volume")
		}
		time.Sleep(200 * time.Millisecond)
	}

	// A device configured for the clear text gets nothing and changes nothing.
	writeFile(t, filepath.Join(a.vol("plain"), "f"), secret)
	p := startPlainSyncthing(t, a, FolderID("plain"), "sendreceive")
	writeFile(t, filepath.Join(p.dir, "from-device.txt"), []byte("pushed"))
	pshare := p.id.String() + "@" + p.addr
	if err := a.AddVolume(context.Background(), "plain", a.vol("plain"), []string{pshare}, map[string]string{"share": pshare, "share-mode": "encrypted"}); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(8 * time.Second)
	for time.Now().Before(deadline) {
		if exists(filepath.Join(p.dir, "f")) {
			t.Fatal("a clear-text device got the file of an encrypted share")
		}
		if exists(filepath.Join(a.vol("plain"), "from-device.txt")) {
			t.Fatal("a clear-text device changed an encrypted share")
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// regularFiles lists the regular files under dir, Syncthing's own excepted.
func regularFiles(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(dir, func(p string, de os.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if de.IsDir() && (de.Name() == ".stfolder" || de.Name() == ".stversions") {
			return filepath.SkipDir
		}
		if de.Type().IsRegular() && !strings.HasPrefix(de.Name(), ".syncthing.") {
			out = append(out, p)
		}
		return nil
	})
	return out
}
