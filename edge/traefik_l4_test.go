package edge_test

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/homeswarm/homeswarm/edge/builder"
	"github.com/homeswarm/homeswarm/edge/sink"
	"github.com/homeswarm/homeswarm/edge/traefiktest"
	"github.com/homeswarm/homeswarm/internal/proxyproto"
)

// serveTCP accepts connections on ln until the test ends; each is handled
// by handle on its own goroutine.
func serveTCP(t *testing.T, ln net.Listener, handle func(net.Conn)) string {
	t.Helper()
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				handle(c)
			}()
		}
	}()
	return ln.Addr().String()
}

// lineEcho answers each line with prefix + line.
func lineEcho(prefix string) func(net.Conn) {
	return func(c net.Conn) {
		r := bufio.NewReader(c)
		for {
			l, err := r.ReadString('\n')
			if err != nil {
				return
			}
			io.WriteString(c, prefix+l)
		}
	}
}

func tcpListen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// selfSigned is a certificate for name, for a backend that does its own TLS.
func selfSigned(t *testing.T, name string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// ask dials addr (through tlsConf when set), sends line and returns the
// first line of the answer.
func ask(addr, line string, tlsConf *tls.Config) (string, net.Addr, error) {
	var (
		c   net.Conn
		err error
	)
	d := &net.Dialer{Timeout: time.Second}
	if tlsConf != nil {
		c, err = tls.DialWithDialer(d, "tcp", addr, tlsConf)
	} else {
		c, err = d.Dial("tcp", addr)
	}
	if err != nil {
		return "", nil, err
	}
	defer closePolitely(c)
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.WriteString(c, line+"\n"); err != nil {
		return "", nil, err
	}
	got, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSuffix(got, "\n"), c.LocalAddr(), err
}

// closePolitely half-closes c and reads what is left before closing, as a
// well-behaved client does: closing with unread data (a TLS 1.3 session
// ticket) would reset the connection, which Traefik logs as an error.
func closePolitely(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	c.SetReadDeadline(time.Now().Add(time.Second))
	io.Copy(io.Discard, c)
	c.Close()
}

func askUDP(addr, msg string) (string, error) {
	c, err := net.Dial("udp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	return udpAsk(c, msg)
}

// eventually retries f until it returns want or 10 s pass.
func eventually(t *testing.T, what, want string, f func() (string, error)) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, err := f()
		if err == nil && got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: got %q, %v; want %q", what, got, err, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestTraefikRoutesTCPAndUDP feeds a real Traefik TCP and UDP routes built
// from labels: a TCP echo on a declared port, TLS by SNI passed through to
// two backends holding their own certificates (beside an HTTPS route on the
// same entry point), TLS terminated by Traefik, PROXY protocol v2 carrying
// the client's address, and a UDP echo. It also proves with Traefik that a
// catch-all rule with a huge priority from a later service does not take a
// host another service owns.
func TestTraefikRoutesTCPAndUDP(t *testing.T) {
	dir := t.TempDir()
	out, err := sink.NewFile(sink.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := out.Write(builder.Table{}); err != nil {
		t.Fatal(err)
	}
	echoPort, termPort, ppPort := traefiktest.FreePort(t, "tcp"), traefiktest.FreePort(t, "tcp"), traefiktest.FreePort(t, "tcp")
	udpPort := traefiktest.FreePort(t, "udp")
	var flags []string
	for _, p := range []int{echoPort, termPort, ppPort} {
		flags = append(flags, fmt.Sprintf("--entryPoints.%s.address=127.0.0.1:%d/tcp", builder.TCPEntryPoint(p), p))
	}
	flags = append(flags, fmt.Sprintf("--entryPoints.%s.address=127.0.0.1:%d/udp", builder.UDPEntryPoint(udpPort), udpPort))
	tr := traefiktest.Start(t, dir, flags...)

	// Backends, standing in for the services' VIPs.
	addrs := map[string]string{
		"echo": serveTCP(t, tcpListen(t), lineEcho("tcp-echo ")),
		"term": serveTCP(t, tcpListen(t), lineEcho("behind-tls ")),
		"pp": serveTCP(t, tcpListen(t), func(c net.Conn) {
			r := bufio.NewReader(c)
			h, err := proxyproto.Read(r)
			if err != nil {
				io.WriteString(c, "error "+err.Error()+"\n")
				return
			}
			if _, err := r.ReadString('\n'); err == nil {
				io.WriteString(c, "client "+h.Source.String()+"\n")
			}
		}),
	}
	for _, name := range []string{"a.test", "b.test"} {
		ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{selfSigned(t, name)}})
		if err != nil {
			t.Fatal(err)
		}
		addrs["tls-"+name[:1]] = serveTCP(t, ln, lineEcho("backend "+name+" "))
	}
	uc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { uc.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := uc.ReadFrom(buf)
			if err != nil {
				return
			}
			uc.WriteTo(append([]byte("udp-echo "), buf[:n]...), from)
		}
	}()
	addrs["udp"] = uc.LocalAddr().String()
	webs := map[string]string{}
	for _, name := range []string{"web", "gogs", "aaa"} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, name) }))
		t.Cleanup(srv.Close)
		webs[name] = srv.URL
	}

	p := strconv.Itoa
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	services := []builder.Service{
		svc("echo", "edge.tcp.e.port", "7", "edge.tcp.e.entrypoint", p(echoPort),
			"edge.udp.e.port", "7", "edge.udp.e.entrypoint", p(udpPort)),
		svc("tls-a", "edge.tcp.t.port", "443", "edge.tcp.t.sni", "a.test"),
		svc("tls-b", "traefik.tcp.routers.r.rule", "HostSNI(`b.test`)", "traefik.tcp.routers.r.entrypoints", "websecure",
			"traefik.tcp.routers.r.tls.passthrough", "true", "traefik.tcp.services.s.loadbalancer.server.port", "443"),
		svc("term", "edge.tcp.x.port", "1", "edge.tcp.x.entrypoint", builder.TCPEntryPoint(termPort), "edge.tcp.x.tls", "terminate"),
		svc("pp", "edge.tcp.x.port", "1", "edge.tcp.x.entrypoint", p(ppPort), "edge.tcp.x.proxy-protocol", "2"),
		svc("web", "edge.host", "c.test", "edge.port", "80", "edge.tls", "true", "edge.redirect-https", "false"),
		svc("gogs", "edge.host", "gogs.test", "edge.port", "3000"),
		// Later, with a catch-all and a huge priority.
		svc("aaa", "traefik.http.routers.all.rule", "HostRegexp(`.+`)", "traefik.http.routers.all.priority", "100000",
			"traefik.http.services.s.loadbalancer.server.port", "80"),
		// Later, wanting the echo port and tls-a's name.
		svc("zzz", "edge.tcp.x.port", "1", "edge.tcp.x.entrypoint", p(echoPort), "edge.tcp.y.port", "1", "edge.tcp.y.sni", "a.test",
			"edge.udp.u.port", "1", "edge.udp.u.entrypoint", p(udpPort)),
	}
	for i := range services {
		services[i].CreatedAt = t0.Add(time.Duration(i) * time.Minute)
	}
	opts := builder.Options{
		TCPPorts: []int{echoPort, termPort, ppPort}, UDPPorts: []int{udpPort},
		BackendAddress: func(service string, port int) string { return addrs[service] },
		BackendURL:     func(service, scheme string, port int) string { return webs[service] },
	}
	table, diags := builder.Build(services, opts)
	for i := range table.UDP { // echo's UDP port: the UDP echo
		table.UDP[i].Address = addrs["udp"]
	}
	if len(table.TCP) != 5 || len(table.UDP) != 1 || len(table.Routes) != 3 {
		t.Fatalf("table: %d TCP, %d UDP, %d HTTP routes; diagnostics:\n%v", len(table.TCP), len(table.UDP), len(table.Routes), diags)
	}
	refused := 0
	for _, d := range diags {
		if d.Service == "zzz" && d.Skipped {
			refused++
		}
	}
	if refused != 3 || len(diags) != 3 {
		t.Fatalf("want zzz's three routes refused, got %v", diags)
	}
	start := time.Now()
	if _, err := out.Write(table); err != nil {
		t.Fatal(err)
	}
	echoAddr := "127.0.0.1:" + p(echoPort)
	eventually(t, "TCP echo through Traefik", "tcp-echo hello", func() (string, error) {
		got, _, err := ask(echoAddr, "hello", nil)
		return got, err
	})
	t.Logf("TCP route up %s after the write", time.Since(start).Round(time.Millisecond))
	eventually(t, "UDP echo through Traefik", "udp-echo ping", func() (string, error) {
		return askUDP("127.0.0.1:"+p(udpPort), "ping")
	})
	for _, name := range []string{"a.test", "b.test"} {
		eventually(t, "TLS passthrough by SNI "+name, "backend "+name+" hi", func() (string, error) {
			got, _, err := ask(tr.HTTPS, "hi", &tls.Config{ServerName: name, InsecureSkipVerify: true})
			return got, err
		})
		// Passthrough: the client sees the backend's own certificate.
		c, err := tls.Dial("tcp", tr.HTTPS, &tls.Config{ServerName: name, InsecureSkipVerify: true})
		if err != nil {
			t.Fatal(err)
		}
		if cn := c.ConnectionState().PeerCertificates[0].Subject.CommonName; cn != name {
			t.Errorf("SNI %s: certificate for %q, want the backend's own", name, cn)
		}
		closePolitely(c)
	}
	eventually(t, "TLS terminated by Traefik", "behind-tls x", func() (string, error) {
		got, _, err := ask("127.0.0.1:"+p(termPort), "x", &tls.Config{ServerName: "anything.test", InsecureSkipVerify: true})
		return got, err
	})
	eventually(t, "PROXY protocol v2 carries the client's address", "ok", func() (string, error) {
		got, local, err := ask("127.0.0.1:"+p(ppPort), "who", nil)
		if err != nil {
			return got, err
		}
		if got != "client "+local.String() {
			return got + " (client is " + local.String() + ")", nil
		}
		return "ok", nil
	})
	// HTTP beside the SNI routes on websecure, and host ownership against a
	// catch-all with priority 100000.
	c := tr.Client()
	for url, want := range map[string]string{"https://c.test/": "web", "http://gogs.test/": "gogs", "http://other.test/": "aaa"} {
		eventually(t, "GET "+url, want, func() (string, error) {
			code, body, _ := status(c, url)
			if code != 200 {
				return fmt.Sprint(code, " ", body), nil
			}
			return body, nil
		})
	}
	for _, l := range tr.Errors() {
		t.Errorf("Traefik logged an error: %s", l)
	}
}

