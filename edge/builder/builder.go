package builder

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/moby/moby/api/types/swarm"
)

// Dialect names the family of labels a route was read from.
type Dialect string

const (
	// DialectEdge is edge's own labels: edge.host, edge.port, …
	DialectEdge Dialect = "edge"
	// DialectTraefikV1 is Traefik v1's labels: traefik.frontend.rule, traefik.port, …
	DialectTraefikV1 Dialect = "traefik-v1"
	// DialectTraefikV2 is Traefik v2/v3's labels: traefik.http.routers.<r>.rule, …
	DialectTraefikV2 Dialect = "traefik-v2"
)

// Service is the part of a Swarm service that routing depends on. Tests build
// it directly; the daemon converts Docker's type with [FromSwarm].
type Service struct {
	// Name is the Swarm service name; routes reach the service at
	// http://<Name>:<port>, its virtual IP on a network shared with Traefik.
	Name string
	// Labels are the service's labels (not its containers').
	Labels map[string]string
	// Networks are the names of the networks the service's tasks attach to
	// (an ID stands in for a name edge could not resolve).
	Networks []string
	// ID and CreatedAt are the Swarm service's ID and creation time. They
	// decide which service was first when two claim the same host: the
	// older one (then the smaller ID, then the smaller name) keeps it, so
	// a rebuild from the full state always gives the same answer and a
	// newcomer can never displace a running service. Zero values sort first.
	ID        string
	CreatedAt time.Time
	// Tasks are the service's running tasks (desired state running and
	// state running), sorted by ID. With task-level balancing
	// (Options.TaskRouting, edge.lb=tasks) Traefik balances over their
	// addresses; a task Swarm is shutting down is not among them.
	Tasks []Task
}

