// Package syncthing runs a pair of plain Syncthing processes (Debian's
// /usr/bin/syncthing) on loopback sharing one folder, the anchor several
// benches measure syncvol against (bench/sync, bench/dblag).
//
// Each process gets the config `syncthing generate` writes, plus: the shared
// folder (made from the generated folder defaults, only fsWatcherDelayS
// changed when asked), the peer at its 127.0.0.1 address, no GUI,
// discovery, relays, NAT traversal, usage reporting, crash reports or
// upgrades, and reconnectionIntervalS=1 (connection set-up only).
package syncthing

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/homeswarm/homeswarm/bench/swarmtopo"
)

// Bin is Debian's Syncthing.
const Bin = "/usr/bin/syncthing"

// Node is one Syncthing process: its home (config, keys, log), its copy of
// the shared folder, device ID and listening port.
type Node struct {
	Home, Dir string
	ID        string
	Port      int
	cmd       *exec.Cmd
	logf      *os.File
}

// Pair is two Syncthing processes sharing one folder (ID "bench").
type Pair struct {
	A, B *Node
}

// Start starts a pair of plain Syncthing processes with homes homeA and
// homeB (each folder is HOME/folder) sharing one folder with the given
// fsWatcherDelayS (0: left at its default), and returns once a first file
// has reached B (polled every poll) and the watcher has settled.
func Start(ctx context.Context, bin, homeA, homeB string, delayS int, poll time.Duration) (p *Pair, err error) {
	p = &Pair{A: &Node{Home: homeA}, B: &Node{Home: homeB}}
	defer func() {
		if err != nil {
			p.Close(err)
		}
	}()
	nodes := []*Node{p.A, p.B}
	for _, nd := range nodes {
		nd.Dir = filepath.Join(nd.Home, "folder")
		if nd.ID, err = Generate(ctx, bin, nd.Home); err != nil {
			return nil, err
		}
		if nd.Port, err = swarmtopo.FreePort(); err != nil {
			return nil, err
		}
		if err := os.MkdirAll(filepath.Join(nd.Dir, ".stfolder"), 0o755); err != nil {
			return nil, err
		}
	}
	for i, nd := range nodes {
		path := filepath.Join(nd.Home, "config.xml")
		gen, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		cfg, err := Config(string(gen), nd, nodes[1-i], delayS)
		if err != nil {
			return nil, err
		}
		if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
			return nil, err
		}
	}
	// The warm-up file is found by the initial scan, so its arrival proves
	// the pair is connected and the folder running.
	if err := os.WriteFile(filepath.Join(p.A.Dir, "warmup"), []byte("warm"), 0o644); err != nil {
		return nil, err
	}
	for _, nd := range nodes {
		if err := nd.Start(bin); err != nil {
			return nil, err
		}
	}
	if err := swarmtopo.Poll(ctx, 90*time.Second, poll, func() error {
		b, err := os.ReadFile(filepath.Join(p.B.Dir, "warmup"))
		if err == nil && !bytes.Equal(b, []byte("warm")) {
			err = fmt.Errorf("warm-up file holds %q", b)
		}
		return err
	}); err != nil {
		return nil, fmt.Errorf("pair never synced: %w", err)
	}
	// Let the watcher settle after the initial scan.
	return p, swarmtopo.Sleep(ctx, 2*time.Second)
}

// Close stops the pair; after a failure it logs the tail of their logs.
func (p *Pair) Close(failure error) {
	for _, nd := range []*Node{p.A, p.B} {
		nd.Stop()
		if failure != nil {
			if out, err := os.ReadFile(filepath.Join(nd.Home, "syncthing.log")); err == nil {
				if len(out) > 3000 {
					out = out[len(out)-3000:]
				}
				log.Printf("syncthing log %s:\n%s", nd.Home, out)
			}
		}
	}
}

var deviceIDRe = regexp.MustCompile(`Device ID: ([A-Z0-9-]{63})`)

// Generate creates a Syncthing home (key, certificate, default config)
// and returns the device ID.
func Generate(ctx context.Context, bin, home string) (string, error) {
	out, err := exec.CommandContext(ctx, bin, "generate", "--home="+home, "--no-default-folder", "--skip-port-probing").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("syncthing generate: %w: %s", err, out)
	}
	m := deviceIDRe.FindSubmatch(out)
	if m == nil {
		return "", fmt.Errorf("syncthing generate: no device ID in %q", out)
	}
	return string(m[1]), nil
}

var defaultFolderRe = regexp.MustCompile(`(?s)<defaults>\s*(<folder id="" label="" path="~".*?</folder>)`)

