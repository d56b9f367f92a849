//go:build e2e

package e2e

import (
	"fmt"
	"html"
	"net/http"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/homeswarm/homeswarm/internal/netns"
)

// TestWordPress is the seed's blog with real software (issue 13), over
// HTTPS with a certificate from the topology's ACME server:
// examples/wordpress-stack.yml, deployed with `docker stack deploy`, runs
// Debian's WordPress (nginx + php-fpm, scripts/appimages.sh) and MariaDB
// (scripts/dbimages.sh) at home, each on a syncvol volume, on a meshnet
// network of their own, reached through Traefik on the VPS (edge routes it
// by its labels) from the topology's "internet". WordPress is installed
// through its own installer (wp-admin/install.php) and a post published
// through its own XML-RPC interface, both through Traefik; then
//
//   - drain: the nodes of WordPress and MariaDB are drained (both land on
//     the home node left); the post is served again, from the new node;
//
//   - crash: the engine of the node they moved to is SIGKILLed; both start
//     elsewhere, the post is served again and a second post is published
//     (the database is writable after its crash recovery);
//
//   - upgrade: both plugins are upgraded in place (docker plugin upgrade,
//     scripts/upgrade-plugin.sh, from the topology's registry) on the
//     nodes running the stack: the same containers go on, both posts are
//     served and a third is published.
//
// Throughout, a reader asks for the first post every 200 ms; no step may
// leave it failing for longer than the step's move (or upgrade) took,
// give or take routeGrace.
func TestWordPress(t *testing.T) {
	homes := []string{"home1", "home2", "home3"}
	importDebImages(t, "appimages", []string{"wordpress"}, homes...)
	importDebImages(t, "dbimages", []string{"mariadb"}, homes...)
	const host, resolver = "blog.example.org", "pebble"
	o := edgeStackOpts{prefix: "wp-", routes: "wp-routes", network: "wp-web",
		netArgs: []string{"-d", meshnetDriver}, netRemove: 60 * time.Second, edgeListen: "127.0.0.1:8087",
		traefikLog: "WARN", timeout: 30 * time.Second, traefikUp: 90 * time.Second, probe: "nothing.wordpress.test"}
	// HTTPS as the seed runs it: Traefik's ACME resolver, the topology's
	// ACME server standing in for Let's Encrypt (the store is Traefik's
	// own here: Traefik does not move in this test; TestEdgeACME moves it).
	_, root := acmeTraefik(t, &o, resolver, "/tmp/acme.json", []string{host})
	s := startWebStack(t, o)
	// Every request below is HTTPS and trusts only Pebble's root: each one
	// that succeeds verified the certificate chain for the blog's name.
	s.client, s.https = httpsClient(&netns.Dialer{Path: netns.Path(topoPrefix + "-vps")}, vpsAddr, root, 30*time.Second), true
	stack := "wp" + runID
	wp, db := stack+"_wordpress", stack+"_db"
	t.Cleanup(func() {
		// the stack's volumes (docker stack rm leaves them; this runs after it)
		for _, n := range homes {
			dk(n, "volume", "rm", stack+"_wp-content", stack+"_db")
		}
	})
	deployed := time.Now()
	deployStack(t, "examples/wordpress-stack.yml", stack, []string{"WEB_NETWORK=wp-web", "BLOG_HOST=" + host,
		"BLOG_URL=https://" + host, "CERT_RESOLVER=" + resolver, "DB_PASSWORD=e2e-" + runID})
	b := &blog{s: s, host: host}

	// 1. Installed through its own installer, through Traefik.
	eventually(t, 180*time.Second, "WordPress's installer answering through Traefik", func() error {
		_, err := b.expect("GET", "/wp-admin/install.php", "", "", "weblog_title")
		return err
	})
	up := time.Since(deployed)
	form := url.Values{"weblog_title": {"The seed's blog"}, "user_name": {"admin"},
		"admin_password": {"e2e-admin-" + runID}, "admin_password2": {"e2e-admin-" + runID}, "pw_weak": {"1"},
		"admin_email": {"admin@example.org"}, "blog_public": {"0"}}
	// the installer creates the tables, commit by commit on the volume, and
	// checks its permalinks with requests to itself: a minute on a loaded
	// machine, more than a page is allowed
	slowStack := *s
	slowStack.client = httpsClient(&netns.Dialer{Path: netns.Path(topoPrefix + "-vps")}, vpsAddr, root, 180*time.Second)
	slow := &blog{s: &slowStack, host: host}
	if _, err := slow.expect("POST", "/wp-admin/install.php?step=2", "application/x-www-form-urlencoded",
		form.Encode(), "Success!"); err != nil {
		t.Fatalf("install.php step 2: %v", err)
	}
	b.user, b.password = "admin", form.Get("admin_password")
	installed := time.Since(deployed)
	// Plain HTTP is redirected to HTTPS by Traefik.
	plain := edgeStack{client: vpsClient(10 * time.Second)}
	if code, loc, err := plain.location(host, "/?p=1"); err != nil || (code != http.StatusMovedPermanently && code != http.StatusPermanentRedirect) || loc != "https://"+host+"/?p=1" {
		t.Errorf("http://%s/?p=1: %d %q %v, want a permanent redirect to https://%s/?p=1", host, code, loc, err, host)
	}

	// 2. A post published through XML-RPC, read back through Traefik.
	title := "Moved house " + runID
	id := b.publish(t, title, "The blog now lives at home, on syncvol.")
	_, link := b.waitPost(t, id, title, 10*time.Second)
	// The installer's check of pretty permalinks (a request from WordPress
	// to its own https:// address, which the image sends to its own nginx)
	// passed: /?p=ID redirects to the post's permalink.
	if strings.Contains(link, "?") {
		t.Errorf("post %d: permalink %q, want a path of its own (the installer's loopback permalink check failed?)", id, link)
	}
	nodeDB, _ := runningTask(t, db, 30*time.Second)
	nodeWP, _ := runningTask(t, wp, 30*time.Second)
	t.Logf("stack deployed: installer through Traefik after %.1f s, installed after %.1f s; post %d published, at %s; MariaDB on %s, WordPress on %s",
		up.Seconds(), installed.Seconds(), id, link, nodeDB, nodeWP)
	// From here on a reader asks for the post through Traefik every 200 ms:
	// each step below reports its longest run of failed requests, which
	// must not outlast the move itself (see judge).
	pr := startProber(t, &blog{s: &edgeStack{client: httpsClient(&netns.Dialer{Path: netns.Path(topoPrefix + "-vps")}, vpsAddr, root, 2*time.Second), https: true}, host: host}, link, title)

	// 3. Drain: the nodes of both (one or two) are drained; both move.
	drainedNodes := []string{nodeDB}
	if nodeWP != nodeDB {
		drainedNodes = append(drainedNodes, nodeWP)
	}
	drained := time.Now()
	for _, n := range drainedNodes {
		drainAndRestore(t, n)
	}
	nodeDB2, _ := waitMovedOff(t, db, drainedNodes, 180*time.Second)
	dbMoved := time.Since(drained)
	nodeWP2, _ := waitMovedOff(t, wp, drainedNodes, 180*time.Second)
	wpMoved := time.Since(drained)
	served, _ := b.waitPost(t, id, title, 120*time.Second)
	t.Logf("drain of %s: MariaDB running on %s after %.1f s, WordPress on %s after %.1f s (tasks so far: MariaDB %s, WordPress %s); post %d served through Traefik %.1f s after the drain; %s",
		strings.Join(drainedNodes, ", "), nodeDB2, dbMoved.Seconds(), nodeWP2, wpMoved.Seconds(), taskPath(db), taskPath(wp), id, served.Sub(drained).Seconds(),
		pr.judge(t, "drain", drained, max(dbMoved, wpMoved)))
	for _, n := range drainedNodes {
		mustDk(t, "vps", "node", "update", "--availability", "active", n)
	}

	// 4. Crash: the engine of MariaDB's node is killed (WordPress's too
	// when it runs there); both run elsewhere and answer.
	killed := time.Now()
	if _, err := topo("engine-stop", nodeDB2, "--kill"); err != nil {
		t.Fatal(err)
	}
	restarted := false
	restart := func() {
		if !restarted {
			restarted = true
			topo("engine-start", nodeDB2)
			allReady(t, 120*time.Second)
		}
	}
	t.Cleanup(restart)
	nodeDB3, _ := waitMovedOff(t, db, []string{nodeDB2}, 240*time.Second)
	dbMoved = time.Since(killed)
	nodeWP3, _ := waitMovedOff(t, wp, []string{nodeDB2}, 240*time.Second)
	wpMoved = time.Since(killed)
	served, _ = b.waitPost(t, id, title, 120*time.Second)
	id2 := b.publish(t, "After the crash "+runID, "Still writable.")
	b.waitPost(t, id2, "After the crash "+runID, 10*time.Second)
	t.Logf("kill of %s: MariaDB running on %s after %.1f s, WordPress on %s after %.1f s; post %d served through Traefik %.1f s after the kill; post %d published after it; %s",
		nodeDB2, nodeDB3, dbMoved.Seconds(), nodeWP3, wpMoved.Seconds(), id, served.Sub(killed).Seconds(), id2,
		pr.judge(t, "kill", killed, max(dbMoved, wpMoved)))
	restart()

	// 5. docker plugin upgrade of both plugins, in place, on the nodes that
	// run the stack, as the README's procedure says (no drain): the same
	// containers keep running, on their volumes and network, the posts are
	// there and the blog takes a new one.
	_, cDB := runningTask(t, db, 30*time.Second)
	_, cWP := runningTask(t, wp, 30*time.Second)
	tag := "wp-" + runID
	if out, err := topoEnv([]string{"VERSION=" + tag}, "push-plugins", tag); err != nil {
		t.Fatalf("push %s: %v %s", tag, err, out)
	}
	const repoRef = "203.0.113.10:5000/homeswarm"
	upNodes := []string{nodeDB3}
	if nodeWP3 != nodeDB3 {
		upNodes = append(upNodes, nodeWP3)
	}
	upgraded := time.Now()
	for _, n := range upNodes {
		for _, p := range []string{"meshnet", "syncvol"} {
			out, err := onNode(n, filepath.Join(repo, "scripts/upgrade-plugin.sh"), p, repoRef+"/"+p+":"+tag)
			if err != nil {
				t.Fatalf("upgrade-plugin.sh %s on %s: %v %s", p, n, err, out)
			}
			t.Logf("%s", out)
			if !pluginLogged(n, p, tag) {
				t.Errorf("%s on %s: no 'starting … version=%s' in the engine's log: the new build does not run", p, n, tag)
			}
		}
	}
	upgrade := time.Since(upgraded)
	served, _ = b.waitPost(t, id, title, 60*time.Second)
	b.waitPost(t, id2, "After the crash "+runID, 10*time.Second)
	id3 := b.publish(t, "After the upgrade "+runID, "The plugins are new; the blog is the same.")
	b.waitPost(t, id3, "After the upgrade "+runID, 10*time.Second)
	for svc, c := range map[string]string{db: cDB, wp: cWP} {
		if _, c2 := runningTask(t, svc, 30*time.Second); c2 != c {
			t.Errorf("after the upgrade %s runs in container %s, was %s: the task was restarted", svc, c2, c)
		}
	}
	t.Logf("docker plugin upgrade of meshnet and syncvol on %s to %s: %.1f s; post %d served %.1f s after it began, post %d published after it; same containers; %s",
		strings.Join(upNodes, ", "), tag, upgrade.Seconds(), id, served.Sub(upgraded).Seconds(), id3,
		pr.judge(t, "plugin upgrade", upgraded, upgrade))
}

