package syncengine

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/syncthing/syncthing/lib/build"
	"github.com/syncthing/syncthing/lib/events"
	"github.com/syncthing/syncthing/lib/model"
	"github.com/syncthing/syncthing/lib/protocol"
)

const bepProtocol = "bep/1.0"

// eventLoop turns Syncthing events into membership decisions and the
// bookkeeping WaitSynced and Status read.
func (e *Engine) eventLoop() {
	for {
		select {
		case <-e.ctx.Done():
			return
		case ev, ok := <-e.sub.C():
			if !ok {
				return
			}
			e.handleEvent(ev)
		}
	}
}

func (e *Engine) handleEvent(ev events.Event) {
	if debugScan {
		e.log.Infof("event %v %v", ev.Type, ev.Data)
	}
	now := time.Now()
	switch ev.Type {
	case events.DeviceConnected:
		data, _ := ev.Data.(map[string]string)
		id, err := protocol.DeviceIDFromString(data["id"])
		if err != nil {
			return
		}
		e.mu.Lock()
		e.peers[id] = &peerState{connectedAt: now}
		e.mu.Unlock()
		e.admit(id, data["deviceName"], data["addr"], "", "connected")
	case events.DeviceDisconnected:
		data, _ := ev.Data.(map[string]string)
		if id, err := protocol.DeviceIDFromString(data["id"]); err == nil {
			e.mu.Lock()
			delete(e.peers, id)
			e.mu.Unlock()
		}
	case events.PendingDevicesChanged:
		data, _ := ev.Data.(map[string][]interface{})
		for _, a := range data["added"] {
			m, _ := a.(map[string]string)
			id, err := protocol.DeviceIDFromString(m["deviceID"])
			if err != nil {
				continue
			}
			e.admit(id, m["name"], m["address"], "", "pending")
		}
	case events.ClusterConfigReceived:
		data, ok := ev.Data.(model.ClusterConfigReceivedEventData)
		if !ok {
			return
		}
		e.mu.Lock()
		if p := e.peers[data.Device]; p != nil && p.ccAt.IsZero() {
			p.ccAt = now // the first one after connecting starts the index exchange
		}
		e.mu.Unlock()
	case events.RemoteIndexUpdated:
		data, _ := ev.Data.(map[string]interface{})
		folder, _ := data["folder"].(string)
		dev, _ := data["device"].(string)
		e.mu.Lock()
		e.lastIdx[folder+"/"+dev] = now
		e.lastChange[folder] = now
		e.mu.Unlock()
		if folder == RegistryFolderID {
			e.triggerReconcile()
		}
	case events.LocalIndexUpdated:
		data, _ := ev.Data.(map[string]interface{})
		folder, _ := data["folder"].(string)
		e.mu.Lock()
		e.lastChange[folder] = now
		e.mu.Unlock()
		if folder == RegistryFolderID {
			e.triggerReconcile()
		}
	}
}

// admit decides about a device that connected or asked to: members that
// prove the cluster key are added and get every folder; plain Syncthing
// devices named in a volume's share list are left to that volume; anyone
// else is refused and the refusal logged once. addr is where the device
// was seen; dialAddr, if set, is a configured address to reach it.
func (e *Engine) admit(id protocol.DeviceID, name, addr, dialAddr, how string) {
	if id == e.myID {
		return
	}
	e.mu.Lock()
	refused := e.refused[id].active(time.Now())
	rec, known := e.members[id]
	shared := e.isShareDeviceLocked(id)
	e.mu.Unlock()
	if refused {
		return
	}
	if e.removed[id] || known && rec.Removed {
		e.refuse(id, addr, "it was removed from the cluster", true)
		return
	}
	if name == "" {
		// Syncthing only sends its name to devices it knows: an empty
		// name means the other side does not know us yet (it will reject
		// this connection itself). Nothing to verify either way.
		return
	}
	port, ok := e.verifyName(id, name)
	if !ok {
		if shared {
			return // a plain Syncthing device shared with a volume
		}
		e.refuse(id, addr, errNoProof, false)
		return
	}
	var addrs []string
	if dialAddr != "" {
		addrs = append(addrs, "tcp://"+dialAddr)
	} else if host, _, err := net.SplitHostPort(addr); err == nil && port > 0 {
		addrs = append(addrs, "tcp://"+net.JoinHostPort(host, strconv.Itoa(port)))
	}
	e.mu.Lock()
	prev, had := e.verified[id]
	e.verified[id] = verifiedDevice{name: name, addrs: mergeAddrs(prev.addrs, addrs)}
	e.mu.Unlock()
	if !had {
		e.log.WithFields(map[string]any{"peer": id.Short().String(), "name": displayName(name), "via": how}).
			Info("cluster member verified")
	}
	e.triggerReconcile()
}

const errNoProof = "it did not prove the cluster key (wrong CLUSTER_KEY, or not a syncvol node)"

// refuse drops a device and logs why, once per device. A removed member
// stays out for good; a failed proof for refusalHold.
func (e *Engine) refuse(id protocol.DeviceID, addr, why string, forever bool) {
	e.mu.Lock()
	logged := e.refusedLog[id]
	e.refusedLog[id] = true
	r := refusal{why: why}
	if !forever {
		r.until = time.Now().Add(refusalHold)
	}
	e.refused[id] = r
	delete(e.verified, id)
	delete(e.probed, id)
	e.mu.Unlock()
	if !logged {
		e.log.WithFields(map[string]any{"peer": id.String(), "addr": addr}).
			Warnf("refusing device: %s", why)
	}
	e.triggerReconcile()
}

