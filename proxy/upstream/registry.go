package upstream

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

// Defaults for Options fields left zero.
const (
	DefaultTimeout      = 30 * time.Second
	DefaultMaxConns     = 512
	DefaultMaxRedirects = 5
	// MaxSmallBodySize caps bodies docxy reads whole from an upstream: challenges, tokens, errors.
	MaxSmallBodySize = 64 << 10
	// MaxBufferedBodySize caps manifests, tag lists and referrers read whole.
	MaxBufferedBodySize = 16 << 20
	challengeTTL        = time.Hour
)

// ErrTooManyRedirects is returned when a blob download is redirected more than MaxRedirects times.
var ErrTooManyRedirects = errors.New("upstream: too many redirects")

// Options configures a Registry.
type Options struct {
	// Name identifies the registry in logs, e.g. "docker.io".
	Name string
	// URL is the registry's base URL, scheme and host only.
	URL string
	// LibraryPrefix maps single-component names to library/NAME (Docker Hub).
	LibraryPrefix bool
	// Username and Password are the mirror's own account; empty means anonymous.
	Username, Password string
	// Accounts are more accounts of the mirror's own, used in turn with Username/Password.
	Accounts []Account
	// TokenRealm and TokenService override the discovered challenge.
	TokenRealm, TokenService string
	// Timeout bounds connecting and each wait for bytes. Default DefaultTimeout.
	Timeout time.Duration
	// MaxConns caps pooled connections to the registry host. Default DefaultMaxConns.
	MaxConns int
	// MaxRedirects bounds the blob redirects followed. Default DefaultMaxRedirects.
	MaxRedirects int
	// UserAgent is sent on every upstream request.
	UserAgent string
	// IPVersion limits upstream connections to IPv4 (4) or IPv6 (6); 0 allows both.
	IPVersion int
}

// Account is an upstream account of the mirror's own.
type Account struct{ Username, Password string }

// Registry is one upstream registry: a pooled connection to its host, the cached auth challenge,
// and clients for its token server and blob redirect targets. It is safe for concurrent use.
type Registry struct {
	Name          string
	LibraryPrefix bool
	// Scheme and Host address the registry ("https", "registry-1.docker.io").
	Scheme, Host string

	opts     Options
	accounts []string      // "Basic ..." for each of the mirror's own accounts; empty: anonymous
	next     atomic.Uint32 // round robin over accounts
	baseURL  string        // scheme://host

	client    *fasthttp.HostClient // the registry host, bodies streamed (blobs)
	buffered  *fasthttp.HostClient // the registry host, small bodies read whole (manifests, tags)
	redirects *fasthttp.Client     // blob redirect targets (CDNs), bodies streamed
	auth      *fasthttp.Client     // token servers, small bodies

	challenge   atomic.Pointer[discovered]
	discoverMu  sync.Mutex // serialises discovery so a crowd causes one upstream /v2/ request
	tokens      tokenCache
	userAgent   string
	privateHost bool
}

type discovered struct {
	c       Challenge
	fetched time.Time
}

