package mesh

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/crypto/curve25519"

	"github.com/homeswarm/homeswarm/internal/atomicfile"
)

// Key is an X25519 key, private or public. Its String form is base64, as in
// WireGuard; only ever print public keys.
type Key [32]byte

// String returns the key in base64.
func (k Key) String() string { return base64.StdEncoding.EncodeToString(k[:]) }

// Short returns the first 8 base64 characters, for logs.
func (k Key) Short() string { return k.String()[:8] }

// IsZero reports whether k is all zeroes.
func (k Key) IsZero() bool { return k == Key{} }

// ParseKey parses a base64 key.
func ParseKey(s string) (Key, error) {
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
	if err != nil || len(b) != 32 {
		return Key{}, fmt.Errorf("key must be 32 bytes in base64: %w", ErrBadKey)
	}
	return Key(b), nil
}

// ErrBadKey is returned for malformed keys.
var ErrBadKey = errors.New("mesh: malformed key")

// GeneratePrivateKey returns a new clamped X25519 private key.
func GeneratePrivateKey() (Key, error) {
	var k Key
	if _, err := rand.Read(k[:]); err != nil {
		return Key{}, fmt.Errorf("generate key: %w", err)
	}
	k[0] &= 248
	k[31] = (k[31] & 127) | 64
	return k, nil
}

// PublicKey returns the public key of private key k.
func (k Key) PublicKey() Key {
	pub, err := curve25519.X25519(k[:], curve25519.Basepoint)
	if err != nil {
		// only for low-order points, impossible with the base point
		panic(err)
	}
	return Key(pub)
}

// LoadOrCreatePrivateKey reads the base64 private key at path, creating it
// (mode 0600, parent directories 0700) if it does not exist. A node keeps
// its identity across restarts this way.
func LoadOrCreatePrivateKey(path string) (Key, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		k, err := ParseKey(string(b))
		if err != nil {
			return Key{}, fmt.Errorf("read private key %s: %w", path, err)
		}
		return k, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return Key{}, fmt.Errorf("read private key: %w", err)
	}
	k, err := GeneratePrivateKey()
	if err != nil {
		return Key{}, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return Key{}, fmt.Errorf("create key directory: %w", err)
	}
	if err := atomicfile.Write(path, []byte(k.String()+"\n"), 0o600); err != nil {
		return Key{}, fmt.Errorf("write private key: %w", err)
	}
	return k, nil
}
