// Package syncengine replicates Docker volumes between the nodes of a
// homeswarm cluster with an embedded Syncthing.
//
// It exists so that the volume plugin glue (package volumedriver) knows
// nothing of Syncthing: the glue asks for "replicate volume X living in dir
// D", "wait until X is current", "flush X before it moves", and this package
// turns that into one Syncthing device per node, one Syncthing folder per
// volume (ID derived from the volume name, see FolderID), and a special
// registry folder that carries the cluster's volume list and membership. It
// is the only package of the project that imports Syncthing.
//
// Membership needs no hand-copied device IDs: every node announces, inside
// the BEP Hello it sends over Syncthing's TLS session, a device name that
// carries HMAC-SHA256(cluster key, device ID, label). A device whose name
// does not verify is refused (and the refusal logged once); a device that
// proves the key is added and shares the registry and every volume. New
// nodes only need the cluster key and one peer address: they TLS-dial it,
// learn its device ID from its certificate, and the peer learns theirs the
// same way. Members publish themselves in the registry, so a node added
// later becomes known to all.
//
// The registry is an ordinary Syncthing folder (ID RegistryFolderID, in
// StateDir/registry) shared with verified members only:
//
//	volumes/<name>.json      VolumeRecord: options, share list, created, deleted
//	members/<deviceID>.json  name with proof, addresses, volumes in use
//
// Every node replicates every volume the registry lists (unless removed
// locally with RemoveVolume(name, false)); a volume marked deleted is
// dropped and wiped everywhere.
//
// Propagation is fast because the engine does not wait for Syncthing's
// watcher (whole seconds at best): an inotify watch of each folder tree (and
// Touched, for a caller that knows what it changed) triggers
// ScanFolderSubdirs within tens of milliseconds. Syncthing's own watcher is turned off: the fast path covers
// what it did (files modified without close are scanned after WriteSettle)
// and its v1.30.0 aggregator has a data race on config changes. A periodic
// full rescan (RescanInterval) is the safety net. The same watch sees
// Syncthing write the temporaries of files being pulled, and starts their
// writeback early (see queueWriteback), so the fsync before a large file is
// renamed into place only flushes its tail.
package syncengine

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/syncthing/syncthing/lib/config"
	"github.com/syncthing/syncthing/lib/events"
	"github.com/syncthing/syncthing/lib/protocol"
	"github.com/syncthing/syncthing/lib/svcutil"
	"github.com/syncthing/syncthing/lib/syncthing"

	"github.com/homeswarm/homeswarm/internal/volname"
)

// Errors returned by the engine; callers test them with errors.Is.
var (
	// ErrBehind means the local replica has not caught up with its
	// connected peers; the wrapping error says by how many files and bytes.
	ErrBehind = errors.New("replica is behind its peers")
	// ErrNotReplicated means local changes are not yet held by any
	// connected peer.
	ErrNotReplicated = errors.New("local changes not yet replicated")
	// ErrInUse means a container on another node uses the volume, so it
	// cannot be deleted everywhere.
	ErrInUse = errors.New("volume is in use on another node")
	// ErrUnknownVolume means the engine does not replicate that volume on
	// this node.
	ErrUnknownVolume = errors.New("volume not replicated on this node")
	// ErrInvalidName means a volume name cannot be used as a file name.
	ErrInvalidName = volname.ErrInvalid
	// ErrClosed is returned by methods called after Close.
	ErrClosed = errors.New("sync engine closed")
	// ErrNotStarted is returned by methods that need Start first.
	ErrNotStarted = errors.New("sync engine not started")
	// ErrStarted is returned by a second Run.
	ErrStarted = errors.New("sync engine already running")
)

// DefaultPort is the BEP listen port used when ListenAddr has none.
const DefaultPort = 22000

