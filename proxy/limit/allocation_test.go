//go:build !race

package limit

import (
	"net/netip"
	"testing"
	"time"
)

// TestHotPathsDoNotAllocate guards the per-request calls for a known client.
func TestHotPathsDoNotAllocate(t *testing.T) {
	l := mustNew(t, Config{RequestsPerSecond: 1e9, MaxBlobsPerIP: 4, DailyBytesPerIP: 1 << 50,
		TrustedProxies: []string{"10.0.0.0/8", "2001:db8:ffff::/48"}})
	now := time.Now()
	l.Allow(ip1, now)
	l.AcquireBlob(ip1)
	l.ReleaseBlob(ip1)
	l.AddBytes(ip1, 1, now)
	peer := netip.MustParseAddr("10.0.0.1")
	xff4 := []byte("1.1.1.1, 203.0.113.9:4711, 10.9.9.9")
	xff6 := []byte("[2001:db8::5]:443, 2001:db8:ffff::1")
	lines := [][]byte{[]byte("1.1.1.1"), xff6}
	f := func(name string, fn func()) {
		t.Helper()
		if n := testing.AllocsPerRun(100, fn); n != 0 {
			t.Fatalf("expected 0 allocations in %s, got %f", name, n)
		}
	}
	f("Allow", func() { l.Allow(ip1, now) })
	f("AcquireBlob+ReleaseBlob", func() {
		if l.AcquireBlob(ip1) {
			l.ReleaseBlob(ip1)
		}
	})
	f("AddBytes", func() { l.AddBytes(ip1, 100, now) })
	f("OverBudget", func() { l.OverBudget(ip1, now) })
	f("ClientIP v4", func() { l.ClientIP(peer, xff4) })
	f("ClientIP v6", func() { l.ClientIP(peer, xff6) })
	f("ClientIPLines", func() { l.ClientIPLines(peer, lines) })
}
