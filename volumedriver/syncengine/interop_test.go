package syncengine

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
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

// TestInteropPlainSyncthing shares a volume with a real Syncthing process
// (Debian's package) by its device ID, as `-o share=` does, and checks
// that files written on either side appear on the other.
func TestInteropPlainSyncthing(t *testing.T) {
	if _, err := os.Stat(plainSyncthing); err != nil {
		t.Skipf("%s not installed", plainSyncthing)
	}
	a := startNode(t, "a", testKey, nil)

	home := t.TempDir()
	cert, err := tlsutil.NewCertificate(filepath.Join(home, "cert.pem"), filepath.Join(home, "key.pem"), "syncthing", 365)
	if err != nil {
		t.Fatal(err)
	}
	plainID := protocol.NewDeviceID(cert.Certificate[0])
	listenPort, guiPort := freePort(t), freePort(t)
	plainDir := filepath.Join(home, "nas")
	if err := os.MkdirAll(filepath.Join(plainDir, ".stfolder"), 0o755); err != nil {
		t.Fatal(err)
	}

	// The volume, shared with the plain device, which listens on 127.0.0.1.
	writeFile(t, filepath.Join(a.vol("nas"), "from-engine-before.txt"), []byte("engine 1"))
	share := fmt.Sprintf("%s@127.0.0.1:%d", plainID, listenPort)
	if err := a.AddVolume(context.Background(), "nas", a.vol("nas"), []string{share}, nil); err != nil {
		t.Fatal(err)
	}

	cfg := fmt.Sprintf(`<configuration version="36">
    <folder id="%[1]s" label="nas" path="%[2]s" type="sendreceive" rescanIntervalS="3600" fsWatcherEnabled="true" fsWatcherDelayS="1">
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
`, FolderID("nas"), plainDir, plainID, a.DeviceID(), a.ListenAddr(), guiPort, listenPort)
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
	writeFile(t, filepath.Join(plainDir, "sub", "from-nas.txt"), []byte("nas "+strconv.Itoa(listenPort)))
	waitFor(t, 20*time.Second, "plain syncthing file on engine", func() bool {
		return hasContent(filepath.Join(a.vol("nas"), "sub", "from-nas.txt"), []byte("nas "+strconv.Itoa(listenPort)))
	})
	// The plain device is no cluster member: it never gets the registry.
	if exists(filepath.Join(plainDir, "volumes")) {
		t.Fatal("registry leaked to the plain device")
	}
	if st := a.Status("nas"); st["peersConnected"] != "1" {
		t.Fatalf("status: %v", st)
	}
}