// FromSwarm converts a Swarm service. networkNames maps network IDs to names;
// a nil map leaves IDs as they are. tasks may hold any tasks: those of s
// that serve (desired state and state running) become Service.Tasks.
func FromSwarm(s swarm.Service, networkNames map[string]string, tasks ...swarm.Task) Service {
	out := Service{Name: s.Spec.Name, Labels: s.Spec.Labels, ID: s.ID, CreatedAt: s.Meta.CreatedAt}
	netName := func(id string) string {
		if nn, ok := networkNames[id]; ok {
			return nn
		}
		return id
	}
	for _, n := range s.Spec.TaskTemplate.Networks {
		out.Networks = append(out.Networks, netName(n.Target))
	}
	for _, t := range tasks {
		if t.ServiceID != s.ID || t.DesiredState != swarm.TaskStateRunning || t.Status.State != swarm.TaskStateRunning {
			continue
		}
		task := Task{ID: t.ID, Addrs: map[string]string{}}
		for _, a := range t.NetworksAttachments {
			name := netName(a.Network.ID)
			if _, ok := networkNames[a.Network.ID]; !ok && a.Network.Spec.Name != "" {
				name = a.Network.Spec.Name
			}
			if len(a.Addresses) > 0 && a.Addresses[0].IsValid() {
				task.Addrs[name] = a.Addresses[0].Addr().String()
			}
		}
		out.Tasks = append(out.Tasks, task)
	}
	slices.SortFunc(out.Tasks, func(a, b Task) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// Options tunes [Build]. The zero value routes plain HTTP on entry point "web".
type Options struct {
	// HTTPEntryPoint is Traefik's plain-HTTP entry point. Zero: "web".
	HTTPEntryPoint string
	// HTTPSEntryPoint is Traefik's HTTPS entry point. Zero: "websecure".
	HTTPSEntryPoint string
	// CertResolver is the Traefik ACME resolver that edge.* and Traefik v1
	// routes use by default. When set, those routes are served over HTTPS on
	// HTTPSEntryPoint and plain HTTP is redirected to HTTPS (as the seed's
	// Traefik v1 did), unless their labels say otherwise. Zero: those routes
	// are plain HTTP unless their labels ask for TLS. Traefik v2 labels are
	// explicit and never get this default.
	CertResolver string
	// Network is the Swarm network Traefik shares with the services it routes
	// to. When set, a service not attached to it is skipped with a diagnostic
	// (Traefik could not reach it). Zero: no check.
	Network string
	// BackendURL builds a route's target URL. Zero: scheme://service:port,
	// the service's Swarm VIP by DNS, so task moves need no route change.
	// Tests point it at a local backend.
	BackendURL func(service, scheme string, port int) string
	// InternalServices are the Traefik internal services (api@internal,
	// dashboard@internal, ping@internal, …) that labels may route to; a
	// router naming any other x@internal service is skipped. A router to an
	// internal service must name its hosts (no catch-all rule). Zero: none,
	// so no label can expose Traefik's API or dashboard.
	InternalServices []string
	// TCPPorts and UDPPorts are the public ports Traefik's static
	// configuration declares as entry points TCPEntryPoint(p) and
	// UDPEntryPoint(p) (`edge entrypoints` prints the flags). TCP and UDP
	// routes may use only these (TCP with TLS by SNI also the HTTPS entry
	// point). Zero: none, so only SNI routes on the HTTPS entry point.
	TCPPorts, UDPPorts []int
	// BackendAddress builds a TCP or UDP route's target host:port. Zero:
	// service:port, the service's VIP by DNS. Tests point it at a local
	// backend.
	BackendAddress func(service string, port int) string
	// TaskRouting balances HTTP, TCP and UDP routes in Traefik over the
	// addresses of each service's running tasks (Service.Tasks) on the
	// network Traefik shares with it (Network, the service's network
	// label, or its only network), as Traefik's swarm provider does: no
	// IPVS needed, Traefik's health checks and sticky sessions see the
	// tasks, and a task Swarm shuts down gets no new connection. A
	// service's edge.lb=vip (or traefik.docker.lbswarm=true) keeps its
	// VIP, for all its routes. Zero: every route points at the service's VIP.
	TaskRouting bool
	// RetryAttempts, when positive, appends Traefik's retry middleware
	// (RetryMiddleware, this many attempts) to every route to a service of
	// edge's: a request whose connection to a task fails (a task stopping
	// during an update) is sent again, to another task if there is one.
	// Zero: no retry.
	RetryAttempts int
}

// RetryMiddleware is the Traefik retry middleware the sink defines when
// Options.RetryAttempts is set.
const RetryMiddleware = "edge-retry"

func (o Options) httpEP() string {
	if o.HTTPEntryPoint == "" {
		return "web"
	}
	return o.HTTPEntryPoint
}

func (o Options) httpsEP() string {
	if o.HTTPSEntryPoint == "" {
		return "websecure"
	}
	return o.HTTPSEntryPoint
}

func (o Options) url(service, scheme string, port int) string {
	if o.BackendURL != nil {
		return o.BackendURL(service, scheme, port)
	}
	return fmt.Sprintf("%s://%s:%d", scheme, service, port)
}

// TLS says a route is served over HTTPS.
type TLS struct {
	// CertResolver is the ACME resolver; empty: Traefik's default certificate.
	CertResolver string `json:"certResolver,omitempty"`
}

// Route is one Traefik router and the backend it sends requests to.
type Route struct {
	// Name is the Traefik router name, unique in the table.
	Name string `json:"name"`
	// Service is the Swarm service the route was read from.
	Service string `json:"service"`
	// Dialect is the label family the route was read from.
	Dialect Dialect `json:"dialect"`
	// Rule is the Traefik v3 rule.
	Rule string `json:"rule"`
	// Hosts are the host names the rule matches, for display.
	Hosts []string `json:"hosts,omitempty"`
	// PathPrefix is the path prefix the rule matches, for display.
	PathPrefix string `json:"pathPrefix,omitempty"`
	// EntryPoints are Traefik entry points the router listens on.
	EntryPoints []string `json:"entryPoints"`
	// Middlewares are Traefik middleware references, applied in order.
	Middlewares []string `json:"middlewares,omitempty"`
	// Priority is the router priority; zero: Traefik's default (rule length).
	Priority int `json:"priority,omitempty"`
	// TLS, when non-nil, serves the route over HTTPS.
	TLS *TLS `json:"tls,omitempty"`
	// RedirectFrom are entry points on which a second router, named
	// RedirectRouterName(Name), redirects plain HTTP to HTTPS. Empty: none.
	RedirectFrom []string `json:"redirectFrom,omitempty"`
	// Backend is the Traefik service name. It contains '@' when it names a
	// service defined by another Traefik provider; URL is empty then.
	Backend string `json:"backend"`
	// URL is the Swarm service's VIP URL, where the backend forwards
	// requests unless Tasks is set.
	URL string `json:"url,omitempty"`
	// Tasks says the backend balances over Servers, the URLs of the
	// service's running tasks (none: Traefik answers 503), not over URL.
	Tasks   bool     `json:"tasks,omitempty"`
	Servers []string `json:"servers,omitempty"`
	// HealthCheck and Sticky are the backend's health check and sticky
	// cookie; nil: none.
	HealthCheck *HealthCheck `json:"healthCheck,omitempty"`
	Sticky      *Sticky      `json:"sticky,omitempty"`
}

// RedirectMiddleware is the Traefik middleware that redirects plain HTTP to
// HTTPS. The sink defines it next to the routes; other configuration in
// Traefik's directory may use it as edge-redirect-https@file.
const RedirectMiddleware = "edge-redirect-https"

// RedirectRouterName is the name of the router that redirects plain HTTP to
// HTTPS for the route named name. Build reserves it.
func RedirectRouterName(name string) string { return name + "-redirect-https" }

// Table is the complete set of routes, each list sorted by Name.
type Table struct {
	// RetryAttempts is Options.RetryAttempts: the sink defines
	// RetryMiddleware with it.
	RetryAttempts int        `json:"retryAttempts,omitempty"`
	Routes        []Route    `json:"routes"`
	TCP           []TCPRoute `json:"tcp,omitempty"`
	UDP           []UDPRoute `json:"udp,omitempty"`
}

// Diagnostic explains a label edge did not use.
type Diagnostic struct {
	// Service is the Swarm service carrying the label.
	Service string `json:"service"`
	// Label is the label key; empty when the diagnostic is about the service.
	Label string `json:"label,omitempty"`
	// Value is the label's value.
	Value string `json:"value,omitempty"`
	// Reason says what is wrong and what to do.
	Reason string `json:"reason"`
	// Skipped is true when a route was not built because of this label;
	// false when only the label was ignored and the routes stand.
	Skipped bool `json:"skipped"`
}

func (d Diagnostic) String() string {
	effect := "label ignored"
	if d.Skipped {
		effect = "route skipped"
	}
	if d.Label == "" {
		return fmt.Sprintf("service %s: %s (%s)", d.Service, d.Reason, effect)
	}
	if d.Value == "" {
		return fmt.Sprintf("service %s: label %s: %s (%s)", d.Service, d.Label, d.Reason, effect)
	}
	return fmt.Sprintf("service %s: label %s=%q: %s (%s)", d.Service, d.Label, d.Value, d.Reason, effect)
}

// Build computes the route table for services. It is a pure function: the
// same services and options always give the same table and diagnostics, in
// the same order. A malformed label skips the route(s) it belongs to and is
// reported; the other routes are built as usual.
//
// A host belongs to the first service that routes it (see Service.CreatedAt):
// a later service's route naming that host is refused, whatever its path,
// entry point or priority. A rule that can match any host (no Host matcher,
// HostRegexp, a negation) claims no host and is confined: the hosts other
// services own are excluded from it.
func Build(services []Service, o Options) (Table, []Diagnostic) {
	svcs := slices.Clone(services)
	sort.SliceStable(svcs, func(i, j int) bool { return firstClaim(svcs[i], svcs[j]) })

	var (
		t        Table
		diags    []Diagnostic
		names    = map[string]string{} // router name -> service that owns it
		rules    = map[string]string{} // entry point, priority, rule -> service that owns it
		backends = map[string]string{} // backend -> owner key
		hosts    = map[string]string{} // host -> service that owns it
		anyHost  []int                 // indexes in t.Routes of rules that match any host
		l4       = newL4Claims()
	)
	t.RetryAttempts = max(o.RetryAttempts, 0)
	for _, s := range svcs {
		b := &svcBuild{svc: s, o: o, claims: map[string]hostSet{}}
		b.build()
		diags = append(diags, b.diags...)
	routes:
		for _, r := range b.routes {
			hs := b.claims[r.Name]
			refuse := func(reason string, args ...any) {
				diags = append(diags, Diagnostic{Service: s.Name, Skipped: true,
					Reason: fmt.Sprintf("router %s: ", r.Name) + fmt.Sprintf(reason, args...)})
			}
			for _, n := range []string{r.Name, RedirectRouterName(r.Name)} {
				if owner, ok := names[n]; ok {
					refuse("router name %s is already used by service %s; rename the router or service", n, owner)
					continue routes
				}
			}
			if !hs.any {
				for _, h := range hs.hosts {
					if owner, ok := hosts[h]; ok && owner != s.Name {
						refuse("host %s belongs to service %s, which routed it first; a host is served by one service (remove the label, or the other service's)", h, owner)
						continue routes
					}
				}
			}
			if i := strings.LastIndexByte(r.Backend, '@'); i >= 0 && strings.EqualFold(r.Backend[i:], "@internal") {
				switch {
				case !containsFold(o.InternalServices, r.Backend):
					refuse("Traefik's internal service %s is not one edge's operator allows (edge -internal-services)", r.Backend)
					continue
				case hs.any:
					refuse("a route to Traefik's internal service %s must name its hosts with Host(`…`)", r.Backend)
					continue
				}
			}
			if owner, ep, taken := ruleTaken(rules, r); taken {
				refuse("rule %s on entry point %s is already routed to service %s; give each service its own host or path", r.Rule, ep, owner)
				continue
			}
			key := b.backendOwner(r)
			if owner, ok := backends[r.Backend]; ok && owner != key && !strings.Contains(r.Backend, "@") {
				refuse("backend name %s is already used by another service; rename it", r.Backend)
				continue
			}
			backends[r.Backend] = key
			if t.RetryAttempts > 0 && r.URL != "" && !slices.Contains(r.Middlewares, RetryMiddleware) {
				r.Middlewares = append(slices.Clone(r.Middlewares), RetryMiddleware)
			}
			names[r.Name] = s.Name
			names[RedirectRouterName(r.Name)] = s.Name
			for _, k := range ruleKeys(r) {
				rules[k.key] = s.Name
			}
			if hs.any {
				anyHost = append(anyHost, len(t.Routes))
			} else {
				for _, h := range hs.hosts {
					hosts[h] = s.Name
				}
			}
			t.Routes = append(t.Routes, r)
		}
		l4.add(&t, &diags, b, hosts)
	}
	// Confine the rules that could match any host to the hosts no other
	// service owns, so that neither a catch-all nor its priority can take
	// another service's requests.
	for _, i := range anyHost {
		r := &t.Routes[i]
		var others []string
		for h, owner := range hosts {
			if owner != r.Service {
				others = append(others, h)
			}
		}
		r.Rule = confine(r.Rule, others)
	}
	sort.SliceStable(t.Routes, func(i, j int) bool { return t.Routes[i].Name < t.Routes[j].Name })
	sort.SliceStable(t.TCP, func(i, j int) bool { return t.TCP[i].Name < t.TCP[j].Name })
	sort.SliceStable(t.UDP, func(i, j int) bool { return t.UDP[i].Name < t.UDP[j].Name })
	return t, diags
}

// firstClaim orders services by who came first: creation time, then ID,
// then name.
func firstClaim(a, b Service) bool {
	if !a.CreatedAt.Equal(b.CreatedAt) {
		return a.CreatedAt.Before(b.CreatedAt)
	}
	if a.ID != b.ID {
		return a.ID < b.ID
	}
	return a.Name < b.Name
}

// confine excludes hosts from rule.
func confine(rule string, hosts []string) string {
	if len(hosts) == 0 {
		return rule
	}
	slices.Sort(hosts)
	var sb strings.Builder
	sb.WriteString("(" + rule + ")")
	for _, h := range hosts {
		sb.WriteString(" && !Host(`" + h + "`)")
	}
	return sb.String()
}

type ruleKey struct{ ep, key string }

// ruleKeys are the (entry point, priority, rule) slots a route occupies,
// its redirect router included. Two routers in one slot would leave the
// choice to Traefik.
func ruleKeys(r Route) []ruleKey {
	var keys []ruleKey
	for _, eps := range [][]string{r.EntryPoints, r.RedirectFrom} {
		for _, ep := range eps {
			keys = append(keys, ruleKey{ep, fmt.Sprintf("%s\x00%d\x00%s", ep, r.Priority, r.Rule)})
		}
	}
	return keys
}

func ruleTaken(rules map[string]string, r Route) (owner, ep string, taken bool) {
	for _, k := range ruleKeys(r) {
		if owner, ok := rules[k.key]; ok {
			return owner, k.ep, true
		}
	}
	return "", "", false
}

// svcBuild holds the state of building one service's routes.
type svcBuild struct {
	svc    Service
	o      Options
	routes []Route
	diags  []Diagnostic
	// claims are the hosts each route (by name) can match.
	claims map[string]hostSet
	tcp    []TCPRoute
	udp    []UDPRoute
	// net memoizes networkOK, so its diagnostic appears once.
	net map[string]bool
	// lb memoizes lbMode ("bad": a malformed label); lbWarned says its
	// fallback was reported.
	lb       string
	lbWarned bool
	// v1Backend is set when a Traefik v1 service names its backend, which
	// lets several services share one load-balanced backend as in v1.
	v1Backend string
}

func (b *svcBuild) skip(label, reason string, args ...any) {
	b.diags = append(b.diags, b.diag(label, true, reason, args...))
}

func (b *svcBuild) ignore(label, reason string, args ...any) {
	b.diags = append(b.diags, b.diag(label, false, reason, args...))
}

// diag builds a diagnostic about label. A value that may be a secret (a
// basic-auth user list, a password hash) is redacted, in the reason too:
// diagnostics are logged and shown on the status page.
func (b *svcBuild) diag(label string, skipped bool, reason string, args ...any) Diagnostic {
	raw := b.svc.Labels[label]
	value := redact(label, raw)
	msg := fmt.Sprintf(reason, args...)
	if value != raw && raw != "" {
		msg = strings.ReplaceAll(msg, fmt.Sprintf("%q", raw), Redacted)
		if len(raw) >= 6 { // a short value would match ordinary words
			msg = strings.ReplaceAll(msg, raw, Redacted)
		}
	}
	return Diagnostic{Service: b.svc.Name, Label: label, Value: value, Reason: msg, Skipped: skipped}
}

// addRoute adds r, which matches the hosts hs.
func (b *svcBuild) addRoute(r Route, hs hostSet) {
	b.claims[r.Name] = hs
	b.routes = append(b.routes, r)
}

func (b *svcBuild) backendOwner(r Route) string {
	if r.Dialect == DialectTraefikV1 && b.v1Backend != "" {
		return "v1:" + b.v1Backend
	}
	return "svc:" + b.svc.Name
}

// sortedKeys returns the service's label keys with prefix (case-insensitive),
// sorted, so diagnostics come out in a stable order.
func (b *svcBuild) sortedKeys(prefix string) []string {
	var keys []string
	for k := range b.svc.Labels {
		if hasPrefixFold(k, prefix) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	return keys
}

// isL4Key reports whether k is one of edge's TCP/UDP labels.
func isL4Key(k string) bool { return hasPrefixFold(k, "edge.tcp.") || hasPrefixFold(k, "edge.udp.") }

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

// label returns the value of the label whose key equals key case-insensitively.
func (b *svcBuild) label(key string) (k, v string, ok bool) {
	if v, ok := b.svc.Labels[key]; ok {
		return key, v, true
	}
	for k, v := range b.svc.Labels {
		if strings.EqualFold(k, key) {
			return k, v, true
		}
	}
	return key, "", false
}

func (b *svcBuild) build() {
	hasEdge := false // edge.enable alone selects no dialect
	for _, k := range b.sortedKeys("edge.") {
		hasEdge = hasEdge || !strings.EqualFold(k, "edge.enable") && !strings.EqualFold(k, "edge.lb") && !isL4Key(k)
	}
	hasV2 := len(b.sortedKeys("traefik.http.")) > 0
	hasV1 := b.hasV1()

	if k, v, ok := b.label("edge.enable"); ok {
		on, err := parseBool(v)
		if err != nil {
			b.skip(k, "%v", err)
			return
		}
		if !on {
			return
		}
	}
	traefikOn := true
	if k, v, ok := b.label("traefik.enable"); ok {
		on, err := parseBool(v)
		if err != nil {
			if hasEdge {
				b.ignore(k, "%v", err)
			} else {
				b.skip(k, "%v", err)
				return
			}
		}
		traefikOn = on || err != nil
	}
	defer b.buildL4(traefikOn) // after the HTTP routes, whichever dialect they use

	switch {
	case hasEdge:
		if hasV2 || hasV1 {
			b.ignore("", "traefik.* routing labels are ignored because edge.* labels are present; use one dialect per service")
		}
		b.buildEdge()
	case !traefikOn:
		return
	case hasV2:
		if hasV1 {
			b.ignore("", "Traefik v1 labels are ignored because Traefik v2 labels (traefik.http.*) are present; use one dialect per service")
		}
		b.buildV2()
	case hasV1:
		b.buildV1()
	}
}

// networkOK checks that Traefik can reach the service. labelKeys name the
// labels a service may use to choose its network; the first one set counts.
func (b *svcBuild) networkOK(labelKeys ...string) bool {
	key := strings.Join(labelKeys, ",")
	if ok, done := b.net[key]; done {
		return ok
	}
	ok := b.checkNetwork(labelKeys...)
	if b.net == nil {
		b.net = map[string]bool{}
	}
	b.net[key] = ok
	return ok
}

func (b *svcBuild) checkNetwork(labelKeys ...string) bool {
	want := b.o.Network
	if k, v, ok := b.firstLabel(labelKeys...); ok {
		v = strings.TrimSpace(v)
		switch {
		case v == "":
			b.skip(k, "network name is empty")
			return false
		case want != "" && v != want:
			b.skip(k, "edge routes through network %s, which Traefik shares with the services; attach the service to it and drop this label", want)
			return false
		}
		want = v
	}
	if want == "" || slices.Contains(b.svc.Networks, want) {
		return true
	}
	b.diags = append(b.diags, Diagnostic{Service: b.svc.Name, Skipped: true,
		Reason: fmt.Sprintf("service is not attached to network %s, so Traefik cannot reach it; run: docker service update --network-add %s %s", want, want, b.svc.Name)})
	return false
}

func (b *svcBuild) firstLabel(keys ...string) (k, v string, ok bool) {
	for _, key := range keys {
		if k, v, ok := b.label(key); ok {
			return k, v, true
		}
	}
	return "", "", false
}

// defaultTLS is the TLS of edge and v1 routes whose labels do not say.
func (b *svcBuild) defaultTLS() *TLS {
	if b.o.CertResolver == "" {
		return nil
	}
	return &TLS{CertResolver: b.o.CertResolver}
}

// buildEdge reads edge's own labels.
func (b *svcBuild) buildEdge() {
	var (
		r        = Route{Name: b.svc.Name, Service: b.svc.Name, Dialect: DialectEdge, Backend: b.svc.Name}
		port     int
		scheme   = "http"
		tlsSet   *bool
		resolver string
		redirect *bool
		ok       = true
		fail     = func(k string, err error) { b.skip(k, "%v", err); ok = false }
		lb       lbOptions
	)
	for _, k := range b.sortedKeys("edge.") {
		v := b.svc.Labels[k]
		var err error
		if isL4Key(k) {
			continue // buildL4's
		}
		switch strings.ToLower(k) {
		case "edge.enable", "edge.network", "edge.lb":
			// Handled by build, networkOK and lbMode.
		case "edge.host":
			r.Hosts, err = parseHosts(v)
		case "edge.port":
			port, err = parsePort(v)
		case "edge.path":
			r.PathPrefix, err = parsePath(v)
		case "edge.entrypoints":
			r.EntryPoints, err = parseNames(v, "entry point")
		case "edge.middlewares":
			r.Middlewares, err = parseNames(v, "middleware")
		case "edge.priority":
			r.Priority, err = parsePriority(v)
		case "edge.scheme":
			scheme, err = parseScheme(v)
		case "edge.tls":
			var on bool
			on, err = parseBool(v)
			tlsSet = &on
		case "edge.certresolver":
			if strings.TrimSpace(v) == "" {
				break // empty, as a stack file's ${CERT_RESOLVER:-} renders "none": plain HTTP
			}
			resolver, err = parseName(v, "cert resolver")
		case "edge.redirect-https":
			var on bool
			on, err = parseBool(v)
			redirect = &on
		default:
			lk := strings.ToLower(k)
			var handled bool
			if attr, found := strings.CutPrefix(lk, "edge."); found && (strings.HasPrefix(attr, "healthcheck.") || attr == "sticky" || strings.HasPrefix(attr, "sticky.")) {
				if strings.HasPrefix(attr, "sticky.") {
					attr = "sticky.cookie." + strings.TrimPrefix(attr, "sticky.")
				}
				handled, err = lb.parse(attr, v)
			}
			if !handled {
				err = fmt.Errorf("unknown edge label; known: edge.host, edge.port, edge.path, edge.entrypoints, edge.middlewares, edge.tls, edge.certresolver, edge.redirect-https, edge.network, edge.scheme, edge.priority, edge.lb, edge.healthcheck.*, edge.sticky, edge.enable")
			}
		}
		if err != nil {
			fail(k, err)
		}
	}
	if !ok {
		return
	}
	if r.Hosts == nil {
		b.skip("edge.host", "edge.host is required: the host name(s) to route, comma-separated")
		return
	}
	if port == 0 {
		b.skip("edge.port", "edge.port is required: the port the service listens on inside its containers")
		return
	}
	switch {
	case resolver != "" && tlsSet != nil && !*tlsSet:
		b.skip("edge.certresolver", "edge.certresolver needs TLS but edge.tls=false")
		return
	case resolver != "":
		r.TLS = &TLS{CertResolver: resolver}
	case tlsSet != nil && *tlsSet:
		r.TLS = &TLS{CertResolver: b.o.CertResolver}
	case tlsSet == nil:
		r.TLS = b.defaultTLS()
	}
	if redirect != nil && *redirect && r.TLS == nil {
		b.skip("edge.redirect-https", "redirecting to HTTPS needs TLS: set edge.tls=true or edge.certresolver")
		return
	}
	if err := lb.apply(&r); err != nil {
		b.skip("edge.healthcheck.path", "%v", err)
		return
	}
	doRedirect := r.TLS != nil && (redirect == nil || *redirect)
	b.finishSimple(&r, port, scheme, doRedirect, "edge.network")
}

// finishSimple completes a one-route-per-service (edge, v1) route.
func (b *svcBuild) finishSimple(r *Route, port int, scheme string, redirect bool, networkLabels ...string) {
	if !b.networkOK(networkLabels...) {
		return
	}
	if r.EntryPoints == nil {
		if r.TLS != nil {
			r.EntryPoints = []string{b.o.httpsEP()}
		} else {
			r.EntryPoints = []string{b.o.httpEP()}
		}
	}
	if redirect {
		r.RedirectFrom = []string{b.o.httpEP()}
	}
	r.Rule = simpleRule(r.Hosts, r.PathPrefix)
	if !b.target(r, scheme, port, networkLabels...) {
		return
	}
	b.addRoute(*r, finiteHosts(r.Hosts))
}

// simpleRule builds a Traefik v3 rule from hosts and an optional prefix.
func simpleRule(hosts []string, prefix string) string {
	var rule string
	if len(hosts) == 1 {
		rule = "Host(`" + hosts[0] + "`)"
	} else {
		parts := make([]string, len(hosts))
		for i, h := range hosts {
			parts[i] = "Host(`" + h + "`)"
		}
		rule = "(" + strings.Join(parts, " || ") + ")"
	}
	if prefix != "" && prefix != "/" {
		rule += " && PathPrefix(`" + prefix + "`)"
	}
	return rule
}
