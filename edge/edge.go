// Package edge is the daemon between the Swarm and Traefik: it alone talks to
// Docker, and Traefik only reads the routes it is fed.
//
// It exists to wire the three parts together and own their goroutines:
// watcher (Docker events only trigger a full listing), builder (a pure
// function from services to routes) and sink (Traefik's file provider), plus
// the status server. Walk Daemon.apply to see what happens to a Swarm
// event.
package edge

import (
	"context"
	"errors"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/homeswarm/homeswarm/edge/builder"
	"github.com/homeswarm/homeswarm/edge/sink"
	"github.com/homeswarm/homeswarm/edge/status"
	"github.com/homeswarm/homeswarm/edge/watcher"
)

// Sink receives every route table; *sink.File is the default.
type Sink interface {
	// Write publishes t and reports whether anything changed. On error the
	// previous routes must stay in place.
	Write(t builder.Table) (changed bool, err error)
}

var _ Sink = (*sink.File)(nil)

// Options configures a [Daemon].
type Options struct {
	// Docker is the API to watch. Required.
	Docker watcher.Docker
	// Sink receives the route tables. Required.
	Sink Sink
	// Build tunes the route builder (entry points, default cert resolver,
	// network). Zero: plain HTTP on entry point "web", no network check.
	Build builder.Options
	// Debounce, Resync: see watcher.Options. Zero: watcher.DefaultDebounce
	// and watcher.DefaultResync.
	Debounce, Resync time.Duration
	// TaskPoll: see watcher.Options. Zero: watcher.DefaultTaskPoll;
	// negative: tasks are listed only with the services.
	TaskPoll time.Duration
	// MinBackoff, MaxBackoff: see watcher.Options. Zero: 250ms and 30s.
	MinBackoff, MaxBackoff time.Duration
	// Listener serves the status pages. Zero: no status server.
	Listener net.Listener
	// Log is the root logger. Zero: logrus' standard logger.
	Log *logrus.Entry
}

// ErrOptions is returned by [New] for missing required options.
var ErrOptions = errors.New("edge: Docker and Sink are required")

// Daemon feeds Traefik from the Swarm. Run it once.
type Daemon struct {
	o       Options
	log     *logrus.Entry
	watcher *watcher.Watcher
	status  *status.Server

	mu         sync.Mutex
	lastDiags  []builder.Diagnostic
	lastNames  map[string]bool // route names last written
	lastGood   builder.Table   // table last written successfully
	applies    uint64
	changes    uint64
	sinkErrors uint64
}

// New returns a Daemon for o.
func New(o Options) (*Daemon, error) {
	if o.Docker == nil || o.Sink == nil {
		return nil, ErrOptions
	}
	log := o.Log
	if log == nil {
		log = logrus.NewEntry(logrus.StandardLogger())
	}
	d := &Daemon{o: o, log: log}
	d.watcher = watcher.New(watcher.Options{
		Docker: o.Docker, Apply: d.apply, Debounce: o.Debounce, Resync: o.Resync, TaskPoll: o.TaskPoll,
		MinBackoff: o.MinBackoff, MaxBackoff: o.MaxBackoff, Log: log.WithField("part", "watcher"),
	})
	d.status = status.New(status.Options{Metrics: d.metrics, Docker: d.docker})
	return d, nil
}

// Status is the status page handler, for tests and for embedding.
func (d *Daemon) Status() *status.Server { return d.status }

// Run feeds Traefik until ctx is done, then stops the status server and
// returns ctx's error. If the status listener fails, Run stops and returns
// that error.
func (d *Daemon) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	var serveErr error
	if d.o.Listener != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := d.status.Serve(ctx, d.o.Listener); err != nil {
				serveErr = err
				cancel()
			}
		}()
	}
	err := d.watcher.Run(ctx)
	cancel()
	wg.Wait()
	if serveErr != nil {
		return serveErr
	}
	return err
}

