// Command edge feeds Traefik's file provider with routes built from Swarm
// service labels. It is the only process that needs docker.sock; Traefik
// only reads the file edge writes. See edge/README.md.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/homeswarm/homeswarm/edge"
	"github.com/homeswarm/homeswarm/edge/builder"
	"github.com/homeswarm/homeswarm/edge/sink"
	"github.com/homeswarm/homeswarm/edge/watcher"
	"github.com/homeswarm/homeswarm/internal/settings"
)

// DefaultListen is the status server's default address: loopback only. The
// page has no authentication and shows every route; EDGE_LISTEN moves it
// (e.g. to the VPS's mesh address).
const DefaultListen = "127.0.0.1:8089"

// publicListen reports whether addr listens beyond loopback.
func publicListen(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return true
	}
	if host == "localhost" {
		return false
	}
	ip := net.ParseIP(host)
	return ip == nil || !ip.IsLoopback()
}

func env(key, def string) string {
	if v, ok := os.LookupEnv(key); ok {
		return v
	}
	return def
}

// envDurations reads EDGE_RESYNC and EDGE_DEBOUNCE, the defaults of
// -resync and -debounce. A bad value is an error naming the setting: like
// the plugins, edge does not start on a bad setting.
func envDurations(getenv func(string) string) (resync, debounce time.Duration, err error) {
	if resync, err = settings.Duration("EDGE_RESYNC", getenv("EDGE_RESYNC"), watcher.DefaultResync, 0, 0); err != nil {
		return 0, 0, err
	}
	if debounce, err = settings.Duration("EDGE_DEBOUNCE", getenv("EDGE_DEBOUNCE"), watcher.DefaultDebounce, 0, 0); err != nil {
		return 0, 0, err
	}
	return resync, debounce, nil
}

// DefaultRetry is the default of -retry: attempts of Traefik's retry
// middleware on every route.
const DefaultRetry = 3

// lbSettings reads EDGE_LB, EDGE_TASK_POLL and EDGE_RETRY, the defaults of
// -lb, -task-poll and -retry.
func lbSettings(getenv func(string) string) (lb string, poll time.Duration, retry int, err error) {
	lb = strings.ToLower(strings.TrimSpace(getenv("EDGE_LB")))
	if lb == "" {
		lb = builder.LBTasks
	}
	if err = checkLB("EDGE_LB", lb); err != nil {
		return "", 0, 0, err
	}
	if poll, err = settings.Duration("EDGE_TASK_POLL", getenv("EDGE_TASK_POLL"), watcher.DefaultTaskPoll, 0, 0); err != nil {
		return "", 0, 0, err
	}
	retry = DefaultRetry
	if v := strings.TrimSpace(getenv("EDGE_RETRY")); v != "" {
		if retry, err = strconv.Atoi(v); err != nil || retry < 0 || retry > 10 {
			return "", 0, 0, fmt.Errorf("%w: EDGE_RETRY: %q is not a number of attempts, 0-10", settings.ErrInvalid, v)
		}
	}
	return lb, poll, retry, nil
}

func checkLB(setting, v string) error {
	if v != builder.LBTasks && v != builder.LBVIP {
		return fmt.Errorf("%w: %s: %q: use tasks (Traefik balances over the running tasks) or vip (the service's Swarm VIP)", settings.ErrInvalid, setting, v)
	}
	return nil
}

