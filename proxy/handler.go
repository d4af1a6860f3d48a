package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/docxy/docxy/cache"
	"github.com/docxy/docxy/cache/s3"
	"github.com/docxy/docxy/config"
	"github.com/docxy/docxy/proxy/access"
	"github.com/docxy/docxy/proxy/auth"
	"github.com/docxy/docxy/proxy/limit"
	"github.com/docxy/docxy/proxy/upstream"
	"github.com/fasthttp/router"
	"github.com/valyala/fasthttp"
	"golang.org/x/sync/singleflight"
)

// Route paths served by the mirror besides /v2/.
const (
	PathToken       = "/auth/token"
	PathHealth      = "/health"
	PathGenerate204 = "/generate_204"
)

// Handler serves the registry API for every configured upstream.
// Build it with New; it is safe for concurrent use.
type Handler struct {
	registries  []*upstream.Registry
	byHost      map[string]*upstream.Registry // configured host names (lowercase, with and without port)
	byNS        map[string]*upstream.Registry // containerd's ?ns=: registry names and upstream hosts
	def         *upstream.Registry
	publicBase  string // scheme://host[:port], no trailing slash
	behindProxy bool
	log         *slog.Logger
	accessLog   bool
	version     string
	started     time.Time
	router      *router.Router

	manifests *manifestCache // nil when the cache is disabled
	blobs     *cache.Store   // nil when the cache is disabled
	shared    *s3.Tier       // cache tier shared by replicas; nil when not configured

	uploads                   chan struct{} // bounds uploads to the shared tier
	sharedHits, sharedUploads *atomic.Int64
	adminToken                string
	cacheCfg                  config.Cache
	rules                     map[*upstream.Registry]*access.Rules // registries with allow/deny lists
	metrics                   *handlerMetrics
	limiter                   *limit.Limiter      // nil when no [limits] are set
	auth                      *auth.Authenticator // nil when mirror accounts are off
	stop                      context.CancelFunc  // stops the limiter's sweeper
	limits                    config.Limits       // what limiter was built from
	flight                    singleflight.Group  // one upstream manifest fetch per key at a time
}

// Options carries what New needs besides the configuration.
type Options struct {
	// Version is reported by /health and in the upstream User-Agent.
	Version string
	// Logger receives errors and, when enabled in the configuration, access logs.
	Logger *slog.Logger
	// Previous is the handler this one replaces on a configuration reload: its cache and
	// metrics carry over, so a reload loses no cached content and no counts.
	Previous *Handler
}