// New builds a Registry. It does not contact the upstream.
func New(o Options) (*Registry, error) {
	u, err := url.Parse(o.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("upstream: registry %q: cannot use URL %q: want https://host[:port]", o.Name, o.URL)
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.MaxConns <= 0 {
		o.MaxConns = DefaultMaxConns
	}
	if o.MaxRedirects <= 0 {
		o.MaxRedirects = DefaultMaxRedirects
	}
	r := &Registry{
		Name:          o.Name,
		LibraryPrefix: o.LibraryPrefix,
		Scheme:        u.Scheme,
		Host:          u.Host,
		opts:          o,
		baseURL:       u.Scheme + "://" + u.Host,
		userAgent:     o.UserAgent,
	}
	if o.Username != "" {
		o.Accounts = append([]Account{{o.Username, o.Password}}, o.Accounts...)
	}
	for _, a := range o.Accounts {
		r.accounts = append(r.accounts, "Basic "+base64.StdEncoding.EncodeToString([]byte(a.Username+":"+a.Password)))
	}
	hostname := u.Hostname()
	r.privateHost = HostIsPrivate(hostname)
	addr := u.Host
	if u.Port() == "" {
		if u.Scheme == "https" {
			addr = net.JoinHostPort(hostname, "443")
		} else {
			addr = net.JoinHostPort(hostname, "80")
		}
	}
	// The registry host itself is configured by the operator, so it may be private.
	newHostClient := func(stream bool, maxBody int) *fasthttp.HostClient {
		return &fasthttp.HostClient{
			Addr:                          addr,
			Name:                          o.UserAgent,
			IsTLS:                         u.Scheme == "https",
			DialTimeout:                   newDialer(o.Timeout, true, o.IPVersion),
			MaxConns:                      o.MaxConns,
			MaxConnWaitTimeout:            o.Timeout,
			MaxIdleConnDuration:           90 * time.Second,
			StreamResponseBody:            stream,
			MaxResponseBodySize:           maxBody,
			DisableHeaderNamesNormalizing: false,
			DisablePathNormalizing:        true,
			NoDefaultUserAgentHeader:      o.UserAgent == "",
			ReadBufferSize:                16 << 10,
			WriteBufferSize:               4 << 10,
			MaxIdemponentCallAttempts:     maxAttempts,
			RetryIfErr:                    retryOnlyBrokenConns,
		}
	}
	r.client = newHostClient(true, 0)
	// Manifests, tag lists and referrers are small: reading them whole saves fasthttp's streaming
	// machinery per response and lets the server write header and body in one writev.
	r.buffered = newHostClient(false, MaxBufferedBodySize)
	// Redirect targets and token servers come from upstream answers: they may only be private
	// when the registry itself is (a test or an on-premises setup).
	r.redirects = &fasthttp.Client{
		Name:                      o.UserAgent,
		NoDefaultUserAgentHeader:  o.UserAgent == "",
		DialTimeout:               newDialer(o.Timeout, r.privateHost, o.IPVersion),
		MaxConnsPerHost:           o.MaxConns,
		MaxConnWaitTimeout:        o.Timeout,
		MaxIdleConnDuration:       90 * time.Second,
		StreamResponseBody:        true,
		DisablePathNormalizing:    true,
		ReadBufferSize:            16 << 10,
		MaxIdemponentCallAttempts: maxAttempts,
		RetryIfErr:                retryOnlyBrokenConns,
	}
	r.auth = &fasthttp.Client{
		Name:                      o.UserAgent,
		NoDefaultUserAgentHeader:  o.UserAgent == "",
		DialTimeout:               newDialer(o.Timeout, r.privateHost, o.IPVersion),
		MaxConnsPerHost:           64,
		MaxConnWaitTimeout:        o.Timeout,
		MaxResponseBodySize:       MaxSmallBodySize,
		ReadTimeout:               o.Timeout,
		WriteTimeout:              o.Timeout,
		MaxIdemponentCallAttempts: maxAttempts,
		RetryIfErr:                retryOnlyBrokenConns,
	}
	r.tokens.m = make(map[string]token)
	return r, nil
}

// BaseURL returns scheme://host of the registry.
func (r *Registry) BaseURL() string { return r.baseURL }

// HasAccount reports whether the mirror has its own upstream account for this registry.
func (r *Registry) HasAccount() bool { return len(r.accounts) > 0 }

// Accounts returns how many upstream accounts of its own the mirror has for this registry.
func (r *Registry) Accounts() int { return len(r.accounts) }

// BasicAuth returns the Authorization value of the mirror's next account (they are used in turn,
// so that one account's rate limit is not the mirror's), its index, or "" and -1 when anonymous.
func (r *Registry) BasicAuth() (string, int) {
	if len(r.accounts) == 0 {
		return "", -1
	}
	i := int(r.next.Add(1)-1) % len(r.accounts)
	return r.accounts[i], i
}

// SetRequestURI points req at path (which must start with "/") on the registry host.
// query, when not empty, is appended after '?'.
func (r *Registry) SetRequestURI(req *fasthttp.Request, path, query []byte) {
	uri := req.URI()
	uri.DisablePathNormalizing = true
	uri.SetScheme(r.Scheme)
	uri.SetHost(r.Host)
	uri.SetPathBytes(path)
	uri.SetQueryStringBytes(query)
	req.Header.SetHost(r.Host)
}

// Do sends req to the registry host over the pool. The response body is streamed: the caller
// must close resp's body stream (fasthttp.ReleaseResponse does).
func (r *Registry) Do(req *fasthttp.Request, resp *fasthttp.Response) error {
	return r.client.Do(req, resp)
}

// DoBuffered is Do for small responses (manifests, tag lists, referrers): the body is read whole,
// at most MaxBufferedBodySize bytes (fasthttp.ErrBodyTooLarge beyond).
func (r *Registry) DoBuffered(req *fasthttp.Request, resp *fasthttp.Response) error {
	return r.buffered.Do(req, resp)
}

// FollowRedirects follows 3xx answers to a blob request until a non-redirect response, at most
// MaxRedirects hops, so that clients never need to reach a CDN themselves. Authorization is only
// kept while the target stays on the registry host (S3 and CDNs reject it). req is modified.
func (r *Registry) FollowRedirects(req *fasthttp.Request, resp *fasthttp.Response) error {
	for hops := 0; isRedirect(resp.StatusCode()); hops++ {
		if hops >= r.opts.MaxRedirects {
			return ErrTooManyRedirects
		}
		loc := resp.Header.Peek(fasthttp.HeaderLocation)
		if len(loc) == 0 {
			return nil // nothing to follow; relay as is
		}
		if err := resp.CloseBodyStream(); err != nil {
			return fmt.Errorf("cannot discard redirect body: %w", err)
		}
		uri := req.URI()
		next := fasthttp.AcquireURI()
		uri.CopyTo(next)
		next.UpdateBytes(loc)
		sameHost := bytes.Equal(next.Host(), uri.Host()) && bytes.Equal(next.Scheme(), uri.Scheme())
		if !sameHost {
			req.Header.Del(fasthttp.HeaderAuthorization)
		}
		if s := next.Scheme(); !bytes.Equal(s, []byte("https")) && !bytes.Equal(s, []byte("http")) {
			fasthttp.ReleaseURI(next)
			return fmt.Errorf("upstream: refusing redirect to scheme %q", s)
		}
		next.CopyTo(uri)
		fasthttp.ReleaseURI(next)
		req.Header.SetHostBytes(uri.Host())
		resp.Reset()
		var err error
		if sameHost && string(uri.Host()) == r.Host {
			err = r.client.Do(req, resp)
		} else {
			err = r.redirects.Do(req, resp)
		}
		if err != nil {
			return fmt.Errorf("cannot follow redirect to %s: %w", uri.Host(), err)
		}
	}
	return nil
}

// maxAttempts allows one retry: enough for a pooled keep-alive connection the upstream closed
// while it sat idle, without multiplying a timeout (fasthttp retries idempotent requests 5 times
// by default, so a silent upstream would hold the client 5 x upstream_timeout).
const maxAttempts = 2

// retryOnlyBrokenConns retries a request that failed on a broken connection, never a timeout.
func retryOnlyBrokenConns(_ *fasthttp.Request, attempts int, err error) (resetTimeout, retry bool) {
	return false, attempts < maxAttempts && !IsTimeout(err)
}

func isRedirect(status int) bool {
	switch status {
	case fasthttp.StatusMovedPermanently, fasthttp.StatusFound, fasthttp.StatusSeeOther,
		fasthttp.StatusTemporaryRedirect, fasthttp.StatusPermanentRedirect:
		return true
	}
	return false
}

// Challenge returns the registry's auth challenge, discovering it with GET /v2/ the first time and
// again after an hour. Overrides from the configuration win over what the registry says.
func (r *Registry) Challenge() (Challenge, error) {
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
			return d.c, nil // keep serving with the last known challenge while the upstream is down
		}
		return Challenge{}, err
	}
	r.challenge.Store(&discovered{c: c, fetched: time.Now()})
	return c, nil
}

