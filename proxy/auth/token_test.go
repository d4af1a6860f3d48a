package auth

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"strings"
	"testing"
	"time"
)

func TestTokenRoundTrip(t *testing.T) {
	a := mustNew(t, Config{Users: []User{{"alice", bcryptHash(t, "pw", "$2y$")}, {strings.Repeat("u", MaxUserLen), bcryptHash(t, "pw", "$2y$")}}})
	now := time.Unix(1_700_000_000, 123)
	tok, exp := a.IssueToken("alice", now)
	if exp != 300 {
		t.Fatalf("unexpected expires_in: got %d; want 300", exp)
	}
	if strings.ContainsAny(tok, "+/= ") || strings.Count(tok, ".") != 1 {
		t.Fatalf("token is not two unpadded base64url parts: %q", tok)
	}
	f := func(h string, now time.Time, wantUser string) {
		t.Helper()
		user, ok := a.VerifyBearer([]byte(h), now)
		if ok != (wantUser != "") || string(user) != wantUser {
			t.Fatalf("unexpected VerifyBearer(%q) at %s: got %q, %v; want %q", h, now, user, ok, wantUser)
		}
		if got := a.Authorize([]byte(h), now); got != ok {
			t.Fatalf("Authorize and VerifyBearer disagree on %q", h)
		}
	}
	f("Bearer "+tok, now, "alice")
	f("bearer "+tok, now, "alice")
	f("BEARER  "+tok+" ", now, "alice")
	f("Bearer "+tok, now.Add(-time.Hour), "alice")
	f("Bearer "+tok, now.Add(299*time.Second), "alice")
	f("Bearer "+tok, now.Add(300*time.Second), "") // expired
	f("Bearer "+tok, now.Add(24*time.Hour), "")
	f("Basic "+tok, now, "")
	f("Bearer"+tok, now, "")
	f(tok, now, "")

	long := strings.Repeat("u", MaxUserLen)
	ltok, _ := a.IssueToken(long, now)
	f("Bearer "+ltok, now, long)
	// A token for a name that is no account never verifies.
	gtok, _ := a.IssueToken("ghost", now)
	f("Bearer "+gtok, now, "")

	// TTL is configurable; expires_in follows it.
	b := mustNew(t, Config{Users: []User{{"alice", bcryptHash(t, "pw", "$2y$")}}, TokenTTL: time.Hour})
	btok, bexp := b.IssueToken("alice", now)
	if bexp != 3600 {
		t.Fatalf("unexpected expires_in: got %d; want 3600", bexp)
	}
	if _, ok := b.VerifyBearer([]byte("Bearer "+btok), now.Add(59*time.Minute)); !ok {
		t.Fatalf("token refused before its TTL")
	}
	// Same secret, same users: a replica accepts it; another secret doesn't.
	f("Bearer "+btok, now, "alice")
	c := mustNew(t, Config{Users: []User{{"alice", bcryptHash(t, "pw", "$2y$")}}, TokenSecret: "another-secret-of-16+"})
	if _, ok := c.VerifyBearer([]byte("Bearer "+tok), now); ok {
		t.Fatalf("token from another secret accepted")
	}
	r1 := mustNewRandom(t)
	r2 := mustNewRandom(t)
	rtok, _ := r1.IssueToken("alice", now)
	if _, ok := r1.VerifyBearer([]byte("Bearer "+rtok), now); !ok {
		t.Fatalf("token refused by its own random-key issuer")
	}
	if _, ok := r2.VerifyBearer([]byte("Bearer "+rtok), now); ok {
		t.Fatalf("token accepted by another random-key process")
	}
}

func mustNewRandom(t *testing.T) *Authenticator {
	t.Helper()
	a, err := New(Config{Users: []User{{"alice", bcryptHash(t, "pw", "$2y$")}}})
	if err != nil {
		t.Fatalf("cannot create authenticator: %s", err)
	}
	return a
}

