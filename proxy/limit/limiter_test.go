package limit

import (
	"context"
	"net/netip"
	"sync"
	"testing"
	"time"
)

var (
	ip1 = netip.MustParseAddr("203.0.113.1")
	ip2 = netip.MustParseAddr("2001:db8::2")
	t0  = time.Date(2025, 3, 14, 12, 0, 0, 0, time.UTC)
)

func TestDisabled(t *testing.T) {
	for _, l := range []*Limiter{nil, mustNew(t, Config{TrustedProxies: []string{"10.0.0.0/8"}})} {
		if l.Enabled() {
			t.Fatalf("unexpected Enabled for %v", l)
		}
		for i := 0; i < 100; i++ {
			if ok, _ := l.Allow(ip1, t0); !ok {
				t.Fatalf("a disabled limiter refused a request")
			}
			if !l.AcquireBlob(ip1) {
				t.Fatalf("a disabled limiter refused a blob")
			}
			l.AddBytes(ip1, 1<<40, t0)
		}
		l.ReleaseBlob(ip1)
		if over, _ := l.OverBudget(ip1, t0); over {
			t.Fatalf("a disabled limiter is over budget")
		}
		l.Sweep(t0)
		l.Run(context.Background()) // returns at once
		if n := l.Len(); n != 0 {
			t.Fatalf("a disabled limiter tracks clients: got %d; want 0", n)
		}
	}
	for _, cfg := range []Config{{RequestsPerSecond: 1}, {MaxBlobsPerIP: 1}, {DailyBytesPerIP: 1}} {
		if !mustNew(t, cfg).Enabled() {
			t.Fatalf("unexpected !Enabled for %+v", cfg)
		}
	}
}

func TestDefaultBurst(t *testing.T) {
	f := func(rps float64, burst int, want float64) {
		t.Helper()
		l := mustNew(t, Config{RequestsPerSecond: rps, Burst: burst})
		if l.burst != want {
			t.Fatalf("unexpected burst for %v rps, burst %d: got %v; want %v", rps, burst, l.burst, want)
		}
	}
	f(10, 0, 20)
	f(0.2, 0, 1)
	f(0.7, 0, 2)
	f(10, 3, 3)
}

func TestTokenBucket(t *testing.T) {
	l := mustNew(t, Config{RequestsPerSecond: 2, Burst: 5})
	now := t0
	for i := 0; i < 5; i++ {
		if ok, ra := l.Allow(ip1, now); !ok || ra != 0 {
			t.Fatalf("request %d of the burst refused: ok=%v retryAfter=%s", i, ok, ra)
		}
	}
	ok, ra := l.Allow(ip1, now)
	if ok || ra != 500*time.Millisecond {
		t.Fatalf("unexpected result after the burst: got ok=%v retryAfter=%s; want false, 500ms", ok, ra)
	}
	if got := RetryAfterSeconds(ra); got != 1 {
		t.Fatalf("unexpected Retry-After: got %d; want 1", got)
	}
	// Another client has its own bucket.
	if ok, _ := l.Allow(ip2, now); !ok {
		t.Fatalf("second client refused")
	}
	// 200ms refills 0.4 token: still refused, 300ms to go.
	now = now.Add(200 * time.Millisecond)
	if ok, ra := l.Allow(ip1, now); ok || ra != 300*time.Millisecond {
		t.Fatalf("unexpected result after 200ms: got ok=%v retryAfter=%s; want false, 300ms", ok, ra)
	}
	now = now.Add(300 * time.Millisecond)
	if ok, _ := l.Allow(ip1, now); !ok {
		t.Fatalf("refused after the refill")
	}
	if ok, _ := l.Allow(ip1, now); ok {
		t.Fatalf("allowed beyond the refill")
	}
	// A clock stepping back refills nothing and breaks nothing.
	if ok, ra := l.Allow(ip1, now.Add(-time.Hour)); ok || ra <= 0 {
		t.Fatalf("unexpected result for a clock stepping back: ok=%v retryAfter=%s", ok, ra)
	}
	// An hour idle refills to the burst, not beyond.
	now = now.Add(time.Hour)
	for i := 0; i < 5; i++ {
		if ok, _ := l.Allow(ip1, now); !ok {
			t.Fatalf("request %d after idling refused", i)
		}
	}
	if ok, _ := l.Allow(ip1, now); ok {
		t.Fatalf("bucket refilled beyond its burst")
	}
	// IPv4 and its IPv4-mapped form are one client.
	if ok, _ := l.Allow(netip.MustParseAddr("::ffff:203.0.113.1"), now); ok {
		t.Fatalf("the IPv4-mapped form of a client got a bucket of its own")
	}
}

