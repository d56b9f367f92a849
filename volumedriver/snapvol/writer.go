package snapvol

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// writer takes and ships the generations of a volume this node writes.
type writer struct {
	n     *Node
	v     *volume
	epoch uint64

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // run's own goroutines: only run adds and waits
	done   chan struct{}  // closed when run returned
	fenced atomic.Bool
	kick   chan struct{}

	mu      sync.Mutex
	seq     uint64
	latest  Gen // newest generation here (taken, or the one live started from)
	lastSig uint64
	// lastTransid is the btrfs transaction the newest generation was
	// taken in (0: unknown)
	lastTransid uint64
	unsettled   bool // live changed at the last look: take one more
	snapAt      map[Gen]time.Time
	acked       map[string]Gen // peer → generation it holds
	inflight    map[string][2]Gen
	lags        []time.Duration // recent snapshot → peer ack delays
	lastRenew   time.Time
	whyMu       sync.Mutex
	why         string // why fenced (guarded by whyMu)
	warnedAt    time.Time
}

// warn logs a problem that repeats every round (a full disk) at most every
// 30 s. Caller holds w.mu.
func (w *writer) warnLocked(err error, msg string) {
	if time.Since(w.warnedAt) < 30*time.Second {
		return
	}
	w.warnedAt = time.Now()
	w.n.log.WithField("volume", w.v.name).WithError(err).Warn(msg)
}

func newWriter(n *Node, v *volume, epoch uint64) *writer {
	ctx, cancel := context.WithCancel(n.ctx)
	w := &writer{n: n, v: v, epoch: epoch, ctx: ctx, cancel: cancel, kick: make(chan struct{}, 1), done: make(chan struct{}),
		latest: v.st.Latest, snapAt: map[Gen]time.Time{}, acked: map[string]Gen{},
		inflight: map[string][2]Gen{}, lastRenew: time.Now()}
	return w // lastSig zero: the first round takes a generation of this epoch
}

func (w *writer) run() {
	defer close(w.done)
	defer w.wg.Wait()
	shippers := map[string]context.CancelFunc{}
	t := time.NewTicker(w.n.opts.Interval)
	defer t.Stop()
	renew := time.NewTicker(w.n.opts.Lease / 4)
	defer renew.Stop()
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		for {
			select {
			case <-w.ctx.Done():
				return
			case <-renew.C:
				w.renew()
			}
		}
	}()
	for {
		if !w.fenced.Load() {
			w.checkLease()
		}
		if !w.fenced.Load() {
			w.snapshotIfChanged(false) // failures are logged there, rate-limited
		}
		seen := map[string]bool{}
		for _, p := range w.n.opts.Peers() {
			seen[p.ID] = true
			if _, ok := shippers[p.ID]; !ok {
				ctx, cancel := context.WithCancel(w.ctx)
				shippers[p.ID] = cancel
				w.wg.Add(1)
				go func() {
					defer w.wg.Done()
					w.shipLoop(ctx, p)
				}()
			}
		}
		for id, cancel := range shippers {
			if !seen[id] {
				cancel()
				delete(shippers, id)
			}
		}
		select {
		case <-w.ctx.Done():
			return
		case <-t.C:
		}
	}
}

// stop ends the loops and waits for them.
func (w *writer) stop() {
	w.cancel()
	<-w.done
}

// renew refreshes the lease at every peer. The lease counts from when the
// claim was sent (a peer counts it from when it arrived, later), so the
// writer's view ends first; checkLease fences on it.
func (w *writer) renew() {
	peers := w.n.opts.Peers()
	sent := time.Now()
	rs := w.n.queryAll(w.ctx, peers, &msg{Req: reqClaim, Volume: w.v.name, Epoch: w.epoch, Writer: w.n.opts.Self})
	ok := 1
	for id, r := range rs {
		switch {
		case r.Err == "":
			ok++
		case r.Epoch > w.epoch:
			w.fence("peer " + short(id) + " knows a newer epoch")
			return
		}
	}
	if ok*2 > len(peers)+1 {
		w.mu.Lock()
		if sent.After(w.lastRenew) {
			w.lastRenew = sent
		}
		w.mu.Unlock()
	}
}

// checkLease fences the writer once its lease, as last renewed at a
// majority, is within fenceMargin of running out at the peers. It runs
// every Interval, apart from renewals (which may wait on peers that are
// gone), so the fence comes on time.
func (w *writer) checkLease() {
	w.mu.Lock()
	since := time.Since(w.lastRenew)
	w.mu.Unlock()
	if since > w.n.opts.Lease-fenceMargin && w.ctx.Err() == nil {
		w.fence(fmt.Sprintf("could not renew its lease at a majority of the nodes for %.1fs", since.Seconds()))
	}
}

