// Package dockertest provides an in-memory Docker for testing edge's watcher
// and daemon without an engine: tests set the services, emit events, take
// the "engine" down and bring it back.
package dockertest

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"sync"

	"github.com/moby/moby/api/types/events"
	"github.com/moby/moby/api/types/swarm"

	"github.com/homeswarm/homeswarm/edge/watcher"
)

// ErrDown is what every call returns while the fake is down.
var ErrDown = errors.New("dockertest: cannot connect to the Docker daemon")

// Fake is an in-memory [watcher.Docker]. Its methods are safe for concurrent use.
type Fake struct {
	mu       sync.Mutex
	services []swarm.Service
	tasks    []swarm.Task
	tlists   int
	networks map[string]string
	down     bool
	subs     map[*sub]bool
	lists    int
	connects int
}

type sub struct {
	msgs chan events.Message
	errs chan error
	done chan struct{} // closed when the stream ends
	once sync.Once
}

func (s *sub) fail(err error) {
	s.once.Do(func() {
		s.errs <- err
		close(s.done)
	})
}

var _ watcher.Docker = (*Fake)(nil)

// New returns a Fake that is up, with no services and the given networks
// (ID to name; nil: none).
func New(networks map[string]string) *Fake {
	return &Fake{networks: networks, subs: map[*sub]bool{}}
}

// SetServices replaces the services without emitting an event, as if the
// event was missed.
func (f *Fake) SetServices(s ...swarm.Service) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.services = slices.Clone(s)
}

// SetTasks replaces the tasks; no event is emitted (Swarm has no task
// events).
func (f *Fake) SetTasks(t ...swarm.Task) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tasks = slices.Clone(t)
}

// TaskLists is how many times Tasks was called.
func (f *Fake) TaskLists() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.tlists
}

// Tasks implements [watcher.Docker]: the tasks whose desired state is
// running, as the engine's desired-state filter gives them.
func (f *Fake) Tasks(ctx context.Context) ([]swarm.Task, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tlists++
	if f.down {
		return nil, ErrDown
	}
	var out []swarm.Task
	for _, t := range f.tasks {
		if t.DesiredState == swarm.TaskStateRunning {
			out = append(out, t)
		}
	}
	return out, nil
}

// Task returns a task of service (its ID, as [Service] makes it: "id-"+name)
// in the given desired and observed state, with an address (IP, no prefix
// length) on each network (ID) of addrs, given as pairs.
func Task(id, service string, desired, state swarm.TaskState, addrs ...string) swarm.Task {
	var t swarm.Task
	t.ID = id
	t.ServiceID = "id-" + service
	t.DesiredState = desired
	t.Status.State = state
	for i := 0; i+1 < len(addrs); i += 2 {
		var a swarm.NetworkAttachment
		a.Network.ID = addrs[i]
		if p, err := netip.ParsePrefix(addrs[i+1] + "/24"); err == nil {
			a.Addresses = []netip.Prefix{p}
		}
		t.NetworksAttachments = append(t.NetworksAttachments, a)
	}
	return t
}

// Emit sends a service event to every open event stream and returns how
// many received it. It blocks until each has received it or ended.
func (f *Fake) Emit(action events.Action, service string) int {
	f.mu.Lock()
	subs := make([]*sub, 0, len(f.subs))
	for s := range f.subs {
		subs = append(subs, s)
	}
	f.mu.Unlock()
	m := events.Message{Type: events.ServiceEventType, Action: action, Scope: "swarm",
		Actor: events.Actor{ID: service, Attributes: map[string]string{"name": service}}}
	n := 0
	for _, s := range subs {
		select {
		case s.msgs <- m:
			n++
		case <-s.done:
		}
	}
	return n
}

// SetDown takes the engine down (every call fails, open event streams end
// with ErrDown) or brings it back up.
func (f *Fake) SetDown(down bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.down = down
	if down {
		for s := range f.subs {
			s.fail(ErrDown)
			delete(f.subs, s)
		}
	}
}

// Lists is how many times Services was called.
func (f *Fake) Lists() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lists
}

// Connects is how many times Events was called.
func (f *Fake) Connects() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.connects
}

// Subscribers is how many event streams are open.
func (f *Fake) Subscribers() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.subs)
}

// Services implements [watcher.Docker].
func (f *Fake) Services(ctx context.Context) ([]swarm.Service, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lists++
	if f.down {
		return nil, ErrDown
	}
	return slices.Clone(f.services), nil
}

// Networks implements [watcher.Docker].
func (f *Fake) Networks(ctx context.Context) (map[string]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return nil, ErrDown
	}
	out := make(map[string]string, len(f.networks))
	for k, v := range f.networks {
		out[k] = v
	}
	return out, nil
}

// Events implements [watcher.Docker].
func (f *Fake) Events(ctx context.Context) (<-chan events.Message, <-chan error) {
	s := &sub{msgs: make(chan events.Message), errs: make(chan error, 1), done: make(chan struct{})}
	f.mu.Lock()
	f.connects++
	if f.down {
		f.mu.Unlock()
		s.fail(ErrDown)
		return s.msgs, s.errs
	}
	f.subs[s] = true
	f.mu.Unlock()
	go func() {
		<-ctx.Done()
		f.mu.Lock()
		delete(f.subs, s)
		f.mu.Unlock()
		s.fail(ctx.Err())
	}()
	return s.msgs, s.errs
}

// Service returns a Swarm service with a name, labels (key, value pairs)
// and network attachments (IDs), for tests.
func Service(name string, networks []string, labels ...string) swarm.Service {
	var s swarm.Service
	s.ID = "id-" + name
	s.Spec.Name = name
	s.Spec.Labels = map[string]string{}
	for i := 0; i+1 < len(labels); i += 2 {
		s.Spec.Labels[labels[i]] = labels[i+1]
	}
	for _, n := range networks {
		s.Spec.TaskTemplate.Networks = append(s.Spec.TaskTemplate.Networks, swarm.NetworkAttachmentConfig{Target: n})
	}
	return s
}