func TestTinyRate(t *testing.T) {
	l := mustNew(t, Config{RequestsPerSecond: 1e-15})
	l.Allow(ip1, t0)
	if ok, ra := l.Allow(ip1, t0); ok || ra <= 0 {
		t.Fatalf("unexpected result for a tiny rate: ok=%v retryAfter=%s", ok, ra)
	}
}

func TestRetryAfterSeconds(t *testing.T) {
	f := func(d time.Duration, want int) {
		t.Helper()
		if got := RetryAfterSeconds(d); got != want {
			t.Fatalf("unexpected RetryAfterSeconds(%s): got %d; want %d", d, got, want)
		}
	}
	f(0, 1)
	f(time.Nanosecond, 1)
	f(time.Second, 1)
	f(time.Second+1, 2)
	f(11*time.Hour+59*time.Minute+59*time.Second+1, 43200)
}

func TestBlobSlots(t *testing.T) {
	l := mustNew(t, Config{MaxBlobsPerIP: 2})
	f := func(ip netip.Addr, want bool) {
		t.Helper()
		if got := l.AcquireBlob(ip); got != want {
			t.Fatalf("unexpected AcquireBlob(%s): got %v; want %v", ip, got, want)
		}
	}
	f(ip1, true)
	f(ip1, true)
	f(ip1, false)
	f(ip2, true)
	l.ReleaseBlob(ip1)
	f(ip1, true)
	f(ip1, false)
	l.ReleaseBlob(ip1)
	l.ReleaseBlob(ip1)
	l.ReleaseBlob(ip1) // one too many: ignored, the count stays at zero
	l.ReleaseBlob(netip.MustParseAddr("192.0.2.99"))
	f(ip1, true)
	f(ip1, true)
	f(ip1, false)
	// Clients holding slots survive a sweep; released ones go.
	l.Sweep(t0)
	if n := l.Len(); n != 2 {
		t.Fatalf("unexpected clients after sweep: got %d; want 2", n)
	}
	l.ReleaseBlob(ip1)
	l.ReleaseBlob(ip1)
	l.ReleaseBlob(ip2)
	l.Sweep(t0)
	if n := l.Len(); n != 0 {
		t.Fatalf("unexpected clients after releasing all and sweeping: got %d; want 0", n)
	}
}

// TestIPv6Prefix: one subscriber's /64 is one client, whichever of its addresses it uses, so a
// client cannot escape its limits by hopping addresses; IPv4 stays per address.
func TestIPv6Prefix(t *testing.T) {
	f := func(prefix int, a, b string, same bool) {
		t.Helper()
		l := mustNew(t, Config{MaxBlobsPerIP: 1, IPv6Prefix: prefix})
		if !l.AcquireBlob(netip.MustParseAddr(a)) {
			t.Fatalf("prefix %d: the first blob of %s was refused", prefix, a)
		}
		if got := !l.AcquireBlob(netip.MustParseAddr(b)); got != same {
			t.Fatalf("prefix %d: unexpected sharing of limits between %s and %s: got %v; want %v", prefix, a, b, got, same)
		}
	}
	f(0, "2001:db8:1:2::1", "2001:db8:1:2:ffff:ffff:ffff:ffff", true) // default /64
	f(0, "2001:db8:1:2::1", "2001:db8:1:3::1", false)
	f(64, "2001:db8:1:2::1", "2001:db8:1:2:8000::1", true)
	f(56, "2001:db8:1:200::1", "2001:db8:1:2ff::1", true)
	f(56, "2001:db8:1:200::1", "2001:db8:1:300::1", false)
	f(60, "2001:db8:1:20::1", "2001:db8:1:2f::1", true) // a prefix inside a byte
	f(60, "2001:db8:1:20::1", "2001:db8:1:30::1", false)
	f(128, "2001:db8:1:2::1", "2001:db8:1:2::2", false)
	f(0, "192.0.2.1", "192.0.2.2", false)
	f(0, "::ffff:192.0.2.1", "::ffff:192.0.2.2", false) // IPv4-mapped: still IPv4
	f(0, "::ffff:192.0.2.1", "192.0.2.1", true)

	// Rate and byte budgets go by the same key.
	l := mustNew(t, Config{RequestsPerSecond: 1, Burst: 1, DailyBytesPerIP: 10})
	a, b := netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::2")
	if ok, _ := l.Allow(a, t0); !ok {
		t.Fatalf("the first request of %s was refused", a)
	}
	if ok, _ := l.Allow(b, t0); ok {
		t.Fatalf("%s got a token that %s of the same /64 had used", b, a)
	}
	l.AddBytes(a, 10, t0)
	if over, _ := l.OverBudget(b, t0); !over {
		t.Fatalf("%s is not over the budget that %s of the same /64 used up", b, a)
	}
}