// RestoreChallenge sets the challenge an earlier process discovered, unless one is known already.
// It counts as expired: the registry is asked again first, and c is used only while it cannot be
// reached, so that a mirror restarted during an upstream outage still serves what it has cached.
func (r *Registry) RestoreChallenge(c Challenge) {
	r.challenge.CompareAndSwap(nil, &discovered{c: c})
}

// CachedChallenge returns the challenge discovered so far, without contacting the upstream.
func (r *Registry) CachedChallenge() (Challenge, bool) {
	if d := r.challenge.Load(); d != nil {
		return d.c, true
	}
	return Challenge{}, false
}

func (r *Registry) discover() (Challenge, error) {
	if r.opts.TokenRealm != "" {
		return Challenge{Scheme: "Bearer", Realm: r.opts.TokenRealm, Service: r.opts.TokenService}, nil
	}
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	r.SetRequestURI(req, []byte("/v2/"), nil)
	if err := r.client.Do(req, resp); err != nil {
		return Challenge{}, fmt.Errorf("cannot reach %s/v2/: %w", r.baseURL, err)
	}
	status := resp.StatusCode()
	h := string(resp.Header.Peek(fasthttp.HeaderWWWAuthenticate))
	_ = resp.CloseBodyStream()
	switch {
	case status == fasthttp.StatusOK:
		return Challenge{}, nil
	case status == fasthttp.StatusUnauthorized:
		c, ok := ParseChallenge(h)
		if !ok {
			return Challenge{}, fmt.Errorf("%s/v2/ answered 401 with an unreadable WWW-Authenticate %q", r.baseURL, h)
		}
		if c.Scheme == "Bearer" && c.Realm == "" {
			return Challenge{}, fmt.Errorf("%s/v2/ answered a Bearer challenge without realm", r.baseURL)
		}
		if r.opts.TokenService != "" {
			c.Service = r.opts.TokenService
		}
		c.Scope, c.Error = "", ""
		return c, nil
	}
	return Challenge{}, fmt.Errorf("%s/v2/ answered status %d; want 200 or 401", r.baseURL, status)
}

// DoAuth sends a request to the registry's token server (req's URI must be absolute).
// The response body is read whole, at most MaxSmallBodySize bytes.
func (r *Registry) DoAuth(req *fasthttp.Request, resp *fasthttp.Response) error {
	return r.auth.Do(req, resp)
}

// Close releases idle pooled connections.
func (r *Registry) Close() {
	r.client.CloseIdleConnections()
	r.buffered.CloseIdleConnections()
	r.redirects.CloseIdleConnections()
	r.auth.CloseIdleConnections()
}

// UpstreamName returns the repository name as the upstream knows it: with "library/" added to a
// single-component name when LibraryPrefix is set. dst is reused.
func (r *Registry) UpstreamName(dst, name []byte) []byte {
	if r.LibraryPrefix && bytes.IndexByte(name, '/') < 0 {
		dst = append(dst, "library/"...)
	}
	return append(dst, name...)
}

// IsTimeout reports whether err is a timeout, for mapping to 504.
func IsTimeout(err error) bool {
	if errors.Is(err, fasthttp.ErrTimeout) || errors.Is(err, fasthttp.ErrDialTimeout) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