// apply is what happens to a Swarm change: the complete state becomes a
// route table, the sink replaces Traefik's routes if they changed, and the
// status page shows the result. It runs on the watcher's goroutine.
func (d *Daemon) apply(st watcher.State) {
	start := time.Now()
	services := make([]builder.Service, len(st.Services))
	for i, s := range st.Services {
		services[i] = builder.FromSwarm(s, st.Networks, st.Tasks...)
	}
	table, diags := builder.Build(services, d.o.Build)
	changed, err := d.o.Sink.Write(table)

	names := make(map[string]bool, len(table.Routes)+len(table.TCP)+len(table.UDP))
	for _, r := range table.Routes {
		names[r.Name] = true
	}
	for _, r := range table.TCP {
		names["tcp:"+r.Name] = true
	}
	for _, r := range table.UDP {
		names["udp:"+r.Name] = true
	}
	d.mu.Lock()
	d.applies++
	newDiags := !slices.Equal(diags, d.lastDiags)
	d.lastDiags = diags
	var added, removed []string
	shown := table
	if err == nil {
		if changed {
			d.changes++
			added, removed = diffNames(d.lastNames, names)
		}
		d.lastGood, d.lastNames = table, names
	} else {
		shown = d.lastGood
	}
	if err != nil {
		d.sinkErrors++
	}
	d.mu.Unlock()

	if newDiags {
		for _, dg := range diags {
			e := d.log.WithFields(logrus.Fields{"service": dg.Service, "label": dg.Label, "value": dg.Value})
			if dg.Skipped {
				e.Warn("route skipped: " + dg.Reason)
			} else {
				e.Info("label ignored: " + dg.Reason)
			}
		}
	}
	switch {
	case err != nil:
		// The sink keeps the previous routes; the next sync retries.
		d.log.WithError(err).Error("could not update Traefik's routes; keeping the previous ones")
	case changed:
		d.log.WithFields(logrus.Fields{"routes": len(table.Routes), "tcp": len(table.TCP), "udp": len(table.UDP), "added": added, "removed": removed,
			"took": time.Since(start).Round(time.Microsecond)}).Info("routes updated")
	}
	rep := status.Report{Routes: shown.Routes, TCP: shown.TCP, UDP: shown.UDP, Skipped: diags, UpdatedAt: time.Now()}
	if err != nil {
		rep.Error = err.Error()
	}
	d.status.Publish(rep)
}

// diffNames returns the names in now but not in before, and the reverse,
// sorted.
func diffNames(before, now map[string]bool) (added, removed []string) {
	for n := range now {
		if !before[n] {
			added = append(added, n)
		}
	}
	for n := range before {
		if !now[n] {
			removed = append(removed, n)
		}
	}
	slices.Sort(added)
	slices.Sort(removed)
	return added, removed
}

func (d *Daemon) docker() status.Docker {
	s := d.watcher.Stats()
	return status.Docker{Connected: s.Connected, LastSync: s.LastSync, LastError: s.LastError}
}

func (d *Daemon) metrics() []status.Metric {
	ws := d.watcher.Stats()
	d.mu.Lock()
	applies, changes, sinkErrors := d.applies, d.changes, d.sinkErrors
	d.mu.Unlock()
	up := 0.0
	if ws.Connected {
		up = 1
	}
	ms := []status.Metric{
		{Name: "edge_docker_up", Help: "1 when the Docker event stream is up and the last listing succeeded.", Type: "gauge", Value: up},
		{Name: "edge_docker_events_total", Help: "Service events received from Docker.", Type: "counter", Value: float64(ws.Events)},
		{Name: "edge_docker_connects_total", Help: "Event stream (re)connections attempted.", Type: "counter", Value: float64(ws.Reconnects)},
		{Name: "edge_docker_errors_total", Help: "Failed listings or broken event streams.", Type: "counter", Value: float64(ws.SyncErrors)},
		{Name: "edge_task_polls_total", Help: "Listings of the Swarm's running tasks between full listings.", Type: "counter", Value: float64(ws.TaskPolls)},
		{Name: "edge_task_changes_total", Help: "Task listings that found the serving tasks changed.", Type: "counter", Value: float64(ws.TaskSyncs)},
		{Name: "edge_syncs_total", Help: "Complete listings of the Swarm's services.", Type: "counter", Value: float64(applies)},
		{Name: "edge_route_changes_total", Help: "Listings that changed Traefik's routes.", Type: "counter", Value: float64(changes)},
		{Name: "edge_sink_errors_total", Help: "Failed attempts to update Traefik's routes.", Type: "counter", Value: float64(sinkErrors)},
	}
	if !ws.LastSync.IsZero() {
		ms = append(ms, status.Metric{Name: "edge_last_sync_timestamp_seconds", Help: "When the Swarm was last listed.",
			Type: "gauge", Value: float64(ws.LastSync.UnixNano()) / 1e9})
	}
	return ms
}
