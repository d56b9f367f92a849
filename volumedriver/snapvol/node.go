// Package snapvol replicates volumes that must survive their node's crash
// as a whole — databases — by shipping point-in-time generations.
//
// It exists because per-file sync (Syncthing, lsyncd) cannot replicate a
// busy database: a file rewritten every few milliseconds never holds still
// to be scanned and pulled, and a database's files (db + wal, base/ +
// pg_wal/) move one by one, never as one state, so a crash leaves another
// node a mix no database recovers from. Here the container writes to a
// btrfs subvolume (live); while it changes, the writer takes a read-only
// snapshot every Interval — what a power cut at that instant would have
// left — and streams to every peer only what differs from the generation
// that peer already holds (changed extents; btrfs never rewrites an extent
// two snapshots share). A receiver applies the stream to a writable copy
// of its base generation and promotes it with a read-only snapshot only
// when the stream is complete: a Mount anywhere presents the newest
// complete generation, never a torn one.
//
// One writer at a time: the node that mounts a volume takes a new epoch
// and a lease from a majority of the cluster's nodes, renewed every
// Lease/4. Peers refuse generations and claims of older epochs. A Mount
// elsewhere waits, bounded, while a peer reports the lease live; a writer
// that cannot renew at a majority for Lease-FenceMargin, or learns of a
// newer epoch, fences itself: the live subvolume is made read-only, so its
// container's writes fail before another node can present the volume. A
// node that held unshipped writes when it lost the volume keeps them aside
// whole (diverged/<time>) and starts from the cluster's newest generation.
//
// Layout under each volume's directory (Options.VolumeDir):
//
//	live/            subvolume the container sees (this node writes the volume)
//	gens/<gen>/      read-only generations (see Gen.String)
//	staging/         a generation being received
//	diverged/<name>/ writes this node held when another took the volume over
//	snap.json        epoch, writer, newest generation (persisted)
package snapvol

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/homeswarm/homeswarm/internal/atomicfile"
)

// Errors the node returns; callers test them with errors.Is.
var (
	ErrNoMajority = errors.New("cannot reach a majority of the cluster's nodes")
	ErrInUse      = errors.New("volume is in use on another node")
	ErrBehind     = errors.New("replica is behind the newest generation")
	ErrFenced     = errors.New("this node lost the volume to another writer")
	ErrNotBtrfs   = errors.New("state directory is not on btrfs")
	ErrClosed     = errors.New("snapshot replication stopped")
	// ErrNotReplicated means this node's newest generation is on no peer.
	ErrNotReplicated = errors.New("newest generation not yet on any peer")
	errNotMember     = errors.New("peer is not a cluster member")
	errStale         = errors.New("stale writer epoch")
)

// Peer is another node of the cluster.
type Peer struct {
	ID string // device ID
	// Addrs are the host:port addresses of its snapvol listener, in the
	// order it advertises them. A node at home advertises its LAN address
	// first, which a VPS cannot reach: every one is tried (see dial).
	Addrs []string
}

// Options configure a Node. Every field documents its zero value.
type Options struct {
	// Self is this node's device ID (required).
	Self string
	// VolumeDir returns a volume's directory (required); the node makes
	// it when a peer first sends that volume.
	VolumeDir func(name string) string
	// ValidName checks a volume name a peer sends (required).
	ValidName func(name string) error
	// Cert is this node's TLS certificate (required).
	Cert tls.Certificate
	// Verify admits a peer by its certificate (DER) and returns its ID
	// (required).
	Verify func(raw []byte) (id string, ok bool)
	// Peers lists the other members now (required).
	Peers func() []Peer
	// Volumes lists the snapshot volumes the cluster knows (not deleted);
	// the node catches up with the newest generation of each every
	// CatchUp, so a node that joins or comes back holds every volume
	// before it is asked to mount it. Zero: only the volumes it mounts or
	// is sent.
	Volumes func() []string
	// CatchUp is how often Volumes are compared with the peers. Zero: 5s.
	CatchUp time.Duration
	// ListenAddr is where peers reach this node (required), e.g. ":22001".
	ListenAddr string
	// Interval is how often a written volume is snapshotted when it
	// changed. Zero: 200ms.
	Interval time.Duration
	// Lease is how long a writer's claim holds without renewal. Zero: 8s.
	Lease time.Duration
	// Logger receives the node's logs. Zero: logrus' standard logger.
	Logger *logrus.Entry
	// Dial opens a TCP connection to a peer. Zero: net.Dialer with a 2s
	// timeout. (Tests cut links with it.)
	Dial func(ctx context.Context, addr string) (net.Conn, error)
}

// fenceMargin is how long before its lease ends a writer that could not
// renew stops writing: peers count the lease from when they received the
// claim, which is after the writer sent it.
const fenceMargin = 2 * time.Second

// keepGens is how many generations a receiver keeps.
const keepGens = 3

// Node is one node's side of snapshot replication. Methods are safe for
// concurrent use.
type Node struct {
	opts Options
	log  *logrus.Entry
	tls  *tls.Config
	ln   net.Listener

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	vols     map[string]*volume
	stopping bool // Run is stopping: spawn starts nothing

	reachMu sync.Mutex
	reached map[string]string // peer ID → the address that last answered
}

