// The methods every system is measured by: small files one at a time,
// one large file, and the waits on the receiving directory.

package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"log"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/homeswarm/homeswarm/bench/schema"
	"github.com/homeswarm/homeswarm/bench/swarmtopo"
)

// smallFiles writes n files in src one at a time and times each until it is
// in dst with the right content.
func smallFiles(ctx context.Context, c config, src, dst string, n int, timeout time.Duration) ([]float64, error) {
	rnd := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	var out []float64
	for i := 0; i < n; i++ {
		rel := filepath.Join(fmt.Sprintf("d%d", i%4), fmt.Sprintf("f%03d.txt", i))
		data := make([]byte, c.smallSize)
		for j := range data {
			data[j] = 'a' + byte(rnd.IntN(26))
		}
		start := time.Now()
		if err := writeFile(filepath.Join(src, rel), data); err != nil {
			return nil, err
		}
		if _, err := waitContent(ctx, filepath.Join(dst, rel), data, c.poll, timeout); err != nil {
			return nil, fmt.Errorf("small file %d: %w", i, err)
		}
		out = append(out, schema.Round(time.Since(start).Seconds(), 4))
		if err := swarmtopo.Sleep(ctx, c.gap); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// syncPush writes data as a new file in src and times it until the file
// in dst has its full size: the receivers write a temporary name and rename
// it at the end, so the full-size final name means complete. The content
// is verified after the clock stops; then the file is deleted on both
// sides. It returns MB/s (10^6 bytes); with cpuOut and waitOut it appends
// the CPU seconds this process used until complete and the time its threads
// waited for a CPU (meaningful for syncvol, whose engines run in this
// process).
func syncPush(ctx context.Context, c config, src, dst string, data []byte, sum [32]byte, cpuOut, waitOut *[]float64) (float64, error) {
	const name = "large.bin"
	// Timeline for the log: when B's temporary file first shows (the
	// sender has scanned and announced the file, the receiver is pulling).
	tmpSeen := make(chan time.Duration, 1)
	stopWatch := make(chan struct{})
	cpu0 := cpuTime()
	flt0 := minFlt()
	wait0 := runqWait()
	start := time.Now()
	go func() {
		defer close(tmpSeen)
		for {
			select {
			case <-stopWatch:
				return
			case <-time.After(c.poll):
			}
			if ents, err := os.ReadDir(dst); err == nil {
				for _, e := range ents {
					if strings.HasPrefix(e.Name(), ".syncthing."+name) || strings.HasPrefix(e.Name(), "~syncthing~"+name) {
						tmpSeen <- time.Since(start)
						return
					}
				}
			}
		}
	}()
	if err := writeFile(filepath.Join(src, name), data); err != nil {
		close(stopWatch)
		return 0, err
	}
	written := time.Since(start)
	err := waitSize(ctx, filepath.Join(dst, name), int64(len(data)), c.poll, 3*time.Minute)
	d := time.Since(start)
	cpu, wait := cpuTime()-cpu0, runqWait()-wait0
	close(stopWatch)
	if err != nil {
		return 0, err
	}
	tmp := <-tmpSeen
	if cpuOut != nil {
		*cpuOut = append(*cpuOut, schema.Round(cpu.Seconds(), 3))
		*waitOut = append(*waitOut, schema.Round(wait.Seconds(), 3))
	}
	log.Printf("    timeline: written %.3fs, receiver's temp file %.3fs, complete %.3fs; CPU of this process %.3fs; minor faults %d; runq wait %.3fs", written.Seconds(), tmp.Seconds(), d.Seconds(), cpu.Seconds(), minFlt()-flt0, wait.Seconds())
	if err := sameSum(filepath.Join(dst, name), sum); err != nil {
		return 0, err
	}
	if err := os.Remove(filepath.Join(src, name)); err != nil {
		return 0, err
	}
	err = swarmtopo.Poll(ctx, time.Minute, 10*time.Millisecond, func() error {
		if _, err := os.Lstat(filepath.Join(dst, name)); !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("%s not deleted on the receiver (%v)", name, err)
		}
		return nil
	})
	return schema.Round(float64(len(data))/1e6/d.Seconds(), 1), err
}

// writeFile writes data to path, creating its directory.
func writeFile(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o644)
}

// waitContent polls path every interval until it holds want; it returns
// how long that took.
func waitContent(ctx context.Context, path string, want []byte, interval, timeout time.Duration) (time.Duration, error) {
	start := time.Now()
	err := swarmtopo.Poll(ctx, timeout, interval, func() error {
		got, err := os.ReadFile(path)
		if err == nil && !bytes.Equal(got, want) {
			err = fmt.Errorf("%s: %d bytes, not the %d written", path, len(got), len(want))
		}
		return err
	})
	return time.Since(start), err
}

// waitSize polls path every interval until it is size bytes long.
func waitSize(ctx context.Context, path string, size int64, interval, timeout time.Duration) error {
	return swarmtopo.Poll(ctx, timeout, interval, func() error {
		fi, err := os.Stat(path)
		if err == nil && fi.Size() != size {
			err = fmt.Errorf("%s: %d bytes of %d", path, fi.Size(), size)
		}
		return err
	})
}

// waitListen waits until something accepts TCP connections on addr.
func waitListen(ctx context.Context, addr string, timeout time.Duration) error {
	return swarmtopo.Poll(ctx, timeout, 20*time.Millisecond, func() error {
		c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
		if err == nil {
			c.Close()
		}
		return err
	})
}

func sameSum(path string, want [32]byte) error {
	got, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if sha256.Sum256(got) != want {
		return fmt.Errorf("%s: content differs from the source", path)
	}
	return nil
}

// fillRandom fills b with incompressible bytes, fast, seeded by the clock.
func fillRandom(b []byte) {
	var seed [32]byte
	binary.LittleEndian.PutUint64(seed[:], uint64(time.Now().UnixNano()))
	_, _ = rand.NewChaCha8(seed).Read(b)
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}
