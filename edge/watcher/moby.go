package watcher

import (
	"context"

	"github.com/moby/moby/api/types/events"
	"github.com/moby/moby/api/types/swarm"
	"github.com/moby/moby/client"
)

// Moby is [Docker] over the Docker Engine API.
type Moby struct {
	c *client.Client
}

var _ Docker = (*Moby)(nil)

// NewMoby connects to the engine at host (e.g. unix:///var/run/docker.sock);
// an empty host uses DOCKER_HOST and Docker's default. The API version is
// negotiated with the engine on first use (Docker 20.10 speaks 1.41).
func NewMoby(host string) (*Moby, error) {
	opts := []client.Opt{client.FromEnv}
	if host != "" {
		opts = append(opts, client.WithHost(host))
	}
	c, err := client.New(opts...)
	if err != nil {
		return nil, err
	}
	return &Moby{c: c}, nil
}

// Services implements [Docker].
func (m *Moby) Services(ctx context.Context) ([]swarm.Service, error) {
	res, err := m.c.ServiceList(ctx, client.ServiceListOptions{})
	return res.Items, err
}

// Networks implements [Docker].
func (m *Moby) Networks(ctx context.Context) (map[string]string, error) {
	res, err := m.c.NetworkList(ctx, client.NetworkListOptions{Filters: make(client.Filters).Add("scope", "swarm")})
	if err != nil {
		return nil, err
	}
	out := make(map[string]string, len(res.Items))
	for _, n := range res.Items {
		out[n.ID] = n.Name
	}
	return out, nil
}

// Tasks implements [Docker].
func (m *Moby) Tasks(ctx context.Context) ([]swarm.Task, error) {
	res, err := m.c.TaskList(ctx, client.TaskListOptions{Filters: make(client.Filters).Add("desired-state", "running")})
	return res.Items, err
}

// Events implements [Docker].
func (m *Moby) Events(ctx context.Context) (<-chan events.Message, <-chan error) {
	res := m.c.Events(ctx, client.EventsListOptions{
		Filters: make(client.Filters).Add("type", string(events.ServiceEventType)),
	})
	return res.Messages, res.Err
}

// Close releases the client's connections.
func (m *Moby) Close() error { return m.c.Close() }
