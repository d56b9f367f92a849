//go:build e2e

package e2e

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/homeswarm/homeswarm/internal/netns"
)

// TestEdgeACME is HTTPS as the seed runs it, with the topology's ACME
// server (`topo.sh acme-up`: Debian's pebble on the "internet",
// 203.0.113.30) standing in for Let's Encrypt: Traefik on the VPS has an
// ACME resolver pointed at it, its store (acme.json) on a syncvol volume; a
// service labelled with a host and the resolver gets a certificate, with
// HTTP-01 validated for real (Pebble resolves the name through its own DNS
// to the VPS's public address and fetches the token there, from the
// "internet"); plain HTTP redirects to HTTPS; a client on the "internet"
// that trusts only Pebble's issuing root verifies the chain; a name
// Pebble's DNS does not know gets no certificate; the store
// survives a restart of Traefik's task and a move of it to another node:
// the same certificate is served and Pebble issues no other.
func TestEdgeACME(t *testing.T) {
	const (
		host     = "blog.example.org"
		resolver = "pebble"
	)
	// The same name every run: a volume removed everywhere (the cleanup
	// below) is created again under its name on the next run.
	vol := "e2e-acme"
	// The "internet": the ACME server's own namespace.
	internet := &netns.Dialer{Path: netns.Path(topoPrefix + "-acme")}
	internet.Timeout = 2 * time.Second

	// The ACME store: one syncvol volume, one Traefik (acme.json is not
	// safe with several writers, traefik/traefik#3594). Removed at the
	// end, after the services (cleanups run last-registered first).
	t.Cleanup(func() {
		eventually(t, 30*time.Second, "volume "+vol+" removed", func() error {
			_, err := dk("vps", "volume", "rm", vol)
			return err
		})
		for _, n := range []string{"home1", "home2", "home3"} {
			dk(n, "volume", "rm", vol)
		}
	})
	edgeImages(t)
	// Traefik moves to home1 below.
	cmd := exec.Command(filepath.Join(repo, "scripts/images.sh"), "home1")
	cmd.Env = append(os.Environ(), "IMAGES=traefik")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("images: %v: %s", err, out)
	}
	o := edgeOpts()
	// replication=files: a snapshot volume cannot be mounted on the VPS
	// today (its snapshot layer dials each home node's first advertised
	// address, the LAN one, which the VPS has no route to).
	acmeDir, root := acmeTraefik(t, &o, resolver, "/acme/acme.json", []string{host},
		"--mount", "type=volume,source="+vol+",target=/acme,volume-driver=syncvol,volume-opt=remove=everywhere,volume-opt=replication=files")
	runEdgeStack(t, o)

	issued := func() int {
		b, _ := os.ReadFile(filepath.Join(acmeDir, "pebble.log"))
		return strings.Count(string(b), "Issued certificate serial")
	}
	before := issued()

	// Labels only: nobody touches Traefik.
	webService(t, "e2e-blog", "blog", "--label", "edge.host="+host, "--label", "edge.port=8080",
		"--label", "edge.certresolver="+resolver)
	start := time.Now()
	var serial string
	eventually(t, 90*time.Second, "a certificate for "+host+" from Pebble, verified", func() (err error) {
		serial, err = verifiedGet(internet, vpsAddr, host, root, "blog")
		return err
	})
	t.Logf("https://%s: a chain to Pebble's root, verified from the \"internet\", %.1f s after `service create` returned (task start, HTTP-01 validation and issuance); serial %s",
		host, time.Since(start).Seconds(), serial)
	if n := issued() - before; n != 1 {
		t.Errorf("Pebble issued %d certificates for one service, want 1", n)
	}
	// HTTP-01 validated for real: Pebble fetched the token by the name.
	if b, _ := os.ReadFile(filepath.Join(acmeDir, "pebble.log")); !strings.Contains(string(b), "Attempting to validate w/ HTTP: http://"+host+":80/.well-known/acme-challenge/") ||
		strings.Contains(string(b), "VA always returns valid") {
		t.Errorf("Pebble's log shows no HTTP-01 validation of %s (or validation is off)", host)
	}

	// Plain HTTP: a permanent redirect to HTTPS, from the "internet".
	plain := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: internet.DialContext},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	req, _ := http.NewRequest("GET", "http://"+vpsAddr+"/x?y=1", nil)
	req.Host = host
	resp, err := plain.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if loc := resp.Header.Get("Location"); (resp.StatusCode != http.StatusMovedPermanently && resp.StatusCode != http.StatusPermanentRedirect) ||
		loc != "https://"+host+"/x?y=1" {
		t.Errorf("http://%s/x?y=1: %d Location %q, want a permanent redirect to https://%s/x?y=1", host, resp.StatusCode, loc, host)
	}

	// Validation is real: a name Pebble's DNS does not know gets no
	// certificate (the order fails; Traefik keeps its default one).
	traefik := o.prefix + "traefik"
	const nodns = "nodns.example.org"
	webService(t, "e2e-nodns", "nodns", "--label", "edge.host="+nodns, "--label", "edge.port=8080",
		"--label", "edge.certresolver="+resolver)
	var failure string
	eventually(t, 60*time.Second, "Traefik reporting the failed order for "+nodns, func() error {
		for _, l := range strings.Split(serviceLogs("vps", traefik), "\n") {
			if strings.Contains(l, "Unable to obtain ACME certificate") && strings.Contains(l, nodns) {
				failure = l
				return nil
			}
		}
		return fmt.Errorf("not in Traefik's log yet")
	})
	if i := strings.Index(failure, "urn:ietf:params:acme:error:"); i >= 0 {
		failure = failure[i:min(len(failure), i+200)]
	}
	t.Logf("%s (not in Pebble's DNS): Traefik got no certificate: %s…", nodns, failure)
	if _, err := verifiedGet(internet, vpsAddr, nodns, root, "nodns"); err == nil {
		t.Errorf("%s, which Pebble cannot validate, is served with a certificate from Pebble", nodns)
	}
	removeService("e2e-nodns")

	// A restart of Traefik's task (a new container, same node): the store
	// is read back, the same certificate served, nothing ordered.
	oldTask, _ := dk("vps", "service", "ps", "-q", "--filter", "desired-state=running", traefik)
	start = time.Now()
	mustDk(t, "vps", "service", "update", "-q", "--force", "--detach=false", traefik)
	if task, _ := dk("vps", "service", "ps", "-q", "--filter", "desired-state=running", traefik); task == oldTask {
		t.Fatalf("Traefik's task %s was not replaced", task)
	}
	var again string
	eventually(t, 60*time.Second, "the restarted Traefik serving "+host, func() (err error) {
		again, err = verifiedGet(internet, vpsAddr, host, root, "blog")
		return err
	})
	t.Logf("Traefik restarted: serving %s again %.1f s after the update began, serial %s", host, time.Since(start).Seconds(), again)
	if again != serial {
		t.Errorf("after a restart Traefik serves serial %s, before %s: the store was not kept", again, serial)
	}

	// A move of Traefik's task to another node (home1): the volume
	// follows, the same certificate is served there (checked from the
	// home LAN: home1 is behind the NAT), nothing ordered. (Its routes are
	// there because every node of the topology shares this machine's file
	// system; what this checks is the store.)
	start = time.Now()
	mustDk(t, "vps", "service", "update", "-q", "--detach=false", "--constraint-rm", "node.role==manager",
		"--constraint-add", "node.hostname==home1", traefik)
	node, _ := runningTask(t, traefik, 60*time.Second)
	if node != "home1" {
		t.Fatalf("Traefik runs on %s, want home1", node)
	}
	lan := &netns.Dialer{Path: netns.Path(topoPrefix + "-home2")}
	lan.Timeout = 2 * time.Second
	var moved string
	eventually(t, 60*time.Second, "Traefik on home1 serving "+host, func() (err error) {
		moved, err = verifiedGet(lan, "192.168.50.11", host, root, "blog")
		return err
	})
	t.Logf("Traefik moved to home1: serving %s there %.1f s after the update began, serial %s", host, time.Since(start).Seconds(), moved)
	if moved != serial {
		t.Errorf("after the move Traefik serves serial %s, before %s: the store did not follow", moved, serial)
	}
	if n := issued() - before; n != 1 {
		t.Errorf("Pebble issued %d certificates in all, want 1 (the store was not reused)", n)
	}
}

