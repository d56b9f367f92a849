// Package sink hands edge's route table to Traefik.
//
// It exists so that the daemon depends on "publish this table" rather than on
// how Traefik is fed. The default and only sink is Traefik's file provider:
// [File] renders the table as Traefik v3 dynamic configuration ([Render]) and
// replaces one file in the directory Traefik watches, atomically
// ([atomicfile.Write]: temp file, fsync, rename, fsync of the directory), and
// only when the content changed. A file survives Traefik restarts, and
// Traefik applies a rename in tens of milliseconds.
package sink

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"go.yaml.in/yaml/v3"

	"github.com/homeswarm/homeswarm/edge/builder"
	"github.com/homeswarm/homeswarm/internal/atomicfile"
)

// RedirectMiddleware is the name of the middleware the rendered file defines
// to redirect plain HTTP to HTTPS.
const RedirectMiddleware = builder.RedirectMiddleware

// RetryInterval is the first wait of the retry middleware between two
// attempts; Traefik doubles it at each further attempt.
const RetryInterval = "100ms"

// DefaultFile is the file name [File] writes when Options.File is empty.
const DefaultFile = "edge.yml"

// ErrNoDir is returned by [NewFile] when the output directory is missing.
var ErrNoDir = errors.New("sink: output directory does not exist")

// Options configures a [File].
type Options struct {
	// Dir is the directory Traefik's file provider watches
	// (providers.file.directory). Required; it must exist.
	Dir string
	// File is the name of the file edge owns in Dir. Zero: "edge.yml".
	// It must end in .yml or .yaml for Traefik to read it.
	File string
}

// Stats counts what a File did.
type Stats struct {
	Writes    uint64 // the file was replaced
	Unchanged uint64 // a table rendered to the content already there
	Errors    uint64 // a write failed; the previous file stayed in place
}

// File writes route tables to a file in the directory Traefik watches.
// Its methods are safe for concurrent use.
type File struct {
	path string
	base string

	mu sync.Mutex // serializes replacements

	writes, unchanged, errs atomic.Uint64
}

// NewFile returns a File for o. It removes temp files a crashed edge left
// behind, but does not touch the route file itself: the routes it holds
// stay live until the first table is written.
func NewFile(o Options) (*File, error) {
	if o.File == "" {
		o.File = DefaultFile
	}
	if ext := strings.ToLower(filepath.Ext(o.File)); ext != ".yml" && ext != ".yaml" || strings.ContainsRune(o.File, os.PathSeparator) {
		return nil, fmt.Errorf("sink: file name %q must be a plain name ending in .yml or .yaml", o.File)
	}
	if fi, err := os.Stat(o.Dir); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("%w: %s", ErrNoDir, o.Dir)
	}
	f := &File{path: filepath.Join(o.Dir, o.File), base: o.File}
	stale, _ := filepath.Glob(filepath.Join(o.Dir, f.tempPattern()))
	for _, s := range stale {
		os.Remove(s)
	}
	return f, nil
}

// Path is the file's path.
func (f *File) Path() string { return f.path }

// tempPattern is the glob of the temp files [atomicfile.Write] leaves when
// it is interrupted, ".edge.yml.tmp*": a dot-name whose extension
// (".tmp" and digits) Traefik's file provider does not read — it reads only
// .yml, .yaml and .toml files of the directory it watches — kept in the
// watched directory so that the rename is atomic (same file system).
func (f *File) tempPattern() string { return atomicfile.TempPattern(f.base) }