// Options configure an Engine. Every field documents its zero value.
type Options struct {
	// StateDir holds the device certificate and key, Syncthing's config
	// and database, the registry folder and (by default) volume data. It
	// must persist across restarts. Required.
	StateDir string
	// ListenAddr is the BEP listen address, "host:port", ":port" or
	// "host". Zero: ":22000". Port 0 picks a free port at New.
	ListenAddr string
	// AdvertiseAddrs are the addresses ("host:port" or "tcp://host:port")
	// other members should dial to reach this node, published in the
	// registry. Zero: the listen address if it names a host, else every
	// non-loopback interface address with the listen port.
	AdvertiseAddrs []string
	// ClusterKey is the shared secret every member proves. Required;
	// never logged.
	ClusterKey string
	// AcceptClusterKey is a second secret accepted from members while the
	// cluster key is rotated (CLUSTER_KEY_ACCEPT): this node proves
	// ClusterKey and admits a member proving either. Zero: only ClusterKey.
	AcceptClusterKey string
	// Removed are the device IDs of nodes taken out of the cluster
	// (REMOVED_NODES): this node refuses them for good and drops them from
	// every folder. Each node enforces its own list (no member can remove
	// another in everyone's name); a removed node that makes itself a new
	// device ID is kept out by rotating the cluster key. Zero: none.
	Removed []string
	// Peers are "host[:port]" addresses of existing members (port defaults
	// to DefaultPort). DNS names are re-resolved at every dial. Zero: this
	// node only waits to be dialled.
	Peers []string
	// DeviceName labels this node in peers' logs and status. Zero: the
	// host name.
	DeviceName string
	// VolumeDir returns the local data directory of a volume created on
	// another node. Zero: StateDir/volumes/<name>.
	VolumeDir func(name string) string
	// Logger receives the engine's logs. Zero: logrus' standard logger.
	Logger *logrus.Entry

	// PeerProbeInterval is how often Peers are re-dialled to learn or
	// confirm their device IDs. Zero: 30s (2s until the first success).
	PeerProbeInterval time.Duration
	// ReconnectInterval is Syncthing's redial interval for disconnected
	// devices. Zero: 5s.
	ReconnectInterval time.Duration
	// ScanDebounce is how long the fast path collects change hints before
	// scanning. Zero: 20ms.
	ScanDebounce time.Duration
	// WriteSettle is how long a file modified but not closed (a log, a
	// database) must stay quiet before it is scanned. Zero: 1s.
	WriteSettle time.Duration
	// RescanInterval is Syncthing's periodic full rescan, the safety net
	// behind the inotify fast path (lost events, queue overflow). Zero:
	// 10m.
	RescanInterval time.Duration
	// ConnectGrace is how long WaitSynced waits for a first peer to
	// connect after Start before deciding no peer is reachable. Zero: 5s.
	ConnectGrace time.Duration
	// SettleTime is how long after a peer's cluster config WaitSynced
	// waits for its index to arrive before trusting the local view. Zero:
	// 500ms.
	SettleTime time.Duration
	// MaxRecvKbps limits incoming sync traffic (KiB/s). Zero: unlimited.
	MaxRecvKbps int
	// DisableFsync skips fsync after pulls, for tests. Zero: fsync.
	DisableFsync bool
}

