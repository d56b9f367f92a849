package watcher_test

import (
	"context"
	"errors"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/api/types/events"
	"github.com/moby/moby/api/types/swarm"
	"github.com/sirupsen/logrus"

	"github.com/homeswarm/homeswarm/edge/watcher"
	"github.com/homeswarm/homeswarm/edge/watcher/dockertest"
)

// recorder records every state handed to Apply.
type recorder struct {
	mu     sync.Mutex
	states []watcher.State
	times  []time.Time
}

func (r *recorder) apply(s watcher.State) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.states = append(r.states, s)
	r.times = append(r.times, time.Now())
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.states)
}

func (r *recorder) last() (watcher.State, time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.states) == 0 {
		return watcher.State{}, time.Time{}
	}
	return r.states[len(r.states)-1], r.times[len(r.times)-1]
}

// lastNames returns the service names of the last state.
func (r *recorder) lastNames() []string {
	s, _ := r.last()
	var names []string
	for _, svc := range s.Services {
		names = append(names, svc.Spec.Name)
	}
	return names
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func equal(a []string, b ...string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

type harness struct {
	fake *dockertest.Fake
	rec  *recorder
	w    *watcher.Watcher
	stop func()
}

func start(t *testing.T, o watcher.Options) *harness {
	t.Helper()
	h := &harness{fake: dockertest.New(map[string]string{"n1": "web"}), rec: &recorder{}}
	if o.Docker == nil {
		o.Docker = h.fake
	}
	o.Apply = h.rec.apply
	if o.Log == nil {
		l := logrus.New()
		l.SetOutput(io.Discard)
		o.Log = logrus.NewEntry(l)
	}
	h.w = watcher.New(o)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.w.Run(ctx) }()
	var once sync.Once
	h.stop = func() { once.Do(func() { stopRun(t, cancel, done) }) }
	t.Cleanup(h.stop)
	return h
}

func stopRun(t *testing.T, cancel context.CancelFunc, done chan error) {
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Run returned %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Error("Run did not return after cancel")
	}
}

func TestInitialSync(t *testing.T) {
	t.Parallel()
	fake := dockertest.New(map[string]string{"n1": "web"})
	fake.SetServices(dockertest.Service("a", []string{"n1"}))
	h := start(t, watcher.Options{Docker: fake, Resync: time.Hour})
	waitFor(t, "first Apply", 2*time.Second, func() bool { return h.rec.count() == 1 })
	st, _ := h.rec.last()
	if len(st.Services) != 1 || st.Services[0].Spec.Name != "a" || st.Networks["n1"] != "web" {
		t.Fatalf("state = %+v", st)
	}
	if s := h.w.Stats(); !s.Connected || s.Syncs != 1 || s.LastSync.IsZero() {
		t.Errorf("Stats = %+v", s)
	}
}

func TestEventTriggersDebouncedRebuild(t *testing.T) {
	t.Parallel()
	const debounce = 40 * time.Millisecond
	h := start(t, watcher.Options{Debounce: debounce, Resync: time.Hour})
	waitFor(t, "first Apply", 2*time.Second, func() bool { return h.rec.count() == 1 })
	waitFor(t, "subscription", 2*time.Second, func() bool { return h.fake.Subscribers() == 1 })

	h.fake.SetServices(dockertest.Service("a", nil), dockertest.Service("b", nil))
	sent := time.Now()
	for i := 0; i < 10; i++ { // a burst, as docker service create produces
		if h.fake.Emit(events.ActionUpdate, "a") != 1 {
			t.Fatal("event not delivered")
		}
	}
	waitFor(t, "rebuild after event", 2*time.Second, func() bool { return equal(h.rec.lastNames(), "a", "b") })
	_, at := h.rec.last()
	if lat := at.Sub(sent); lat < debounce-5*time.Millisecond || lat > debounce+500*time.Millisecond {
		t.Errorf("rebuilt %v after the event, want about %v", lat, debounce)
	}
	time.Sleep(3 * debounce)
	if n := h.rec.count(); n != 2 {
		t.Errorf("burst of 10 events gave %d listings after the first, want 1", n-1)
	}
	if s := h.w.Stats(); s.Events != 10 {
		t.Errorf("Stats.Events = %d, want 10", s.Events)
	}
}

func TestResyncCatchesMissedEvents(t *testing.T) {
	t.Parallel()
	h := start(t, watcher.Options{Resync: 50 * time.Millisecond})
	waitFor(t, "first Apply", 2*time.Second, func() bool { return h.rec.count() >= 1 })
	h.fake.SetServices(dockertest.Service("missed", nil)) // no event
	waitFor(t, "resync", 2*time.Second, func() bool { return equal(h.rec.lastNames(), "missed") })
}

