// Package store is syncvol's core: it keeps the volumes of one node —
// their records, replica directories and mount reference counts — in a
// state directory that outlives the plugin, and asks a Replicator to keep the
// replicas in step with the other nodes. It knows nothing of Docker: the
// plugin glue in package volumedriver translates Docker requests into calls
// here, and package syncengine is the Replicator.
//
// Layout under Options.Root:
//
//	volumes/<name>/volume.json   the record: options, creation time, mount IDs
//	volumes/<name>/replica/      the replicated folder root (Syncthing's)
//	volumes/<name>/replica/data  what containers see
//
// The data directory is one level below the replica root so that
// Syncthing's folder marker never shows in a container (databases refuse to
// initialise a non-empty directory). Mount points are bind mounts of the data
// directory under Options.MountRoot, the plugin's propagatedMount.
package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/homeswarm/homeswarm/internal/atomicfile"
)

// Replicator keeps replicas of volumes in step with other nodes. The store
// calls it with its own deadlines; implementations must honour ctx.
// syncengine.Engine is the real one; a nil Replicator means local-only.
type Replicator interface {
	// AddVolume starts replicating the volume whose folder root is dir,
	// also with the plain Syncthing devices in share. It is idempotent and
	// registers the volume cluster-wide with its options. It returns by
	// ctx's end (the store's call deadline), and does nothing for the
	// caller after that.
	AddVolume(ctx context.Context, name, dir string, share []string, options map[string]string) error
	// RegisterVolume registers a snapshot volume cluster-wide with its
	// options, without replicating its data (Snapshotter does that); it
	// returns by ctx's end.
	RegisterVolume(ctx context.Context, name string, options map[string]string) error
	// RemoveVolume stops replicating the volume here; everywhere also
	// deletes it on every node. It returns by ctx's end.
	RemoveVolume(ctx context.Context, name string, everywhere bool) error
	// WaitSynced returns once the local replica has caught up with the
	// reachable peers, or an error saying how far behind it is.
	WaitSynced(ctx context.Context, name string) error
	// Flush returns once at least one peer holds every local change; when
	// ctx ends first because some change is on no peer, the error wraps
	// ErrNotReplicated.
	Flush(ctx context.Context, name string) error
	// Status describes the replica from local state, in milliseconds.
	Status(name string) map[string]string
	// Volumes lists the volumes the cluster knows, from local state.
	Volumes() []ClusterVolume
	// SetInUse publishes whether a container uses the volume on this node;
	// while it does, this node never deletes it for a removal everywhere
	// made elsewhere. It never blocks.
	SetInUse(name string, used bool)
	// UsedBy names the other nodes that report a container using the
	// volume, from local state.
	UsedBy(name string) []string
}

// Snapshotter replicates snapshot volumes (replication=snapshots) as
// crash-consistent generations, one writer at a time. snapvol.Node is the
// real one; nil means no such volumes (the state directory is not btrfs,
// or no cluster).
type Snapshotter interface {
	// Acquire makes this node the volume's writer and returns the
	// directory to mount; init prepares a volume that has no data anywhere.
	Acquire(ctx context.Context, name string, init func(dir string) error) (string, error)
	// Release takes and ships a last generation and lets the volume go.
	Release(ctx context.Context, name string) error
	// Remove deletes this node's generations of the volume.
	Remove(name string) error
	// Status describes the volume's generations from local state.
	Status(name string) map[string]string
	// LiveDir is the directory a container sees while this node writes.
	LiveDir(name string) string
	// Writing reports whether this node writes the volume now.
	Writing(name string) bool
	// Holder asks the peers which other node holds the volume's writer
	// lease now ("" for none); it fails when it cannot ask a majority.
	Holder(ctx context.Context, name string) (string, error)
	// Replicated returns nil unless this node holds a generation no peer
	// has (then an error that says which).
	Replicated(ctx context.Context, name string) error
}

// ClusterVolume is a volume known somewhere in the cluster.
type ClusterVolume struct {
	Name      string
	Options   map[string]string
	CreatedAt time.Time
	Deleted   bool
}

// Mounter makes and removes the bind mounts that expose volumes. The real
// one is BindMounter; tests use a fake that records calls.
type Mounter interface {
	// Mount bind-mounts src onto dst (dst exists).
	Mount(src, dst string) error
	// Unmount removes the mount on dst; it is not an error if none is there.
	Unmount(dst string) error
	// Mounted reports whether dst is currently a mount point.
	Mounted(dst string) (bool, error)
}

// Options configure a Store.
type Options struct {
	// Root is the state directory (required). Everything the store keeps
	// lives below it.
	Root string
	// MountRoot is where mount points are made (required): the plugin's
	// propagatedMount, so the host sees the mounts.
	MountRoot string
	// Mounter makes bind mounts; nil means BindMounter{}.
	Mounter Mounter
	// Replicator keeps replicas in step; nil means local-only volumes.
	Replicator Replicator
	// Snapshots replicates snapshot volumes; nil means every volume is
	// replicated file by file (or local-only).
	Snapshots Snapshotter
	// MountTimeout bounds Mount's wait for the replica to catch up (at
	// most MaxCallWait); 0 means 20s.
	MountTimeout time.Duration
	// FlushTimeout bounds the last Unmount's wait for a peer to hold every
	// local change (at most MaxCallWait); 0 means 20s.
	FlushTimeout time.Duration
	// Logger receives the store's logs; nil means the standard logger.
	Logger *logrus.Entry
}