func main() {
	defResync, defDebounce, err := envDurations(os.Getenv)
	var (
		defLB    string
		defPoll  time.Duration
		defRetry int
	)
	if err == nil {
		defLB, defPoll, defRetry, err = lbSettings(os.Getenv)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "edge:", err)
		os.Exit(1)
	}
	var build builder.Options
	var (
		dockerHost = flag.String("docker-host", env("DOCKER_HOST", ""), "Docker API `address` (env DOCKER_HOST; default unix:///var/run/docker.sock)")
		dir        = flag.String("dir", env("EDGE_DIR", "/routes"), "`directory` Traefik's file provider watches (env EDGE_DIR)")
		file       = flag.String("file", env("EDGE_FILE", sink.DefaultFile), "file `name` edge owns in -dir; .yml or .yaml (env EDGE_FILE)")
		listen     = flag.String("listen", env("EDGE_LISTEN", DefaultListen), "status server `address`; empty disables it; it has no authentication, so keep it on loopback or the mesh (env EDGE_LISTEN)")
		network    = flag.String("network", env("EDGE_NETWORK", ""), "Swarm `network` Traefik shares with the services; services not attached are reported and skipped (env EDGE_NETWORK)")
		resolver   = flag.String("cert-resolver", env("EDGE_CERT_RESOLVER", ""), "Traefik ACME `resolver` for edge.* and Traefik v1 routes; enables HTTPS and the HTTP->HTTPS redirect by default (env EDGE_CERT_RESOLVER)")
		httpEP     = flag.String("http-entrypoint", env("EDGE_HTTP_ENTRYPOINT", "web"), "Traefik plain-HTTP entry `point` (env EDGE_HTTP_ENTRYPOINT)")
		httpsEP    = flag.String("https-entrypoint", env("EDGE_HTTPS_ENTRYPOINT", "websecure"), "Traefik HTTPS entry `point` (env EDGE_HTTPS_ENTRYPOINT)")
		resync     = flag.Duration("resync", defResync, "full resync `period`, to catch missed events (env EDGE_RESYNC)")
		debounce   = flag.Duration("debounce", defDebounce, "wait after the first of a burst of events (env EDGE_DEBOUNCE)")
		internal   = flag.String("internal-services", env("EDGE_INTERNAL_SERVICES", ""), "Traefik internal `services` labels may route to, comma-separated (api@internal,dashboard@internal); default none (env EDGE_INTERNAL_SERVICES)")
		tcpPorts   = flag.String("tcp-ports", env("EDGE_TCP_PORTS", ""), "public TCP `ports` Traefik declares as entry points tcp-<port> for TCP routes, e.g. 25,587,993,10000-10009 (env EDGE_TCP_PORTS)")
		udpPorts   = flag.String("udp-ports", env("EDGE_UDP_PORTS", ""), "public UDP `ports` Traefik declares as entry points udp-<port> (env EDGE_UDP_PORTS)")
		lb         = flag.String("lb", defLB, "`mode`: tasks (Traefik balances over each service's running tasks) or vip (the service's Swarm VIP); a service's edge.lb label overrides it (env EDGE_LB)")
		taskPoll   = flag.Duration("task-poll", defPoll, "how often the running tasks are listed (Swarm has no task events); 0: never between full listings (env EDGE_TASK_POLL)")
		retry      = flag.Int("retry", defRetry, "attempts of Traefik's retry middleware on every route (a request whose connection to a stopping task fails goes to another); 0: none (env EDGE_RETRY)")
		logLevel   = flag.String("log-level", env("LOG_LEVEL", "info"), "log `level`: debug, info, warn, error (env LOG_LEVEL)")
	)
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: edge [flags]          feed Traefik from the Swarm\n       edge [flags] entrypoints  print the Traefik static flags that declare -tcp-ports/-udp-ports\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	tcp, err := parsePorts("-tcp-ports (EDGE_TCP_PORTS)", *tcpPorts)
	if err == nil {
		var udp []int
		udp, err = parsePorts("-udp-ports (EDGE_UDP_PORTS)", *udpPorts)
		build.TCPPorts, build.UDPPorts = tcp, udp
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "edge:", err)
		os.Exit(1)
	}
	switch flag.Arg(0) {
	case "":
	case "entrypoints":
		for _, f := range entryPointFlags(build.TCPPorts, build.UDPPorts) {
			fmt.Println(f)
		}
		return
	default:
		fmt.Fprintf(os.Stderr, "edge: unknown command %q\n", flag.Arg(0))
		flag.Usage()
		os.Exit(2)
	}
	internalServices, err := parseInternal(*internal)
	if err == nil {
		err = checkLB("-lb (EDGE_LB)", *lb)
	}
	if err == nil && (*retry < 0 || *retry > 10) {
		err = fmt.Errorf("%w: -retry (EDGE_RETRY): %d is not a number of attempts, 0-10", settings.ErrInvalid, *retry)
	}
	if err == nil && *taskPoll < 0 {
		err = fmt.Errorf("%w: -task-poll (EDGE_TASK_POLL): negative", settings.ErrInvalid)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "edge:", err)
		os.Exit(1)
	}
	build.HTTPEntryPoint, build.HTTPSEntryPoint, build.CertResolver, build.Network = *httpEP, *httpsEP, *resolver, *network
	build.InternalServices = internalServices
	build.TaskRouting, build.RetryAttempts = *lb == builder.LBTasks, *retry
	poll := *taskPoll
	if poll == 0 {
		poll = -1 // the watcher's "never"
	}
	if err := run(*dockerHost, *dir, *file, *listen, *logLevel, *resync, *debounce, poll, build); err != nil {
		fmt.Fprintln(os.Stderr, "edge:", err)
		os.Exit(1)
	}
}