// fence stops this node from writing the volume: live becomes read-only,
// so the container's writes fail (EROFS) before another node presents it.
func (w *writer) fence(why string) {
	if w.fenced.Swap(true) {
		return
	}
	w.whyMu.Lock() // not w.mu: grant fences with v.mu held, and w.mu is taken before v.mu
	w.why = why
	w.whyMu.Unlock()
	err := SetReadOnly(w.v.live(), true)
	w.n.log.WithField("volume", w.v.name).WithField("epoch", w.epoch).WithError(err).
		Error("fenced: " + why + "; the volume is read-only here until it is mounted again")
}

// snapshotIfChanged takes a generation when live changed since the last
// one — or the round after it did, or when final — and returns the
// newest. The extra round matters: file times come from a coarse clock,
// so a write that began in the same tick as the last look (a database
// rewriting a page in place) changes no time or size, and only a
// generation taken after it finished holds it. final (the last Unmount)
// always takes one.
func (w *writer) snapshotIfChanged(final bool) (Gen, error) {
	sig := signature(w.v.live())
	w.mu.Lock()
	defer w.mu.Unlock()
	// Data can land after the last generation with no time or size
	// changing (a write racing the snapshot, an fsync'd rewrite in the
	// same clock tick): the subvolume's tree says so.
	landed := false
	if w.lastTransid != 0 {
		ch, err := ChangedSince(w.v.live(), w.lastTransid)
		landed = ch || err != nil
	}
	settle := w.unsettled
	w.unsettled = sig != w.lastSig || landed
	if !w.unsettled && !settle && !final {
		return w.latest, nil
	}
	w.seq++
	g := Gen{Epoch: w.epoch, Seq: w.seq}
	err := Snapshot(w.v.live(), w.v.genDir(g), true)
	if errors.Is(err, syscall.ENOSPC) {
		// The disk is full, and older generations may hold what the
		// container deleted to make room: drop them all (peers then get
		// the next generation whole) and try once more.
		w.warnLocked(err, "disk full: dropping older generations to take a new one; peers will receive it whole")
		for _, old := range w.v.gens() {
			w.v.deleteGen(old)
		}
		clear(w.acked)
		err = Snapshot(w.v.live(), w.v.genDir(g), true)
	}
	if err != nil {
		w.seq--
		w.warnLocked(err, "cannot take a generation; the container's writes are not replicated until it can")
		return w.latest, nil
	}
	w.lastSig, w.latest = sig, g
	w.lastTransid, _ = CreatedIn(w.v.genDir(g)) // 0 (unknown): the stat signature alone decides
	w.snapAt[g] = time.Now()
	w.v.mu.Lock()
	w.v.st.Latest = g
	w.v.mu.Unlock()
	w.gcLocked()
	select {
	case w.kick <- struct{}{}:
	default:
	}
	return g, nil
}

// gcLocked drops generations no peer needs as a base any more.
func (w *writer) gcLocked() {
	keep := []Gen{w.latest}
	for _, g := range w.acked {
		keep = append(keep, g)
	}
	for _, f := range w.inflight {
		keep = append(keep, f[0], f[1])
	}
	for _, g := range w.v.gens() {
		if !slices.Contains(keep, g) && w.v.deleteGen(g) {
			delete(w.snapAt, g)
		}
	}
}

// shipLoop keeps peer p at the newest generation: each round sends the
// newest one on top of what p holds, so a slow peer skips generations.
func (w *writer) shipLoop(ctx context.Context, p Peer) {
	var c *conn
	defer func() {
		if c != nil {
			c.Close()
		}
	}()
	backoff := 200 * time.Millisecond
	t := time.NewTicker(w.n.opts.Interval)
	defer t.Stop()
	for {
		w.mu.Lock()
		todo := w.acked[p.ID] != w.latest && !w.latest.IsZero() && !w.fenced.Load()
		w.mu.Unlock()
		if todo {
			var err error
			if c == nil {
				c, err = w.n.dial(ctx, p)
			}
			if err == nil {
				cc := c // c is reset below; the closure keeps this one
				stop := context.AfterFunc(ctx, func() { cc.Close() })
				err = w.ship(cc, p)
				stop()
			}
			if err != nil {
				if c != nil {
					c.Close()
					c = nil
				}
				if errors.Is(err, errStale) {
					w.fence("peer " + short(p.ID) + " refused it: " + err.Error())
				}
				select {
				case <-ctx.Done():
					return
				case <-time.After(backoff):
				}
				backoff = min(2*backoff, 2*time.Second)
				continue
			}
			backoff = 200 * time.Millisecond
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-w.kick:
		case <-t.C:
		}
	}
}