// Volume is the store's view of one volume, as Get and List report it.
type Volume struct {
	Name       string
	Mountpoint string // set while mounted on this node
	CreatedAt  time.Time
	Local      bool // a replica exists on this node
	Options    map[string]string
	Mounts     int
	Status     map[string]string
}

// record is what volume.json holds.
type record struct {
	Name      string            `json:"name"`
	Options   map[string]string `json:"options,omitempty"`
	CreatedAt time.Time         `json:"created_at"`
	MountIDs  []string          `json:"mount_ids,omitempty"`
}

// entry is a volume known locally. Its mutex serialises Mount, Unmount and
// Remove of that volume, which may wait on peers; the store's own mutex is
// never held across such a wait, so Get/List/Path always answer at once.
type entry struct {
	op   sync.Mutex // serialises slow operations on this volume
	rec  record     // guarded by Store.mu
	opts VolumeOptions
	// restored are the users found recorded when the store started: a
	// plugin restart under running containers, or containers an engine
	// crash took without their Unmount (see Remove). Guarded by Store.mu.
	restored []string
}

// Store is the set of volumes of one node. It is safe for concurrent use.
type Store struct {
	Layout
	opts Options
	log  *logrus.Entry

	mu     sync.RWMutex
	vols   map[string]*entry
	closed bool

	// callTimeout bounds a whole Create, Mount or Remove, waiting for the
	// volume's lock included: MaxCallWait (tests shorten it).
	callTimeout time.Duration
	// ctx ends at Close: every wait of the store's calls and goroutines
	// ends with it.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // goroutines the store started (Close waits)
}

// New opens the store at opts.Root, creating it if needed, and restores the
// bind mounts of volumes that were mounted when the plugin last stopped
// (a plugin restart tears down its propagated mounts, the containers do not
// go away).
func New(opts Options) (*Store, error) {
	if opts.Root == "" || opts.MountRoot == "" {
		return nil, errors.New("store: Root and MountRoot are required")
	}
	if opts.Mounter == nil {
		opts.Mounter = BindMounter{}
	}
	if opts.MountTimeout <= 0 {
		opts.MountTimeout = 20 * time.Second
	}
	if opts.FlushTimeout <= 0 {
		opts.FlushTimeout = 20 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = logrus.NewEntry(logrus.StandardLogger())
	}
	if opts.MountTimeout > MaxCallWait || opts.FlushTimeout > MaxCallWait {
		opts.Logger.WithField("max", MaxCallWait).Warn("MOUNT_TIMEOUT / FLUSH_TIMEOUT longer than Docker waits for a plugin call: using the maximum")
	}
	opts.MountTimeout = min(opts.MountTimeout, MaxCallWait)
	opts.FlushTimeout = min(opts.FlushTimeout, MaxCallWait)
	s := &Store{Layout: Layout(opts.Root), opts: opts, log: opts.Logger, vols: map[string]*entry{}, callTimeout: MaxCallWait}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	for _, d := range []string{s.volumesDir(), opts.MountRoot} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("store: %w", err)
		}
	}
	if err := s.load(); err != nil {
		return nil, err
	}
	return s, nil
}

// Layout names the paths below a state directory (see the package doc).
type Layout string

func (l Layout) volumesDir() string           { return filepath.Join(string(l), "volumes") }
func (l Layout) volumeDir(name string) string { return filepath.Join(l.volumesDir(), name) }

// VolumeDir is the directory holding everything of one volume.
func (l Layout) VolumeDir(name string) string { return l.volumeDir(name) }
func (l Layout) recordPath(name string) string {
	return filepath.Join(l.volumeDir(name), "volume.json")
}

// ReplicaDir is the replicated folder root of a volume.
func (l Layout) ReplicaDir(name string) string { return filepath.Join(l.volumeDir(name), "replica") }

// DataDir is what containers see of a volume.
func (l Layout) DataDir(name string) string { return filepath.Join(l.ReplicaDir(name), "data") }

// MountPoint is where a volume is mounted while in use.
func (s *Store) MountPoint(name string) string { return filepath.Join(s.opts.MountRoot, name) }

// load reads every volume record and re-establishes the mounts of volumes
// that still have users.
func (s *Store) load() error {
	ents, err := os.ReadDir(s.volumesDir())
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	for _, de := range ents {
		name := de.Name()
		if !de.IsDir() || ValidateName(name) != nil {
			continue
		}
		b, err := os.ReadFile(s.recordPath(name))
		if err != nil {
			// A replica the cluster made before Docker asked for it here.
			s.log.WithField("volume", name).WithError(err).Debug("replica without a local record")
			continue
		}
		var rec record
		if err := json.Unmarshal(b, &rec); err != nil || rec.Name != name {
			s.log.WithField("volume", name).Warn("skipping volume with a corrupt record")
			continue
		}
		vo, err := parseRecorded(rec.Options)
		if err != nil {
			s.log.WithField("volume", name).WithError(err).Warn("volume record has invalid options; using defaults")
			vo, _ = ParseOptions(nil)
		}
		e := &entry{rec: rec, opts: vo, restored: slices.Clone(rec.MountIDs)}
		s.vols[name] = e
		if r := s.opts.Replicator; r != nil {
			ctx, cancel := s.callContext()
			err := s.register(ctx, e)
			cancel()
			if err != nil {
				s.log.WithField("volume", name).WithError(err).Warn("cannot resume replication")
			}
		}
		if len(rec.MountIDs) > 0 {
			s.setInUse(name, true)
		}
		if len(rec.MountIDs) > 0 && s.snapshots(e) {
			// The plugin restarted under running containers: resume writing
			// unless another node took the volume meanwhile (then the
			// containers here see a fenced, read-only volume).
			s.resume(name)
			continue
		}
		if len(rec.MountIDs) > 0 {
			if err := s.ensureMounted(name); err != nil {
				s.log.WithField("volume", name).WithError(err).Warn("cannot restore mount")
			}
		}
	}
	return nil
}

