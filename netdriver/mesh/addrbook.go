package mesh

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sync"

	"github.com/homeswarm/homeswarm/internal/atomicfile"
)

// addrBook binds node mesh addresses to static keys, like WireGuard's
// AllowedIPs but learned: the first key seen announcing a mesh address owns
// it on this node for good, and a key owns at most one mesh address. The
// book is kept in a file (when it has a path) so that a restart does not
// open a window in which another member could take the address. Giving an
// address to another key (a node reinstalled with a new key) is an admin
// act: remove its entry from the file on each node and restart meshnet.
type addrBook struct {
	path string

	mu     sync.Mutex
	byAddr map[netip.Addr]Key
	byKey  map[Key]netip.Addr
	err    error // last error writing the file
}

// addrBookFile is the file's format: mesh address -> base64 public key.
type addrBookFile struct {
	Addresses map[string]string `json:"addresses"`
}

// ErrAddrBook is returned by New when the address book file is unreadable.
var ErrAddrBook = errors.New("mesh: address book unreadable")

func loadAddrBook(path string) (*addrBook, error) {
	b := &addrBook{path: path, byAddr: map[netip.Addr]Key{}, byKey: map[Key]netip.Addr{}}
	if path == "" {
		return b, nil
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return b, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrAddrBook, err)
	}
	var f addrBookFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("%w: %s: %v (fix or remove the file: every peer's address is then learned afresh)", ErrAddrBook, path, err)
	}
	for as, ks := range f.Addresses {
		a, err := netip.ParseAddr(as)
		if err != nil || !a.Is4() {
			return nil, fmt.Errorf("%w: %s: address %q", ErrAddrBook, path, as)
		}
		k, err := ParseKey(ks)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: key of %s: %v", ErrAddrBook, path, as, err)
		}
		if _, dup := b.byKey[k]; dup {
			return nil, fmt.Errorf("%w: %s: key %s holds two addresses", ErrAddrBook, path, k.Short())
		}
		b.byAddr[a], b.byKey[k] = k, a
	}
	return b, nil
}

// claim reports whether key k may use mesh address a, binding a to k when
// neither is bound yet (and writing the file).
func (b *addrBook) claim(a netip.Addr, k Key) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if owner, ok := b.byAddr[a]; ok {
		return owner == k
	}
	if _, ok := b.byKey[k]; ok {
		return false // a key holds one mesh address
	}
	b.byAddr[a], b.byKey[k] = k, a
	b.err = b.saveLocked()
	return true
}

// owner returns the key bound to a.
func (b *addrBook) owner(a netip.Addr) (Key, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	k, ok := b.byAddr[a]
	return k, ok
}

// addrOf returns the mesh address bound to k.
func (b *addrBook) addrOf(k Key) (netip.Addr, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	a, ok := b.byKey[k]
	return a, ok
}

func (b *addrBook) saveLocked() error {
	if b.path == "" {
		return nil
	}
	f := addrBookFile{Addresses: make(map[string]string, len(b.byAddr))}
	for a, k := range b.byAddr {
		f.Addresses[a.String()] = k.String()
	}
	data, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.Write(b.path, append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("write address book: %w", err)
	}
	return nil
}

// takeErr returns and clears the last write error.
func (b *addrBook) takeErr() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	err := b.err
	b.err = nil
	return err
}
