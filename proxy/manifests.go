package proxy

import (
	"bytes"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"time"

	"github.com/docxy/docxy/proxy/oci"
	"github.com/docxy/docxy/proxy/upstream"
	"github.com/valyala/bytebufferpool"
	"github.com/valyala/fasthttp"
)

var (
	cacheHit    = []byte("HIT")
	cacheMiss   = []byte("MISS")
	cacheStale  = []byte("STALE")
	cacheBypass = []byte("BYPASS")
	methodHead  = []byte(fasthttp.MethodHead)
	methodGet   = []byte(fasthttp.MethodGet)
)

// errNotShareable means the mirror's own credentials cannot fetch the content: it is private (or
// absent), so the client's credentials are used and nothing is cached (FIELD-NOTES P10).
var errNotShareable = errors.New("proxy: content is not available to the mirror's own credentials")

// upstreamStatusError is an upstream answer that stale content may hide: 429 or 5xx.
type upstreamStatusError struct{ status int }

func (e *upstreamStatusError) Error() string {
	return fmt.Sprintf("upstream answered status %d", e.status)
}

// serveManifest serves a manifest from the cache when it can: by digest always, by tag while the
// entry is fresh, after a HEAD revalidation when it is not, and stale when the upstream fails.
func (h *Handler) serveManifest(ctx *fasthttp.RequestCtx, reg *upstream.Registry, hostMatched bool, name, ref []byte) {
	mc := h.manifests
	isDigest := oci.IsDigest(ref)
	ab := bytebufferpool.Get()
	defer bytebufferpool.Put(ab)
	ab.B = appendAccept(ab.B[:0], &ctx.Request.Header)
	accept := ab.B
	mask := byte(0)
	if !isDigest {
		mask = acceptMask(accept)
	}
	kb := bytebufferpool.Get()
	defer bytebufferpool.Put(kb)
	kb.B = appendManifestKey(kb.B[:0], reg.Name, name, ref, mask)
	now := time.Now()

	m := mc.get(kb.B)
	fresh := m != nil && (isDigest || m.fresh(time.Duration(mc.ttl.Load()), now))
	if fresh {
		if body := h.manifestBody(reg, name, m); body != nil || ctx.IsHead() {
			mc.hits.Add(1)
			h.writeManifest(ctx, m, body, cacheHit)
			return
		}
	}

	// Miss or stale: ask the upstream with the mirror's own credentials. A stale tag is
	// revalidated with HEAD, which Docker Hub does not count as a pull.
	method := methodGet
	if ctx.IsHead() || (m != nil && !fresh) {
		method = methodHead
	}
	key := string(kb.B)
	v, err, _ := h.flight.Do(string(method)+key, func() (any, error) {
		return h.fetchManifest(reg, name, ref, method, accept, key)
	})
	if err == nil {
		fetched := v.(*manifest)
		if m != nil && bytes.Equal(fetched.digest, m.digest) {
			m.checked.Store(now.UnixNano()) // unchanged upstream: the cached copy is fresh again
			if body := h.manifestBody(reg, name, m); body != nil || ctx.IsHead() {
				mc.hits.Add(1)
				h.writeManifest(ctx, m, body, cacheHit)
				return
			}
		}
		if fetched.body == nil && !ctx.IsHead() {
			// The tag moved (or the body is gone): fetch the new manifest.
			v, err, _ = h.flight.Do(fasthttp.MethodGet+key, func() (any, error) {
				return h.fetchManifest(reg, name, ref, methodGet, accept, key)
			})
		}
	}
	if err == nil {
		fetched := v.(*manifest)
		mc.misses.Add(1)
		h.writeManifest(ctx, fetched, h.manifestBody(reg, name, fetched), cacheMiss)
		return
	}
	var statusErr *upstreamStatusError
	if m == nil && !isDigest && (errors.As(err, &statusErr) || isTransportError(err)) {
		// Another client's Accept set may have cached this tag in a form this client takes.
		m = mc.acceptable(kb.B[:len(kb.B)-1], mask)
	}
	switch {
	case errors.Is(err, errNotShareable):
		ctx.Response.Header.SetBytesV(HeaderXCache, cacheBypass)
		h.passThrough(ctx, reg, hostMatched, name, oci.KindManifest, ref)
	case m != nil && (errors.As(err, &statusErr) || isTransportError(err)):
		mc.stale.Add(1)
		h.log.Warn("serving a stale manifest: upstream failed", "registry", reg.Name, "repository", string(name), "ref", string(ref), "err", err)
		h.writeManifest(ctx, m, h.manifestBody(reg, name, m), cacheStale)
	case errors.As(err, &statusErr):
		h.passThrough(ctx, reg, hostMatched, name, oci.KindManifest, ref) // relays the 429/5xx with its headers
	default:
		h.log.Warn("cannot fetch manifest", "registry", reg.Name, "repository", string(name), "ref", string(ref), "err", err)
		if errors.Is(err, errManifestInvalid) {
			writeError(ctx, fasthttp.StatusBadGateway, bodyUpstreamManifestInvalid)
			return
		}
		writeUpstreamError(ctx, err)
	}
}

var (
	errManifestInvalid          = errors.New("proxy: upstream manifest does not match its digest or is too large")
	bodyUpstreamManifestInvalid = oci.ErrorBody(oci.ErrorCodeManifestInvalid, "the upstream sent a manifest that does not match its digest or exceeds 4 MiB")
)

func isTransportError(err error) bool {
	var statusErr *upstreamStatusError
	return !errors.Is(err, errNotShareable) && !errors.Is(err, errManifestInvalid) && !errors.As(err, &statusErr)
}