// prober asks for one post through Traefik every 200 ms and records when
// requests failed.
type prober struct {
	mu    sync.Mutex
	tries []probe
	stop  chan struct{}
	done  chan struct{}
}

type probe struct {
	at time.Time
	ok bool
}

func startProber(t *testing.T, b *blog, path, title string) *prober {
	p := &prober{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			at := time.Now()
			_, err := b.expect("GET", path, "", "", html.EscapeString(title))
			p.mu.Lock()
			p.tries = append(p.tries, probe{at: at, ok: err == nil})
			p.mu.Unlock()
			select {
			case <-p.stop:
				return
			case <-tick.C:
			}
		}
	}()
	t.Cleanup(func() { close(p.stop); <-p.done })
	return p
}

// worst is the longest run of failed requests sent from since on, from
// its first failure to the next success (or the last request), and how
// many requests failed in all.
func (p *prober) worst(since time.Time) (window time.Duration, failed, total int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var first time.Time
	for _, r := range p.tries {
		if r.at.Before(since) {
			continue
		}
		total++
		if !r.ok {
			failed++
			if first.IsZero() {
				first = r.at
			}
			window = max(window, r.at.Sub(first)+200*time.Millisecond)
			continue
		}
		if !first.IsZero() {
			window = max(window, r.at.Sub(first))
			first = time.Time{}
		}
	}
	return window, failed, total
}