// ship sends the newest generation to p over c and records p's ack.
func (w *writer) ship(c *conn, p Peer) error {
	w.mu.Lock()
	g := w.latest
	w.inflight[p.ID] = [2]Gen{g, w.acked[p.ID]}
	w.mu.Unlock()
	defer func() {
		w.mu.Lock()
		delete(w.inflight, p.ID)
		w.mu.Unlock()
	}()
	// Every generation the peer may choose as the base stays until sent.
	have := w.v.gens()
	w.v.pin(have...)
	defer w.v.unpin(have...)
	r, err := c.call(&msg{Req: reqPush, Volume: w.v.name, Epoch: w.epoch, Writer: w.n.opts.Self, Gen: g, Have: have})
	if err != nil {
		return err
	}
	if r.Err != "" {
		if r.Err == errStale.Error() {
			return fmt.Errorf("%w (theirs %d, ours %d)", errStale, r.Epoch, w.epoch)
		}
		return errors.New(r.Err)
	}
	w.mu.Lock()
	w.inflight[p.ID] = [2]Gen{g, r.Base}
	w.mu.Unlock()
	prev := ""
	if !r.Base.IsZero() {
		prev = w.v.genDir(r.Base)
	}
	if !exists(w.v.genDir(g)) || (prev != "" && !exists(prev)) {
		return fmt.Errorf("generation %s or its base %s went away", g, r.Base) // collected before it was pinned
	}
	if _, err := sendDiff(prev, w.v.genDir(g), &w.v.changed, c.send); err != nil {
		return err
	}
	if err := c.flush(); err != nil {
		return err
	}
	res, err := c.recv()
	if err != nil {
		return err
	}
	if res.Err != "" {
		return errors.New(res.Err)
	}
	now := time.Now()
	w.mu.Lock()
	old := w.acked[p.ID]
	w.acked[p.ID] = g
	if old != g && !old.IsZero() {
		w.gcLocked() // the base it held may be free now (and with it, disk)
	}
	if at, ok := w.snapAt[g]; ok {
		w.lags = append(w.lags, now.Sub(at))
		if len(w.lags) > 500 {
			w.lags = w.lags[len(w.lags)-500:]
		}
	}
	w.mu.Unlock()
	return nil
}

// shipAll sends the newest generation to every peer at once and returns
// how many hold it: once all do, or ctx ends, or allGrace after the first
// one does (a peer that is down must not hold a drain up: the next writer
// fetches the newest generation from whichever node has it, this one
// included).
func (w *writer) shipAll(ctx context.Context, peers []Peer) int {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	results := make(chan bool, len(peers))
	pending := 0
	for _, p := range peers {
		w.mu.Lock()
		done := w.acked[p.ID] == w.latest
		w.mu.Unlock()
		if done {
			results <- true
			continue
		}
		pending++
		go func() {
			for ctx.Err() == nil {
				c, err := w.n.dial(ctx, p)
				if err == nil {
					stop := context.AfterFunc(ctx, func() { c.Close() })
					err = w.ship(c, p)
					stop()
					c.Close()
				}
				if err == nil {
					results <- true
					return
				}
				if errors.Is(err, errStale) {
					break
				}
				select {
				case <-ctx.Done():
				case <-time.After(200 * time.Millisecond):
				}
			}
			results <- false
		}()
	}
	ok, seen := 0, 0
	var grace <-chan time.Time
	for seen < len(peers) {
		select {
		case r := <-results:
			seen++
			if r {
				ok++
				if grace == nil {
					grace = time.After(allGrace)
				}
			}
		case <-grace:
			return ok
		case <-ctx.Done():
			return ok
		}
	}
	return ok
}

// allGrace is how long a release waits for the other peers once one holds
// the last generation.
const allGrace = 500 * time.Millisecond

// status reports the writer's generations and replication lag.
func (w *writer) status() map[string]string {
	w.mu.Lock()
	defer w.mu.Unlock()
	st := map[string]string{}
	if at, ok := w.snapAt[w.latest]; ok {
		st["generationAge"] = time.Since(at).Round(time.Millisecond).String()
	}
	if n := len(w.lags); n > 0 {
		s := slices.Clone(w.lags)
		slices.Sort(s)
		st["lagP50"] = s[n/2].Round(time.Millisecond).String()
		st["lagP99"] = s[min(n-1, n*99/100)].Round(time.Millisecond).String()
	}
	var held []string
	for id, g := range w.acked {
		mark := ""
		if g == w.latest {
			mark = " (current)"
		}
		held = append(held, short(id)+"="+g.String()+mark)
	}
	slices.Sort(held)
	st["peersHold"] = strings.Join(held, " ")
	st["leaseRenewed"] = strconv.FormatFloat(time.Since(w.lastRenew).Seconds(), 'f', 1, 64) + "s ago"
	w.whyMu.Lock()
	if w.why != "" {
		st["fenced"] = w.why
	}
	w.whyMu.Unlock()
	return st
}
