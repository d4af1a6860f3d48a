// Package access decides which repositories a registry mirror may serve, from allow and deny
// lists of glob patterns.
package access

import (
	"fmt"
	"strings"
)

// Rules holds compiled allow and deny patterns. A name is denied when it matches any deny
// pattern, or when allow patterns exist and it matches none. The zero value allows everything.
//
// Patterns: "*" matches within one path segment (no '/'), "**" matches across segments, every
// other byte matches itself. "library/*" allows library/nginx but not library/a/b; "myorg/**"
// allows everything under myorg/.
type Rules struct {
	allow []pattern
	deny  []pattern
}

type pattern struct {
	text  string
	parts []string // literal pieces between wildcards
	stars []string // "*" or "**" after each part but the last
}

// Compile checks and compiles the patterns.
func Compile(allow, deny []string) (*Rules, error) {
	r := &Rules{}
	for _, list := range []struct {
		in  []string
		out *[]pattern
		key string
	}{{allow, &r.allow, "allow"}, {deny, &r.deny, "deny"}} {
		for _, p := range list.in {
			cp, err := compile(p)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", list.key, err)
			}
			*list.out = append(*list.out, cp)
		}
	}
	return r, nil
}

func compile(p string) (pattern, error) {
	if p == "" || strings.Contains(p, "***") || strings.HasPrefix(p, "/") || strings.HasSuffix(p, "/") {
		return pattern{}, fmt.Errorf("pattern %q: want a repository name with * or ** wildcards, e.g. \"library/*\" or \"myorg/**\"", p)
	}
	cp := pattern{text: p}
	rest := p
	for {
		i := strings.IndexByte(rest, '*')
		if i < 0 {
			cp.parts = append(cp.parts, rest)
			return cp, nil
		}
		cp.parts = append(cp.parts, rest[:i])
		if strings.HasPrefix(rest[i:], "**") {
			cp.stars = append(cp.stars, "**")
			rest = rest[i+2:]
		} else {
			cp.stars = append(cp.stars, "*")
			rest = rest[i+1:]
		}
	}
}

// Check returns "" when name may be served, else the rule that refuses it, for the error message.
// It does not allocate.
func (r *Rules) Check(name []byte) string {
	if r == nil {
		return ""
	}
	for i := range r.deny {
		if r.deny[i].match(name) {
			return "deny " + r.deny[i].text
		}
	}
	if len(r.allow) == 0 {
		return ""
	}
	for i := range r.allow {
		if r.allow[i].match(name) {
			return ""
		}
	}
	return "not in the allow list"
}

// Empty reports whether the rules allow everything.
func (r *Rules) Empty() bool { return r == nil || (len(r.allow) == 0 && len(r.deny) == 0) }

func (p *pattern) match(name []byte) bool { return matchFrom(p.parts, p.stars, string(name)) }

// matchFrom matches s against parts[0] star[0] parts[1] ... with backtracking over the wildcards.
// Patterns are short, so the worst case stays small.
func matchFrom(parts, stars []string, s string) bool {
	if !strings.HasPrefix(s, parts[0]) {
		return false
	}
	s = s[len(parts[0]):]
	if len(stars) == 0 {
		return s == ""
	}
	crossSlash := stars[0] == "**"
	for i := 0; i <= len(s); i++ {
		if matchFrom(parts[1:], stars[1:], s[i:]) {
			return true
		}
		if i < len(s) && s[i] == '/' && !crossSlash {
			return false
		}
	}
	return false
}
