package syncengine

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/syncthing/syncthing/lib/config"
	"github.com/syncthing/syncthing/lib/protocol"
)

// triggerReconcile asks the reconcile loop for a pass; it never blocks.
func (e *Engine) triggerReconcile() {
	select {
	case e.reconcileNow <- struct{}{}:
	default:
	}
}

// reconcileLoop rebuilds the wanted Syncthing configuration from the
// registry and membership state whenever something changes, and at least
// every second.
func (e *Engine) reconcileLoop() {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	clean := time.NewTicker(time.Minute)
	defer clean.Stop()
	for {
		e.reconcile()
		select {
		case <-e.ctx.Done():
			return
		case <-e.reconcileNow:
		case <-t.C:
		case <-clean.C:
			e.cleanRegistryConflicts()
		}
	}
}

// reconcileWait asks the reconcile loop for a pass and waits until one that
// started after the call has finished, or ctx ends, or the engine stops.
// The pass is the loop's (the engine owns it): nothing runs on for a
// caller that gave up.
func (e *Engine) reconcileWait(ctx context.Context) error {
	e.passMu.Lock()
	want := e.passStarted + 1
	e.passMu.Unlock()
	e.triggerReconcile()
	for {
		e.passMu.Lock()
		done, next := e.passDone, e.passNext
		e.passMu.Unlock()
		if done >= want {
			if e.ctx.Err() != nil {
				return ErrClosed // the pass stopped short
			}
			return nil
		}
		select {
		case <-next:
		case <-ctx.Done():
			return fmt.Errorf("the sync engine did not apply the change in time (%w); it applies it in the background, retry", ctx.Err())
		case <-e.ctx.Done():
			return ErrClosed
		}
	}
}

// desiredState is a consistent copy of everything a reconcile pass needs.
type desiredState struct {
	vols       map[string]VolumeRecord
	members    map[protocol.DeviceID]memberRecord
	verified   map[protocol.DeviceID]verifiedDevice
	probed     map[protocol.DeviceID][]string
	refused    map[protocol.DeviceID]refusal
	localDirs  map[string]string
	localShare map[string][]string
	detached   map[string]bool
	paused     bool
}

// reconcile runs one pass (serialised by reconcileMu) and counts it for
// reconcileWait.
func (e *Engine) reconcile() {
	e.reconcileMu.Lock()
	defer e.reconcileMu.Unlock()
	e.passMu.Lock()
	e.passStarted++
	e.passMu.Unlock()
	defer func() {
		e.passMu.Lock()
		e.passDone = e.passStarted
		close(e.passNext)
		e.passNext = make(chan struct{})
		e.passMu.Unlock()
	}()
	if e.ctx.Err() != nil {
		return
	}
	vols, members := e.readRegistry()
	e.mu.Lock()
	inUse := sortedKeys(e.inUse)
	e.mu.Unlock()
	e.keepInUse(vols, inUse)

	e.mu.Lock()
	e.volumes = vols
	e.members = members
	for id, r := range members {
		if r.Removed && id != e.myID {
			if r, ok := e.refused[id]; !ok || !r.until.IsZero() {
				e.refused[id] = refusal{why: "it was removed from the cluster"}
				delete(e.verified, id)
				delete(e.probed, id)
				e.log.WithField("peer", id.String()).Info("member removed from the cluster; forgetting it")
			}
		}
	}
	now := time.Now()
	for id, r := range e.refused {
		if !r.active(now) {
			delete(e.refused, id)
		}
	}
	s := desiredState{
		vols: vols, members: members,
		verified:   cloneMap(e.verified),
		probed:     cloneMap(e.probed),
		refused:    cloneMap(e.refused),
		localDirs:  cloneMap(e.localDirs),
		localShare: cloneMap(e.localShare),
		detached:   cloneMap(e.detached),
		paused:     e.partitioned,
	}
	for name := range e.noWipe {
		if r, ok := vols[name]; ok && !r.Deleted {
			delete(e.noWipe, name) // the removal was undone (keepInUse on another node)
		}
	}
	noWipe := cloneMap(e.noWipe)
	e.mu.Unlock()

	e.writeOwnMemberRecord(members, inUse)

	before := e.cfg.RawCopy()
	after := before.Copy()
	if e.apply(&after, s) {
		e.markNewFolders(before, after)
		w, err := e.cfg.Modify(func(c *config.Configuration) { e.apply(c, s) })
		if err != nil {
			e.mu.Lock()
			first := e.cfgErr == nil || e.cfgErr.Error() != err.Error()
			e.cfgErr = err
			e.mu.Unlock()
			if first {
				e.log.WithError(err).Error("cannot apply Syncthing configuration")
			}
			return
		}
		w.Wait()
	}

	cur := e.cfg.RawCopy()
	e.wipeDeleted(before, cur, vols, noWipe, s.detached)
	e.syncWatchers(cur)
}

