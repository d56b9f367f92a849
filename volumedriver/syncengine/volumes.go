package syncengine

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/syncthing/syncthing/lib/protocol"
)

// AddVolume starts replicating volume name, whose data lives in dir, and
// registers it cluster-wide with the volume's driver options opts (an
// existing record keeps its options; nil records none). share lists extra
// plain Syncthing devices ("DEVICEID" or "DEVICEID@host:port") the volume
// is shared with. It is idempotent and returns once the folder is
// configured locally, or with ctx's error once ctx ends (nothing of the
// call runs on after it returned: what it recorded is configured by the
// engine's next reconcile pass, as any change).
func (e *Engine) AddVolume(ctx context.Context, name, dir string, share []string, opts map[string]string) error {
	if err := validVolumeName(name); err != nil {
		return err
	}
	for _, s := range share {
		if err := ParseShare(s); err != nil {
			return err
		}
	}
	if dir == "" {
		return fmt.Errorf("add volume %s: empty data dir", name)
	}
	if err := e.running(); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("add volume %s: %w", name, err)
	}

	e.mu.Lock()
	e.localDirs[name] = dir
	e.localShare[name] = append([]string(nil), share...)
	var derr error
	if e.detached[name] {
		delete(e.detached, name)
		derr = e.saveDetachedLocked()
	}
	delete(e.noWipe, name)
	e.mu.Unlock()
	if derr != nil {
		return fmt.Errorf("add volume %s: %w", name, derr)
	}

	created, err := e.ensureRecord(ctx, name, share, opts)
	if err != nil {
		return fmt.Errorf("add volume %s: %w", name, err)
	}
	if created {
		e.mu.Lock()
		e.fresh[name] = dirEmpty(dir)
		e.mu.Unlock()
	}
	e.touchFolder(RegistryFolderID, "volumes")
	if err := e.reconcileWait(ctx); err != nil {
		return fmt.Errorf("add volume %s: %w", name, err)
	}
	if _, ok := e.cfg.Folder(FolderID(name)); !ok {
		return fmt.Errorf("add volume %s: folder not configured (see logs)", name)
	}
	return nil
}

// RegisterVolume lists volume name in the cluster's registry, with its
// driver options, without replicating it through Syncthing: snapshot
// volumes (options replication=snapshots) travel as generations (package
// snapvol), and the registry only makes them known to every node. It
// returns once the record is applied here, or with ctx's error.
func (e *Engine) RegisterVolume(ctx context.Context, name string, opts map[string]string) error {
	if err := validVolumeName(name); err != nil {
		return err
	}
	if err := e.running(); err != nil {
		return err
	}
	if _, err := e.ensureRecord(ctx, name, nil, opts); err != nil {
		return fmt.Errorf("register volume %s: %w", name, err)
	}
	e.touchFolder(RegistryFolderID, "volumes")
	if err := e.reconcileWait(ctx); err != nil {
		return fmt.Errorf("register volume %s: %w", name, err)
	}
	return nil
}

// ensureRecord writes the volume's registry record unless one exists (a
// volume another node created keeps its record, merged with share). It
// writes nothing once ctx has ended.
func (e *Engine) ensureRecord(ctx context.Context, name string, share []string, opts map[string]string) (created bool, err error) {
	// Let the registry catch up first (bounded), so a volume another node
	// created is found here and not mistaken for a brand-new, empty one.
	e.waitRegistry(ctx, registryWait)
	if err := ctx.Err(); err != nil {
		return false, err
	}
	rec, err := e.readVolumeRecord(name)
	switch {
	case errors.Is(err, os.ErrNotExist) || (err == nil && rec.Deleted):
		rec = VolumeRecord{Name: name, Options: opts, Share: share, Created: time.Now().UTC(), CreatedBy: e.myID.String()}
		if err := writeJSONAtomic(e.volumeRecordPath(name), rec); err != nil {
			return false, fmt.Errorf("write record: %w", err)
		}
		return true, nil
	case err != nil:
		return false, fmt.Errorf("read record: %w", err)
	}
	merged := mergeAddrs(rec.Share, share)
	if len(merged) != len(rec.Share) || (rec.Options == nil && opts != nil) {
		rec.Share = merged
		if rec.Options == nil {
			rec.Options = opts
		}
		if err := writeJSONAtomic(e.volumeRecordPath(name), rec); err != nil {
			return false, fmt.Errorf("write record: %w", err)
		}
	}
	return false, nil
}

// SnapshotVolume reports whether a registry record's options make it a
// snapshot volume, which Syncthing does not replicate.
func SnapshotVolume(opts map[string]string) bool { return opts["replication"] == "snapshots" }

// ShareEncrypted reports whether a volume's share= devices get its data
// encrypted, as Syncthing's untrusted devices that can neither read it nor
// change it (share-mode=encrypted, what a volume created with share= gets
// unless share-mode=readwrite says otherwise). A volume recorded before
// share-mode existed has none and shares in the clear, as it did.
func ShareEncrypted(opts map[string]string) bool { return opts["share-mode"] == "encrypted" }

// Member is another node of the cluster, as the registry lists it.
type Member struct {
	ID    string
	Addrs []string // tcp://host:port of its Syncthing listener
}

