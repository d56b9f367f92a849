package snapvol

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"math/big"
	mrand "math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
)

// btrfsDir mounts a fresh btrfs (an image on a loop device) for the test.
// It needs root; as root a missing mkfs.btrfs or loop device fails the
// test rather than skipping it.
func btrfsDir(t *testing.T) string {
	t.Helper()
	return btrfsOfSize(t, 1<<30)
}

func btrfsOfSize(t *testing.T, size int64) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (loop device, btrfs)")
	}
	dir := t.TempDir()
	img, mnt := filepath.Join(dir, "pool.img"), filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, size); err != nil {
		t.Fatal(err)
	}
	args := []string{"-q", img}
	if size < 1<<30 {
		args = append([]string{"--mixed"}, args...) // small file systems
	}
	if out, err := exec.Command("mkfs.btrfs", args...).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.btrfs (install btrfs-progs): %v: %s", err, out)
	}
	if out, err := exec.Command("mount", "-o", "loop", img, mnt).CombinedOutput(); err != nil {
		t.Fatalf("mount: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", mnt).Run() })
	return mnt
}

type cluster struct {
	t     *testing.T
	conns [][]net.Conn // per node, the connections it dialled
	nodes []*Node
	dirs  []string
	cut   []atomic.Bool // node i reaches nobody
	certs []tls.Certificate
	ids   []string
	addrs []string
	mu    sync.Mutex
	// unreachable, if set, is advertised first by every node, as a home
	// node's LAN address is: a dial to it hangs until it gives up.
	unreachable string
}

func testCert(t *testing.T) (tls.Certificate, string) {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(der)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: k}, hex.EncodeToString(sum[:8])
}

// testLease is every test cluster's lease. A writer fences once it has
// not renewed at a majority for Lease - fenceMargin, and renews every
// Lease/4: with 3 s leases that left 1 s and one renewal of slack, and CI
// under -race on 2 cores fenced writers that were only busy — before the
// cut (TestOneWriterFenceAndDiverged: "fenced 0.00s after the cut"),
// mid-test (TestDiskFull's other volume) and while writing a tree
// (TestTreeSurvivesCrashExactly: "could not renew … for 1.0s", error nil).
// 5 s leaves 3 s and two renewals; a crashed writer's lease still runs out
// well within the tests' take-over timeouts.
const testLease = 5 * time.Second

func newCluster(t *testing.T, n int) *cluster {
	root := btrfsDir(t)
	roots := make([]string, n)
	for i := range roots {
		roots[i] = root
	}
	return newClusterOn(t, roots)
}

// newClusterOn starts a node on each of roots (btrfs directories).
func newClusterOn(t *testing.T, roots []string) *cluster {
	n := len(roots)
	c := &cluster{t: t, cut: make([]atomic.Bool, n)}
	for i := 0; i < n; i++ {
		cert, id := testCert(t)
		c.certs, c.ids = append(c.certs, cert), append(c.ids, id)
		c.dirs = append(c.dirs, filepath.Join(roots[i], fmt.Sprint("node", i)))
		c.addrs = append(c.addrs, "")
		c.nodes = append(c.nodes, nil)
		c.conns = append(c.conns, nil)
	}
	for i := range n {
		c.start(i)
	}
	return c
}

// start (re)starts node i on its state directory, as a plugin restart does.
func (c *cluster) start(i int) *Node {
	dir := c.dirs[i]
	os.MkdirAll(dir, 0o755)
	addr := c.addrs[i]
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	nd, err := New(Options{
		Self:      c.ids[i],
		VolumeDir: func(name string) string { return filepath.Join(dir, name) },
		ValidName: func(name string) error {
			if name == "" || filepath.Base(name) != name || name[0] == '.' {
				return errors.New("bad name")
			}
			return nil
		},
		Cert: c.certs[i],
		Verify: func(raw []byte) (string, bool) {
			sum := sha256.Sum256(raw)
			id := hex.EncodeToString(sum[:8])
			for _, k := range c.ids {
				if k == id {
					return id, true
				}
			}
			return "", false
		},
		Peers: func() []Peer { return c.peers(i) },
		Dial: func(ctx context.Context, addr string) (net.Conn, error) {
			if c.isCut(i, addr) || addr == c.unreachable {
				// A cut link drops packets: the dial hangs until it
				// gives up, as it would across a real partition.
				<-ctx.Done()
				return nil, ctx.Err()
			}
			var d net.Dialer
			conn, err := d.DialContext(ctx, "tcp", addr)
			if err == nil {
				c.mu.Lock()
				c.conns[i] = append(c.conns[i], conn)
				c.mu.Unlock()
			}
			return conn, err
		},
		ListenAddr: addr,
		Interval:   50 * time.Millisecond,
		Lease:      testLease,
		Logger:     logrus.NewEntry(logrus.StandardLogger()),
	})
	if err != nil {
		c.t.Fatal(err)
	}
	c.mu.Lock()
	c.nodes[i], c.addrs[i] = nd, nd.Addr()
	c.mu.Unlock()
	done := make(chan struct{})
	go func() { defer close(done); nd.Run(context.Background()) }()
	c.t.Cleanup(func() { nd.Close(); <-done })
	return nd
}

