package limit

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"strings"
	"sync"
	"time"
)

// ErrInvalidConfig is returned by New when a Config field is out of range or a trusted proxy
// is not an IP address or CIDR. The returned error wraps it and names the field.
var ErrInvalidConfig = errors.New("limit: invalid config")

const (
	// MaxClients caps the number of clients tracked at once (MaxClients/NumShards per shard),
	// about 100 bytes each, so roughly 25 MiB at most. A new client arriving at a full shard
	// evicts one of a few sampled clients that hold no blob slot, preferring idle ones, then the
	// least recently seen. Only clients holding blob slots can push a shard past its cap, and
	// those are bounded by open connections.
	MaxClients = 1 << 18

	// NumShards is the number of independently locked shards the client table is split into.
	NumShards = 64

	// DefaultIPv6Prefix groups IPv6 clients by /64, the usual allocation of one subscriber.
	DefaultIPv6Prefix = 64

	// SweepInterval is how often Run calls Sweep.
	SweepInterval = time.Minute

	maxPerShard = MaxClients / NumShards
	rebuildMin  = 1024 // a shard map is rebuilt only if it once held more clients than this
	evictSample = 16   // clients looked at to choose an eviction victim
	day         = 24 * time.Hour
)

// Config sets the limits. The zero value limits nothing.
type Config struct {
	// RequestsPerSecond is the steady request rate allowed per client IP (token bucket refill).
	// 0 turns rate limiting off.
	RequestsPerSecond float64

	// Burst is the token bucket size: requests a client may make at once after being idle.
	// 0 means max(1, ceil(2*RequestsPerSecond)).
	Burst int

	// MaxBlobsPerIP caps concurrent blob downloads per client IP. 0 turns it off.
	MaxBlobsPerIP int

	// DailyBytesPerIP is the number of bytes a client IP may download per UTC day. The budget is
	// checked before a download starts, so the download that crosses it is finished. 0 turns it off.
	DailyBytesPerIP int64

	// IPv6Prefix is the prefix length under which IPv6 clients share one set of limits: a
	// subscriber usually gets a whole /64 (or /56, /48) and may use any address in it, so counting
	// single addresses would let one client spread over 2^64 of them. 0 means 64; 128 counts every
	// address. IPv4 clients are counted per address.
	IPv6Prefix int

	// TrustedProxies lists the IPs or CIDRs (e.g. "10.0.0.0/8", "2001:db8::/32", "192.0.2.7")
	// of load balancers whose X-Forwarded-For header is believed. Empty means X-Forwarded-For
	// is ignored and the TCP peer is the client.
	TrustedProxies []string
}

// Limiter tracks per-client state. All methods are safe for concurrent use, and a nil *Limiter
// is valid and limits nothing.
//
// Clients are keyed by their 16-byte address (IPv4 as IPv4-mapped IPv6, zone dropped, IPv6 cut to
// its IPv6Prefix), so the table holds no pointers for the GC to scan.
type Limiter struct {
	rate       float64 // tokens per nanosecond
	burst      float64
	maxBlobs   int32
	dailyBytes int64
	trusted    []netip.Prefix
	v6bits     int // IPv6 prefix length that makes a client
	shardCap   int // clients per shard before eviction: maxPerShard, smaller in tests
	shards     [NumShards]shard
}

type key [16]byte

type shard struct {
	mu      sync.Mutex // protects clients and peak
	clients map[key]client
	peak    int                  // high-water mark of len(clients) since the map was last rebuilt
	_       [64 - 8 - 8 - 8]byte // keep shards on separate cache lines
}

// client is the state of one IP. Times are Unix nanoseconds.
type client struct {
	tokens float64 // bucket level as of last
	last   int64   // last bucket refill
	seen   int64   // last Allow or AddBytes, for eviction
	day    int64   // UTC day (days since the Unix epoch) that bytes counts
	bytes  int64
	blobs  int32
}

// New checks cfg and returns a Limiter. Errors wrap ErrInvalidConfig.
func New(cfg Config) (*Limiter, error) {
	rps := cfg.RequestsPerSecond
	if rps < 0 || math.IsNaN(rps) || math.IsInf(rps, 0) {
		return nil, fmt.Errorf("%w: requests per second must be a finite number >= 0; got %v", ErrInvalidConfig, rps)
	}
	if cfg.Burst < 0 {
		return nil, fmt.Errorf("%w: burst must be >= 0; got %d", ErrInvalidConfig, cfg.Burst)
	}
	if cfg.MaxBlobsPerIP < 0 || cfg.MaxBlobsPerIP > math.MaxInt32 {
		return nil, fmt.Errorf("%w: max blobs per IP must be between 0 and %d; got %d", ErrInvalidConfig, math.MaxInt32, cfg.MaxBlobsPerIP)
	}
	if cfg.IPv6Prefix != 0 && (cfg.IPv6Prefix < 16 || cfg.IPv6Prefix > 128) {
		return nil, fmt.Errorf("%w: IPv6 prefix must be between 16 and 128 (64 is one subscriber); got %d", ErrInvalidConfig, cfg.IPv6Prefix)
	}
	if cfg.DailyBytesPerIP < 0 {
		return nil, fmt.Errorf("%w: daily bytes per IP must be >= 0; got %d", ErrInvalidConfig, cfg.DailyBytesPerIP)
	}
	l := &Limiter{
		rate:       rps / float64(time.Second),
		burst:      float64(cfg.Burst),
		maxBlobs:   int32(cfg.MaxBlobsPerIP),
		dailyBytes: cfg.DailyBytesPerIP,
		shardCap:   maxPerShard,
		v6bits:     cfg.IPv6Prefix,
	}
	if l.v6bits == 0 {
		l.v6bits = DefaultIPv6Prefix
	}
	if rps > 0 && cfg.Burst == 0 {
		l.burst = max(1, math.Ceil(2*rps))
	}
	for i, s := range cfg.TrustedProxies {
		p, err := parseTrusted(strings.TrimSpace(s))
		if err != nil {
			return nil, fmt.Errorf("%w: trusted proxy #%d %q is not an IP address or CIDR such as 10.0.0.0/8 or 2001:db8::/32: %w",
				ErrInvalidConfig, i+1, s, err)
		}
		l.trusted = append(l.trusted, p)
	}
	for i := range l.shards {
		l.shards[i].clients = make(map[key]client)
	}
	return l, nil
}

