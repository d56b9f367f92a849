package snapvol

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

// fakeConn records that it was closed.
type fakeConn struct {
	addr   string
	closed atomic.Bool
}

func (c *fakeConn) Close() error { c.closed.Store(true); return nil }

// fakeDial answers each address as behaviours says: "ok" at once, "slow"
// after 150 ms, "fail" with an error at once, "hang" never (until ctx).
// Every connection it makes is kept in made; dialled counts the dials.
type fakeDial struct {
	behaviours map[string]string
	made       chan *fakeConn
	dialled    atomic.Int32
}

func newFakeDial(b map[string]string) *fakeDial {
	return &fakeDial{behaviours: b, made: make(chan *fakeConn, len(b))}
}

var errRefused = errors.New("connection refused")

func (f *fakeDial) dial(ctx context.Context, addr string) (*fakeConn, error) {
	f.dialled.Add(1)
	switch f.behaviours[addr] {
	case "slow":
		select {
		case <-time.After(150 * time.Millisecond):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	case "fail":
		return nil, errRefused
	case "hang":
		<-ctx.Done()
		return nil, ctx.Err()
	}
	c := &fakeConn{addr: addr}
	f.made <- c
	return c, nil
}

func TestDialFirst(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		addrs   []string
		head    time.Duration
		want    string        // the address that wins; "" for an error
		within  time.Duration // how long it may take
		atLeast time.Duration
		dialled int32 // dials made, when > 0 (a winner may cancel a dial before it starts)
	}{
		{"all at once, the fastest wins", []string{"slow", "fail", "ok"}, 0, "ok", 100 * time.Millisecond, 0, 0},
		{"the one that answered last, alone", []string{"ok", "slow", "fail"}, time.Second, "ok", 100 * time.Millisecond, 0, 1},
		{"the one that answered last hangs: the others after the head start", []string{"hang", "ok"}, 300 * time.Millisecond, "ok", 600 * time.Millisecond, 300 * time.Millisecond, 2},
		{"the one that answered last fails: the others at once", []string{"fail", "ok"}, time.Second, "ok", 100 * time.Millisecond, 0, 2},
		{"none answers", []string{"fail", "fail2"}, 0, "", 100 * time.Millisecond, 0, 2},
		{"none answers in time", []string{"hang", "hang2"}, 100 * time.Millisecond, "", 1500 * time.Millisecond, time.Second, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			f := newFakeDial(map[string]string{"ok": "ok", "slow": "slow", "fail": "fail", "fail2": "fail", "hang": "hang", "hang2": "hang"})
			began := time.Now()
			c, addr, err := dialFirst(ctx, tc.addrs, tc.head, f.dial)
			took := time.Since(began)
			if tc.want == "" {
				if err == nil {
					t.Fatalf("connected to %s, want an error", addr)
				}
			} else if err != nil || addr != tc.want || c.addr != tc.want {
				t.Fatalf("got %s (%v), want %s", addr, err, tc.want)
			}
			if took > tc.within || took < tc.atLeast {
				t.Fatalf("took %v, want %v to %v", took, tc.atLeast, tc.within)
			}
			if tc.dialled > 0 {
				time.Sleep(200 * time.Millisecond) // any dial still to start
				if n := f.dialled.Load(); n != tc.dialled {
					t.Fatalf("%d dials, want %d", n, tc.dialled)
				}
			}
		})
	}
}

// TestDialFirstClosesTheLosers: a connection made after the winner's is
// closed, the winner's is not.
func TestDialFirstClosesTheLosers(t *testing.T) {
	t.Parallel()
	made := make(chan *fakeConn, 2)
	bStarted := make(chan struct{})
	// a answers once b's dial is under way; b's dial ignores the cancel
	// and connects all the same, after a has won.
	dial := func(ctx context.Context, addr string) (*fakeConn, error) {
		if addr == "b" {
			close(bStarted)
			time.Sleep(150 * time.Millisecond)
		} else {
			<-bStarted
		}
		c := &fakeConn{addr: addr}
		made <- c
		return c, nil
	}
	c, addr, err := dialFirst(context.Background(), []string{"a", "b"}, 0, dial)
	if err != nil || addr != "a" {
		t.Fatalf("got %s (%v), want a", addr, err)
	}
	for range 2 {
		m := <-made
		if m.addr == "b" {
			deadline := time.Now().Add(time.Second)
			for !m.closed.Load() && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
			if !m.closed.Load() {
				t.Fatal("the losing connection was left open")
			}
		}
	}
	if c.closed.Load() {
		t.Fatal("the winning connection was closed")
	}
}