// Config edits the config Syncthing generated: a folder made from the
// generated folder defaults (only fsWatcherDelayS changed, when delayS > 0)
// shared with the peer at its loopback address; options: listen on
// loopback, no GUI, discovery, relays, NAT traversal, usage reporting,
// crash reports or upgrades, and reconnectionIntervalS=1 (connection
// set-up only). Everything else stays at Syncthing's defaults.
func Config(generated string, self, peer *Node, delayS int) (string, error) {
	cfg, err := Quiet(generated, fmt.Sprintf("tcp://127.0.0.1:%d", self.Port))
	if err != nil {
		return "", err
	}
	cfg, err = setOption(cfg, "reconnectionIntervalS", "1")
	if err != nil {
		return "", err
	}
	m := defaultFolderRe.FindStringSubmatch(cfg)
	if m == nil {
		return "", errors.New("syncthing config: no folder defaults")
	}
	folder := strings.Replace(m[1], `id="" label="" path="~"`,
		fmt.Sprintf(`id="bench" label="bench" path="%s"`, self.Dir), 1)
	if delayS > 0 {
		folder = strings.Replace(folder, `fsWatcherDelayS="10"`, fmt.Sprintf(`fsWatcherDelayS="%d"`, delayS), 1)
	}
	folder = strings.Replace(folder, "<filesystemType>",
		fmt.Sprintf(`<device id="%s" introducedBy=""></device><filesystemType>`, peer.ID), 1)
	if !strings.Contains(folder, `fsWatcherEnabled="true"`) || !strings.Contains(folder, self.ID) {
		return "", fmt.Errorf("syncthing config: unexpected folder defaults %q", m[1])
	}
	peerDev := fmt.Sprintf(`<device id="%s" name="peer" compression="metadata"><address>tcp://127.0.0.1:%d</address></device>`, peer.ID, peer.Port)
	return strings.Replace(cfg, "\n    <device ", "\n    "+folder+"\n    "+peerDev+"\n    <device ", 1), nil
}

// Quiet edits a config Syncthing generated into the one every plain
// Syncthing of the project runs with: listening on listen only, and no
// GUI, global or local discovery, relays, NAT traversal, usage reporting,
// crash reports, browser or upgrades (nothing leaves the machine's test
// addresses). It fails when the config lacks one of these settings.
func Quiet(generated, listen string) (string, error) {
	cfg := generated
	var err error
	for _, kv := range [][2]string{
		{"listenAddress", listen},
		{"globalAnnounceEnabled", "false"},
		{"localAnnounceEnabled", "false"},
		{"relaysEnabled", "false"},
		{"natEnabled", "false"},
		{"urAccepted", "-1"},
		{"autoUpgradeIntervalH", "0"},
		{"crashReportingEnabled", "false"},
		{"startBrowser", "false"},
	} {
		if cfg, err = setOption(cfg, kv[0], kv[1]); err != nil {
			return "", err
		}
	}
	gui := regexp.MustCompile(`<gui enabled="true"`)
	if !gui.MatchString(cfg) {
		return "", errors.New("syncthing config: no <gui>")
	}
	return gui.ReplaceAllLiteralString(cfg, `<gui enabled="false"`), nil
}

// setOption sets the value of element tag in cfg; it fails when cfg has
// no such element.
func setOption(cfg, tag, val string) (string, error) {
	re := regexp.MustCompile(`<` + tag + `>[^<]*</` + tag + `>`)
	if !re.MatchString(cfg) {
		return "", fmt.Errorf("syncthing config: no <%s>", tag)
	}
	return re.ReplaceAllLiteralString(cfg, "<"+tag+">"+val+"</"+tag+">"), nil
}

// Start runs the node's Syncthing in its own process group, logging to
// HOME/syncthing.log.
func (n *Node) Start(bin string) error {
	f, err := os.Create(filepath.Join(n.Home, "syncthing.log"))
	if err != nil {
		return err
	}
	n.logf = f
	n.cmd = exec.Command(bin, "serve", "--home="+n.Home, "--no-browser", "--no-restart", "--no-upgrade", "--no-default-folder")
	// STMONITORED=yes runs Syncthing itself rather than its monitor, whose
	// child sits in its own process group and would outlive a kill.
	n.cmd.Env = append(os.Environ(), "HOME="+n.Home, "STNOUPGRADE=1", "STNORESTART=1", "STNODEFAULTFOLDER=1", "STMONITORED=yes")
	n.cmd.Stdout, n.cmd.Stderr = f, f
	n.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	return n.cmd.Start()
}

// Stop SIGKILLs the node's process group (as a crash does) and reaps it.
// It is idempotent.
func (n *Node) Stop() {
	if n.cmd != nil && n.cmd.Process != nil {
		_ = syscall.Kill(-n.cmd.Process.Pid, syscall.SIGKILL)
		_ = n.cmd.Wait()
		n.cmd = nil
	}
	if n.logf != nil {
		n.logf.Close()
		n.logf = nil
	}
}

// Version is the Syncthing binary's version ("v1.19.2-ds1"), "?" if unknown.
func Version(bin string) string {
	out, _ := exec.Command(bin, "--version").Output()
	if f := strings.Fields(string(out)); len(f) > 1 {
		return f[1]
	}
	return "?"
}
