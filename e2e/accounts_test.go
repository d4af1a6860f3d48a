package e2e

import (
	"fmt"
	"path/filepath"
	"testing"

	"golang.org/x/crypto/bcrypt"
)

// TestMirrorAccountsWithCrane: with [auth] on, a real client must log in to the mirror with a
// mirror account; the mirror then pulls with its own upstream account (bob, who may read the
// private repository), and the client's mirror credentials never reach the upstream's token server.
func TestMirrorAccountsWithCrane(t *testing.T) {
	w := getWorld(t)
	hash, err := bcrypt.GenerateFromPassword([]byte("ci-pass"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	m := startMirror(t, mirrorOpts{Upstream: "http://" + w.reg.Host, Username: bobUser, Password: bobPass,
		ExtraTOML: fmt.Sprintf("dir = %q\n[auth]\ntoken_secret = \"e2e-secret-0123456789\"\n[[auth.users]]\nname = \"ci\"\npassword_hash = %q\n",
			filepath.Join(t.TempDir(), "cache"), hash)})
	img := w.seed.Secret

	anon := newCrane(t, "", "")
	if out, err := anon.run(t, clientTimeout, "digest", m.Host+"/"+img.Ref()); err == nil {
		t.Fatalf("an anonymous client pulled through a mirror that requires accounts: %s", out)
	}
	wrong := newCrane(t, "ci", "nope", m.Host)
	if out, err := wrong.run(t, clientTimeout, "digest", m.Host+"/"+img.Ref()); err == nil {
		t.Fatalf("a wrong mirror password was accepted: %s", out)
	}
	tokMark := w.tokens.Mark()
	ci := newCrane(t, "ci", "ci-pass", m.Host)
	got, err := ci.run(t, clientTimeout, "digest", m.Host+"/"+img.Ref())
	if err != nil {
		t.Fatalf("crane digest with a mirror account: %v", err)
	}
	if got != img.Digest {
		t.Fatalf("unexpected digest: got %s; want %s", got, img.Digest)
	}
	dir := t.TempDir()
	if _, err := ci.run(t, clientTimeout, "pull", "--format=oci", m.Host+"/"+img.Ref(), dir); err != nil {
		t.Fatal(err)
	}
	checkLayout(t, dir, img)
	seen := w.tokens.Since(tokMark)
	if len(seen) == 0 {
		t.Fatalf("the mirror fetched no upstream token with its own account")
	}
	for _, r := range seen {
		if r.User != bobUser {
			t.Fatalf("the upstream token server saw user %q; want only the mirror's own account %q", r.User, bobUser)
		}
	}
}
