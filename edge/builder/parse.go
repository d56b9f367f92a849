package builder

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Errors a label value can have. Diagnostics wrap them with the offending value.
var (
	ErrEmpty     = errors.New("empty value")
	ErrBadHost   = errors.New("invalid host name")
	ErrBadPort   = errors.New("invalid port")
	ErrBadPath   = errors.New("invalid path prefix")
	ErrBadName   = errors.New("invalid name")
	ErrBadBool   = errors.New("invalid boolean")
	ErrBadRule   = errors.New("invalid rule")
	ErrBadScheme = errors.New("invalid scheme")
)

func parseBool(v string) (bool, error) {
	b, err := strconv.ParseBool(strings.TrimSpace(v))
	if err != nil {
		return false, fmt.Errorf("%w %q: use true or false", ErrBadBool, v)
	}
	return b, nil
}

// parseHosts parses a comma-separated list of host names.
func parseHosts(v string) ([]string, error) {
	var hosts []string
	for _, h := range strings.Split(v, ",") {
		h = strings.ToLower(strings.TrimSpace(h))
		if err := checkHost(h); err != nil {
			return nil, err
		}
		hosts = append(hosts, h)
	}
	return hosts, nil
}

// checkHost accepts DNS names (RFC 1123 labels), which is what Traefik's
// Host matcher compares against the request's Host header.
func checkHost(h string) error {
	if h == "" {
		return fmt.Errorf("%w: empty host name", ErrBadHost)
	}
	if len(h) > 253 {
		return fmt.Errorf("%w %q: longer than 253 characters", ErrBadHost, h)
	}
	for _, l := range strings.Split(h, ".") {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return fmt.Errorf("%w %q: each dot-separated part must be 1-63 letters, digits or inner hyphens", ErrBadHost, h)
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return fmt.Errorf("%w %q: each dot-separated part must be 1-63 letters, digits or inner hyphens", ErrBadHost, h)
			}
		}
	}
	return nil
}

func parsePort(v string) (int, error) {
	p, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || p < 1 || p > 65535 {
		return 0, fmt.Errorf("%w %q: use the container port, 1-65535", ErrBadPort, v)
	}
	return p, nil
}

func parsePriority(v string) (int, error) {
	p, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || p < 0 {
		return 0, fmt.Errorf("%w priority %q: use a non-negative integer", ErrBadName, v)
	}
	return p, nil
}

// parsePath parses a path prefix such as /api.
func parsePath(v string) (string, error) {
	p := strings.TrimSpace(v)
	if p == "" || p[0] != '/' {
		return "", fmt.Errorf("%w %q: must start with /", ErrBadPath, v)
	}
	for _, c := range p {
		if c <= ' ' || c == '`' || c == '"' || c == '?' || c == '#' || c == 0x7f {
			return "", fmt.Errorf("%w %q: no spaces, quotes, backticks, ? or #", ErrBadPath, v)
		}
	}
	return p, nil
}

func parseScheme(v string) (string, error) {
	s := strings.ToLower(strings.TrimSpace(v))
	if s != "http" && s != "https" {
		return "", fmt.Errorf("%w %q: use http or https", ErrBadScheme, v)
	}
	return s, nil
}

// parseName parses one Traefik object name (entry point, middleware, cert
// resolver, service), which may carry a @provider suffix.
func parseName(v, what string) (string, error) {
	n := strings.TrimSpace(v)
	if n == "" {
		return "", fmt.Errorf("%w: empty %s name", ErrEmpty, what)
	}
	at := 0
	for i := 0; i < len(n); i++ {
		c := n[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_', c == '.':
		case c == '@' && i > 0 && i < len(n)-1:
			at++
		default:
			return "", fmt.Errorf("%w: %s %q: use letters, digits, - _ . and one @provider suffix", ErrBadName, what, v)
		}
	}
	if at > 1 {
		return "", fmt.Errorf("%w: %s %q: use letters, digits, - _ . and one @provider suffix", ErrBadName, what, v)
	}
	return n, nil
}

// parseNames parses a comma-separated list of names.
func parseNames(v, what string) ([]string, error) {
	var out []string
	for _, n := range strings.Split(v, ",") {
		n, err := parseName(n, what)
		if err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, nil
}

// Redacted replaces a label value that may be a secret wherever edge shows
// or logs it.
const Redacted = "[redacted]"

// secretKeyWords are parts of label keys whose values are secrets or may
// carry one: basic/digest auth users, passwords, tokens, keys.
var secretKeyWords = []string{"auth", "users", "passw", "secret", "token", "apikey", "api-key", "api_key", "privatekey", "credential", "htpasswd"}

// secretValueMarks are what password hashes and credentials look like:
// htpasswd's MD5 ($apr1$), bcrypt ($2a$, $2b$, $2y$), crypt's SHA ($5$, $6$),
// {SHA}, and user:password@ in a URL.
var secretValueMarks = []string{"$apr1$", "$2a$", "$2b$", "$2y$", "$5$", "$6$", "$1$", "{SHA}", "{SSHA}"}

// redact returns value, or Redacted when the label key names a secret or
// the value looks like a credential.
func redact(key, value string) string {
	if value == "" {
		return value
	}
	lk := strings.ToLower(key)
	for _, w := range secretKeyWords {
		if strings.Contains(lk, w) {
			return Redacted
		}
	}
	if LooksSecret(value) {
		return Redacted
	}
	return value
}

// LooksSecret reports whether v contains what looks like a password hash or
// a URL with a password.
func LooksSecret(v string) bool {
	if strings.Contains(strings.ToLower(v), "authorization") {
		return true
	}
	for _, m := range secretValueMarks {
		if strings.Contains(v, m) {
			return true
		}
	}
	// user:password@host in a URL.
	if i := strings.Index(v, "://"); i >= 0 {
		rest := v[i+3:]
		if at := strings.IndexByte(rest, '@'); at > 0 {
			if end := strings.IndexAny(rest, "/?#"); end < 0 || at < end {
				if strings.Contains(rest[:at], ":") {
					return true
				}
			}
		}
	}
	return false
}