// Engine is one node's embedded Syncthing. Create it with New, run it with
// Start, stop it with Close. All methods are safe for concurrent use.
type Engine struct {
	opts     Options
	log      *logrus.Entry
	keys     [][]byte // cluster keys: ClusterKey (proved), then AcceptClusterKey
	removed  map[protocol.DeviceID]bool
	cert     tls.Certificate
	myID     protocol.DeviceID
	myName   string // device name with proof
	listen   string // host:port
	port     int
	advAddrs []string

	// ctx/cancel/wg own the engine's own loops; stCtx/stCancel/stWG the
	// event logger and config service Syncthing needs until it stopped.
	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	stCtx    context.Context
	stCancel context.CancelFunc
	stWG     sync.WaitGroup

	evLogger events.Logger
	cfg      config.Wrapper
	app      *syncthing.App
	st       *syncthing.Internals
	sub      events.Subscription

	ready   chan struct{} // closed once Run's start-up is done
	closing chan struct{} // closed by Close
	stopped chan struct{} // closed when Run returns

	reconcileNow chan struct{}
	reconcileMu  sync.Mutex // serialises reconcile passes

	// passMu guards the reconcile pass counts reconcileWait waits on:
	// passes started and finished, and a channel closed (and replaced)
	// when one finishes.
	passMu      sync.Mutex
	passStarted uint64
	passDone    uint64
	passNext    chan struct{}

	mu         sync.Mutex
	started    bool
	closed     bool
	startedAt  time.Time
	localDirs  map[string]string   // volume → dir given to AddVolume
	localShare map[string][]string // volume → extra share device IDs
	detached   map[string]bool     // volumes removed locally (persisted)
	replicas   map[string]string   // volume → replica dir that may need wiping (persisted; reconcileMu)
	fresh      map[string]bool     // volumes this engine created from nothing
	noWipe     map[string]bool     // deleted volumes whose data the glue removes
	inUse      map[string]bool     // volumes a container uses on this node (SetInUse)
	volumes    map[string]VolumeRecord
	members    map[protocol.DeviceID]memberRecord
	verified   map[protocol.DeviceID]verifiedDevice
	probed     map[protocol.DeviceID][]string
	refused    map[protocol.DeviceID]refusal // devices kept out of the config
	refusedLog map[protocol.DeviceID]bool    // refusals already logged
	peers      map[protocol.DeviceID]*peerState
	lastIdx    map[string]time.Time // folder + "/" + device → last remote index
	lastChange map[string]time.Time // folder → last local or remote index change
	watchers   map[string]*watcher  // folder ID → fast-path watcher
	wbQueue    chan string          // temporaries to start writing out (see queueWriteback)
	wbMu       sync.Mutex
	wbLast     map[string]time.Time // temporary → last writeback request
	conflicts  map[string]conflictCount
	cfgErr     error
	// partitioned pauses every device (tests simulate a network split).
	partitioned bool
	// recvLimit overrides MaxRecvKbps when positive (tests).
	recvLimit atomic.Int64
}

type verifiedDevice struct {
	name  string
	addrs []string
}

// refusal keeps a device out: until a time for a failed proof (so a node
// whose key is fixed gets back in without restarting everyone), forever
// (zero until) for a member removed from the cluster.
type refusal struct {
	why   string
	until time.Time
}

func (r refusal) active(now time.Time) bool {
	return r.why != "" && (r.until.IsZero() || now.Before(r.until))
}

// refusalHold is how long a device that failed to prove the key stays out
// before a new proof is considered.
const refusalHold = time.Minute

type peerState struct {
	connectedAt time.Time
	ccAt        time.Time
}

type conflictCount struct {
	n  int
	at time.Time
}

