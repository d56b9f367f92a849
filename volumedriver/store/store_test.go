package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
)

// fakeMounter records mounts in memory instead of calling mount(2).
type fakeMounter struct {
	mu     sync.Mutex
	mounts map[string]string // dst → src
	calls  int
}

func (f *fakeMounter) Mount(src, dst string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.mounts == nil {
		f.mounts = map[string]string{}
	}
	if _, ok := f.mounts[dst]; ok {
		return fmt.Errorf("double mount on %s", dst)
	}
	f.mounts[dst] = src
	f.calls++
	return nil
}

func (f *fakeMounter) Unmount(dst string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.mounts, dst)
	return nil
}

func (f *fakeMounter) Mounted(dst string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.mounts[dst]
	return ok, nil
}

// fakeReplicator stands in for syncengine: it records calls and lets a test
// decide how long WaitSynced and Flush take.
type fakeReplicator struct {
	mu         sync.Mutex
	added      map[string]string
	removed    map[string]bool // name → everywhere
	waits      int
	flushes    int
	behind     bool        // WaitSynced blocks until ctx ends, then fails
	entered    chan string // if set, WaitSynced sends the volume's name on entry
	cluster    []ClusterVolume
	statuses   map[string]string
	registered []string            // snapshot volumes registered
	inUse      map[string]bool     // SetInUse as called
	usedBy     map[string][]string // what UsedBy answers
	flushErr   error               // what Flush fails with
	flushBlock chan struct{}       // if set, Flush waits for it (or ctx)
	hang       bool                // AddVolume and RemoveVolume wait for their ctx to end
}

// configCall stands for the engine's configuration change: it refuses a
// ctx without a deadline, and waits for ctx to end when f.hang.
func (f *fakeReplicator) configCall(ctx context.Context) error {
	f.mu.Lock()
	hang := f.hang
	f.mu.Unlock()
	if _, ok := ctx.Deadline(); !ok {
		return errors.New("a configuration change without a deadline")
	}
	if hang {
		<-ctx.Done()
	}
	return ctx.Err()
}

func (f *fakeReplicator) SetInUse(name string, used bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.inUse == nil {
		f.inUse = map[string]bool{}
	}
	f.inUse[name] = used
}

func (f *fakeReplicator) UsedBy(name string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.usedBy[name]
}

func newFakeReplicator() *fakeReplicator {
	return &fakeReplicator{added: map[string]string{}, removed: map[string]bool{}}
}

func (f *fakeReplicator) AddVolume(ctx context.Context, name, dir string, share []string, options map[string]string) error {
	if err := f.configCall(ctx); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.added[name] = dir
	return nil
}

func (f *fakeReplicator) RegisterVolume(_ context.Context, name string, options map[string]string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.registered = append(f.registered, name)
	return nil
}

func (f *fakeReplicator) RemoveVolume(ctx context.Context, name string, everywhere bool) error {
	if err := f.configCall(ctx); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.removed[name] = everywhere
	return nil
}

var errBehind = errors.New("3 files (12 KiB) behind")

func (f *fakeReplicator) WaitSynced(ctx context.Context, name string) error {
	f.mu.Lock()
	f.waits++
	behind, entered := f.behind, f.entered
	f.mu.Unlock()
	if entered != nil {
		entered <- name
	}
	if behind {
		<-ctx.Done()
		return errBehind
	}
	return nil
}

func (f *fakeReplicator) Flush(ctx context.Context, name string) error {
	f.mu.Lock()
	f.flushes++
	err, block := f.flushErr, f.flushBlock
	f.mu.Unlock()
	if block != nil {
		select {
		case <-block:
		case <-ctx.Done():
		}
	}
	return err
}

func (f *fakeReplicator) Status(name string) map[string]string {
	return map[string]string{"peers": "2 connected", "state": "in sync"}
}

func (f *fakeReplicator) Volumes() []ClusterVolume {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]ClusterVolume(nil), f.cluster...)
}

func quietLog() *logrus.Entry {
	l := logrus.New()
	l.SetOutput(os.Stderr)
	l.SetLevel(logrus.ErrorLevel)
	return logrus.NewEntry(l)
}

func newTestStore(t *testing.T, m Mounter, r Replicator) (*Store, string) {
	t.Helper()
	dir := t.TempDir()
	opts := Options{Root: filepath.Join(dir, "state"), MountRoot: filepath.Join(dir, "mnt"), Mounter: m,
		MountTimeout: 200 * time.Millisecond, Logger: quietLog()}
	if r != nil {
		opts.Replicator = r
	}
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return s, dir
}

