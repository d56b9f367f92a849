// Package watcher tells edge when the Swarm's services may have changed and
// what they are now.
//
// It exists to keep Docker's unreliable signals out of the rest of edge.
// Events only trigger: every relevant event (debounced), every resync period
// and every reconnect lists all services again and hands the complete state
// to Options.Apply, so a missed or reordered event can never leave a stale
// route (the model is Traefik's own providers). When Docker is unreachable
// the watcher retries with backoff and does not call Apply at all, so the
// last good routes stay in place.
package watcher

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/moby/moby/api/types/events"
	"github.com/moby/moby/api/types/swarm"
	"github.com/sirupsen/logrus"
)

// Docker is the part of the Docker API edge uses. [Moby] implements it with
// the Docker client; dockertest.Fake implements it in memory.
type Docker interface {
	// Services lists all Swarm services.
	Services(ctx context.Context) ([]swarm.Service, error)
	// Networks maps the IDs of Swarm-scoped networks to their names.
	Networks(ctx context.Context) (map[string]string, error)
	// Events streams service events until ctx is done or the stream fails.
	// The error channel receives exactly one error when the stream ends;
	// the message channel is never closed.
	Events(ctx context.Context) (<-chan events.Message, <-chan error)
}

// State is the complete Swarm state routing depends on.
type State struct {
	Services []swarm.Service
	// Networks maps network IDs to names.
	Networks map[string]string
}

// The defaults of Options.Debounce and Options.Resync, and of edge's
// -debounce and -resync.
const (
	DefaultDebounce = 75 * time.Millisecond
	DefaultResync   = 30 * time.Second
)

// Options configures a [Watcher].
type Options struct {
	// Docker is the API to watch. Required.
	Docker Docker
	// Apply receives the complete state after every successful listing. It
	// is called from Run's goroutine, one call at a time. Required.
	Apply func(State)
	// Debounce is how long after the first of a burst of events the
	// services are listed. Zero: [DefaultDebounce].
	Debounce time.Duration
	// Resync is how often the services are listed without an event, to
	// catch missed ones. Zero: [DefaultResync].
	Resync time.Duration
	// MinBackoff and MaxBackoff bound the wait before reconnecting to an
	// unreachable Docker; it doubles on every failure. Zero: 250ms and 30s.
	MinBackoff, MaxBackoff time.Duration
	// CallTimeout bounds each listing call. Zero: 10s.
	CallTimeout time.Duration
	// Log receives connection changes. Zero: logrus' standard logger.
	Log *logrus.Entry
}

// Stats describes what the watcher has seen.
type Stats struct {
	Connected  bool      // the event stream is up and the last listing succeeded
	Events     uint64    // service events received
	Syncs      uint64    // successful listings handed to Apply
	SyncErrors uint64    // failed listings or broken event streams
	Reconnects uint64    // event stream (re)connections attempted
	LastSync   time.Time // time of the last successful listing; zero: none yet
	LastError  string    // the last failure; empty: none
}

// Watcher watches one Docker API. Run it once.
type Watcher struct {
	o   Options
	log *logrus.Entry

	mu    sync.Mutex
	stats Stats
}

// ErrEventStreamClosed is returned when Docker's event stream ends cleanly.
var ErrEventStreamClosed = errors.New("watcher: event stream closed")

// New returns a Watcher for o.
func New(o Options) *Watcher {
	if o.Debounce <= 0 {
		o.Debounce = DefaultDebounce
	}
	if o.Resync <= 0 {
		o.Resync = DefaultResync
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = 250 * time.Millisecond
	}
	if o.MaxBackoff < o.MinBackoff {
		o.MaxBackoff = max(30*time.Second, o.MinBackoff)
	}
	if o.CallTimeout <= 0 {
		o.CallTimeout = 10 * time.Second
	}
	log := o.Log
	if log == nil {
		log = logrus.NewEntry(logrus.StandardLogger())
	}
	return &Watcher{o: o, log: log}
}

// Stats returns a snapshot of the counters. It is safe to call at any time.
func (w *Watcher) Stats() Stats {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.stats
}

// Run watches until ctx is done and returns ctx's error. It calls Apply
// after each successful listing: at once on (re)connection, after a burst of
// events, and every Resync period.
func (w *Watcher) Run(ctx context.Context) error {
	backoff := w.o.MinBackoff
	failures := 0 // consecutive failed sessions
	for {
		synced, err := w.session(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if synced {
			backoff = w.o.MinBackoff
			failures = 0
		}
		failures++
		w.mu.Lock()
		w.stats.Connected = false
		w.stats.SyncErrors++
		w.stats.LastError = err.Error()
		w.mu.Unlock()
		log := w.log.WithError(err).WithField("retry_in", backoff)
		if failures == 1 {
			log.Warn("cannot use Docker; keeping the last routes and retrying")
		} else {
			log.Debug("Docker still unusable; keeping the last routes")
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		backoff = min(2*backoff, w.o.MaxBackoff)
	}
}

// session subscribes to events, lists once, then serves events and resyncs
// until something fails. synced reports whether the first listing worked.
func (w *Watcher) session(ctx context.Context) (synced bool, err error) {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w.mu.Lock()
	w.stats.Reconnects++
	w.mu.Unlock()
	// Subscribe before listing, so no change falls between the two.
	msgs, errs := w.o.Docker.Events(sctx)
	if err := w.sync(ctx); err != nil {
		return false, err
	}
	w.mu.Lock()
	wasErr := w.stats.LastError != ""
	w.mu.Unlock()
	if wasErr {
		w.log.Info("reconnected to Docker")
	}

	resync := time.NewTicker(w.o.Resync)
	defer resync.Stop()
	var (
		debounce  *time.Timer
		debounceC <-chan time.Time
	)
	defer func() {
		if debounce != nil {
			debounce.Stop()
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return true, ctx.Err()
		case m := <-msgs:
			if m.Type != events.ServiceEventType && m.Type != events.NetworkEventType {
				continue
			}
			w.mu.Lock()
			w.stats.Events++
			w.mu.Unlock()
			if debounceC == nil {
				debounce = time.NewTimer(w.o.Debounce)
				debounceC = debounce.C
			}
		case err := <-errs:
			if err == nil || errors.Is(err, io.EOF) {
				err = ErrEventStreamClosed
			}
			return true, fmt.Errorf("watcher: events: %w", err)
		case <-debounceC:
			debounceC = nil
			if err := w.sync(ctx); err != nil {
				return true, err
			}
		case <-resync.C:
			if err := w.sync(ctx); err != nil {
				return true, err
			}
		}
	}
}

// sync lists the state and hands it to Apply.
func (w *Watcher) sync(ctx context.Context) error {
	cctx, cancel := context.WithTimeout(ctx, w.o.CallTimeout)
	defer cancel()
	nets, err := w.o.Docker.Networks(cctx)
	if err != nil {
		return fmt.Errorf("watcher: list networks: %w", err)
	}
	svcs, err := w.o.Docker.Services(cctx)
	if err != nil {
		return fmt.Errorf("watcher: list services: %w", err)
	}
	w.o.Apply(State{Services: svcs, Networks: nets})
	w.mu.Lock()
	w.stats.Connected = true
	w.stats.Syncs++
	w.stats.LastSync = time.Now()
	w.stats.LastError = ""
	w.mu.Unlock()
	return nil
}
