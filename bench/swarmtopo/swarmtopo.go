// Package swarmtopo is what the benches that run on the seed topology
// (scripts/topo.sh: a VPS and home nodes, each its own dockerd in a network
// namespace, one Swarm) share: which topology instance to talk to, the docker
// CLI against one node's engine, the processes of a node, their memory, and
// the tasks of a service.
//
// It exists so that bench/failover and bench/memory measure the same
// topology the same way, without each carrying its own copy of the plumbing.
// It drives the real CLI, as a person would; nothing here is faked.
//
// It also holds what every bench needs whatever it runs on, so that none
// keeps its own copy: Sleep and Poll, the machine's description (Machine,
// Host, CPUModel, Kernel) and load (LoadAvg), and FreePort. The figures'
// arithmetic (Median, Pct, Round) is package schema's.
package swarmtopo

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/homeswarm/homeswarm/bench/schema"
)

// Topo names one topology instance (scripts/topo.sh's TOPO_PREFIX,
// TOPO_ROOT and TOPO_RUN).
type Topo struct {
	Prefix string // namespace prefix, e.g. "hf": namespaces hf-vps, hf-home1, …
	Root   string // state directory (engines' data, syncvol state)
	Run    string // runtime directory (engines' sockets)
	Repo   string // repository root (for scripts/topo.sh)
}

// FromEnv returns the instance named by TOPO_PREFIX, TOPO_ROOT and
// TOPO_RUN, with defaultPrefix when TOPO_PREFIX is unset, and the
// defaults scripts/topo.sh derives from a prefix other than its own:
// /var/lib/homeswarm-topo-<prefix> and /run/<prefix>. Repo is the working
// directory (the benches run from the repository root).
func FromEnv(defaultPrefix string) Topo {
	t := Topo{Prefix: envOr("TOPO_PREFIX", defaultPrefix)}
	t.Root = envOr("TOPO_ROOT", "/var/lib/homeswarm-topo-"+t.Prefix)
	t.Run = envOr("TOPO_RUN", "/run/"+t.Prefix)
	t.Repo, _ = os.Getwd()
	return t
}

func envOr(k, d string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return d
}

// Env is the environment scripts/topo.sh needs to target this instance.
func (t Topo) Env() []string {
	return append(os.Environ(), "TOPO_PREFIX="+t.Prefix, "TOPO_ROOT="+t.Root, "TOPO_RUN="+t.Run)
}

// Namespace is node's network namespace name.
func (t Topo) Namespace(node string) string { return t.Prefix + "-" + node }

// Socket is node's engine socket.
func (t Topo) Socket(node string) string { return filepath.Join(t.Run, node, "docker.sock") }

// Docker runs the docker CLI against node's engine and returns its trimmed
// stdout; the error carries stderr.
func (t Topo) Docker(ctx context.Context, node string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "docker", append([]string{"-H", "unix://" + t.Socket(node)}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("docker %s (%s): %v: %s", strings.Join(args, " "), node, err, strings.TrimSpace(errb.String()))
	}
	return strings.TrimSpace(out.String()), nil
}

// Script runs scripts/topo.sh with args against this instance.
func (t Topo) Script(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(t.Repo, "scripts/topo.sh"), args...)
	cmd.Env = t.Env()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("topo.sh %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return strings.TrimSpace(out.String()), nil
}

// Up reports whether node's engine answers.
func (t Topo) Up(ctx context.Context, node string) bool {
	_, err := t.Docker(ctx, node, "version", "--format", "{{.Server.Version}}")
	return err == nil
}

// ErrTimeout is returned by Poll when the condition did not hold in time.
var ErrTimeout = errors.New("timed out")

// Poll calls ok every interval until it returns nil, the timeout passes
// (ErrTimeout wrapping ok's last error) or ctx ends.
func Poll(ctx context.Context, timeout, interval time.Duration, ok func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := ok()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w after %s: %v", ErrTimeout, timeout, err)
		}
		if err := Sleep(ctx, interval); err != nil {
			return err
		}
	}
}

// Task is one task of a service as `docker service ps` shows it.
type Task struct {
	ID, Node, State string // State: the first word of CURRENT STATE (Running, Preparing, …)
}

// RunningTasks lists the tasks of service whose desired state is running,
// as the manager (on vps) sees them.
func (t Topo) RunningTasks(ctx context.Context, service string) ([]Task, error) {
	out, err := t.Docker(ctx, "vps", "service", "ps", service, "--no-trunc", "--filter", "desired-state=running",
		"--format", "{{.ID}} {{.Node}} {{.CurrentState}}")
	if err != nil {
		return nil, err
	}
	var ts []Task
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) >= 3 {
			ts = append(ts, Task{ID: f[0], Node: f[1], State: f[2]})
		}
	}
	return ts, nil
}

// Container returns the ID of service's running container on node ("" if
// none yet).
func (t Topo) Container(ctx context.Context, node, service string) (string, error) {
	out, err := t.Docker(ctx, node, "ps", "-q", "--filter", "label=com.docker.swarm.service.name="+service)
	if err != nil || out == "" {
		return "", err
	}
	return strings.Fields(out)[0], nil
}

