package syncthing

import (
	"context"
	"encoding/xml"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestConfig checks the config the benches give plain Syncthing:
// generated defaults, the folder and peer added, no GUI or discovery.
func TestConfig(t *testing.T) {
	if _, err := os.Stat(Bin); err != nil {
		t.Skipf("%s not installed", Bin)
	}
	t.Parallel()
	home := t.TempDir()
	id, err := Generate(context.Background(), Bin, home)
	if err != nil {
		t.Fatal(err)
	}
	gen, err := os.ReadFile(filepath.Join(home, "config.xml"))
	if err != nil {
		t.Fatal(err)
	}
	self := &Node{Home: home, Dir: filepath.Join(home, "folder"), ID: id, Port: 40001}
	peer := &Node{ID: strings.Repeat("A", 7) + strings.Repeat("-AAAAAAA", 7), Port: 40002}
	for _, delay := range []int{0, 1} {
		cfg, err := Config(string(gen), self, peer, delay)
		if err != nil {
			t.Fatal(err)
		}
		var c struct {
			Folders []struct {
				ID      string `xml:"id,attr"`
				Path    string `xml:"path,attr"`
				Delay   int    `xml:"fsWatcherDelayS,attr"`
				Watch   bool   `xml:"fsWatcherEnabled,attr"`
				Rescan  int    `xml:"rescanIntervalS,attr"`
				Devices []struct {
					ID string `xml:"id,attr"`
				} `xml:"device"`
			} `xml:"folder"`
			Devices []struct {
				ID      string `xml:"id,attr"`
				Address string `xml:"address"`
			} `xml:"device"`
			GUI struct {
				Enabled bool `xml:"enabled,attr"`
			} `xml:"gui"`
			Options struct {
				Listen []string `xml:"listenAddress"`
				Global bool     `xml:"globalAnnounceEnabled"`
				Local  bool     `xml:"localAnnounceEnabled"`
				Relays bool     `xml:"relaysEnabled"`
				UR     int      `xml:"urAccepted"`
			} `xml:"options"`
		}
		if err := xml.Unmarshal([]byte(cfg), &c); err != nil {
			t.Fatal(err)
		}
		wantDelay := 10
		if delay > 0 {
			wantDelay = delay
		}
		if len(c.Folders) != 1 || c.Folders[0].ID != "bench" || c.Folders[0].Path != self.Dir ||
			c.Folders[0].Delay != wantDelay || !c.Folders[0].Watch || c.Folders[0].Rescan != 3600 ||
			len(c.Folders[0].Devices) != 2 {
			t.Errorf("delay %d: folders %+v", delay, c.Folders)
		}
		if len(c.Devices) != 2 || c.Devices[0].ID != peer.ID || c.Devices[0].Address != "tcp://127.0.0.1:40002" {
			t.Errorf("devices %+v", c.Devices)
		}
		if c.GUI.Enabled || c.Options.Global || c.Options.Local || c.Options.Relays || c.Options.UR != -1 ||
			len(c.Options.Listen) != 1 || c.Options.Listen[0] != "tcp://127.0.0.1:40001" {
			t.Errorf("gui %+v options %+v", c.GUI, c.Options)
		}
	}
}

// TestQuietRefusesAnUnknownConfig: a config without one of the settings
// Quiet turns off is an error, not a Syncthing that would announce itself.
func TestQuietRefusesAnUnknownConfig(t *testing.T) {
	t.Parallel()
	full := `<configuration><gui enabled="true"></gui><options><listenAddress>default</listenAddress>` +
		`<globalAnnounceEnabled>true</globalAnnounceEnabled><localAnnounceEnabled>true</localAnnounceEnabled>` +
		`<relaysEnabled>true</relaysEnabled><natEnabled>true</natEnabled><urAccepted>0</urAccepted>` +
		`<autoUpgradeIntervalH>12</autoUpgradeIntervalH><crashReportingEnabled>true</crashReportingEnabled>` +
		`<startBrowser>true</startBrowser></options></configuration>`
	cfg, err := Quiet(full, "tcp://127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`<gui enabled="false"`, "<listenAddress>tcp://127.0.0.1:1<", "<natEnabled>false<", "<urAccepted>-1<"} {
		if !strings.Contains(cfg, want) {
			t.Errorf("quiet config lacks %s: %s", want, cfg)
		}
	}
	for _, drop := range []string{"<natEnabled>true</natEnabled>", `<gui enabled="true"></gui>`} {
		if _, err := Quiet(strings.Replace(full, drop, "", 1), "tcp://127.0.0.1:1"); err == nil {
			t.Errorf("Quiet accepted a config without %s", drop)
		}
	}
}