// saveLocked writes e's record atomically. Caller holds e.op.
func (s *Store) saveLocked(e *entry) error {
	s.mu.RLock()
	b, err := json.MarshalIndent(e.rec, "", "  ")
	name := e.rec.Name
	s.mu.RUnlock()
	if err != nil {
		return err
	}
	return atomicfile.Write(s.recordPath(name), b, 0o600)
}

// callContext is the context of one call that may wait on the cluster:
// it ends after callTimeout (below Docker's own 30 s, so an answer always
// reaches dockerd), or when the store closes.
func (s *Store) callContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(s.ctx, s.callTimeout)
}

// lookup returns the entry of a local volume.
func (s *Store) lookup(name string) (*entry, error) {
	if err := ValidateName(name); err != nil {
		return nil, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, ErrClosed
	}
	e := s.vols[name]
	if e == nil {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, name)
	}
	return e, nil
}

// Create makes a volume, or does nothing if it exists with the same
// options (Swarm creates a volume on every node a task lands on). Creating
// an existing volume with different options is an error rather than a
// silent change.
func (s *Store) Create(name string, raw map[string]string) error {
	if err := ValidateName(name); err != nil {
		return err
	}
	vo, err := ParseOptions(raw)
	if errors.Is(err, errLongMountTimeout) && s.known(name) {
		// Swarm creates a volume with its service's -o options on every
		// node it lands on: a volume an older release made with a longer
		// mount-timeout keeps working (at the most a Mount waits).
		vo, err = parseRecorded(raw)
	}
	if err != nil {
		return err
	}
	if vo.Replication == ReplicationSnapshots && s.opts.Snapshots == nil {
		return fmt.Errorf("%w: replication=snapshots needs the state directory on btrfs and a CLUSTER_KEY (see README, syncvol); use replication=files", ErrInvalidOption)
	}
	explicit := vo.Replication != ""
	vo = s.withDefault(vo)
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	if e, ok := s.vols[name]; ok {
		s.mu.Unlock()
		want := vo.Raw()
		if !explicit {
			want["replication"] = string(e.opts.Replication) // the default is not a difference
		}
		if len(raw) > 0 && !sameOptions(e.opts.Raw(), want) {
			return fmt.Errorf("%w: volume %s already exists with options %v; remove it first or create it with the same options", ErrInvalidOption, name, e.opts.Raw())
		}
		return nil
	}
	e := &entry{rec: record{Name: name, Options: vo.Raw(), CreatedAt: time.Now().UTC()}, opts: vo}
	// A volume the cluster already knows keeps the cluster's options and
	// creation time, so every replica reports the same.
	if cv, ok := s.clusterVolume(name); ok && (len(raw) == 0 || !explicit && sameOptions(withoutKey(cv.Options, "replication"), withoutKey(vo.Raw(), "replication"))) {
		if cvo, err := parseRecorded(cv.Options); err == nil {
			if cvo.Replication == ReplicationSnapshots && s.opts.Snapshots == nil {
				s.mu.Unlock()
				return fmt.Errorf("%w: volume %s is replicated as snapshots, which needs this node's state directory on btrfs", ErrInvalidOption, name)
			}
			if cvo.Replication == "" {
				cvo.Replication = ReplicationFiles // recorded before the option existed
			}
			e.opts, e.rec.Options = cvo, cvo.Raw()
		}
		if !cv.CreatedAt.IsZero() {
			e.rec.CreatedAt = cv.CreatedAt
		}
	}
	e.op.Lock()
	s.vols[name] = e
	s.mu.Unlock()
	defer e.op.Unlock()

	ctx, cancel := s.callContext()
	defer cancel()
	if err := s.createOnDisk(ctx, e); err != nil {
		s.mu.Lock()
		delete(s.vols, name)
		s.mu.Unlock()
		os.RemoveAll(s.volumeDir(name))
		return err
	}
	s.log.WithField("volume", name).WithField("options", e.rec.Options).Info("volume created")
	return nil
}

func (s *Store) createOnDisk(ctx context.Context, e *entry) error {
	name := e.rec.Name
	if s.snapshots(e) {
		// The data directory is made when the volume is first mounted
		// (Snapshotter.Acquire), from the cluster's newest generation.
		if err := os.MkdirAll(s.volumeDir(name), 0o755); err != nil {
			return fmt.Errorf("create volume %s: %w", name, err)
		}
	} else if err := e.initRoot(s.DataDir(name)); err != nil {
		return fmt.Errorf("create volume %s: %w", name, err)
	}
	if err := s.saveLocked(e); err != nil {
		return fmt.Errorf("create volume %s: %w", name, err)
	}
	if s.opts.Replicator != nil {
		if err := s.register(ctx, e); err != nil {
			return fmt.Errorf("create volume %s: start replication: %w", name, err)
		}
	}
	return nil
}

