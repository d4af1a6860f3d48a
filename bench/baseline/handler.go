package baseline

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/docxy/docxy/config"
	"github.com/docxy/docxy/proxy"
	"github.com/docxy/docxy/proxy/oci"
	"github.com/docxy/docxy/proxy/upstream"
)

// maxRequestBodySize matches docxy's main.go: token POST forms are the only bodies it reads.
const maxRequestBodySize = 64 << 10

// Handler is the net/http counterpart of proxy.Handler's pass-through. It is safe for concurrent use.
type Handler struct {
	registries  []*registry
	byHost      map[string]*registry // configured host names (lowercase)
	byNS        map[string]*registry // containerd's ?ns=: registry names and upstream hosts
	def         *registry
	publicBase  string
	behindProxy bool
	accessLog   bool
	log         *slog.Logger
	started     time.Time
	mux         *http.ServeMux
}

var _ http.Handler = (*Handler)(nil)

// New builds the baseline proxy for cfg, which must have been validated (config.Load or
// config.Parse). It contacts no upstream. The cache settings are ignored: the baseline only
// passes through. New panics on a registry URL that validation would have refused.
func New(cfg *config.Config) http.Handler {
	h, err := newHandler(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		panic("BUG: " + err.Error())
	}
	return h
}

// NewWithLogger is New with a logger for upstream errors and, when the configuration enables
// them, access logs.
func NewWithLogger(cfg *config.Config, log *slog.Logger) (*Handler, error) {
	return newHandler(cfg, log)
}

