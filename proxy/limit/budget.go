package limit

import (
	"net/netip"
	"time"
)

// utcDay returns the UTC day of a Unix nanosecond time, counted from the epoch.
func utcDay(ns int64) int64 {
	d := ns / int64(day)
	if ns < 0 && ns%int64(day) != 0 {
		d--
	}
	return d
}

// AddBytes counts n bytes sent to ip against its budget for now's UTC day. Call it as a blob
// streams or once when it ends. It does not allocate for a known client.
func (l *Limiter) AddBytes(ip netip.Addr, n int64, now time.Time) {
	if l == nil || l.dailyBytes == 0 || n <= 0 {
		return
	}
	ns := now.UnixNano()
	today := utcDay(ns)
	k := l.keyOf(ip)
	s := l.shardOf(k)
	s.mu.Lock()
	c, known := s.clients[k]
	if !known {
		c = l.newClient(ns)
	}
	if c.day != today {
		c.day, c.bytes = today, 0
	}
	c.bytes += n
	c.seen = ns
	if known {
		s.clients[k] = c
	} else {
		s.insert(l, k, c, ns)
	}
	s.mu.Unlock()
}

// OverBudget reports whether ip has used up today's DailyBytesPerIP, and if so how long until
// the next UTC midnight resets it. Check it before starting a blob download. It does not
// allocate.
func (l *Limiter) OverBudget(ip netip.Addr, now time.Time) (over bool, retryAfter time.Duration) {
	if l == nil || l.dailyBytes == 0 {
		return false, 0
	}
	ns := now.UnixNano()
	today := utcDay(ns)
	k := l.keyOf(ip)
	s := l.shardOf(k)
	s.mu.Lock()
	c, ok := s.clients[k]
	s.mu.Unlock()
	if !ok || c.day != today || c.bytes < l.dailyBytes {
		return false, 0
	}
	return true, time.Duration((today+1)*int64(day) - ns)
}