func TestTokenTampered(t *testing.T) {
	a := mustNew(t, Config{Users: []User{{"alice", bcryptHash(t, "pw", "$2y$")}, {"alicf", bcryptHash(t, "pw", "$2y$")}}})
	now := time.Now()
	tok, _ := a.IssueToken("alice", now)
	// Every single-character change is refused.
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."
	for i := range tok {
		for _, c := range []byte(alphabet) {
			if c == tok[i] {
				continue
			}
			bad := tok[:i] + string(c) + tok[i+1:]
			if _, ok := a.VerifyBearer([]byte("Bearer "+bad), now); ok {
				t.Fatalf("tampered token accepted: byte %d %q -> %q", i, tok[i], c)
			}
		}
	}
	// A re-signed payload with a later expiry or another user, without the key, is refused.
	dot := strings.IndexByte(tok, '.')
	p, err := base64.RawURLEncoding.DecodeString(tok[:dot])
	if err != nil {
		t.Fatalf("cannot decode payload: %s", err)
	}
	p2 := bytes.Clone(p)
	binary.BigEndian.PutUint64(p2[1:], uint64(now.Add(time.Hour*24*365).Unix()))
	p3 := bytes.Clone(p)
	p3[len(p3)-1] = 'f'
	for _, q := range [][]byte{p2, p3} {
		forged := base64.RawURLEncoding.EncodeToString(q) + tok[dot:]
		if _, ok := a.VerifyBearer([]byte("Bearer "+forged), now); ok {
			t.Fatalf("forged payload accepted: %q", forged)
		}
	}
}

func TestTokenGarbage(t *testing.T) {
	a := mustNew(t, Config{Users: []User{{"alice", bcryptHash(t, "pw", "$2y$")}}})
	now := time.Now()
	tok, _ := a.IssueToken("alice", now)
	dot := strings.IndexByte(tok, '.')
	f := func(h string) {
		t.Helper()
		if _, ok := a.VerifyBearer([]byte(h), now); ok {
			t.Fatalf("garbage accepted: %q", h)
		}
	}
	f("")
	f("Bearer")
	f("Bearer ")
	f("Bearer .")
	f("Bearer " + tok[:dot])
	f("Bearer " + tok[:dot+1])
	f("Bearer " + tok[dot:])
	f("Bearer " + tok + "A")
	f("Bearer " + tok[:len(tok)-1])
	f("Bearer " + tok + "=")
	f("Bearer " + tok[:dot] + "=" + tok[dot:])
	f("Bearer " + strings.Replace(tok, ".", "..", 1))
	f("Bearer " + tok + "." + tok[dot+1:])
	f("Bearer " + strings.Repeat("A", 400) + tok[dot:])
	f("Bearer " + strings.Repeat("A", 10000))
	f("Bearer " + base64.RawURLEncoding.EncodeToString([]byte{tokenVersion}) + tok[dot:]) // short payload
	f("Bearer " + base64.StdEncoding.EncodeToString([]byte("alice:pw")))
	f("Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.dGhpcyBpcyBub3QgYSByZWFsIHNpZ25hdHVyZQ") // a JWT
}

func TestIssueTokenPanicsOnLongUser(t *testing.T) {
	a := mustNew(t, Config{})
	defer func() {
		if r := recover(); r == nil || !strings.HasPrefix(r.(string), "BUG: ") {
			t.Fatalf("unexpected recover: %v", r)
		}
	}()
	a.IssueToken(strings.Repeat("u", MaxUserLen+1), time.Now())
}

func FuzzVerifyBearer(f *testing.F) {
	a := mustNew(f, Config{Users: []User{{"alice", bcryptHash(f, "pw", "$2y$")}}})
	now := time.Unix(1_700_000_000, 0)
	tok, _ := a.IssueToken("alice", now)
	for _, s := range []string{"Bearer " + tok, "bearer  " + tok + " ", "Bearer a.b", "Bearer ", "", "Basic " + tok} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, h []byte) {
		orig := bytes.Clone(h)
		user, ok := a.VerifyBearer(h, now)
		if !bytes.Equal(h, orig) {
			t.Fatalf("VerifyBearer modified its input")
		}
		if !ok {
			if user != nil {
				t.Fatalf("user returned with ok=false")
			}
			return
		}
		// Without the key the only token that verifies is the one issued, byte for byte.
		got, _ := cutScheme(h, "bearer")
		if string(got) != tok || string(user) != "alice" {
			t.Fatalf("unexpected token accepted: %q (user %q)", h, user)
		}
	})
}
