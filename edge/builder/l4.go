package builder

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// TCP and UDP routes. Traefik's entry points are static configuration: edge
// cannot open a port. Traefik's static configuration declares one entry
// point per public port edge may fill, named TCPEntryPoint(p) and
// UDPEntryPoint(p) (the edge binary prints the flags: `edge entrypoints`);
// a TCP or UDP route may use only those, plus the HTTPS entry point for TLS
// routed by SNI. A port belongs to the first service that routes it, as a
// host does.

// TCPEntryPoint is the name of the Traefik entry point for public TCP port p.
func TCPEntryPoint(p int) string { return "tcp-" + strconv.Itoa(p) }

// UDPEntryPoint is the name of the Traefik entry point for public UDP port p.
func UDPEntryPoint(p int) string { return "udp-" + strconv.Itoa(p) }

// TCPTLS says how a TCP route handles TLS.
type TCPTLS struct {
	// Passthrough sends the TLS connection, still encrypted, to the service
	// (which holds the certificate); Traefik only reads the SNI.
	Passthrough bool `json:"passthrough,omitempty"`
	// CertResolver is the ACME resolver when Traefik terminates TLS; empty:
	// Traefik's default certificate.
	CertResolver string `json:"certResolver,omitempty"`
}

// TCPRoute is one Traefik TCP router and the backend it forwards to.
type TCPRoute struct {
	// Name is the Traefik TCP router (and service) name, unique among TCP routes.
	Name    string  `json:"name"`
	Service string  `json:"service"`
	Dialect Dialect `json:"dialect"`
	// Rule is HostSNI(`*`) (every connection on the entry point) or
	// HostSNI alternatives.
	Rule string `json:"rule"`
	// SNI are the TLS server names routed; nil: every connection.
	SNI         []string `json:"sni,omitempty"`
	EntryPoints []string `json:"entryPoints"`
	// TLS is nil for plain TCP.
	TLS *TCPTLS `json:"tls,omitempty"`
	// Address is the service's VIP, host:port, where Traefik forwards
	// connections unless Tasks is set.
	Address string `json:"address"`
	// Tasks says Traefik balances over Servers, the host:port of the
	// service's running tasks (none: connections are closed), not Address.
	Tasks   bool     `json:"tasks,omitempty"`
	Servers []string `json:"servers,omitempty"`
	// ProxyProtocol is the PROXY protocol version (1 or 2) Traefik speaks to
	// the backend so that it sees the client's address; 0: none.
	ProxyProtocol int `json:"proxyProtocol,omitempty"`
}

// UDPRoute is one Traefik UDP router: every datagram on its entry point
// goes to Address, the service's VIP, or with Tasks to one of Servers, as
// for a TCPRoute.
type UDPRoute struct {
	Name        string   `json:"name"`
	Service     string   `json:"service"`
	Dialect     Dialect  `json:"dialect"`
	EntryPoints []string `json:"entryPoints"`
	Address     string   `json:"address"`
	Tasks       bool     `json:"tasks,omitempty"`
	Servers     []string `json:"servers,omitempty"`
}

// Targets are the host:port addresses Traefik forwards r's connections to.
func (r TCPRoute) Targets() []string { return targets(r.Address, r.Tasks, r.Servers) }

// Targets are the host:port addresses Traefik forwards r's datagrams to.
func (r UDPRoute) Targets() []string { return targets(r.Address, r.Tasks, r.Servers) }

func targets(vip string, tasks bool, servers []string) []string {
	if tasks {
		return servers
	}
	return []string{vip}
}

// l4Backend is where a TCP or UDP route to port forwards: the service's
// VIP address and, with task-level balancing (the same choice as HTTP's,
// see taskAddrs), its tasks' addresses. ok is false when a malformed label
// skips the route.
func (b *svcBuild) l4Backend(port int, networkLabels ...string) (vip string, tasks bool, servers []string, ok bool) {
	servers, tasks, ok = b.taskAddrs(port, networkLabels...)
	return b.o.addr(b.svc.Name, port), tasks, servers, ok
}

func (o Options) addr(service string, port int) string {
	if o.BackendAddress != nil {
		return o.BackendAddress(service, port)
	}
	return service + ":" + strconv.Itoa(port)
}

