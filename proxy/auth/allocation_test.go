//go:build !race

package auth

import (
	"testing"
	"time"
)

// TestHotPathsDoNotAllocate guards the per-request checks: a mirror token, and cached Basic
// credentials.
func TestHotPathsDoNotAllocate(t *testing.T) {
	a := mustNew(t, Config{Users: []User{{"alice", bcryptHash(t, "pw", "$2y$")}}})
	now := time.Now()
	tok, _ := a.IssueToken("alice", now)
	h := []byte("Bearer " + tok)
	if !a.CheckBasic([]byte("alice"), []byte("pw")) {
		t.Fatalf("cannot log in")
	}
	user, pw := []byte("alice"), []byte("pw")
	f := func(name string, fn func() bool) {
		t.Helper()
		if !fn() {
			t.Fatalf("%s failed", name)
		}
		if n := testing.AllocsPerRun(100, func() { fn() }); n != 0 {
			t.Fatalf("expected 0 allocations in %s, got %f", name, n)
		}
	}
	f("VerifyBearer", func() bool { _, ok := a.VerifyBearer(h, now); return ok })
	f("Authorize Bearer", func() bool { return a.Authorize(h, now) })
	f("CheckBasic cached", func() bool { return a.CheckBasic(user, pw) })
}
