package auth

import (
	"sync/atomic"
	"testing"
	"time"
)

var sink atomic.Int64

func BenchmarkVerifyBearer(b *testing.B) {
	a := mustNew(b, Config{Users: []User{{"alice", bcryptHash(b, "pw", "$2y$")}}})
	now := time.Now()
	tok, _ := a.IssueToken("alice", now)
	h := []byte("Bearer " + tok)
	b.ReportAllocs()
	b.SetBytes(int64(len(h)))
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		n := int64(0)
		for pb.Next() {
			if _, ok := a.VerifyBearer(h, now); ok {
				n++
			}
		}
		sink.Add(n)
	})
}

func BenchmarkCheckBasicCached(b *testing.B) {
	a := mustNew(b, Config{Users: []User{{"alice", bcryptHash(b, "pw", "$2y$")}}})
	user, pw := []byte("alice"), []byte("pw")
	a.CheckBasic(user, pw)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		n := int64(0)
		for pb.Next() {
			if a.CheckBasic(user, pw) {
				n++
			}
		}
		sink.Add(n)
	})
}