func (e *Engine) isShareDeviceLocked(id protocol.DeviceID) bool {
	s := id.String()
	for _, r := range e.volumes {
		for _, d := range r.Share {
			if shareDeviceID(d) == s {
				return true
			}
		}
	}
	for _, l := range e.localShare {
		for _, d := range l {
			if shareDeviceID(d) == s {
				return true
			}
		}
	}
	return false
}

// peerLoop dials one configured peer address now and then. Each probe
// presents our proof in our Hello, so the peer admits us (it then dials
// us), and reads the peer's Hello: once the peer knows us its name carries
// its own proof, and we admit it with this address (which Syncthing
// re-resolves at every dial). A peer is never added before it proved the
// key, so a wrong-key node gets no connection at all.
func (e *Engine) peerLoop(peer string) {
	addr := peer
	if _, _, err := net.SplitHostPort(addr); err != nil {
		addr = net.JoinHostPort(addr, strconv.Itoa(DefaultPort))
	}
	log := e.log.WithField("peer_addr", addr)
	delay := time.Duration(0)
	failures, unnamed := 0, 0
	verified := false
	for {
		select {
		case <-e.ctx.Done():
			return
		case <-time.After(delay):
		}
		id, name, err := e.probe(addr)
		switch {
		case err != nil:
			failures++
			if failures == 3 {
				log.WithError(err).Warn("cannot reach peer; will keep trying")
			}
		case id == e.myID:
			return // our own address in PEERS
		default:
			if failures >= 3 {
				log.Info("peer reachable again")
			}
			failures = 0
			if name == "" {
				unnamed++ // it does not know us yet; our Hello just told it
			} else {
				verified = e.learnPeer(id, name, addr)
			}
		}
		switch {
		case verified:
			delay = e.opts.PeerProbeInterval
		case err == nil && unnamed < 20:
			delay = 250 * time.Millisecond
		default:
			delay = 2 * time.Second
		}
	}
}

// learnPeer admits a probed peer that proved the key and reports whether
// it did.
func (e *Engine) learnPeer(id protocol.DeviceID, name, addr string) bool {
	e.mu.Lock()
	refused := e.refused[id].active(time.Now())
	e.mu.Unlock()
	if refused {
		return false
	}
	if _, ok := e.verifyName(id, name); !ok {
		e.refuse(id, addr, errNoProof, false)
		return false
	}
	e.admit(id, name, addr, addr, "probe")
	return true
}

// probe opens a BEP TLS session to addr, exchanges Hellos and closes. It
// returns the peer's device ID and the name it announced (empty when it
// does not know us yet).
func (e *Engine) probe(addr string) (protocol.DeviceID, string, error) {
	ctx, cancel := context.WithTimeout(e.ctx, 5*time.Second)
	defer cancel()
	d := tls.Dialer{
		NetDialer: &net.Dialer{},
		Config: &tls.Config{
			Certificates:       []tls.Certificate{e.cert},
			NextProtos:         []string{bepProtocol},
			InsecureSkipVerify: true, // identity is the certificate hash, checked below
			MinVersion:         tls.VersionTLS12,
		},
	}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return protocol.EmptyDeviceID, "", err
	}
	defer c.Close()
	tc := c.(*tls.Conn)
	_ = tc.SetDeadline(time.Now().Add(5 * time.Second))
	certs := tc.ConnectionState().PeerCertificates
	if len(certs) == 0 {
		return protocol.EmptyDeviceID, "", errors.New("peer sent no certificate")
	}
	id := protocol.NewDeviceID(certs[0].Raw)
	if id == e.myID {
		return id, "", nil
	}
	hello, err := protocol.ExchangeHello(tc, protocol.Hello{
		DeviceName:    e.myName,
		ClientName:    "syncthing",
		ClientVersion: build.Version,
		Timestamp:     time.Now().UnixNano(),
	})
	if err != nil {
		// The device ID is still good; the name is just unknown.
		return id, "", nil //nolint:nilerr
	}
	return id, hello.DeviceName, nil
}

func mergeAddrs(a, b []string) []string {
	out := append([]string(nil), a...)
	for _, x := range b {
		found := false
		for _, y := range out {
			if x == y {
				found = true
				break
			}
		}
		if !found {
			out = append(out, x)
		}
	}
	return out
}

// shareDeviceID returns the device ID part of a share entry
// ("DEVICEID" or "DEVICEID@tcp://host:port").
func shareDeviceID(s string) string {
	id, _ := splitShare(s)
	return id
}

func splitShare(s string) (id string, addr string) {
	for i := 0; i < len(s); i++ {
		if s[i] == '@' {
			return normalizeID(s[:i]), s[i+1:]
		}
	}
	return normalizeID(s), ""
}

func normalizeID(s string) string {
	id, err := protocol.DeviceIDFromString(s)
	if err != nil {
		return s
	}
	return id.String()
}

// ParseShare validates a share entry: a Syncthing device ID, optionally
// followed by "@host:port" (or "@tcp://host:port") where that device
// listens. Without an address the device must dial us.
func ParseShare(s string) error {
	id, addr := splitShare(s)
	if dev, err := protocol.DeviceIDFromString(id); err != nil || dev == protocol.EmptyDeviceID {
		return fmt.Errorf("share %q: not a Syncthing device ID", s)
	}
	if addr != "" {
		if _, _, err := net.SplitHostPort(trimScheme(addr)); err != nil {
			return fmt.Errorf("share %q: address: %w", s, err)
		}
	}
	return nil
}

func trimScheme(a string) string {
	for _, p := range []string{"tcp://", "tcp4://", "tcp6://"} {
		if len(a) > len(p) && a[:len(p)] == p {
			return a[len(p):]
		}
	}
	return a
}