func TestDockerDownKeepsLastStateAndRecovers(t *testing.T) {
	t.Parallel()
	h := start(t, watcher.Options{Resync: 20 * time.Millisecond,
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 80 * time.Millisecond})
	h.fake.SetServices(dockertest.Service("a", nil))
	waitFor(t, "first Apply", 2*time.Second, func() bool { return equal(h.rec.lastNames(), "a") })

	h.fake.SetDown(true)
	waitFor(t, "disconnect noticed", 2*time.Second, func() bool { return !h.w.Stats().Connected })
	applied := h.rec.count()
	connects := h.fake.Connects()
	time.Sleep(600 * time.Millisecond)
	if n := h.rec.count(); n != applied {
		t.Errorf("Apply called %d times while Docker was down; the last routes must stay", n-applied)
	}
	// Backoff 10, 20, 40, 80, 80, … ms: about 9 attempts in 600 ms, not 30
	// as a fixed 20 ms retry would make.
	if n := h.fake.Connects() - connects; n < 3 || n > 12 {
		t.Errorf("%d reconnect attempts in 600ms; want backoff between 10ms and 80ms", n)
	}
	if s := h.w.Stats(); s.LastError == "" || s.SyncErrors == 0 {
		t.Errorf("Stats while down = %+v", s)
	}

	h.fake.SetServices(dockertest.Service("a", nil), dockertest.Service("b", nil))
	h.fake.SetDown(false)
	waitFor(t, "recovery", 2*time.Second, func() bool { return equal(h.rec.lastNames(), "a", "b") })
	if s := h.w.Stats(); !s.Connected || s.LastError != "" {
		t.Errorf("Stats after recovery = %+v", s)
	}
	waitFor(t, "resubscription", 2*time.Second, func() bool { return h.fake.Subscribers() == 1 })
}

func TestDockerDownAtStart(t *testing.T) {
	t.Parallel()
	fake := dockertest.New(nil)
	fake.SetDown(true)
	h := start(t, watcher.Options{Docker: fake, MinBackoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond, Resync: time.Hour})
	waitFor(t, "a few attempts", 2*time.Second, func() bool { return fake.Connects() >= 3 })
	if h.rec.count() != 0 {
		t.Fatal("Apply called while Docker was down")
	}
	fake.SetServices(dockertest.Service("late", nil))
	fake.SetDown(false)
	waitFor(t, "first Apply", 2*time.Second, func() bool { return equal(h.rec.lastNames(), "late") })
}

func TestStopReleasesEventStream(t *testing.T) {
	t.Parallel()
	h := start(t, watcher.Options{Resync: time.Hour})
	waitFor(t, "subscription", 2*time.Second, func() bool { return h.fake.Subscribers() == 1 })
	h.stop()
	waitFor(t, "unsubscribe", 2*time.Second, func() bool { return h.fake.Subscribers() == 0 })
}

// taskIDs returns the IDs of the last state's tasks.
func (r *recorder) taskIDs() []string {
	s, _ := r.last()
	var ids []string
	for _, t := range s.Tasks {
		ids = append(ids, t.ID)
	}
	return ids
}

// Swarm has no task events: the watcher polls the task list and hands on
// a change (a task starts, one is being shut down) without any event, and
// only when the serving tasks changed.
func TestTaskPollFollowsTasksWithoutEvents(t *testing.T) {
	t.Parallel()
	const poll = 20 * time.Millisecond
	run, shut := swarm.TaskStateRunning, swarm.TaskStateShutdown
	fake := dockertest.New(map[string]string{"n1": "web"})
	fake.SetServices(dockertest.Service("a", []string{"n1"}))
	fake.SetTasks(dockertest.Task("t1", "a", run, run, "n1", "10.0.1.5"))
	h := start(t, watcher.Options{Docker: fake, Resync: time.Hour, TaskPoll: poll})
	waitFor(t, "first Apply with t1", 2*time.Second, func() bool { return equal(h.rec.taskIDs(), "t1") })

	// A new task is created, then runs: only the running one counts.
	fake.SetTasks(dockertest.Task("t1", "a", run, run, "n1", "10.0.1.5"),
		dockertest.Task("t2", "a", run, swarm.TaskStateStarting, "n1", "10.0.1.6"))
	time.Sleep(5 * poll)
	if ids := h.rec.taskIDs(); !equal(ids, "t1") {
		t.Fatalf("tasks %v, want t1 only: t2 is not running yet", ids)
	}
	applies := h.rec.count()
	if applies != 1 {
		t.Errorf("%d Apply calls for unchanged serving tasks, want 1", applies)
	}
	fake.SetTasks(dockertest.Task("t1", "a", run, run, "n1", "10.0.1.5"),
		dockertest.Task("t2", "a", run, run, "n1", "10.0.1.6"))
	waitFor(t, "t2 running", time.Second, func() bool { return equal(h.rec.taskIDs(), "t1", "t2") })

	// Swarm starts shutting t1 down (desired state shutdown, still running):
	// it is dropped at once.
	fake.SetTasks(dockertest.Task("t1", "a", shut, run, "n1", "10.0.1.5"),
		dockertest.Task("t2", "a", run, run, "n1", "10.0.1.6"))
	changed := time.Now()
	waitFor(t, "t1 dropped", time.Second, func() bool { return equal(h.rec.taskIDs(), "t2") })
	if lat := time.Since(changed); lat > 10*poll {
		t.Errorf("shutting-down task dropped after %v, want about one poll (%v)", lat, poll)
	}
	st, _ := h.rec.last()
	if len(st.Services) != 1 || st.Networks["n1"] != "web" {
		t.Errorf("a task change must keep the last services and networks: %+v", st)
	}
	if s := h.w.Stats(); s.TaskPolls == 0 || s.TaskSyncs != 2 || s.Syncs != 1 {
		t.Errorf("Stats = %+v, want task polls, 2 task changes, 1 full listing", s)
	}
}
