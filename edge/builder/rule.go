package builder

import (
	"fmt"
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
	p := &ruleParser{src: rule}
	p.next()
	out, err := p.expr()
	if err == nil && p.tok.kind != tEOF {
		err = p.errorf("unexpected %q", p.tok.text)
	}
	if err != nil {
		return "", nil, fmt.Errorf("%w %q: %v", ErrBadRule, rule, err)
	}
	return out, p.hosts, nil
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

// expr := term { ("&&" | "||") term }
func (p *ruleParser) expr() (string, error) {
	p.depth++
	defer func() { p.depth-- }()
	if p.depth > 50 {
		return "", p.errorf("rule nested too deeply")
	}
	out, err := p.term()
	if err != nil {
		return "", err
	}
	for p.tok.kind == tAnd || p.tok.kind == tOr {
		op := p.tok.text
		p.next()
		rhs, err := p.term()
		if err != nil {
			return "", err
		}
		out += " " + op + " " + rhs
	}
	return out, nil
}

// term := "!" term | "(" expr ")" | matcher "(" string { "," string } ")"
func (p *ruleParser) term() (string, error) {
	switch p.tok.kind {
	case tNot:
		p.next()
		t, err := p.term()
		return "!" + t, err
	case tLParen:
		p.next()
		e, err := p.expr()
		if err != nil {
			return "", err
		}
		if p.tok.kind != tRParen {
			return "", p.errorf("missing )")
		}
		p.next()
		return "(" + e + ")", nil
	case tIdent:
		return p.call()
	case tError:
		return "", p.errorf("%s", p.tok.text)
	case tEOF:
		return "", p.errorf("rule ends early")
	default:
		return "", p.errorf("unexpected %q", p.tok.text)
	}
}

func (p *ruleParser) call() (string, error) {
	name := p.tok.text
	if n, ok := renamedMatchers[name]; ok {
		name = n
	}
	if !knownMatchers[name] {
		return "", p.errorf("unknown matcher %s; Traefik v3 knows Host, HostRegexp, Path, PathPrefix, PathRegexp, Method, Header, HeaderRegexp, Query, QueryRegexp, ClientIP", p.tok.text)
	}
	p.next()
	if p.tok.kind != tLParen {
		return "", p.errorf("missing ( after %s", name)
	}
	p.next()
	var args []string
	for {
		if p.tok.kind == tError {
			return "", p.errorf("%s", p.tok.text)
		}
		if p.tok.kind != tString {
			return "", p.errorf("%s takes `quoted` arguments", name)
		}
		args = append(args, p.tok.text)
		p.next()
		if p.tok.kind == tRParen {
			p.next()
			break
		}
		if p.tok.kind != tComma {
			return "", p.errorf("missing , or ) in %s", name)
		}
		p.next()
	}
	if name == "Host" {
		for i, h := range args {
			h = strings.ToLower(h)
			if err := checkHost(h); err != nil {
				return "", err
			}
			args[i] = h
			p.hosts = append(p.hosts, h)
		}
	}
	quote := func(args []string) string { return "`" + strings.Join(args, "`, `") + "`" }
	if expandedMatchers[name] && len(args) > 1 {
		alts := make([]string, len(args))
		for i, a := range args {
			alts[i] = name + "(" + quote([]string{a}) + ")"
		}
		return "(" + strings.Join(alts, " || ") + ")", nil
	}
	return name + "(" + quote(args) + ")", nil
}