// New builds the handler and one upstream.Registry per configured registry. It contacts no upstream.
func New(cfg *config.Config, o Options) (*Handler, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	h := &Handler{
		byHost:      map[string]*upstream.Registry{},
		byNS:        map[string]*upstream.Registry{},
		publicBase:  cfg.Server.PublicBaseURL,
		behindProxy: cfg.Server.BehindProxy,
		log:         o.Logger,
		accessLog:   cfg.Log.AccessLog != nil && *cfg.Log.AccessLog,
		version:     o.Version,
		started:     time.Now(),
	}
	for _, rc := range cfg.Registries {
		reg, err := upstream.New(upstream.Options{
			Name:          rc.Name,
			URL:           rc.Upstream,
			LibraryPrefix: rc.LibraryPrefix,
			Username:      rc.Username,
			Password:      rc.Password,
			Accounts:      accounts(rc.Accounts),
			TokenRealm:    rc.TokenRealm,
			TokenService:  rc.TokenService,
			Timeout:       cfg.Server.UpstreamTimeout.Duration,
			MaxConns:      cfg.Server.MaxConnsPerHost,
			IPVersion:     cfg.Server.UpstreamIPVersion,
			UserAgent:     "docxy/" + o.Version,
		})
		if err != nil {
			return nil, err
		}
		h.registries = append(h.registries, reg)
		rules, err := access.Compile(rc.Allow, rc.Deny)
		if err != nil {
			return nil, fmt.Errorf("registry %q: %w", rc.Name, err)
		}
		if !rules.Empty() {
			if h.rules == nil {
				h.rules = map[*upstream.Registry]*access.Rules{}
			}
			h.rules[reg] = rules
		}
		for _, host := range rc.Hosts {
			h.byHost[host] = reg
		}
		h.byNS[rc.Name] = reg
		h.byNS[reg.Host] = reg
		if reg.Host == "registry-1.docker.io" || reg.Host == "index.docker.io" {
			h.byNS["docker.io"] = reg // containerd names Docker Hub "docker.io"
		}
		if rc.Default {
			h.def = reg
		}
	}
	if h.def == nil {
		return nil, fmt.Errorf("proxy: no default registry: set default = true on one [[registry]]")
	}
	if prev := o.Previous; prev != nil {
		if prev.cacheCfg.Disabled != cfg.Cache.Disabled || prev.cacheCfg.Dir != cfg.Cache.Dir || prev.cacheCfg.MaxSize != cfg.Cache.MaxSize || prev.cacheCfg.S3 != cfg.Cache.S3 {
			return nil, errors.New("proxy: the [cache] section cannot change on reload (except manifest_ttl): restart docxy")
		}
		h.manifests, h.blobs, h.started = prev.manifests, prev.blobs, prev.started
		h.shared, h.uploads, h.sharedHits, h.sharedUploads = prev.shared, prev.uploads, prev.sharedHits, prev.sharedUploads
		if h.manifests != nil {
			h.manifests.ttl.Store(int64(cfg.Cache.ManifestTTL.Duration))
		}
	} else if !cfg.Cache.Disabled {
		h.manifests = newManifestCache(cfg.Cache.ManifestTTL.Duration, DefaultManifestCacheBytes)
		store, err := cache.Open(cache.Config{Dir: cfg.Cache.Dir, MaxSize: int64(cfg.Cache.MaxSize)})
		if err != nil {
			return nil, fmt.Errorf("cannot open the cache in cache.dir %q: %w", cfg.Cache.Dir, err)
		}
		h.blobs = store
		h.cacheCfg = cfg.Cache
		h.loadManifests()
		h.uploads = make(chan struct{}, maxSharedUploads)
		h.sharedHits, h.sharedUploads = new(atomic.Int64), new(atomic.Int64)
		if sc := cfg.Cache.S3; sc.Enabled() {
			tier, err := s3.New(s3.Config{Endpoint: sc.Endpoint, Bucket: sc.Bucket, Region: sc.Region, AccessKey: sc.AccessKey,
				SecretKey: sc.SecretKey, Prefix: sc.Prefix, Insecure: sc.Insecure, PathStyle: sc.PathStyle})
			if err != nil {
				return nil, err
			}
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			err = tier.Check(ctx)
			cancel()
			if err != nil {
				return nil, err
			}
			h.shared = tier
		}
	}
	h.cacheCfg = cfg.Cache
	h.adminToken = cfg.Admin.Token
	h.limits = cfg.Limits
	if prev := o.Previous; prev != nil && prev.limiter != nil && sameLimits(prev.limits, cfg.Limits) {
		// Unchanged limits keep their state across a reload: a client's spent budget, tokens
		// and blob slots stay counted. The sweeper moves over with the limiter.
		h.limiter, h.stop = prev.limiter, prev.stop
		prev.stop = nil
	} else if l := cfg.Limits; l.RequestsPerSecond > 0 || l.MaxBlobsPerIP > 0 || l.DailyBytesPerIP > 0 {
		lim, err := limit.New(limit.Config{RequestsPerSecond: l.RequestsPerSecond, Burst: l.Burst,
			MaxBlobsPerIP: l.MaxBlobsPerIP, DailyBytesPerIP: int64(l.DailyBytesPerIP), IPv6Prefix: l.IPv6Prefix,
			TrustedProxies: l.TrustedProxies})
		if err != nil {
			return nil, fmt.Errorf("limits: %w", err)
		}
		h.limiter = lim
		ctx, cancel := context.WithCancel(context.Background())
		h.stop = cancel
		go lim.Run(ctx)
	}
	if a := cfg.Auth; a.Enabled() {
		users := make([]auth.User, len(a.Users))
		for i, u := range a.Users {
			users[i] = auth.User{Name: u.Name, PasswordHash: u.PasswordHash}
		}
		authn, err := auth.New(auth.Config{HtpasswdFile: a.HtpasswdFile, Users: users, TokenSecret: a.TokenSecret, TokenTTL: a.TokenTTL.Duration})
		if err != nil {
			return nil, fmt.Errorf("auth: %w", err)
		}
		h.auth = authn
	}
	var prevMetrics *handlerMetrics
	if o.Previous != nil {
		prevMetrics = o.Previous.metrics
	}
	h.metrics = newHandlerMetrics(h, prevMetrics)
	h.router = h.routes()
	return h, nil
}

func accounts(in []config.Account) []upstream.Account {
	out := make([]upstream.Account, len(in))
	for i, a := range in {
		out[i] = upstream.Account{Username: a.Username, Password: a.Password}
	}
	return out
}

// sameLimits reports whether a and b configure the same per-client limits.
func sameLimits(a, b config.Limits) bool {
	return a.RequestsPerSecond == b.RequestsPerSecond && a.Burst == b.Burst && a.MaxBlobsPerIP == b.MaxBlobsPerIP &&
		a.DailyBytesPerIP == b.DailyBytesPerIP && a.IPv6Prefix == b.IPv6Prefix && slices.Equal(a.TrustedProxies, b.TrustedProxies)
}