func (c *cluster) peers(i int) []Peer {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []Peer
	for j := range c.nodes {
		if j != i {
			p := Peer{ID: c.ids[j], Addrs: []string{c.addrs[j]}}
			if c.unreachable != "" {
				p.Addrs = []string{c.unreachable, c.addrs[j]}
			}
			out = append(out, p)
		}
	}
	return out
}

// isCut reports whether node i cannot reach addr now.
func (c *cluster) isCut(i int, addr string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cut[i].Load() {
		return true
	}
	for j, a := range c.addrs {
		if a == addr && c.cut[j].Load() {
			return true
		}
	}
	return false
}

// partition cuts node i off: its links break, and no new one opens.
func (c *cluster) partition(i int, cut bool) {
	c.cut[i].Store(cut)
	if !cut {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, conn := range c.conns[i] {
		conn.Close()
	}
	c.conns[i] = nil
}

// crash stops node i without letting go of anything.
func (c *cluster) crash(i int) { c.nodes[i].Close() }

func acquire(t *testing.T, n *Node, name string, d time.Duration) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	dir, err := n.Acquire(ctx, name, nil)
	if err != nil {
		t.Fatalf("acquire %s: %v", name, err)
	}
	return dir
}

// ledger writes numbered records to two files, db then wal, fsyncing each
// before counting the record acknowledged, as a database commits.
type ledger struct {
	dir  string
	acks []time.Time
	mu   sync.Mutex
	err  error
}

func (l *ledger) run(ctx context.Context) {
	db, err1 := os.OpenFile(filepath.Join(l.dir, "db"), os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o644)
	wal, err2 := os.OpenFile(filepath.Join(l.dir, "wal"), os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o644)
	if err := errors.Join(err1, err2); err != nil {
		l.err = err
		return
	}
	defer db.Close()
	defer wal.Close()
	rec := make([]byte, 4096)
	for n := uint64(1); ctx.Err() == nil; n++ {
		binary.BigEndian.PutUint64(rec, n)
		for _, f := range []*os.File{db, wal} {
			if _, err := f.Write(rec); err != nil {
				l.mu.Lock()
				l.err = err
				l.mu.Unlock()
				return
			}
			if err := f.Sync(); err != nil {
				l.mu.Lock()
				l.err = err
				l.mu.Unlock()
				return
			}
		}
		l.mu.Lock()
		l.acks = append(l.acks, time.Now())
		l.mu.Unlock()
	}
}

func records(t *testing.T, p string) uint64 {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(b)%4096 != 0 {
		t.Fatalf("%s: torn record: %d bytes", p, len(b))
	}
	for i := 0; i < len(b)/4096; i++ {
		if got := binary.BigEndian.Uint64(b[i*4096:]); got != uint64(i+1) {
			t.Fatalf("%s: record %d holds %d", p, i+1, got)
		}
	}
	return uint64(len(b) / 4096)
}

