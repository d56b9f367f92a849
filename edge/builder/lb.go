package builder

import (
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Task is a running task of a service: where Traefik can reach it.
type Task struct {
	// ID is the Swarm task ID.
	ID string
	// Addrs maps the names of the networks the task is attached to (an ID
	// stands in for a name edge could not resolve) to its IP address there.
	Addrs map[string]string
}

// LB modes: how Traefik reaches a service's tasks.
const (
	// LBTasks balances in Traefik over the addresses of the service's
	// running tasks on the network it shares with Traefik, as Traefik's own
	// swarm provider does by default: Traefik's health checks, sticky
	// sessions and retries see each task, and no IPVS is needed.
	LBTasks = "tasks"
	// LBVIP points Traefik at http://<service>:<port>, the service's Swarm
	// VIP (or its tasks by DNS with --endpoint-mode dnsrr): Swarm balances.
	LBVIP = "vip"
)

// HealthCheck is a Traefik service health check
// (traefik.http.services.<s>.loadbalancer.healthcheck.*). Empty fields are
// Traefik's defaults.
type HealthCheck struct {
	Path     string `json:"path"`
	Interval string `json:"interval,omitempty"`
	Timeout  string `json:"timeout,omitempty"`
	Port     int    `json:"port,omitempty"`
	Scheme   string `json:"scheme,omitempty"`
	Hostname string `json:"hostname,omitempty"`
	Method   string `json:"method,omitempty"`
	Status   int    `json:"status,omitempty"`
}

// Sticky is a Traefik sticky-session cookie
// (traefik.http.services.<s>.loadbalancer.sticky.cookie.*). Empty fields are
// Traefik's defaults.
type Sticky struct {
	Name     string `json:"name,omitempty"`
	Secure   bool   `json:"secure,omitempty"`
	HTTPOnly bool   `json:"httpOnly,omitempty"`
	SameSite string `json:"sameSite,omitempty"`
	MaxAge   int    `json:"maxAge,omitempty"`
}

// lbOptions are the load-balancer options a service's labels set.
type lbOptions struct {
	hc     *HealthCheck
	sticky *Sticky
}

// parseLB reads one load-balancer option: attr is what follows
// "loadbalancer." (healthcheck.path, sticky.cookie, sticky.cookie.name, …).
// handled is false for an attribute that is not a health check or sticky
// option.
func (o *lbOptions) parse(attr, v string) (handled bool, err error) {
	hc := func() *HealthCheck {
		if o.hc == nil {
			o.hc = &HealthCheck{}
		}
		return o.hc
	}
	st := func() *Sticky {
		if o.sticky == nil {
			o.sticky = &Sticky{}
		}
		return o.sticky
	}
	v = strings.TrimSpace(v)
	switch attr {
	case "healthcheck.path":
		if !strings.HasPrefix(v, "/") || strings.ContainsAny(v, " \t\r\n") {
			return true, fmt.Errorf("%w %q: a health check path starts with /", ErrBadPath, v)
		}
		hc().Path = v
	case "healthcheck.interval", "healthcheck.timeout":
		d, perr := time.ParseDuration(v)
		if perr != nil || d <= 0 {
			return true, fmt.Errorf("%w duration %q: use e.g. 1s or 500ms", ErrBadName, v)
		}
		if attr == "healthcheck.interval" {
			hc().Interval = v
		} else {
			hc().Timeout = v
		}
	case "healthcheck.port":
		p, perr := parsePort(v)
		if perr != nil {
			return true, perr
		}
		hc().Port = p
	case "healthcheck.scheme":
		s, perr := parseScheme(v)
		if perr != nil {
			return true, perr
		}
		hc().Scheme = s
	case "healthcheck.hostname":
		if perr := checkHost(v); perr != nil {
			return true, perr
		}
		hc().Hostname = strings.ToLower(v)
	case "healthcheck.method":
		m := strings.ToUpper(v)
		if !slices.Contains([]string{"GET", "HEAD", "OPTIONS"}, m) {
			return true, fmt.Errorf("%w method %q: use GET, HEAD or OPTIONS", ErrBadName, v)
		}
		hc().Method = m
	case "healthcheck.status":
		n, perr := strconv.Atoi(v)
		if perr != nil || n < 100 || n > 599 {
			return true, fmt.Errorf("%w status %q: use an HTTP status, 100-599", ErrBadName, v)
		}
		hc().Status = n
	case "sticky.cookie", "sticky":
		on, perr := parseBool(v)
		if perr != nil {
			return true, perr
		}
		if on {
			st()
		} else {
			o.sticky = nil
		}
	case "sticky.cookie.name":
		n, perr := parseName(v, "cookie")
		if perr != nil {
			return true, perr
		}
		st().Name = n
	case "sticky.cookie.secure", "sticky.cookie.httponly":
		on, perr := parseBool(v)
		if perr != nil {
			return true, perr
		}
		if attr == "sticky.cookie.secure" {
			st().Secure = on
		} else {
			st().HTTPOnly = on
		}
	case "sticky.cookie.samesite":
		s := strings.ToLower(v)
		if !slices.Contains([]string{"none", "lax", "strict"}, s) {
			return true, fmt.Errorf("%w sameSite %q: use none, lax or strict", ErrBadName, v)
		}
		st().SameSite = s
	case "sticky.cookie.maxage":
		n, perr := strconv.Atoi(v)
		if perr != nil || n < 0 {
			return true, fmt.Errorf("%w maxAge %q: use seconds, a non-negative integer", ErrBadName, v)
		}
		st().MaxAge = n
	default:
		return false, nil
	}
	return true, nil
}

// apply puts the options on r, after the labels were read completely: a
// health check needs its path.
func (o *lbOptions) apply(r *Route) error {
	if o.hc != nil && o.hc.Path == "" {
		return fmt.Errorf("a health check needs its path (…healthcheck.path=/health)")
	}
	r.HealthCheck, r.Sticky = o.hc, o.sticky
	return nil
}

// lbMode is the service's load-balancing mode: edge.lb, or Traefik's
// traefik.docker.lbswarm / traefik.swarm.lbswarm (true: the VIP), or
// edge's default. ok is false when the label is malformed (reported).
func (b *svcBuild) lbMode() (mode string, ok bool) {
	if b.lb != "" {
		return b.lb, b.lb != "bad"
	}
	b.lb = LBVIP
	if b.o.TaskRouting {
		b.lb = LBTasks
	}
	if k, v, found := b.label("edge.lb"); found {
		switch m := strings.ToLower(strings.TrimSpace(v)); m {
		case LBTasks, LBVIP:
			b.lb = m
		default:
			b.skip(k, "unknown load-balancing mode %q: use tasks (Traefik balances over the running tasks) or vip (the service's Swarm VIP)", v)
			b.lb = "bad"
			return "", false
		}
		return b.lb, true
	}
	if k, v, found := b.firstLabel("traefik.swarm.lbswarm", "traefik.docker.lbswarm"); found {
		on, err := parseBool(v)
		if err != nil {
			b.skip(k, "%v", err)
			b.lb = "bad"
			return "", false
		}
		if on {
			b.lb = LBVIP
		}
	}
	return b.lb, true
}

// target sets r's backend: the service's VIP URL, and with task-level
// balancing the URLs of its running tasks on the network Traefik shares
// with it (networkLabels name the labels that choose that network).
func (b *svcBuild) target(r *Route, scheme string, port int, networkLabels ...string) bool {
	r.URL = b.o.url(b.svc.Name, scheme, port)
	addrs, tasks, ok := b.taskAddrs(port, networkLabels...)
	if !ok {
		return false
	}
	if tasks {
		r.Tasks, r.Servers = true, make([]string, len(addrs))
		for i, a := range addrs {
			r.Servers[i] = scheme + "://" + a
		}
	}
	return true
}

// taskAddrs says where Traefik reaches port of the service's tasks, for
// HTTP, TCP and UDP routes alike: with task-level balancing (the
// service's lbMode) tasks is true and addrs are the host:port of each
// running task on the network Traefik shares with the service
// (networkLabels name the labels that choose it; none running: empty, not
// nil), sorted. tasks is false when the route should use the service's
// VIP; ok is false when a malformed label skips the route (reported).
func (b *svcBuild) taskAddrs(port int, networkLabels ...string) (addrs []string, tasks, ok bool) {
	mode, ok := b.lbMode()
	if !ok {
		return nil, false, false
	}
	if mode != LBTasks {
		return nil, false, true
	}
	network := b.o.Network
	if _, v, found := b.firstLabel(networkLabels...); found {
		network = strings.TrimSpace(v)
	}
	if network == "" {
		switch len(b.svc.Networks) {
		case 1:
			network = b.svc.Networks[0]
		case 0:
			return nil, false, true // reachable by no network: nothing better than the VIP
		default:
			if !b.lbWarned {
				b.lbWarned = true
				b.ignore("", "the service is attached to several networks and edge does not know which one Traefik shares: routed to its VIP; run edge with -network or set edge.network")
			}
			return nil, false, true
		}
	}
	addrs = []string{}
	for _, t := range b.svc.Tasks {
		ip, ok := t.Addrs[network]
		if !ok || ip == "" {
			continue
		}
		addrs = append(addrs, net.JoinHostPort(ip, strconv.Itoa(port)))
	}
	slices.Sort(addrs)
	return slices.Compact(addrs), true, true
}