// Close releases pooled upstream connections and stops background work.
func (h *Handler) Close() {
	if h.stop != nil {
		h.stop()
	}
	for _, r := range h.registries {
		r.Close()
	}
}

func (h *Handler) routes() *router.Router {
	r := router.New()
	r.RedirectTrailingSlash = false
	r.RedirectFixedPath = false
	r.HandleOPTIONS = false
	r.GET("/v2/", h.servePing)
	r.HEAD("/v2/", h.servePing)
	// GET and HEAD on /v2/<name>/... never reach the router: dispatch serves them.
	for _, m := range []string{fasthttp.MethodPost, fasthttp.MethodPut, fasthttp.MethodPatch, fasthttp.MethodDelete} {
		r.Handle(m, "/v2/{path:*}", serveUnsupported)
	}
	r.GET(PathToken, h.serveToken)
	r.POST(PathToken, h.serveToken)
	r.GET(PathHealth, h.serveHealth)
	r.HEAD(PathHealth, h.serveHealth)
	r.GET(PathMetrics, h.serveMetrics)
	r.GET("/", h.serveFrontPage)
	r.GET(PathGenerate204, serve204)
	r.HEAD(PathGenerate204, serve204)
	if h.adminToken != "" {
		r.GET(PathAdminCache, h.serveAdminCache)
		r.DELETE(PathAdminCache, h.serveAdminCache)
	}
	r.NotFound = serveNotFound
	r.MethodNotAllowed = serveUnsupported
	return r
}

// ServeHTTP is the fasthttp.RequestHandler of the mirror.
func (h *Handler) ServeHTTP(ctx *fasthttp.RequestCtx) {
	ctx.Response.Header.Set("Docker-Distribution-Api-Version", "registry/2.0")
	reg, hostMatched := h.pick(ctx)
	if !h.accessLog {
		h.dispatch(ctx, reg, hostMatched)
		h.metrics.observe(ctx, reg)
		return
	}
	start := time.Now()
	h.dispatch(ctx, reg, hostMatched)
	h.metrics.observe(ctx, reg)
	bytes := responseBytes(ctx)
	// duration is the time to the response headers; a streamed body may take longer.
	h.log.Info("request",
		"registry", reg.Name,
		"method", string(ctx.Method()),
		"path", string(ctx.Path()),
		"status", ctx.Response.StatusCode(),
		"bytes", bytes,
		"remote", ctx.RemoteIP().String(),
		"duration", time.Since(start),
		"cache", string(ctx.Response.Header.Peek(HeaderXCache)),
	)
}

// dispatch sends GET and HEAD on /v2/<name>/... straight to serveV2, which parses the path
// itself: the router's catch-all would copy the path into a new string on every request. Every
// other request goes through the router. reg and hostMatched are pick's answer, made once.
func (h *Handler) dispatch(ctx *fasthttp.RequestCtx, reg *upstream.Registry, hostMatched bool) {
	p := ctx.Path()
	v2 := bytes.HasPrefix(p, prefixV2)
	if h.limiter != nil && (v2 || string(p) == PathToken) && !h.admit(ctx) {
		return
	}
	if h.auth != nil && v2 {
		if !h.authorized(ctx) {
			h.challengeAccount(ctx, hostMatched)
			return
		}
		if len(p) == len(prefixV2) && (ctx.IsGet() || ctx.IsHead()) {
			ctx.SetContentTypeBytes(contentTypeJSON)
			ctx.SetBodyString("{}")
			return
		}
	}
	if v2 && len(p) > len(prefixV2) && (ctx.IsGet() || ctx.IsHead()) {
		h.serveV2(ctx, reg, hostMatched)
		return
	}
	h.router.Handler(ctx)
}

// pick selects the registry for a request: by Host among the configured hosts, else by
// containerd's ?ns= parameter, else the default. It also returns the base URL clients should use
// for the token realm: the configured public_base_url, or the request's own host when that host is
// configured — never an arbitrary Host header (CVE-2025-63761 in Docxy).
func (h *Handler) pick(ctx *fasthttp.RequestCtx) (*upstream.Registry, bool) {
	host := ctx.Host()
	if len(host) > 0 && len(h.byHost) > 0 {
		if r, ok := h.byHost[string(lowerASCII(host))]; ok {
			return r, true
		}
		if i := bytes.LastIndexByte(host, ':'); i > 0 && !bytes.HasSuffix(host, []byte("]")) {
			if r, ok := h.byHost[string(lowerASCII(host[:i]))]; ok {
				return r, true
			}
		}
	}
	if ns := ctx.QueryArgs().Peek("ns"); len(ns) > 0 {
		if r, ok := h.byNS[string(ns)]; ok {
			return r, false
		}
	}
	return h.def, false
}