// initRoot makes dir the root of a new volume, with its uid, gid and mode.
// A files volume's dir may already have arrived from another device:
// ownership and mode are set through a descriptor opened without
// following a symlink, so a planted link never changes a file outside.
func (e *entry) initRoot(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(dir, os.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return fmt.Errorf("%w: %s: %v", ErrUnsafePath, dir, err)
	}
	defer f.Close()
	mode := e.opts.Mode
	if mode == 0 {
		mode = 0o755
	}
	if err := f.Chmod(mode); err != nil {
		return err
	}
	if e.opts.UID >= 0 || e.opts.GID >= 0 {
		return f.Chown(e.opts.UID, e.opts.GID)
	}
	return nil
}

func withoutKey(m map[string]string, k string) map[string]string {
	out := make(map[string]string, len(m))
	for kk, v := range m {
		if kk != k {
			out[kk] = v
		}
	}
	return out
}

func sameOptions(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// known reports whether the volume exists here or in the cluster.
func (s *Store) known(name string) bool {
	s.mu.RLock()
	_, ok := s.vols[name]
	s.mu.RUnlock()
	if !ok {
		_, ok = s.clusterVolume(name)
	}
	return ok
}

func (s *Store) clusterVolume(name string) (ClusterVolume, bool) {
	if s.opts.Replicator == nil {
		return ClusterVolume{}, false
	}
	for _, cv := range s.opts.Replicator.Volumes() {
		if cv.Name == name && !cv.Deleted {
			return cv, true
		}
	}
	return ClusterVolume{}, false
}

// dataDirOf is the directory containers of e see on this node.
func (s *Store) dataDirOf(e *entry) string {
	if s.snapshots(e) {
		return s.opts.Snapshots.LiveDir(e.rec.Name)
	}
	return s.DataDir(e.rec.Name)
}

// snapshots reports whether e is replicated as generations here.
func (s *Store) snapshots(e *entry) bool {
	return s.opts.Snapshots != nil && e.opts.Replication == ReplicationSnapshots
}

// register tells the replicator about e: a Syncthing folder for files
// volumes, a registry record only for snapshot volumes.
func (s *Store) register(ctx context.Context, e *entry) error {
	r := s.opts.Replicator
	if e.opts.Replication == ReplicationSnapshots {
		return r.RegisterVolume(ctx, e.rec.Name, e.rec.Options)
	}
	return r.AddVolume(ctx, e.rec.Name, s.ReplicaDir(e.rec.Name), e.opts.Share, e.rec.Options)
}

// resume handles a snapshot volume that had users when the plugin
// stopped. Its mount is restored at once (a container may still run on
// it), but the volume is only claimed again when something writes to it:
// after an engine crash the recorded users are dead containers whose
// Unmount never came, and claiming for them would hold the volume here,
// away from the node Swarm moved the task to.
func (s *Store) resume(name string) {
	if err := s.ensureMounted(name); err != nil {
		s.log.WithField("volume", name).WithError(err).Warn("cannot restore mount")
		return
	}
	s.spawn(func() {
		log := s.log.WithField("volume", name)
		dir := s.opts.Snapshots.LiveDir(name)
		base := treeStamp(dir)
		writer := s.opts.Snapshots.Status(name)["writer"]
		tries := 0
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-s.ctx.Done():
				return
			case <-t.C:
			}
			s.mu.RLock()
			e, closed := s.vols[name], s.closed
			users := 0
			if e != nil {
				users = len(e.rec.MountIDs)
			}
			s.mu.RUnlock()
			if closed || users == 0 || s.opts.Snapshots.Writing(name) ||
				s.opts.Snapshots.Status(name)["writer"] != writer {
				return // stopped, released, mounted anew, or another node took it
			}
			if treeStamp(dir) == base {
				continue
			}
			ctx, cancel := context.WithTimeout(s.ctx, MaxCallWait)
			_, err := s.opts.Snapshots.Acquire(ctx, name, nil)
			cancel()
			if err == nil {
				log.WithField("tries", tries+1).Info("a container still writes the volume here: writing it again")
				return
			}
			// Tried again each tick: a claim fails while the mesh
			// restarts beside this plugin (no majority yet), and what
			// the container writes meanwhile is shipped nowhere.
			if tries++; tries == 1 || tries%60 == 0 {
				log.WithError(err).WithField("tries", tries).Warn("a container still writes the volume here, but this node cannot take it back yet; retrying every second")
			}
		}
	})
}

// spawn runs f in a goroutine Close waits for, unless the store is closed.
func (s *Store) spawn(f func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		f()
	}()
}

// treeStamp is the newest change time below dir (a cheap "was anything
// written" check).
func treeStamp(dir string) time.Time {
	var newest time.Time
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if fi, err := d.Info(); err == nil {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				if t := time.Unix(st.Ctim.Sec, st.Ctim.Nsec); t.After(newest) {
					newest = t
				}
			}
		}
		return nil
	})
	return newest
}

