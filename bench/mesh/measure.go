//go:build linux

package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// clkTck is USER_HZ, the unit of utime and stime in /proc/<pid>/stat; it is
// 100 on every Linux architecture Go supports.
const clkTck = 100

// topo names the namespaces of the bench's topology.
type topo struct{ prefix string }

func (t topo) ns(node string) string { return t.prefix + "-" + node }

// command returns a command that runs argv in node's network namespace.
func (t topo) command(ctx context.Context, node string, argv ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", t.ns(node)}, argv...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd
}

// run runs argv in node's namespace and returns its stdout; the error
// carries stderr.
func (t topo) run(ctx context.Context, node string, argv ...string) (string, error) {
	cmd := t.command(ctx, node, argv...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("%s in %s: %w: %s", strings.Join(argv, " "), t.ns(node), err, strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}

// daemon is a long-running child process in a namespace. `ip netns exec`
// execs its command, so the child's PID is the daemon's own.
type daemon struct {
	name  string
	cmd   *exec.Cmd
	lines chan string // stdout, line by line; closed at EOF
	done  chan struct{}
	err   error
	log   *lockedBuffer // stderr
}

type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// start starts argv in node's namespace with extra environment env.
func (t topo) start(name, node string, env []string, argv ...string) (*daemon, error) {
	cmd := t.command(context.Background(), node, argv...)
	cmd.Env = append(os.Environ(), env...)
	d := &daemon{name: name, cmd: cmd, lines: make(chan string, 64), done: make(chan struct{}), log: &lockedBuffer{}}
	cmd.Stderr = d.log
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			select {
			case d.lines <- sc.Text():
			default: // nobody listens: drop
			}
		}
		_, _ = io.Copy(io.Discard, out)
		close(d.lines)
		d.err = cmd.Wait()
		close(d.done)
	}()
	return d, nil
}

func (d *daemon) pid() int { return d.cmd.Process.Pid }

// waitLine waits for a stdout line starting with prefix.
func (d *daemon) waitLine(ctx context.Context, prefix string, timeout time.Duration) (string, error) {
	tm := time.NewTimer(timeout)
	defer tm.Stop()
	for {
		select {
		case l, ok := <-d.lines:
			if !ok {
				<-d.done
				return "", fmt.Errorf("%s exited (%v): %s", d.name, d.err, strings.TrimSpace(d.log.String()))
			}
			if strings.HasPrefix(l, prefix) {
				return l, nil
			}
		case <-tm.C:
			return "", fmt.Errorf("%s: no %q within %v: %s", d.name, prefix, timeout, strings.TrimSpace(d.log.String()))
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
}

// stop sends SIGTERM, waits up to grace, then kills. It returns the last
// stdout lines that were not consumed.
func (d *daemon) stop(grace time.Duration) []string {
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	var rest []string
	tm := time.NewTimer(grace)
	defer tm.Stop()
	for {
		select {
		case l, ok := <-d.lines:
			if ok {
				rest = append(rest, l)
				continue
			}
			<-d.done
			return rest
		case <-tm.C:
			_ = d.cmd.Process.Kill()
			<-d.done
			return rest
		}
	}
}

// cpuTicks returns utime+stime of pid (all its threads), in clock ticks.
func cpuTicks(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	return parseStatCPU(string(b))
}

// parseStatCPU reads utime+stime from the text of /proc/<pid>/stat.
func parseStatCPU(s string) (int64, error) {
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, errors.New("stat: no ')'")
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, errors.New("stat: short")
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("stat: %w", err)
	}
	return u + st, nil
}

// sumTicks adds the CPU ticks of several processes.
func sumTicks(pids []int) (int64, error) {
	var total int64
	for _, p := range pids {
		t, err := cpuTicks(p)
		if err != nil {
			return 0, err
		}
		total += t
	}
	return total, nil
}

// iperfResult is what one iperf3 client run measured.
type iperfResult struct {
	BitsPerSecond float64 // received by the server
	Bytes         float64 // received by the server
	Seconds       float64
	Retransmits   int
	// WireBytesPerPacket is the mean size of what vps's WAN interface
	// received per packet during the run (filled by iperf, not iperf3).
	WireBytesPerPacket float64
}

// parseIperf reads the fields we need from `iperf3 -J` output.
func parseIperf(b []byte) (iperfResult, error) {
	var v struct {
		End struct {
			SumSent struct {
				Retransmits int `json:"retransmits"`
			} `json:"sum_sent"`
			SumReceived struct {
				Seconds       float64 `json:"seconds"`
				Bytes         float64 `json:"bytes"`
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
		Error string `json:"error"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return iperfResult{}, fmt.Errorf("iperf3 output: %w", err)
	}
	if v.Error != "" {
		return iperfResult{}, fmt.Errorf("iperf3: %s", v.Error)
	}
	r := v.End.SumReceived
	if r.BitsPerSecond <= 0 || r.Seconds <= 0 {
		return iperfResult{}, errors.New("iperf3: nothing received")
	}
	return iperfResult{BitsPerSecond: r.BitsPerSecond, Bytes: r.Bytes, Seconds: r.Seconds, Retransmits: v.End.SumSent.Retransmits}, nil
}

// linkRx is an interface's receive counters.
type linkRx struct{ Bytes, Packets uint64 }

// rxCounters reads dev's receive counters in node's namespace. On a veth,
// a GSO packet (many datagrams in one skb) counts once.
func (t topo) rxCounters(ctx context.Context, node, dev string) (linkRx, error) {
	out, err := t.run(ctx, node, "ip", "-j", "-s", "link", "show", dev)
	if err != nil {
		return linkRx{}, err
	}
	return parseLinkRx([]byte(out))
}

// parseLinkRx reads the receive counters from `ip -j -s link show DEV`.
func parseLinkRx(b []byte) (linkRx, error) {
	var v []struct {
		Stats64 struct {
			Rx linkRx `json:"rx"`
		} `json:"stats64"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return linkRx{}, fmt.Errorf("ip link output: %w", err)
	}
	if len(v) != 1 {
		return linkRx{}, errors.New("ip link output: not one link")
	}
	return v[0].Stats64.Rx, nil
}

var pingTimeRe = regexp.MustCompile(`seq=\d+ .*time=([0-9.]+) ms`)

// parsePing returns the RTTs, in ms, of busybox ping's reply lines.
func parsePing(s string) []float64 {
	var rtts []float64
	for _, l := range strings.Split(s, "\n") {
		if m := pingTimeRe.FindStringSubmatch(l); m != nil {
			if v, err := strconv.ParseFloat(m[1], 64); err == nil {
				rtts = append(rtts, v)
			}
		}
	}
	return rtts
}