// A crash leaves the next writer the whole volume as it was at one instant
// (db and wal agree), with everything acknowledged more than a second
// before the crash; a graceful move loses nothing.
func TestCrashConsistentFailover(t *testing.T) {
	c := newCluster(t, 3)
	live := acquire(t, c.nodes[0], "pg", 5*time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	l := &ledger{dir: live}
	done := make(chan struct{})
	go func() { defer close(done); l.run(ctx) }()
	time.Sleep(2 * time.Second) // the database runs: generations go out meanwhile
	crashed := time.Now()
	c.crash(0)
	cancel()
	<-done
	if l.err != nil {
		t.Fatal(l.err)
	}
	// The crashed node's lease runs out; then node 1 takes over.
	live1 := acquire(t, c.nodes[1], "pg", 10*time.Second)
	db, wal := records(t, filepath.Join(live1, "db")), records(t, filepath.Join(live1, "wal"))
	if wal != db && wal != db-1 {
		t.Fatalf("not one instant: db has %d records, wal %d", db, wal)
	}
	var mustHave uint64
	for i, at := range l.acks {
		if at.Before(crashed.Add(-time.Second)) {
			mustHave = uint64(i + 1)
		}
	}
	t.Logf("%d acknowledged, %d must survive, %d survived (db %d, wal %d)", len(l.acks), mustHave, wal, db, wal)
	if wal < mustHave || mustHave == 0 {
		t.Fatalf("lost acknowledged records: have %d, %d were acknowledged a second before the crash", wal, mustHave)
	}

	// A graceful move: node 1 releases, node 2 gets every record.
	l2 := &ledger{dir: live1}
	ctx2, cancel2 := context.WithTimeout(context.Background(), 500*time.Millisecond)
	os.Remove(filepath.Join(live1, "db"))
	os.Remove(filepath.Join(live1, "wal"))
	l2.run(ctx2)
	cancel2()
	rctx, rcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer rcancel()
	if err := c.nodes[1].Release(rctx, "pg"); err != nil {
		t.Fatal(err)
	}
	live2 := acquire(t, c.nodes[2], "pg", 5*time.Second)
	if got := records(t, filepath.Join(live2, "wal")); got != uint64(len(l2.acks)) {
		t.Fatalf("graceful move: %d of %d acknowledged records", got, len(l2.acks))
	}
}

// One writer: a second node waits while the lease is live; a writer cut
// off from the others fences itself (writes fail) before its lease ends,
// and when it is back it keeps its unshipped writes aside.
func TestOneWriterFenceAndDiverged(t *testing.T) {
	// The fenced node's writes go aside when its container stops (Release)
	// or when it is asked to mount the volume again while fenced.
	for _, then := range []string{"release", "mount again"} {
		t.Run(then, func(t *testing.T) { oneWriter(t, then) })
	}
}

func oneWriter(t *testing.T, then string) {
	c := newCluster(t, 3)
	live := acquire(t, c.nodes[0], "db", 5*time.Second)
	os.WriteFile(filepath.Join(live, "a"), []byte("shipped"), 0o644)
	waitFor(t, 5*time.Second, func() bool {
		return c.nodes[1].Status("db")["generation"] != "" && has(c, 1, "db", "a", "shipped")
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	_, err := c.nodes[1].Acquire(ctx, "db", nil)
	cancel()
	if !errors.Is(err, ErrInUse) {
		t.Fatalf("second writer while the lease is live: %v, want ErrInUse", err)
	}
	// Partition node 0: it keeps its container, which keeps writing.
	c.partition(0, true)
	cut := time.Now()
	os.WriteFile(filepath.Join(live, "b"), []byte("never shipped"), 0o644)
	// The fence must come a margin before the peers' leases run out
	// (Lease after the last renewal they saw, at most Lease/4 before the
	// cut): by Lease - fenceMargin + a renewal period + a check period.
	var fencedAfter time.Duration
	waitFor(t, testLease, func() bool {
		err := os.WriteFile(filepath.Join(live, "probe"), []byte("x"), 0o644)
		fencedAfter = time.Since(cut)
		return errors.Is(err, syscall.EROFS)
	})
	if limit := testLease - fenceMargin + testLease/4 + 200*time.Millisecond; fencedAfter > limit {
		t.Fatalf("fenced %.2fs after the cut, want by %.2fs (peers' leases end %.2fs after their last renewal)",
			fencedAfter.Seconds(), limit.Seconds(), testLease.Seconds())
	}
	t.Logf("fenced %.2fs after the cut", fencedAfter.Seconds())
	start := time.Now()
	live1 := acquire(t, c.nodes[1], "db", 10*time.Second)
	took := time.Since(start)
	err = os.WriteFile(filepath.Join(live, "c"), []byte("after takeover"), 0o644)
	if !errors.Is(err, syscall.EROFS) {
		t.Fatalf("old writer still writes after node 1 took over (%.1fs): %v", took.Seconds(), err)
	}
	if _, err := os.Stat(filepath.Join(live1, "b")); err == nil {
		t.Fatal("a write that never left the cut-off node appeared on the new writer")
	}
	if b, _ := os.ReadFile(filepath.Join(live1, "a")); string(b) != "shipped" {
		t.Fatalf("new writer: a = %q", b)
	}
	// Node 0's container stops; its writes since the cut are kept aside.
	c.partition(0, false)
	rctx, rcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer rcancel()
	if then == "release" {
		c.nodes[0].Release(rctx, "db")
	} else {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := c.nodes[0].Acquire(ctx, "db", nil)
		cancel()
		if !errors.Is(err, ErrInUse) {
			t.Fatalf("mounting again on the fenced node while node 1 writes: %v, want ErrInUse", err)
		}
		if c.nodes[0].Writing("db") {
			t.Fatal("the fenced writer is still there")
		}
	}
	d := c.nodes[0].Status("db")["diverged"]
	if d == "" {
		t.Fatalf("no diverged state kept: %v", c.nodes[0].Status("db"))
	}
	ents, _ := os.ReadDir(filepath.Join(c.dirs[0], "db", "diverged"))
	if len(ents) != 1 {
		t.Fatalf("diverged: %v", ents)
	}
	if b, _ := os.ReadFile(filepath.Join(c.dirs[0], "db", "diverged", ents[0].Name(), "b")); string(b) != "never shipped" {
		t.Fatalf("diverged copy lacks the unshipped write: %q", b)
	}
	// And node 0 follows the new writer again.
	os.WriteFile(filepath.Join(live1, "d"), []byte("new writer"), 0o644)
	waitFor(t, 10*time.Second, func() bool { return has(c, 0, "db", "d", "new writer") })
}

func has(c *cluster, i int, vol, file, want string) bool {
	n := c.nodes[i]
	v, err := n.vol(vol, false)
	if err != nil {
		return false
	}
	v.mu.Lock()
	g := v.st.Latest
	v.mu.Unlock()
	b, err := os.ReadFile(filepath.Join(v.genDir(g), file))
	return err == nil && string(b) == want
}

func waitFor(t *testing.T, d time.Duration, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s", d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Every kind of change reaches the receiver exactly: writes in the
// middle of big files, appends, truncation, holes, renames, deletions,
// directories, symlinks, modes and owners.
func TestDiffApplyExact(t *testing.T) {
	root := btrfsDir(t)
	src, dst := filepath.Join(root, "src"), filepath.Join(root, "dst")
	if err := CreateSubvolume(src); err != nil {
		t.Fatal(err)
	}
	if err := CreateSubvolume(dst); err != nil {
		t.Fatal(err)
	}
	rng := mrand.New(mrand.NewPCG(1, 2))
	prev := ""
	for round := 0; round < 12; round++ {
		mutate(t, src, rng)
		g := filepath.Join(root, fmt.Sprint("gen", round))
		if err := Snapshot(src, g, true); err != nil {
			t.Fatal(err)
		}
		a := &applier{root: dst}
		var sent int64
		st, err := sendDiff(prev, g, nil, func(m *msg) error {
			sent += int64(len(m.Data))
			cp := *m
			cp.Data = bytes.Clone(m.Data)
			return a.apply(&cp)
		})
		if err != nil {
			t.Fatal(err)
		}
		compareTrees(t, g, dst)
		t.Logf("round %d: %d files, %d deleted, %d bytes sent", round, st.Files, st.Deleted, sent)
		if round > 0 && sent > 3<<20 {
			t.Fatalf("round %d sent %d bytes: more than the changes", round, sent)
		}
		prev = g
	}
}

func mutate(t *testing.T, dir string, rng *mrand.Rand) {
	big := filepath.Join(dir, "big")
	f, err := os.OpenFile(big, os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := f.Stat(); fi.Size() == 0 {
		buf := make([]byte, 8<<20)
		for i := range buf {
			buf[i] = byte(rng.Uint32())
		}
		f.Write(buf)
	}
	for i := 0; i < 5; i++ {
		b := make([]byte, 4096)
		b[0] = byte(rng.Uint32())
		f.WriteAt(b, int64(rng.IntN(8<<20)))
	}
	if rng.IntN(3) == 0 {
		syscall.Fallocate(int(f.Fd()), 0x03, int64(rng.IntN(4<<20))&^4095, 64<<10) // punch a hole
	}
	f.Close()
	if rng.IntN(4) == 0 {
		os.Truncate(big, int64(6<<20+rng.IntN(2<<20)))
	}
	sub := filepath.Join(dir, "sub", fmt.Sprint("d", rng.IntN(3)))
	os.MkdirAll(sub, 0o750)
	os.WriteFile(filepath.Join(sub, fmt.Sprint("f", rng.IntN(5))), []byte(fmt.Sprint(rng.Uint64())), 0o600)
	if rng.IntN(3) == 0 {
		os.RemoveAll(filepath.Join(dir, "sub", fmt.Sprint("d", rng.IntN(3))))
	}
	os.Remove(filepath.Join(dir, "link"))
	os.Symlink(fmt.Sprint("target", rng.IntN(9)), filepath.Join(dir, "link"))
	os.Rename(filepath.Join(dir, "sub"), filepath.Join(dir, "sub2"))
	os.Rename(filepath.Join(dir, "sub2"), filepath.Join(dir, "sub"))
	os.Chmod(dir, fs.FileMode(0o700|rng.IntN(0o77)))
	os.Lchown(filepath.Join(dir, "big"), rng.IntN(3), rng.IntN(3))
}

func compareTrees(t *testing.T, a, b string) {
	t.Helper()
	seen := map[string]bool{}
	filepath.WalkDir(a, func(p string, d fs.DirEntry, err error) error {
		rel, _ := filepath.Rel(a, p)
		seen[rel] = true
		ai, _ := os.Lstat(p)
		bi, err := os.Lstat(filepath.Join(b, rel))
		if err != nil {
			t.Fatalf("%s missing on the receiver", rel)
		}
		as, bs := ai.Sys().(*syscall.Stat_t), bi.Sys().(*syscall.Stat_t)
		if ai.Mode() != bi.Mode() || as.Uid != bs.Uid || as.Gid != bs.Gid {
			t.Fatalf("%s: %v %d:%d vs %v %d:%d", rel, ai.Mode(), as.Uid, as.Gid, bi.Mode(), bs.Uid, bs.Gid)
		}
		switch {
		case ai.Mode().IsRegular():
			x, _ := os.ReadFile(p)
			y, _ := os.ReadFile(filepath.Join(b, rel))
			if !bytes.Equal(x, y) {
				t.Fatalf("%s differs (%d vs %d bytes)", rel, len(x), len(y))
			}
		case ai.Mode()&fs.ModeSymlink != 0:
			x, _ := os.Readlink(p)
			y, _ := os.Readlink(filepath.Join(b, rel))
			if x != y {
				t.Fatalf("%s → %s vs %s", rel, x, y)
			}
		}
		return nil
	})
	filepath.WalkDir(b, func(p string, d fs.DirEntry, err error) error {
		rel, _ := filepath.Rel(b, p)
		if !seen[rel] {
			t.Fatalf("%s on the receiver only", rel)
		}
		return nil
	})
}

// A stream naming a path outside the volume is refused.
func TestApplyRefusesEscapes(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	os.Symlink("/", filepath.Join(root, "up"))
	a := &applier{root: root}
	for _, p := range []string{"../x", "/etc/passwd", "up/etc/x", "a/../../x"} {
		if err := a.apply(&msg{Kind: opFile, Path: p, Fresh: true}); !errors.Is(err, errBadPath) {
			t.Errorf("%q: %v, want errBadPath", p, err)
		}
	}
}

func TestGenNames(t *testing.T) {
	t.Parallel()
	g := Gen{Epoch: 3, Seq: 17}
	if p, ok := parseGen(g.String()); !ok || p != g {
		t.Fatalf("round trip %v → %q → %v", g, g.String(), p)
	}
	for _, s := range []string{"", "x", "0000000000000003-00000000000000zz", "3-17"} {
		if _, ok := parseGen(s); ok {
			t.Errorf("%q parsed", s)
		}
	}
	if !(Gen{1, 9}).Less(Gen{2, 0}) || (Gen{2, 0}).Less(Gen{1, 9}) {
		t.Fatal("order")
	}
}

// A full disk on the writer: the container sees ENOSPC, the node keeps
// running, other volumes keep shipping, and once space is back the volume
// ships again; the receiver's newest generation is always a complete one.
func TestDiskFull(t *testing.T) {
	c := newClusterOn(t, []string{btrfsOfSize(t, 256<<20), btrfsDir(t)})
	full := acquire(t, c.nodes[0], "full", 5*time.Second)
	other := acquire(t, c.nodes[0], "other", 5*time.Second)
	os.WriteFile(filepath.Join(full, "before"), []byte("x"), 0o644)
	waitFor(t, 10*time.Second, func() bool { return has(c, 1, "full", "before", "x") })
	f, err := os.Create(filepath.Join(full, "fill"))
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i * 7)
	}
	var werr error
	for i := 0; i < 1024 && werr == nil; i++ {
		_, werr = f.Write(buf)
		if werr == nil {
			werr = f.Sync()
		}
	}
	f.Close()
	if !errors.Is(werr, syscall.ENOSPC) {
		t.Fatalf("filling the disk: %v, want ENOSPC", werr)
	}
	os.Remove(filepath.Join(full, "fill"))
	// The space comes back once the generations holding the removed file
	// are gone (the writer drops them when a snapshot hits ENOSPC); like a
	// database, the test retries its writes until then.
	waitFor(t, 30*time.Second, func() bool {
		return os.WriteFile(filepath.Join(other, "o"), []byte("still shipping"), 0o644) == nil &&
			os.WriteFile(filepath.Join(full, "after"), []byte("y"), 0o644) == nil
	})
	deadline := time.Now().Add(30 * time.Second)
	for !(has(c, 1, "other", "o", "still shipping") && has(c, 1, "full", "after", "y")) {
		if time.Now().After(deadline) {
			out, _ := exec.Command("sh", "-c", "df -h "+c.dirs[0]+"; btrfs filesystem usage "+c.dirs[0]+" | head -20; ls -la "+filepath.Join(c.dirs[0], "full", "gens")+" "+full).CombinedOutput()
			t.Fatalf("other %v, full %v; writer status %v; receiver %v\n%s", has(c, 1, "other", "o", "still shipping"),
				has(c, 1, "full", "after", "y"), c.nodes[0].Status("full"), c.nodes[1].Status("full"), out)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if has(c, 1, "full", "fill", "") {
		t.Fatal("a file removed on the writer is still in the receiver's newest generation")
	}
}

// A tree written while generations go out (small files, a large file
// appended in 1 MiB writes, a rename, a delete) arrives exact: after the
// writer's crash the next node holds the same bytes the writer had.
func TestTreeSurvivesCrashExactly(t *testing.T) {
	c := newCluster(t, 3)
	live := acquire(t, c.nodes[0], "tree", 5*time.Second)
	rng := mrand.New(mrand.NewPCG(7, 8))
	for i := 0; i < 300; i++ {
		d := filepath.Join(live, "t", fmt.Sprint("d", i%10))
		os.MkdirAll(d, 0o755)
		os.WriteFile(filepath.Join(d, fmt.Sprint("f", i)), []byte(fmt.Sprint("file ", i)), 0o644)
	}
	f, err := os.Create(filepath.Join(live, "big"))
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	for i := 0; i < 24; i++ {
		for j := range buf {
			buf[j] = byte(rng.Uint32())
		}
		f.Write(buf)
		time.Sleep(30 * time.Millisecond) // generations are taken meanwhile
	}
	f.Close()
	os.Rename(filepath.Join(live, "t", "d1", "f1"), filepath.Join(live, "t", "renamed"))
	os.Remove(filepath.Join(live, "t", "d2", "f2"))
	os.WriteFile(filepath.Join(live, "DONE"), []byte("done"), 0o644)
	waitFor(t, 20*time.Second, func() bool { return has(c, 1, "tree", "DONE", "done") && has(c, 2, "tree", "DONE", "done") })
	c.crash(0)
	live1 := acquire(t, c.nodes[1], "tree", 15*time.Second)
	compareTrees(t, live, live1)
}

// TestDiffWhileWriting: files written as dd writes them (1 MiB at a time,
// no fsync) while generations are taken back to back, each sent on top of
// the one before. The last generation, taken after the writes, must arrive
// byte for byte. A snapshot taken while a write lands can hold the file's
// final size and times but only part of its data; the rest lands later
// without changing any time, and a diff trusting the stat never sends it
// (the 24 MiB file that arrived with a zeroed tail after a drain).
func TestDiffWhileWriting(t *testing.T) {
	root := btrfsDir(t)
	src, dst := filepath.Join(root, "src"), filepath.Join(root, "dst")
	for _, d := range []string{src, dst} {
		if err := CreateSubvolume(d); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		rng := mrand.New(mrand.NewPCG(3, 4))
		buf := make([]byte, 1<<20)
		for i := 0; i < 40; i++ {
			f, err := os.Create(filepath.Join(src, fmt.Sprint("f", i)))
			if err != nil {
				t.Error(err)
				return
			}
			for j := 0; j < 6; j++ { // 240 MiB in all, twice (source and copy) on a 1 GiB file system
				for k := range buf {
					buf[k] = byte(rng.Uint32())
				}
				if _, err := f.Write(buf); err != nil {
					t.Error(err)
				}
			}
			f.Close()
		}
	}()
	prev := ""
	for round, finished := 0, false; !finished; round++ {
		select {
		case <-done:
			finished = true // one more generation after the last write
		default:
		}
		g := filepath.Join(root, fmt.Sprint("gen", round))
		if err := Snapshot(src, g, true); err != nil {
			t.Fatal(err)
		}
		a := &applier{root: dst}
		if _, err := sendDiff(prev, g, nil, func(m *msg) error {
			cp := *m
			cp.Data = bytes.Clone(m.Data)
			return a.apply(&cp)
		}); err != nil {
			t.Fatal(err)
		}
		if prev != "" {
			if err := DeleteSubvolume(prev); err != nil {
				t.Fatal(err)
			}
		}
		prev = g
	}
	compareTrees(t, prev, dst)
}

// TestChangedSince: a subvolume left alone since a snapshot reads as
// unchanged (or the writer would take a generation every round), and
// data reaching the disk reads as changed even when a stat cannot tell.
func TestChangedSince(t *testing.T) {
	root := btrfsDir(t)
	src := filepath.Join(root, "src")
	if err := CreateSubvolume(src); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(src, "f")
	if err := os.WriteFile(p, bytes.Repeat([]byte("a"), 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	for i := range 2000 { // many inodes, so that a rewrite touches few tree blocks
		if err := os.WriteFile(filepath.Join(src, fmt.Sprint("u", i)), []byte("untouched"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	snap := func(name string) uint64 {
		g := filepath.Join(root, name)
		if err := Snapshot(src, g, true); err != nil {
			t.Fatal(err)
		}
		tr, err := CreatedIn(g)
		if err != nil || tr == 0 {
			t.Fatalf("CreatedIn %s: %d, %v", g, tr, err)
		}
		return tr
	}
	t1 := snap("g1")
	time.Sleep(50 * time.Millisecond)
	if ch, err := ChangedSince(src, t1); err != nil || ch {
		t.Fatalf("untouched since the snapshot: changed=%v, %v", ch, err)
	}
	t2 := snap("g2") // another commit, nothing new in src
	if t2 <= t1 {
		t.Fatalf("transactions %d then %d", t1, t2)
	}
	if ch, err := ChangedSince(src, t2); err != nil || ch {
		t.Fatalf("untouched since the second snapshot: changed=%v, %v", ch, err)
	}
	version := func(p string) [2]uint64 {
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		a, b, err := InodeVersion(f)
		if err != nil {
			t.Fatal(err)
		}
		return [2]uint64{a, b}
	}
	if a, b := version(filepath.Join(root, "g1", "f")), version(filepath.Join(root, "g2", "f")); a != b {
		t.Fatalf("untouched file: versions %v vs %v", a, b)
	}
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("b"), 4096); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if ch, err := ChangedSince(src, t2); err != nil || !ch {
		t.Fatalf("fsync'd write since the snapshot: changed=%v, %v", ch, err)
	}
	snap("g3")
	if a, b := version(filepath.Join(root, "g2", "f")), version(filepath.Join(root, "g3", "f")); a == b {
		t.Fatalf("rewritten file: versions %v in both", a)
	}
	// ChangedInodes names f (rewritten) and few of the untouched ones
	// (those sharing its tree blocks), none since g3.
	var fi syscall.Stat_t
	if err := syscall.Stat(filepath.Join(root, "g3", "f"), &fi); err != nil {
		t.Fatal(err)
	}
	touched, err := ChangedInodes(filepath.Join(root, "g3"), t2)
	if err != nil {
		t.Fatal(err)
	}
	if !touched[fi.Ino] || len(touched) > 200 {
		t.Fatalf("ChangedInodes since g2: %d inodes (f, %d, rewritten: %v); want f and few others", len(touched), fi.Ino, touched[fi.Ino])
	}
	t3, err := CreatedIn(filepath.Join(root, "g3"))
	if err != nil {
		t.Fatal(err)
	}
	if touched, err := ChangedInodes(filepath.Join(root, "g3"), t3); err != nil || len(touched) != 0 {
		t.Fatalf("ChangedInodes of g3 since its own creation: %v, %v", touched, err)
	}
	// changedInodes searches a (base, generation) pair once for every
	// peer it is sent to, with the answer a search gives.
	var c changedInodes
	g1, g2, g3 := filepath.Join(root, "g1"), filepath.Join(root, "g2"), filepath.Join(root, "g3")
	first := c.get(g2, g3)
	if !maps.Equal(first, touched) {
		t.Fatalf("cached search g2→g3 = %v, direct %v", first, touched)
	}
	first[0] = true // marks the shared map: a second search would not carry it
	if again := c.get(g2, g3); !again[0] {
		t.Fatal("the second peer's send searched the tree again")
	}
	delete(first, 0)
	want, err := ChangedInodes(g3, t1)
	if err != nil {
		t.Fatal(err)
	}
	if other := c.get(g1, g3); !maps.Equal(other, want) {
		t.Fatalf("another base got %v, want %v", other, want)
	}
	if c.get("", g3) != nil || (*changedInodes)(nil).get(g2, g3) == nil {
		t.Fatal("no base must mean unknown (nil), a nil cache must still search")
	}
}

// TestHolder: a node asked to delete a volume everywhere learns from the
// peers that another node writes it (its lease is live), that nobody does
// once it was released, and that it cannot tell when it reaches no
// majority.
func TestHolder(t *testing.T) {
	c := newCluster(t, 3)
	ask := func(i int) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		return c.nodes[i].Holder(ctx, "db")
	}
	if h, err := ask(1); h != "" || err != nil {
		t.Fatalf("Holder of a volume nobody wrote = %q, %v", h, err)
	}
	acquire(t, c.nodes[0], "db", 5*time.Second)
	if h, err := ask(1); err != nil || h == "" || !strings.Contains(h, short(c.ids[0])) {
		t.Fatalf("Holder while node 0 writes = %q, %v; want node 0 (%s)", h, err, short(c.ids[0]))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	err := c.nodes[0].Release(ctx, "db")
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	if h, err := ask(1); h != "" || err != nil {
		t.Fatalf("Holder after release = %q, %v", h, err)
	}
	replicated := func(i int) error {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		return c.nodes[i].Replicated(ctx, "db")
	}
	if err := replicated(0); err != nil {
		t.Fatalf("Replicated after a release the peers confirmed: %v", err)
	}
	// A last generation that reached no peer is this node's only copy.
	live := acquire(t, c.nodes[0], "db", 5*time.Second)
	os.WriteFile(filepath.Join(live, "late"), []byte("only here"), 0o644)
	c.partition(0, true)
	ctx, cancel = context.WithTimeout(context.Background(), time.Second)
	c.nodes[0].Release(ctx, "db")
	cancel()
	c.partition(0, false)
	if err := replicated(0); !errors.Is(err, ErrNotReplicated) {
		t.Fatalf("Replicated with a generation on no peer = %v, want ErrNotReplicated", err)
	}
	c.partition(1, true)
	if h, err := ask(1); !errors.Is(err, ErrNoMajority) {
		t.Fatalf("Holder without a majority = %q, %v; want ErrNoMajority", h, err)
	}
}

// TestPeerFirstAddressUnreachable: every node advertises first an address
// that cannot be reached (a home node's LAN address, seen from the VPS);
// generations still ship and a move still finds every byte, without
// waiting on the dead address each time.
func TestPeerFirstAddressUnreachable(t *testing.T) {
	c := newCluster(t, 2)
	c.mu.Lock()
	c.unreachable = "192.0.2.1:22001" // never dialled: Dial hangs on it
	c.mu.Unlock()
	live := acquire(t, c.nodes[0], "blog", 5*time.Second)
	want := bytes.Repeat([]byte("post "), 10000)
	if err := os.WriteFile(filepath.Join(live, "post"), want, 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for range 3 { // the first release learns the address; later ones go straight to it
		began := time.Now()
		if err := c.nodes[0].Release(ctx, "blog"); err != nil {
			t.Fatal(err)
		}
		if took := time.Since(began); took > 1500*time.Millisecond {
			t.Fatalf("release took %v: it waited on the unreachable address", took)
		}
		live = acquire(t, c.nodes[0], "blog", 5*time.Second)
	}
	if err := c.nodes[0].Release(ctx, "blog"); err != nil {
		t.Fatal(err)
	}
	live1 := acquire(t, c.nodes[1], "blog", 5*time.Second)
	got, err := os.ReadFile(filepath.Join(live1, "post"))
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("after the move: %d bytes (%v), want %d", len(got), err, len(want))
	}
}

// TestPeerReachedAddressStopsAnswering: the address a peer last answered on
// stops answering (a home node's LAN changed under it: packets dropped).
// Dials go on to its other address after the head start, and learn it,
// instead of spending their whole time on the dead one and failing for good.
func TestPeerReachedAddressStopsAnswering(t *testing.T) {
	c := newCluster(t, 2)
	c.mu.Lock()
	c.unreachable = "192.0.2.1:22001"
	c.mu.Unlock()
	n := c.nodes[0]
	n.reachMu.Lock()
	n.reached = map[string]string{c.ids[1]: c.unreachable}
	n.reachMu.Unlock()
	live := acquire(t, n, "blog", 5*time.Second)
	if err := os.WriteFile(filepath.Join(live, "post"), []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	began := time.Now()
	if err := n.Release(ctx, "blog"); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(began); took > 1500*time.Millisecond {
		t.Fatalf("release took %v: it waited on the address that stopped answering", took)
	}
	n.reachMu.Lock()
	got := n.reached[c.ids[1]]
	n.reachMu.Unlock()
	if got != c.addrs[1] {
		t.Fatalf("the address that answers now was not learnt: reached %q, want %q", got, c.addrs[1])
	}
}
