package auth

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

const testSecret = "0123456789abcdef-test-secret"

// bcryptHash returns a MinCost bcrypt hash of password with the given "$2?$" prefix.
func bcryptHash(t testing.TB, password, prefix string) string {
	t.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		t.Fatalf("cannot hash: %s", err)
	}
	return prefix + string(h[4:])
}

func writeFile(t testing.TB, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "htpasswd")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatalf("cannot write htpasswd: %s", err)
	}
	return p
}

func mustNew(t testing.TB, cfg Config) *Authenticator {
	t.Helper()
	if cfg.TokenSecret == "" {
		cfg.TokenSecret = testSecret
	}
	a, err := New(cfg)
	if err != nil {
		t.Fatalf("cannot create authenticator: %s", err)
	}
	return a
}

func TestHtpasswd(t *testing.T) {
	alice := bcryptHash(t, "alice-pw", "$2y$")
	bob := bcryptHash(t, "bob-pw", "$2a$")
	carol := bcryptHash(t, "carol-pw", "$2b$")
	f := func(content string, wantUsers []string, wantErr error, wantMsg string) {
		t.Helper()
		a, err := New(Config{HtpasswdFile: writeFile(t, content), TokenSecret: testSecret})
		if wantErr != nil {
			if !errors.Is(err, wantErr) {
				t.Fatalf("unexpected error: got %v; want %v", err, wantErr)
			}
			if !strings.Contains(err.Error(), wantMsg) {
				t.Fatalf("unexpected error: got %q; want it to contain %q", err, wantMsg)
			}
			for _, secret := range []string{alice[7:], bob[7:], "plainpw", "9fWq3Zr", "abcdefghijklmnopqrstu"} {
				if strings.Contains(err.Error(), secret) && !strings.Contains(wantMsg, secret) {
					t.Fatalf("error %q leaks %q", err, secret)
				}
			}
			return
		}
		if err != nil {
			t.Fatalf("unexpected error: %s", err)
		}
		if !a.Enabled() {
			t.Fatalf("authenticator with an htpasswd file not enabled")
		}
		if got := len(a.tab.Load().users); got != len(wantUsers) {
			t.Fatalf("unexpected number of users: got %d; want %d", got, len(wantUsers))
		}
		for _, u := range wantUsers {
			if !a.CheckBasic([]byte(u), []byte(u+"-pw")) {
				t.Fatalf("user %s cannot log in", u)
			}
		}
	}
	f("", nil, nil, "")
	f("# only a comment\n\n", nil, nil, "")
	f("alice:"+alice+"\n", []string{"alice"}, nil, "")
	f("# mirror accounts\n\nalice:"+alice+"\r\n  bob:"+bob+"  \n\t\ncarol:"+carol, []string{"alice", "bob", "carol"}, nil, "")

	f("alice:"+alice+"\nbob:$apr1$9fWq3Zr$abcdefghijklmnopqrstu.\n", nil, ErrUnsupportedHash,
		`auth: unsupported password hash: `)
	f("alice:"+alice+"\nbob:$apr1$9fWq3Zr$abcdefghijklmnopqrstu.\n", nil, ErrUnsupportedHash,
		`line 2: user "bob" has an Apache MD5 ($apr1$) hash; only bcrypt`)
	f("\n\nbob:{SHA}9fWq3Zr5qOaS3x0Ih2bmAH4ZLhk=\n", nil, ErrUnsupportedHash, `line 3: user "bob" has a SHA-1 ({SHA}) hash`)
	f("bob:$1$9fWq3Zr$x\n", nil, ErrUnsupportedHash, `MD5-crypt ($1$)`)
	f("bob:$6$9fWq3Zr$x\n", nil, ErrUnsupportedHash, `SHA-512-crypt ($6$)`)
	f("bob:plainpw\n", nil, ErrUnsupportedHash, `user "bob" has a crypt(3) DES or plain-text hash`)
	f("bob:\n", nil, ErrUnsupportedHash, `user "bob" has an empty hash`)
	f("bob:$2y$10$9fWq3Zr\n", nil, ErrUnsupportedHash, `line 1: user "bob" has a malformed bcrypt hash`)
	f("plainpw\n", nil, ErrInvalidConfig, `line 1: want "user:bcrypt-hash"`)
	f(":"+alice+"\n", nil, ErrInvalidConfig, `line 1: want "user:bcrypt-hash"`)
	f("alice:"+alice+"\nalice:"+bob+"\n", nil, ErrInvalidConfig, `user "alice" defined twice`)
	f(strings.Repeat("x", MaxUserLen+1)+":"+alice+"\n", nil, ErrInvalidConfig, "longer than 255 bytes")
}

