package edge_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/moby/moby/api/types/swarm"
	"github.com/sirupsen/logrus"

	"github.com/homeswarm/homeswarm/edge"
	"github.com/homeswarm/homeswarm/edge/builder"
	"github.com/homeswarm/homeswarm/edge/sink"
	"github.com/homeswarm/homeswarm/edge/traefiktest"
	"github.com/homeswarm/homeswarm/edge/watcher"
	"github.com/homeswarm/homeswarm/edge/watcher/dockertest"
)

// taskBackend is a stand-in for one task: an HTTP server on its own
// loopback address (127.0.0.N), all on the same port as Swarm tasks are.
type taskBackend struct {
	ip   string
	srv  *http.Server
	hits atomic.Int64
	last atomic.Int64 // unix nanoseconds of the last request
}

func startTask(t *testing.T, ip string, port int) *taskBackend {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
	if err != nil {
		t.Skipf("cannot listen on %s:%d (loopback aliases): %v", ip, port, err)
	}
	b := &taskBackend{ip: ip}
	b.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Host == "web1.test" { // not Traefik's health checks
			b.hits.Add(1)
			b.last.Store(time.Now().UnixNano())
		}
		io.WriteString(w, ip)
	})}
	// No idle connections for Traefik to reuse: a request written onto a
	// pooled connection the task closes reached it, and Traefik rightly
	// does not retry those; a refused connection is what the retry
	// middleware covers (busybox httpd, the e2e tests' web server, closes
	// every connection too).
	b.srv.SetKeepAlivesEnabled(false)
	go b.srv.Serve(ln)
	t.Cleanup(func() { b.srv.Close() })
	return b
}

// runDaemon runs edge against fake, writing to out with the default task
// poll, until the test ends.
func runDaemon(t *testing.T, fake *dockertest.Fake, out *sink.File, o builder.Options) {
	t.Helper()
	log := logrus.New()
	log.SetOutput(io.Discard)
	d, err := edge.New(edge.Options{Docker: fake, Sink: out, Log: logrus.NewEntry(log), TaskPoll: watcher.DefaultTaskPoll, Build: o})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run = %v", err)
		}
	})
}

