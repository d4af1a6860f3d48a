package upstream

import (
	"strings"
)

// Challenge is a parsed WWW-Authenticate header.
// See https://datatracker.ietf.org/doc/html/rfc6750#section-3 and
// https://distribution.github.io/distribution/spec/auth/token/.
type Challenge struct {
	// Scheme is "Bearer", "Basic", or empty when the registry needs no auth.
	Scheme string
	Realm  string
	// Service identifies the registry to its token server.
	Service string
	// Scope is the scope the failed request needed, when the registry says.
	Scope string
	// Error is the RFC 6750 error code, e.g. "insufficient_scope".
	Error string
}

// ParseChallenge parses a WWW-Authenticate value such as
// `Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull"`.
// Unknown parameters are ignored; a value it cannot read yields ok=false.
func ParseChallenge(h string) (c Challenge, ok bool) {
	h = strings.TrimSpace(h)
	scheme, rest, _ := strings.Cut(h, " ")
	switch {
	case strings.EqualFold(scheme, "bearer"):
		c.Scheme = "Bearer"
	case strings.EqualFold(scheme, "basic"):
		c.Scheme = "Basic"
	default:
		return c, false
	}
	for rest = strings.TrimSpace(rest); rest != ""; rest = strings.TrimLeft(rest, ", ") {
		key, val, more, good := nextParam(rest)
		if !good {
			return c, false
		}
		rest = more
		switch strings.ToLower(key) {
		case "realm":
			c.Realm = val
		case "service":
			c.Service = val
		case "scope":
			c.Scope = val
		case "error":
			c.Error = val
		}
	}
	return c, true
}

// nextParam reads key=value or key="quoted value" from the start of s.
func nextParam(s string) (key, val, rest string, ok bool) {
	eq := strings.IndexByte(s, '=')
	if eq <= 0 {
		return "", "", "", false
	}
	key, s = strings.TrimSpace(s[:eq]), strings.TrimLeft(s[eq+1:], " ")
	if strings.HasPrefix(s, `"`) {
		var b strings.Builder
		for i := 1; i < len(s); i++ {
			switch s[i] {
			case '\\':
				if i+1 < len(s) {
					i++
					b.WriteByte(s[i])
				}
			case '"':
				return key, b.String(), s[i+1:], true
			default:
				b.WriteByte(s[i])
			}
		}
		return "", "", "", false // unterminated quote
	}
	end := strings.IndexByte(s, ',')
	if end < 0 {
		end = len(s)
	}
	return key, strings.TrimSpace(s[:end]), s[end:], true
}

// String formats the challenge as a WWW-Authenticate value, quoting every parameter.
func (c Challenge) String() string {
	var b strings.Builder
	b.WriteString(c.Scheme)
	sep := " "
	add := func(k, v string) {
		if v == "" {
			return
		}
		b.WriteString(sep)
		b.WriteString(k)
		b.WriteString(`="`)
		for i := 0; i < len(v); i++ {
			if v[i] == '"' || v[i] == '\\' {
				b.WriteByte('\\')
			}
			b.WriteByte(v[i])
		}
		b.WriteByte('"')
		sep = ","
	}
	add("realm", c.Realm)
	add("service", c.Service)
	add("scope", c.Scope)
	add("error", c.Error)
	return b.String()
}

// PrefixScope adds "library/" to single-component repository names in a token scope such as
// "repository:nginx:pull", as Docker Hub needs for official images. Other scopes are returned as is.
func PrefixScope(scope string) string {
	const repo = "repository:"
	if !strings.HasPrefix(scope, repo) {
		return scope
	}
	rest := scope[len(repo):]
	i := strings.LastIndexByte(rest, ':')
	if i <= 0 {
		return scope
	}
	name := rest[:i]
	if strings.IndexByte(name, '/') >= 0 {
		return scope
	}
	return repo + "library/" + rest
}

// PrefixScopes is PrefixScope for a scope parameter that may hold several space-separated scopes.
func PrefixScopes(scopes string) string {
	if !strings.Contains(scopes, " ") {
		return PrefixScope(scopes)
	}
	parts := strings.Fields(scopes)
	for i, p := range parts {
		parts[i] = PrefixScope(p)
	}
	return strings.Join(parts, " ")
}
