package swarmtopo

import (
	"context"
	"errors"
	"os"
	"strings"
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

func TestSleep(t *testing.T) {
	t.Parallel()
	if err := Sleep(context.Background(), 0); err != nil {
		t.Fatalf("Sleep(0) = %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Sleep(ctx, 0); err != context.Canceled {
		t.Fatalf("Sleep(0) after cancel = %v", err)
	}
	if err := Sleep(ctx, time.Hour); err != context.Canceled {
		t.Fatalf("Sleep(1h) after cancel = %v", err)
	}
}

func TestMachine(t *testing.T) {
	t.Parallel()
	if h := Host(); !strings.Contains(h, " CPUs (") || !strings.Contains(h, "), Linux ") {
		t.Fatalf("Host() = %q", h)
	}
	if m := Machine(); !strings.HasPrefix(m, Host()+", Docker ") {
		t.Fatalf("Machine() = %q", m)
	}
	if p, err := FreePort(); err != nil || p <= 0 {
		t.Fatalf("FreePort() = %d, %v", p, err)
	}
}
