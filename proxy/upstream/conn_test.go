package upstream

import (
	"errors"
	"net"
	"testing"
	"time"
)

// TestDialerRefusesPrivateAddresses: redirect targets and token servers named by a public
// upstream may not point docxy at loopback, link-local or private addresses (SSRF).
func TestDialerRefusesPrivateAddresses(t *testing.T) {
	ln := closingListener(t)
	strict := newDialer(time.Second, false, 0)
	for _, addr := range []string{ln.Addr().String(), "localhost:" + portOf(ln), "[::1]:1", "169.254.169.254:80", "10.0.0.1:80", "192.168.1.1:443", "0.0.0.0:80"} {
		if _, err := strict(addr, time.Second); !errors.Is(err, ErrForbiddenAddress) {
			t.Fatalf("unexpected dial result for %s: got %v; want ErrForbiddenAddress", addr, err)
		}
	}
	// When the upstream itself is private, its redirects may be too.
	c, err := newDialer(time.Second, true, 0)(ln.Addr().String(), time.Second)
	if err != nil {
		t.Fatalf("cannot dial a private address with allowPrivate: %s", err)
	}
	c.Close()
}

func TestDialerIPVersion(t *testing.T) {
	ln := closingListener(t)
	for _, v := range []int{0, 4} {
		c, err := newDialer(time.Second, true, v)(ln.Addr().String(), time.Second)
		if err != nil {
			t.Fatalf("ip version %d: cannot dial %s: %s", v, ln.Addr(), err)
		}
		c.Close()
	}
	if c, err := newDialer(time.Second, true, 6)(ln.Addr().String(), time.Second); err == nil {
		c.Close()
		t.Fatalf("ip version 6 dialed the IPv4 address %s", ln.Addr())
	}
}

func TestHostIsPrivate(t *testing.T) {
	f := func(host string, want bool) {
		t.Helper()
		if got := HostIsPrivate(host); got != want {
			t.Fatalf("unexpected HostIsPrivate(%q): got %v; want %v", host, got, want)
		}
	}
	f("localhost", true)
	f("127.0.0.1", true)
	f("::1", true)
	f("10.1.2.3", true)
	f("registry-1.docker.io", false)
	f("8.8.8.8", false)
}

// closingListener listens on 127.0.0.1 and closes every connection it accepts.
func closingListener(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("cannot listen: %s", err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return ln
}

func portOf(ln net.Listener) string {
	_, p, _ := net.SplitHostPort(ln.Addr().String())
	return p
}