// entryPoint resolves an entry point label value for proto ("tcp" or
// "udp"): a declared public port number or the name of its entry point;
// for TCP with TLS by SNI also the HTTPS entry point.
func (o Options) entryPoint(proto, v string, sni bool) (string, error) {
	v = strings.TrimSpace(v)
	ports, name := o.TCPPorts, TCPEntryPoint
	if proto == "udp" {
		ports, name = o.UDPPorts, UDPEntryPoint
	}
	declared := func() string {
		if len(ports) == 0 {
			return fmt.Sprintf("edge declares no %s ports (-%s-ports)", strings.ToUpper(proto), proto)
		}
		s := make([]string, len(ports))
		for i, p := range ports {
			s[i] = strconv.Itoa(p)
		}
		return fmt.Sprintf("edge's -%s-ports declares %s", proto, strings.Join(s, ","))
	}
	if p, err := strconv.Atoi(v); err == nil {
		for _, d := range ports {
			if d == p {
				return name(p), nil
			}
		}
		return "", fmt.Errorf("%w: public %s port %d is not declared as a Traefik entry point (%s); add it to -%s-ports, restart Traefik with the flags `edge entrypoints` prints, or use a declared port", ErrBadPort, strings.ToUpper(proto), p, declared(), proto)
	}
	for _, d := range ports {
		if strings.EqualFold(v, name(d)) {
			return name(d), nil
		}
	}
	if proto == "tcp" && strings.EqualFold(v, o.httpsEP()) {
		if !sni {
			return "", fmt.Errorf("%w: entry point %s carries HTTPS: a TCP route there needs TLS server names (sni), or it would take every connection", ErrBadName, v)
		}
		return o.httpsEP(), nil
	}
	extra := ""
	if proto == "tcp" {
		extra = ", or " + o.httpsEP() + " for TLS by SNI"
	}
	return "", fmt.Errorf("%w: entry point %q is not one edge may fill with %s routes (%s%s)", ErrBadName, v, strings.ToUpper(proto), declared(), extra)
}

// parseSNI parses comma-separated TLS server names.
func parseSNI(v string) ([]string, error) { return parseHosts(v) }

// sniRule is the HostSNI rule for names; nil: every connection.
func sniRule(names []string) string {
	if len(names) == 0 {
		return "HostSNI(`*`)"
	}
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = "HostSNI(`" + n + "`)"
	}
	return strings.Join(parts, " || ")
}

// parseTCPRule parses a Traefik TCP rule edge supports: HostSNI(`*`), or
// HostSNI alternatives (HostSNI(`a`) || HostSNI(`b`), or v2's
// HostSNI(`a`, `b`)). It returns the names (nil for `*`).
func parseTCPRule(v string) ([]string, error) {
	bad := func(why string) error {
		return fmt.Errorf("%w %q: %s; edge supports HostSNI(`*`) and HostSNI(`a.example.org`) || HostSNI(`b.example.org`)", ErrBadRule, v, why)
	}
	var names []string
	star := false
	for _, alt := range strings.Split(v, "||") {
		a := strings.TrimSpace(alt)
		for strings.HasPrefix(a, "(") && strings.HasSuffix(a, ")") && !strings.HasPrefix(a, "HostSNI") {
			a = strings.TrimSpace(a[1 : len(a)-1])
		}
		if !strings.HasPrefix(a, "HostSNI") {
			return nil, bad("only the HostSNI matcher is supported")
		}
		a = strings.TrimSpace(strings.TrimPrefix(a, "HostSNI"))
		if !strings.HasPrefix(a, "(") || !strings.HasSuffix(a, ")") {
			return nil, bad("HostSNI takes `quoted` names in parentheses")
		}
		for _, arg := range strings.Split(a[1:len(a)-1], ",") {
			arg = strings.TrimSpace(arg)
			if len(arg) < 2 || (arg[0] != '`' && arg[0] != '"') || arg[len(arg)-1] != arg[0] {
				return nil, bad("HostSNI takes `quoted` names")
			}
			n := strings.ToLower(arg[1 : len(arg)-1])
			if n == "*" {
				star = true
				continue
			}
			if err := checkHost(n); err != nil {
				return nil, err
			}
			names = append(names, n)
		}
	}
	if star {
		if len(names) > 0 {
			return nil, bad("HostSNI(`*`) cannot be combined with names")
		}
		return nil, nil
	}
	return finiteHosts(names).hosts, nil
}

// l4Name checks a TCP/UDP router or service name taken from a label key.
func l4Name(n string) error {
	if n == "" {
		return fmt.Errorf("%w: empty name", ErrEmpty)
	}
	for i := 0; i < len(n); i++ {
		c := n[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return fmt.Errorf("%w %q: use letters, digits, - and _", ErrBadName, n)
		}
	}
	return nil
}

