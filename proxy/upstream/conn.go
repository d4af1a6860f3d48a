package upstream

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"
)

// ErrForbiddenAddress is returned when a redirect points at a loopback, link-local or private
// address that the upstream itself does not live on.
var ErrForbiddenAddress = errors.New("upstream: refusing to connect to a private or loopback address")

// progressConn bounds each wait for upstream bytes instead of the whole transfer, so a slow but
// moving multi-GiB layer finishes while a stalled upstream is cut off.
// See FIELD-NOTES P13: whole-body deadlines broke long pulls in other mirrors.
type progressConn struct {
	net.Conn
	timeout time.Duration
}

// Read implements io.Reader with a fresh deadline per read.
func (c *progressConn) Read(p []byte) (int, error) {
	if err := c.Conn.SetReadDeadline(time.Now().Add(c.timeout)); err != nil {
		return 0, err
	}
	return c.Conn.Read(p)
}

// Write implements io.Writer with a fresh deadline per write.
func (c *progressConn) Write(p []byte) (int, error) {
	if err := c.Conn.SetWriteDeadline(time.Now().Add(c.timeout)); err != nil {
		return 0, err
	}
	return c.Conn.Write(p)
}

// DialContext returns a dial function (net/http's Transport.DialContext shape) with a connect
// timeout and a progress timeout on every read and write. When allowPrivate is false, addresses
// that are loopback, link-local, private or unspecified are refused after DNS resolution and
// before connecting (so a DNS name cannot smuggle them in).
func DialContext(timeout time.Duration, allowPrivate bool) func(ctx context.Context, network, addr string) (net.Conn, error) {
	d := &net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}
	if !allowPrivate {
		d.Control = func(_, address string, _ syscall.RawConn) error {
			ap, err := netip.ParseAddrPort(address)
			if err != nil {
				return fmt.Errorf("cannot parse dial address %q: %w", address, err)
			}
			if isPrivate(ap.Addr()) {
				return fmt.Errorf("%w: %s", ErrForbiddenAddress, address)
			}
			return nil
		}
	}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &progressConn{Conn: c, timeout: timeout}, nil
	}
}

// newDialer adapts DialContext to fasthttp. ipVersion 4 or 6 dials only that address family.
func newDialer(timeout time.Duration, allowPrivate bool, ipVersion int) fasthttp.DialFuncWithTimeout {
	dial := DialContext(timeout, allowPrivate)
	network := "tcp"
	switch ipVersion {
	case 4:
		network = "tcp4"
	case 6:
		network = "tcp6"
	}
	return func(addr string, t time.Duration) (net.Conn, error) {
		if t <= 0 || t > timeout {
			t = timeout
		}
		ctx, cancel := context.WithTimeout(context.Background(), t)
		defer cancel()
		return dial(ctx, network, addr)
	}
}

func isPrivate(a netip.Addr) bool {
	a = a.Unmap()
	return a.IsLoopback() || a.IsPrivate() || a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() ||
		a.IsUnspecified() || a.IsMulticast() || a.IsInterfaceLocalMulticast()
}

// HostIsPrivate reports whether host (a name or an IP, without port) is loopback or private.
// Names other than localhost are treated as public: their addresses are checked at dial time.
func HostIsPrivate(host string) bool {
	if host == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && isPrivate(a)
}