// TestTraefikBalancesTasks runs the daemon against a fake Swarm whose tasks
// are local servers, and a real Traefik: Traefik balances over the running
// tasks, a task Swarm starts shutting down leaves Traefik within a task
// poll (no event: Swarm has none for tasks), and a rolling update under a
// steady request stream fails no request, even when a task dies while
// still listed (the retry middleware sends the request to another task).
func TestTraefikBalancesTasks(t *testing.T) {
	dir := t.TempDir()
	out, err := sink.NewFile(sink.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	tr := traefiktest.Start(t, dir)
	c := tr.Client()
	port := traefiktest.FreePort(t, "tcp")
	t1, t2 := startTask(t, "127.0.0.1", port), startTask(t, "127.0.0.2", port)

	run, shut := swarm.TaskStateRunning, swarm.TaskStateShutdown
	fake := dockertest.New(map[string]string{"nweb": "web"})
	fake.SetServices(dockertest.Service("web1", []string{"nweb"}, "edge.host", "web1.test", "edge.port", strconv.Itoa(port),
		"edge.healthcheck.path", "/", "edge.healthcheck.interval", "500ms", "edge.sticky", "false"))
	task := func(id string, desired swarm.TaskState, ip string) swarm.Task {
		return dockertest.Task(id, "web1", desired, run, "nweb", ip)
	}
	fake.SetTasks(task("t1", run, t1.ip), task("t2", run, t2.ip))
	const poll = watcher.DefaultTaskPoll
	runDaemon(t, fake, out, builder.Options{TaskRouting: true, Network: "web", RetryAttempts: 3})
	until(t, c, "http://web1.test/", 200, time.Now())
	for i := 0; i < 20; i++ {
		status(c, "http://web1.test/")
	}
	if t1.hits.Load() == 0 || t2.hits.Load() == 0 {
		t.Fatalf("Traefik did not balance over both tasks: %d and %d requests", t1.hits.Load(), t2.hits.Load())
	}

	// A steady request stream through the whole update.
	var (
		mu       sync.Mutex
		failed   []string
		requests int
		// abrupt: the phase where a task dies while still listed.
		abrupt                       bool
		abruptRequests, abruptFailed int
	)
	sctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for sctx.Err() == nil {
				code, body, _ := status(c, "http://web1.test/")
				mu.Lock()
				requests++
				if code != 200 {
					failed = append(failed, fmt.Sprintf("%d %q", code, body))
					if abrupt {
						abruptFailed++
					}
				}
				if abrupt {
					abruptRequests++
				}
				mu.Unlock()
				time.Sleep(2 * time.Millisecond)
			}
		}()
	}

	// Swarm shuts t1 down and starts t3 (stop-first, as a default update):
	// t1 leaves Traefik at once, while it still runs its stop grace period.
	marked := time.Now()
	fake.SetTasks(task("t1", shut, t1.ip), task("t2", run, t2.ip))
	deadline := time.Now().Add(3 * time.Second)
	var gone time.Duration
	for {
		time.Sleep(10 * time.Millisecond)
		if last := time.Unix(0, t1.last.Load()); time.Since(last) > 300*time.Millisecond {
			gone = last.Sub(marked)
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("Traefik still sends requests to a task Swarm shuts down")
		}
	}
	t1.srv.Close()
	t3 := startTask(t, "127.0.0.3", port)
	fake.SetTasks(task("t2", run, t2.ip), task("t3", run, t3.ip))
	for dl := time.Now().Add(3 * time.Second); t3.hits.Load() == 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(dl) {
			t.Fatal("the new task t3 got no request within 3 s")
		}
	}

	time.Sleep(300 * time.Millisecond)
	mu.Lock()
	graceful, gracefulFailed := requests, failed
	abrupt = true
	mu.Unlock()

	// t2 dies abruptly while still listed (a server that exits at once on
	// SIGTERM, before the next task poll): the retry middleware sends its
	// requests to t3, mostly; Traefik's round robin may pick the dead task
	// for every attempt of a request, hence the recommended stop delay.
	t2.srv.Close()
	time.Sleep(500 * time.Millisecond)
	fake.SetTasks(task("t3", run, t3.ip))
	time.Sleep(300 * time.Millisecond)
	stop()
	wg.Wait()
	t.Logf("task shut down → its last request through Traefik %v later (task poll %v); %d requests during the graceful update, %d failed; "+
		"then a task dying while listed: %d of %d requests failed despite the retry middleware",
		gone.Round(time.Millisecond), poll, graceful, len(gracefulFailed), abruptFailed, abruptRequests)
	if len(gracefulFailed) > 0 {
		t.Errorf("%d of %d requests failed during the update: %v", len(gracefulFailed), graceful, gracefulFailed[:min(len(gracefulFailed), 10)])
	}
	if abruptFailed*10 > abruptRequests {
		t.Errorf("%d of %d requests failed when a task died while listed: the retry middleware does not work", abruptFailed, abruptRequests)
	}
	if gone > time.Second {
		t.Errorf("a task Swarm shuts down left Traefik after %v, want < 1 s", gone)
	}
	if errs := tr.Errors(); len(errs) > 0 {
		t.Errorf("Traefik reported errors on edge's file: %s", strings.Join(errs, "\n"))
	}

	// No running task: Traefik answers 503, at once.
	fake.SetTasks()
	until(t, c, "http://web1.test/", 503, time.Now())
}

// l4Task is a stand-in for one task of a TCP and UDP service: a line echo
// and a datagram echo on its own loopback address, both answering with
// that address first, on the same ports as every other task.
type l4Task struct {
	ip        string
	tcp       net.Listener
	udp       net.PacketConn
	last      atomic.Int64 // unix nanoseconds of the last connection
	tcpCount  atomic.Int64
	datagrams atomic.Int64
}

func startL4Task(t *testing.T, ip string, tcpPort, udpPort int) *l4Task {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(tcpPort)))
	if err != nil {
		t.Skipf("cannot listen on %s:%d (loopback aliases): %v", ip, tcpPort, err)
	}
	uc, err := net.ListenPacket("udp", net.JoinHostPort(ip, strconv.Itoa(udpPort)))
	if err != nil {
		t.Fatal(err)
	}
	k := &l4Task{ip: ip, tcp: ln, udp: uc}
	serveTCP(t, ln, func(c net.Conn) {
		k.tcpCount.Add(1)
		k.last.Store(time.Now().UnixNano())
		lineEcho(ip + " ")(c)
	})
	t.Cleanup(func() { uc.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := uc.ReadFrom(buf)
			if err != nil {
				return
			}
			k.datagrams.Add(1)
			uc.WriteTo(append([]byte(ip+" "), buf[:n]...), from)
		}
	}()
	return k
}

// udpAsk sends msg on c and returns the answer, or an error after 300 ms.
func udpAsk(c net.Conn, msg string) (string, error) {
	c.SetDeadline(time.Now().Add(300 * time.Millisecond))
	if _, err := c.Write([]byte(msg)); err != nil {
		return "", err
	}
	buf := make([]byte, 1500)
	n, err := c.Read(buf)
	return string(buf[:n]), err
}

