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

// routeInput is what a route table is built from.
type routeInput struct {
	own     []netip.Prefix // ours: never routed to a peer
	meshNet netip.Prefix   // the mesh's network: /32s in it are node addresses
	book    *addrBook      // which key owns which node address
	prev    *routeTable    // the table being replaced
	claims  []routeClaim
}

// buildRoutes builds a table from each peer's announced prefixes. A member
// cannot take what another holds:
//
//   - prefixes overlapping our own are ignored;
//   - inside the mesh's network only /32s are routed, each to the one key
//     the address book binds it to (the first key that announced it);
//   - any other prefix claimed by several peers stays with the peer it is
//     routed to now for as long as that peer still announces it and is
//     live (heard from within the path timeout). When it stops (a container
//     moved, its old node withdrew it, died or is cut off) the prefix goes
//     to the live claimant that announced it first.
//
// It returns the table, the claims refused, and whether any prefix has
// several claimants (liveness may then change the choice: rebuild on the
// timer).
func buildRoutes(in routeInput) (t *routeTable, refused []routeClaim, contested bool) {
	claims := in.claims
	slices.SortFunc(claims, func(a, b routeClaim) int {
		if a.when != b.when {
			if a.when < b.when {
				return -1
			}
			return 1
		}
		if c := slices.Compare(a.peer.key[:], b.peer.key[:]); c != 0 {
			return c
		}
		return comparePrefix(a.prefix, b.prefix)
	})
	chosen := map[netip.Prefix]*peer{}
	byPrefix := map[netip.Prefix][]routeClaim{}
	var order []netip.Prefix
	for _, c := range claims {
		pf := c.prefix
		if !pf.Addr().Is4() || overlapsAny(pf, in.own) {
			continue
		}
		if in.meshNet.IsValid() && pf.Overlaps(in.meshNet) {
			if !pf.IsSingleIP() || in.book == nil || !in.book.claim(pf.Addr(), c.peer.key) {
				refused = append(refused, c)
				continue
			}
			chosen[pf] = c.peer
			continue
		}
		if _, ok := byPrefix[pf]; !ok {
			order = append(order, pf)
		}
		byPrefix[pf] = append(byPrefix[pf], c)
	}
	for _, pf := range order {
		cs := byPrefix[pf]
		if len(cs) > 1 {
			contested = true
		}
		prev := in.prev.owner(pf)
		var pick *peer
		for _, c := range cs {
			if c.peer == prev && c.live {
				pick = prev
			}
		}
		if pick == nil {
			for _, c := range cs {
				if c.live {
					pick = c.peer
					break
				}
			}
		}
		if pick == nil {
			pick = cs[0].peer
			for _, c := range cs {
				if c.peer == prev {
					pick = prev
				}
			}
		}
		chosen[pf] = pick
	}
	t = &routeTable{hosts: map[netip.Addr]*peer{}}
	for pf, p := range chosen {
		if pf.IsSingleIP() {
			t.hosts[pf.Addr()] = p
		} else {
			t.nets = append(t.nets, routeEntry{pf, p})
		}
	}
	slices.SortFunc(t.nets, func(a, b routeEntry) int { return b.prefix.Bits() - a.prefix.Bits() })
	return t, refused, contested
}

// owner returns the peer the exact prefix pf is routed to, or nil.
func (t *routeTable) owner(pf netip.Prefix) *peer {
	if t == nil {
		return nil
	}
	if pf.IsSingleIP() {
		return t.hosts[pf.Addr()]
	}
	for _, e := range t.nets {
		if e.prefix == pf {
			return e.peer
		}
	}
	return nil
}

type routeClaim struct {
	prefix netip.Prefix
	peer   *peer
	when   int64 // when the peer began announcing it
	live   bool  // the peer was heard from within the path timeout
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
