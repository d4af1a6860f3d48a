package proxy

import (
	"bytes"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/docxy/docxy/proxy/oci"
	"github.com/docxy/docxy/proxy/upstream"
	"github.com/valyala/fasthttp"
)

// PathMetrics serves Prometheus metrics.
const PathMetrics = "/metrics"

// Route labels of docxy_requests_total.
const (
	routePing = iota
	routeManifest
	routeBlob
	routeTags
	routeReferrers
	routeToken
	routeOther
	numRoutes
)

var routeNames = [numRoutes]string{"ping", "manifest", "blob", "tags", "referrers", "token", "other"}

// trackedCodes get their own label value; anything else is counted as code="other".
var trackedCodes = []int{200, 204, 206, 301, 304, 400, 401, 403, 404, 405, 416, 429, 500, 502, 503, 504}

// registryMetrics are one registry's pre-registered series, so that the request path only indexes
// arrays: no label formatting, no map lookups (VictoriaMetrics' habit).
type registryMetrics struct {
	requests        [numRoutes][]*metrics.Counter // by route, then by index in trackedCodes (+1 for other)
	bytesSent       [numRoutes]*metrics.Counter
	upstreamLatency *metrics.Histogram
	upstreamErrors  *metrics.Counter
	// rateRemaining is the last ratelimit-remaining seen upstream, -1 until then: [0] for the
	// mirror's anonymous requests, [i+1] for its account i.
	rateRemaining []atomic.Int64
}

// Accounts of the per-account quota metric besides the mirror's own (0, 1, ...).
const (
	accountAnonymous = -1
	accountClient    = -2 // the client's own credentials: not the mirror's quota
)

type handlerMetrics struct {
	set      *metrics.Set
	byReg    map[*upstream.Registry]*registryMetrics
	byName   map[string]*registryMetrics // survives configuration reloads
	activity *activity                   // front page figures; survives reloads
	h        atomic.Pointer[Handler]     // the current handler, for the cache gauges
}

// newHandlerMetrics registers h's series. On a reload, prev's series carry over: counters keep
// counting, and registries that are new get their own.
func newHandlerMetrics(h *Handler, prev *handlerMetrics) *handlerMetrics {
	if prev != nil {
		m := &handlerMetrics{set: prev.set, byReg: map[*upstream.Registry]*registryMetrics{}, byName: prev.byName, activity: prev.activity}
		m.addRegistries(h)
		prev.h.Store(h)
		m.h.Store(h)
		return m
	}
	m := &handlerMetrics{set: metrics.NewSet(), byReg: map[*upstream.Registry]*registryMetrics{}, byName: map[string]*registryMetrics{}, activity: newActivity()}
	m.h.Store(h)
	m.addRegistries(h)
	m.addGauges()
	return m
}

func (m *handlerMetrics) addRegistries(h *Handler) {
	for _, reg := range h.registries {
		if rm := m.byName[reg.Name]; rm != nil {
			m.byReg[reg] = rm
			continue
		}
		rm := &registryMetrics{rateRemaining: make([]atomic.Int64, reg.Accounts()+1)}
		for route := range numRoutes {
			for _, code := range trackedCodes {
				rm.requests[route] = append(rm.requests[route], m.set.NewCounter(fmt.Sprintf(
					`docxy_requests_total{registry=%q,route=%q,code="%d"}`, reg.Name, routeNames[route], code)))
			}
			rm.requests[route] = append(rm.requests[route], m.set.NewCounter(fmt.Sprintf(
				`docxy_requests_total{registry=%q,route=%q,code="other"}`, reg.Name, routeNames[route])))
			rm.bytesSent[route] = m.set.NewCounter(fmt.Sprintf(`docxy_response_bytes_total{registry=%q,route=%q}`, reg.Name, routeNames[route]))
		}
		rm.upstreamLatency = m.set.NewHistogram(fmt.Sprintf(`docxy_upstream_response_seconds{registry=%q}`, reg.Name))
		rm.upstreamErrors = m.set.NewCounter(fmt.Sprintf(`docxy_upstream_errors_total{registry=%q}`, reg.Name))
		for i := range rm.rateRemaining {
			rm.rateRemaining[i].Store(-1)
			account := "anonymous"
			if i > 0 {
				account = fmt.Sprintf("account-%d", i)
			}
			m.set.NewGauge(fmt.Sprintf(`docxy_upstream_ratelimit_remaining{registry=%q,account=%q}`, reg.Name, account), func() float64 {
				return float64(rm.rateRemaining[i].Load())
			})
		}
		m.byReg[reg] = rm
		m.byName[reg.Name] = rm
	}
}

