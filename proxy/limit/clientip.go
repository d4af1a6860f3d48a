package limit

import (
	"bytes"
	"net/netip"
	"unsafe"
)

// maxXFFElements bounds the work ClientIP does on a hostile header.
const maxXFFElements = 32

// ClientIP returns the address to account a request to. peer is the TCP peer
// (netip.AddrFromSlice(ctx.RemoteIP())). xForwardedFor is the X-Forwarded-For value; it is
// believed only when peer is a trusted proxy, and then the client is the right-most address
// in it that is not itself a trusted proxy (every earlier entry could have been written by the
// client). If every entry is trusted the left-most one is the client. An empty, unparsable or
// over-long (more than 32 entries to walk) header gives peer. Entries may carry a port
// ("192.0.2.1:4711", "[2001:db8::1]:443"); zones are refused.
//
// The result is unmapped (::ffff:192.0.2.1 becomes 192.0.2.1). ClientIP does not allocate
// for well-formed headers and does not retain xForwardedFor.
func (l *Limiter) ClientIP(peer netip.Addr, xForwardedFor []byte) netip.Addr {
	peer = peer.Unmap()
	if l == nil || len(l.trusted) == 0 || len(xForwardedFor) == 0 || !l.isTrusted(peer) {
		return peer
	}
	if ip, ok := l.walkXFF(xForwardedFor); ok {
		return ip
	}
	return peer
}

// ClientIPLines is ClientIP for a request carrying several X-Forwarded-For header lines
// (fasthttp's Header.PeekAll), which HTTP treats as one comma-separated list in order. Use it
// behind proxies that add their own line instead of appending to the last one (HAProxy's
// "option forwardfor" does): ClientIP on the first line alone would read the client's forgery.
func (l *Limiter) ClientIPLines(peer netip.Addr, xForwardedFor [][]byte) netip.Addr {
	peer = peer.Unmap()
	if l == nil || len(l.trusted) == 0 || !l.isTrusted(peer) {
		return peer
	}
	var leftmost netip.Addr
	budget := maxXFFElements
	for i := len(xForwardedFor) - 1; i >= 0; i-- {
		ip, state := l.walk(xForwardedFor[i], &budget)
		switch state {
		case walkFound:
			return ip
		case walkBad:
			return peer
		case walkAllTrusted:
			leftmost = ip
		}
	}
	if leftmost.IsValid() {
		return leftmost
	}
	return peer
}

func (l *Limiter) walkXFF(xff []byte) (netip.Addr, bool) {
	budget := maxXFFElements
	ip, state := l.walk(xff, &budget)
	switch state {
	case walkFound, walkAllTrusted:
		return ip, true
	}
	return netip.Addr{}, false
}

type walkState uint8

const (
	walkEmpty      walkState = iota // no entries
	walkFound                       // ip is the right-most untrusted entry
	walkAllTrusted                  // every entry trusted; ip is the left-most
	walkBad                         // garbage, or too many entries
)

// walk scans one header line from the right.
func (l *Limiter) walk(line []byte, budget *int) (netip.Addr, walkState) {
	var leftmost netip.Addr
	for len(line) > 0 {
		var elem []byte
		if i := bytes.LastIndexByte(line, ','); i >= 0 {
			elem, line = line[i+1:], line[:i]
		} else {
			elem, line = line, nil
		}
		elem = trimOWS(elem)
		if len(elem) == 0 {
			continue // "a,,b" and trailing commas: empty list elements are allowed (RFC 9110 5.6.1)
		}
		if *budget--; *budget < 0 {
			return netip.Addr{}, walkBad
		}
		ip, ok := parseElem(elem)
		if !ok {
			return netip.Addr{}, walkBad
		}
		if !l.isTrusted(ip) {
			return ip, walkFound
		}
		leftmost = ip
	}
	if leftmost.IsValid() {
		return leftmost, walkAllTrusted
	}
	return netip.Addr{}, walkEmpty
}

func (l *Limiter) isTrusted(ip netip.Addr) bool {
	for _, p := range l.trusted {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// parseElem parses "ip", "ipv4:port" or "[ipv6]:port". It refuses zones and unspecified or
// invalid addresses, and returns the address unmapped.
func parseElem(b []byte) (netip.Addr, bool) {
	if len(b) > len("[ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255]:65535") || bytes.IndexByte(b, '%') >= 0 {
		return netip.Addr{}, false
	}
	// b2s is safe here: netip.ParseAddr keeps no reference to its input when it succeeds (only
	// a zone would be kept, and zones are refused above), and errors are dropped at once.
	var ip netip.Addr
	var err error
	if b[0] == '[' || bytes.Count(b, colon) == 1 {
		var ap netip.AddrPort
		ap, err = netip.ParseAddrPort(b2s(b))
		ip = ap.Addr()
	} else {
		ip, err = netip.ParseAddr(b2s(b))
	}
	if err != nil || ip.IsUnspecified() {
		return netip.Addr{}, false
	}
	return ip.Unmap(), true
}

var colon = []byte{':'}

func b2s(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }
