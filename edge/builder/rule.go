package builder

import (
	"fmt"
	"slices"
	"strings"
)

// v3 matchers, and the v2 spellings edge rewrites to them.
var (
	knownMatchers = map[string]bool{
		"Host": true, "HostRegexp": true, "Path": true, "PathPrefix": true, "PathRegexp": true,
		"Method": true, "Header": true, "HeaderRegexp": true, "Query": true, "QueryRegexp": true,
		"ClientIP": true,
	}
	renamedMatchers = map[string]string{"Headers": "Header", "HeadersRegexp": "HeaderRegexp"}
	// Matchers that took several alternatives in v2 but one value in v3.
	expandedMatchers = map[string]bool{"Host": true, "Path": true, "PathPrefix": true, "Method": true, "ClientIP": true}
)

// normalizeRule checks a Traefik v2/v3 router rule and rewrites the v2
// spellings that Traefik v3 rejects: Host(`a`, `b`) becomes
// (Host(`a`) || Host(`b`)) and Headers becomes Header. It returns the rule in
// canonical form (backtick strings, single spaces) and the hosts of its Host
// matchers.
func normalizeRule(rule string) (string, []string, error) {
	out, hosts, _, err := parseRule(rule)
	return out, hosts, err
}

// parseRule is normalizeRule that also returns the set of hosts the rule can
// match at most: a rule such as Host(`a`) && PathPrefix(`/x`) matches only
// host a, while PathPrefix(`/x`) alone, HostRegexp or !Host(`a`) can match
// any host.
func parseRule(rule string) (string, []string, hostSet, error) {
	p := &ruleParser{src: rule}
	p.next()
	out, hs, err := p.expr()
	if err == nil && p.tok.kind != tEOF {
		err = p.errorf("unexpected %q", p.tok.text)
	}
	if err != nil {
		return "", nil, hostSet{}, fmt.Errorf("%w %q: %v", ErrBadRule, rule, err)
	}
	return out, p.hosts, hs, nil
}

// hostSet is the set of request hosts a rule can match: any host, or at
// most the listed ones.
type hostSet struct {
	any   bool
	hosts []string // sorted, unique; meaningful when !any
}

func finiteHosts(hosts []string) hostSet {
	h := slices.Clone(hosts)
	slices.Sort(h)
	return hostSet{hosts: slices.Compact(h)}
}

func (a hostSet) and(b hostSet) hostSet {
	switch {
	case a.any:
		return b
	case b.any:
		return a
	}
	var out []string
	for _, h := range a.hosts {
		if slices.Contains(b.hosts, h) {
			out = append(out, h)
		}
	}
	return hostSet{hosts: out}
}

func (a hostSet) or(b hostSet) hostSet {
	if a.any || b.any {
		return hostSet{any: true}
	}
	return finiteHosts(append(slices.Clone(a.hosts), b.hosts...))
}

type tokKind int

const (
	tEOF tokKind = iota
	tIdent
	tString
	tLParen
	tRParen
	tComma
	tNot
	tAnd
	tOr
	tError
)

type token struct {
	kind tokKind
	text string
	pos  int
}

type ruleParser struct {
	src   string
	pos   int
	tok   token
	hosts []string
	depth int
}

func (p *ruleParser) errorf(f string, args ...any) error {
	return fmt.Errorf("at offset %d: %s", p.tok.pos, fmt.Sprintf(f, args...))
}

func (p *ruleParser) next() {
	for p.pos < len(p.src) && (p.src[p.pos] == ' ' || p.src[p.pos] == '\t' || p.src[p.pos] == '\n' || p.src[p.pos] == '\r') {
		p.pos++
	}
	start := p.pos
	if p.pos >= len(p.src) {
		p.tok = token{kind: tEOF, pos: start}
		return
	}
	c := p.src[p.pos]
	switch {
	case c == '(':
		p.pos++
		p.tok = token{tLParen, "(", start}
	case c == ')':
		p.pos++
		p.tok = token{tRParen, ")", start}
	case c == ',':
		p.pos++
		p.tok = token{tComma, ",", start}
	case c == '!':
		p.pos++
		p.tok = token{tNot, "!", start}
	case strings.HasPrefix(p.src[p.pos:], "&&"):
		p.pos += 2
		p.tok = token{tAnd, "&&", start}
	case strings.HasPrefix(p.src[p.pos:], "||"):
		p.pos += 2
		p.tok = token{tOr, "||", start}
	case c == '`' || c == '"':
		end := strings.IndexByte(p.src[p.pos+1:], c)
		if end < 0 {
			p.tok = token{tError, "unterminated string", start}
			return
		}
		s := p.src[p.pos+1 : p.pos+1+end]
		p.pos += end + 2
		if strings.ContainsAny(s, "`\\") {
			p.tok = token{tError, "backtick or backslash inside a string", start}
			return
		}
		p.tok = token{tString, s, start}
	case c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z':
		for p.pos < len(p.src) && (p.src[p.pos] >= 'A' && p.src[p.pos] <= 'Z' || p.src[p.pos] >= 'a' && p.src[p.pos] <= 'z' || p.src[p.pos] >= '0' && p.src[p.pos] <= '9') {
			p.pos++
		}
		p.tok = token{tIdent, p.src[start:p.pos], start}
	default:
		p.pos++
		p.tok = token{tError, fmt.Sprintf("unexpected character %q", c), start}
	}
}