// buildL4 reads the TCP and UDP labels: edge.tcp.*/edge.udp.* or, without
// them, traefik.tcp.*/traefik.udp.* (when traefik.enable allows).
func (b *svcBuild) buildL4(traefikOn bool) {
	edgeKeys := append(b.sortedKeys("edge.tcp."), b.sortedKeys("edge.udp.")...)
	traefikKeys := append(b.sortedKeys("traefik.tcp."), b.sortedKeys("traefik.udp.")...)
	switch {
	case len(edgeKeys) > 0:
		if len(traefikKeys) > 0 {
			b.ignore("", "traefik.tcp.*/traefik.udp.* labels are ignored because edge.tcp.*/edge.udp.* labels are present; use one dialect per service")
		}
		b.buildEdgeL4(edgeKeys)
	case len(traefikKeys) > 0 && traefikOn:
		b.buildTraefikL4(traefikKeys)
	}
}

type l4Spec struct {
	proto    string // "tcp" or "udp"
	name     string
	port     int
	ep       string // label value
	epKey    string
	sni      []string
	sniSet   bool
	tls      string // "", "passthrough", "terminate", "none"
	resolver string
	proxy    int
	bad      bool
}

func parseProxyVersion(v string) (int, error) {
	switch strings.TrimSpace(v) {
	case "1":
		return 1, nil
	case "2":
		return 2, nil
	}
	return 0, fmt.Errorf("%w PROXY protocol version %q: use 1 or 2", ErrBadName, v)
}

// buildEdgeL4 reads edge.tcp.<name>.* and edge.udp.<name>.*.
func (b *svcBuild) buildEdgeL4(keys []string) {
	specs := map[string]*l4Spec{}
	var order []string
	for _, k := range keys {
		v := b.svc.Labels[k]
		seg := strings.SplitN(k, ".", 4)
		proto := strings.ToLower(seg[1])
		if len(seg) < 4 || seg[2] == "" || seg[3] == "" {
			b.skip(k, "incomplete label; expected edge.%s.<name>.<option>", proto)
			continue
		}
		id := proto + "/" + seg[2]
		s := specs[id]
		if s == nil {
			s = &l4Spec{proto: proto, name: seg[2]}
			specs[id] = s
			order = append(order, id)
		}
		if err := l4Name(seg[2]); err != nil {
			b.skip(k, "%v", err)
			s.bad = true
			continue
		}
		var err error
		switch attr := strings.ToLower(seg[3]); {
		case attr == "port":
			s.port, err = parsePort(v)
		case attr == "entrypoint":
			s.ep, s.epKey = v, k
			if strings.TrimSpace(v) == "" {
				err = fmt.Errorf("%w: empty entry point", ErrEmpty)
			}
		case proto == "tcp" && attr == "sni":
			s.sni, err = parseSNI(v)
			s.sniSet = true
		case proto == "tcp" && attr == "tls":
			s.tls = strings.ToLower(strings.TrimSpace(v))
			switch s.tls {
			case "passthrough", "terminate", "none":
			case "false":
				s.tls = "none"
			default:
				err = fmt.Errorf("%w %q: use passthrough (the service does TLS), terminate (Traefik does) or none", ErrBadName, v)
			}
		case proto == "tcp" && attr == "certresolver":
			s.resolver, err = parseName(v, "cert resolver")
		case proto == "tcp" && attr == "proxy-protocol":
			s.proxy, err = parseProxyVersion(v)
		default:
			known := "port, entrypoint"
			if proto == "tcp" {
				known += ", sni, tls, certresolver, proxy-protocol"
			}
			err = fmt.Errorf("unknown edge.%s option; known: %s", proto, known)
		}
		if err != nil {
			b.skip(k, "%v", err)
			s.bad = true
		}
	}
	sort.Strings(order)
	var ok bool
	for _, id := range order {
		s := specs[id]
		if s.bad {
			continue
		}
		prefix := "edge." + s.proto + "." + s.name + "."
		if s.port == 0 {
			b.skip(prefix+"port", "%sport is required: the port the service listens on inside its containers", prefix)
			continue
		}
		if s.proto == "udp" {
			if s.ep == "" {
				b.skip(prefix+"entrypoint", "%sentrypoint is required: the public UDP port (one of edge's -udp-ports)", prefix)
				continue
			}
			ep, err := b.o.entryPoint("udp", s.ep, false)
			if err != nil {
				b.skip(s.epKey, "%v", err)
				continue
			}
			if !b.networkOK("edge.network") {
				return
			}
			r := UDPRoute{Name: b.svc.Name + "-udp-" + s.name, Service: b.svc.Name, Dialect: DialectEdge, EntryPoints: []string{ep}}
			if r.Address, r.Tasks, r.Servers, ok = b.l4Backend(s.port, "edge.network"); !ok {
				return
			}
			b.udp = append(b.udp, r)
			continue
		}
		r := TCPRoute{Name: b.svc.Name + "-tcp-" + s.name, Service: b.svc.Name, Dialect: DialectEdge,
			SNI: s.sni, ProxyProtocol: s.proxy}
		mode := s.tls
		if mode == "" {
			switch {
			case s.resolver != "":
				mode = "terminate"
			case s.sniSet:
				mode = "passthrough"
			default:
				mode = "none"
			}
		}
		switch {
		case s.resolver != "" && mode != "terminate":
			b.skip(prefix+"certresolver", "a cert resolver needs %stls=terminate", prefix)
			continue
		case s.sniSet && mode == "none":
			b.skip(prefix+"sni", "routing by SNI needs TLS: set %stls=passthrough or terminate", prefix)
			continue
		case mode == "passthrough":
			r.TLS = &TCPTLS{Passthrough: true}
		case mode == "terminate":
			r.TLS = &TCPTLS{CertResolver: s.resolver}
		}
		epVal, epKey := s.ep, s.epKey
		if epVal == "" {
			if !s.sniSet {
				b.skip(prefix+"entrypoint", "%sentrypoint is required: the public TCP port (one of edge's -tcp-ports), or set %ssni to route TLS by name on %s", prefix, prefix, b.o.httpsEP())
				continue
			}
			epVal, epKey = b.o.httpsEP(), prefix+"sni"
		}
		ep, err := b.o.entryPoint("tcp", epVal, len(r.SNI) > 0)
		if err != nil {
			b.skip(epKey, "%v", err)
			continue
		}
		if !b.networkOK("edge.network") {
			return
		}
		if r.Address, r.Tasks, r.Servers, ok = b.l4Backend(s.port, "edge.network"); !ok {
			return
		}
		r.EntryPoints = []string{ep}
		r.Rule = sniRule(r.SNI)
		b.tcp = append(b.tcp, r)
	}
}