// withDefault fills in the store's default replication.
func (s *Store) withDefault(vo VolumeOptions) VolumeOptions {
	if vo.Replication == "" {
		vo.Replication = ReplicationFiles
		if s.opts.Snapshots != nil && len(vo.Share) == 0 {
			vo.Replication = ReplicationSnapshots
		}
	}
	return vo
}

// Mount adds id to the volume's users and returns its mount point. The
// first user of a volume on this node waits, bounded, until the replica has
// caught up with its peers; a replica that cannot catch up in time fails the
// mount with an error saying how far behind it is, so Swarm retries it.
func (s *Store) Mount(name, id string) (string, error) {
	deadline := time.Now().Add(s.callTimeout)
	e, err := s.lookup(name)
	if errors.Is(err, ErrNotFound) {
		// Docker found the volume in the cluster's list and mounts it
		// here without a Create: adopt the cluster's volume.
		if _, ok := s.clusterVolume(name); ok {
			if err = s.Create(name, nil); err == nil {
				e, err = s.lookup(name)
			}
		}
	}
	if err != nil {
		return "", err
	}
	if !lockBy(&e.op, deadline) {
		return "", fmt.Errorf("mount volume %s: another Mount, Unmount or Remove of it still runs after %s; retry", name, s.callTimeout)
	}
	release := false
	defer func() {
		e.op.Unlock()
		if release && s.snapshots(e) {
			s.releaseAbandoned(e)
		}
	}()
	for _, m := range e.rec.MountIDs {
		if m == id {
			return s.MountPoint(name), s.ensureMounted(name)
		}
	}
	if s.snapshots(e) && len(e.rec.MountIDs) > 0 && !s.opts.Snapshots.Writing(name) {
		// Users recorded while this node is not writing the volume are
		// dead containers (an engine crash skips their Unmount): left in
		// place they would keep the last real user's Unmount from
		// releasing the volume.
		s.dropGoneUsers(e, "a Mount while this node does not write the volume")
	}
	// fail undoes what this Mount did when it is the volume's first user
	// here: nothing of a Mount that failed, or that Docker gave up on,
	// may stay (a recorded user keeps `docker volume rm` saying "in use"
	// for good, a mount or a writer lease keeps the volume here).
	fail := func(err error) (string, error) {
		if len(e.rec.MountIDs) == 0 {
			s.opts.Mounter.Unmount(s.MountPoint(name))
			os.Remove(s.MountPoint(name))
			s.setInUse(name, false)
			release = true // once e.op is free (see the deferred call)
		}
		return "", err
	}
	if len(e.rec.MountIDs) == 0 {
		// Published before the wait: a removal everywhere made meanwhile
		// on another node must not wipe what this Mount is about to present.
		s.setInUse(name, true)
		timeout := s.opts.MountTimeout
		if e.opts.MountTimeout > 0 {
			timeout = e.opts.MountTimeout
		}
		timeout = min(timeout, time.Until(deadline))
		ctx, cancel := context.WithTimeout(s.ctx, timeout)
		var err error
		switch {
		case s.snapshots(e):
			_, err = s.opts.Snapshots.Acquire(ctx, name, e.initRoot)
		case s.opts.Replicator != nil:
			err = s.opts.Replicator.WaitSynced(ctx, name)
		}
		cancel()
		if err != nil {
			return fail(fmt.Errorf("mount volume %s: %w (waited %s; retry, or raise MOUNT_TIMEOUT / -o mount-timeout)", name, err, timeout.Round(time.Millisecond)))
		}
	}
	if err := s.ensureMounted(name); err != nil {
		return fail(err)
	}
	if time.Now().After(deadline) {
		return fail(fmt.Errorf("mount volume %s: took longer than %s, after which Docker may have given up on it: undone; retry", name, s.callTimeout))
	}
	s.mu.Lock()
	e.rec.MountIDs = append(e.rec.MountIDs, id)
	s.mu.Unlock()
	if err := s.saveLocked(e); err != nil {
		s.mu.Lock()
		e.rec.MountIDs = e.rec.MountIDs[:len(e.rec.MountIDs)-1]
		s.mu.Unlock()
		return fail(fmt.Errorf("mount volume %s: %w", name, err))
	}
	return s.MountPoint(name), nil
}

// lockBy takes mu, waiting at most until deadline.
func lockBy(mu *sync.Mutex, deadline time.Time) bool {
	for !mu.TryLock() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}

// releaseAbandoned lets go of a snapshot volume a failed Mount may have
// acquired, unless a later Mount uses it by now. It runs after the Mount
// answered (Docker must not wait for the last generation to ship).
func (s *Store) releaseAbandoned(e *entry) {
	name := e.rec.Name
	if !s.opts.Snapshots.Writing(name) {
		return
	}
	s.spawn(func() {
		e.op.Lock()
		defer e.op.Unlock()
		s.mu.RLock()
		users := len(e.rec.MountIDs)
		s.mu.RUnlock()
		if users > 0 {
			return
		}
		// Not cut short by Close, which waits for it: the last
		// generation ships (bounded) before the plugin stops.
		ctx, cancel := context.WithTimeout(context.Background(), s.opts.FlushTimeout)
		defer cancel()
		if err := s.opts.Snapshots.Release(ctx, name); err != nil {
			s.log.WithField("volume", name).WithError(err).Warn("a failed mount: letting the volume go")
		}
	})
}

