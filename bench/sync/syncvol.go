// syncvol: the pair of engines measured, and what its process spends.

package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/homeswarm/homeswarm/volumedriver/syncengine"
)

type svPair struct {
	a, b  string // the volume's directory on node A and node B
	close func()
}

// startSyncvol starts two engines on 127.0.0.1, B dialling A, and one
// volume created on A; it returns once a first file has reached B.
func startSyncvol(ctx context.Context, c config, dir string, noFsync bool) (*svPair, error) {
	lg := logrus.New()
	lg.SetLevel(logrus.WarnLevel)
	var engines []*syncengine.Engine
	p := &svPair{close: func() {
		for _, e := range engines {
			e.Close()
		}
	}}
	newNode := func(name string, peers ...string) (*syncengine.Engine, error) {
		d := filepath.Join(dir, name)
		e, err := syncengine.New(syncengine.Options{
			StateDir:          filepath.Join(d, "state"),
			ListenAddr:        "127.0.0.1:0",
			ClusterKey:        "bench-sync-key",
			Peers:             peers,
			DeviceName:        name,
			VolumeDir:         func(v string) string { return filepath.Join(d, "vols", v) },
			Logger:            lg.WithField("node", name),
			ReconnectInterval: time.Second,
			DisableFsync:      noFsync,
		})
		if err != nil {
			return nil, err
		}
		engines = append(engines, e) // p.close closes it, which waits for Run
		errc := make(chan error, 1)
		go func() { errc <- e.Run(ctx) }()
		select {
		case <-e.Ready():
			return e, nil
		case err := <-errc:
			return nil, err
		}
	}
	fail := func(err error) (*svPair, error) {
		p.close()
		return nil, err
	}
	a, err := newNode("a")
	if err != nil {
		return fail(err)
	}
	if _, err := newNode("b", a.ListenAddr()); err != nil {
		return fail(err)
	}
	const vol = "bench"
	p.a, p.b = filepath.Join(dir, "a", "vols", vol), filepath.Join(dir, "b", "vols", vol)
	if err := writeFile(filepath.Join(p.a, "warmup"), []byte("warm")); err != nil {
		return fail(err)
	}
	if err := a.AddVolume(ctx, vol, p.a, nil, nil); err != nil {
		return fail(err)
	}
	if _, err := waitContent(ctx, filepath.Join(p.b, "warmup"), []byte("warm"), c.poll, 60*time.Second); err != nil {
		return fail(fmt.Errorf("volume never reached B: %w", err))
	}
	return p, nil
}

// cpuTime is the user+system CPU time this process has used (for a
// syncvol pair: both engines, plus the bench writing and polling).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// runqWait is the time this process's threads spent runnable but waiting
// for a CPU (/proc/self/task/*/schedstat): how much the machine's other
// work held it back.
func runqWait() time.Duration {
	var sum int64
	tasks, _ := os.ReadDir("/proc/self/task")
	for _, t := range tasks {
		b, err := os.ReadFile("/proc/self/task/" + t.Name() + "/schedstat")
		if f := strings.Fields(string(b)); err == nil && len(f) >= 2 {
			n, _ := strconv.ParseInt(f[1], 10, 64)
			sum += n
		}
	}
	return time.Duration(sum)
}

// minFlt is this process's count of minor page faults: memory the kernel
// had to map afresh (the first round of a fresh process pays for its heap).
func minFlt() int64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Minflt
}

// ------------------------------------------------------------------ rsync