// state is what snap.json keeps of a volume.
type state struct {
	Epoch    uint64 `json:"epoch"`            // highest epoch known
	Writer   string `json:"writer,omitempty"` // its writer
	Writing  bool   `json:"writing,omitempty"`
	Released bool   `json:"released,omitempty"`
	Latest   Gen    `json:"latest"` // newest complete generation here
}

type volume struct {
	name string
	dir  string
	op   sync.Mutex // serialises Acquire, Release, receiving

	// pins counts the readers of each generation being sent: it is not
	// deleted meanwhile (a subvolume deleted under a reader is dropped by
	// btrfs's cleaner while it reads, and its extents would read as holes).
	pinMu sync.Mutex
	pins  map[Gen]int

	mu         sync.Mutex // guards the fields below
	st         state
	leaseUntil time.Time // the writer's lease as this node granted it
	w          *writer   // set while this node writes the volume
	lastRecv   time.Time
	lastBytes  int64

	changed changedInodes // the tree searches of the generations sent
}

// New listens on opts.ListenAddr; Run serves.
func New(opts Options) (*Node, error) {
	if opts.Self == "" || opts.VolumeDir == nil || opts.ValidName == nil || opts.Verify == nil || opts.Peers == nil || opts.ListenAddr == "" {
		return nil, errors.New("snapvol: Self, VolumeDir, ValidName, Verify, Peers and ListenAddr are required")
	}
	if opts.Interval <= 0 {
		opts.Interval = 200 * time.Millisecond
	}
	if opts.Lease <= 0 {
		opts.Lease = 8 * time.Second
	}
	if opts.CatchUp <= 0 {
		opts.CatchUp = 5 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = logrus.NewEntry(logrus.StandardLogger())
	}
	if opts.Dial == nil {
		d := &net.Dialer{Timeout: 2 * time.Second}
		opts.Dial = func(ctx context.Context, addr string) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) }
	}
	n := &Node{opts: opts, log: opts.Logger, vols: map[string]*volume{}}
	n.tls = tlsConfig(opts.Cert, opts.Verify)
	ln, err := net.Listen("tcp", opts.ListenAddr)
	if err != nil {
		return nil, fmt.Errorf("snapvol: listen: %w", err)
	}
	n.ln = tls.NewListener(ln, n.tls)
	n.ctx, n.cancel = context.WithCancel(context.Background())
	return n, nil
}

// Addr is the listener's address.
func (n *Node) Addr() string { return n.ln.Addr().String() }

// Run serves peers until ctx ends or Close; it returns after every
// goroutine of the node stopped.
func (n *Node) Run(ctx context.Context) error {
	stop := context.AfterFunc(ctx, n.cancel)
	defer stop()
	go func() { <-n.ctx.Done(); n.ln.Close() }()
	if n.opts.Volumes != nil {
		n.spawn(n.catchUpLoop)
	}
	for {
		c, err := n.ln.Accept()
		if err != nil {
			n.cancel()
			n.mu.Lock()
			n.stopping = true // no goroutine starts from now on
			n.mu.Unlock()
			n.stopWriters()
			n.wg.Wait()
			if n.ctx.Err() != nil {
				return nil
			}
			return err
		}
		if !n.spawn(func() { n.serve(c) }) {
			c.Close()
		}
	}
}

// spawn runs f in a goroutine Run waits for, unless the node is stopping.
func (n *Node) spawn(f func()) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.stopping {
		return false
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		f()
	}()
	return true
}

// Close stops the node; writers stop shipping (their live data stays).
// It is idempotent.
func (n *Node) Close() error {
	n.cancel()
	return nil
}

func (n *Node) stopWriters() {
	n.mu.Lock()
	vs := make([]*volume, 0, len(n.vols))
	for _, v := range n.vols {
		vs = append(vs, v)
	}
	n.mu.Unlock()
	for _, v := range vs {
		v.mu.Lock()
		w := v.w
		v.mu.Unlock()
		if w != nil {
			w.stop()
		}
	}
}

