package syncengine

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/syncthing/syncthing/lib/db"
	"github.com/syncthing/syncthing/lib/protocol"
)

// pollInterval is how often WaitSynced and Flush re-check local state.
const pollInterval = 25 * time.Millisecond

// folderPeers returns the other devices a folder is shared with, and those
// of them that are connected now.
func (e *Engine) folderPeers(folder string) (all, connected []protocol.DeviceID, ok bool) {
	f, ok := e.cfg.Folder(folder)
	if !ok {
		return nil, nil, false
	}
	for _, d := range f.Devices {
		if d.DeviceID == e.myID {
			continue
		}
		all = append(all, d.DeviceID)
		if e.st.IsConnectedTo(d.DeviceID) {
			connected = append(connected, d.DeviceID)
		}
	}
	return all, connected, true
}

// availableNeed counts what the local replica still needs and a connected
// peer can supply. A version announced only by a device that is gone (a
// node that crashed after scanning a change it never sent) can be fetched
// from nobody: it is counted apart, in unavailable, and does not hold a
// Mount back, or a crash would make a volume unmountable until the dead
// node returns. Deletions and directories need no data and always count.
func availableNeed(snap interface {
	NeedSize(protocol.DeviceID) db.Counts
	WithNeedTruncated(protocol.DeviceID, db.Iterator)
	Availability(string) []protocol.DeviceID
}, connected []protocol.DeviceID) (files int, bytes int64, unavailable int) {
	if snap.NeedSize(protocol.LocalDeviceID).TotalItems() == 0 {
		return 0, 0, 0
	}
	snap.WithNeedTruncated(protocol.LocalDeviceID, func(f protocol.FileInfo) bool {
		if f.IsDeleted() || f.IsDirectory() || f.IsSymlink() {
			files++
			return true
		}
		for _, d := range snap.Availability(f.FileName()) {
			if slices.Contains(connected, d) {
				files++
				bytes += f.FileSize()
				return true
			}
		}
		unavailable++
		return true
	})
	return files, bytes, unavailable
}

// behind describes how far a replica is from the global state.
type behind struct {
	files       int
	bytes       int64
	unavailable int // needed versions no connected peer has
	state       string
	connected   int
	waiting     string // why we cannot judge yet
}

func (b behind) unavailableNote() string {
	if b.unavailable == 0 {
		return ""
	}
	return fmt.Sprintf(" (%d newer versions are held by no connected peer and are not waited for)", b.unavailable)
}

func (b behind) String() string {
	if b.waiting != "" && b.state == "" {
		return b.waiting
	}
	if b.waiting != "" {
		return fmt.Sprintf("at least %d files (%s) behind its %d connected peer(s), state %s, %s",
			b.files, humanBytes(b.bytes), b.connected, b.state, b.waiting)
	}
	return fmt.Sprintf("%d files (%s) behind its %d connected peer(s), state %s%s",
		b.files, humanBytes(b.bytes), b.connected, b.state, b.unavailableNote())
}

// syncCheck reports whether the local replica of folder has caught up with
// its connected peers.
func (e *Engine) syncCheck(folder string) (bool, behind) {
	all, connected, _ := e.folderPeers(folder)
	now := time.Now()
	e.mu.Lock()
	startedAt := e.startedAt
	e.mu.Unlock()
	if len(connected) == 0 {
		if len(all) == 0 || now.Sub(startedAt) >= e.opts.ConnectGrace {
			return true, behind{} // nobody to catch up with
		}
		return false, behind{waiting: "waiting for peers to connect"}
	}
	state, _, _ := e.st.FolderState(folder)
	snap, err := e.st.DBSnapshot(folder)
	if err != nil {
		return false, behind{waiting: "folder not running: " + err.Error()}
	}
	files, bytes, unavailable := availableNeed(snap, connected)
	snap.Release()
	b := behind{files: files, bytes: bytes, unavailable: unavailable, state: state, connected: len(connected)}
	sharing := 0
	for _, p := range connected {
		comp, err := e.st.Completion(p, folder)
		if err != nil {
			continue
		}
		e.mu.Lock()
		ps := e.peers[p]
		if ps == nil {
			// Connected before we handled its event: start its clock now.
			ps = &peerState{connectedAt: now}
			e.peers[p] = ps
		}
		var ccAt, connAt time.Time
		if ps != nil {
			ccAt, connAt = ps.ccAt, ps.connectedAt
		}
		if ccAt.IsZero() && now.Sub(connAt) >= e.opts.ConnectGrace {
			ccAt = connAt // its cluster config event was lost; do not wait forever
		}
		lastIdx := e.lastIdx[folder+"/"+p.String()]
		e.mu.Unlock()
		switch comp.RemoteState.String() {
		case "valid":
			// After its cluster config the peer sends its index (or only
			// what changed since we last met). Wait for the first index
			// message, or 3×SettleTime if it had nothing to send.
			sharing++
			if ccAt.IsZero() || now.Sub(ccAt) < e.opts.SettleTime ||
				(!lastIdx.After(ccAt) && now.Sub(ccAt) < 3*e.opts.SettleTime) {
				b.waiting = "waiting for the index of peer " + p.Short().String()
				return false, b
			}
		case "unknown":
			// No cluster config yet: the peer may well share the folder.
			if connAt.IsZero() || now.Sub(connAt) < e.opts.ConnectGrace {
				b.waiting = "waiting for the cluster config of peer " + p.Short().String()
				return false, b
			}
		}
	}
	if sharing == 0 {
		return true, behind{}
	}
	return b.files == 0 && state == "idle", b
}