// Members lists the other members (removed and refused ones left out).
func (e *Engine) Members() []Member {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []Member
	for id, r := range e.members {
		if id == e.myID || r.Removed {
			continue
		}
		if _, refused := e.refused[id]; refused {
			continue
		}
		out = append(out, Member{ID: id.String(), Addrs: slices.Clone(r.Addresses)})
	}
	slices.SortFunc(out, func(a, b Member) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// MemberOf returns the device ID of the certificate raw (DER) and whether
// it is a member's.
func (e *Engine) MemberOf(raw []byte) (string, bool) {
	id := protocol.NewDeviceID(raw)
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, refused := e.refused[id]; refused {
		return id.String(), false
	}
	r, ok := e.members[id]
	_, verified := e.verified[id]
	return id.String(), (ok && !r.Removed) || verified
}

// Certificate is this node's device certificate.
func (e *Engine) Certificate() tls.Certificate { return e.cert }

// registryWait bounds how long AddVolume waits for the registry to sync.
const registryWait = 2 * time.Second

// waitRegistry waits at most d, and not past ctx, for the registry
// folder to be in sync.
func (e *Engine) waitRegistry(ctx context.Context, d time.Duration) {
	deadline := time.Now().Add(d)
	for {
		if ok, _ := e.syncCheck(RegistryFolderID); ok || time.Now().After(deadline) {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(pollInterval):
		}
	}
}

func (e *Engine) readVolumeRecord(name string) (VolumeRecord, error) {
	var r VolumeRecord
	data, err := os.ReadFile(e.volumeRecordPath(name))
	if err != nil {
		return r, err
	}
	if err := json.Unmarshal(data, &r); err != nil {
		return r, err
	}
	return r, nil
}

func dirEmpty(dir string) bool {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return true
	}
	for _, ent := range ents {
		if ent.Name() != ".stfolder" {
			return false
		}
	}
	return true
}

// RemoveVolume stops replicating volume name on this node; the glue
// removes the local data. With everywhere the volume is marked deleted in
// the registry, and every other node stops replicating it and wipes its
// replica (the contents of its data dir) — unless a container uses it
// there: a removal everywhere of a volume a member reports in use
// (UsedBy) is refused with ErrInUse, and a node that learns of the
// removal while a container uses the volume there undoes it. It returns
// once the change is applied here, or with ctx's error (a call whose ctx
// ended before it changed anything changes nothing).
func (e *Engine) RemoveVolume(ctx context.Context, name string, everywhere bool) error {
	if err := validVolumeName(name); err != nil {
		return err
	}
	if err := e.running(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("remove volume %s: %w", name, err)
	}
	if everywhere {
		if users := e.UsedBy(name); len(users) > 0 {
			return fmt.Errorf("remove volume %s everywhere: %w: %s", name, ErrInUse, strings.Join(users, ", "))
		}
		rec, err := e.readVolumeRecord(name)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove volume %s: read record: %w", name, err)
		}
		rec.Name = name
		rec.Deleted = true
		rec.DeletedAt = time.Now().UTC()
		e.mu.Lock()
		e.noWipe[name] = true
		e.mu.Unlock()
		if err := writeJSONAtomic(e.volumeRecordPath(name), rec); err != nil {
			return fmt.Errorf("remove volume %s: write record: %w", name, err)
		}
		e.touchFolder(RegistryFolderID, "volumes")
	}
	e.mu.Lock()
	delete(e.localDirs, name)
	delete(e.localShare, name)
	delete(e.fresh, name)
	var derr error
	if !everywhere {
		e.detached[name] = true
		derr = e.saveDetachedLocked()
	}
	e.mu.Unlock()
	if derr != nil {
		return fmt.Errorf("remove volume %s: %w", name, derr)
	}
	if err := e.reconcileWait(ctx); err != nil {
		return fmt.Errorf("remove volume %s: %w", name, err)
	}
	return nil
}

// Volumes lists every volume the cluster knows, deleted ones included
// (Deleted set), sorted by name. It reads local state only.
func (e *Engine) Volumes() []VolumeRecord {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]VolumeRecord, 0, len(e.volumes))
	for _, n := range sortedKeys(e.volumes) {
		r := e.volumes[n]
		r.Options = maps.Clone(r.Options)
		r.Share = slices.Clone(r.Share)
		out = append(out, r)
	}
	return out
}

// Touched hints that something changed in volume name (below subdirs,
// relative to the volume root; none means anywhere) so it is scanned at
// once. It is cheap and never blocks.
func (e *Engine) Touched(name string, subdirs ...string) {
	e.touchFolder(FolderID(name), subdirs...)
}

// SetInUse records whether a container uses volume name on this node.
// While it does, this node never wipes it (a removal everywhere that
// arrives meanwhile is undone), and the other nodes see the use in this
// node's member record (UsedBy) and refuse to delete it everywhere. It
// never blocks; the record is published by the next reconcile pass.
func (e *Engine) SetInUse(name string, used bool) {
	e.mu.Lock()
	if used {
		e.inUse[name] = true
	} else {
		delete(e.inUse, name)
	}
	e.mu.Unlock()
	e.triggerReconcile()
}

// UsedBy names the other members that report a container using volume
// name (removed and refused members left out), from local state.
func (e *Engine) UsedBy(name string) []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []string
	for id, r := range e.members {
		if id == e.myID || r.Removed {
			continue
		}
		if _, refused := e.refused[id]; refused {
			continue
		}
		if slices.Contains(r.InUse, name) {
			out = append(out, displayName(r.Name)+" ("+id.Short().String()+")")
		}
	}
	slices.Sort(out)
	return out
}