func TestCreateIsIdempotentAndValidates(t *testing.T) {
	t.Parallel()
	s, dir := newTestStore(t, &fakeMounter{}, nil)
	if err := s.Create("web", map[string]string{"mode": "0700"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Create("web", map[string]string{"mode": "0700"}); err != nil {
		t.Fatalf("second Create with the same options: %v", err)
	}
	if err := s.Create("web", nil); err != nil {
		t.Fatalf("Create without options of an existing volume (Swarm does this): %v", err)
	}
	if err := s.Create("web", map[string]string{"mode": "0755"}); !errors.Is(err, ErrInvalidOption) {
		t.Fatalf("Create with other options = %v, want ErrInvalidOption", err)
	}
	fi, err := os.Stat(s.DataDir("web"))
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("data dir: %v %v", fi, err)
	}
	if err := s.Create("../evil", nil); !errors.Is(err, ErrInvalidName) {
		t.Fatalf("Create(../evil) = %v", err)
	}
	if err := s.Create("ok", map[string]string{"bogus": "1"}); !errors.Is(err, ErrInvalidOption) {
		t.Fatalf("Create with bad option = %v", err)
	}
	if _, err := os.Stat(s.volumeDir("ok")); !os.IsNotExist(err) {
		t.Fatalf("a refused Create left %s behind", s.volumeDir("ok"))
	}
	// Nothing outside the state and mount directories was touched.
	ents, _ := os.ReadDir(dir)
	if len(ents) != 2 {
		t.Fatalf("test dir holds %d entries, want state and mnt only", len(ents))
	}
}

func TestMountRefcountAndPersistence(t *testing.T) {
	t.Parallel()
	m := &fakeMounter{}
	s, _ := newTestStore(t, m, nil)
	if err := s.Create("db", nil); err != nil {
		t.Fatal(err)
	}
	p1, err := s.Mount("db", "c1")
	if err != nil {
		t.Fatal(err)
	}
	p2, err := s.Mount("db", "c2")
	if err != nil || p1 != p2 || p1 != s.MountPoint("db") {
		t.Fatalf("second mount: %q %q %v", p1, p2, err)
	}
	if _, err := s.Mount("db", "c1"); err != nil { // Docker may repeat a Mount
		t.Fatal(err)
	}
	if m.calls != 1 {
		t.Fatalf("%d bind mounts for one volume, want 1", m.calls)
	}
	if p, _ := s.Path("db"); p != p1 {
		t.Fatalf("Path = %q while mounted", p)
	}
	if err := s.Remove("db"); !errors.Is(err, ErrInUse) {
		t.Fatalf("Remove of a mounted volume = %v, want ErrInUse", err)
	}

	// A restarted plugin finds the users again and restores the mount.
	m2 := &fakeMounter{}
	s2, err := New(Options{Root: s.opts.Root, MountRoot: s.opts.MountRoot, Mounter: m2, Logger: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	if ok, _ := m2.Mounted(p1); !ok {
		t.Fatal("restart did not restore the mount of a volume in use")
	}
	v, err := s2.Get("db")
	if err != nil || v.Mounts != 2 {
		t.Fatalf("after restart Get = %+v, %v; want 2 mounts", v, err)
	}

	if err := s2.Unmount("db", "c1"); err != nil {
		t.Fatal(err)
	}
	if ok, _ := m2.Mounted(p1); !ok {
		t.Fatal("unmounted while a user remains")
	}
	if err := s2.Unmount("db", "c1"); err != nil { // repeated: harmless
		t.Fatal(err)
	}
	if err := s2.Unmount("db", "c2"); err != nil {
		t.Fatal(err)
	}
	if ok, _ := m2.Mounted(p1); ok {
		t.Fatal("still mounted after the last user left")
	}
	if p, _ := s2.Path("db"); p != "" {
		t.Fatalf("Path = %q after last unmount", p)
	}
	if err := s2.Remove("db"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(s2.volumeDir("db")); !os.IsNotExist(err) {
		t.Fatal("Remove left the replica behind")
	}
	if _, err := s2.Get("db"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get after Remove = %v", err)
	}
}

func TestDataSurvivesRestart(t *testing.T) {
	t.Parallel()
	s, _ := newTestStore(t, &fakeMounter{}, nil)
	if err := s.Create("keep", map[string]string{"uid": fmt.Sprint(os.Getuid())}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(s.DataDir("keep"), "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	s2, err := New(Options{Root: s.opts.Root, MountRoot: s.opts.MountRoot, Mounter: &fakeMounter{}, Logger: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	vols := s2.List()
	if len(vols) != 1 || vols[0].Name != "keep" || vols[0].Options["uid"] == "" {
		t.Fatalf("List after restart = %+v", vols)
	}
	if b, err := os.ReadFile(filepath.Join(s2.DataDir("keep"), "f")); err != nil || string(b) != "x" {
		t.Fatalf("data after restart: %q %v", b, err)
	}
}

func TestReplicatorIsConsulted(t *testing.T) {
	t.Parallel()
	r := newFakeReplicator()
	s, _ := newTestStore(t, &fakeMounter{}, r)
	if err := s.Create("v", map[string]string{"remove": "everywhere"}); err != nil {
		t.Fatal(err)
	}
	if r.added["v"] != s.ReplicaDir("v") {
		t.Fatalf("AddVolume got dir %q", r.added["v"])
	}
	if _, err := s.Mount("v", "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Mount("v", "b"); err != nil {
		t.Fatal(err)
	}
	if r.waits != 1 {
		t.Fatalf("WaitSynced called %d times, want once for the first user", r.waits)
	}
	s.Unmount("v", "a")
	if r.flushes != 0 {
		t.Fatal("flushed while a user remains")
	}
	s.Unmount("v", "b")
	if r.flushes != 1 {
		t.Fatalf("Flush called %d times after the last user left, want 1", r.flushes)
	}
	v, _ := s.Get("v")
	if v.Status["peers"] != "2 connected" {
		t.Fatalf("status not merged: %v", v.Status)
	}
	if err := s.Remove("v"); err != nil {
		t.Fatal(err)
	}
	if ev, ok := r.removed["v"]; !ok || !ev {
		t.Fatalf("RemoveVolume: called=%v everywhere=%v", ok, ev)
	}
}

func TestMountFailsWhenBehindAndOthersStayResponsive(t *testing.T) {
	t.Parallel()
	r := newFakeReplicator()
	r.behind = true
	r.entered = make(chan string, 1)
	s, _ := newTestStore(t, &fakeMounter{}, r)
	if err := s.Create("slow", nil); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	start := time.Now()
	go func() { _, err := s.Mount("slow", "c"); done <- err }()
	// While Mount waits on peers, Get/List/Path answer at once.
	select {
	case <-r.entered:
	case err := <-done:
		t.Fatalf("Mount returned without waiting on peers: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("Mount never called WaitSynced")
	}
	t0 := time.Now()
	if _, err := s.Get("slow"); err != nil {
		t.Fatal(err)
	}
	s.List()
	s.Path("slow")
	if d := time.Since(t0); d > 50*time.Millisecond {
		t.Fatalf("Get/List/Path took %s while a Mount waited", d)
	}
	err := <-done
	if err == nil || !errors.Is(err, errBehind) || !strings.Contains(err.Error(), "MOUNT_TIMEOUT") {
		t.Fatalf("Mount of a stale replica = %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Mount took %s, bound is 200ms", d)
	}
	if v, _ := s.Get("slow"); v.Mounts != 0 {
		t.Fatal("a failed Mount counted a user")
	}
}

func TestClusterVolumesAreListed(t *testing.T) {
	t.Parallel()
	r := newFakeReplicator()
	created := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	r.cluster = []ClusterVolume{
		{Name: "remote", Options: map[string]string{"mode": "0700"}, CreatedAt: created},
		{Name: "gone", Deleted: true},
		{Name: "../bad"},
	}
	s, _ := newTestStore(t, &fakeMounter{}, r)
	s.Create("local", nil)
	var names []string
	for _, v := range s.List() {
		names = append(names, v.Name)
	}
	if strings.Join(names, ",") != "local,remote" {
		t.Fatalf("List = %v", names)
	}
	v, err := s.Get("remote")
	if err != nil || v.Local || !v.CreatedAt.Equal(created) {
		t.Fatalf("Get(remote) = %+v, %v", v, err)
	}
	// Mounting it without a Create (Docker saw it in List) adopts it.
	if _, err := s.Mount("remote", "c1"); err != nil {
		t.Fatalf("Mount of a cluster volume: %v", err)
	}
	s.Unmount("remote", "c1")
	// Creating it here takes the cluster's options and creation time.
	if err := s.Create("remote", nil); err != nil {
		t.Fatal(err)
	}
	v, _ = s.Get("remote")
	if !v.Local || v.Options["mode"] != "0700" || !v.CreatedAt.Equal(created) {
		t.Fatalf("local replica of a cluster volume = %+v", v)
	}
}

// TestCallsEndByTheirDeadline: Create and Remove give the replicator a
// deadline below Docker's, answer by it when the engine does not, and
// leave nothing of a Create that failed; Close ends a Mount's wait and
// makes Run return.
func TestCallsEndByTheirDeadline(t *testing.T) {
	t.Parallel()
	r := newFakeReplicator()
	s, dir := newTestStore(t, &fakeMounter{}, r)
	s.callTimeout = 300 * time.Millisecond
	if err := s.Create("kept", nil); err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	r.hang = true
	r.mu.Unlock()
	for what, call := range map[string]func() error{
		"Create": func() error { return s.Create("new", nil) },
		"Remove": func() error { return s.Remove("kept") },
	} {
		start := time.Now()
		err := call()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("%s while the engine hangs = %v, want context.DeadlineExceeded", what, err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("%s took %s, its deadline is 300ms", what, d)
		}
	}
	if _, err := s.Get("new"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a Create that timed out left the volume: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "state", "volumes", "new")); !os.IsNotExist(err) {
		t.Fatalf("a Create that timed out left its directory: %v", err)
	}
	if _, err := s.Get("kept"); err != nil {
		t.Fatalf("a Remove that timed out dropped the volume: %v", err)
	}

	r.mu.Lock()
	r.hang, r.behind = false, true
	r.mu.Unlock()
	s.opts.MountTimeout = time.Minute
	s.callTimeout = time.Minute
	ran := make(chan error, 1)
	go func() { ran <- s.Run(context.Background()) }()
	mounted := make(chan error, 1)
	r.entered = make(chan string, 1)
	go func() { _, err := s.Mount("kept", "c"); mounted <- err }()
	<-r.entered
	start := time.Now()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-mounted; err == nil {
		t.Fatal("a Mount cut short by Close succeeded")
	}
	if err := <-ran; err != nil {
		t.Fatalf("Run after Close = %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Close took %s to end a Mount's wait and Run", d)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close = %v", err)
	}
}

// TestRemoveAfterEngineCrash: users recorded before the plugin started are
// containers an engine crash took without their Unmount. Docker calls
// Remove only once no container refers to the volume, so Remove drops
// them and removes the volume (it said "mounted by 1 container(s)" for
// good); a user mounted since the start is live and still refused. A
// removal refused for another reason changes nothing, on disk or here.
func TestRemoveAfterEngineCrash(t *testing.T) {
	t.Parallel()
	m := &fakeMounter{}
	r := newFakeReplicator()
	s, _ := newTestStore(t, m, r)
	for _, v := range []string{"blog", "mail"} {
		if err := s.Create(v, nil); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Mount(v, "dead-"+v); err != nil {
			t.Fatal(err)
		}
	}
	// The engine is killed: no Unmount; the plugin starts again with it.
	m2 := &fakeMounter{}
	s2, err := New(Options{Root: s.opts.Root, MountRoot: s.opts.MountRoot, Mounter: m2, Replicator: r, Logger: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s2.Mount("mail", "live"); err != nil {
		t.Fatal(err)
	}
	if err := s2.Remove("mail"); !errors.Is(err, ErrInUse) {
		t.Fatalf("Remove with a user mounted since the start = %v, want ErrInUse", err)
	}
	// Its last changes reached no peer: refused, and the dead user, the
	// record and the mount stay as they were.
	s2.ensureMounted("blog")
	r.mu.Lock()
	r.flushErr = ErrNotReplicated
	r.mu.Unlock()
	if err := s2.Remove("blog"); !errors.Is(err, ErrInUse) {
		t.Fatalf("Remove of changes no peer has = %v, want ErrInUse", err)
	}
	if b, err := os.ReadFile(s2.recordPath("blog")); err != nil || !strings.Contains(string(b), "dead-blog") {
		t.Fatalf("a refused Remove changed the record: %v\n%s", err, b)
	}
	if ok, _ := m2.Mounted(s2.MountPoint("blog")); !ok {
		t.Fatal("a refused Remove took the mount away")
	}
	r.mu.Lock()
	r.flushErr = nil
	r.mu.Unlock()
	if err := s2.Remove("blog"); err != nil {
		t.Fatalf("Remove after the crash took its only user: %v", err)
	}
	if _, err := os.Stat(s2.volumeDir("blog")); !os.IsNotExist(err) {
		t.Fatal("Remove left the replica behind")
	}
	if ok, _ := m2.Mounted(s2.MountPoint("blog")); ok {
		t.Fatal("the dead user's mount is still there")
	}
}