// verifiedGet sends GET / to addr:443 as host, through d, trusting only
// root, and checks the answer is want; it returns the serial of the
// server's certificate.
func verifiedGet(d *netns.Dialer, addr, host string, root *x509.Certificate, want string) (string, error) {
	c := httpsClient(d, addr, root, 5*time.Second)
	resp, err := c.Get("https://" + host + "/")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK || strings.TrimSpace(string(b)) != want {
		return "", fmt.Errorf("status %d %q, want 200 %q", resp.StatusCode, b, want)
	}
	// Go verified leaf → Pebble's intermediate → the root; say so.
	chains := resp.TLS.VerifiedChains
	if len(chains) == 0 || len(chains[0]) < 3 || !chains[0][len(chains[0])-1].Equal(root) {
		return "", fmt.Errorf("verified chains %v: want leaf, intermediate, Pebble's root", chains)
	}
	return resp.TLS.PeerCertificates[0].SerialNumber.Text(16), nil
}

// serviceLogs returns what service's tasks wrote, stdout and stderr (Traefik
// logs to stderr), as node's engine has it.
func serviceLogs(node, service string) string {
	out, _ := exec.Command(filepath.Join(repo, "scripts/topo.sh"), "docker", node, "service", "logs", "--raw", service).CombinedOutput()
	return string(out)
}

