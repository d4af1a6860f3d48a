package limit

import (
	"bytes"
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func mustNew(t testing.TB, cfg Config) *Limiter {
	t.Helper()
	l, err := New(cfg)
	if err != nil {
		t.Fatalf("cannot create limiter: %s", err)
	}
	return l
}

func TestNewTrustedProxies(t *testing.T) {
	f := func(proxy string, wantErr string) {
		t.Helper()
		_, err := New(Config{TrustedProxies: []string{"10.0.0.0/8", proxy}})
		if wantErr == "" {
			if err != nil {
				t.Fatalf("unexpected error for %q: %s", proxy, err)
			}
			return
		}
		if err == nil {
			t.Fatalf("expected an error for %q", proxy)
		}
		if !errors.Is(err, ErrInvalidConfig) {
			t.Fatalf("unexpected error type: got %v; want it to wrap ErrInvalidConfig", err)
		}
		if !strings.Contains(err.Error(), wantErr) {
			t.Fatalf("unexpected error: got %q; want it to contain %q", err, wantErr)
		}
	}
	f("192.0.2.7", "")
	f("2001:db8::/32", "")
	f(" 172.16.0.0/12 ", "")
	f("10.1.2.3/8", "") // masked like net.ParseCIDR
	f("::ffff:192.168.0.0/112", "")
	f("10.0.0.0/33", `trusted proxy #2 "10.0.0.0/33"`)
	f("lb.internal", `trusted proxy #2 "lb.internal" is not an IP address or CIDR`)
	f("", `trusted proxy #2 ""`)
	f("fe80::1%eth0", "zones are not allowed")
	f("::ffff:0.0.0.0/80", "shorter than /96")
}

func TestNewRejectsBadNumbers(t *testing.T) {
	f := func(cfg Config, wantErr string) {
		t.Helper()
		_, err := New(cfg)
		if err == nil || !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), wantErr) {
			t.Fatalf("unexpected error: got %v; want ErrInvalidConfig containing %q", err, wantErr)
		}
	}
	f(Config{RequestsPerSecond: -1}, "requests per second")
	f(Config{Burst: -1}, "burst")
	f(Config{MaxBlobsPerIP: -2}, "max blobs per IP")
	f(Config{DailyBytesPerIP: -3}, "daily bytes per IP")
	f(Config{IPv6Prefix: 8}, "IPv6 prefix")
	f(Config{IPv6Prefix: 129}, "IPv6 prefix")
}

func TestClientIP(t *testing.T) {
	l := mustNew(t, Config{TrustedProxies: []string{"10.0.0.0/8", "192.0.2.7", "2001:db8:ffff::/48"}})
	f := func(peer, xff, want string) {
		t.Helper()
		got := l.ClientIP(netip.MustParseAddr(peer), []byte(xff))
		if got != netip.MustParseAddr(want) {
			t.Fatalf("unexpected client for peer %s, X-Forwarded-For %q: got %s; want %s", peer, xff, got, want)
		}
	}
	// Untrusted peer: X-Forwarded-For is the client's to forge, so it is ignored.
	f("198.51.100.1", "203.0.113.9", "198.51.100.1")
	f("198.51.100.1", "", "198.51.100.1")
	f("::ffff:198.51.100.1", "203.0.113.9", "198.51.100.1") // peer unmapped
	// Trusted peer: right-most untrusted entry.
	f("10.0.0.1", "203.0.113.9", "203.0.113.9")
	f("::ffff:10.0.0.1", "203.0.113.9", "203.0.113.9")
	f("10.0.0.1", "1.1.1.1, 203.0.113.9", "203.0.113.9")           // 1.1.1.1 may be forged
	f("10.0.0.1", "1.1.1.1, 203.0.113.9, 10.9.9.9", "203.0.113.9") // trusted chain skipped
	f("192.0.2.7", "203.0.113.9,192.0.2.7,10.1.1.1", "203.0.113.9")
	f("10.0.0.1", " 203.0.113.9 ,\t", "203.0.113.9")
	f("10.0.0.1", "2001:db8::5, 2001:db8:ffff::1", "2001:db8::5")
	f("10.0.0.1", "::ffff:203.0.113.9", "203.0.113.9")
	f("10.0.0.1", "203.0.113.9:4711", "203.0.113.9")
	f("10.0.0.1", "[2001:db8::5]:443", "2001:db8::5")
	f("10.0.0.1", "203.0.113.9,,", "203.0.113.9")
	// All trusted: the left-most is the client (an internal host behind the load balancer).
	f("10.0.0.1", "10.5.5.5, 10.6.6.6", "10.5.5.5")
	// Garbage falls back to the peer.
	f("10.0.0.1", "unknown", "10.0.0.1")
	f("10.0.0.1", "203.0.113.9, garbage", "10.0.0.1")
	f("10.0.0.1", "garbage, 203.0.113.9", "203.0.113.9") // never read past the answer
	f("10.0.0.1", "fe80::1%eth0", "10.0.0.1")
	f("10.0.0.1", "0.0.0.0", "10.0.0.1")
	f("10.0.0.1", "[2001:db8::5", "10.0.0.1")
	f("10.0.0.1", ",, ,", "10.0.0.1")
	f("10.0.0.1", "1.2.3", "10.0.0.1")
	f("10.0.0.1", "01.2.3.4", "10.0.0.1")
	f("10.0.0.1", strings.Repeat("10.1.1.1,", 40)+"10.1.1.1", "10.0.0.1") // too long to walk
	f("10.0.0.1", "203.0.113.9,"+strings.Repeat("10.1.1.1,", 20), "203.0.113.9")

	// No trusted proxies: always the peer.
	var none Limiter
	if got := none.ClientIP(netip.MustParseAddr("10.0.0.1"), []byte("203.0.113.9")); got != netip.MustParseAddr("10.0.0.1") {
		t.Fatalf("unexpected client without trusted proxies: got %s", got)
	}
	var nilL *Limiter
	if got := nilL.ClientIP(netip.MustParseAddr("10.0.0.1"), []byte("203.0.113.9")); got != netip.MustParseAddr("10.0.0.1") {
		t.Fatalf("unexpected client for a nil limiter: got %s", got)
	}
}

