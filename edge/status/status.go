// Package status serves what edge routes, why it skipped labels, and its
// counters, on a local HTTP port.
//
// It exists because a route that silently does not appear is the worst
// failure a proxy feeder can have: a user who mistyped a label must be able
// to see "service gogs: label edge.port="http": invalid port" without reading
// logs on a manager node. Pages: / (text), /routes (JSON), /metrics
// (Prometheus text format), /healthz.
package status

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/homeswarm/homeswarm/edge/builder"
)

// Report is what edge last fed Traefik.
type Report struct {
	Routes    []builder.Route      `json:"routes"`
	TCP       []builder.TCPRoute   `json:"tcp,omitempty"`
	UDP       []builder.UDPRoute   `json:"udp,omitempty"`
	Skipped   []builder.Diagnostic `json:"diagnostics"`
	UpdatedAt time.Time            `json:"updatedAt"`
	// Error, when set, says the last table could not be handed to Traefik;
	// Routes are then those of the last successful update.
	Error string `json:"error,omitempty"`
}

// Docker is the state of edge's connection to Docker.
type Docker struct {
	Connected bool      `json:"connected"`
	LastSync  time.Time `json:"lastSync"`
	LastError string    `json:"lastError,omitempty"`
}

// Metric is one Prometheus sample.
type Metric struct {
	Name  string  // e.g. edge_syncs_total
	Help  string  // one line
	Type  string  // "counter" or "gauge"
	Value float64 // current value
}

// Options configures a [Server].
type Options struct {
	// Metrics returns extra samples for /metrics. Zero: only the route counts.
	Metrics func() []Metric
	// Docker returns the Docker connection state. Zero: not shown.
	Docker func() Docker
	// Now is the clock. Zero: time.Now.
	Now func() time.Time
}

// Server is the status HTTP handler. Publish and ServeHTTP are safe for
// concurrent use.
type Server struct {
	o      Options
	mu     sync.RWMutex
	report Report
	served bool
}

var _ http.Handler = (*Server)(nil)

// New returns a Server with an empty report.
func New(o Options) *Server {
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Server{o: o}
}

// Publish replaces the report.
func (s *Server) Publish(r Report) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.report = r
	s.served = true
}

// snapshot returns the report as shown: builder already redacts label
// values; a rule that carries a credential (a Header matcher on
// Authorization, a password hash) is redacted here too.
func (s *Server) snapshot() (Report, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	rep, copied := s.report, false
	for i, r := range rep.Routes {
		if builder.LooksSecret(r.Rule) {
			if !copied {
				rep.Routes, copied = append([]builder.Route(nil), rep.Routes...), true
			}
			rep.Routes[i].Rule = builder.Redacted
		}
	}
	return rep, s.served
}

// ServeHTTP implements [http.Handler].
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		http.Error(w, "use GET", http.StatusMethodNotAllowed)
		return
	}
	switch r.URL.Path {
	case "/":
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		s.writeText(w)
	case "/routes":
		s.writeJSON(w)
	case "/metrics":
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		s.writeMetrics(w)
	case "/healthz":
		io.WriteString(w, "ok\n")
	default:
		http.NotFound(w, r)
	}
}

func (s *Server) docker() (Docker, bool) {
	if s.o.Docker == nil {
		return Docker{}, false
	}
	return s.o.Docker(), true
}

func (s *Server) writeJSON(w http.ResponseWriter) {
	rep, _ := s.snapshot()
	out := struct {
		Report
		Docker *Docker `json:"docker,omitempty"`
	}{Report: rep}
	if d, ok := s.docker(); ok {
		out.Docker = &d
	}
	if out.Routes == nil {
		out.Routes = []builder.Route{}
	}
	if out.Skipped == nil {
		out.Skipped = []builder.Diagnostic{}
	}
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(out)
}

