// rsync: the "same link" anchor, a daemon on 127.0.0.1.

package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"time"

	"github.com/homeswarm/homeswarm/bench/schema"
	"github.com/homeswarm/homeswarm/bench/swarmtopo"
)

type rsyncd struct {
	bin      string
	src, dst string
	port     int
	cmd      *exec.Cmd
}

// startRsync starts an rsync daemon on 127.0.0.1 with one writable module.
func startRsync(ctx context.Context, c config, dir string) (*rsyncd, error) {
	r := &rsyncd{bin: c.rsync, src: filepath.Join(dir, "src"), dst: filepath.Join(dir, "dst")}
	for _, d := range []string{r.src, r.dst} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	var err error
	if r.port, err = swarmtopo.FreePort(); err != nil {
		return nil, err
	}
	conf := filepath.Join(dir, "rsyncd.conf")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(`use chroot = no
uid = %d
gid = %d
log file = %s
[bench]
    path = %s
    read only = false
`, os.Getuid(), os.Getgid(), filepath.Join(dir, "rsyncd.log"), r.dst)), 0o600); err != nil {
		return nil, err
	}
	r.cmd = exec.Command(c.rsync, "--daemon", "--no-detach", "--config="+conf, "--address=127.0.0.1", "--port="+strconv.Itoa(r.port))
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := r.cmd.Start(); err != nil {
		return nil, err
	}
	if err := waitListen(ctx, fmt.Sprintf("127.0.0.1:%d", r.port), 10*time.Second); err != nil {
		r.close()
		return nil, err
	}
	return r, nil
}

func (r *rsyncd) close() {
	_ = syscall.Kill(-r.cmd.Process.Pid, syscall.SIGKILL)
	_ = r.cmd.Wait()
}

// push writes data to the source directory (untimed, as the file already
// exists when one runs rsync), then times `rsync args… file rsync://…`
// into the module's empty directory (no delta basis). It returns MB/s.
func (r *rsyncd) push(ctx context.Context, data []byte, sum [32]byte, args ...string) (float64, error) {
	src, dst := filepath.Join(r.src, "large.bin"), filepath.Join(r.dst, "large.bin")
	if err := writeFile(src, data); err != nil {
		return 0, err
	}
	defer os.Remove(src)
	defer os.Remove(dst)
	argv := append(slices.Clone(args), src, fmt.Sprintf("rsync://127.0.0.1:%d/bench/", r.port))
	start := time.Now()
	if b, err := exec.CommandContext(ctx, r.bin, argv...).CombinedOutput(); err != nil {
		return 0, fmt.Errorf("rsync %v: %w: %s", args, err, b)
	}
	d := time.Since(start)
	if err := sameSum(dst, sum); err != nil {
		return 0, err
	}
	return schema.Round(float64(len(data))/1e6/d.Seconds(), 1), nil
}

// ---------------------------------------------------------------- helpers