// WaitSynced blocks until the local replica of volume name has caught up
// with its connected peers, or ctx ends. A volume this engine just created,
// or one no reachable peer shares, returns at once (after ConnectGrace
// following Start, to let peers connect). When ctx ends first the error
// wraps ErrBehind and says how many files and bytes are missing.
func (e *Engine) WaitSynced(ctx context.Context, name string) error {
	if err := e.running(); err != nil {
		return err
	}
	folder := FolderID(name)
	if _, ok := e.cfg.Folder(folder); !ok {
		return fmt.Errorf("volume %s: %w", name, ErrUnknownVolume)
	}
	e.mu.Lock()
	fresh := e.fresh[name]
	e.mu.Unlock()
	if fresh {
		return nil
	}
	t := time.NewTicker(pollInterval)
	defer t.Stop()
	for {
		ok, b := e.syncCheck(folder)
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("volume %s is %s: %w", name, b, ErrBehind)
		case <-t.C:
		}
	}
}

// Flush scans volume name now and waits until at least one connected peer
// holds every local change, or ctx ends; the error then wraps
// ErrNotReplicated and says what is missing. A volume shared with no other
// device returns after the scan.
func (e *Engine) Flush(ctx context.Context, name string) error {
	if err := e.running(); err != nil {
		return err
	}
	folder := FolderID(name)
	if _, ok := e.cfg.Folder(folder); !ok {
		return fmt.Errorf("volume %s: %w", name, ErrUnknownVolume)
	}
	scanned := make(chan error, 1)
	go func() { scanned <- e.st.ScanFolderSubdirs(folder, nil) }()
	select {
	case err := <-scanned:
		if err != nil {
			return fmt.Errorf("flush volume %s: scan: %w", name, err)
		}
	case <-ctx.Done():
		return fmt.Errorf("flush volume %s: scan not finished: %w", name, ErrNotReplicated)
	}
	t := time.NewTicker(pollInterval)
	defer t.Stop()
	for {
		all, connected, _ := e.folderPeers(folder)
		if len(all) == 0 {
			return nil
		}
		minItems, minBytes := -1, int64(0)
		for _, p := range connected {
			comp, err := e.st.Completion(p, folder)
			if err != nil || comp.RemoteState.String() != "valid" {
				continue
			}
			items := comp.NeedItems + comp.NeedDeletes
			if items == 0 && comp.NeedBytes == 0 {
				return nil
			}
			if minItems < 0 || items < minItems {
				minItems, minBytes = items, comp.NeedBytes
			}
		}
		select {
		case <-ctx.Done():
			if minItems < 0 {
				return fmt.Errorf("volume %s: no peer sharing it is connected (%d known): %w", name, len(all), ErrNotReplicated)
			}
			return fmt.Errorf("volume %s: %d files (%s) not yet held by any connected peer: %w",
				name, minItems, humanBytes(minBytes), ErrNotReplicated)
		case <-t.C:
		}
	}
}

// Status describes volume name from local state only: folderID, state,
// peersConnected, peersTotal, inSync, needFiles, needBytes, lastChange,
// conflicts, localFiles, localBytes (and error when the folder has one).
func (e *Engine) Status(name string) map[string]string {
	folder := FolderID(name)
	st := map[string]string{"folderID": folder, "device": e.myID.String()}
	if err := e.running(); err != nil {
		st["state"] = err.Error()
		return st
	}
	all, connected, ok := e.folderPeers(folder)
	if !ok {
		st["state"] = "not replicated on this node"
		return st
	}
	state, _, ferr := e.st.FolderState(folder)
	st["state"] = state
	if ferr != nil {
		st["error"] = ferr.Error()
	}
	st["peersConnected"] = strconv.Itoa(len(connected))
	st["peersTotal"] = strconv.Itoa(len(all))
	e.mu.Lock()
	if lc := e.lastChange[folder]; !lc.IsZero() {
		st["lastChange"] = lc.UTC().Format(time.RFC3339Nano)
	}
	cc, haveCC := e.conflicts[folder]
	e.mu.Unlock()
	snap, err := e.st.DBSnapshot(folder)
	if err != nil {
		st["error"] = err.Error()
		return st
	}
	defer snap.Release()
	need := snap.NeedSize(protocol.LocalDeviceID)
	local := snap.LocalSize()
	st["needFiles"] = strconv.Itoa(need.TotalItems())
	st["needBytes"] = strconv.FormatInt(need.Bytes, 10)
	st["localFiles"] = strconv.Itoa(local.Files)
	st["localBytes"] = strconv.FormatInt(local.Bytes, 10)
	st["inSync"] = strconv.FormatBool(need.TotalItems() == 0 && state == "idle")
	if !haveCC || time.Since(cc.at) > 2*time.Second {
		n := 0
		snap.WithHaveTruncated(protocol.LocalDeviceID, func(f protocol.FileInfo) bool {
			if !f.IsDeleted() && strings.Contains(f.FileName(), conflictMarker) {
				n++
			}
			return true
		})
		cc = conflictCount{n: n, at: time.Now()}
		e.mu.Lock()
		e.conflicts[folder] = cc
		e.mu.Unlock()
	}
	st["conflicts"] = strconv.Itoa(cc.n)
	return st
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