// RemoveService removes a service and waits (bounded) until no node runs a
// container of it any more.
func (t Topo) RemoveService(ctx context.Context, service string, nodes []string) {
	t.Docker(ctx, "vps", "service", "rm", service)
	deadline := time.Now().Add(40 * time.Second)
	for _, n := range nodes {
		for time.Now().Before(deadline) {
			out, err := t.Docker(ctx, n, "ps", "-aq", "--filter", "label=com.docker.swarm.service.name="+service)
			if err != nil || out == "" {
				break
			}
			time.Sleep(300 * time.Millisecond)
		}
	}
}

// WaitReady waits until node is Ready in the Swarm, as the manager sees it.
func (t Topo) WaitReady(ctx context.Context, node string, timeout time.Duration) error {
	return Poll(ctx, timeout, 300*time.Millisecond, func() error {
		st, err := t.Docker(ctx, "vps", "node", "inspect", node, "--format", "{{.Status.State}}")
		if err != nil {
			return err
		}
		if st != "ready" {
			return fmt.Errorf("%s is %s", node, st)
		}
		return nil
	})
}

// Proc is one process.
type Proc struct {
	PID  int
	Argv []string
}

// Procs lists the processes in node's network namespace (what `ip netns
// pids` reports: the engine, containerd, plugins and containers that use
// the host network).
func (t Topo) Procs(ctx context.Context, node string) ([]Proc, error) {
	out, err := exec.CommandContext(ctx, "ip", "netns", "pids", t.Namespace(node)).Output()
	if err != nil {
		return nil, fmt.Errorf("ip netns pids %s: %w", t.Namespace(node), err)
	}
	var ps []Proc
	for _, f := range strings.Fields(string(out)) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil || len(b) == 0 {
			continue
		}
		ps = append(ps, Proc{PID: pid, Argv: strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")})
	}
	return ps, nil
}

// FindProc returns the one process in node's namespace whose argv[0] is
// exe (e.g. "/syncvol", the plugin's entrypoint).
func (t Topo) FindProc(ctx context.Context, node, exe string) (int, error) {
	ps, err := t.Procs(ctx, node)
	if err != nil {
		return 0, err
	}
	var found []int
	for _, p := range ps {
		if p.Argv[0] == exe {
			found = append(found, p.PID)
		}
	}
	switch len(found) {
	case 0:
		return 0, fmt.Errorf("no %s process in %s", exe, t.Namespace(node))
	case 1:
		return found[0], nil
	}
	return 0, fmt.Errorf("%d %s processes in %s: %v", len(found), exe, t.Namespace(node), found)
}

// RSS returns a process's resident set size (VmRSS) in bytes.
func RSS(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) != 2 || f[1] != "kB" {
				return 0, fmt.Errorf("pid %d: VmRSS %q", pid, v)
			}
			kb, err := strconv.ParseInt(f[0], 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("pid %d: no VmRSS", pid)
}

// Machine describes the machine and its load, for a result's machine field:
// Host, the Docker daemon's version and Go's.
func Machine() string {
	docker := "?"
	if out, err := exec.Command("dockerd", "--version").Output(); err == nil {
		docker = strings.TrimSpace(strings.TrimPrefix(string(out), "Docker version "))
	}
	return fmt.Sprintf("%s, Docker %s, %s", Host(), docker, runtime.Version())
}

// Host is "<n> CPUs (<CPU model>), Linux <kernel release>".
func Host() string {
	return fmt.Sprintf("%d CPUs (%s), Linux %s", runtime.NumCPU(), CPUModel(), Kernel())
}

// CPUModel is the first CPU's model name in /proc/cpuinfo, "?" if unknown.
func CPUModel() string {
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				return strings.TrimSpace(v)
			}
		}
	}
	return "?"
}

// Kernel is the running kernel's release (uname -r), "?" if unknown.
func Kernel() string {
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		return strings.TrimSpace(string(b))
	}
	return "?"
}

// FreePort is a TCP port free on 127.0.0.1 now.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// LoadAvg is the 1, 5 and 15 minute load averages.
func LoadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// Sleep waits d or until ctx ends (then it returns ctx's error); for d ≤ 0
// it returns at once, with ctx's error if ctx has ended.
func Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Log is a bench's log on stderr, named as its lines are ("bench/failover").
type Log string

// Printf writes "[NAME 15:04:05] message".
func (l Log) Printf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[%s %s] %s\n", l, time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

// Fatalf writes "NAME: message" and exits with status 1.
func (l Log) Fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s: %s\n", l, fmt.Sprintf(format, args...))
	os.Exit(1)
}

// Main runs measure under a context that ends on SIGINT or SIGTERM, then
// cleanup (whatever measure returned), and writes the result to out; an
// error of either is fatal (Fatalf). It returns what it wrote.
func (l Log) Main(out string, measure func(context.Context) (schema.Result, error), cleanup func()) schema.Result {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := measure(ctx)
	cleanup()
	if err == nil {
		err = schema.Write(out, res)
	}
	if err != nil {
		stop()
		l.Fatalf("%v", err)
	}
	return res
}