func newHandler(cfg *config.Config, log *slog.Logger) (*Handler, error) {
	h := &Handler{
		byHost:      map[string]*registry{},
		byNS:        map[string]*registry{},
		publicBase:  cfg.Server.PublicBaseURL,
		behindProxy: cfg.Server.BehindProxy,
		accessLog:   cfg.Log.AccessLog != nil && *cfg.Log.AccessLog,
		log:         log,
		started:     time.Now(),
	}
	for _, rc := range cfg.Registries {
		reg, err := newRegistry(rc, cfg.Server, "docxy-baseline/dev")
		if err != nil {
			return nil, err
		}
		h.registries = append(h.registries, reg)
		for _, host := range rc.Hosts {
			h.byHost[host] = reg
		}
		h.byNS[rc.Name] = reg
		h.byNS[reg.host] = reg
		if reg.host == "registry-1.docker.io" || reg.host == "index.docker.io" {
			h.byNS["docker.io"] = reg
		}
		if rc.Default {
			h.def = reg
		}
	}
	if h.def == nil {
		return nil, errors.New("baseline: no default registry: set default = true on one [[registry]]")
	}
	mux := http.NewServeMux()
	// "GET" patterns match HEAD too. Other methods fall through to the method-less patterns,
	// which answer docxy's 405 body, as its router's MethodNotAllowed does.
	mux.HandleFunc("GET /v2/{$}", h.servePing)
	mux.HandleFunc("GET /v2/", h.serveV2)
	mux.HandleFunc("/v2/", serveUnsupported)
	mux.HandleFunc("GET "+proxy.PathToken, h.serveToken)
	mux.HandleFunc("POST "+proxy.PathToken, h.serveToken)
	mux.HandleFunc(proxy.PathToken, serveUnsupported)
	mux.HandleFunc("GET "+proxy.PathHealth, h.serveHealth)
	mux.HandleFunc("GET "+proxy.PathGenerate204, func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("/", serveNotFound)
	h.mux = mux
	return h, nil
}

// NewServer returns the http.Server the benchmarks and cmd/baseline use: the counterpart of the
// fasthttp.Server in docxy's main.go (read and idle timeouts, 16 KiB header limit).
func NewServer(cfg *config.Config, h http.Handler) *http.Server {
	return &http.Server{
		Handler:        h,
		ReadTimeout:    cfg.Server.ReadTimeout.Duration,
		IdleTimeout:    cfg.Server.IdleTimeout.Duration,
		MaxHeaderBytes: 16 << 10,
	}
}

// CloseIdleConnections closes idle upstream connections.
func (h *Handler) CloseIdleConnections() {
	for _, r := range h.registries {
		r.closeIdleConnections()
	}
}

// Prebuilt header values: assigning them to a header map allocates nothing. net/http never
// modifies header value slices, so sharing them is safe.
var (
	hvAPIVersion    = []string{"registry/2.0"}
	hvJSON          = []string{"application/json; charset=utf-8"}
	hvAcceptRanges  = []string{"bytes"}
	hvNoStore       = []string{"no-store"}
	hvDefaultAccept = []string{oci.DefaultManifestAccept}
)

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header()["Docker-Distribution-Api-Version"] = hvAPIVersion
	if !h.accessLog {
		h.mux.ServeHTTP(w, r)
		return
	}
	start := time.Now()
	sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
	h.mux.ServeHTTP(sw, r)
	h.log.Info("request",
		"method", r.Method,
		"path", r.URL.Path,
		"status", sw.status,
		"remote", r.RemoteAddr,
		"duration", time.Since(start),
	)
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(status int) {
	w.status = status
	w.ResponseWriter.WriteHeader(status)
}

// pick is proxy.Handler.pick: by Host among the configured hosts, else by ?ns=, else the default.
func (h *Handler) pick(r *http.Request) (*registry, bool) {
	host := r.Host
	if host != "" && len(h.byHost) > 0 {
		lower := strings.ToLower(host)
		if reg, ok := h.byHost[lower]; ok {
			return reg, true
		}
		if i := strings.LastIndexByte(lower, ':'); i > 0 && !strings.HasSuffix(lower, "]") {
			if reg, ok := h.byHost[lower[:i]]; ok {
				return reg, true
			}
		}
	}
	if r.URL.RawQuery != "" {
		if ns := r.URL.Query().Get("ns"); ns != "" {
			if reg, ok := h.byNS[ns]; ok {
				return reg, false
			}
		}
	}
	return h.def, false
}

func (h *Handler) realmBase(r *http.Request, hostMatched bool) string {
	if !hostMatched {
		return h.publicBase
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	if h.behindProxy {
		if p := r.Header.Get("X-Forwarded-Proto"); p == "https" || p == "http" {
			scheme = p
		}
	}
	return scheme + "://" + r.Host
}

// servePing answers GET /v2/ like proxy.Handler.servePing.
func (h *Handler) servePing(w http.ResponseWriter, r *http.Request) {
	reg, hostMatched := h.pick(r)
	c, err := reg.getChallenge()
	if err != nil {
		h.log.Warn("cannot discover upstream auth", "registry", reg.name, "err", err)
		writeUpstreamError(w, r, err)
		return
	}
	if c.Scheme == "" {
		writeJSON(w, r, http.StatusOK, bodyEmptyJSON)
		return
	}
	auth := r.Header["Authorization"]
	if len(auth) == 0 {
		h.challenge(w, r, hostMatched, c)
		return
	}
	req, err := http.NewRequestWithContext(r.Context(), http.MethodGet, reg.baseURL+"/v2/", nil)
	if err != nil {
		writeUpstreamError(w, r, err)
		return
	}
	req.Header["Authorization"] = auth
	req.Header["User-Agent"] = reg.userAgent
	resp, err := reg.client.RoundTrip(req)
	if err != nil {
		writeUpstreamError(w, r, err)
		return
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusUnauthorized {
		h.challenge(w, r, hostMatched, c)
		return
	}
	writeJSON(w, r, resp.StatusCode, bodyEmptyJSON)
}

func (h *Handler) challenge(w http.ResponseWriter, r *http.Request, hostMatched bool, c upstream.Challenge) {
	if c.Scheme == "Bearer" {
		c.Realm = h.realmBase(r, hostMatched) + proxy.PathToken
	}
	w.Header()["Www-Authenticate"] = []string{c.String()}
	writeJSON(w, r, http.StatusUnauthorized, bodyUnauthorized)
}

func (h *Handler) serveHealth(w http.ResponseWriter, _ *http.Request) {
	w.Header()["Content-Type"] = hvJSON
	fmt.Fprintf(w, `{"status":"ok","version":%q,"uptime_seconds":%d,"registries":%d}`,
		"baseline", int64(time.Since(h.started).Seconds()), len(h.registries))
}

func (h *Handler) registryByService(service string) *registry {
	if service == "" {
		return nil
	}
	for _, reg := range h.registries {
		if c, ok := reg.cachedChallenge(); ok && strings.EqualFold(c.Service, service) {
			return reg
		}
	}
	return nil
}

// Prebuilt error bodies: the same messages as docxy's proxy/errors.go.
var (
	bodyEmptyJSON        = []byte("{}")
	bodyNameInvalid      = oci.ErrorBody(oci.ErrorCodeNameInvalid, "invalid repository name")
	bodyDigestInvalid    = oci.ErrorBody(oci.ErrorCodeDigestInvalid, "invalid digest: want sha256:<64 hex> or sha512:<128 hex>")
	bodyReferenceInvalid = oci.ErrorBody(oci.ErrorCodeManifestInvalid, "invalid reference: want a tag or a digest")
	bodyNotFound         = oci.ErrorBody(oci.ErrorCodeNotFound, "no such endpoint: docxy serves the registry API under /v2/")
	bodyUnsupported      = oci.ErrorBody(oci.ErrorCodeUnsupported, "docxy is a pull-only mirror: push and delete are not supported")
	bodyUnauthorized     = oci.ErrorBody(oci.ErrorCodeUnauthorized, "authentication required")
	bodyUnavailable      = oci.ErrorBody(oci.ErrorCodeUnavailable, "the upstream registry cannot be reached; try again later")
	bodyTimeout          = oci.ErrorBody(oci.ErrorCodeUnavailable, "the upstream registry did not answer in time; try again later")
	bodyTooLarge         = oci.ErrorBody(oci.ErrorCodeSizeInvalid, "the upstream response is larger than docxy accepts for this kind of object")
	bodyNoTokenAuth      = oci.ErrorBody(oci.ErrorCodeNotFound, "this registry does not use token authentication")
	bodyBadTokenRequest  = oci.ErrorBody(oci.ErrorCodeUnsupported, "cannot read the token request form")
	bodyBadRedirect      = oci.ErrorBody(oci.ErrorCodeUnavailable, "the upstream redirected the download somewhere docxy will not follow")
)

// writeJSON answers with a JSON body (only its length for HEAD), like proxy's writeError.
func writeJSON(w http.ResponseWriter, r *http.Request, status int, body []byte) {
	hdr := w.Header()
	hdr["Content-Type"] = hvJSON
	hdr["Content-Length"] = []string{strconv.Itoa(len(body))}
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}

func serveNotFound(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, r, http.StatusNotFound, bodyNotFound)
}

func serveUnsupported(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, r, http.StatusMethodNotAllowed, bodyUnsupported)
}

// writeUpstreamError maps a failure to reach the upstream like proxy's writeUpstreamError.
// (http.Transport waits for a free connection instead of failing, so there is no 503 "busy".)
func writeUpstreamError(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, upstream.ErrForbiddenAddress) || errors.Is(err, errTooManyRedirects):
		writeJSON(w, r, http.StatusBadGateway, bodyBadRedirect)
	case isTimeout(err):
		writeJSON(w, r, http.StatusGatewayTimeout, bodyTimeout)
	default:
		writeJSON(w, r, http.StatusBadGateway, bodyUnavailable)
	}
}
