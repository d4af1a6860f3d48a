package baseline

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/docxy/docxy/config"
	"github.com/docxy/docxy/proxy/upstream"
)

// Defaults, the same as docxy's proxy/upstream.
const (
	maxRedirects     = upstream.DefaultMaxRedirects
	maxSmallBodySize = upstream.MaxSmallBodySize
	challengeTTL     = time.Hour
	// readBufferSize and writeBufferSize match docxy's upstream HostClient.
	readBufferSize  = 16 << 10
	writeBufferSize = 4 << 10
)

var (
	errTooManyRedirects = errors.New("baseline: too many redirects")
)

// registry is one upstream registry: docxy's upstream.Registry rebuilt on net/http.
type registry struct {
	name          string
	libraryPrefix bool
	scheme, host  string
	baseURL       string // scheme://host
	basicAuth     string // "Basic ..." for the mirror's own account, or ""
	tokenRealm    string
	tokenService  string
	userAgent     []string

	client    *http.Transport // the registry host
	redirects *http.Transport // blob redirect targets (CDNs)
	auth      *http.Client    // token servers

	challenge  atomic.Pointer[discovered]
	discoverMu sync.Mutex // serialises discovery so a crowd causes one upstream /v2/ request
}

type discovered struct {
	c       upstream.Challenge
	fetched time.Time
}

func newRegistry(rc config.Registry, s config.Server, userAgent string) (*registry, error) {
	u, err := url.Parse(rc.Upstream)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("baseline: registry %q: cannot use URL %q: want https://host[:port]", rc.Name, rc.Upstream)
	}
	timeout := s.UpstreamTimeout.Duration
	if timeout <= 0 {
		timeout = upstream.DefaultTimeout
	}
	maxConns := s.MaxConnsPerHost
	if maxConns <= 0 {
		maxConns = upstream.DefaultMaxConns
	}
	r := &registry{
		name:          rc.Name,
		libraryPrefix: rc.LibraryPrefix,
		scheme:        u.Scheme,
		host:          u.Host,
		baseURL:       u.Scheme + "://" + u.Host,
		tokenRealm:    rc.TokenRealm,
		tokenService:  rc.TokenService,
		userAgent:     []string{userAgent},
	}
	if rc.Username != "" {
		r.basicAuth = "Basic " + base64.StdEncoding.EncodeToString([]byte(rc.Username+":"+rc.Password))
	}
	private := upstream.HostIsPrivate(u.Hostname())
	// The registry host is configured by the operator, so it may be private; redirect targets
	// and token servers come from upstream answers and may only be private when it is.
	r.client = newTransport(timeout, maxConns, true)
	r.redirects = newTransport(timeout, maxConns, private)
	authTransport := newTransport(timeout, 64, private)
	r.auth = &http.Client{
		Transport: authTransport,
		Timeout:   timeout,
		// fasthttp.Client.Do, which docxy uses for tokens, does not follow redirects either.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return r, nil
}

// newTransport returns the tuned http.Transport: HTTP/1.1 only (as fasthttp), keep-alive pools
// as large as docxy's MaxConns, no transparent gzip (bytes are relayed unaltered), no proxy from
// the environment, and docxy's progress timeout on every read and write.
func newTransport(timeout time.Duration, maxConns int, allowPrivate bool) *http.Transport {
	return &http.Transport{
		DialContext:           upstream.DialContext(timeout, allowPrivate),
		MaxIdleConns:          0, // no global limit
		MaxIdleConnsPerHost:   maxConns,
		MaxConnsPerHost:       maxConns,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   timeout,
		ResponseHeaderTimeout: timeout,
		DisableCompression:    true,
		ForceAttemptHTTP2:     false,
		TLSNextProto:          map[string]func(string, *tls.Conn) http.RoundTripper{}, // HTTP/1.1 only
		ReadBufferSize:        readBufferSize,
		WriteBufferSize:       writeBufferSize,
	}
}

// appendUpstreamName appends the repository name as the upstream knows it (library/ added to
// single-component names when the registry needs it).
func (r *registry) appendUpstreamName(dst []byte, name []byte) []byte {
	if r.libraryPrefix && !containsByte(name, '/') {
		dst = append(dst, "library/"...)
	}
	return append(dst, name...)
}

func containsByte(b []byte, c byte) bool {
	for _, x := range b {
		if x == c {
			return true
		}
	}
	return false
}

