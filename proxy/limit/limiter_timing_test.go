package limit

import (
	"net/netip"
	"sync/atomic"
	"testing"
	"time"
)

var sink atomic.Int64

func BenchmarkAllow(b *testing.B) {
	l := mustNew(b, Config{RequestsPerSecond: 1e9, MaxBlobsPerIP: 4, DailyBytesPerIP: 1 << 50})
	now := time.Now()
	var next atomic.Uint32
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		// Each goroutine is a crowd of 256 clients, as behind a busy NAT-less mirror.
		base := next.Add(1)
		n := int64(0)
		for i := 0; pb.Next(); i++ {
			ip := netip.AddrFrom4([4]byte{10, byte(base), 0, byte(i)})
			if ok, _ := l.Allow(ip, now); ok {
				n++
			}
		}
		sink.Add(n)
	})
}

func BenchmarkClientIP(b *testing.B) {
	l := mustNew(b, Config{TrustedProxies: []string{"10.0.0.0/8"}})
	peer := netip.MustParseAddr("10.0.0.1")
	xff := []byte("1.1.1.1, 203.0.113.9, 10.9.9.9")
	b.ReportAllocs()
	b.SetBytes(int64(len(xff)))
	b.RunParallel(func(pb *testing.PB) {
		n := int64(0)
		for pb.Next() {
			if l.ClientIP(peer, xff).Is4() {
				n++
			}
		}
		sink.Add(n)
	})
}
