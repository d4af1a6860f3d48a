package limit

import (
	"math"
	"net/netip"
	"time"
)

// Allow takes one token from ip's bucket. When the bucket is empty it returns false and how
// long until a token is available; answer 429 TOOMANYREQUESTS with
// Retry-After: RetryAfterSeconds(retryAfter). It does not allocate for a known client.
func (l *Limiter) Allow(ip netip.Addr, now time.Time) (ok bool, retryAfter time.Duration) {
	if l == nil || l.rate == 0 {
		return true, 0
	}
	ns := now.UnixNano()
	k := l.keyOf(ip)
	s := l.shardOf(k)
	s.mu.Lock()
	c, known := s.clients[k]
	if !known {
		c = l.newClient(ns)
	} else if d := ns - c.last; d > 0 { // a clock stepping back refills nothing
		c.tokens = min(l.burst, c.tokens+float64(d)*l.rate)
		c.last = ns
	}
	c.seen = ns
	if c.tokens >= 1 {
		c.tokens--
		ok = true
	} else {
		retryAfter = time.Duration(min(math.Ceil((1-c.tokens)/l.rate), 1<<62)) // float64(MaxInt64) overflows
	}
	if known {
		s.clients[k] = c
	} else {
		s.insert(l, k, c, ns)
	}
	s.mu.Unlock()
	return ok, retryAfter
}