// New validates opts, creates StateDir and loads or generates the device
// certificate. It does not touch the network; see Start.
func New(opts Options) (*Engine, error) {
	if opts.StateDir == "" {
		return nil, errors.New("syncengine: StateDir is required")
	}
	if opts.ClusterKey == "" {
		return nil, errors.New("syncengine: ClusterKey is required")
	}
	if opts.Logger == nil {
		opts.Logger = logrus.NewEntry(logrus.StandardLogger())
	}
	if opts.DeviceName == "" {
		opts.DeviceName, _ = os.Hostname()
	}
	setDur := func(d *time.Duration, def time.Duration) {
		if *d <= 0 {
			*d = def
		}
	}
	setDur(&opts.PeerProbeInterval, 30*time.Second)
	setDur(&opts.ReconnectInterval, 5*time.Second)
	setDur(&opts.ScanDebounce, 20*time.Millisecond)
	setDur(&opts.WriteSettle, time.Second)
	setDur(&opts.RescanInterval, 10*time.Minute)
	setDur(&opts.ConnectGrace, 5*time.Second)
	setDur(&opts.SettleTime, 500*time.Millisecond)

	listen, port, err := resolveListen(opts.ListenAddr)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(opts.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("syncengine: create state dir: %w", err)
	}
	cert, err := syncthing.LoadOrGenerateCertificate(
		filepath.Join(opts.StateDir, "cert.pem"), filepath.Join(opts.StateDir, "key.pem"))
	if err != nil {
		return nil, fmt.Errorf("syncengine: device certificate: %w", err)
	}
	e := &Engine{
		opts:         opts,
		keys:         [][]byte{[]byte(opts.ClusterKey)},
		removed:      map[protocol.DeviceID]bool{},
		cert:         cert,
		myID:         protocol.NewDeviceID(cert.Certificate[0]),
		listen:       listen,
		port:         port,
		reconcileNow: make(chan struct{}, 1),
		passNext:     make(chan struct{}),
		ready:        make(chan struct{}),
		closing:      make(chan struct{}),
		stopped:      make(chan struct{}),
		localDirs:    map[string]string{},
		localShare:   map[string][]string{},
		detached:     map[string]bool{},
		replicas:     map[string]string{},
		fresh:        map[string]bool{},
		noWipe:       map[string]bool{},
		inUse:        map[string]bool{},
		volumes:      map[string]VolumeRecord{},
		members:      map[protocol.DeviceID]memberRecord{},
		verified:     map[protocol.DeviceID]verifiedDevice{},
		probed:       map[protocol.DeviceID][]string{},
		refused:      map[protocol.DeviceID]refusal{},
		refusedLog:   map[protocol.DeviceID]bool{},
		peers:        map[protocol.DeviceID]*peerState{},
		lastIdx:      map[string]time.Time{},
		lastChange:   map[string]time.Time{},
		watchers:     map[string]*watcher{},
		wbQueue:      make(chan string, 16),
		wbLast:       map[string]time.Time{},
		conflicts:    map[string]conflictCount{},
	}
	if k := opts.AcceptClusterKey; k != "" && k != opts.ClusterKey {
		e.keys = append(e.keys, []byte(k))
	}
	for _, s := range opts.Removed {
		id, err := protocol.DeviceIDFromString(s)
		if err != nil {
			return nil, fmt.Errorf("syncengine: removed node %q: %w", s, err)
		}
		if id == e.myID {
			return nil, fmt.Errorf("syncengine: this node's own device ID %s is among the removed nodes", id)
		}
		e.removed[id] = true
	}
	e.log = opts.Logger.WithField("device", e.myID.Short().String())
	e.myName = memberName(e.keys[0], e.myID, memberLabel(opts.DeviceName, port))
	e.advAddrs = advertiseAddrs(opts.AdvertiseAddrs, listen, port)
	e.loadDetached()
	e.loadReplicas()
	return e, nil
}

// DeviceID returns this node's Syncthing device ID.
func (e *Engine) DeviceID() string { return e.myID.String() }

// ListenAddr returns the BEP listen address actually used ("host:port").
func (e *Engine) ListenAddr() string { return e.listen }

func resolveListen(addr string) (string, int, error) {
	if addr == "" {
		addr = ":" + strconv.Itoa(DefaultPort)
	}
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		host, portStr = addr, strconv.Itoa(DefaultPort)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("syncengine: bad ListenAddr %q", addr)
	}
	if port == 0 {
		l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			return "", 0, fmt.Errorf("syncengine: pick listen port: %w", err)
		}
		port = l.Addr().(*net.TCPAddr).Port
		l.Close()
	}
	return net.JoinHostPort(host, strconv.Itoa(port)), port, nil
}

func advertiseAddrs(given []string, listen string, port int) []string {
	var out []string
	for _, a := range given {
		out = append(out, tcpURL(a, port))
	}
	if len(out) > 0 {
		return out
	}
	host, _, _ := net.SplitHostPort(listen)
	if ip := net.ParseIP(host); host != "" && (ip == nil || !ip.IsUnspecified()) {
		return []string{"tcp://" + listen}
	}
	ifAddrs, _ := net.InterfaceAddrs()
	for _, a := range ifAddrs {
		ipn, ok := a.(*net.IPNet)
		if !ok || ipn.IP.IsLoopback() || ipn.IP.IsLinkLocalUnicast() || ipn.IP.IsMulticast() {
			continue
		}
		out = append(out, "tcp://"+net.JoinHostPort(ipn.IP.String(), strconv.Itoa(port)))
	}
	return out
}

// tcpURL turns "host", "host:port" or "tcp://host:port" into a Syncthing
// dial address.
func tcpURL(a string, defPort int) string {
	if len(a) > 6 && (a[:6] == "tcp://" || a[:6] == "tcp4:/" || a[:6] == "tcp6:/") {
		return a
	}
	if _, _, err := net.SplitHostPort(a); err != nil {
		a = net.JoinHostPort(a, strconv.Itoa(defPort))
	}
	return "tcp://" + a
}