// routeGrace is what a run of failed requests may last beyond the move:
// edge's route update (0.35 s in bench/edge), WordPress's first answer on
// its new node, and the reader's own period and request in flight. A
// Traefik that kept routing to the old task (its Swarm provider polls
// every 15 s) would exceed it.
const routeGrace = 5 * time.Second

// judge fails t if requests sent since began failed for longer than move
// (the step's own duration: the tasks moving, or the upgrade) and
// routeGrace, and returns the figures for the log.
func (p *prober) judge(t *testing.T, step string, began time.Time, move time.Duration) string {
	t.Helper()
	w, failed, total := p.worst(began)
	if w > move+routeGrace {
		t.Errorf("%s: requests through Traefik failed for %.1f s in a row, longer than the move (%.1f s) and %v", step, w.Seconds(), move.Seconds(), routeGrace)
	}
	return fmt.Sprintf("reader: %d of %d requests failed, longest failure %.1f s (move %.1f s)", failed, total, w.Seconds(), move.Seconds())
}

// blog is WordPress reached through Traefik on the VPS by its host name.
type blog struct {
	s              *edgeStack
	host           string
	user, password string // the administrator's, once installed
}

// expect sends one request and wants a 200 whose body contains want.
func (b *blog) expect(method, path, ctype, body, want string) (string, error) {
	code, out, err := b.s.send(method, b.host, path, ctype, body)
	if err == nil && (code != http.StatusOK || !strings.Contains(out, want)) {
		err = fmt.Errorf("%s %s: status %d, want 200 with %q: %.300s", method, path, code, want, out)
	}
	return out, err
}

