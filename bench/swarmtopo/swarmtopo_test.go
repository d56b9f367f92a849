package swarmtopo

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"
)

func TestRSS(t *testing.T) {
	t.Parallel()
	rss, err := RSS(os.Getpid())
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	if rss < 1<<20 || rss > 1<<34 {
		t.Fatalf("RSS of the test process %d bytes: not plausible", rss)
	}
	if _, err := RSS(-1); err == nil {
		t.Fatal("RSS of pid -1 succeeded")
	}
}

func TestPoll(t *testing.T) {
	t.Parallel()
	n := 0
	err := Poll(context.Background(), time.Second, time.Millisecond, func() error {
		if n++; n < 3 {
			return errors.New("not yet")
		}
		return nil
	})
	if err != nil || n != 3 {
		t.Fatalf("Poll = %v after %d calls, want nil after 3", err, n)
	}
	err = Poll(context.Background(), 20*time.Millisecond, 5*time.Millisecond, func() error { return errors.New("never") })
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("Poll = %v, want ErrTimeout", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Poll(ctx, time.Minute, time.Second, func() error { return errors.New("never") }); !errors.Is(err, context.Canceled) {
		t.Fatalf("Poll with a cancelled context = %v", err)
	}
}

func TestFromEnv(t *testing.T) {
	t.Setenv("TOPO_PREFIX", "")
	t.Setenv("TOPO_ROOT", "")
	t.Setenv("TOPO_RUN", "")
	tp := FromEnv("hf")
	if tp.Prefix != "hf" || tp.Root != "/var/lib/homeswarm-topo-hf" || tp.Run != "/run/hf" {
		t.Fatalf("FromEnv defaults: %+v", tp)
	}
	if tp.Namespace("home1") != "hf-home1" || tp.Socket("vps") != "/run/hf/vps/docker.sock" {
		t.Fatalf("names: %s %s", tp.Namespace("home1"), tp.Socket("vps"))
	}
	t.Setenv("TOPO_PREFIX", "ac")
	if tp := FromEnv("hf"); tp.Prefix != "ac" || tp.Root != "/var/lib/homeswarm-topo-ac" {
		t.Fatalf("FromEnv with TOPO_PREFIX=ac: %+v", tp)
	}
}
