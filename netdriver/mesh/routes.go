package mesh

import (
	"net/netip"
	"slices"
)

// routeTable maps IPv4 destinations to peers. It is immutable once built and
// swapped atomically, so the data path looks up without locks.
type routeTable struct {
	hosts map[netip.Addr]*peer // /32 routes, the common case: mesh addresses
	nets  []routeEntry         // other prefixes, longest first
}

type routeEntry struct {
	prefix netip.Prefix
	peer   *peer
}

func (t *routeTable) lookup(a netip.Addr) *peer {
	if t == nil {
		return nil
	}
	if p := t.hosts[a]; p != nil {
		return p
	}
	for i := range t.nets {
		if t.nets[i].prefix.Contains(a) {
			return t.nets[i].peer
		}
	}
	return nil
}

// Route is one prefix routed to a peer.
type Route struct {
	Prefix netip.Prefix `json:"prefix"`
	Peer   string       `json:"peer"` // public key
}

// buildRoutes builds a table from each peer's announced prefixes. A prefix
// claimed by two peers goes to the one that began announcing it last: an
// address that moved (a container rescheduled while its old node, cut off
// or with its engine killed, still announces it) follows the move; prefixes
// overlapping our own are ignored so that no peer can take our addresses.
func buildRoutes(own []netip.Prefix, claims []routeClaim) *routeTable {
	slices.SortFunc(claims, func(a, b routeClaim) int {
		if a.when != b.when {
			if a.when > b.when {
				return -1
			}
			return 1
		}
		return slices.Compare(a.peer.key[:], b.peer.key[:])
	})
	chosen := map[netip.Prefix]*peer{}
	for _, c := range claims {
		pf := c.prefix
		if !pf.Addr().Is4() {
			continue
		}
		if overlapsAny(pf, own) {
			continue
		}
		if _, ok := chosen[pf]; !ok {
			chosen[pf] = c.peer
		}
	}
	t := &routeTable{hosts: map[netip.Addr]*peer{}}
	for pf, p := range chosen {
		if pf.IsSingleIP() {
			t.hosts[pf.Addr()] = p
		} else {
			t.nets = append(t.nets, routeEntry{pf, p})
		}
	}
	slices.SortFunc(t.nets, func(a, b routeEntry) int { return b.prefix.Bits() - a.prefix.Bits() })
	return t
}

type routeClaim struct {
	prefix netip.Prefix
	peer   *peer
	when   int64
}

func overlapsAny(p netip.Prefix, set []netip.Prefix) bool {
	for _, q := range set {
		if q.IsSingleIP() || p.IsSingleIP() {
			if p.Overlaps(q) {
				return true
			}
			continue
		}
		if p == q {
			return true
		}
	}
	return false
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}
