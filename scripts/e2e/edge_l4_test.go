//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/homeswarm/homeswarm/internal/netns"
)

// The public ports TestEdgeL4 declares: a TCP port for the PROXY-protocol
// banner service, a TCP port two TLS services share by SNI, a UDP port.
const (
	l4BannerPort = 2525
	l4TLSPort    = 8443
	l4UDPPort    = 9987
	mumblePort   = 64738 // TCP and UDP
)

// internetClient is a client on the topology's "internet": an address of
// its own (203.0.113.99) on the WAN bridge, neither the VPS's, Traefik's
// nor the mesh's, so a backend can tell it from them.
type internetClient struct {
	addr string
	d    *netns.Dialer
}

const internetAddr = "203.0.113.99"

// newInternetClient puts internetAddr on the WAN bridge for the test.
func newInternetClient(t *testing.T) *internetClient {
	t.Helper()
	wan := topoPrefix + "-wan"
	ipCmd := func(args ...string) error {
		out, err := exec.Command("ip", append([]string{"netns", "exec", wan, "ip"}, args...)...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
		return nil
	}
	ipCmd("addr", "del", internetAddr+"/24", "dev", "br0") // an interrupted run's
	if err := ipCmd("addr", "add", internetAddr+"/24", "dev", "br0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ipCmd("addr", "del", internetAddr+"/24", "dev", "br0") })
	d := &netns.Dialer{Path: netns.Path(wan)}
	d.Timeout = 2 * time.Second
	return &internetClient{addr: internetAddr, d: d}
}

// banner connects to the VPS's port (through TLS with server name sni when
// set), reads the banner line, sends "ping" and reads the echo. It returns
// the banner, the certificate's name (TLS) and the client's own address.
func (c *internetClient) banner(port int, sni string) (banner, cert, local string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	conn, err := c.d.DialContext(ctx, "tcp", fmt.Sprintf("%s:%d", vpsAddr, port))
	if err != nil {
		return "", "", "", err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(3 * time.Second))
	local = conn.LocalAddr().String()
	if sni != "" {
		tc := tls.Client(conn, &tls.Config{ServerName: sni, InsecureSkipVerify: true})
		if err := tc.Handshake(); err != nil {
			return "", "", local, err
		}
		cert = tc.ConnectionState().PeerCertificates[0].Subject.CommonName
		conn = tc
	}
	r := bufio.NewReader(conn)
	banner, err = r.ReadString('\n')
	if err != nil {
		return banner, cert, local, fmt.Errorf("banner: %w", err)
	}
	fields := strings.Fields(banner)
	if _, err := conn.Write([]byte("ping\n")); err != nil {
		return banner, cert, local, err
	}
	echo, err := r.ReadString('\n')
	if err != nil || len(fields) < 2 || echo != fields[1]+" ping\n" {
		return banner, cert, local, fmt.Errorf("echo %q, %v", echo, err)
	}
	return strings.TrimSpace(banner), cert, local, nil
}

// udp sends msg to the VPS's UDP port from a new socket and returns the answer.
func (c *internetClient) udp(port int, msg string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	conn, err := c.d.DialContext(ctx, "udp", fmt.Sprintf("%s:%d", vpsAddr, port))
	if err != nil {
		return "", err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(500 * time.Millisecond))
	if _, err := conn.Write([]byte(msg)); err != nil {
		return "", err
	}
	buf := make([]byte, 1500)
	n, err := conn.Read(buf)
	return string(buf[:n]), err
}

// startL4Stack is Traefik with TCP and UDP entry points and edge filling
// them, on a meshnet network of their own, and the l4echo image on every
// node that runs services.
func startL4Stack(t *testing.T) *edgeStack {
	t.Helper()
	for _, nodes := range [][]string{{"vps"}, {"home1", "home2", "home3"}} {
		cmd := exec.Command(filepath.Join(repo, "scripts/images.sh"), nodes...)
		cmd.Env = append(os.Environ(), "IMAGES=l4echo")
		if nodes[0] == "vps" {
			cmd.Env = append(os.Environ(), "IMAGES=edge traefik l4echo")
		}
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("images: %v: %s", err, out)
		}
	}
	return runEdgeStack(t, edgeStackOpts{prefix: "l4-", routes: "l4-routes", network: "l4-web", netArgs: []string{"-d", meshnetDriver},
		netRemove: 30 * time.Second, edgeListen: "127.0.0.1:8087", traefikLog: "INFO", timeout: 2 * time.Second,
		traefikUp: 60 * time.Second, probe: "nothing.l4.e2e.test",
		tcpPorts: []int{l4BannerPort, l4TLSPort, mumblePort}, udpPorts: []int{l4UDPPort, mumblePort}})
}

// l4Service creates an l4echo service at home on the stack's network.
func l4Service(t *testing.T, name string, labels []string, args ...string) {
	t.Helper()
	base := []string{"--network", "l4-web", "--constraint", edgeConstraint}
	for _, l := range labels {
		base = append(base, "--label", l)
	}
	createService(t, name, append(append(base, "homeswarm/l4echo"), args...)...)
}

var taskAddress = regexp.MustCompile(`address: \d+\.\d+\.\d+\.\d+:`)

// TestEdgeL4 proves TCP, TLS-by-SNI and UDP routes through Traefik on the
// VPS to services at home behind the NAT, reached from the topology's
// internet: a banner/echo service with PROXY protocol v2 sees the internet
// client's own address; two TLS services sharing one public port, each
// with its own certificate, get the connections for their server names,
// passed through; a UDP echo answers; all at their tasks' addresses, in
// Swarm's default VIP mode, which this kernel (no IPVS) cannot serve. Then
// a start-first update of the banner service under a stream of new
// connections loses none.
func TestEdgeL4(t *testing.T) {
	s := startL4Stack(t)
	inet := newInternetClient(t)
	const sniA, sniB = "a.l4.e2e.test", "b.l4.e2e.test"
	start := time.Now()
	l4Service(t, "e2e-banner", []string{"edge.tcp.smtp.port=7000", fmt.Sprintf("edge.tcp.smtp.entrypoint=%d", l4BannerPort),
		"edge.tcp.smtp.proxy-protocol=2"}, "tcp", "-port", "7000", "-proxy", "-stop-delay", "2s")
	l4Service(t, "e2e-tls-a", []string{"edge.tcp.t.port=8443", fmt.Sprintf("edge.tcp.t.entrypoint=%d", l4TLSPort),
		"edge.tcp.t.sni=" + sniA, "edge.tcp.t.proxy-protocol=2"}, "tls", "-name", sniA, "-proxy")
	l4Service(t, "e2e-tls-b", []string{"traefik.tcp.routers.b.rule=HostSNI(`" + sniB + "`)",
		fmt.Sprintf("traefik.tcp.routers.b.entrypoints=tcp-%d", l4TLSPort), "traefik.tcp.routers.b.tls.passthrough=true",
		"traefik.tcp.services.b.loadbalancer.server.port=8443"}, "tls", "-name", sniB)
	l4Service(t, "e2e-udp", []string{"edge.udp.v.port=9000", fmt.Sprintf("edge.udp.v.entrypoint=%d", l4UDPPort)}, "udp")

	t.Run("ProxyProtocolClientAddress", func(t *testing.T) {
		var banner, local string
		eventually(t, 90*time.Second, "the banner service through Traefik", func() (err error) {
			banner, _, local, err = inet.banner(l4BannerPort, "")
			return err
		})
		t.Logf("TCP route: first banner %.1f s after `service create` (the task's start included): %q", time.Since(start).Seconds(), banner)
		// "l4echo <task> client <address>": the PROXY header's source is
		// the internet client itself, not Traefik's address on l4-web nor
		// a mesh address.
		if f := strings.Fields(banner); len(f) != 4 || f[3] != local || !strings.HasPrefix(local, internetAddr+":") {
			t.Errorf("banner %q: want the client's own address %s", banner, local)
		}
	})

	t.Run("SNIPassthrough", func(t *testing.T) {
		for _, name := range []string{sniA, sniB} {
			var banner, cert, local string
			eventually(t, 60*time.Second, "TLS by SNI "+name, func() (err error) {
				banner, cert, local, err = inet.banner(l4TLSPort, name)
				if err == nil && !strings.HasPrefix(banner, "l4echo "+name+" ") {
					err = fmt.Errorf("banner %q", banner)
				}
				return err
			})
			// Passthrough: the backend's own certificate, not Traefik's.
			if cert != name {
				t.Errorf("SNI %s: certificate for %q, want the backend's own", name, cert)
			}
			if name == sniA && !strings.HasSuffix(banner, " client "+local) {
				t.Errorf("SNI %s with PROXY protocol: banner %q, want the client %s", name, banner, local)
			}
			t.Logf("SNI %s on port %d: %q, certificate %s", name, l4TLSPort, banner, cert)
		}
		// A name nobody routes gets no backend.
		if banner, _, _, err := inet.banner(l4TLSPort, "c.l4.e2e.test"); err == nil {
			t.Errorf("an unrouted server name reached a backend: %q", banner)
		}
	})

	t.Run("UDPEcho", func(t *testing.T) {
		var got string
		eventually(t, 60*time.Second, "the UDP echo through Traefik", func() (err error) {
			got, err = inet.udp(l4UDPPort, "ping")
			if err == nil && !strings.HasSuffix(got, " ping") {
				err = fmt.Errorf("answer %q", got)
			}
			return err
		})
		t.Logf("UDP route: %q", got)
	})

	b, _ := os.ReadFile(filepath.Join(s.routes, "edge.yml"))
	if n := len(taskAddress.FindAll(b, -1)); n != 4 || strings.Contains(string(b), "address: e2e-") {
		t.Errorf("edge.yml routes %d TCP/UDP services to task addresses, want 4 (no VIP):\n%s", n, b)
	}

	t.Run("Mumble", func(t *testing.T) {
		// A real voice server (Debian's mumble-server, scripts/appimages.sh)
		// at home: its TLS control channel by TCP port, its voice by UDP,
		// the same public port for both as Mumble clients expect.
		importDebImages(t, "appimages", []string{"mumble"}, "home1", "home2", "home3")
		createService(t, "e2e-mumble", "--network", "l4-web", "--constraint", edgeConstraint,
			"--label", fmt.Sprintf("edge.tcp.mumble.port=%d", mumblePort), "--label", fmt.Sprintf("edge.tcp.mumble.entrypoint=%d", mumblePort),
			"--label", fmt.Sprintf("edge.udp.mumble.port=%d", mumblePort), "--label", fmt.Sprintf("edge.udp.mumble.entrypoint=%d", mumblePort),
			"homeswarm/mumble")
		// Mumble's UDP ping: 4 zero bytes and an 8-byte ident; the answer is
		// version, the ident back, users, max users, bandwidth.
		ping := "\x00\x00\x00\x00mumbleid"
		var got string
		eventually(t, 90*time.Second, "Mumble's UDP ping through Traefik", func() (err error) {
			got, err = inet.udp(mumblePort, ping)
			if err == nil && (len(got) != 24 || got[4:12] != "mumbleid") {
				err = fmt.Errorf("answer %q", got)
			}
			return err
		})
		v := []byte(got[:4])
		t.Logf("Mumble over UDP: version %d.%d.%d, max users %d", uint16(v[0])<<8|uint16(v[1]), v[2], v[3],
			uint32(got[16])<<24|uint32(got[17])<<16|uint32(got[18])<<8|uint32(got[19]))
		eventually(t, 30*time.Second, "Mumble's TLS through Traefik", func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			conn, err := inet.d.DialContext(ctx, "tcp", fmt.Sprintf("%s:%d", vpsAddr, mumblePort))
			if err != nil {
				return err
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(3 * time.Second))
			tc := tls.Client(conn, &tls.Config{InsecureSkipVerify: true}) // murmurd's own self-signed certificate
			if err := tc.Handshake(); err != nil {
				return err
			}
			t.Logf("Mumble over TCP: TLS %x with certificate %q", tc.ConnectionState().Version, tc.ConnectionState().PeerCertificates[0].Subject.CommonName)
			return nil
		})
	})

	t.Run("UpdateStartFirst", func(t *testing.T) {
		// New connections every 50 ms through `service update --force`:
		// the new task joins Traefik when it runs, the old one leaves as
		// Swarm marks it (it keeps accepting 2 s after SIGTERM).
		var (
			mu           sync.Mutex
			total        int
			failed, seen []string
		)
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				banner, _, _, err := inet.banner(l4BannerPort, "")
				mu.Lock()
				total++
				if err != nil {
					failed = append(failed, fmt.Sprintf("%s: %v", time.Now().Format("15:04:05.000"), err))
				} else if f := strings.Fields(banner); len(seen) == 0 || seen[len(seen)-1] != f[1] {
					seen = append(seen, f[1])
				}
				mu.Unlock()
				time.Sleep(50 * time.Millisecond)
			}
		}()
		time.Sleep(time.Second)
		out, err := dk("vps", "service", "update", "--force", "--detach=false", "--update-order", "start-first", "e2e-banner")
		time.Sleep(3 * time.Second) // the old task's stop delay, and more
		cancel()
		wg.Wait()
		if err != nil {
			t.Fatalf("update: %v: %s", err, out)
		}
		t.Logf("%d new connections through the update, %d failed; tasks in order: %v", total, len(failed), seen)
		if len(failed) > 0 {
			t.Errorf("%d connections failed:\n%s", len(failed), strings.Join(failed, "\n"))
		}
		if len(seen) != 2 {
			t.Errorf("tasks answering in order %v, want the old then the new", seen)
		}
	})
}