// ensureMounted bind-mounts the data directory on the mount point unless it
// is already there.
func (s *Store) ensureMounted(name string) error {
	mp := s.MountPoint(name)
	if err := os.MkdirAll(mp, 0o755); err != nil {
		return fmt.Errorf("mount volume %s: %w", name, err)
	}
	ok, err := s.opts.Mounter.Mounted(mp)
	if err != nil {
		return fmt.Errorf("mount volume %s: %w", name, err)
	}
	if ok {
		return nil
	}
	src := s.DataDir(name)
	s.mu.RLock()
	if e := s.vols[name]; e != nil {
		src = s.dataDirOf(e)
	}
	s.mu.RUnlock()
	fd, err := s.openMountSource(name, src)
	if err != nil {
		return fmt.Errorf("mount volume %s: %w", name, err)
	}
	unix.Close(fd)
	// The mounter checks again that what it mounted is the directory
	// named src, not a symlink planted since (see BindMounter.Mount).
	if err := s.opts.Mounter.Mount(src, mp); err != nil {
		return fmt.Errorf("mount volume %s: %w", name, err)
	}
	return nil
}

// openMountSource opens the directory to bind-mount for volume name,
// following no symlink below the volume's own directory: a files
// volume's data directory lies inside the replicated folder, so another
// device sharing it can replace it (or a parent) by a symlink to another
// volume or to the node's key.
func (s *Store) openMountSource(name, src string) (int, error) {
	base := s.volumeDir(name)
	rel, err := filepath.Rel(base, src)
	if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		base, rel = filepath.Dir(src), filepath.Base(src)
	}
	fd, err := openDirBeneath(base, rel)
	if err != nil {
		return -1, fmt.Errorf("%w: %s is not a plain directory below %s (%v): a device sharing the volume may have replaced it by a symlink; refusing to mount it (inspect it, then remove the volume here and let it sync again)", ErrUnsafePath, src, base, err)
	}
	return fd, nil
}

// Unmount removes id from the volume's users. When the last user goes, the
// replica is flushed — scanned at once and waited on, bounded, until a peer
// holds every local change — and the mount point is removed. A flush that
// times out is logged, not returned: the container is already gone and the
// replica keeps syncing in the background.
func (s *Store) Unmount(name, id string) error {
	e, err := s.lookup(name)
	if err != nil {
		return err
	}
	e.op.Lock()
	defer e.op.Unlock()
	s.mu.Lock()
	ids := e.rec.MountIDs[:0:0]
	for _, m := range e.rec.MountIDs {
		if m != id {
			ids = append(ids, m)
		}
	}
	changed := len(ids) != len(e.rec.MountIDs)
	e.rec.MountIDs = ids
	last := len(ids) == 0
	s.mu.Unlock()
	if !changed {
		return nil // unknown id: Docker may retry an Unmount; answer it
	}
	if err := s.saveLocked(e); err != nil {
		return fmt.Errorf("unmount volume %s: %w", name, err)
	}
	if !last {
		return nil
	}
	// The container is gone: take the mount away first, so nothing writes
	// while the last changes are shipped.
	if err := s.opts.Mounter.Unmount(s.MountPoint(name)); err != nil {
		return fmt.Errorf("unmount volume %s: %w", name, err)
	}
	os.Remove(s.MountPoint(name))
	ctx, cancel := context.WithTimeout(s.ctx, s.opts.FlushTimeout)
	defer cancel()
	var ferr error
	switch {
	case s.snapshots(e):
		ferr = s.opts.Snapshots.Release(ctx, name)
	case s.opts.Replicator != nil:
		ferr = s.opts.Replicator.Flush(ctx, name)
	}
	if ferr != nil {
		s.log.WithField("volume", name).WithError(ferr).Warn("last unmount: not every change reached a peer in time")
	}
	s.setInUse(name, false)
	return nil
}

// setInUse tells the replicator whether a container uses the volume here.
func (s *Store) setInUse(name string, used bool) {
	if r := s.opts.Replicator; r != nil {
		r.SetInUse(name, used)
	}
}

// dropGoneUsers forgets e's recorded users, containers an engine crash took
// without their Unmount, on disk too. The caller holds e.op.
func (s *Store) dropGoneUsers(e *entry, why string) {
	log := s.log.WithField("volume", e.rec.Name)
	s.mu.Lock()
	log = log.WithField("stale", e.rec.MountIDs)
	e.rec.MountIDs = nil
	s.mu.Unlock()
	log.Info("dropping users that are gone: " + why)
	if err := s.saveLocked(e); err != nil {
		log.WithError(err).Warn("cannot record that the users are gone")
	}
}

