package syncengine

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/syncthing/syncthing/lib/protocol"

	"github.com/homeswarm/homeswarm/internal/atomicfile"
	"github.com/homeswarm/homeswarm/internal/volname"
)

// VolumeRecord is a volume as the cluster knows it, stored in the registry
// folder as volumes/<name>.json.
type VolumeRecord struct {
	Name      string            `json:"name"`
	Options   map[string]string `json:"options,omitempty"`
	Share     []string          `json:"share,omitempty"` // plain Syncthing device IDs
	Created   time.Time         `json:"created"`
	CreatedBy string            `json:"createdBy,omitempty"` // device ID
	Deleted   bool              `json:"deleted,omitempty"`
	DeletedAt time.Time         `json:"deletedAt,omitzero"`
}

// memberRecord is a member as published in members/<deviceID>.json.
type memberRecord struct {
	DeviceID  string    `json:"deviceID"`
	Name      string    `json:"name"` // with proof
	Addresses []string  `json:"addresses,omitempty"`
	Updated   time.Time `json:"updated"`
	Removed   bool      `json:"removed,omitempty"`
	// InUse lists the volumes a container uses on that node now, so no
	// other node deletes them everywhere under it (see SetInUse).
	InUse []string `json:"inUse,omitempty"`
}

const conflictMarker = ".sync-conflict-"

// validVolumeName is syncvol's one rule for volume names (package
// volname), plus what Syncthing itself treats specially (conflict copies,
// its temporaries), which the rule already excludes but this package must
// never rely on others for.
func validVolumeName(name string) error {
	if err := volname.Validate(name); err != nil {
		return err // wraps volname.ErrInvalid, which ErrInvalidName is
	}
	if strings.Contains(name, conflictMarker) || strings.HasPrefix(name, ".syncthing.") || strings.HasPrefix(name, "~syncthing~") {
		return fmt.Errorf("%w: %q", ErrInvalidName, name)
	}
	return nil
}

// readRegistry loads every record from the registry folder. Conflict
// copies and temporaries are skipped; a record that does not parse is
// skipped too (it is being written or was damaged).
func (e *Engine) readRegistry() (map[string]VolumeRecord, map[protocol.DeviceID]memberRecord) {
	vols := map[string]VolumeRecord{}
	members := map[protocol.DeviceID]memberRecord{}
	for _, p := range readJSONDir(filepath.Join(e.registryDir(), "volumes")) {
		var r VolumeRecord
		if json.Unmarshal(p.data, &r) != nil || r.Name == "" || r.Name+".json" != p.name {
			continue
		}
		vols[r.Name] = r
	}
	for _, p := range readJSONDir(filepath.Join(e.registryDir(), "members")) {
		var r memberRecord
		if json.Unmarshal(p.data, &r) != nil {
			continue
		}
		id, err := protocol.DeviceIDFromString(r.DeviceID)
		if err != nil || id.String()+".json" != p.name {
			continue
		}
		if r.Removed {
			continue // carries no proof: any member could write one (REMOVED_NODES is each node's own)
		}
		if _, ok := e.verifyName(id, r.Name); !ok {
			continue // a record anyone without the key could have forged
		}
		members[id] = r
	}
	for id := range e.removed {
		members[id] = memberRecord{DeviceID: id.String(), Removed: true}
	}
	return vols, members
}

// cleanRegistryConflicts removes conflict copies of registry records older
// than a minute: two nodes writing one record at once is expected (the
// record read back is the winner), so the copies carry nothing of value.
func (e *Engine) cleanRegistryConflicts() {
	for _, sub := range []string{"volumes", "members"} {
		dir := filepath.Join(e.registryDir(), sub)
		ents, _ := os.ReadDir(dir)
		for _, ent := range ents {
			if !strings.Contains(ent.Name(), conflictMarker) {
				continue
			}
			if fi, err := ent.Info(); err == nil && time.Since(fi.ModTime()) > time.Minute {
				_ = os.Remove(filepath.Join(dir, ent.Name()))
			}
		}
	}
}

type jsonFile struct {
	name string
	data []byte
}

func readJSONDir(dir string) []jsonFile {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var out []jsonFile
	for _, ent := range ents {
		n := ent.Name()
		if !ent.Type().IsRegular() || !strings.HasSuffix(n, ".json") ||
			strings.Contains(n, conflictMarker) || strings.HasPrefix(n, ".syncthing.") {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil {
			continue
		}
		out = append(out, jsonFile{n, data})
	}
	return out
}

// writeJSONAtomic writes v to path through a temporary that Syncthing's
// scanner ignores (the ".syncthing." prefix), so peers never see a
// half-written record, and fsyncs file and directory.
func writeJSONAtomic(path string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return atomicfile.WriteTemp(path, append(data, '\n'), 0o600, ".syncthing."+filepath.Base(path)+".*.tmp")
}

func (e *Engine) volumeRecordPath(name string) string {
	return filepath.Join(e.registryDir(), "volumes", name+".json")
}

func (e *Engine) memberRecordPath(id protocol.DeviceID) string {
	return filepath.Join(e.registryDir(), "members", id.String()+".json")
}

// writeOwnMemberRecord publishes this node in the registry if the record
// is missing or stale.
func (e *Engine) writeOwnMemberRecord(have map[protocol.DeviceID]memberRecord, inUse []string) {
	cur, ok := have[e.myID]
	if ok && !cur.Removed && cur.Name == e.myName && slices.Equal(cur.Addresses, e.advAddrs) && slices.Equal(cur.InUse, inUse) {
		return
	}
	rec := memberRecord{DeviceID: e.myID.String(), Name: e.myName, Addresses: e.advAddrs, Updated: time.Now().UTC(), InUse: inUse}
	if err := writeJSONAtomic(e.memberRecordPath(e.myID), rec); err != nil {
		e.log.WithError(err).Warn("cannot publish member record")
		return
	}
	e.touchFolder(RegistryFolderID, "members")
}

// Local, non-replicated state: volumes removed on this node only.

func (e *Engine) detachedPath() string { return filepath.Join(e.opts.StateDir, "detached.json") }

func (e *Engine) loadDetached() {
	data, err := os.ReadFile(e.detachedPath())
	if err != nil {
		return
	}
	var names []string
	if json.Unmarshal(data, &names) == nil {
		for _, n := range names {
			e.detached[n] = true
		}
	}
}

func (e *Engine) saveDetachedLocked() error {
	names := make([]string, 0, len(e.detached))
	for n := range e.detached {
		names = append(names, n)
	}
	slices.Sort(names)
	return writeJSONAtomic(e.detachedPath(), names)
}

// Local, non-replicated state: the data directory of every replica this
// node has configured and not yet wiped or let go (see wipeDeleted).

func (e *Engine) replicasPath() string { return filepath.Join(e.opts.StateDir, "replicas.json") }

func (e *Engine) loadReplicas() {
	data, err := os.ReadFile(e.replicasPath())
	if err != nil {
		return
	}
	var m map[string]string
	if json.Unmarshal(data, &m) == nil {
		for n, dir := range m {
			if validVolumeName(n) == nil && dir != "" {
				e.replicas[n] = dir
			}
		}
	}
}