// TestTraefikBalancesTCPAndUDPTasks: TCP and UDP routes balance over the
// running tasks like HTTP routes, from the same task list: both tasks get
// connections and datagrams; a task Swarm starts shutting down gets no
// new connection within a task poll while one already established keeps
// working (the task's stop grace period is its to drain); with no running
// task the port refuses service without disturbing other routes.
func TestTraefikBalancesTCPAndUDPTasks(t *testing.T) {
	dir := t.TempDir()
	out, err := sink.NewFile(sink.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	pubTCP, pubUDP := traefiktest.FreePort(t, "tcp"), traefiktest.FreePort(t, "udp")
	tr := traefiktest.Start(t, dir,
		fmt.Sprintf("--entryPoints.%s.address=127.0.0.1:%d/tcp", builder.TCPEntryPoint(pubTCP), pubTCP),
		fmt.Sprintf("--entryPoints.%s.address=127.0.0.1:%d/udp", builder.UDPEntryPoint(pubUDP), pubUDP))
	tcpPort, udpPort := traefiktest.FreePort(t, "tcp"), traefiktest.FreePort(t, "udp")
	t1, t2 := startL4Task(t, "127.0.0.1", tcpPort, udpPort), startL4Task(t, "127.0.0.2", tcpPort, udpPort)

	run, shut := swarm.TaskStateRunning, swarm.TaskStateShutdown
	fake := dockertest.New(map[string]string{"nweb": "web"})
	p := strconv.Itoa
	fake.SetServices(dockertest.Service("voice", []string{"nweb"},
		"edge.tcp.c.port", p(tcpPort), "edge.tcp.c.entrypoint", p(pubTCP),
		"edge.udp.v.port", p(udpPort), "edge.udp.v.entrypoint", p(pubUDP)))
	task := func(id string, desired swarm.TaskState, ip string) swarm.Task {
		return dockertest.Task(id, "voice", desired, run, "nweb", ip)
	}
	fake.SetTasks(task("t1", run, t1.ip), task("t2", run, t2.ip))
	runDaemon(t, fake, out, builder.Options{TaskRouting: true, Network: "web",
		TCPPorts: []int{pubTCP}, UDPPorts: []int{pubUDP}})

	tcpAddr, udpAddr := "127.0.0.1:"+p(pubTCP), "127.0.0.1:"+p(pubUDP)
	// answers asks n times over new connections (TCP) or new sockets (UDP:
	// Traefik keeps a session per client address) and counts the tasks
	// that answered.
	answers := func(udp bool, n int) map[string]int {
		got := map[string]int{}
		for i := 0; i < n; i++ {
			var (
				a   string
				err error
			)
			if udp {
				a, err = askUDP(udpAddr, "hi")
			} else {
				a, _, err = ask(tcpAddr, "hi", nil)
			}
			if err != nil {
				a = "error"
			}
			got[strings.TrimSuffix(a, " hi")]++
		}
		return got
	}
	eventually(t, "TCP route up", "127.0.0.1 hi", func() (string, error) {
		a, _, err := ask(tcpAddr, "hi", nil)
		if strings.HasPrefix(a, "127.0.0.2") {
			a = "127.0.0.1 hi"
		}
		return a, err
	})
	for _, udp := range []bool{false, true} {
		if got := answers(udp, 12); got[t1.ip] == 0 || got[t2.ip] == 0 || got["error"] > 0 {
			t.Fatalf("udp=%v: answers by task %v, want both tasks and no error", udp, got)
		}
	}

	// A connection established to t1 before Swarm marks it.
	held, err := net.Dial("tcp", tcpAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	hr := bufio.NewReader(held)
	heldTask := ""
	for heldTask != t1.ip { // round robin: until the held connection is t1's
		held.Close()
		if held, err = net.Dial("tcp", tcpAddr); err != nil {
			t.Fatal(err)
		}
		hr = bufio.NewReader(held)
		held.SetDeadline(time.Now().Add(2 * time.Second))
		io.WriteString(held, "first\n")
		l, err := hr.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		heldTask = strings.TrimSuffix(l, " first\n")
	}

	// And a UDP session (Traefik's, per client address) held by t1.
	var heldUDP net.Conn
	for i := 0; ; i++ {
		if heldUDP, err = net.Dial("udp", udpAddr); err != nil {
			t.Fatal(err)
		}
		if a, err := udpAsk(heldUDP, "first"); err == nil && a == t1.ip+" first" {
			break
		}
		heldUDP.Close()
		if i == 20 {
			t.Fatal("no UDP session reached t1")
		}
	}
	defer heldUDP.Close()

	marked := time.Now()
	fake.SetTasks(task("t1", shut, t1.ip), task("t2", run, t2.ip))
	var gone time.Duration
	for deadline := time.Now().Add(3 * time.Second); ; {
		before := t1.tcpCount.Load()
		got := answers(false, 4)
		if got[t2.ip] == 4 && t1.tcpCount.Load() == before {
			gone = time.Since(marked)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("new connections still reach a task Swarm shuts down: %v", got)
		}
	}
	if got := answers(true, 6); got[t2.ip] != 6 {
		t.Errorf("UDP after t1 left: answers by task %v, want t2 only", got)
	}
	held.SetDeadline(time.Now().Add(2 * time.Second))
	io.WriteString(held, "still\n")
	if l, err := hr.ReadString('\n'); err != nil || l != t1.ip+" still\n" {
		t.Errorf("the connection established to t1 before it left Traefik: %q, %v; want it kept until the task closes it", l, err)
	}
	// UDP has no connection, but Traefik's session for a client address
	// keeps its task until it idles out (3 s by default).
	if a, err := udpAsk(heldUDP, "still"); err != nil || a != t1.ip+" still" {
		t.Errorf("a UDP session held by t1 before it left Traefik: %q, %v; want it kept", a, err)
	}
	t.Logf("task shut down → new TCP connections no longer reach it %v later (task poll %v); its established connection and UDP session kept working",
		gone.Round(time.Millisecond), watcher.DefaultTaskPoll)
	if gone > time.Second {
		t.Errorf("a task Swarm shuts down left Traefik's TCP service after %v, want < 1 s", gone)
	}

	// No running task: connections get no answer, datagrams none either,
	// and Traefik keeps the rest of edge's file.
	fake.SetTasks()
	eventually(t, "TCP with no running task", "closed", func() (string, error) {
		if _, _, err := ask(tcpAddr, "hi", nil); err != nil {
			return "closed", nil
		}
		return "answered", nil
	})
	if a, err := askUDP(udpAddr, "hi"); err == nil {
		t.Errorf("UDP with no running task answered %q", a)
	}
	fake.SetTasks(task("t2", run, t2.ip))
	eventually(t, "TCP back with a task", t2.ip+" hi", func() (string, error) {
		a, _, err := ask(tcpAddr, "hi", nil)
		return a, err
	})
	// Traefik took every file (an empty server list is valid
	// configuration); its only errors are the connections it had no task for.
	for _, l := range tr.Errors() {
		if !strings.Contains(l, "no servers in the pool") {
			t.Errorf("Traefik logged an error: %s", l)
		}
	}
}
