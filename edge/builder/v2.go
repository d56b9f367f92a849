package builder

import (
	"fmt"
	"sort"
	"strings"
)

type v2Router struct {
	name        string
	rule        string
	hosts       []string
	hostSet     hostSet
	eps         []string
	middlewares []string
	service     string
	priority    int
	tls         *bool
	resolver    string
	bad         bool // a label of this router was skipped
	labelKey    string
}

type v2Service struct {
	port   int
	scheme string
	lb     lbOptions
	bad    bool
}

// buildV2 reads Traefik v2/v3 labels: traefik.http.routers.<r>.* and
// traefik.http.services.<s>.loadbalancer.server.*. Each router is a route;
// a malformed label skips only the router it belongs to (or the routers that
// use the service it belongs to).
func (b *svcBuild) buildV2() {
	routers := map[string]*v2Router{}
	services := map[string]*v2Service{}
	labelMiddlewares := map[string]bool{} // defined by labels, unsupported
	mwLabels := map[string][]string{}     // middleware name -> its label keys
	router := func(n string) *v2Router {
		if routers[n] == nil {
			routers[n] = &v2Router{name: n}
		}
		return routers[n]
	}
	service := func(n string) *v2Service {
		if services[n] == nil {
			services[n] = &v2Service{scheme: "http"}
		}
		return services[n]
	}

	for _, k := range b.sortedKeys("traefik.") {
		v := b.svc.Labels[k]
		seg := strings.Split(k, ".")
		lk := strings.ToLower(k)
		if len(seg) < 3 || !strings.EqualFold(seg[1], "http") {
			switch {
			case lk == "traefik.enable", lk == "traefik.docker.network", lk == "traefik.swarm.network",
				lk == "traefik.docker.lbswarm", lk == "traefik.swarm.lbswarm": // lbswarm: lbMode's
			case strings.HasPrefix(lk, "traefik.tcp."), strings.HasPrefix(lk, "traefik.udp."):
				// buildL4's.
			case strings.HasPrefix(lk, "traefik.frontend."), strings.HasPrefix(lk, "traefik.backend"), lk == "traefik.port", lk == "traefik.protocol":
				// Reported once by build when dialects are mixed.
			default:
				b.ignore(k, "label not used by edge")
			}
			continue
		}
		if len(seg) < 5 || seg[3] == "" {
			b.ignore(k, "incomplete Traefik label; expected traefik.http.routers.<name>.<option> or traefik.http.services.<name>.<option>")
			continue
		}
		name, attr := seg[3], strings.ToLower(strings.Join(seg[4:], "."))
		var err error
		switch strings.ToLower(seg[2]) {
		case "routers":
			r := router(name)
			switch attr {
			case "rule":
				r.rule, r.hosts, r.hostSet, err = parseRule(v)
				r.labelKey = k
			case "entrypoints":
				r.eps, err = parseNames(v, "entry point")
			case "middlewares":
				r.middlewares, err = parseNames(v, "middleware")
			case "service":
				r.service, err = parseName(v, "service")
			case "priority":
				r.priority, err = parsePriority(v)
			case "tls":
				var on bool
				on, err = parseBool(v)
				r.tls = &on
			case "tls.certresolver":
				r.resolver, err = parseName(v, "cert resolver")
			default:
				err = fmt.Errorf("router option not supported by edge; the router is skipped rather than routed without it")
			}
			if err != nil {
				r.bad = true
			}
		case "services":
			s := service(name)
			switch attr {
			case "loadbalancer.server.port":
				s.port, err = parsePort(v)
			case "loadbalancer.server.scheme":
				s.scheme, err = parseScheme(v)
			case "loadbalancer.passhostheader":
				var on bool
				on, err = parseBool(v)
				if err == nil && !on {
					err = fmt.Errorf("passHostHeader=false is not supported by edge")
				}
			default:
				var handled bool
				if a, found := strings.CutPrefix(attr, "loadbalancer."); found {
					handled, err = s.lb.parse(a, v)
				}
				if !handled {
					err = fmt.Errorf("service option not supported by edge; routers using this service are skipped")
				}
			}
			if err != nil {
				s.bad = true
			}
		case "middlewares":
			mwLabels[name] = append(mwLabels[name], k)
			continue
		default:
			err = fmt.Errorf("unknown Traefik HTTP label; edge reads traefik.http.routers.* and traefik.http.services.*")
		}
		if err != nil {
			b.skip(k, "%v", err)
		}
	}

	redirects := b.v2Middlewares(mwLabels, labelMiddlewares)

	if len(routers) == 0 {
		b.diags = append(b.diags, Diagnostic{Service: b.svc.Name, Skipped: true,
			Reason: "Traefik v2 labels define no router; add traefik.http.routers.<name>.rule"})
		return
	}
	if !b.networkOK("traefik.docker.network", "traefik.swarm.network") {
		return
	}
	names := make([]string, 0, len(routers))
	for n := range routers {
		names = append(names, n)
	}
	sort.Strings(names)
	prefix := "traefik.http.routers."
	for _, n := range names {
		r := routers[n]
		if r.bad {
			continue
		}
		if r.rule == "" {
			b.skip(prefix+n+".rule", "router %s has no rule; add traefik.http.routers.%s.rule, e.g. Host(`a.example.org`)", n, n)
			continue
		}
		route := Route{
			Name:        b.svc.Name + "-" + n,
			Service:     b.svc.Name,
			Dialect:     DialectTraefikV2,
			Rule:        r.rule,
			Hosts:       r.hosts,
			EntryPoints: r.eps,
			Middlewares: r.middlewares,
			Priority:    r.priority,
		}
		route.Middlewares = replaceRedirects(route.Middlewares, redirects)
		if m := labelMiddlewareIn(r.middlewares, labelMiddlewares); m != "" {
			b.skip(prefix+n+".middlewares", "router %s uses middleware %s, which is defined by labels; define it in Traefik's file provider and reference it as %s@file", n, m, m)
			continue
		}
		switch {
		case r.resolver != "" && r.tls != nil && !*r.tls:
			b.skip(prefix+n+".tls.certresolver", "router %s has a cert resolver but tls=false", n)
			continue
		case r.resolver != "" || (r.tls != nil && *r.tls):
			route.TLS = &TLS{CertResolver: r.resolver}
		}
		// Backend: explicit, the only one defined, or none.
		sname := r.service
		switch {
		case strings.Contains(sname, "@"):
			route.Backend = sname
		case sname == "" && len(services) == 1:
			for s := range services {
				sname = s
			}
			fallthrough
		case sname != "":
			s, ok := services[sname]
			switch {
			case !ok:
				b.skip(prefix+n+".service", "router %s uses service %s, which no traefik.http.services.%s.loadbalancer.server.port label defines", n, sname, sname)
				continue
			case s.bad:
				b.diags = append(b.diags, Diagnostic{Service: b.svc.Name, Skipped: true,
					Reason: fmt.Sprintf("router %s skipped: its service %s has a skipped label", n, sname)})
				continue
			case s.port == 0:
				b.skip(prefix+n+".service", "service %s needs traefik.http.services.%s.loadbalancer.server.port: Swarm services publish no port edge could guess", sname, sname)
				continue
			}
			if err := s.lb.apply(&route); err != nil {
				b.diags = append(b.diags, Diagnostic{Service: b.svc.Name, Skipped: true,
					Reason: fmt.Sprintf("router %s skipped: service %s: %v", n, sname, err)})
				continue
			}
			route.Backend = b.svc.Name + "-" + sname
			if !b.target(&route, s.scheme, s.port, "traefik.docker.network", "traefik.swarm.network") {
				continue
			}
		case len(services) == 0:
			b.skip(prefix+n+".rule", "router %s has no service port; add traefik.http.services.<name>.loadbalancer.server.port", n)
			continue
		default:
			b.skip(prefix+n+".rule", "router %s must name its service with traefik.http.routers.%s.service: the labels define several", n, n)
			continue
		}
		if route.EntryPoints == nil {
			if route.TLS != nil {
				route.EntryPoints = []string{b.o.httpsEP()}
			} else {
				route.EntryPoints = []string{b.o.httpEP()}
			}
		}
		if route.TLS != nil && !containsFold(route.EntryPoints, b.o.httpEP()) {
			route.RedirectFrom = []string{b.o.httpEP()}
		}
		b.addRoute(route, r.hostSet)
	}
	// A router of the service's own for the same rule on the HTTP entry
	// point (the usual v2 pattern: one router redirects, one serves TLS)
	// replaces the automatic redirect.
	for i := range b.routes {
		r := &b.routes[i]
		if len(r.RedirectFrom) == 0 {
			continue
		}
		for _, o := range b.routes {
			if o.Rule == r.Rule && o.Name != r.Name && containsFold(o.EntryPoints, b.o.httpEP()) {
				r.RedirectFrom = nil
				break
			}
		}
	}
}