func TestDailyBudget(t *testing.T) {
	l := mustNew(t, Config{DailyBytesPerIP: 1000})
	now := time.Date(2025, 3, 14, 23, 59, 0, 0, time.FixedZone("CET", 3600)) // 22:59 UTC
	f := func(now time.Time, wantOver bool, wantRetry time.Duration) {
		t.Helper()
		over, ra := l.OverBudget(ip1, now)
		if over != wantOver || ra != wantRetry {
			t.Fatalf("unexpected OverBudget at %s: got %v, %s; want %v, %s", now.UTC(), over, ra, wantOver, wantRetry)
		}
	}
	f(now, false, 0)
	l.AddBytes(ip1, 600, now)
	f(now, false, 0)
	l.AddBytes(ip1, 400, now)
	f(now, true, time.Hour+time.Minute) // to 00:00 UTC, not local midnight
	l.AddBytes(ip1, 0, now)
	l.AddBytes(ip1, -5, now)
	f(now.Add(time.Hour), true, time.Minute)
	if over, _ := l.OverBudget(ip2, now); over {
		t.Fatalf("another client is over budget")
	}
	// UTC midnight resets the budget.
	midnight := time.Date(2025, 3, 15, 0, 0, 0, 0, time.UTC)
	f(midnight.Add(-time.Nanosecond), true, time.Nanosecond)
	f(midnight, false, 0)
	l.AddBytes(ip1, 999, midnight)
	f(midnight, false, 0)
	l.AddBytes(ip1, 1, midnight.Add(time.Second))
	f(midnight.Add(time.Second), true, 24*time.Hour-time.Second)
	// Yesterday's bytes don't keep a client alive; today's do.
	l.Sweep(midnight.Add(24 * time.Hour))
	if n := l.Len(); n != 0 {
		t.Fatalf("unexpected clients after a day: got %d; want 0", n)
	}
}

func TestUTCDay(t *testing.T) {
	f := func(tm time.Time, want int64) {
		t.Helper()
		if got := utcDay(tm.UnixNano()); got != want {
			t.Fatalf("unexpected utcDay(%s): got %d; want %d", tm, got, want)
		}
	}
	f(time.Unix(0, 0), 0)
	f(time.Unix(86399, 999999999), 0)
	f(time.Unix(86400, 0), 1)
	f(time.Unix(-1, 0), -1)
	f(time.Unix(-86400, 0), -1)
	f(time.Unix(-86401, 0), -2)
}

func TestSweep(t *testing.T) {
	l := mustNew(t, Config{RequestsPerSecond: 1, Burst: 10, MaxBlobsPerIP: 1, DailyBytesPerIP: 1 << 30})
	ipA, ipB, ipC, ipD := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2"),
		netip.MustParseAddr("192.0.2.3"), netip.MustParseAddr("192.0.2.4")
	l.Allow(ipA, t0) // bucket 9/10, refills in 1s
	l.AcquireBlob(ipB)
	l.AddBytes(ipC, 1, t0)
	l.Allow(ipD, t0)
	for i := 0; i < 9; i++ {
		l.Allow(ipD, t0) // bucket empty, refills in 10s
	}
	f := func(now time.Time, want int) {
		t.Helper()
		l.Sweep(now)
		if n := l.Len(); n != want {
			t.Fatalf("unexpected clients after Sweep(%s): got %d; want %d", now, n, want)
		}
	}
	f(t0, 4)
	f(t0.Add(time.Second), 3) // A's bucket full again
	f(t0.Add(10*time.Second), 2)
	l.ReleaseBlob(ipB)
	f(t0.Add(10*time.Second), 1)
	f(t0.Add(24*time.Hour), 0) // C's bytes were yesterday's
}

