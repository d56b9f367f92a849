package builder

import (
	"fmt"
	"strings"
)

// hasV1 reports whether the service carries Traefik v1 routing labels.
func (b *svcBuild) hasV1() bool {
	for k := range b.svc.Labels {
		lk := strings.ToLower(k)
		if strings.HasPrefix(lk, "traefik.frontend.") || strings.HasPrefix(lk, "traefik.backend") ||
			lk == "traefik.port" || lk == "traefik.protocol" {
			return true
		}
	}
	return false
}

// buildV1 reads the seed's Traefik v1 labels: traefik.frontend.rule,
// traefik.port, traefik.backend and friends. Unknown traefik.frontend.*
// labels skip the route, since they may have protected it (auth, whitelist)
// and edge would rather not route than route differently.
func (b *svcBuild) buildV1() {
	var (
		r        = Route{Name: b.svc.Name, Service: b.svc.Name, Dialect: DialectTraefikV1, Backend: b.svc.Name}
		port     int
		scheme   = "http"
		rule     string
		eps      []string
		redirect bool
		ok       = true
	)
	for _, k := range b.sortedKeys("traefik.") {
		v := b.svc.Labels[k]
		lk := strings.ToLower(k)
		var err error
		switch {
		case lk == "traefik.enable", lk == "traefik.docker.network", lk == "traefik.swarm.network", lk == "traefik.frontend.passhostheader" && strings.TrimSpace(strings.ToLower(v)) == "true":
		case lk == "traefik.frontend.rule":
			rule, r.Hosts, r.PathPrefix, err = v1Rule(v)
		case lk == "traefik.port":
			port, err = parsePort(v)
		case lk == "traefik.backend":
			var n string
			n, err = parseName(v, "backend")
			if err == nil && strings.Contains(n, "@") {
				err = fmt.Errorf("%w: backend %q: no @ in a v1 backend name", ErrBadName, v)
			}
			r.Backend, b.v1Backend = n, n
		case lk == "traefik.protocol":
			scheme, err = parseScheme(v)
		case lk == "traefik.frontend.entrypoints":
			eps, err = parseNames(v, "entry point")
		case lk == "traefik.frontend.priority":
			r.Priority, err = parsePriority(v)
		case lk == "traefik.frontend.redirect.entrypoint":
			_, err = parseName(v, "entry point")
			redirect = true
		case strings.HasPrefix(lk, "traefik.frontend."):
			err = fmt.Errorf("Traefik v1 frontend option not supported by edge; remove it or use edge.* labels with a Traefik middleware")
		case strings.HasPrefix(lk, "traefik.backend."):
			b.ignore(k, "Traefik v1 backend option not supported by edge; the Swarm VIP load-balances")
		case strings.HasPrefix(lk, "traefik.http."), strings.HasPrefix(lk, "traefik.tcp."), strings.HasPrefix(lk, "traefik.udp."):
			// Reported once by build when dialects are mixed.
		default:
			b.ignore(k, "label not used by edge")
		}
		if err != nil {
			b.skip(k, "%v", err)
			ok = false
		}
	}
	if !ok {
		return
	}
	if rule == "" {
		b.skip("traefik.frontend.rule", "traefik.frontend.rule is required, e.g. Host:a.example.org")
		return
	}
	if port == 0 {
		b.skip("traefik.port", "traefik.port is required: the port the service listens on inside its containers")
		return
	}
	r.Rule = rule
	// The seed's Traefik v1 had entry points "http" and "https", with ACME
	// on https and a global redirect from http; map them onto v3's.
	https := b.o.CertResolver != ""
	if eps != nil {
		https = false
		for _, ep := range eps {
			switch strings.ToLower(ep) {
			case "https":
				https = true
			case "http":
			default:
				r.EntryPoints = append(r.EntryPoints, ep)
			}
		}
		if containsFold(eps, "http") && !https {
			r.EntryPoints = append(r.EntryPoints, b.o.httpEP())
		}
		if https {
			r.EntryPoints = append(r.EntryPoints, b.o.httpsEP())
		}
	}
	if https {
		r.TLS = &TLS{CertResolver: b.o.CertResolver}
		redirect = redirect || b.o.CertResolver != "" || containsFold(eps, "http")
	} else if redirect {
		b.skip("traefik.frontend.redirect.entryPoint", "redirecting to HTTPS needs an https entry point or edge's -cert-resolver")
		return
	}
	if !b.networkOK("traefik.docker.network", "traefik.swarm.network") {
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
	if !b.target(&r, scheme, port, "traefik.docker.network", "traefik.swarm.network") {
		return
	}
	// A v1 rule is a conjunction: with a Host part it matches only those
	// hosts; without one (PathPrefix:/x) it matches any host.
	hs := finiteHosts(r.Hosts)
	hs.any = len(r.Hosts) == 0
	b.addRoute(r, hs)
}

func containsFold(list []string, s string) bool {
	for _, x := range list {
		if strings.EqualFold(x, s) {
			return true
		}
	}
	return false
}

// v1Rule converts a Traefik v1 frontend rule such as
// "Host:a.example.org,b.example.org;PathPrefix:/api" into a v3 rule. It
// supports the Host, PathPrefix and Path matchers; values of one matcher are
// alternatives, matchers separated by ';' must all match.
func v1Rule(v string) (rule string, hosts []string, prefix string, err error) {
	var parts []string
	for _, m := range strings.Split(v, ";") {
		m = strings.TrimSpace(m)
		if m == "" {
			continue
		}
		name, vals, found := strings.Cut(m, ":")
		if !found {
			return "", nil, "", fmt.Errorf("%w %q: matchers look like Host:a.example.org;PathPrefix:/api", ErrBadRule, v)
		}
		name = strings.TrimSpace(name)
		var (
			matcher string
			values  []string
		)
		switch strings.ToLower(name) {
		case "host":
			matcher = "Host"
			hs, err := parseHosts(vals)
			if err != nil {
				return "", nil, "", err
			}
			hosts = append(hosts, hs...)
			values = hs
		case "pathprefix", "path":
			matcher = "PathPrefix"
			if strings.EqualFold(name, "path") {
				matcher = "Path"
			}
			for _, p := range strings.Split(vals, ",") {
				p, err := parsePath(p)
				if err != nil {
					return "", nil, "", err
				}
				values = append(values, p)
			}
			if matcher == "PathPrefix" && len(values) == 1 {
				prefix = values[0]
			}
		default:
			return "", nil, "", fmt.Errorf("%w %q: edge supports the Host, PathPrefix and Path matchers of Traefik v1, not %s", ErrBadRule, v, name)
		}
		alts := make([]string, len(values))
		for i, x := range values {
			alts[i] = matcher + "(`" + x + "`)"
		}
		if len(alts) == 1 {
			parts = append(parts, alts[0])
		} else {
			parts = append(parts, "("+strings.Join(alts, " || ")+")")
		}
	}
	if len(parts) == 0 {
		return "", nil, "", fmt.Errorf("%w: empty rule", ErrEmpty)
	}
	return strings.Join(parts, " && "), hosts, prefix, nil
}