// vol returns the volume, loading its state; create makes its directory.
func (n *Node) vol(name string, create bool) (*volume, error) {
	if err := n.opts.ValidName(name); err != nil {
		return nil, err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if v := n.vols[name]; v != nil {
		return v, nil
	}
	dir := n.opts.VolumeDir(name)
	if create {
		if err := os.MkdirAll(filepath.Join(dir, "gens"), 0o700); err != nil {
			return nil, err
		}
	} else if _, err := os.Stat(dir); err != nil {
		return nil, err
	}
	v := &volume{name: name, dir: dir}
	if b, err := os.ReadFile(v.statePath()); err == nil {
		if err := json.Unmarshal(b, &v.st); err != nil {
			n.log.WithField("volume", name).WithError(err).Warn("unreadable snap.json; rebuilding it from gens/")
		}
	}
	// The newest complete generation on disk wins over a record a crash
	// cut short.
	if g := v.gens(); len(g) > 0 && v.st.Latest.Less(g[len(g)-1]) {
		v.st.Latest = g[len(g)-1]
	}
	os.MkdirAll(filepath.Join(dir, "gens"), 0o700)
	DeleteSubvolume(filepath.Join(dir, "staging"))
	n.vols[name] = v
	return v, nil
}

func (v *volume) statePath() string { return filepath.Join(v.dir, "snap.json") }
func (v *volume) live() string      { return filepath.Join(v.dir, "live") }
func (v *volume) genDir(g Gen) string {
	return filepath.Join(v.dir, "gens", g.String())
}

// gens lists the complete generations here, oldest first.
func (v *volume) gens() []Gen {
	ents, _ := os.ReadDir(filepath.Join(v.dir, "gens"))
	var out []Gen
	for _, e := range ents {
		if g, ok := parseGen(e.Name()); ok {
			out = append(out, g)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Less(out[j]) })
	return out
}

// saveLocked persists v.st. Caller holds v.mu.
func (v *volume) saveLocked() error {
	b, err := json.Marshal(v.st)
	if err != nil {
		return err
	}
	return atomicfile.Write(v.statePath(), b, 0o600)
}

// Writing reports whether this node writes the volume now.
func (n *Node) Writing(name string) bool {
	v, err := n.vol(name, false)
	if err != nil {
		return false
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.w != nil
}

// LiveDir is the directory a container of the volume sees on this node.
func (n *Node) LiveDir(name string) string { return filepath.Join(n.opts.VolumeDir(name), "live") }

// Acquire makes this node the volume's writer and returns the directory to
// mount: it takes a new epoch at a majority of the nodes, waits (until ctx
// ends) while another node's lease is live, brings the newest generation
// any reachable node holds here, and presents it writable. init prepares
// the root of a volume that has no generation anywhere yet.
func (n *Node) Acquire(ctx context.Context, name string, init func(dir string) error) (string, error) {
	v, err := n.vol(name, true)
	if err != nil {
		return "", err
	}
	v.op.Lock()
	defer v.op.Unlock()
	v.mu.Lock()
	old := v.w
	if old != nil && !old.fenced.Load() {
		v.mu.Unlock()
		return v.live(), nil
	}
	v.mu.Unlock()
	if old != nil {
		// Mounted again after this node was fenced (its last container
		// still up): the fenced writes go aside before anything else.
		old.stop()
		if err := n.retireFenced(v, old); err != nil {
			return "", err
		}
	}
	log := n.log.WithField("volume", name)

	var replies map[string]*msg
	peers := n.opts.Peers()
	holder, left := "", time.Duration(0)
	began, told := time.Now(), false
	defer func() {
		if told {
			log.WithField("waited", time.Since(began).Round(time.Millisecond)).Info("the other node's lease is over")
		}
	}()
	for {
		rs := n.queryAll(ctx, peers, &msg{Req: reqQuery, Volume: name})
		reach, total := len(rs)+1, len(peers)+1
		if reach*2 > total {
			if holder, left = liveLease(rs, n.opts.Self); holder == "" {
				replies = rs
				break
			}
		}
		if holder != "" && !told {
			told = true
			log.WithField("holder", holder).WithField("left", left.Round(time.Millisecond)).Info("another node writes the volume: waiting for it to stop or its lease to run out")
		}
		if ctx.Err() != nil {
			if holder != "" {
				return "", fmt.Errorf("volume %s: %w %s (its lease runs %.1fs more); retry once it stopped (a volume several replicas write at once needs -o replication=files)", name, ErrInUse, holder, left.Seconds())
			}
			return "", fmt.Errorf("volume %s: %w (%d of %d reachable): another node may be writing it; retry", name, ErrNoMajority, reach, total)
		}
		select {
		case <-ctx.Done():
		case <-time.After(300 * time.Millisecond):
		}
	}

	v.mu.Lock()
	maxEpoch, newest, from := v.st.Epoch, v.st.Latest, ""
	v.mu.Unlock()
	for id, r := range replies {
		maxEpoch = max(maxEpoch, r.Epoch)
		if newest.Less(r.Latest) {
			newest, from = r.Latest, id
		}
	}
	epoch := maxEpoch + 1
	if ok, total := n.claimAll(ctx, peers, name, epoch); ok*2 <= total {
		return "", fmt.Errorf("volume %s: %w (%d of %d granted the claim); retry", name, ErrNoMajority, ok, total)
	}
	if from != "" {
		if err := n.pull(ctx, v, from, peers); err != nil {
			return "", fmt.Errorf("volume %s: %w: cannot fetch generation %s from %s: %v; retry", name, ErrBehind, newest, short(from), err)
		}
	}
	v.mu.Lock()
	st := v.st
	v.mu.Unlock()
	// Our own live data is the newest state when this node wrote last and
	// nobody wrote since (a plugin or engine restart here): keep it.
	resume := st.Writing && st.Writer == n.opts.Self && st.Epoch == maxEpoch && !st.Latest.Less(newest) && exists(v.live())
	if !resume {
		if err := n.setAsideOrDrop(v, st, log); err != nil {
			return "", err
		}
		if latest := st.Latest; !latest.IsZero() {
			if err := Snapshot(v.genDir(latest), v.live(), false); err != nil {
				return "", err
			}
		} else {
			if err := CreateSubvolume(v.live()); err != nil {
				return "", err
			}
			if init != nil {
				if err := init(v.live()); err != nil {
					DeleteSubvolume(v.live())
					return "", err
				}
			}
		}
	} else if ro, _ := ReadOnly(v.live()); ro {
		SetReadOnly(v.live(), false)
	}
	v.mu.Lock()
	v.st.Epoch, v.st.Writer, v.st.Writing, v.st.Released = epoch, n.opts.Self, true, false
	err = v.saveLocked()
	w := newWriter(n, v, epoch)
	v.w = w
	v.mu.Unlock()
	if err != nil {
		return "", err
	}
	if !n.spawn(w.run) {
		close(w.done)
		return "", ErrClosed
	}
	log.WithField("epoch", epoch).WithField("generation", st.Latest.String()).WithField("resumed", resume).Info("writing the volume here")
	return v.live(), nil
}

// setAsideOrDrop removes the live subvolume before a newer generation
// replaces it. When this node was writing it and never released it, it
// may hold writes nobody else has: those are kept, whole, in diverged/.
func (n *Node) setAsideOrDrop(v *volume, st state, log *logrus.Entry) error {
	if !exists(v.live()) {
		return nil
	}
	if st.Writing && st.Writer == n.opts.Self {
		dst := filepath.Join(v.dir, "diverged", fmt.Sprintf("%s-epoch%d", time.Now().UTC().Format("20060102T150405Z"), st.Epoch))
		os.MkdirAll(filepath.Dir(dst), 0o700)
		if err := Snapshot(v.live(), dst, true); err != nil {
			return err
		}
		log.WithField("kept", dst).Warn("another node wrote the volume since this node last did: this node's last writes are kept aside, not merged")
	}
	return DeleteSubvolume(v.live())
}

// retireFenced ends a fenced writer w (stopped): another node took the
// volume over while this one still wrote, and what it wrote since is
// nobody else's, so it is kept aside, whole. Caller holds v.op.
func (n *Node) retireFenced(v *volume, w *writer) error {
	v.mu.Lock()
	v.w = nil
	st := v.st
	v.mu.Unlock()
	st.Writing, st.Writer, st.Epoch = true, n.opts.Self, w.epoch // named after the epoch it wrote in
	err := n.setAsideOrDrop(v, st, n.log.WithField("volume", v.name))
	v.mu.Lock()
	v.st.Writing = false
	serr := v.saveLocked()
	v.mu.Unlock()
	return errors.Join(err, serr)
}

func liveLease(replies map[string]*msg, self string) (string, time.Duration) {
	for id, r := range replies {
		if r.Lease && r.Writer != self && r.Writer != "" {
			return short(r.Writer) + " (as " + short(id) + " reports)", r.LeaseLeft
		}
	}
	return "", 0
}

// Release ends this node's writing of the volume: a last generation is
// taken and shipped, bounded by ctx, and the peers are told the volume is
// free. It returns an error when no peer confirmed the last generation.
func (n *Node) Release(ctx context.Context, name string) error {
	v, err := n.vol(name, false)
	if err != nil {
		return err
	}
	v.op.Lock()
	defer v.op.Unlock()
	v.mu.Lock()
	w := v.w
	v.mu.Unlock()
	if w == nil {
		return nil
	}
	w.stop()
	if w.fenced.Load() {
		return n.retireFenced(v, w)
	}
	g, err := w.snapshotIfChanged(true)
	if err != nil {
		return err
	}
	peers := n.opts.Peers()
	began := time.Now()
	ok := w.shipAll(ctx, peers)
	n.queryAll(ctx, peers, &msg{Req: reqRelease, Volume: name, Epoch: w.epoch, Writer: n.opts.Self, Gen: g})
	n.log.WithField("volume", name).WithField("generation", g.String()).WithField("peers", fmt.Sprintf("%d of %d", ok, len(peers))).
		WithField("took", time.Since(began).Round(time.Millisecond)).Info("released: the last generation is on the peers")
	v.mu.Lock()
	v.w = nil
	if !w.fenced.Load() {
		v.st.Writing, v.st.Released = false, true
	}
	err = v.saveLocked()
	v.mu.Unlock()
	if err != nil {
		return err
	}
	if ok == 0 && len(peers) > 0 {
		return fmt.Errorf("volume %s: the last generation %s reached no peer in time (%d known); it keeps its data here", name, g, len(peers))
	}
	return nil
}

// Holder asks every peer whether another node holds the volume's writer
// lease now, and returns that node ("" when none does). It fails when
// fewer than a majority of the nodes answer in time (bounded by ctx and
// 2s): a writer may then be among those that did not.
func (n *Node) Holder(ctx context.Context, name string) (string, error) {
	if err := n.opts.ValidName(name); err != nil {
		return "", err
	}
	peers := n.opts.Peers()
	rs := n.queryAll(ctx, peers, &msg{Req: reqQuery, Volume: name})
	if holder, left := liveLease(rs, n.opts.Self); holder != "" {
		return fmt.Sprintf("%s (lease %.1fs left)", holder, left.Seconds()), nil
	}
	if reach, total := len(rs)+1, len(peers)+1; reach*2 <= total {
		return "", fmt.Errorf("volume %s: %w (%d of %d reachable)", name, ErrNoMajority, reach, total)
	}
	return "", nil
}

// Replicated returns nil when a peer holds this node's newest generation
// of the volume (or a newer one), when this node holds none, or when it
// has no peers; otherwise an error wrapping ErrNotReplicated: deleting the
// volume here would lose writes nobody else has (a last Release that
// reached no peer). Bounded by ctx and 2s.
func (n *Node) Replicated(ctx context.Context, name string) error {
	v, err := n.vol(name, false)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return err
	}
	v.mu.Lock()
	latest := v.st.Latest
	v.mu.Unlock()
	peers := n.opts.Peers()
	if latest.IsZero() || len(peers) == 0 {
		return nil
	}
	rs := n.queryAll(ctx, peers, &msg{Req: reqQuery, Volume: name})
	for _, r := range rs {
		if !r.Latest.Less(latest) {
			return nil
		}
	}
	return fmt.Errorf("volume %s: %w: generation %s is on none of the %d peers that answered (%d known)", name, ErrNotReplicated, latest, len(rs), len(peers))
}

// Remove forgets the volume here and deletes its subvolumes.
func (n *Node) Remove(name string) error {
	v, err := n.vol(name, false)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return err
	}
	v.op.Lock()
	defer v.op.Unlock()
	v.mu.Lock()
	w := v.w
	v.w = nil
	v.mu.Unlock()
	if w != nil {
		w.stop()
	}
	var errs []error
	for _, g := range v.gens() {
		errs = append(errs, DeleteSubvolume(v.genDir(g)))
	}
	errs = append(errs, DeleteSubvolume(v.live()), DeleteSubvolume(filepath.Join(v.dir, "staging")))
	for _, d := range v.diverged() {
		errs = append(errs, DeleteSubvolume(filepath.Join(v.dir, "diverged", d)))
	}
	n.mu.Lock()
	delete(n.vols, name)
	n.mu.Unlock()
	return errors.Join(errs...)
}