// manifestBody returns m's body, looking it up under its digest for tag entries learned by HEAD.
func (h *Handler) manifestBody(reg *upstream.Registry, name []byte, m *manifest) []byte {
	if m.body != nil {
		return m.body
	}
	kb := bytebufferpool.Get()
	kb.B = appendManifestKey(kb.B[:0], reg.Name, name, m.digest, 0)
	d := h.manifests.get(kb.B)
	bytebufferpool.Put(kb)
	if d == nil {
		return nil
	}
	return d.body
}

// writeManifest answers with a cached manifest. body may be nil for HEAD.
// Only shareable manifests get here, so counting the pull reveals no private repository.
func (h *Handler) writeManifest(ctx *fasthttp.RequestCtx, m *manifest, body []byte, cacheStatus []byte) {
	if !ctx.IsHead() {
		h.metrics.activity.pulled(m.key[:manifestKeyRepoEnd(m.key)])
	}
	out := &ctx.Response.Header
	out.SetContentTypeBytes(m.contentType)
	out.SetBytesV(HeaderDockerContentDigest, m.digest)
	out.SetBytesV(fasthttp.HeaderETag, m.etag)
	out.SetBytesV(HeaderXCache, cacheStatus)
	if ctx.IsHead() {
		out.SetContentLength(m.size)
		return
	}
	ctx.SetBody(body)
}

// fetchManifest asks the upstream for a manifest with the mirror's own credentials and caches
// what it gets. For HEAD it records the tag's digest; for GET it verifies the body against the
// digest before caching it under both the reference and the digest.
func (h *Handler) fetchManifest(reg *upstream.Registry, name, ref, method, accept []byte, key string) (*manifest, error) {
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseResponse(resp)
	if err := h.mirrorDo(reg, name, oci.KindManifest, ref, method, accept, resp); err != nil {
		return nil, err
	}
	switch status := resp.StatusCode(); {
	case status == fasthttp.StatusOK:
	case status == fasthttp.StatusUnauthorized || status == fasthttp.StatusForbidden || status == fasthttp.StatusNotFound:
		return nil, errNotShareable
	default:
		return nil, &upstreamStatusError{status: status}
	}
	ct := resp.Header.ContentType()
	if bytes.Equal(method, methodHead) {
		digest := resp.Header.Peek(HeaderDockerContentDigest)
		size := resp.Header.ContentLength()
		if !oci.ValidDigest(digest) || size < 0 {
			// Without a digest and a length a HEAD cannot be served from cache: fetch the body.
			return h.fetchManifest(reg, name, ref, methodGet, accept, key)
		}
		m := newManifest(key, nil, ct, digest, size)
		h.manifests.put(m)
		return m, nil
	}
	if len(resp.Body()) > oci.MaxManifestSize {
		return nil, fmt.Errorf("%w: %d bytes", errManifestInvalid, len(resp.Body()))
	}
	body := append([]byte(nil), resp.Body()...) // resp is released on return; the cache keeps body
	digest := computeDigest(ref, resp.Header.Peek(HeaderDockerContentDigest), body)
	if oci.IsDigest(ref) && !bytes.Equal(digest, ref) {
		return nil, fmt.Errorf("%w: got %s for %s", errManifestInvalid, digest, ref)
	}
	m := newManifest(key, body, ct, digest, len(body))
	h.manifests.put(m)
	if !oci.IsDigest(ref) {
		kb := appendManifestKey(nil, reg.Name, name, digest, 0)
		h.manifests.put(newManifest(string(kb), body, ct, digest, len(body)))
	}
	return m, nil
}

// computeDigest hashes body with the algorithm the reference (or the upstream's digest) uses;
// sha256 unless told otherwise. The digest is always computed, never trusted from a header.
func computeDigest(ref, upstreamDigest, body []byte) []byte {
	algo := "sha256"
	if bytes.HasPrefix(ref, []byte("sha512:")) || (!oci.IsDigest(ref) && bytes.HasPrefix(upstreamDigest, []byte("sha512:"))) {
		algo = "sha512"
	}
	var hh hash.Hash
	if algo == "sha512" {
		hh = sha512.New()
	} else {
		hh = sha256.New()
	}
	hh.Write(body)
	sum := hh.Sum(nil)
	out := make([]byte, 0, len(algo)+1+hex.EncodedLen(len(sum)))
	out = append(out, algo...)
	out = append(out, ':')
	return hex.AppendEncode(out, sum)
}

// mirrorDo sends a GET or HEAD for name/kind/ref upstream with the mirror's own credentials
// (anonymous, or its configured account). Blob downloads follow redirects.
func (h *Handler) mirrorDo(reg *upstream.Registry, name []byte, kind oci.Kind, ref, method, accept []byte, resp *fasthttp.Response) error {
	buf := bytebufferpool.Get()
	defer bytebufferpool.Put(buf)
	buf.B = upstreamPath(buf.B[:0], name, kind, ref)
	req := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(req)
	reg.SetRequestURI(req, buf.B, nil)
	req.Header.SetMethodBytes(method)
	if kind == oci.KindManifest {
		if len(accept) == 0 {
			accept = defaultAccept
		}
		req.Header.SetBytesV(fasthttp.HeaderAccept, accept)
	}
	scope := "repository:" + string(name) + ":pull"
	auth, account, err := reg.MirrorAuthorization(scope)
	if errors.Is(err, upstream.ErrTokenDenied) {
		return errNotShareable
	}
	if err != nil {
		return err
	}
	if auth != "" {
		req.Header.Set(fasthttp.HeaderAuthorization, auth)
	}
	return h.do(reg, req, resp, kind, account)
}