func TestShardCap(t *testing.T) {
	l := mustNew(t, Config{RequestsPerSecond: 1, MaxBlobsPerIP: 1})
	if l.shardCap != MaxClients/NumShards {
		t.Fatalf("unexpected shard cap: got %d; want %d", l.shardCap, MaxClients/NumShards)
	}
	const shardCap = 2 * rebuildMin // small enough for -race, big enough to test the rebuild
	l.shardCap = shardCap
	// Hold a blob slot for some clients: they must never be evicted.
	var holders []netip.Addr
	for i := 0; i < 100; i++ {
		ip := netip.AddrFrom4([4]byte{198, 51, 100, byte(i)})
		if !l.AcquireBlob(ip) {
			t.Fatalf("cannot acquire a blob slot for %s", ip)
		}
		holders = append(holders, ip)
	}
	// A crowd far larger than the cap, each client in its own /64.
	var b [16]byte
	b[0] = 0x20
	for i := 0; i < 3*shardCap*NumShards/2; i++ {
		b[4], b[5], b[6], b[7] = byte(i>>24), byte(i>>16), byte(i>>8), byte(i)
		l.Allow(netip.AddrFrom16(b), t0)
	}
	if n := l.Len(); n > shardCap*NumShards {
		t.Fatalf("unexpected clients tracked: got %d; want at most %d", n, shardCap*NumShards)
	} else if n < shardCap*NumShards*9/10 {
		t.Fatalf("unexpected clients tracked: got %d; want the shards nearly full (the crowd overflows them)", n)
	}
	for _, ip := range holders {
		if l.AcquireBlob(ip) {
			t.Fatalf("client %s holding a blob slot was evicted", ip)
		}
	}
	// Sweeping a mostly-idle table gives the memory back.
	l.Sweep(t0.Add(time.Hour))
	if n := l.Len(); n != len(holders) {
		t.Fatalf("unexpected clients after sweep: got %d; want %d", n, len(holders))
	}
	for i := range l.shards {
		if p := l.shards[i].peak; p > rebuildMin {
			t.Fatalf("shard %d not rebuilt after sweep: peak %d", i, p)
		}
	}
}

func TestShardSpread(t *testing.T) {
	l := mustNew(t, Config{RequestsPerSecond: 1})
	seen := map[*shard]int{}
	for i := 0; i < 4096; i++ {
		seen[l.shardOf(l.keyOf(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)})))]++
		seen[l.shardOf(l.keyOf(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 6: byte(i >> 8), 7: byte(i)})))]++
	}
	if len(seen) != NumShards {
		t.Fatalf("unexpected shards used: got %d; want %d", len(seen), NumShards)
	}
	for s, n := range seen {
		if n > 3*8192/NumShards {
			t.Fatalf("shard %p holds %d of 8192 sequential clients", s, n)
		}
	}
}

func TestRunStops(t *testing.T) {
	l := mustNew(t, Config{RequestsPerSecond: 1})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { l.Run(ctx); close(done) }()
	cancel()
	select {
	case <-done:
	case <-time.After(time.Second):
		t.Fatalf("Run wasn't stopped")
	}
}

// TestConcurrent hammers every method from many goroutines; run it with -race. Blob slot
// accounting must come out exact.
func TestConcurrent(t *testing.T) {
	const maxBlobs = 3
	l := mustNew(t, Config{RequestsPerSecond: 1000, MaxBlobsPerIP: maxBlobs, DailyBytesPerIP: 1 << 40})
	ips := []netip.Addr{ip1, ip2, netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")}
	var mu sync.Mutex
	inFlight := map[netip.Addr]int{}
	var wg sync.WaitGroup
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 2000; i++ {
				ip := ips[(g+i)%len(ips)]
				now := t0.Add(time.Duration(i) * time.Millisecond)
				l.Allow(ip, now)
				l.OverBudget(ip, now)
				if l.AcquireBlob(ip) {
					mu.Lock()
					inFlight[ip]++
					if inFlight[ip] > maxBlobs {
						mu.Unlock()
						t.Errorf("client %s holds %d blob slots; want at most %d", ip, inFlight[ip], maxBlobs)
						return
					}
					mu.Unlock()
					l.AddBytes(ip, 10, now)
					mu.Lock()
					inFlight[ip]--
					mu.Unlock()
					l.ReleaseBlob(ip)
				}
				if i%500 == 0 {
					l.Sweep(now)
				}
			}
		}()
	}
	wg.Wait()
	for _, ip := range ips {
		for i := 0; i < maxBlobs; i++ {
			if !l.AcquireBlob(ip) {
				t.Fatalf("blob slot %d of %s leaked", i, ip)
			}
		}
	}
}