func (v *volume) diverged() []string {
	ents, _ := os.ReadDir(filepath.Join(v.dir, "diverged"))
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// Status describes the volume from local state.
func (n *Node) Status(name string) map[string]string {
	st := map[string]string{"replication": "snapshots (crash-consistent, one writer)"}
	v, err := n.vol(name, false)
	if err != nil {
		st["generation"] = "none here yet"
		return st
	}
	v.mu.Lock()
	s, w, lastRecv := v.st, v.w, v.lastRecv
	v.mu.Unlock()
	st["generation"] = s.Latest.String()
	st["epoch"] = strconv.FormatUint(s.Epoch, 10)
	if s.Writer != "" {
		st["writer"] = short(s.Writer)
	}
	if w != nil {
		st["role"] = "writer"
		if w.fenced.Load() {
			st["role"] = "fenced: another node took the volume over; writes fail here"
		}
		for k, val := range w.status() {
			st[k] = val
		}
	} else {
		st["role"] = "replica"
		if !lastRecv.IsZero() {
			st["lastReceived"] = lastRecv.UTC().Format(time.RFC3339Nano)
		}
	}
	if d := v.diverged(); len(d) > 0 {
		st["diverged"] = fmt.Sprint(d)
	}
	return st
}

// queryAll sends m to every peer at once and returns the replies of those
// that answered in time (bounded by ctx and 2s).
func (n *Node) queryAll(ctx context.Context, peers []Peer, m *msg) map[string]*msg {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	var mu sync.Mutex
	out := map[string]*msg{}
	var wg sync.WaitGroup
	for _, p := range peers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := n.dial(ctx, p)
			if err != nil {
				return
			}
			defer c.Close()
			stop := context.AfterFunc(ctx, func() { c.Close() })
			defer stop()
			r, err := c.call(m)
			if err != nil || r.Err != "" && m.Req == reqQuery {
				return
			}
			mu.Lock()
			out[p.ID] = r
			mu.Unlock()
		}()
	}
	wg.Wait()
	return out
}