func TestNewErrors(t *testing.T) {
	good := bcryptHash(t, "pw", "$2y$")
	f := func(cfg Config, wantErr error, wantMsg string) {
		t.Helper()
		_, err := New(cfg)
		if !errors.Is(err, wantErr) || !strings.Contains(err.Error(), wantMsg) {
			t.Fatalf("unexpected error: got %v; want %v containing %q", err, wantErr, wantMsg)
		}
		if cfg.TokenSecret != "" && strings.Contains(err.Error(), cfg.TokenSecret) {
			t.Fatalf("error %q leaks the token secret", err)
		}
	}
	f(Config{Users: []User{{"a", good}, {"b", "$apr1$x$y"}}}, ErrUnsupportedHash, `users[1]: user "b" has an Apache MD5`)
	f(Config{Users: []User{{"", good}}}, ErrInvalidConfig, "users[0]: empty user name")
	f(Config{Users: []User{{"a:b", good}}}, ErrInvalidConfig, "control character or ':'")
	f(Config{Users: []User{{"a", good}, {"a", good}}}, ErrInvalidConfig, `user "a" defined twice (users[0] and users[1])`)
	f(Config{Users: []User{{"a", good}}, TokenSecret: "short-s3cret"}, ErrInvalidConfig, "token secret must be at least 16 bytes; got 12")
	f(Config{Users: []User{{"a", good}}, TokenTTL: 30 * time.Second}, ErrInvalidConfig, "token TTL must be at least 1m0s")

	_, err := New(Config{HtpasswdFile: filepath.Join(t.TempDir(), "missing")})
	if err == nil || !strings.Contains(err.Error(), "auth: cannot read htpasswd file") || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("unexpected error for a missing file: %v", err)
	}
	// Inline users and the file are merged, names unique across both.
	p := writeFile(t, "a:"+good+"\n")
	_, err = New(Config{HtpasswdFile: p, Users: []User{{"a", good}}})
	if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), `(users[0] and `+p+` line 1)`) {
		t.Fatalf("unexpected error for a user in both: %v", err)
	}
}

func TestDisabled(t *testing.T) {
	for _, a := range []*Authenticator{nil, mustNew(t, Config{})} {
		if a.Enabled() {
			t.Fatalf("unexpected Enabled")
		}
		if !a.Authorize(nil, time.Now()) || !a.Authorize([]byte("Basic Zm9vOmJhcg=="), time.Now()) {
			t.Fatalf("a disabled authenticator refused a request")
		}
		if a.CheckBasic([]byte("foo"), []byte("bar")) {
			t.Fatalf("a disabled authenticator accepted credentials")
		}
		if _, ok := a.VerifyBearer([]byte("Bearer x.y"), time.Now()); ok {
			t.Fatalf("a disabled authenticator verified a token")
		}
		if err := a.Reload(); err != nil {
			t.Fatalf("unexpected Reload error: %s", err)
		}
	}
}

func TestReload(t *testing.T) {
	p := writeFile(t, "alice:"+bcryptHash(t, "old", "$2y$")+"\nbob:"+bcryptHash(t, "bob", "$2y$")+"\n")
	a := mustNew(t, Config{HtpasswdFile: p})
	now := time.Now()
	bobToken, _ := a.IssueToken("bob", now)
	if !a.CheckBasic([]byte("alice"), []byte("old")) {
		t.Fatalf("alice cannot log in")
	}
	// Bad file: the old accounts stay.
	if err := os.WriteFile(p, []byte("alice:$apr1$x$y\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := a.Reload(); !errors.Is(err, ErrUnsupportedHash) {
		t.Fatalf("unexpected Reload error: got %v; want ErrUnsupportedHash", err)
	}
	if !a.CheckBasic([]byte("alice"), []byte("old")) || !a.Authorize([]byte("Bearer "+bobToken), now) {
		t.Fatalf("a failed Reload changed the accounts")
	}
	// New password, bob removed: the cached success and bob's token both stop working.
	if err := os.WriteFile(p, []byte("alice:"+bcryptHash(t, "new", "$2y$")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := a.Reload(); err != nil {
		t.Fatalf("unexpected Reload error: %s", err)
	}
	if a.CheckBasic([]byte("alice"), []byte("old")) {
		t.Fatalf("old password accepted after Reload")
	}
	if !a.CheckBasic([]byte("alice"), []byte("new")) {
		t.Fatalf("new password refused after Reload")
	}
	if a.Authorize([]byte("Bearer "+bobToken), now) {
		t.Fatalf("token of a removed user accepted")
	}
}
