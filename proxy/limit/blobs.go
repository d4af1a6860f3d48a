package limit

import (
	"net/netip"
	"time"
)

// AcquireBlob takes one of ip's concurrent blob download slots and reports whether one was
// free. After a true result the caller must call ReleaseBlob exactly once when the download
// ends (typically from the body stream's Close). It does not allocate for a known client.
func (l *Limiter) AcquireBlob(ip netip.Addr) (ok bool) {
	if l == nil || l.maxBlobs == 0 {
		return true
	}
	k := l.keyOf(ip)
	s := l.shardOf(k)
	s.mu.Lock()
	c, known := s.clients[k]
	switch {
	case !known:
		now := time.Now().UnixNano() // only for a new client, so the known path stays cheap
		c = l.newClient(now)
		c.blobs = 1
		s.insert(l, k, c, now)
		ok = true
	case c.blobs < l.maxBlobs:
		c.blobs++
		s.clients[k] = c
		ok = true
	}
	s.mu.Unlock()
	return ok
}

// ReleaseBlob returns a slot taken by AcquireBlob. It does not allocate.
func (l *Limiter) ReleaseBlob(ip netip.Addr) {
	if l == nil || l.maxBlobs == 0 {
		return
	}
	k := l.keyOf(ip)
	s := l.shardOf(k)
	s.mu.Lock()
	if c, ok := s.clients[k]; ok && c.blobs > 0 {
		c.blobs--
		s.clients[k] = c
	}
	s.mu.Unlock()
}