// claimAll asks every peer to grant epoch; it returns how many nodes
// (this one included) granted it, and how many there are.
func (n *Node) claimAll(ctx context.Context, peers []Peer, name string, epoch uint64) (int, int) {
	rs := n.queryAll(ctx, peers, &msg{Req: reqClaim, Volume: name, Epoch: epoch, Writer: n.opts.Self})
	ok := 1
	for _, r := range rs {
		if r.Err == "" {
			ok++
		}
	}
	return ok, len(peers) + 1
}

// dial connects to p within 2 s. The address that answered p last is
// dialled first, and alone for headStart; then, or as soon as it fails,
// every other address too (as Happy Eyeballs does, RFC 8305), and the first
// TLS handshake to complete wins. With none known, all are dialled at once.
// An address that stopped answering thus costs headStart, not the dial.
func (n *Node) dial(ctx context.Context, p Peer) (*conn, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if len(p.Addrs) == 0 {
		return nil, fmt.Errorf("peer %s: no address", p.ID)
	}
	n.reachMu.Lock()
	last := n.reached[p.ID]
	n.reachMu.Unlock()
	addrs, head := p.Addrs, time.Duration(0)
	if i := slices.Index(addrs, last); i >= 0 {
		addrs = append([]string{last}, slices.Delete(slices.Clone(addrs), i, i+1)...)
		head = headStart
	}
	c, addr, err := dialFirst(ctx, addrs, head, n.dialAddr)
	if err != nil {
		return nil, err
	}
	if addr != last {
		n.reachMu.Lock()
		if n.reached == nil {
			n.reached = map[string]string{}
		}
		n.reached[p.ID] = addr
		n.reachMu.Unlock()
	}
	return newConn(c, p.ID), nil
}

