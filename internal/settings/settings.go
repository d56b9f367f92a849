// Package settings parses the values homeswarm's programs take from their
// environment (`docker plugin set` for syncvol and meshnet, the service's
// environment for edge): ports, log levels, durations and lists of peers as
// host[:port]. It exists so that every program accepts and rejects a
// setting the same way, and names the setting when it rejects it: a bad
// setting stops the program.
package settings

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
)

// ErrInvalid marks a setting that cannot be used.
var ErrInvalid = errors.New("invalid setting")

// Port parses the value v of setting key as a port number (1-65535). An
// empty v gives def.
func Port(key, v string, def int) (int, error) {
	if v == "" {
		return def, nil
	}
	p, err := strconv.Atoi(v)
	if err != nil || p < 1 || p > 65535 {
		return def, fmt.Errorf("%w: %s=%q is not a port number (1-65535)", ErrInvalid, key, v)
	}
	return p, nil
}

// LogLevel parses the value v of setting key as a logrus level name. An
// empty v gives logrus.InfoLevel.
func LogLevel(key, v string) (logrus.Level, error) {
	if v == "" {
		return logrus.InfoLevel, nil
	}
	l, err := logrus.ParseLevel(v)
	if err != nil {
		return logrus.InfoLevel, fmt.Errorf("%w: %s=%q; use one of error, warn, info, debug (or trace, fatal, panic)", ErrInvalid, key, v)
	}
	return l, nil
}

// Duration parses the value v of setting key as a Go duration (500ms, 20s,
// 1m) from lo to hi; hi <= 0 means no upper bound. An empty v gives def.
func Duration(key, v string, def, lo, hi time.Duration) (time.Duration, error) {
	if v == "" {
		return def, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < lo || hi > 0 && d > hi {
		want := fmt.Sprintf("of at least %s", lo)
		if hi > 0 {
			want = fmt.Sprintf("from %s to %s", lo, hi)
		}
		return def, fmt.Errorf("%w: %s=%q is not a duration %s (such as 500ms, 20s or 1m)", ErrInvalid, key, v, want)
	}
	return d, nil
}

// List splits a setting's value into its entries, separated by commas or
// white space; empty entries are dropped.
func List(v string) []string {
	return strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' || r == '\n' || r == '\t' })
}

// ParsePeers splits the value of setting key (commas or spaces) into host:port
// strings, adding defaultPort where none is given. Hosts may be names, IPv4
// or bracketed IPv6 addresses.
func ParsePeers(key, v string, defaultPort int) ([]string, error) {
	var out []string
	for _, p := range List(v) {
		host, port := p, strconv.Itoa(defaultPort)
		if h, pt, err := net.SplitHostPort(p); err == nil {
			host, port = h, pt
		} else if strings.Count(p, ":") > 1 && !strings.HasPrefix(p, "[") {
			host = p // bare IPv6 address
		}
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 {
			return nil, fmt.Errorf("%w: %s entry %q has a bad port; use host[:port], several separated by commas", ErrInvalid, key, p)
		}
		if host == "" || !validHost(host) {
			return nil, fmt.Errorf("%w: %s entry %q is not host[:port]; use a DNS name or an IP address", ErrInvalid, key, p)
		}
		out = append(out, net.JoinHostPort(host, port))
	}
	return out, nil
}

func validHost(h string) bool {
	if net.ParseIP(h) != nil {
		return true
	}
	if len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(strings.TrimSuffix(h, "."), ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				return false
			}
		}
	}
	return true
}