func (m *handlerMetrics) addGauges() {
	stat := func(f func(CacheStats) float64) func() float64 {
		return func() float64 { return f(m.h.Load().Stats()) }
	}
	m.set.NewGauge(`docxy_cache_bytes{kind="blob"}`, stat(func(s CacheStats) float64 { return float64(s.Blobs.Bytes) }))
	m.set.NewGauge(`docxy_cache_bytes{kind="manifest"}`, stat(func(s CacheStats) float64 { return float64(s.Manifests.Bytes) }))
	m.set.NewGauge(`docxy_cache_entries{kind="blob"}`, stat(func(s CacheStats) float64 { return float64(s.Blobs.Entries) }))
	m.set.NewGauge(`docxy_cache_entries{kind="manifest"}`, stat(func(s CacheStats) float64 { return float64(s.Manifests.Entries) }))
	m.set.NewGauge(`docxy_cache_requests_total{kind="blob",result="hit"}`, stat(func(s CacheStats) float64 { return float64(s.Blobs.Hits) }))
	m.set.NewGauge(`docxy_cache_requests_total{kind="blob",result="miss"}`, stat(func(s CacheStats) float64 { return float64(s.Blobs.Misses) }))
	m.set.NewGauge(`docxy_cache_requests_total{kind="manifest",result="hit"}`, stat(func(s CacheStats) float64 { return float64(s.Manifests.Hits) }))
	m.set.NewGauge(`docxy_cache_requests_total{kind="manifest",result="miss"}`, stat(func(s CacheStats) float64 { return float64(s.Manifests.Misses) }))
	m.set.NewGauge(`docxy_cache_requests_total{kind="manifest",result="stale"}`, stat(func(s CacheStats) float64 { return float64(s.Manifests.Stale) }))
	m.set.NewGauge(`docxy_cache_evictions_total`, stat(func(s CacheStats) float64 { return float64(s.Blobs.Evictions) }))
	m.set.NewGauge(`docxy_inflight_downloads`, stat(func(s CacheStats) float64 { return float64(s.Blobs.InFlight) }))
	m.set.NewGauge(`docxy_uptime_seconds`, func() float64 { return time.Since(m.h.Load().started).Seconds() })
}

// observe counts a finished request: by registry, route and status, and the body bytes declared.
func (m *handlerMetrics) observe(ctx *fasthttp.RequestCtx, reg *upstream.Registry) {
	rm := m.byReg[reg]
	if rm == nil {
		return
	}
	route := routeOf(ctx.Path())
	status := ctx.Response.StatusCode()
	i := len(trackedCodes)
	for j, c := range trackedCodes {
		if c == status {
			i = j
			break
		}
	}
	rm.requests[route][i].Inc()
	n := responseBytes(ctx)
	if n > 0 {
		rm.bytesSent[route].Add(n)
	}
	m.activity.request(ctx.Time(), n)
}

// responseBytes is the body length of the answer in ctx: the announced length of a streamed body
// (blobs), the length of a body set whole (manifests, errors: fasthttp puts that one in the header
// only when it writes it), 0 for HEAD.
func responseBytes(ctx *fasthttp.RequestCtx) int {
	switch {
	case ctx.IsHead():
		return 0
	case ctx.Response.IsBodyStream():
		return max(ctx.Response.Header.ContentLength(), 0)
	}
	return len(ctx.Response.Body())
}

// observeUpstream records how long the upstream took to answer and the Docker Hub quota it reports
// (ratelimit-remaining: 76;w=21600), so operators see the quota before it runs out.
func (m *handlerMetrics) observeUpstream(reg *upstream.Registry, account int, start time.Time, resp *fasthttp.Response, err error) {
	rm := m.byReg[reg]
	if rm == nil {
		return
	}
	if err != nil {
		rm.upstreamErrors.Inc()
		return
	}
	rm.upstreamLatency.UpdateDuration(start)
	slot := account + 1
	if slot < 0 || slot >= len(rm.rateRemaining) {
		return // the client's own quota, or an account added by a reload
	}
	if v := resp.Header.Peek("Ratelimit-Remaining"); len(v) > 0 {
		if i := bytes.IndexByte(v, ';'); i >= 0 {
			v = v[:i]
		}
		if n, err := parseUint(bytes.TrimSpace(v)); err == nil {
			rm.rateRemaining[slot].Store(n)
		}
	}
}

func routeOf(p []byte) int {
	switch {
	case string(p) == "/v2/":
		return routePing
	case string(p) == PathToken:
		return routeToken
	case bytes.HasPrefix(p, prefixV2):
		switch _, kind, _ := oci.ParsePath(p[len(prefixV2):]); kind {
		case oci.KindManifest:
			return routeManifest
		case oci.KindBlob:
			return routeBlob
		case oci.KindTags:
			return routeTags
		case oci.KindReferrers:
			return routeReferrers
		}
	}
	return routeOther
}

func (h *Handler) serveMetrics(ctx *fasthttp.RequestCtx) {
	ctx.SetContentType("text/plain; version=0.0.4")
	h.metrics.set.WritePrometheus(ctx)
	metrics.WriteProcessMetrics(ctx)
}