// Run boots the embedded Syncthing and the engine's loops and runs them
// until ctx ends or Close is called; it then stops them and returns after
// every goroutine exited (nil after a clean stop). A start-up failure is
// returned at once. Ready is closed once the start-up succeeded, when
// Volumes and the folders are current; the engine's methods that need it
// running return ErrNotStarted before that. Run may be called once.
func (e *Engine) Run(ctx context.Context) error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return ErrClosed
	}
	if e.started {
		e.mu.Unlock()
		return ErrStarted
	}
	e.started = true
	e.startedAt = time.Now()
	e.ctx, e.cancel = context.WithCancel(context.Background())
	e.stCtx, e.stCancel = context.WithCancel(context.Background())
	e.mu.Unlock()
	defer close(e.stopped)

	e.evLogger = events.NewLogger()
	e.stGo(func() { _ = e.evLogger.Serve(e.stCtx) })
	e.sub = e.evLogger.Subscribe(events.DeviceConnected | events.DeviceDisconnected |
		events.PendingDevicesChanged | events.ClusterConfigReceived |
		events.LocalIndexUpdated | events.RemoteIndexUpdated)

	if err := e.startSyncthing(); err != nil {
		e.shutdown()
		return err
	}
	if err := ctx.Err(); err != nil {
		e.shutdown()
		return err
	}
	e.goRun(e.eventLoop)
	e.goRun(e.writebackLoop)
	e.reconcile() // Volumes() and the folders are current when Ready closes
	e.goRun(e.reconcileLoop)
	for _, p := range e.opts.Peers {
		p := p
		e.goRun(func() { e.peerLoop(p) })
	}
	e.log.WithField("listen", e.listen).Info("sync engine started")
	close(e.ready)
	select {
	case <-ctx.Done():
	case <-e.closing:
	}
	e.shutdown()
	return nil
}

// Ready is closed once Run's start-up succeeded. A failed start-up never
// closes it: an owner waits for Ready or for Run's error, whichever comes
// first.
func (e *Engine) Ready() <-chan struct{} { return e.ready }

func (e *Engine) goRun(f func()) {
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		f()
	}()
}

func (e *Engine) stGo(f func()) {
	e.stWG.Add(1)
	go func() {
		defer e.stWG.Done()
		f()
	}()
}

func (e *Engine) startSyncthing() error {
	cfgPath := filepath.Join(e.opts.StateDir, "config.xml")
	wrapper, _, err := config.Load(cfgPath, e.myID, e.evLogger)
	if err != nil {
		if !os.IsNotExist(err) && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("syncengine: load %s: %w", cfgPath, err)
		}
		wrapper = config.Wrap(cfgPath, config.New(e.myID), e.myID, e.evLogger)
	}
	raw := wrapper.RawCopy()
	e.enforce(&raw)
	wrapper = config.Wrap(cfgPath, raw, e.myID, e.evLogger)
	e.cfg = wrapper
	e.stGo(func() { _ = e.cfg.Serve(e.stCtx) })
	if err := wrapper.Save(); err != nil {
		return fmt.Errorf("syncengine: save config: %w", err)
	}
	if err := os.MkdirAll(e.registryDir(), 0o700); err != nil {
		return fmt.Errorf("syncengine: create registry dir: %w", err)
	}

	dbb, err := syncthing.OpenDBBackend(filepath.Join(e.opts.StateDir, "index-v0.14.0.db"), raw.Options.DatabaseTuning)
	if err != nil {
		return fmt.Errorf("syncengine: open database: %w", err)
	}
	app, err := syncthing.New(wrapper, dbb, e.evLogger, e.cert, syncthing.Options{NoUpgrade: true})
	if err != nil {
		dbb.Close()
		return fmt.Errorf("syncengine: create syncthing: %w", err)
	}
	if err := app.Start(); err != nil {
		return fmt.Errorf("syncengine: start syncthing: %w", err)
	}
	e.mu.Lock()
	e.app = app
	e.st = app.Internals
	e.mu.Unlock()
	return nil
}