// acmeTraefik points o's Traefik at the topology's ACME server (`topo.sh
// acme-up`: Debian's pebble on the "internet") with a resolver named
// resolver keeping its certificates at storage in Traefik's container
// (flags add what that needs, such as a volume), an HTTPS entry point on
// :443 and HTTP-01 on :80; Pebble's DNS resolves hosts to the VPS. It
// returns the ACME server's directory on the host and Pebble's issuing
// root, from its management interface.
func acmeTraefik(t *testing.T, o *edgeStackOpts, resolver, storage string, hosts []string, flags ...string) (string, *x509.Certificate) {
	t.Helper()
	const caFile = "/etc/acme-api-ca.pem"
	dir, err := topo("acme-up")
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hosts {
		if _, err := topo("acme-host", h, vpsAddr); err != nil {
			t.Fatal(err)
		}
	}
	// over TLS with the topology's ACME API CA, as Traefik's ACME client
	// talks to Pebble
	rootPEM, err := topo("acme-root")
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode([]byte(rootPEM))
	if block == nil {
		t.Fatalf("Pebble's /roots/0 is no PEM: %q", rootPEM)
	}
	root, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatalf("Pebble's /roots/0: %v", err)
	}
	acmeDir := filepath.Join(topoRoot, "acme")
	o.traefikFlags = append(append([]string{
		"--publish", "mode=host,published=443,target=443",
		// Traefik's ACME client (lego) trusts the ACME server's TLS
		// certificate through this file.
		"--mount", "type=bind,source=" + filepath.Join(acmeDir, "ca.pem") + ",target=" + caFile + ",readonly",
		"--env", "LEGO_CA_CERTIFICATES=" + caFile,
	}, flags...), o.traefikFlags...)
	o.traefikArgs = append([]string{
		"--entryPoints.websecure.address=:443", "--log.noColor=true",
		"--certificatesResolvers." + resolver + ".acme.caServer=" + dir,
		"--certificatesResolvers." + resolver + ".acme.email=admin@example.org",
		"--certificatesResolvers." + resolver + ".acme.storage=" + storage,
		"--certificatesResolvers." + resolver + ".acme.httpChallenge.entryPoint=web",
	}, o.traefikArgs...)
	return acmeDir, root
}