// markNewFolders gives every volume folder about to be added whose
// directory exists and is empty Syncthing's folder marker. Syncthing
// creates the marker itself only for a folder its index has never held:
// a volume removed everywhere and created again under the same name finds
// the index of its first life still there (on the node that wiped its
// replica), and Syncthing then refuses the empty directory as a possibly
// missing mount ("folder marker missing"), so the volume never reaches
// that node. An empty directory has nothing to lose.
func (e *Engine) markNewFolders(before, after config.Configuration) {
	for _, f := range after.Folders {
		if !strings.HasPrefix(f.ID, volumeFolderPrefix) || f.Path == "" {
			continue
		}
		if _, _, ok := before.Folder(f.ID); ok {
			continue
		}
		if st, err := os.Stat(f.Path); err != nil || !st.IsDir() || !dirEmpty(f.Path) {
			continue
		}
		if err := f.CreateMarker(); err != nil {
			e.log.WithField("folder", f.Label).WithError(err).Warn("cannot create the folder marker")
		}
	}
}

// keepInUse undoes the deletion of every volume a container uses on this
// node: another node deleted it everywhere (remove=everywhere) before it
// learnt of the use here, and wiping it would pull the data from under a
// running container, with no copy kept anywhere. The record is written
// back, so every node keeps (or fetches again) the volume. Called with
// reconcileMu held; vols is updated in place.
func (e *Engine) keepInUse(vols map[string]VolumeRecord, inUse []string) {
	for _, name := range inUse {
		r, ok := vols[name]
		if !ok || !r.Deleted {
			continue
		}
		r.Deleted, r.DeletedAt = false, time.Time{}
		if err := writeJSONAtomic(e.volumeRecordPath(name), r); err != nil {
			e.log.WithField("volume", name).WithError(err).Warn("cannot undo the removal of a volume in use here")
			continue
		}
		vols[name] = r
		e.touchFolder(RegistryFolderID, "volumes")
		e.log.WithField("volume", name).Warn("volume removed everywhere while a container uses it here: the removal is undone, every node keeps it")
	}
}

// wipeDeleted wipes the local replica of every volume deleted cluster-wide,
// whatever the order in which this node learnt things: the folder may
// leave the config in the pass that reads the deleted record, in an
// earlier pass (its record was unreadable or missing, say after a restart)
// or before a crash that cut the pass short. So every replica directory
// the engine has configured is remembered (e.replicas, persisted) until
// its volume is deleted (wipe it), detached here (the glue removes its
// data) or configured again. A replica is only wiped once its folder is
// out of the running config. Called with reconcileMu held.
func (e *Engine) wipeDeleted(before, cur config.Configuration, vols map[string]VolumeRecord,
	noWipe, detached map[string]bool) {
	changed := false
	remember := func(f config.FolderConfiguration) {
		name := e.volumeOfFolder(f, vols)
		if name == "" || f.Path == "" || e.replicas[name] == f.Path {
			return
		}
		e.replicas[name] = f.Path
		changed = true
	}
	// Folders configured before this pass count too: state written by an
	// engine that did not remember replicas yet, or a folder added and
	// removed within one pass.
	for _, f := range before.Folders {
		if _, ok := e.replicas[e.volumeOfFolder(f, vols)]; !ok {
			remember(f)
		}
	}
	for _, f := range cur.Folders {
		remember(f)
	}
	for _, name := range sortedKeys(e.replicas) {
		if _, _, running := cur.Folder(FolderID(name)); running {
			continue
		}
		switch r, ok := vols[name]; {
		case ok && r.Deleted:
			if !noWipe[name] {
				e.log.WithField("volume", name).Info("volume deleted cluster-wide; wiping local replica")
				removeContents(e.replicas[name])
			}
		case detached[name]:
		default:
			continue // not deleted (yet): keep remembering it
		}
		delete(e.replicas, name)
		changed = true
	}
	if changed {
		if err := writeJSONAtomic(e.replicasPath(), e.replicas); err != nil {
			e.log.WithError(err).Warn("cannot save the list of local replicas")
		}
	}
}