// realmBase returns scheme://host for the token realm.
func (h *Handler) realmBase(ctx *fasthttp.RequestCtx, hostMatched bool) string {
	if !hostMatched {
		return h.publicBase
	}
	scheme := "http"
	if ctx.IsTLS() {
		scheme = "https"
	}
	if h.behindProxy {
		if p := ctx.Request.Header.Peek("X-Forwarded-Proto"); string(p) == "https" || string(p) == "http" {
			scheme = string(p)
		}
	}
	return scheme + "://" + string(ctx.Host())
}

// realm returns the token realm for reg. A registry other than the default, not selected by Host,
// is named in the realm (?ns=NAME) because clients do not repeat containerd's ?ns= on token
// requests, and the token endpoint must know which upstream's token server to ask.
func (h *Handler) realm(ctx *fasthttp.RequestCtx, reg *upstream.Registry, hostMatched bool) string {
	realm := h.realmBase(ctx, hostMatched) + PathToken
	if !hostMatched && reg != h.def {
		realm += "?ns=" + url.QueryEscape(reg.Name)
	}
	return realm
}

// lowerASCII lowercases b in place when needed; Host headers are almost always lowercase already.
func lowerASCII(b []byte) []byte {
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return b
}

// servePing answers GET /v2/. Without credentials it challenges the client to fetch a token from
// the mirror itself; with credentials it checks them upstream, as docker login does.
func (h *Handler) servePing(ctx *fasthttp.RequestCtx) {
	reg, hostMatched := h.pick(ctx)
	c, err := reg.Challenge()
	if err != nil {
		h.log.Warn("cannot discover upstream auth", "registry", reg.Name, "err", err)
		writeUpstreamError(ctx, err)
		return
	}
	if c.Scheme == "" {
		ctx.SetContentTypeBytes(contentTypeJSON)
		ctx.SetBodyString("{}")
		return
	}
	if len(ctx.Request.Header.Peek(fasthttp.HeaderAuthorization)) == 0 {
		h.challenge(ctx, reg, hostMatched, c)
		return
	}
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	reg.SetRequestURI(req, []byte("/v2/"), nil)
	req.Header.SetBytesV(fasthttp.HeaderAuthorization, ctx.Request.Header.Peek(fasthttp.HeaderAuthorization))
	if err := reg.Do(req, resp); err != nil {
		writeUpstreamError(ctx, err)
		return
	}
	_ = resp.CloseBodyStream()
	if resp.StatusCode() == fasthttp.StatusUnauthorized {
		h.challenge(ctx, reg, hostMatched, c)
		return
	}
	ctx.SetStatusCode(resp.StatusCode())
	ctx.SetContentTypeBytes(contentTypeJSON)
	ctx.SetBodyString("{}")
}

// challenge answers 401 with a WWW-Authenticate whose realm is the mirror's own token endpoint.
func (h *Handler) challenge(ctx *fasthttp.RequestCtx, reg *upstream.Registry, hostMatched bool, c upstream.Challenge) {
	if c.Scheme == "Bearer" {
		c.Realm = h.realm(ctx, reg, hostMatched)
	}
	ctx.Response.Header.Set(fasthttp.HeaderWWWAuthenticate, c.String())
	writeError(ctx, fasthttp.StatusUnauthorized, bodyUnauthorized)
}

func (h *Handler) serveHealth(ctx *fasthttp.RequestCtx) {
	ctx.SetContentTypeBytes(contentTypeJSON)
	fmt.Fprintf(ctx, `{"status":"ok","version":%q,"uptime_seconds":%d,"registries":%d}`,
		h.version, int64(time.Since(h.started).Seconds()), len(h.registries))
}

func serve204(ctx *fasthttp.RequestCtx) { ctx.SetStatusCode(fasthttp.StatusNoContent) }

func serveNotFound(ctx *fasthttp.RequestCtx) {
	writeError(ctx, fasthttp.StatusNotFound, bodyNotFound)
}

func serveUnsupported(ctx *fasthttp.RequestCtx) {
	writeError(ctx, fasthttp.StatusMethodNotAllowed, bodyUnsupported)
}

// registryByService finds the registry whose token service is service, for token requests that
// neither Host nor ?ns= routes (the realm is shared by every registry).
func (h *Handler) registryByService(service string) *upstream.Registry {
	if service == "" {
		return nil
	}
	for _, r := range h.registries {
		if c, ok := r.CachedChallenge(); ok && strings.EqualFold(c.Service, service) {
			return r
		}
	}
	return nil
}
