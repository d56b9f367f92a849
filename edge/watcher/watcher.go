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
//
// Swarm's event stream carries no task events, so the watcher also polls the
// manager's task list (desired state running, a cheap call answered from the
// manager's memory) every Options.TaskPoll and hands the state on only when
// the running tasks or their addresses changed: a task that starts, or one
// Swarm begins to shut down, reaches Apply within one poll.
package watcher

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
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
	// Tasks lists the Swarm's tasks whose desired state is running (a task
	// Swarm is shutting down has desired state shutdown and is not listed).
	Tasks(ctx context.Context) ([]swarm.Task, error)
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
	// Tasks are the tasks that serve: desired state running and state
	// running (see [Serving]), sorted by ID.
	Tasks []swarm.Task
}

// Serving reports whether t serves requests: Swarm wants it running and it
// runs. A task Swarm is shutting down (desired state shutdown) or that has
// not started yet does not.
func Serving(t swarm.Task) bool {
	return t.DesiredState == swarm.TaskStateRunning && t.Status.State == swarm.TaskStateRunning
}

// servingTasks keeps the tasks that serve, sorted by ID.
func servingTasks(tasks []swarm.Task) []swarm.Task {
	var out []swarm.Task
	for _, t := range tasks {
		if Serving(t) {
			out = append(out, t)
		}
	}
	slices.SortFunc(out, func(a, b swarm.Task) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// taskKey is what routing depends on in tasks (as servingTasks returns
// them): which run, for which service, at which addresses.
func taskKey(tasks []swarm.Task) string {
	var sb strings.Builder
	for _, t := range tasks {
		sb.WriteString(t.ID + " " + t.ServiceID)
		for _, n := range t.NetworksAttachments {
			sb.WriteString(" " + n.Network.ID + "=")
			for _, a := range n.Addresses {
				sb.WriteString(a.String() + ",")
			}
		}
		sb.WriteByte('\n')
	}
	return sb.String()
}

// The defaults of Options.Debounce and Options.Resync, and of edge's
// -debounce and -resync.
const (
	DefaultDebounce = 75 * time.Millisecond
	DefaultResync   = 30 * time.Second
	// DefaultTaskPoll is the default of Options.TaskPoll and edge's
	// -task-poll.
	DefaultTaskPoll = 250 * time.Millisecond
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
	// TaskPoll is how often the tasks are listed; Apply is called only
	// when the serving tasks or their addresses changed. Zero:
	// [DefaultTaskPoll]; negative: tasks are listed only with the services.
	TaskPoll time.Duration
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
	TaskPolls  uint64    // task listings between full listings
	TaskSyncs  uint64    // task listings that changed the serving tasks
	SyncErrors uint64    // failed listings or broken event streams
	Reconnects uint64    // event stream (re)connections attempted
	LastSync   time.Time // time of the last successful listing; zero: none yet
	LastError  string    // the last failure; empty: none
}

// Watcher watches one Docker API. Run it once.
type Watcher struct {
	o   Options
	log *logrus.Entry

	// last is the state last handed to Apply (Run's goroutine only).
	last    State
	lastKey string

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
	if o.TaskPoll == 0 {
		o.TaskPoll = DefaultTaskPoll
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
	var pollC <-chan time.Time
	if w.o.TaskPoll > 0 {
		poll := time.NewTicker(w.o.TaskPoll)
		defer poll.Stop()
		pollC = poll.C
	}
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
		case <-pollC:
			if err := w.pollTasks(ctx); err != nil {
				return true, err
			}
		}
	}
}

// pollTasks lists the tasks and, if the serving ones changed, hands the
// last services with the new tasks to Apply.
func (w *Watcher) pollTasks(ctx context.Context) error {
	cctx, cancel := context.WithTimeout(ctx, w.o.CallTimeout)
	defer cancel()
	tasks, err := w.o.Docker.Tasks(cctx)
	if err != nil {
		return fmt.Errorf("watcher: list tasks: %w", err)
	}
	tasks = servingTasks(tasks)
	key := taskKey(tasks)
	w.mu.Lock()
	w.stats.TaskPolls++
	w.mu.Unlock()
	if key == w.lastKey {
		return nil
	}
	st := w.last
	st.Tasks = tasks
	w.apply(st, key)
	w.mu.Lock()
	w.stats.TaskSyncs++
	w.mu.Unlock()
	return nil
}

func (w *Watcher) apply(st State, key string) {
	w.last, w.lastKey = st, key
	w.o.Apply(st)
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
	tasks, err := w.o.Docker.Tasks(cctx)
	if err != nil {
		return fmt.Errorf("watcher: list tasks: %w", err)
	}
	tasks = servingTasks(tasks)
	w.apply(State{Services: svcs, Networks: nets, Tasks: tasks}, taskKey(tasks))
	w.mu.Lock()
	w.stats.Connected = true
	w.stats.Syncs++
	w.stats.LastSync = time.Now()
	w.stats.LastError = ""
	w.mu.Unlock()
	return nil
}