// headStart is how long the address that answered last is dialled alone.
const headStart = 300 * time.Millisecond

// dialFirst dials addrs[0], and after head (or once that dial fails) every
// other address; it returns the first connection made and its address. The
// dials still running are cancelled, and a connection one of them makes all
// the same is closed. When none connects, it returns the first error.
func dialFirst[C io.Closer](ctx context.Context, addrs []string, head time.Duration, dial func(context.Context, string) (C, error)) (C, string, error) {
	type res struct {
		c    C
		addr string
		err  error
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		won       atomic.Bool
		mu        sync.Mutex
		failed    int
		first     error
		firstDone = make(chan struct{}) // addrs[0] failed
	)
	done := make(chan res, 1) // the winner, or the first error once all failed
	for i, a := range addrs {
		go func() {
			var c C
			err := ctx.Err()
			if i > 0 && head > 0 {
				t := time.NewTimer(head)
				select {
				case <-t.C:
				case <-firstDone:
				case <-ctx.Done():
				}
				t.Stop()
				err = ctx.Err()
			}
			if err == nil {
				c, err = dial(ctx, a)
			}
			if err == nil {
				if won.CompareAndSwap(false, true) {
					done <- res{c: c, addr: a}
				} else {
					c.Close()
				}
				return
			}
			if i == 0 {
				close(firstDone)
			}
			mu.Lock()
			defer mu.Unlock()
			if first == nil {
				first = err
			}
			if failed++; failed == len(addrs) {
				done <- res{err: first}
			}
		}()
	}
	r := <-done
	return r.c, r.addr, r.err
}

// dialAddr opens a TLS connection to addr.
func (n *Node) dialAddr(ctx context.Context, addr string) (*tls.Conn, error) {
	raw, err := n.opts.Dial(ctx, addr)
	if err != nil {
		return nil, err
	}
	c := tls.Client(raw, n.tls)
	if err := c.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, err
	}
	return c, nil
}

// serve answers one peer's connection, request after request.
func (n *Node) serve(raw net.Conn) {
	defer raw.Close()
	tc, ok := raw.(*tls.Conn)
	if !ok {
		return
	}
	tc.SetDeadline(time.Now().Add(idle))
	if err := tc.Handshake(); err != nil {
		return
	}
	peer, ok := n.opts.Verify(tc.ConnectionState().PeerCertificates[0].Raw)
	if !ok {
		return
	}
	c := newConn(tc, peer)
	stop := context.AfterFunc(n.ctx, func() { raw.Close() })
	defer stop()
	for {
		m, err := c.recv()
		if err != nil {
			return
		}
		r := n.handle(c, m)
		if r == nil {
			continue
		}
		if err := c.send(r); err != nil {
			return
		}
		if err := c.flush(); err != nil {
			return
		}
	}
}

func (n *Node) handle(c *conn, m *msg) *msg {
	v, err := n.vol(m.Volume, m.Req == reqPush || m.Req == reqClaim)
	if err != nil {
		if m.Req == reqQuery && errors.Is(err, fs.ErrNotExist) {
			return &msg{}
		}
		return &msg{Err: err.Error()}
	}
	now := time.Now()
	switch m.Req {
	case reqQuery:
		v.mu.Lock()
		defer v.mu.Unlock()
		r := &msg{Epoch: v.st.Epoch, Writer: v.st.Writer, Released: v.st.Released, Latest: v.st.Latest}
		if v.w != nil && !v.w.fenced.Load() {
			r.Lease, r.LeaseLeft, r.Writer = true, n.opts.Lease, n.opts.Self
		} else if !v.st.Released && now.Before(v.leaseUntil) {
			r.Lease, r.LeaseLeft = true, v.leaseUntil.Sub(now)
		}
		return r
	case reqClaim:
		return n.grant(v, m, c.peer, now)
	case reqRelease:
		v.mu.Lock()
		defer v.mu.Unlock()
		if m.Epoch == v.st.Epoch && m.Writer == c.peer {
			v.st.Released, v.leaseUntil = true, time.Time{}
			v.saveLocked()
		}
		return &msg{}
	case reqPush:
		if r := n.grant(v, m, c.peer, now); r.Err != "" {
			return r
		}
		return n.receive(c, v, m)
	case reqPull:
		n.sendNewest(c, v, m.Have)
		return nil
	}
	return &msg{Err: "unknown request"}
}