// enforce applies the settings the engine owns: no GUI, no discovery,
// relays, NAT traversal, usage reporting, upgrades or crash reports; our
// listen address; our device name; the registry folder.
func (e *Engine) enforce(c *config.Configuration) {
	o := &c.Options
	o.RawListenAddresses = []string{"tcp://" + e.listen}
	o.GlobalAnnEnabled = false
	o.LocalAnnEnabled = false
	o.RelaysEnabled = false
	o.NATEnabled = false
	o.URAccepted = -1
	o.URSeen = 3
	o.AutoUpgradeIntervalH = 0
	o.CREnabled = false
	o.StartBrowser = false
	o.SetLowPriority = false
	o.AnnounceLANAddresses = false
	o.OverwriteRemoteDevNames = false
	o.ReconnectIntervalS = int(e.opts.ReconnectInterval / time.Second)
	if o.ReconnectIntervalS < 1 {
		o.ReconnectIntervalS = 1
	}
	o.MaxRecvKbps = e.opts.MaxRecvKbps
	if v := e.recvLimit.Load(); v > 0 {
		o.MaxRecvKbps = int(v)
	}
	o.LimitBandwidthInLan = o.MaxRecvKbps > 0
	o.RawStunServers = []string{}
	c.GUI.Enabled = false

	found := false
	for i := range c.Devices {
		if c.Devices[i].DeviceID == e.myID {
			c.Devices[i].Name = e.myName
			found = true
		}
	}
	if !found {
		d := c.Defaults.Device.Copy()
		d.DeviceID = e.myID
		d.Name = e.myName
		d.Addresses = []string{"dynamic"}
		c.Devices = append(c.Devices, d)
	}
	if _, _, ok := c.Folder(RegistryFolderID); !ok {
		c.Folders = append(c.Folders, e.newFolder(c, RegistryFolderID, "syncvol registry", e.registryDir()))
	}
}

func (e *Engine) newFolder(c *config.Configuration, id, label, path string) config.FolderConfiguration {
	f := c.Defaults.Folder.Copy()
	f.ID = id
	f.Label = label
	f.Path = path
	f.FilesystemType = config.FilesystemTypeBasic
	f.Type = config.FolderTypeSendReceive
	e.tuneFolder(&f)
	return f
}

// tuneFolder sets the folder parameters the engine owns.
func (e *Engine) tuneFolder(f *config.FolderConfiguration) {
	f.RescanIntervalS = int(e.opts.RescanInterval / time.Second)
	// Syncthing's own watcher is off: the engine's inotify fast path
	// replaces it (see watcher), and in v1.30.0 its aggregator races with
	// config updates (watchaggregator notifyDelay, caught by -race).
	f.FSWatcherEnabled = false
	f.FSWatcherDelayS = 1
	f.MaxConflicts = -1
	f.Paused = false
	f.DisableFsync = e.opts.DisableFsync
	f.SendOwnership = true
	f.SyncOwnership = os.Geteuid() == 0
}

func (e *Engine) registryDir() string { return filepath.Join(e.opts.StateDir, "registry") }

// Close makes Run stop the engine and waits until it has (every goroutine
// exited). It is idempotent, and safe before Run (which then returns
// ErrClosed).
func (e *Engine) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		<-e.stoppedIfStarted()
		return nil
	}
	e.closed = true
	e.mu.Unlock()
	close(e.closing)
	<-e.stoppedIfStarted()
	return nil
}

// stoppedIfStarted is closed when Run has returned, or at once when Run
// never started.
func (e *Engine) stoppedIfStarted() <-chan struct{} {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.started {
		return closedChan
	}
	return e.stopped
}

var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// shutdown stops inputs first (watchers, our loops, which may be waiting
// on the config service), then Syncthing, then the services it needs.
func (e *Engine) shutdown() {
	e.mu.Lock()
	ws := e.watchers
	e.watchers = map[string]*watcher{}
	e.mu.Unlock()
	for _, w := range ws {
		w.stop()
	}
	e.cancel()
	e.wg.Wait()
	if e.app != nil {
		e.app.Stop(svcutil.ExitSuccess)
	}
	if e.sub != nil {
		e.sub.Unsubscribe()
	}
	e.stCancel()
	e.stWG.Wait()
}

// running returns ErrNotStarted or ErrClosed unless the engine runs.
func (e *Engine) running() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	switch {
	case e.closed:
		return ErrClosed
	case !e.started || e.st == nil:
		return ErrNotStarted
	}
	return nil
}
