// Package traefiktest runs a real Traefik for tests, bound to 127.0.0.1 and
// reading a file-provider directory.
//
// It exists because Traefik is edge's consumer: only a real Traefik proves
// that the file edge writes is configuration Traefik accepts and applies
// quickly. The binary is built by scripts/traefik/build.sh into a cache
// outside the repository; tests that need it fail when it is absent, unless
// EDGE_TEST_NO_TRAEFIK=1 asks them to skip.
package traefiktest

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Version is the Traefik release scripts/traefik pins.
const Version = "v3.0.0"

// Binary returns the Traefik binary to run: $TRAEFIK_BIN, else the one
// scripts/traefik/build.sh caches in ${TRAEFIK_CACHE:-/var/cache/homeswarm}.
func Binary() (string, error) {
	if b := os.Getenv("TRAEFIK_BIN"); b != "" {
		if _, err := os.Stat(b); err != nil {
			return "", fmt.Errorf("TRAEFIK_BIN: %w", err)
		}
		return b, nil
	}
	cache := os.Getenv("TRAEFIK_CACHE")
	if cache == "" {
		cache = "/var/cache/homeswarm"
	}
	b := filepath.Join(cache, "traefik-"+Version)
	if _, err := os.Stat(b); err != nil {
		return "", fmt.Errorf("no Traefik binary at %s and TRAEFIK_BIN is unset; build it with scripts/traefik/build.sh (10-15 min cold)", b)
	}
	return b, nil
}

// Traefik is a running Traefik process.
type Traefik struct {
	// HTTP and HTTPS are the 127.0.0.1 addresses of entry points "web" and
	// "websecure".
	HTTP, HTTPS string
	// Dir is the directory its file provider watches.
	Dir string

	cmd  *exec.Cmd
	mu   sync.Mutex
	logs bytes.Buffer
}

type lockedWriter struct{ t *Traefik }

func (w lockedWriter) Write(p []byte) (int, error) {
	w.t.mu.Lock()
	defer w.t.mu.Unlock()
	return w.t.logs.Write(p)
}

// Errors returns the error lines Traefik logged so far.
func (t *Traefik) Errors() []string {
	var errs []string
	for _, l := range strings.Split(t.Logs(), "\n") {
		if strings.Contains(l, " ERR ") {
			errs = append(errs, l)
		}
	}
	return errs
}

// Logs returns what Traefik printed so far.
func (t *Traefik) Logs() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.logs.String()
}

// FreePort returns a port on 127.0.0.1 that is free for network ("tcp" or
// "udp") right now, for an extra Traefik entry point.
func FreePort(tb testing.TB, network string) int {
	tb.Helper()
	if network == "udp" {
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			tb.Fatal(err)
		}
		defer c.Close()
		return c.LocalAddr().(*net.UDPAddr).Port
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func freeAddr(tb testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// Start runs Traefik watching dir; without a binary it fails tb (skips it
// when EDGE_TEST_NO_TRAEFIK=1).
// It waits until the web entry point answers and stops Traefik in cleanup.
// Traefik's providersThrottleDuration is 0: edge debounces itself. Traefik
// is told never to phone home; args are extra static configuration flags,
// which must not make it contact anything but 127.0.0.1.
func Start(tb testing.TB, dir string, args ...string) *Traefik {
	tb.Helper()
	bin, err := Binary()
	if err != nil {
		// Not a pass: `make test` builds Traefik first (scripts/deps.sh), and
		// a missing binary must not turn these tests green. Skipping is an
		// explicit choice.
		if os.Getenv("EDGE_TEST_NO_TRAEFIK") == "1" {
			tb.Skipf("EDGE_TEST_NO_TRAEFIK=1: %v", err)
		}
		tb.Fatalf("%v (or set EDGE_TEST_NO_TRAEFIK=1 to skip the tests that need Traefik)", err)
	}
	t := &Traefik{HTTP: freeAddr(tb), HTTPS: freeAddr(tb), Dir: dir}
	t.cmd = exec.Command(bin, append([]string{
		"--global.checkNewVersion=false",
		"--global.sendAnonymousUsage=false",
		"--entryPoints.web.address=" + t.HTTP,
		"--entryPoints.websecure.address=" + t.HTTPS,
		"--providers.file.directory=" + dir,
		"--providers.file.watch=true",
		"--providers.providersThrottleDuration=0s",
		"--log.level=INFO",
		"--log.noColor=true",
	}, args...)...)
	t.cmd.Dir = tb.TempDir()
	t.cmd.Stdout = lockedWriter{t}
	t.cmd.Stderr = lockedWriter{t}
	if err := t.cmd.Start(); err != nil {
		tb.Fatalf("start traefik: %v", err)
	}
	exited := make(chan struct{})
	go func() { t.cmd.Wait(); close(exited) }()
	tb.Cleanup(func() {
		t.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			t.cmd.Process.Kill()
			<-exited
		}
		if tb.Failed() {
			tb.Logf("traefik logs:\n%s", t.Logs())
		}
	})
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-exited:
			tb.Fatalf("traefik exited early:\n%s", t.Logs())
		default:
		}
		resp, err := client.Get("http://" + t.HTTP + "/")
		if err == nil {
			resp.Body.Close()
			return t
		}
		if time.Now().After(deadline) {
			tb.Fatalf("traefik did not listen on %s within 30s:\n%s", t.HTTP, t.Logs())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Client returns an HTTP client that sends every request to Traefik's
// entry points on 127.0.0.1, whatever the URL's host, does not follow
// redirects, and accepts Traefik's default certificate. Use it with
// http://<host>/ and https://<host>/ URLs, as curl --resolve would.
func (t *Traefik) Client() *http.Client {
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		_, port, _ := net.SplitHostPort(addr)
		target := t.HTTP
		if port == "443" {
			target = t.HTTPS
		}
		var d net.Dialer
		return d.DialContext(ctx, network, target)
	}
	tr := &http.Transport{DialContext: dial, DisableKeepAlives: true}
	tr.TLSClientConfig = insecureTLS()
	return &http.Client{
		Transport:     tr,
		Timeout:       2 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}