// volumeOfFolder returns the volume a folder replicates, "" for a folder
// that is not a volume's.
func (e *Engine) volumeOfFolder(f config.FolderConfiguration, vols map[string]VolumeRecord) string {
	if !strings.HasPrefix(f.ID, volumeFolderPrefix) {
		return ""
	}
	if FolderID(f.Label) == f.ID {
		return f.Label // folderFrom labels a volume's folder with its name
	}
	for n := range vols {
		if FolderID(n) == f.ID {
			return n
		}
	}
	return ""
}

// volumeDir picks a volume's local data dir: the one AddVolume gave, else
// the one already configured (it survives restarts), else VolumeDir.
func (e *Engine) volumeDir(c *config.Configuration, name string, s desiredState) string {
	if d := s.localDirs[name]; d != "" {
		return d
	}
	if f, _, ok := c.Folder(FolderID(name)); ok && f.Path != "" {
		return f.Path
	}
	if e.opts.VolumeDir != nil {
		if d := e.opts.VolumeDir(name); d != "" {
			return d
		}
	}
	return filepath.Join(e.opts.StateDir, "volumes", name)
}

// apply makes c what the state asks for and reports whether it changed
// anything. It is deterministic, so it can run first on a copy to decide
// whether a (restarting, saving) Modify is needed at all.
func (e *Engine) apply(c *config.Configuration, s desiredState) bool {
	changed := false
	e.enforceCheck(c, &changed)

	type want struct {
		name   string
		addrs  []string
		member bool
	}
	wants := map[protocol.DeviceID]*want{}
	get := func(id protocol.DeviceID) *want {
		w := wants[id]
		if w == nil {
			w = &want{}
			wants[id] = w
		}
		return w
	}
	for _, d := range c.Devices {
		if d.DeviceID == e.myID {
			continue
		}
		if _, ok := e.verifyName(d.DeviceID, d.Name); ok {
			w := get(d.DeviceID)
			w.name, w.member = d.Name, true
		}
	}
	for id, v := range s.verified {
		w := get(id)
		w.name, w.member = v.name, true
		w.addrs = mergeAddrs(w.addrs, v.addrs)
	}
	for id, r := range s.members {
		if r.Removed || id == e.myID {
			continue
		}
		w := get(id)
		if !w.member {
			w.name = r.Name
		}
		w.member = true
		w.addrs = mergeAddrs(w.addrs, r.Addresses)
	}
	for id, a := range s.probed {
		w := get(id)
		w.addrs = mergeAddrs(w.addrs, a)
	}
	// Plain Syncthing devices, per volume.
	volShares := map[string][]protocol.DeviceID{}
	addShare := func(vol, entry string) {
		ids, addr := splitShare(entry)
		id, err := protocol.DeviceIDFromString(ids)
		if err != nil || id == e.myID {
			return
		}
		w := get(id)
		if addr != "" {
			w.addrs = mergeAddrs(w.addrs, []string{tcpURL(trimScheme(addr), DefaultPort)})
		}
		if !slices.Contains(volShares[vol], id) {
			volShares[vol] = append(volShares[vol], id)
		}
	}
	active := e.activeVolumes(s)
	for _, name := range active {
		for _, sh := range s.vols[name].Share {
			addShare(name, sh)
		}
		for _, sh := range s.localShare[name] {
			addShare(name, sh)
		}
	}
	for id := range s.refused {
		delete(wants, id)
	}
	for vol, ids := range volShares {
		volShares[vol] = slices.DeleteFunc(ids, func(id protocol.DeviceID) bool { _, r := s.refused[id]; return r })
	}

	// Devices.
	var members []protocol.DeviceID
	newDevs := make([]config.DeviceConfiguration, 0, len(wants)+1)
	existing := map[protocol.DeviceID]config.DeviceConfiguration{}
	for _, d := range c.Devices {
		existing[d.DeviceID] = d
		if d.DeviceID == e.myID {
			newDevs = append(newDevs, d)
		} else if _, ok := wants[d.DeviceID]; !ok {
			changed = true // dropped: refused, removed or no longer shared
		}
	}
	ids := make([]protocol.DeviceID, 0, len(wants))
	for id := range wants {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, func(a, b protocol.DeviceID) int { return a.Compare(b) })
	for _, id := range ids {
		w := wants[id]
		addrs := append([]string(nil), w.addrs...)
		slices.Sort(addrs)
		if len(addrs) == 0 {
			addrs = []string{"dynamic"}
		}
		d, ok := existing[id]
		if !ok {
			d = c.Defaults.Device.Copy()
			d.DeviceID = id
			changed = true
		}
		name := w.name
		if name == "" {
			name = d.Name
		}
		if d.Name != name || !slices.Equal(d.Addresses, addrs) || d.Paused != s.paused {
			d.Name, d.Addresses, d.Paused = name, addrs, s.paused
			changed = true
		}
		newDevs = append(newDevs, d)
		if w.member {
			members = append(members, id)
		}
	}
	c.Devices = newDevs

	// Folders.
	wantFolders := map[string]config.FolderConfiguration{}
	reg := e.folderFrom(c, RegistryFolderID, "syncvol registry", e.registryDir(), members, nil)
	wantFolders[RegistryFolderID] = reg
	for _, name := range active {
		devs := append(append([]protocol.DeviceID(nil), members...), volShares[name]...)
		var untrusted map[protocol.DeviceID]string
		if rec, ok := s.vols[name]; !ok || ShareEncrypted(rec.Options) {
			pw := sharePassword(e.keys[0], name)
			untrusted = map[protocol.DeviceID]string{}
			for _, d := range volShares[name] {
				untrusted[d] = pw
			}
		}
		id := FolderID(name)
		wantFolders[id] = e.folderFrom(c, id, name, e.volumeDir(c, name, s), devs, untrusted)
	}
	var newFolders []config.FolderConfiguration
	for _, f := range c.Folders {
		w, ok := wantFolders[f.ID]
		if !ok {
			if strings.HasPrefix(f.ID, volumeFolderPrefix) {
				changed = true // a volume deleted or detached here
				continue
			}
			newFolders = append(newFolders, f) // not ours; leave it alone
			continue
		}
		delete(wantFolders, f.ID)
		if !sameFolder(f, w) {
			changed = true
			newFolders = append(newFolders, w)
		} else {
			newFolders = append(newFolders, f)
		}
	}
	for _, id := range sortedKeys(wantFolders) {
		newFolders = append(newFolders, wantFolders[id])
		changed = true
	}
	c.Folders = newFolders
	return changed
}