// maxPorts bounds -tcp-ports and -udp-ports: each port is a Traefik entry
// point, a listening socket and a line of static configuration.
const maxPorts = 1024

// parsePorts reads a list of ports and ranges: "25,587,10000-10009".
func parsePorts(setting, v string) ([]int, error) {
	var out []int
	seen := map[int]bool{}
	for _, item := range strings.Split(v, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		lo, hi, isRange := strings.Cut(item, "-")
		a, errA := strconv.Atoi(strings.TrimSpace(lo))
		b := a
		var errB error
		if isRange {
			b, errB = strconv.Atoi(strings.TrimSpace(hi))
		}
		if errA != nil || errB != nil || a < 1 || b > 65535 || b < a {
			return nil, fmt.Errorf("%w: %s: %q is not a port (1-65535) or a range low-high", settings.ErrInvalid, setting, item)
		}
		if len(out)+b-a+1 > maxPorts {
			return nil, fmt.Errorf("%w: %s: more than %d ports", settings.ErrInvalid, setting, maxPorts)
		}
		for p := a; p <= b; p++ {
			if !seen[p] {
				seen[p] = true
				out = append(out, p)
			}
		}
	}
	sort.Ints(out)
	return out, nil
}

// entryPointFlags are the Traefik static configuration flags declaring the
// entry points edge fills: one per port, named as builder.TCPEntryPoint and
// builder.UDPEntryPoint name them.
func entryPointFlags(tcp, udp []int) []string {
	var out []string
	for _, p := range tcp {
		out = append(out, fmt.Sprintf("--entryPoints.%s.address=:%d/tcp", builder.TCPEntryPoint(p), p))
	}
	for _, p := range udp {
		out = append(out, fmt.Sprintf("--entryPoints.%s.address=:%d/udp", builder.UDPEntryPoint(p), p))
	}
	return out
}

// parseInternal reads -internal-services: names of Traefik internal
// services, each ending in @internal.
func parseInternal(v string) ([]string, error) {
	var out []string
	for _, n := range strings.Split(v, ",") {
		n = strings.TrimSpace(n)
		if n == "" {
			continue
		}
		if !strings.HasSuffix(n, "@internal") || len(n) == len("@internal") || strings.ContainsAny(n, " \t`") {
			return nil, fmt.Errorf("%w: -internal-services (EDGE_INTERNAL_SERVICES): %q is not a Traefik internal service such as api@internal", settings.ErrInvalid, n)
		}
		out = append(out, n)
	}
	return out, nil
}

func run(dockerHost, dir, file, listen, logLevel string, resync, debounce, taskPoll time.Duration, build builder.Options) error {
	logger := logrus.New()
	lvl, err := settings.LogLevel("-log-level", logLevel)
	if err != nil {
		return err
	}
	logger.SetLevel(lvl)
	log := logrus.NewEntry(logger)

	out, err := sink.NewFile(sink.Options{Dir: dir, File: file})
	if err != nil {
		return err
	}
	docker, err := watcher.NewMoby(dockerHost)
	if err != nil {
		return fmt.Errorf("docker client: %w", err)
	}
	defer docker.Close()
	var ln net.Listener
	if listen != "" {
		if ln, err = net.Listen("tcp", listen); err != nil {
			return fmt.Errorf("status server: %w", err)
		}
	}
	d, err := edge.New(edge.Options{Docker: docker, Sink: out, Build: build, Resync: resync,
		Debounce: debounce, TaskPoll: taskPoll, Listener: ln, Log: log})
	if err != nil {
		return err
	}
	if listen != "" && publicListen(listen) {
		log.WithField("status", listen).Warn("the status page has no authentication and listens beyond loopback: anyone who reaches it sees every route; prefer 127.0.0.1 or the mesh address")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log.WithFields(logrus.Fields{"file": out.Path(), "status": listen, "network": build.Network,
		"cert_resolver": build.CertResolver, "tcp_ports": build.TCPPorts, "udp_ports": build.UDPPorts,
		"task_routing": build.TaskRouting, "task_poll": taskPoll, "retry": build.RetryAttempts}).Info("edge starting")
	if err := d.Run(ctx); err != nil && ctx.Err() == nil {
		return err
	}
	log.Info("edge stopped")
	return nil
}