func (s *Server) writeText(w io.Writer) {
	rep, served := s.snapshot()
	now := s.o.Now()
	fmt.Fprintf(w, "edge: %d routes", len(rep.Routes))
	if len(rep.TCP)+len(rep.UDP) > 0 {
		fmt.Fprintf(w, " (+%d TCP, %d UDP)", len(rep.TCP), len(rep.UDP))
	}
	fmt.Fprintf(w, ", %d diagnostics", len(rep.Skipped))
	if served {
		fmt.Fprintf(w, ", updated %s ago", now.Sub(rep.UpdatedAt).Round(time.Millisecond))
	} else {
		io.WriteString(w, ", no Swarm state seen yet")
	}
	if d, ok := s.docker(); ok {
		if d.Connected {
			io.WriteString(w, "; Docker connected")
		} else {
			fmt.Fprintf(w, "; Docker UNUSABLE (%s), keeping the last routes", d.LastError)
		}
	}
	if rep.Error != "" {
		fmt.Fprintf(w, "\nERROR: %s; Traefik keeps the routes below", rep.Error)
	}
	io.WriteString(w, "\n")
	var rows [][]string
	for _, r := range rep.Routes {
		tls := "-"
		if r.TLS != nil {
			tls = "yes"
			if r.TLS.CertResolver != "" {
				tls = "acme:" + r.TLS.CertResolver
			}
			if len(r.RedirectFrom) > 0 {
				tls += " (redirect from " + strings.Join(r.RedirectFrom, ",") + ")"
			}
		}
		target := taskTarget(r.URL, r.Tasks, r.Servers)
		if target == "" {
			target = r.Backend
		}
		if len(r.Middlewares) > 0 {
			target = strings.Join(r.Middlewares, ",") + " -> " + target
		}
		rows = append(rows, []string{r.Name, r.Service, string(r.Dialect), r.Rule, strings.Join(r.EntryPoints, ","), tls, target})
	}
	writeTable(w, "ROUTES", []string{"ROUTER", "SERVICE", "DIALECT", "RULE", "ENTRYPOINTS", "TLS", "TARGET"}, rows)
	if len(rep.TCP) > 0 {
		rows = rows[:0]
		for _, r := range rep.TCP {
			tls := "-"
			switch {
			case r.TLS == nil:
			case r.TLS.Passthrough:
				tls = "passthrough"
			case r.TLS.CertResolver != "":
				tls = "acme:" + r.TLS.CertResolver
			default:
				tls = "terminated"
			}
			target := taskTarget(r.Address, r.Tasks, r.Servers)
			if r.ProxyProtocol != 0 {
				target += fmt.Sprintf(" (PROXY v%d)", r.ProxyProtocol)
			}
			rows = append(rows, []string{r.Name, r.Service, string(r.Dialect), r.Rule, strings.Join(r.EntryPoints, ","), tls, target})
		}
		writeTable(w, "TCP ROUTES", []string{"ROUTER", "SERVICE", "DIALECT", "RULE", "ENTRYPOINTS", "TLS", "TARGET"}, rows)
	}
	if len(rep.UDP) > 0 {
		rows = rows[:0]
		for _, r := range rep.UDP {
			rows = append(rows, []string{r.Name, r.Service, string(r.Dialect), strings.Join(r.EntryPoints, ","), taskTarget(r.Address, r.Tasks, r.Servers)})
		}
		writeTable(w, "UDP ROUTES", []string{"ROUTER", "SERVICE", "DIALECT", "ENTRYPOINTS", "TARGET"}, rows)
	}
	if len(rep.Skipped) > 0 {
		io.WriteString(w, "\nDIAGNOSTICS\n")
		for _, d := range rep.Skipped {
			fmt.Fprintln(w, d.String())
		}
	}
}

// writeTable writes a titled table, a blank line before it, its columns
// aligned.
func writeTable(w io.Writer, title string, header []string, rows [][]string) {
	io.WriteString(w, "\n"+title+"\n")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	tw.Flush()
}

// taskTarget shows where a route forwards: vip, or with task-level
// balancing how many tasks of vip and their addresses.
func taskTarget(vip string, tasks bool, servers []string) string {
	if !tasks {
		return vip
	}
	target := fmt.Sprintf("%d task(s) of %s", len(servers), vip)
	if len(servers) > 0 {
		target += ": " + strings.Join(servers, " ")
	}
	return target
}

func (s *Server) writeMetrics(w io.Writer) {
	rep, _ := s.snapshot()
	skipped, ignored := 0, 0
	for _, d := range rep.Skipped {
		if d.Skipped {
			skipped++
		} else {
			ignored++
		}
	}
	ms := []Metric{
		{Name: "edge_routes", Help: "HTTP routes edge currently feeds Traefik.", Type: "gauge", Value: float64(len(rep.Routes))},
		{Name: "edge_tcp_routes", Help: "TCP routes edge currently feeds Traefik.", Type: "gauge", Value: float64(len(rep.TCP))},
		{Name: "edge_udp_routes", Help: "UDP routes edge currently feeds Traefik.", Type: "gauge", Value: float64(len(rep.UDP))},
		{Name: "edge_labels_skipped", Help: "Diagnostics that made edge skip a route.", Type: "gauge", Value: float64(skipped)},
		{Name: "edge_labels_ignored", Help: "Diagnostics about labels edge ignored while routing.", Type: "gauge", Value: float64(ignored)},
	}
	if !rep.UpdatedAt.IsZero() {
		ms = append(ms, Metric{Name: "edge_routes_updated_timestamp_seconds", Help: "When the route table was last computed.",
			Type: "gauge", Value: float64(rep.UpdatedAt.UnixNano()) / 1e9})
	}
	if s.o.Metrics != nil {
		ms = append(ms, s.o.Metrics()...)
	}
	sort.SliceStable(ms, func(i, j int) bool { return ms[i].Name < ms[j].Name })
	for _, m := range ms {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n%s %v\n", m.Name, m.Help, m.Name, m.Type, m.Name, m.Value)
	}
}

// Serve serves the status pages on ln until ctx is done, then shuts the
// server down and returns nil. It returns the listener's error otherwise.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{Handler: s, ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
		if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	}
}