func parseTrusted(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, err
		}
		if p.Addr().Is4In6() {
			// "::ffff:10.0.0.0/104" means 10.0.0.0/8; peers are unmapped before matching.
			if p.Bits() < 96 {
				return netip.Prefix{}, errors.New("IPv4-mapped prefix shorter than /96")
			}
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		return p.Masked(), nil // 10.1.2.3/8 means 10.0.0.0/8, as net.ParseCIDR has it
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	if a.Zone() != "" {
		return netip.Prefix{}, errors.New("zones are not allowed")
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// Enabled reports whether any limit is on. When it is false every check passes and nothing is
// tracked, so the handler may skip the Limiter altogether.
func (l *Limiter) Enabled() bool {
	return l != nil && (l.rate > 0 || l.maxBlobs > 0 || l.dailyBytes > 0)
}

// keyOf is the client an address belongs to: the address itself for IPv4, its IPv6Prefix for IPv6.
func (l *Limiter) keyOf(ip netip.Addr) key {
	k := ip.As16()
	if ip.Is4() || ip.Is4In6() {
		return k
	}
	i := l.v6bits / 8
	if r := l.v6bits % 8; r != 0 {
		k[i] &^= 0xff >> r
		i++
	}
	clear(k[i:])
	return k
}

func (l *Limiter) shardOf(k key) *shard {
	// Fold both halves so IPv4 (which lives in the low half) and IPv6 both spread;
	// the multiplicative hash puts well-mixed bits at the top.
	var lo, hi uint64
	for i := 0; i < 8; i++ {
		hi = hi<<8 | uint64(k[i])
		lo = lo<<8 | uint64(k[8+i])
	}
	h := (hi ^ lo*0x9e3779b97f4a7c15) * 0xbf58476d1ce4e5b9
	return &l.shards[h>>(64-6)]
}

// newClient returns the state of a client seen for the first time at now (nanoseconds).
func (l *Limiter) newClient(now int64) client {
	return client{tokens: l.burst, last: now, seen: now}
}

// insert stores c as a new client, evicting another one first if the shard is full.
// s.mu must be held.
func (s *shard) insert(l *Limiter, k key, c client, now int64) {
	if len(s.clients) >= l.shardCap {
		s.evictOne(l, now)
	}
	s.clients[k] = c
	s.peak = max(s.peak, len(s.clients))
}

// evictOne drops one client holding no blob slot among a few sampled ones (map iteration order
// is random): an idle one if any, else the least recently seen. s.mu must be held.
func (s *shard) evictOne(l *Limiter, now int64) {
	var victim key
	found := false
	var oldest int64 = math.MaxInt64
	n := 0
	for k, c := range s.clients {
		if c.blobs == 0 {
			if l.idle(&c, now) {
				delete(s.clients, k)
				return
			}
			if c.seen < oldest {
				victim, oldest, found = k, c.seen, true
			}
		}
		if n++; n >= evictSample {
			break
		}
	}
	if found {
		delete(s.clients, victim)
	}
}

// idle reports whether dropping c loses nothing: its bucket has refilled, it holds no blob
// slot, and it has downloaded nothing today.
func (l *Limiter) idle(c *client, now int64) bool {
	if c.blobs > 0 {
		return false
	}
	if c.bytes > 0 && c.day == utcDay(now) {
		return false
	}
	if l.rate > 0 && c.tokens+float64(max(now-c.last, 0))*l.rate < l.burst {
		return false
	}
	return true
}

// Sweep drops idle clients: those whose bucket is full again, that hold no blob slot and that
// have downloaded nothing this UTC day. Call it periodically (Run does, every minute). A shard
// whose table shrank to under a quarter of its peak is rebuilt so that its memory is returned.
func (l *Limiter) Sweep(now time.Time) {
	if !l.Enabled() {
		return
	}
	ns := now.UnixNano()
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		for k, c := range s.clients {
			if l.idle(&c, ns) {
				delete(s.clients, k)
			}
		}
		if s.peak > rebuildMin && len(s.clients) < s.peak/4 {
			m := make(map[key]client, len(s.clients))
			for k, c := range s.clients {
				m[k] = c
			}
			s.clients = m
			s.peak = len(m)
		}
		s.mu.Unlock()
	}
}

// Run calls Sweep every SweepInterval until ctx is done. It returns at once if the Limiter is
// not Enabled.
func (l *Limiter) Run(ctx context.Context) {
	if !l.Enabled() {
		return
	}
	t := time.NewTicker(SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			l.Sweep(now)
		}
	}
}

// Len returns the number of clients currently tracked.
func (l *Limiter) Len() int {
	if l == nil {
		return 0
	}
	n := 0
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		n += len(s.clients)
		s.mu.Unlock()
	}
	return n
}

// RetryAfterSeconds rounds d up to whole seconds, at least 1, for a Retry-After header.
func RetryAfterSeconds(d time.Duration) int {
	s := (d + time.Second - 1) / time.Second
	return int(max(s, 1))
}