// v2Middlewares sorts the middlewares the labels define: a plain redirect
// to HTTPS (redirectscheme.scheme=https, the usual v2 pattern) becomes edge's
// own redirect middleware; any other is reported and marked unsupported.
func (b *svcBuild) v2Middlewares(mwLabels map[string][]string, unsupported map[string]bool) (redirects map[string]bool) {
	redirects = map[string]bool{}
	names := make([]string, 0, len(mwLabels))
	for n := range mwLabels {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		keys := mwLabels[name]
		ok, scheme := true, false
		for _, k := range keys {
			attr := strings.ToLower(strings.Join(strings.Split(k, ".")[4:], "."))
			v := strings.TrimSpace(b.svc.Labels[k])
			switch {
			case attr == "redirectscheme.scheme" && strings.EqualFold(v, "https"):
				scheme = true
			case attr == "redirectscheme.permanent":
				_, err := parseBool(v)
				ok = ok && err == nil
			default:
				ok = false
			}
		}
		if ok && scheme {
			redirects[name] = true
			continue
		}
		unsupported[name] = true
		b.ignore(keys[0], "middlewares defined in labels are not supported by edge, except redirectscheme.scheme=https; define %s in Traefik's file provider and reference it as %s@file", name, name)
	}
	return redirects
}

// middlewareBase strips the provider suffixes that name the labels' own
// middlewares.
func middlewareBase(m string) string {
	return strings.TrimSuffix(strings.TrimSuffix(m, "@swarm"), "@docker")
}

func replaceRedirects(refs []string, redirects map[string]bool) []string {
	if len(redirects) == 0 || refs == nil {
		return refs
	}
	out := make([]string, len(refs))
	for i, m := range refs {
		out[i] = m
		if redirects[middlewareBase(m)] {
			out[i] = RedirectMiddleware
		}
	}
	return out
}

func labelMiddlewareIn(refs []string, defined map[string]bool) string {
	for _, m := range refs {
		if base := middlewareBase(m); defined[base] {
			return base
		}
	}
	return ""
}