type l4Router struct {
	rule, svc, epKey string
	sni              []string
	ruleSet          bool
	eps              []string
	tls, passthrough *bool
	resolver         string
	bad              bool
}

type l4Service struct {
	port, proxy int
	bad         bool
}

// buildTraefikL4 reads traefik.tcp.routers.<r>.* / traefik.tcp.services.<s>.*
// and the traefik.udp.* equivalents.
func (b *svcBuild) buildTraefikL4(keys []string) {
	routers := map[string]*l4Router{} // "tcp/r"
	services := map[string]*l4Service{}
	get := func(m map[string]*l4Router, id string) *l4Router {
		if m[id] == nil {
			m[id] = &l4Router{}
		}
		return m[id]
	}
	svcOf := func(id string) *l4Service {
		if services[id] == nil {
			services[id] = &l4Service{}
		}
		return services[id]
	}
	for _, k := range keys {
		v := b.svc.Labels[k]
		seg := strings.Split(k, ".")
		proto := strings.ToLower(seg[1])
		if len(seg) < 5 || seg[3] == "" {
			b.skip(k, "incomplete Traefik label; expected traefik.%s.routers.<name>.<option> or traefik.%s.services.<name>.<option>", proto, proto)
			continue
		}
		name, attr := seg[3], strings.ToLower(strings.Join(seg[4:], "."))
		id := proto + "/" + name
		var err error
		if err = l4Name(name); err != nil {
			b.skip(k, "%v", err)
			continue
		}
		switch kind := strings.ToLower(seg[2]); {
		case kind == "routers":
			r := get(routers, id)
			switch {
			case attr == "entrypoints":
				r.eps, err = parseNames(v, "entry point")
				r.epKey = k
			case attr == "service":
				r.svc = strings.TrimSpace(v)
				err = l4Name(r.svc)
				if err != nil {
					err = fmt.Errorf("%w (services of other providers are not supported for TCP/UDP)", err)
				}
			case proto == "tcp" && attr == "rule":
				r.sni, err = parseTCPRule(v)
				r.ruleSet, r.rule = true, k
			case proto == "tcp" && attr == "tls":
				var on bool
				on, err = parseBool(v)
				r.tls = &on
			case proto == "tcp" && attr == "tls.passthrough":
				var on bool
				on, err = parseBool(v)
				r.passthrough = &on
			case proto == "tcp" && attr == "tls.certresolver":
				r.resolver, err = parseName(v, "cert resolver")
			default:
				err = fmt.Errorf("%s router option not supported by edge; the router is skipped rather than routed without it", strings.ToUpper(proto))
			}
			if err != nil {
				r.bad = true
			}
		case kind == "services":
			s := svcOf(id)
			switch {
			case attr == "loadbalancer.server.port":
				s.port, err = parsePort(v)
			case proto == "tcp" && attr == "loadbalancer.proxyprotocol.version":
				s.proxy, err = parseProxyVersion(v)
			default:
				err = fmt.Errorf("%s service option not supported by edge; routers using this service are skipped", strings.ToUpper(proto))
			}
			if err != nil {
				s.bad = true
			}
		default:
			err = fmt.Errorf("unknown Traefik %s label; edge reads traefik.%s.routers.* and traefik.%s.services.*", strings.ToUpper(proto), proto, proto)
		}
		if err != nil {
			b.skip(k, "%v", err)
		}
	}
	ids := make([]string, 0, len(routers))
	for id := range routers {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	netChecked := false
	for _, id := range ids {
		r := routers[id]
		if r.bad {
			continue
		}
		proto, name, _ := strings.Cut(id, "/")
		prefix := "traefik." + proto + ".routers." + name + "."
		// The service: named, or the only one of this protocol.
		sname := r.svc
		if sname == "" {
			var only []string
			for sid := range services {
				if p, n, _ := strings.Cut(sid, "/"); p == proto {
					only = append(only, n)
				}
			}
			if len(only) != 1 {
				b.skip(prefix+"service", "router %s must name its service with %sservice: the labels define %d %s services", name, prefix, len(only), strings.ToUpper(proto))
				continue
			}
			sname = only[0]
		}
		s, ok := services[proto+"/"+sname]
		switch {
		case !ok || s.port == 0:
			b.skip(prefix+"service", "service %s needs traefik.%s.services.%s.loadbalancer.server.port", sname, proto, sname)
			continue
		case s.bad:
			b.diags = append(b.diags, Diagnostic{Service: b.svc.Name, Skipped: true,
				Reason: fmt.Sprintf("%s router %s skipped: its service %s has a skipped label", strings.ToUpper(proto), name, sname)})
			continue
		}
		if len(r.eps) == 0 {
			b.skip(prefix+"entrypoints", "%sentrypoints is required: a declared public port's entry point (%s)", prefix, map[string]string{"tcp": TCPEntryPoint(25), "udp": UDPEntryPoint(9987)}[proto]+", …")
			continue
		}
		var tls *TCPTLS
		if proto == "tcp" {
			if !r.ruleSet {
				b.skip(prefix+"rule", "router %s has no rule; add %srule, e.g. HostSNI(`*`)", name, prefix)
				continue
			}
			pass := r.passthrough != nil && *r.passthrough
			on := (r.tls != nil && *r.tls) || pass || r.resolver != ""
			switch {
			case r.tls != nil && !*r.tls && (pass || r.resolver != ""):
				b.skip(prefix+"tls", "router %s has TLS options but tls=false", name)
				continue
			case pass && r.resolver != "":
				b.skip(prefix+"tls.certresolver", "router %s: a passthrough router cannot have a cert resolver (the service holds the certificate)", name)
				continue
			case len(r.sni) > 0 && !on:
				b.skip(r.rule, "router %s routes by SNI, which needs TLS: set %stls.passthrough=true or %stls=true", name, prefix, prefix)
				continue
			case on:
				tls = &TCPTLS{Passthrough: pass, CertResolver: r.resolver}
			}
		}
		var eps []string
		bad := false
		for _, e := range r.eps {
			ep, err := b.o.entryPoint(proto, e, len(r.sni) > 0)
			if err != nil {
				b.skip(r.epKey, "%v", err)
				bad = true
				break
			}
			eps = append(eps, ep)
		}
		if bad {
			continue
		}
		if !netChecked {
			if !b.networkOK("traefik.docker.network", "traefik.swarm.network") {
				return
			}
			netChecked = true
		}
		vip, tasks, servers, ok := b.l4Backend(s.port, "traefik.docker.network", "traefik.swarm.network")
		if !ok {
			return
		}
		if proto == "udp" {
			b.udp = append(b.udp, UDPRoute{Name: b.svc.Name + "-" + name, Service: b.svc.Name, Dialect: DialectTraefikV2,
				EntryPoints: eps, Address: vip, Tasks: tasks, Servers: servers})
			continue
		}
		b.tcp = append(b.tcp, TCPRoute{Name: b.svc.Name + "-" + name, Service: b.svc.Name, Dialect: DialectTraefikV2,
			Rule: sniRule(r.sni), SNI: r.sni, EntryPoints: eps, TLS: tls, ProxyProtocol: s.proxy,
			Address: vip, Tasks: tasks, Servers: servers})
	}
}

// l4Claims tracks who owns TCP entry points and UDP ports while Build walks
// the services, first claim first.
type l4Claims struct {
	tcpNames, udpNames map[string]string // router name -> service
	tcpAll             map[string]string // entry point -> service routing every connection (HostSNI(`*`))
	tcpSNI             map[string]string // entry point -> a service routing by SNI there
	sni                map[string]string // entry point + SNI -> service
	udp                map[string]string // entry point -> service
}

func newL4Claims() *l4Claims {
	return &l4Claims{tcpNames: map[string]string{}, udpNames: map[string]string{}, tcpAll: map[string]string{},
		tcpSNI: map[string]string{}, sni: map[string]string{}, udp: map[string]string{}}
}

// add accepts the TCP and UDP routes of one service that take nothing
// another route holds: a port routed whole belongs to one route, a TLS
// server name is a host (the same map as HTTP hosts: an SNI route cannot
// take an HTTP service's host, nor the reverse).
func (c *l4Claims) add(t *Table, diags *[]Diagnostic, b *svcBuild, hosts map[string]string) {
	svc := b.svc.Name
	refuse := func(name, reason string, args ...any) {
		*diags = append(*diags, Diagnostic{Service: svc, Skipped: true,
			Reason: fmt.Sprintf("router %s: ", name) + fmt.Sprintf(reason, args...)})
	}
tcp:
	for _, r := range b.tcp {
		if owner, ok := c.tcpNames[r.Name]; ok {
			refuse(r.Name, "TCP router name %s is already used by service %s; rename the router or service", r.Name, owner)
			continue
		}
		for _, ep := range r.EntryPoints {
			if owner, ok := c.tcpAll[ep]; ok {
				refuse(r.Name, "entry point %s (public port) already carries every connection to service %s; use another declared port", ep, owner)
				continue tcp
			}
			if len(r.SNI) == 0 {
				if owner, ok := c.tcpSNI[ep]; ok {
					refuse(r.Name, "entry point %s already routes TLS by name to service %s; a route taking every connection needs a port of its own", ep, owner)
					continue tcp
				}
				continue
			}
			for _, n := range r.SNI {
				if owner, ok := c.sni[ep+"\x00"+n]; ok {
					refuse(r.Name, "TLS name %s on entry point %s is already routed to service %s", n, ep, owner)
					continue tcp
				}
			}
		}
		for _, n := range r.SNI {
			if owner, ok := hosts[n]; ok && owner != svc {
				refuse(r.Name, "host %s belongs to service %s, which routed it first; a host is served by one service", n, owner)
				continue tcp
			}
		}
		c.tcpNames[r.Name] = svc
		for _, ep := range r.EntryPoints {
			if len(r.SNI) == 0 {
				c.tcpAll[ep] = svc
				continue
			}
			c.tcpSNI[ep] = svc
			for _, n := range r.SNI {
				c.sni[ep+"\x00"+n] = svc
			}
		}
		for _, n := range r.SNI {
			hosts[n] = svc
		}
		t.TCP = append(t.TCP, r)
	}
udp:
	for _, r := range b.udp {
		if owner, ok := c.udpNames[r.Name]; ok {
			refuse(r.Name, "UDP router name %s is already used by service %s; rename the router or service", r.Name, owner)
			continue
		}
		for _, ep := range r.EntryPoints {
			if owner, ok := c.udp[ep]; ok {
				refuse(r.Name, "UDP entry point %s (public port) is already routed to service %s; use another declared port", ep, owner)
				continue udp
			}
		}
		c.udpNames[r.Name] = svc
		for _, ep := range r.EntryPoints {
			c.udp[ep] = svc
		}
		t.UDP = append(t.UDP, r)
	}
}