var xmlrpcString = regexp.MustCompile(`<string>(\d+)</string>`)

// publish publishes a post through WordPress's XML-RPC interface
// (wp.newPost, as the administrator) and returns its ID.
func (b *blog) publish(t *testing.T, title, content string) int {
	t.Helper()
	str := func(s string) string { return "<value><string>" + html.EscapeString(s) + "</string></value>" }
	member := func(k, v string) string { return "<member><name>" + k + "</name>" + str(v) + "</member>" }
	call := `<?xml version="1.0"?><methodCall><methodName>wp.newPost</methodName><params>` +
		`<param><value><int>1</int></value></param><param>` + str(b.user) + `</param><param>` + str(b.password) +
		`</param><param><value><struct>` + member("post_title", title) + member("post_content", content) +
		member("post_status", "publish") + `</struct></value></param></params></methodCall>`
	out, err := b.expect("POST", "/xmlrpc.php", "text/xml", call, "<methodResponse>")
	if err != nil {
		t.Fatalf("wp.newPost: %v", err)
	}
	m := xmlrpcString.FindStringSubmatch(out)
	if m == nil || strings.Contains(out, "<fault>") {
		t.Fatalf("wp.newPost answered %.500s", out)
	}
	var id int
	fmt.Sscan(m[1], &id)
	return id
}

// permalink is the path /?p=ID redirects to through Traefik (a page of
// the blog's own host), or /?p=ID itself when it answers without one.
func (b *blog) permalink(id int) (string, error) {
	path := fmt.Sprintf("/?p=%d", id)
	code, loc, err := b.s.location(b.host, path)
	if err != nil {
		return "", err
	}
	if code == http.StatusMovedPermanently || code == http.StatusFound {
		u, err := url.Parse(loc)
		if err != nil || u.Host != b.host {
			return "", fmt.Errorf("%s redirects to %q, not to a page of %s", path, loc, b.host)
		}
		return u.RequestURI(), nil
	}
	return path, nil
}

// waitPost polls /?p=ID through Traefik (and the permalink it redirects
// to) until the post's page shows its title and returns when it did and
// that permalink.
func (b *blog) waitPost(t *testing.T, id int, title string, d time.Duration) (time.Time, string) {
	t.Helper()
	var path string
	eventually(t, d, fmt.Sprintf("post %d served through Traefik", id), func() error {
		var err error
		if path, err = b.permalink(id); err != nil {
			return err
		}
		_, err = b.expect("GET", path, "", "", html.EscapeString(title))
		return err
	})
	return time.Now(), path
}
