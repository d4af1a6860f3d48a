package upstream

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestParseChallenge(t *testing.T) {
	f := func(h string, want Challenge, wantOK bool) {
		t.Helper()
		got, ok := ParseChallenge(h)
		if ok != wantOK {
			t.Fatalf("unexpected ok for %q: got %v; want %v", h, ok, wantOK)
		}
		if ok && got != want {
			t.Fatalf("unexpected challenge for %q: got %+v; want %+v", h, got, want)
		}
	}

	// Docker Hub, as sent by registry-1.docker.io.
	f(`Bearer realm="https://auth.docker.io/token",service="registry.docker.io"`,
		Challenge{Scheme: "Bearer", Realm: "https://auth.docker.io/token", Service: "registry.docker.io"}, true)
	f(`Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull"`,
		Challenge{Scheme: "Bearer", Realm: "https://auth.docker.io/token", Service: "registry.docker.io", Scope: "repository:library/nginx:pull"}, true)
	f(`Bearer realm="https://ghcr.io/token",service="ghcr.io",scope="repository:owner/app:pull",error="insufficient_scope"`,
		Challenge{Scheme: "Bearer", Realm: "https://ghcr.io/token", Service: "ghcr.io", Scope: "repository:owner/app:pull", Error: "insufficient_scope"}, true)
	// Several actions in one scope: the comma is inside the quotes.
	f(`Bearer realm="https://r.example/token",scope="repository:a/b:pull,push"`,
		Challenge{Scheme: "Bearer", Realm: "https://r.example/token", Scope: "repository:a/b:pull,push"}, true)
	// Scheme and keys are case-insensitive; spaces around separators are tolerated.
	f(`bearer REALM="https://r.example/token" , Service = "svc"`,
		Challenge{Scheme: "Bearer", Realm: "https://r.example/token", Service: "svc"}, true)
	f(`  BEARER realm="x"  `, Challenge{Scheme: "Bearer", Realm: "x"}, true)
	// Unquoted values (token68-ish registries).
	f(`Bearer realm=https://r.example/token,service=svc`,
		Challenge{Scheme: "Bearer", Realm: "https://r.example/token", Service: "svc"}, true)
	// Quoted-pair escapes.
	f(`Bearer realm="https://r.example/token",service="a\"b\\c"`,
		Challenge{Scheme: "Bearer", Realm: "https://r.example/token", Service: `a"b\c`}, true)
	// Unknown parameters are ignored.
	f(`Bearer realm="x",foo="bar",service="y"`, Challenge{Scheme: "Bearer", Realm: "x", Service: "y"}, true)
	// Basic (Harbor, some private registries).
	f(`Basic realm="Registry Realm"`, Challenge{Scheme: "Basic", Realm: "Registry Realm"}, true)
	f(`Basic`, Challenge{Scheme: "Basic"}, true)
	f(`Bearer`, Challenge{Scheme: "Bearer"}, true)

	// Refused.
	f(``, Challenge{}, false)
	f(`Digest realm="x",nonce="y"`, Challenge{}, false)
	f(`Negotiate`, Challenge{}, false)
	f(`Bearer realm="unterminated`, Challenge{}, false)
	f(`Bearer realm`, Challenge{}, false)
	f(`Bearer ="x"`, Challenge{}, false)
}

func TestChallengeString(t *testing.T) {
	f := func(c Challenge, want string) {
		t.Helper()
		if got := c.String(); got != want {
			t.Fatalf("unexpected String(): got %q; want %q", got, want)
		}
		back, ok := ParseChallenge(c.String())
		if !ok || back != c {
			t.Fatalf("unexpected round trip of %q: got %+v, %v; want %+v", c.String(), back, ok, c)
		}
	}
	f(Challenge{Scheme: "Bearer", Realm: "https://m.example/auth/token", Service: "registry.docker.io"},
		`Bearer realm="https://m.example/auth/token",service="registry.docker.io"`)
	f(Challenge{Scheme: "Bearer", Realm: "r", Service: "s", Scope: "repository:library/nginx:pull", Error: "insufficient_scope"},
		`Bearer realm="r",service="s",scope="repository:library/nginx:pull",error="insufficient_scope"`)
	f(Challenge{Scheme: "Bearer", Service: "s"}, `Bearer service="s"`)
	f(Challenge{Scheme: "Basic", Realm: `a"b\c`}, `Basic realm="a\"b\\c"`)
	f(Challenge{Scheme: "Bearer"}, `Bearer`)
}