// catchUpLoop brings every volume the cluster knows to the newest
// generation a peer holds, unless this node writes it.
func (n *Node) catchUpLoop() {
	t := time.NewTicker(n.opts.CatchUp)
	defer t.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
		}
		for _, name := range n.opts.Volumes() {
			if n.ctx.Err() != nil {
				return
			}
			if err := n.catchUp(name); err != nil {
				n.log.WithField("volume", name).WithError(err).Debug("cannot catch up")
			}
		}
	}
}

func (n *Node) catchUp(name string) error {
	if n.opts.ValidName(name) != nil {
		return nil
	}
	peers := n.opts.Peers()
	ctx, cancel := context.WithTimeout(n.ctx, 2*MaxPull)
	defer cancel()
	rs := n.queryAll(ctx, peers, &msg{Req: reqQuery, Volume: name})
	var newest Gen
	from := ""
	var top *msg
	for id, r := range rs {
		if newest.Less(r.Latest) {
			newest, from = r.Latest, id
		}
		if top == nil || top.Epoch < r.Epoch {
			top = r
		}
	}
	if from == "" {
		return nil
	}
	v, err := n.vol(name, true)
	if err != nil {
		return err
	}
	if !v.op.TryLock() {
		return nil // mounting or receiving right now
	}
	defer v.op.Unlock()
	v.mu.Lock()
	if top != nil && top.Writer != "" && top.Writer != n.opts.Self {
		n.learnEpochLocked(v, top.Epoch, top.Writer)
	}
	behind := v.w == nil && v.st.Latest.Less(newest)
	v.mu.Unlock()
	if !behind {
		return nil
	}
	return n.pull(ctx, v, from, peers)
}

// MaxPull bounds one catch-up transfer.
const MaxPull = 2 * time.Minute

// learnEpochLocked records that writer holds the volume at epoch, newer
// than what this node knew. When this node wrote the volume last and
// never let it go (it crashed or was cut off), what it holds is kept
// aside first: it must never be merged into the new writer's data.
// Caller holds v.mu.
func (n *Node) learnEpochLocked(v *volume, epoch uint64, writer string) error {
	if epoch < v.st.Epoch || (epoch == v.st.Epoch && v.st.Writer == writer) {
		return nil
	}
	if v.w == nil && v.st.Writing {
		if err := n.setAsideOrDrop(v, v.st, n.log.WithField("volume", v.name)); err != nil {
			return err
		}
		v.st.Writing = false
	}
	v.st.Epoch, v.st.Writer, v.st.Released = epoch, writer, false
	return v.saveLocked()
}