func TestClientIPLines(t *testing.T) {
	l := mustNew(t, Config{TrustedProxies: []string{"10.0.0.0/8"}})
	f := func(peer string, lines []string, want string) {
		t.Helper()
		var bs [][]byte
		for _, s := range lines {
			bs = append(bs, []byte(s))
		}
		got := l.ClientIPLines(netip.MustParseAddr(peer), bs)
		if got != netip.MustParseAddr(want) {
			t.Fatalf("unexpected client for peer %s, lines %q: got %s; want %s", peer, lines, got, want)
		}
		if len(lines) == 1 {
			if got1 := l.ClientIP(netip.MustParseAddr(peer), bs[0]); got1 != got {
				t.Fatalf("ClientIP and ClientIPLines disagree on %q: %s vs %s", lines[0], got1, got)
			}
		}
	}
	// The client forged the first line; the load balancer added the second.
	f("10.0.0.1", []string{"1.1.1.1", "203.0.113.9"}, "203.0.113.9")
	f("10.0.0.1", []string{"1.1.1.1", "203.0.113.9, 10.2.2.2"}, "203.0.113.9")
	f("10.0.0.1", []string{"203.0.113.9", "10.2.2.2"}, "203.0.113.9")
	f("10.0.0.1", []string{"10.3.3.3", "10.2.2.2"}, "10.3.3.3")
	f("10.0.0.1", []string{"203.0.113.9", "bad"}, "10.0.0.1")
	f("10.0.0.1", []string{"", " "}, "10.0.0.1")
	f("10.0.0.1", nil, "10.0.0.1")
	f("198.51.100.1", []string{"203.0.113.9"}, "198.51.100.1")
	f("10.0.0.1", []string{"1.1.1.1"}, "1.1.1.1")
}

func FuzzClientIP(f *testing.F) {
	for _, s := range []string{
		"203.0.113.9", "1.1.1.1, 203.0.113.9, 10.9.9.9", "[2001:db8::5]:443", "203.0.113.9:80",
		"unknown", ",,", "fe80::1%eth0", "::ffff:10.1.1.1", "10.1.1.1, 10.2.2.2", "", "\t1.2.3.4 ,",
	} {
		f.Add([]byte(s))
	}
	l := mustNew(f, Config{TrustedProxies: []string{"10.0.0.0/8", "2001:db8:ffff::/48"}})
	peer := netip.MustParseAddr("10.0.0.1")
	untrusted := netip.MustParseAddr("198.51.100.1")
	f.Fuzz(func(t *testing.T, xff []byte) {
		orig := bytes.Clone(xff)
		got := l.ClientIP(peer, xff)
		if !bytes.Equal(xff, orig) {
			t.Fatalf("ClientIP modified its input: %q -> %q", orig, xff)
		}
		if !got.IsValid() || got.Is4In6() || got.Zone() != "" {
			t.Fatalf("unexpected client %v for %q", got, xff)
		}
		// IPv4 has one spelling (netip refuses leading zeros), so an answer other than the peer
		// must appear verbatim in the header.
		if got != peer && got.Is4() && !bytes.Contains(xff, []byte(got.String())) {
			t.Fatalf("client %s does not come from %q", got, xff)
		}
		if got := l.ClientIP(untrusted, xff); got != untrusted {
			t.Fatalf("untrusted peer's header was believed: %q gave %s", xff, got)
		}
		if got2 := l.ClientIPLines(peer, [][]byte{xff}); got2 != got {
			t.Fatalf("ClientIPLines disagrees on %q: got %s; want %s", xff, got2, got)
		}
	})
}