// TestTraefikForwardsClientAddress: an HTTP route's backend learns the
// client's address from X-Forwarded-For and X-Real-Ip, which Traefik sets
// itself; a client cannot forge them (Traefik trusts no forwarded headers
// from clients unless its entry point is told to).
func TestTraefikForwardsClientAddress(t *testing.T) {
	dir := t.TempDir()
	out, err := sink.NewFile(sink.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	tr := traefiktest.Start(t, dir)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "xff=%s real=%s", r.Header.Get("X-Forwarded-For"), r.Header.Get("X-Real-Ip"))
	}))
	t.Cleanup(srv.Close)
	table, _ := builder.Build([]builder.Service{svc("app", "edge.host", "app.test", "edge.port", "80")},
		builder.Options{BackendURL: func(string, string, int) string { return srv.URL }})
	if _, err := out.Write(table); err != nil {
		t.Fatal(err)
	}
	c := tr.Client()
	until(t, c, "http://app.test/", 200, time.Now())
	req, _ := http.NewRequest("GET", "http://app.test/", nil)
	req.Header.Set("X-Forwarded-For", "203.0.113.66")
	req.Header.Set("X-Real-Ip", "203.0.113.66")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if got, want := string(body), "xff=127.0.0.1 real=127.0.0.1"; got != want {
		t.Fatalf("backend saw %q, want %q (the client's own address, not the forged one)", got, want)
	}
}