// expr := and { "||" and }, and := term { "&&" term }: && binds tighter,
// as in Traefik (Go's precedence).
func (p *ruleParser) expr() (string, hostSet, error) {
	p.depth++
	defer func() { p.depth-- }()
	if p.depth > 50 {
		return "", hostSet{}, p.errorf("rule nested too deeply")
	}
	out, hs, err := p.and()
	if err != nil {
		return "", hostSet{}, err
	}
	for p.tok.kind == tOr {
		p.next()
		rhs, rhs2, err := p.and()
		if err != nil {
			return "", hostSet{}, err
		}
		out += " || " + rhs
		hs = hs.or(rhs2)
	}
	return out, hs, nil
}

func (p *ruleParser) and() (string, hostSet, error) {
	out, hs, err := p.term()
	if err != nil {
		return "", hostSet{}, err
	}
	for p.tok.kind == tAnd {
		p.next()
		rhs, rhs2, err := p.term()
		if err != nil {
			return "", hostSet{}, err
		}
		out += " && " + rhs
		hs = hs.and(rhs2)
	}
	return out, hs, nil
}

// term := "!" term | "(" expr ")" | matcher "(" string { "," string } ")"
func (p *ruleParser) term() (string, hostSet, error) {
	switch p.tok.kind {
	case tNot:
		p.depth++
		defer func() { p.depth-- }()
		if p.depth > 50 {
			return "", hostSet{}, p.errorf("rule nested too deeply")
		}
		p.next()
		t, _, err := p.term()
		// A negation can match any host.
		return "!" + t, hostSet{any: true}, err
	case tLParen:
		p.next()
		e, hs, err := p.expr()
		if err != nil {
			return "", hostSet{}, err
		}
		if p.tok.kind != tRParen {
			return "", hostSet{}, p.errorf("missing )")
		}
		p.next()
		return "(" + e + ")", hs, nil
	case tIdent:
		return p.call()
	case tError:
		return "", hostSet{}, p.errorf("%s", p.tok.text)
	case tEOF:
		return "", hostSet{}, p.errorf("rule ends early")
	default:
		return "", hostSet{}, p.errorf("unexpected %q", p.tok.text)
	}
}

func (p *ruleParser) call() (string, hostSet, error) {
	name := p.tok.text
	if n, ok := renamedMatchers[name]; ok {
		name = n
	}
	if !knownMatchers[name] {
		return "", hostSet{}, p.errorf("unknown matcher %s; Traefik v3 knows Host, HostRegexp, Path, PathPrefix, PathRegexp, Method, Header, HeaderRegexp, Query, QueryRegexp, ClientIP", p.tok.text)
	}
	p.next()
	if p.tok.kind != tLParen {
		return "", hostSet{}, p.errorf("missing ( after %s", name)
	}
	p.next()
	var args []string
	for {
		if p.tok.kind == tError {
			return "", hostSet{}, p.errorf("%s", p.tok.text)
		}
		if p.tok.kind != tString {
			return "", hostSet{}, p.errorf("%s takes `quoted` arguments", name)
		}
		args = append(args, p.tok.text)
		p.next()
		if p.tok.kind == tRParen {
			p.next()
			break
		}
		if p.tok.kind != tComma {
			return "", hostSet{}, p.errorf("missing , or ) in %s", name)
		}
		p.next()
	}
	if name == "Host" {
		for i, h := range args {
			h = strings.ToLower(h)
			if err := checkHost(h); err != nil {
				return "", hostSet{}, err
			}
			args[i] = h
			p.hosts = append(p.hosts, h)
		}
	}
	hs := hostSet{any: true}
	if name == "Host" {
		hs = finiteHosts(args)
	}
	quote := func(args []string) string { return "`" + strings.Join(args, "`, `") + "`" }
	if expandedMatchers[name] && len(args) > 1 {
		alts := make([]string, len(args))
		for i, a := range args {
			alts[i] = name + "(" + quote([]string{a}) + ")"
		}
		return "(" + strings.Join(alts, " || ") + ")", hs, nil
	}
	return name + "(" + quote(args) + ")", hs, nil
}
