package settings

import (
	"fmt"
	"math"
	"strings"
)

// MinKeyBits is the least estimated entropy a cluster secret (MESH_KEY,
// CLUSTER_KEY) must have: 80 bits keep an offline guess at one captured
// handshake or membership proof out of reach (MESH_KEY is stretched with
// Argon2id on top, see mesh.derivePSK).
const MinKeyBits = 80

// KeyBits estimates, conservatively, the entropy in bits of a secret typed
// or generated as text: its length (at most twice its distinct characters,
// and only one period of a repeated string) times the bits per character
// of the alphabet it draws from (hex digits only: 4; otherwise the classes
// it uses: lower and upper case letters, digits, other printable). It is
// meant to refuse what is plainly weak ("aaaa…", "passwordpassword", a
// short hex string), not to measure a passphrase's strength.
func KeyBits(s string) float64 {
	if s == "" {
		return 0
	}
	rs := []rune(s)
	n := period(rs)
	distinct := map[rune]bool{}
	for _, r := range rs {
		distinct[r] = true
	}
	n = min(n, 2*len(distinct))
	var lower, upper, digit, other bool
	hex := true
	for _, r := range rs {
		switch {
		case r >= 'a' && r <= 'z':
			lower = true
		case r >= 'A' && r <= 'Z':
			upper = true
		case r >= '0' && r <= '9':
			digit = true
		default:
			other = true
		}
		if !strings.ContainsRune("0123456789abcdefABCDEF", r) {
			hex = false
		}
	}
	pool := 0
	for _, c := range []struct {
		used bool
		size int
	}{{lower, 26}, {upper, 26}, {digit, 10}, {other, 33}} {
		if c.used {
			pool += c.size
		}
	}
	if hex {
		pool = 16
	}
	return float64(n) * math.Log2(float64(pool))
}

// period returns the length of the shortest p such that rs is rs[:p]
// repeated (and cut): len(rs) for a string that does not repeat.
func period(rs []rune) int {
	for p := 1; p < len(rs); p++ {
		ok := true
		for i := p; i < len(rs); i++ {
			if rs[i] != rs[i-p] {
				ok = false
				break
			}
		}
		if ok {
			return p
		}
	}
	return len(rs)
}

// MinSecretLen is the least length of a cluster secret.
const MinSecretLen = 16

// Secret checks the cluster secret v of setting key: at least MinSecretLen
// characters and MinKeyBits of estimated entropy. The error names the
// setting and how to make a good one, never the value.
func Secret(key, v string) error {
	if len(v) < MinSecretLen {
		return fmt.Errorf("%w: %s must be at least %d characters (try: openssl rand -hex 32)", ErrInvalid, key, MinSecretLen)
	}
	if b := KeyBits(v); b < MinKeyBits {
		return fmt.Errorf("%w: %s is too easy to guess (about %.0f bits of entropy, at least %d needed: no repeats, a larger alphabet or more characters); make one with: openssl rand -hex 32", ErrInvalid, key, b, MinKeyBits)
	}
	return nil
}