// checkRemoveEverywhere refuses to delete e on every node while a
// container on another node uses it: the node's published use, and for a
// snapshot volume a live writer lease anywhere (which a crashed or
// restarted node's stale record could not show). When the peers cannot be
// asked, it refuses too: deleting blind could wipe a running database.
func (s *Store) checkRemoveEverywhere(ctx context.Context, e *entry) error {
	name := e.rec.Name
	if users := s.opts.Replicator.UsedBy(name); len(users) > 0 {
		return fmt.Errorf("%w: %s is used by a container on %s, and remove=everywhere would delete it under it: stop it there first (nothing was deleted)", ErrInUse, name, strings.Join(users, ", "))
	}
	if !s.snapshots(e) {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, holderWait)
	defer cancel()
	holder, err := s.opts.Snapshots.Holder(ctx, name)
	if holder != "" {
		return fmt.Errorf("%w: %s is written by a container on %s, and remove=everywhere would delete it under it: stop it there first (nothing was deleted)", ErrInUse, name, holder)
	}
	if err != nil {
		return fmt.Errorf("%w: %s: cannot tell whether another node writes it (%v); retry when most nodes are reachable (nothing was deleted)", ErrInUse, name, err)
	}
	return nil
}

// checkReplicated refuses to drop this node's replica of e while it holds
// changes no other node has (a last Unmount whose flush reached no peer):
// they would be lost for good.
func (s *Store) checkReplicated(ctx context.Context, e *entry) error {
	name := e.rec.Name
	ctx, cancel := context.WithTimeout(ctx, holderWait)
	defer cancel()
	var err error
	if s.snapshots(e) {
		err = s.opts.Snapshots.Replicated(ctx, name)
	} else {
		err = s.opts.Replicator.Flush(ctx, name)
		if !errors.Is(err, ErrNotReplicated) {
			err = nil // not replicated here at all, or stopping: nothing to lose to a peer
		}
	}
	if err != nil {
		return fmt.Errorf("%w: %s holds changes no other node has yet (%v): retry once a peer is reachable (nothing was deleted)", ErrInUse, name, err)
	}
	return nil
}

// holderWait bounds Remove's question to the peers about a writer.
const holderWait = 3 * time.Second

// Remove deletes this node's replica of a volume (or, for volumes created
// with remove=everywhere, asks the cluster to delete it everywhere). A
// volume that still has users here is refused.
func (s *Store) Remove(name string) error {
	e, err := s.lookup(name)
	if errors.Is(err, ErrNotFound) {
		if _, ok := s.clusterVolume(name); ok {
			return nil // no replica here: nothing local to drop
		}
	}
	if err != nil {
		return err
	}
	ctx, cancel := s.callContext()
	defer cancel()
	e.op.Lock()
	defer e.op.Unlock()
	// Docker calls Remove only when no container on this node, running or
	// not, refers to the volume. Users recorded before this plugin started
	// are then containers an engine crash took without their Unmount: they
	// are dropped once nothing else refuses the removal (they kept the
	// volume "in use" here for good). A user mounted since is a live one:
	// refused.
	s.mu.RLock()
	live := 0
	for _, id := range e.rec.MountIDs {
		if !slices.Contains(e.restored, id) {
			live++
		}
	}
	stale := len(e.rec.MountIDs) > 0 && live == 0
	s.mu.RUnlock()
	if live > 0 {
		return fmt.Errorf("%w: %s is mounted by %d container(s) on this node", ErrInUse, name, live)
	}
	// The checks ask about the other nodes only: this node's stale users
	// and its in-use flag do not count, so a refusal changes nothing here.
	if s.opts.Replicator != nil && e.opts.Remove == RemoveEverywhere {
		if err := s.checkRemoveEverywhere(ctx, e); err != nil {
			return err
		}
	}
	if s.opts.Replicator != nil && e.opts.Remove != RemoveEverywhere {
		if err := s.checkReplicated(ctx, e); err != nil {
			return err
		}
	}
	if stale {
		s.dropGoneUsers(e, "removing a volume whose recorded users Docker no longer knows (an engine crash skipped their Unmount)")
		s.opts.Mounter.Unmount(s.MountPoint(name))
		s.setInUse(name, false)
	}
	if r := s.opts.Replicator; r != nil {
		if err := r.RemoveVolume(ctx, name, e.opts.Remove == RemoveEverywhere); err != nil {
			return fmt.Errorf("remove volume %s: %w", name, err)
		}
	}
	if err := s.opts.Mounter.Unmount(s.MountPoint(name)); err != nil {
		return fmt.Errorf("remove volume %s: %w", name, err)
	}
	if s.snapshots(e) {
		if err := s.opts.Snapshots.Remove(name); err != nil {
			return fmt.Errorf("remove volume %s: %w", name, err)
		}
	}
	os.Remove(s.MountPoint(name))
	// Rename first so that a crash half-way never leaves a record pointing
	// at half a replica.
	trash := filepath.Join(s.volumesDir(), ".removed-"+name)
	os.RemoveAll(trash)
	if err := os.Rename(s.volumeDir(name), trash); err != nil {
		return fmt.Errorf("remove volume %s: %w", name, err)
	}
	s.mu.Lock()
	delete(s.vols, name)
	s.mu.Unlock()
	if err := os.RemoveAll(trash); err != nil {
		s.log.WithField("volume", name).WithError(err).Warn("replica removed from the registry but not all files could be deleted")
	}
	s.log.WithField("volume", name).WithField("everywhere", e.opts.Remove == RemoveEverywhere).Info("volume removed")
	return nil
}

// sweepEvery is how often Run sweeps volumes deleted elsewhere.
const sweepEvery = 5 * time.Second

// Run calls SweepDeleted every few seconds until ctx is done or the store
// closes; it returns nil then.
func (s *Store) Run(ctx context.Context) error {
	t := time.NewTicker(sweepEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.ctx.Done():
			return nil
		case <-t.C:
			s.SweepDeleted()
		}
	}
}

