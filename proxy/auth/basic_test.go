package auth

import (
	"bytes"
	"encoding/base64"
	"strings"
	"testing"
	"time"
)

func basic(user, password string) []byte {
	return []byte("Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+password)))
}

func TestParseBasic(t *testing.T) {
	var a *Authenticator // ParseBasic needs no state
	f := func(h string, wantOK bool, wantUser, wantPassword string) {
		t.Helper()
		user, password, ok := a.ParseBasic([]byte(h))
		if ok != wantOK || string(user) != wantUser || string(password) != wantPassword {
			t.Fatalf("unexpected ParseBasic(%q): got %q, %q, %v; want %q, %q, %v", h, user, password, ok, wantUser, wantPassword, wantOK)
		}
	}
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	f("Basic "+b64("alice:pw"), true, "alice", "pw")
	f("basic "+b64("alice:pw"), true, "alice", "pw")
	f("BASIC "+b64("alice:pw"), true, "alice", "pw")
	f("Basic   "+b64("alice:pw")+"  ", true, "alice", "pw")
	f("Basic "+b64("alice:"), true, "alice", "")
	f("Basic "+b64("alice:p:w:"), true, "alice", "p:w:")
	f("Basic "+b64("alice:pässwörd"), true, "alice", "pässwörd")

	f("", false, "", "")
	f("Basic", false, "", "")
	f("Basic ", false, "", "")
	f("Basic    ", false, "", "")
	f("Basic"+b64("alice:pw"), false, "", "")
	f("Basic\t"+b64("alice:pw"), false, "", "")
	f("Bearer "+b64("alice:pw"), false, "", "")
	f("Basix "+b64("alice:pw"), false, "", "")
	f("Basic "+b64("alicepw"), false, "", "")                          // no colon
	f("Basic "+b64(":pw"), false, "", "")                              // no user
	f("Basic "+b64("alice:pw")[:6], false, "", "")                     // truncated
	f("Basic "+strings.TrimRight(b64("alice:pw"), "="), false, "", "") // unpadded
	f("Basic YWxpY2U6cHd=", false, "", "")                             // non-canonical padding bits
	f("Basic !!!!", false, "", "")
	f("Basic "+b64("a:"+strings.Repeat("x", 1000)), false, "", "") // too long
}

func TestCheckBasic(t *testing.T) {
	a := mustNew(t, Config{Users: []User{
		{"alice", bcryptHash(t, "alice-pw", "$2y$")},
		{"bob", bcryptHash(t, "", "$2b$")},
		{"long", bcryptHash(t, strings.Repeat("p", 72), "$2a$")},
	}})
	f := func(user, password string, want bool) {
		t.Helper()
		if got := a.CheckBasic([]byte(user), []byte(password)); got != want {
			t.Fatalf("unexpected CheckBasic(%q, %q): got %v; want %v", user, password, got, want)
		}
		if got := a.Authorize(basic(user, password), time.Now()); got != want && user != "" {
			t.Fatalf("unexpected Authorize(Basic %q:%q): got %v; want %v", user, password, got, want)
		}
	}
	f("alice", "alice-pw", true)
	f("alice", "alice-pw", true) // cached
	// The cache holds successes only: a wrong password after a right one is still wrong.
	f("alice", "alice-pw ", false)
	f("alice", "alice-p", false)
	f("alice", "", false)
	f("Alice", "alice-pw", false)
	f("bob", "", true)
	f("bob", "alice-pw", false)
	f("", "alice-pw", false)
	f("nobody", "alice-pw", false)
	f("alice:alice", "pw", false)
	f("long", strings.Repeat("p", 72), true)
	f("long", strings.Repeat("p", 73), false) // bcrypt would match it on the first 72 bytes
	f(strings.Repeat("u", MaxUserLen+1), "x", false)
	f("alice", "alice-pw", true)

	if a.Authorize(nil, time.Now()) || a.Authorize([]byte("Digest x"), time.Now()) || a.Authorize([]byte("Basic !!"), time.Now()) {
		t.Fatalf("an enabled authenticator authorized a request without valid credentials")
	}
}

// TestCheckBasicCache checks that a repeated success skips bcrypt, that the cache key covers
// the user as well as the password, and that entries expire.
func TestCheckBasicCache(t *testing.T) {
	a := mustNew(t, Config{Users: []User{{"a", bcryptHash(t, "b:c", "$2y$")}}})
	if !a.CheckBasic([]byte("a"), []byte("b:c")) {
		t.Fatalf("cannot log in")
	}
	tab := a.tab.Load()
	acc := tab.users["a"]
	acc.hash = []byte(bcryptHash(t, "other", "$2y$")) // bcrypt would now refuse "b:c"
	tab.users["a"] = acc
	if !a.CheckBasic([]byte("a"), []byte("b:c")) {
		t.Fatalf("a cached success was not used")
	}
	if k1, k2 := a.cacheKey([]byte("a"), []byte("b\x00c")), a.cacheKey([]byte("a\x00b"), []byte("c")); k1 == k2 {
		t.Fatalf("cache keys of different credentials collide")
	}
	sum := a.cacheKey([]byte("a"), []byte("b:c"))
	if !tab.cache.hit(&sum, time.Now().UnixNano()) {
		t.Fatalf("cache entry missing")
	}
	if tab.cache.hit(&sum, time.Now().Add(CacheTTL+time.Second).UnixNano()) {
		t.Fatalf("cache entry did not expire")
	}
	// Another Authenticator salts differently: the same credentials give another key.
	b := mustNew(t, Config{Users: []User{{"a", string(acc.hash)}}})
	if a.cacheKey([]byte("a"), []byte("b:c")) == b.cacheKey([]byte("a"), []byte("b:c")) {
		t.Fatalf("cache keys are not salted")
	}
}

func FuzzParseBasic(f *testing.F) {
	for _, s := range []string{
		string(basic("alice", "pw")), "Basic ", "basic Og==", "Basic YTo=", "Basic   YTpi  ", "Bearer x", "",
		"Basic YWxpY2U6cHd=", "Basic\tYTpi",
	} {
		f.Add([]byte(s))
	}
	var a *Authenticator
	f.Fuzz(func(t *testing.T, h []byte) {
		orig := bytes.Clone(h)
		user, password, ok := a.ParseBasic(h)
		if !bytes.Equal(h, orig) {
			t.Fatalf("ParseBasic modified its input")
		}
		if !ok {
			if user != nil || password != nil {
				t.Fatalf("ParseBasic returned credentials with ok=false")
			}
			return
		}
		if len(user) == 0 || bytes.IndexByte(user, ':') >= 0 {
			t.Fatalf("unexpected user %q", user)
		}
		// Re-encoding what was parsed parses back to the same credentials.
		u2, p2, ok2 := a.ParseBasic(basic(string(user), string(password)))
		if !ok2 || !bytes.Equal(u2, user) || !bytes.Equal(p2, password) {
			t.Fatalf("round trip of %q:%q failed: %q:%q %v", user, password, u2, p2, ok2)
		}
	})
}
