// Package settings parses the values both plugins take from
// `docker plugin set`: lists of peers as host[:port]. It exists so that
// syncvol and meshnet accept and reject peers the same way.
package settings

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
)

// ErrInvalid marks a setting that cannot be used.
var ErrInvalid = errors.New("invalid plugin setting")

// ParsePeers splits the value of setting key (commas or spaces) into host:port
// strings, adding defaultPort where none is given. Hosts may be names, IPv4
// or bracketed IPv6 addresses.
func ParsePeers(key, v string, defaultPort int) ([]string, error) {
	var out []string
	for _, p := range strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' || r == '\n' || r == '\t' }) {
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