// followRedirects follows 3xx answers to a blob request like upstream.Registry.FollowRedirects:
// at most maxRedirects hops, Authorization kept only while the target stays on the same host.
// It closes the redirect responses and returns the final one; req is modified.
func (r *registry) followRedirects(req *http.Request, resp *http.Response) (*http.Response, error) {
	for hops := 0; isRedirect(resp.StatusCode); hops++ {
		if hops >= maxRedirects {
			resp.Body.Close()
			return nil, errTooManyRedirects
		}
		loc := resp.Header.Get("Location")
		if loc == "" {
			return resp, nil // nothing to follow; relay as is
		}
		_, _ = io.CopyN(io.Discard, resp.Body, 2<<10) // let a short body keep its connection
		resp.Body.Close()
		next, err := req.URL.Parse(loc)
		if err != nil {
			return nil, fmt.Errorf("cannot parse redirect %q: %w", loc, err)
		}
		if next.Scheme != "https" && next.Scheme != "http" {
			return nil, fmt.Errorf("baseline: refusing redirect to scheme %q", next.Scheme)
		}
		sameHost := next.Host == req.URL.Host && next.Scheme == req.URL.Scheme
		if !sameHost {
			req.Header.Del("Authorization")
		}
		req.URL, req.Host = next, next.Host
		rt := r.redirects
		if sameHost && next.Host == r.host {
			rt = r.client
		}
		if resp, err = rt.RoundTrip(req); err != nil {
			return nil, fmt.Errorf("cannot follow redirect to %s: %w", next.Host, err)
		}
	}
	return resp, nil
}

func isRedirect(status int) bool {
	switch status {
	case http.StatusMovedPermanently, http.StatusFound, http.StatusSeeOther,
		http.StatusTemporaryRedirect, http.StatusPermanentRedirect:
		return true
	}
	return false
}

// getChallenge returns the registry's auth challenge, discovered with GET /v2/ and kept an hour,
// like upstream.Registry.Challenge.
func (r *registry) getChallenge() (upstream.Challenge, error) {
	if d := r.challenge.Load(); d != nil && time.Since(d.fetched) < challengeTTL {
		return d.c, nil
	}
	r.discoverMu.Lock()
	defer r.discoverMu.Unlock()
	if d := r.challenge.Load(); d != nil && time.Since(d.fetched) < challengeTTL {
		return d.c, nil
	}
	c, err := r.discover()
	if err != nil {
		if d := r.challenge.Load(); d != nil {
			return d.c, nil
		}
		return upstream.Challenge{}, err
	}
	r.challenge.Store(&discovered{c: c, fetched: time.Now()})
	return c, nil
}

func (r *registry) cachedChallenge() (upstream.Challenge, bool) {
	if d := r.challenge.Load(); d != nil {
		return d.c, true
	}
	return upstream.Challenge{}, false
}

func (r *registry) discover() (upstream.Challenge, error) {
	if r.tokenRealm != "" {
		return upstream.Challenge{Scheme: "Bearer", Realm: r.tokenRealm, Service: r.tokenService}, nil
	}
	req, err := http.NewRequest(http.MethodGet, r.baseURL+"/v2/", nil)
	if err != nil {
		return upstream.Challenge{}, err
	}
	req.Header["User-Agent"] = r.userAgent
	resp, err := r.client.RoundTrip(req)
	if err != nil {
		return upstream.Challenge{}, fmt.Errorf("cannot reach %s/v2/: %w", r.baseURL, err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxSmallBodySize))
	resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
		return upstream.Challenge{}, nil
	case http.StatusUnauthorized:
		h := resp.Header.Get("WWW-Authenticate")
		c, ok := upstream.ParseChallenge(h)
		if !ok {
			return upstream.Challenge{}, fmt.Errorf("%s/v2/ answered 401 with an unreadable WWW-Authenticate %q", r.baseURL, h)
		}
		if c.Scheme == "Bearer" && c.Realm == "" {
			return upstream.Challenge{}, fmt.Errorf("%s/v2/ answered a Bearer challenge without realm", r.baseURL)
		}
		if r.tokenService != "" {
			c.Service = r.tokenService
		}
		c.Scope, c.Error = "", ""
		return c, nil
	}
	return upstream.Challenge{}, fmt.Errorf("%s/v2/ answered status %d; want 200 or 401", r.baseURL, resp.StatusCode)
}

func (r *registry) closeIdleConnections() {
	r.client.CloseIdleConnections()
	r.redirects.CloseIdleConnections()
	r.auth.CloseIdleConnections()
}

func isTimeout(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