func TestPrefixScope(t *testing.T) {
	f := func(scope, want string) {
		t.Helper()
		if got := PrefixScope(scope); got != want {
			t.Fatalf("unexpected PrefixScope(%q): got %q; want %q", scope, got, want)
		}
	}
	f("repository:nginx:pull", "repository:library/nginx:pull")
	f("repository:nginx:pull,push", "repository:library/nginx:pull,push")
	f("repository:busybox:*", "repository:library/busybox:*")
	f("repository:library/nginx:pull", "repository:library/nginx:pull")
	f("repository:foo/bar:pull", "repository:foo/bar:pull")
	f("repository:a/b/c:pull", "repository:a/b/c:pull")
	f("registry:catalog:*", "registry:catalog:*")
	f("repository(plugin):vieux/sshfs:pull", "repository(plugin):vieux/sshfs:pull")
	f("repository::pull", "repository::pull")
	f("repository:nginx", "repository:nginx") // no action: not a scope docxy understands
	f("", "")
}

func TestPrefixScopes(t *testing.T) {
	f := func(scopes, want string) {
		t.Helper()
		if got := PrefixScopes(scopes); got != want {
			t.Fatalf("unexpected PrefixScopes(%q): got %q; want %q", scopes, got, want)
		}
	}
	f("repository:nginx:pull", "repository:library/nginx:pull")
	f("repository:nginx:pull repository:foo/bar:pull", "repository:library/nginx:pull repository:foo/bar:pull")
	f("registry:catalog:*  repository:alpine:pull", "registry:catalog:* repository:library/alpine:pull")
	f("", "")
}

func FuzzParseChallenge(f *testing.F) {
	for _, s := range []string{
		`Bearer realm="https://auth.docker.io/token",service="registry.docker.io"`,
		`Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull"`,
		`Bearer realm="https://ghcr.io/token",service="ghcr.io",scope="repository:o/a:pull",error="insufficient_scope"`,
		`bearer REALM="x" , Service = "svc"`,
		`Bearer realm=https://r.example/token,service=svc`,
		`Bearer realm="a\"b\\c",scope="repository:a/b:pull,push"`,
		`Basic realm="Registry Realm"`,
		`Bearer realm="unterminated`,
		`Bearer ,,,realm=,=`,
		`Bearer realm="x\`,
		"Bearer realm=\"\x00\xff\"",
		``,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		c, ok := ParseChallenge(h)
		if !ok {
			return
		}
		if c.Scheme != "Bearer" && c.Scheme != "Basic" {
			t.Fatalf("unexpected scheme for %q: got %q; want Bearer or Basic", h, c.Scheme)
		}
		s := c.String()
		back, ok := ParseChallenge(s)
		if !ok {
			t.Fatalf("cannot parse String() %q of %+v (from %q)", s, c, h)
		}
		if back.Scheme != c.Scheme || back.Realm != c.Realm || back.Service != c.Service || back.Scope != c.Scope || back.Error != c.Error {
			t.Fatalf("unexpected round trip of %q: got %+v; want %+v", s, back, c)
		}
		// What docxy sends clients must stay one header line.
		if strings.ContainsAny(s, "\r\n") && !strings.ContainsAny(h, "\r\n") {
			t.Fatalf("unexpected line break in %q (from %q)", s, h)
		}
		if utf8.ValidString(h) && !utf8.ValidString(s) {
			t.Fatalf("unexpected invalid UTF-8 in %q (from valid %q)", s, h)
		}
	})
}

func FuzzPrefixScope(f *testing.F) {
	for _, s := range []string{"repository:nginx:pull", "repository:a/b:pull", "registry:catalog:*", "repository::", "repository:"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, scope string) {
		got := PrefixScope(scope)
		if got == scope {
			return
		}
		// A change is exactly one inserted "library/" after "repository:".
		if !strings.HasPrefix(scope, "repository:") || got != "repository:library/"+scope[len("repository:"):] {
			t.Fatalf("unexpected PrefixScope(%q): got %q", scope, got)
		}
		if PrefixScope(got) != got {
			t.Fatalf("unexpected PrefixScope(PrefixScope(%q)): got %q; want it idempotent", scope, PrefixScope(got))
		}
	})
}