// grant records a claim (or a push, which renews it) of writer at epoch,
// unless a newer epoch is known. A writer here that learns of a newer
// epoch fences itself.
func (n *Node) grant(v *volume, m *msg, from string, now time.Time) *msg {
	if m.Writer != from && m.Req == reqClaim {
		return &msg{Err: "a node can claim only for itself"}
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if m.Epoch < v.st.Epoch || (m.Epoch == v.st.Epoch && v.st.Writer != "" && v.st.Writer != from) {
		return &msg{Err: errStale.Error(), Epoch: v.st.Epoch}
	}
	if v.w != nil && v.w.epoch < m.Epoch {
		v.w.fence("peer " + short(from) + " took the volume at a newer epoch")
	}
	if err := n.learnEpochLocked(v, m.Epoch, from); err != nil {
		return &msg{Err: "cannot keep this node's diverged writes: " + err.Error()}
	}
	v.leaseUntil = now.Add(n.opts.Lease)
	return &msg{Epoch: v.st.Epoch}
}

// receive takes one generation stream from c into v.
func (n *Node) receive(c *conn, v *volume, hdr *msg) *msg {
	if !v.op.TryLock() {
		// Acquire (or another stream) holds the volume: the writer retries.
		return &msg{Err: "busy"}
	}
	defer v.op.Unlock()
	v.mu.Lock()
	writing := v.w != nil
	v.mu.Unlock()
	if writing {
		return &msg{Err: "this node writes the volume"}
	}
	base := newestCommon(v.gens(), hdr.Have)
	if err := c.send(&msg{Base: base}); err != nil {
		return nil
	}
	if err := c.flush(); err != nil {
		return nil
	}
	g, st, err := n.recvGen(c, v, hdr.Gen, base)
	if err != nil {
		return &msg{Err: err.Error()}
	}
	v.mu.Lock()
	if v.st.Latest.Less(g) {
		v.st.Latest = g
	}
	v.lastRecv, v.lastBytes = time.Now(), st.Bytes
	v.saveLocked()
	v.mu.Unlock()
	v.gc(nil)
	return &msg{Gen: g}
}

// recvGen applies the stream that follows on c, on top of base, and
// promotes it to gens/<g> only once it is complete.
func (n *Node) recvGen(c *conn, v *volume, g, base Gen) (Gen, diffStats, error) {
	staging := filepath.Join(v.dir, "staging")
	DeleteSubvolume(staging)
	var err error
	if base.IsZero() {
		err = CreateSubvolume(staging)
	} else {
		err = Snapshot(v.genDir(base), staging, false)
	}
	if err != nil {
		return g, diffStats{}, err
	}
	a := &applier{root: staging}
	for {
		m, err := c.recv()
		if err != nil {
			DeleteSubvolume(staging)
			return g, a.st, fmt.Errorf("generation %s: %w", g, err)
		}
		if err := a.apply(m); err != nil {
			a.finishFile()
			DeleteSubvolume(staging)
			// Drain the rest so the connection stays usable.
			for m.Kind != opEnd {
				if m, err = c.recv(); err != nil {
					break
				}
			}
			return g, a.st, fmt.Errorf("generation %s: %w", g, err)
		}
		if m.Kind == opEnd {
			break
		}
	}
	if exists(v.genDir(g)) {
		DeleteSubvolume(staging)
		return g, a.st, nil
	}
	err = Snapshot(staging, v.genDir(g), true)
	DeleteSubvolume(staging)
	return g, a.st, err
}

// sendNewest answers a pull: the newest generation here, on top of the
// newest one the puller also has.
func (n *Node) sendNewest(c *conn, v *volume, have []Gen) {
	v.mu.Lock()
	latest := v.st.Latest
	v.mu.Unlock()
	gs := v.gens()
	if len(gs) == 0 || latest.IsZero() || !slices.Contains(gs, latest) {
		c.send(&msg{Err: "no generation here"})
		c.flush()
		return
	}
	base := newestCommon(gs, have)
	v.pin(latest, base)
	defer v.unpin(latest, base)
	prev := ""
	if !base.IsZero() {
		prev = v.genDir(base)
	}
	if !exists(v.genDir(latest)) || (prev != "" && !exists(prev)) {
		c.send(&msg{Err: "generation went away; retry"})
		c.flush()
		return
	}
	if err := c.send(&msg{Gen: latest, Base: base}); err != nil {
		return
	}
	if _, err := sendDiff(prev, v.genDir(latest), &v.changed, c.send); err != nil {
		n.log.WithField("volume", v.name).WithError(err).Warn("cannot send generation")
		c.Close()
		return
	}
	c.flush()
}

// pull brings the newest generation of from here.
func (n *Node) pull(ctx context.Context, v *volume, from string, peers []Peer) error {
	var p Peer
	for _, q := range peers {
		if q.ID == from {
			p = q
		}
	}
	c, err := n.dial(ctx, p)
	if err != nil {
		return err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	hdr, err := c.call(&msg{Req: reqPull, Volume: v.name, Have: v.gens()})
	if err != nil {
		return err
	}
	if hdr.Err != "" {
		return errors.New(hdr.Err)
	}
	g, _, err := n.recvGen(c, v, hdr.Gen, hdr.Base)
	if err != nil {
		return err
	}
	v.mu.Lock()
	if v.st.Latest.Less(g) {
		v.st.Latest = g
	}
	err = v.saveLocked()
	v.mu.Unlock()
	return err
}

// gc deletes generations no longer needed: all but the newest keepGens,
// and never one in keep.
func (v *volume) gc(keep []Gen) {
	gs := v.gens()
	for i, g := range gs {
		if i >= len(gs)-keepGens || slices.Contains(keep, g) {
			continue
		}
		v.deleteGen(g)
	}
}

// pin keeps gs from being deleted until unpin.
func (v *volume) pin(gs ...Gen) {
	v.pinMu.Lock()
	defer v.pinMu.Unlock()
	if v.pins == nil {
		v.pins = map[Gen]int{}
	}
	for _, g := range gs {
		v.pins[g]++
	}
}

func (v *volume) unpin(gs ...Gen) {
	v.pinMu.Lock()
	defer v.pinMu.Unlock()
	for _, g := range gs {
		if v.pins[g]--; v.pins[g] <= 0 {
			delete(v.pins, g)
		}
	}
}

// deleteGen deletes generation g unless it is being sent; it reports
// whether it did.
func (v *volume) deleteGen(g Gen) bool {
	v.pinMu.Lock()
	defer v.pinMu.Unlock()
	if v.pins[g] > 0 {
		return false
	}
	DeleteSubvolume(v.genDir(g))
	return true
}

func newestCommon(mine, theirs []Gen) Gen {
	var best Gen
	for _, g := range mine {
		if slices.Contains(theirs, g) && best.Less(g) {
			best = g
		}
	}
	return best
}

func exists(p string) bool { _, err := os.Lstat(p); return err == nil }

func short(id string) string {
	if len(id) > 7 {
		return id[:7]
	}
	return id
}

// signature sums what a stat sees of every entry of the tree at dir: it
// changes whenever a file is written (mtime, ctime), created, removed or
// renamed.
func signature(dir string) uint64 {
	h := fnv.New64a()
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return nil
		}
		s := fi.Sys().(*syscall.Stat_t)
		fmt.Fprint(h, p, s.Ino, s.Size, s.Mtim.Nano(), s.Ctim.Nano(), s.Mode, s.Uid, s.Gid, "\x00")
		return nil
	})
	return h.Sum64()
}
