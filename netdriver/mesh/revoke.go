package mesh

import (
	"net/netip"
	"slices"
	"sync"

	"github.com/homeswarm/homeswarm/netdriver/wire"
)

// revocations are the nodes this node refuses for good (Options.RevokedKeys
// and RevokedAddrs), like Nebula's pki.blocklist: enforced by each member
// from its own configuration, so no member can revoke another in anyone
// else's name. A revoked node that makes itself a new key is kept out by
// rotating the cluster key (AcceptClusterKeys), one node at a time.
type revocations struct {
	keys  map[Key]bool
	addrs map[netip.Addr]bool

	mu     sync.Mutex
	logged map[Key]bool
}

func newRevocations(keys []Key, addrs []netip.Addr) *revocations {
	r := &revocations{keys: map[Key]bool{}, addrs: map[netip.Addr]bool{}, logged: map[Key]bool{}}
	for _, k := range keys {
		r.keys[k] = true
	}
	for _, a := range addrs {
		r.addrs[a.Unmap()] = true
	}
	return r
}

// isRevoked reports whether the node holding k, as far as this node knows
// it, is revoked: by key, by the mesh address bound to k in the address
// book, or by a mesh address it announces in info (nil: not known).
func (m *Mesh) isRevoked(k Key, info *wire.NodeInfo) bool {
	r := m.revoked
	if r.keys[k] {
		return true
	}
	if len(r.addrs) == 0 {
		return false
	}
	if a, ok := m.book.addrOf(k); ok && r.addrs[a] {
		return true
	}
	if info != nil {
		for _, pf := range info.Prefixes {
			if pf.IsSingleIP() && r.addrs[pf.Addr()] {
				return true
			}
		}
	}
	return false
}

// refuseRevoked counts and logs (once per key) a revoked node's attempt.
func (m *Mesh) refuseRevoked(k Key, from path) {
	m.drop(dropRevoked)
	r := m.revoked
	r.mu.Lock()
	first := !r.logged[k] && len(r.logged) < maxPeers
	if first {
		r.logged[k] = true
	}
	r.mu.Unlock()
	if first {
		m.log.WithField("peer", k.String()).WithField("endpoint", from.ep.String()).Warn("refusing a revoked node (MESH_REVOKED)")
	}
}

// revokedStatus lists the revocations for Status.
func (m *Mesh) revokedStatus() []string {
	var out []string
	for k := range m.revoked.keys {
		out = append(out, k.String())
	}
	for a := range m.revoked.addrs {
		out = append(out, a.String())
	}
	slices.Sort(out)
	return out
}