// activeVolumes lists the volumes that should have a local replica.
func (e *Engine) activeVolumes(s desiredState) []string {
	var out []string
	for name, r := range s.vols {
		if !r.Deleted && !s.detached[name] && !SnapshotVolume(r.Options) {
			out = append(out, name)
		}
	}
	for name := range s.localDirs {
		if _, ok := s.vols[name]; !ok && !s.detached[name] {
			out = append(out, name) // record written but not yet read back
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// folderFrom returns the wanted configuration of a folder, starting from
// the existing one so that fields we do not own are kept.
// untrusted maps the devices that get the folder encrypted (Syncthing's
// untrusted devices) to the password.
func (e *Engine) folderFrom(c *config.Configuration, id, label, path string, devices []protocol.DeviceID, untrusted map[protocol.DeviceID]string) config.FolderConfiguration {
	f, _, ok := c.Folder(id)
	if !ok {
		f = e.newFolder(c, id, label, path)
	} else {
		f = f.Copy()
	}
	f.Label = label
	f.Path = path
	e.tuneFolder(&f)
	var fds []config.FolderDeviceConfiguration
	fds = append(fds, config.FolderDeviceConfiguration{DeviceID: e.myID})
	for _, d := range devices {
		if d != e.myID {
			fds = append(fds, config.FolderDeviceConfiguration{DeviceID: d, EncryptionPassword: untrusted[d]})
		}
	}
	slices.SortFunc(fds, func(a, b config.FolderDeviceConfiguration) int { return a.DeviceID.Compare(b.DeviceID) })
	fds = slices.CompactFunc(fds, func(a, b config.FolderDeviceConfiguration) bool { return a.DeviceID == b.DeviceID })
	f.Devices = fds
	return f
}

func sameFolder(a, b config.FolderConfiguration) bool {
	if a.Path != b.Path || a.Label != b.Label || a.RescanIntervalS != b.RescanIntervalS ||
		a.FSWatcherEnabled != b.FSWatcherEnabled || a.FSWatcherDelayS != b.FSWatcherDelayS ||
		a.MaxConflicts != b.MaxConflicts || a.Paused != b.Paused || a.DisableFsync != b.DisableFsync ||
		a.SendOwnership != b.SendOwnership || a.SyncOwnership != b.SyncOwnership {
		return false
	}
	as, bs := map[protocol.DeviceID]string{}, map[protocol.DeviceID]string{}
	for _, d := range a.Devices {
		as[d.DeviceID] = d.EncryptionPassword
	}
	for _, d := range b.Devices {
		bs[d.DeviceID] = d.EncryptionPassword
	}
	return maps.Equal(as, bs)
}

// enforceCheck re-applies enforce and flags a change if it altered c.
func (e *Engine) enforceCheck(c *config.Configuration, changed *bool) {
	o, gui := c.Options, c.GUI.Enabled
	var myName string
	if d, _, ok := c.Device(e.myID); ok {
		myName = d.Name
	}
	_, _, hadReg := c.Folder(RegistryFolderID)
	e.enforce(c)
	d, _, _ := c.Device(e.myID)
	if !slices.Equal(o.RawListenAddresses, c.Options.RawListenAddresses) || o.GlobalAnnEnabled || o.LocalAnnEnabled ||
		o.RelaysEnabled || o.NATEnabled || o.URAccepted != -1 || o.AutoUpgradeIntervalH != 0 || o.CREnabled ||
		o.SetLowPriority || o.ReconnectIntervalS != c.Options.ReconnectIntervalS || o.MaxRecvKbps != c.Options.MaxRecvKbps || o.LimitBandwidthInLan != c.Options.LimitBandwidthInLan ||
		gui || myName != d.Name || !hadReg {
		*changed = true
	}
}

// syncWatchers runs one fast-path watcher per configured folder we own.
func (e *Engine) syncWatchers(c config.Configuration) {
	want := map[string]string{}
	for _, f := range c.Folders {
		if strings.HasPrefix(f.ID, volumeFolderPrefix) {
			want[f.ID] = f.Path
		}
	}
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return
	}
	var stop []*watcher
	for id, w := range e.watchers {
		if p, ok := want[id]; !ok || p != w.dir {
			stop = append(stop, w)
			delete(e.watchers, id)
		}
	}
	for id, p := range want {
		if _, ok := e.watchers[id]; !ok {
			e.watchers[id] = e.newWatcher(id, p)
		}
	}
	e.mu.Unlock()
	for _, w := range stop {
		w.stop()
	}
}

// removeContents deletes everything inside dir but dir itself, which may
// be a mount point.
func removeContents(dir string) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, ent := range ents {
		_ = os.RemoveAll(filepath.Join(dir, ent.Name()))
	}
}

func cloneMap[K comparable, V any](m map[K]V) map[K]V {
	out := make(map[K]V, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