// SweepDeleted drops this node's copy of every snapshot volume the cluster
// deleted (remove=everywhere on another node); volumes replicated file by
// file are wiped by the replicator itself. A volume still mounted here is
// left alone until its last user goes.
func (s *Store) SweepDeleted() {
	if s.opts.Replicator == nil || s.opts.Snapshots == nil {
		return
	}
	for _, cv := range s.opts.Replicator.Volumes() {
		if !cv.Deleted || cv.Options["replication"] != string(ReplicationSnapshots) || ValidateName(cv.Name) != nil {
			continue
		}
		if _, err := os.Stat(s.volumeDir(cv.Name)); err != nil {
			continue
		}
		log := s.log.WithField("volume", cv.Name)
		s.mu.Lock()
		e := s.vols[cv.Name]
		if e != nil && len(e.rec.MountIDs) > 0 {
			s.mu.Unlock()
			continue
		}
		delete(s.vols, cv.Name)
		s.mu.Unlock()
		if err := s.opts.Snapshots.Remove(cv.Name); err != nil {
			log.WithError(err).Warn("cannot delete the generations of a volume removed everywhere")
			continue
		}
		if err := os.RemoveAll(s.volumeDir(cv.Name)); err != nil {
			log.WithError(err).Warn("cannot delete a volume removed everywhere")
			continue
		}
		log.Info("volume removed everywhere: local copy deleted")
	}
}

// SnapshotVolumes lists the snapshot volumes the cluster knows.
func (s *Store) SnapshotVolumes() []string {
	if s.opts.Replicator == nil {
		return nil
	}
	var out []string
	for _, cv := range s.opts.Replicator.Volumes() {
		if !cv.Deleted && cv.Options["replication"] == string(ReplicationSnapshots) {
			out = append(out, cv.Name)
		}
	}
	return out
}

// Get describes one volume: a local one, or one the cluster knows that has
// no replica here yet. It answers from local state only.
func (s *Store) Get(name string) (Volume, error) {
	if err := ValidateName(name); err != nil {
		return Volume{}, err
	}
	s.mu.RLock()
	e := s.vols[name]
	var v Volume
	if e != nil {
		v = s.describeLocked(e)
	}
	s.mu.RUnlock()
	if e == nil {
		cv, ok := s.clusterVolume(name)
		if !ok {
			return Volume{}, fmt.Errorf("%w: %s", ErrNotFound, name)
		}
		v = Volume{Name: name, CreatedAt: cv.CreatedAt, Options: cv.Options,
			Status: map[string]string{"replica": "kept in sync; not yet used by Docker on this node"}}
	}
	status := map[string]string(nil)
	switch {
	case v.Options["replication"] == string(ReplicationSnapshots) && s.opts.Snapshots != nil:
		status = s.opts.Snapshots.Status(name)
	case s.opts.Replicator != nil:
		status = s.opts.Replicator.Status(name)
	}
	for k, val := range status {
		v.Status[k] = val
	}
	if s.opts.Replicator != nil {
		if users := s.opts.Replicator.UsedBy(name); len(users) > 0 {
			v.Status["usedOn"] = strings.Join(users, ", ")
		}
	}
	return v, nil
}

func (s *Store) describeLocked(e *entry) Volume {
	v := Volume{
		Name:      e.rec.Name,
		CreatedAt: e.rec.CreatedAt,
		Local:     true,
		Options:   e.rec.Options,
		Mounts:    len(e.rec.MountIDs),
		Status: map[string]string{
			"replica": s.dataDirOf(e),
			"mounts":  fmt.Sprint(len(e.rec.MountIDs)),
		},
	}
	if v.Mounts > 0 {
		v.Mountpoint = s.MountPoint(e.rec.Name)
	}
	if s.opts.Replicator == nil {
		v.Status["sync"] = "local only (no CLUSTER_KEY)"
	}
	return v
}

// List describes every volume this node or the cluster knows, sorted by name.
func (s *Store) List() []Volume {
	s.mu.RLock()
	out := make([]Volume, 0, len(s.vols))
	seen := make(map[string]bool, len(s.vols))
	for _, e := range s.vols {
		out = append(out, s.describeLocked(e))
		seen[e.rec.Name] = true
	}
	s.mu.RUnlock()
	if r := s.opts.Replicator; r != nil {
		for _, cv := range r.Volumes() {
			if !cv.Deleted && !seen[cv.Name] && ValidateName(cv.Name) == nil {
				out = append(out, Volume{Name: cv.Name, CreatedAt: cv.CreatedAt, Options: cv.Options})
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Path returns the volume's mount point while it is mounted here, else "".
func (s *Store) Path(name string) (string, error) {
	e, err := s.lookup(name)
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			if _, ok := s.clusterVolume(name); ok {
				return "", nil
			}
		}
		return "", err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if len(e.rec.MountIDs) == 0 {
		return "", nil
	}
	return s.MountPoint(name), nil
}

// Close stops accepting calls, ends the waits of calls still running (they
// fail and undo what they did, as on a timeout), makes Run return, and
// waits for the store's goroutines. It is idempotent. Mounts stay in place:
// containers may still use them, and New restores the store's view of them.
func (s *Store) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.cancel()
	s.wg.Wait()
	return nil
}