// Write renders t and replaces the file if its content differs from what is
// on disk (so a restarted edge does not rewrite its own file, and a file
// deleted or edited by hand is restored at the next listing). It reports
// whether the file changed. On error the previous file stays in place.
func (f *File) Write(t builder.Table) (changed bool, err error) {
	data, err := Render(t)
	if err != nil {
		f.errs.Add(1)
		return false, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if cur, err := os.ReadFile(f.path); err == nil && bytes.Equal(cur, data) {
		f.unchanged.Add(1)
		return false, nil
	}
	if err := f.replaceLocked(data); err != nil {
		f.errs.Add(1)
		return false, err
	}
	f.writes.Add(1)
	return true, nil
}

func (f *File) replaceLocked(data []byte) error {
	if err := atomicfile.Write(f.path, data, 0o644); err != nil {
		return fmt.Errorf("sink: %w", err)
	}
	return nil
}

// Stats returns the counters.
func (f *File) Stats() Stats {
	return Stats{Writes: f.writes.Load(), Unchanged: f.unchanged.Load(), Errors: f.errs.Load()}
}

// Traefik v3 dynamic configuration, the subset edge writes.
type (
	dynamic struct {
		HTTP httpConfig `yaml:"http"`
		TCP  *tcpConfig `yaml:"tcp,omitempty"`
		UDP  *udpConfig `yaml:"udp,omitempty"`
	}
	tcpConfig struct {
		Routers  map[string]tcpRouter  `yaml:"routers"`
		Services map[string]tcpService `yaml:"services"`
	}
	tcpRouter struct {
		Rule        string        `yaml:"rule"`
		EntryPoints []string      `yaml:"entryPoints,flow"`
		Service     string        `yaml:"service"`
		TLS         *tcpRouterTLS `yaml:"tls,omitempty"`
	}
	tcpRouterTLS struct {
		Passthrough  bool   `yaml:"passthrough,omitempty"`
		CertResolver string `yaml:"certResolver,omitempty"`
	}
	tcpService struct {
		LoadBalancer tcpLoadBalancer `yaml:"loadBalancer"`
	}
	tcpLoadBalancer struct {
		Servers       []addrServer   `yaml:"servers"`
		ProxyProtocol *proxyProtocol `yaml:"proxyProtocol,omitempty"`
	}
	proxyProtocol struct {
		Version int `yaml:"version"`
	}
	addrServer struct {
		Address string `yaml:"address"`
	}
	udpConfig struct {
		Routers  map[string]udpRouter  `yaml:"routers"`
		Services map[string]udpService `yaml:"services"`
	}
	udpRouter struct {
		EntryPoints []string `yaml:"entryPoints,flow"`
		Service     string   `yaml:"service"`
	}
	udpService struct {
		LoadBalancer struct {
			Servers []addrServer `yaml:"servers"`
		} `yaml:"loadBalancer"`
	}
	httpConfig struct {
		Routers     map[string]router     `yaml:"routers,omitempty"`
		Services    map[string]service    `yaml:"services,omitempty"`
		Middlewares map[string]middleware `yaml:"middlewares,omitempty"`
	}
	router struct {
		Rule        string     `yaml:"rule"`
		EntryPoints []string   `yaml:"entryPoints,flow,omitempty"`
		Middlewares []string   `yaml:"middlewares,flow,omitempty"`
		Service     string     `yaml:"service"`
		Priority    int        `yaml:"priority,omitempty"`
		TLS         *routerTLS `yaml:"tls,omitempty"`
	}
	routerTLS struct {
		CertResolver string `yaml:"certResolver,omitempty"`
	}
	service struct {
		LoadBalancer loadBalancer `yaml:"loadBalancer"`
	}
	loadBalancer struct {
		Servers     []server     `yaml:"servers"`
		HealthCheck *healthCheck `yaml:"healthCheck,omitempty"`
		Sticky      *sticky      `yaml:"sticky,omitempty"`
	}
	healthCheck struct {
		Path     string `yaml:"path"`
		Interval string `yaml:"interval,omitempty"`
		Timeout  string `yaml:"timeout,omitempty"`
		Port     int    `yaml:"port,omitempty"`
		Scheme   string `yaml:"scheme,omitempty"`
		Hostname string `yaml:"hostname,omitempty"`
		Method   string `yaml:"method,omitempty"`
		Status   int    `yaml:"status,omitempty"`
	}
	sticky struct {
		Cookie stickyCookie `yaml:"cookie"`
	}
	stickyCookie struct {
		Name     string `yaml:"name,omitempty"`
		Secure   bool   `yaml:"secure,omitempty"`
		HTTPOnly bool   `yaml:"httpOnly,omitempty"`
		SameSite string `yaml:"sameSite,omitempty"`
		MaxAge   int    `yaml:"maxAge,omitempty"`
	}
	server struct {
		URL string `yaml:"url"`
	}
	middleware struct {
		RedirectScheme *redirectScheme `yaml:"redirectScheme,omitempty"`
		Retry          *retry          `yaml:"retry,omitempty"`
	}
	retry struct {
		Attempts        int    `yaml:"attempts"`
		InitialInterval string `yaml:"initialInterval"`
	}
	redirectScheme struct {
		Scheme    string `yaml:"scheme"`
		Permanent bool   `yaml:"permanent"`
	}
)

const header = "# Written by edge from Swarm service labels. Do not edit: edge replaces this file.\n"

// Render returns t as Traefik v3 dynamic configuration in YAML. The output
// is deterministic. Routes sharing a backend (Traefik v1's traefik.backend)
// load-balance over their URLs; backends naming another provider's service
// (x@provider) are referenced, not defined.
func Render(t builder.Table) ([]byte, error) {
	cfg := dynamic{HTTP: httpConfig{
		Routers:  map[string]router{},
		Services: map[string]service{},
		Middlewares: map[string]middleware{
			RedirectMiddleware: {RedirectScheme: &redirectScheme{Scheme: "https", Permanent: true}},
		},
	}}
	for _, r := range t.Routes {
		rt := router{Rule: r.Rule, EntryPoints: r.EntryPoints, Middlewares: r.Middlewares,
			Service: r.Backend, Priority: r.Priority}
		if r.TLS != nil {
			rt.TLS = &routerTLS{CertResolver: r.TLS.CertResolver}
		}
		cfg.HTTP.Routers[r.Name] = rt
		if len(r.RedirectFrom) > 0 {
			cfg.HTTP.Routers[builder.RedirectRouterName(r.Name)] = router{Rule: r.Rule, EntryPoints: r.RedirectFrom,
				Middlewares: []string{RedirectMiddleware}, Service: r.Backend, Priority: r.Priority}
		}
		if r.URL == "" || strings.Contains(r.Backend, "@") {
			continue
		}
		s, seen := cfg.HTTP.Services[r.Backend]
		if !seen {
			s.LoadBalancer.Servers = []server{} // a task-balanced service with no running task: Traefik answers 503
		}
		urls := []string{r.URL}
		if r.Tasks {
			urls = r.Servers
		}
		for _, u := range urls {
			if !slices.Contains(s.LoadBalancer.Servers, server{URL: u}) {
				s.LoadBalancer.Servers = append(s.LoadBalancer.Servers, server{URL: u})
			}
		}
		slices.SortFunc(s.LoadBalancer.Servers, func(a, b server) int { return strings.Compare(a.URL, b.URL) })
		if hc := r.HealthCheck; hc != nil && s.LoadBalancer.HealthCheck == nil {
			s.LoadBalancer.HealthCheck = &healthCheck{Path: hc.Path, Interval: hc.Interval, Timeout: hc.Timeout,
				Port: hc.Port, Scheme: hc.Scheme, Hostname: hc.Hostname, Method: hc.Method, Status: hc.Status}
		}
		if st := r.Sticky; st != nil && s.LoadBalancer.Sticky == nil {
			s.LoadBalancer.Sticky = &sticky{Cookie: stickyCookie{Name: st.Name, Secure: st.Secure,
				HTTPOnly: st.HTTPOnly, SameSite: st.SameSite, MaxAge: st.MaxAge}}
		}
		cfg.HTTP.Services[r.Backend] = s
	}
	if t.RetryAttempts > 0 {
		cfg.HTTP.Middlewares[builder.RetryMiddleware] = middleware{Retry: &retry{Attempts: t.RetryAttempts, InitialInterval: RetryInterval}}
	}
	// TCP and UDP: one Traefik service per router, named after it.
	if len(t.TCP) > 0 {
		cfg.TCP = &tcpConfig{Routers: map[string]tcpRouter{}, Services: map[string]tcpService{}}
		for _, r := range t.TCP {
			rt := tcpRouter{Rule: r.Rule, EntryPoints: r.EntryPoints, Service: r.Name}
			if r.TLS != nil {
				rt.TLS = &tcpRouterTLS{Passthrough: r.TLS.Passthrough, CertResolver: r.TLS.CertResolver}
			}
			cfg.TCP.Routers[r.Name] = rt
			lb := tcpLoadBalancer{Servers: addrServers(r.Targets())}
			if r.ProxyProtocol != 0 {
				lb.ProxyProtocol = &proxyProtocol{Version: r.ProxyProtocol}
			}
			cfg.TCP.Services[r.Name] = tcpService{LoadBalancer: lb}
		}
	}
	if len(t.UDP) > 0 {
		cfg.UDP = &udpConfig{Routers: map[string]udpRouter{}, Services: map[string]udpService{}}
		for _, r := range t.UDP {
			cfg.UDP.Routers[r.Name] = udpRouter{EntryPoints: r.EntryPoints, Service: r.Name}
			var us udpService
			us.LoadBalancer.Servers = addrServers(r.Targets())
			cfg.UDP.Services[r.Name] = us
		}
	}
	var buf bytes.Buffer
	buf.WriteString(header)
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(cfg); err != nil {
		return nil, fmt.Errorf("sink: render: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("sink: render: %w", err)
	}
	return buf.Bytes(), nil
}

// addrServers are the TCP/UDP servers at addrs; none (a task-balanced route
// with no running task) is an empty list, on which Traefik closes the
// connections (TCP) or drops the datagrams (UDP) of that route only.
func addrServers(addrs []string) []addrServer {
	out := make([]addrServer, len(addrs))
	for i, a := range addrs {
		out[i] = addrServer{Address: a}
	}
	return out
}
