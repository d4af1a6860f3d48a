package proxy

import (
	"bytes"
	"io"
	"sync"
	"time"

	"github.com/docxy/docxy/proxy/oci"
	"github.com/docxy/docxy/proxy/upstream"
	"github.com/valyala/bytebufferpool"
	"github.com/valyala/fasthttp"
)

// HeaderXCache tells clients and logs whether the cache served a response: HIT, MISS or STALE.
const HeaderXCache = "X-Cache"

var (
	prefixV2      = []byte("/v2/")
	segManifests  = []byte("/manifests/")
	segBlobs      = []byte("/blobs/")
	segReferrers  = []byte("/referrers/")
	suffixTags    = []byte("/tags/list")
	queryNS       = []byte("ns")
	defaultAccept = []byte(oci.DefaultManifestAccept)
)

// forwardedBlobHeaders are the request headers a resumed or conditional download needs upstream
// (Docker's and containerd's httpReadSeeker resume with Range; FIELD-NOTES P4).
var forwardedBlobHeaders = []string{
	fasthttp.HeaderRange, fasthttp.HeaderIfRange, fasthttp.HeaderIfMatch, fasthttp.HeaderIfNoneMatch,
	fasthttp.HeaderIfModifiedSince, fasthttp.HeaderIfUnmodifiedSince,
}

// serveV2 serves GET and HEAD on /v2/<name>/{manifests,blobs,referrers}/<ref> and /v2/<name>/tags/list.
// Names and references are validated here, so a malformed request never reaches the upstream.
func (h *Handler) serveV2(ctx *fasthttp.RequestCtx, reg *upstream.Registry, hostMatched bool) {
	name, kind, ref := oci.ParsePath(ctx.Path()[len(prefixV2):])
	switch {
	case kind == oci.KindInvalid:
		serveNotFound(ctx)
		return
	case !oci.ValidName(name):
		writeError(ctx, fasthttp.StatusBadRequest, bodyNameInvalid)
		return
	case kind == oci.KindManifest && !oci.ValidReference(ref):
		if oci.IsDigest(ref) {
			writeError(ctx, fasthttp.StatusBadRequest, bodyDigestInvalid)
		} else {
			writeError(ctx, fasthttp.StatusBadRequest, bodyReferenceInvalid)
		}
		return
	case (kind == oci.KindBlob || kind == oci.KindReferrers) && !oci.ValidDigest(ref):
		writeError(ctx, fasthttp.StatusBadRequest, bodyDigestInvalid)
		return
	}
	// From here on name is the one the upstream knows (library/nginx for nginx on Docker Hub):
	// access rules, cache keys, upstream paths and token scopes all use it.
	nb := bytebufferpool.Get()
	defer bytebufferpool.Put(nb)
	nb.B = reg.UpstreamName(nb.B[:0], name)
	name = nb.B
	if rules := h.rules[reg]; rules != nil {
		if rule := rules.Check(name); rule != "" {
			h.log.Info("pull denied", "registry", reg.Name, "repository", string(name), "rule", rule)
			writeError(ctx, fasthttp.StatusForbidden, oci.ErrorBody(oci.ErrorCodeDenied,
				"repository "+string(name)+" may not be pulled through this mirror ("+rule+")"))
			return
		}
	}
	if kind == oci.KindManifest && h.manifests != nil {
		h.serveManifest(ctx, reg, hostMatched, name, ref)
		return
	}
	if kind == oci.KindBlob && h.limiter != nil && ctx.IsGet() {
		g, ok := h.admitBlob(ctx)
		if !ok {
			return
		}
		defer h.finishBlob(ctx, g)
	}
	if kind == oci.KindBlob && h.blobs != nil {
		h.serveBlob(ctx, reg, hostMatched, name, ref)
		return
	}
	h.passThrough(ctx, reg, hostMatched, name, kind, ref)
}

// upstreamPath appends /v2/<name>/<kind>/<ref> to dst; name is the upstream's (serveV2 maps it).
func upstreamPath(dst []byte, name []byte, kind oci.Kind, ref []byte) []byte {
	dst = append(dst, prefixV2...)
	dst = append(dst, name...)
	switch kind {
	case oci.KindManifest:
		dst = append(dst, segManifests...)
	case oci.KindBlob:
		dst = append(dst, segBlobs...)
	case oci.KindReferrers:
		dst = append(dst, segReferrers...)
	case oci.KindTags:
		return append(dst, suffixTags...)
	}
	return append(dst, ref...)
}

// newUpstreamRequest builds the upstream request for a client request: same method, the path
// with the upstream's name, the client's query minus our ?ns=, and only the headers the registry
// protocol needs. Hop-by-hop headers are thus never forwarded.
func newUpstreamRequest(ctx *fasthttp.RequestCtx, reg *upstream.Registry, name []byte, kind oci.Kind, ref []byte) *fasthttp.Request {
	buf := bytebufferpool.Get()
	buf.B = upstreamPath(buf.B, name, kind, ref)
	req := fasthttp.AcquireRequest()
	var query []byte
	if qa := ctx.QueryArgs(); qa.Len() > 0 {
		args := fasthttp.AcquireArgs()
		for k, v := range qa.All() {
			if !bytes.Equal(k, queryNS) {
				args.AddBytesKV(k, v)
			}
		}
		if args.Len() > 0 {
			query = args.AppendBytes(nil)
		}
		fasthttp.ReleaseArgs(args)
	}
	reg.SetRequestURI(req, buf.B, query)
	defer bytebufferpool.Put(buf)
	req.Header.SetMethodBytes(ctx.Method())
	in := &ctx.Request.Header
	if buf.B = appendAccept(buf.B[:0], in); len(buf.B) > 0 { // stored back: the pool keeps the grown buffer
		req.Header.SetBytesV(fasthttp.HeaderAccept, buf.B)
	} else if kind == oci.KindManifest {
		req.Header.SetBytesV(fasthttp.HeaderAccept, defaultAccept)
	}
	if auth := in.Peek(fasthttp.HeaderAuthorization); len(auth) > 0 {
		req.Header.SetBytesV(fasthttp.HeaderAuthorization, auth)
	}
	for _, k := range forwardedBlobHeaders {
		if v := in.Peek(k); len(v) > 0 {
			req.Header.SetBytesV(k, v)
		}
	}
	return req
}

// appendAccept appends every Accept value of h to dst, joined with ", ". Docker sends one Accept
// line per media type; forwarding only the first would make the upstream pick the wrong manifest.
func appendAccept(dst []byte, h *fasthttp.RequestHeader) []byte {
	n := len(dst)
	for k, v := range h.All() {
		if len(k) != len(fasthttp.HeaderAccept) || string(k) != fasthttp.HeaderAccept || len(v) == 0 {
			continue
		}
		if len(dst) > n {
			dst = append(dst, ", "...)
		}
		dst = append(dst, v...)
	}
	return dst
}

// passThrough relays one request to the upstream and its answer to the client, uncached.
func (h *Handler) passThrough(ctx *fasthttp.RequestCtx, reg *upstream.Registry, hostMatched bool, name []byte, kind oci.Kind, ref []byte) {
	req := newUpstreamRequest(ctx, reg, name, kind, ref)
	defer fasthttp.ReleaseRequest(req)
	account := accountClient
	if h.auth != nil {
		var err error
		if account, err = h.useMirrorAccount(req, reg, name); err != nil {
			h.log.Warn("cannot get the mirror's upstream token", "registry", reg.Name, "err", err)
			writeUpstreamError(ctx, err)
			return
		}
	}
	resp := fasthttp.AcquireResponse()
	if err := h.do(reg, req, resp, kind, account); err != nil {
		fasthttp.ReleaseResponse(resp)
		h.log.Warn("upstream request failed", "registry", reg.Name, "path", string(ctx.Path()), "err", err)
		writeUpstreamError(ctx, err)
		return
	}
	if ctx.IsHead() && resp.StatusCode() == fasthttp.StatusOK && resp.Header.ContentLength() < 0 {
		// The upstream omitted the length on HEAD; clients (Docker 29) need it, so ask with GET
		// and close the body unread. HEAD stays the rule: GET on manifests spends pull quota.
		fasthttp.ReleaseResponse(resp)
		resp = fasthttp.AcquireResponse()
		req.Header.SetMethod(fasthttp.MethodGet)
		if err := h.do(reg, req, resp, kind, account); err != nil {
			fasthttp.ReleaseResponse(resp)
			writeUpstreamError(ctx, err)
			return
		}
	}
	h.relay(ctx, reg, hostMatched, kind, ref, resp)
}

// do sends req upstream; blob downloads follow redirects (Docker Hub's 307 to its CDN) server-side.
// account names whose credentials req carries, for the per-account quota metric: an index of the
// mirror's own accounts, accountAnonymous, or accountClient (the client's own credentials).
func (h *Handler) do(reg *upstream.Registry, req *fasthttp.Request, resp *fasthttp.Response, kind oci.Kind, account int) error {
	start := time.Now()
	var err error
	if kind == oci.KindBlob {
		err = reg.Do(req, resp)
	} else {
		err = reg.DoBuffered(req, resp)
	}
	h.metrics.observeUpstream(reg, account, start, resp, err)
	if err != nil {
		return err
	}
	if kind == oci.KindBlob {
		return reg.FollowRedirects(req, resp)
	}
	return nil
}

// relay writes the upstream response to the client and takes ownership of resp.
func (h *Handler) relay(ctx *fasthttp.RequestCtx, reg *upstream.Registry, hostMatched bool, kind oci.Kind, ref []byte, resp *fasthttp.Response) {
	status := resp.StatusCode()
	if status == fasthttp.StatusUnauthorized && h.auth != nil {
		// The mirror's own upstream account was refused: a client logged in to the mirror cannot
		// fix that with a token, so do not send it round the token flow again.
		fasthttp.ReleaseResponse(resp)
		writeError(ctx, fasthttp.StatusForbidden, bodyMirrorAccountDenied)
		return
	}
	ctx.SetStatusCode(status)
	out := &ctx.Response.Header
	copyResponseHeaders(out, &resp.Header)
	if status == fasthttp.StatusUnauthorized {
		h.rewriteChallenge(ctx, reg, hostMatched, resp.Header.Peek(fasthttp.HeaderWWWAuthenticate))
	}
	if kind == oci.KindBlob && (status == fasthttp.StatusOK || status == fasthttp.StatusPartialContent) {
		if len(out.Peek(HeaderDockerContentDigest)) == 0 {
			out.SetBytesV(HeaderDockerContentDigest, ref) // CDNs do not send it; the digest is the name
		}
		out.Set(fasthttp.HeaderAcceptRanges, "bytes")
	}
	size := resp.Header.ContentLength()
	if ctx.IsHead() || status == fasthttp.StatusNoContent || status == fasthttp.StatusNotModified {
		if size >= 0 {
			out.SetContentLength(size)
		}
		fasthttp.ReleaseResponse(resp)
		return
	}
	if !resp.IsBodyStream() {
		// Read whole by the buffered client: the exact length comes from the bytes themselves.
		ctx.SetBody(resp.Body())
		fasthttp.ReleaseResponse(resp)
		return
	}
	if size >= 0 {
		setBodyStream(ctx, acquireUpstreamBody(resp, int64(size)), size)
		return
	}
	// Rare: a blob without Content-Length (only blobs are streamed). Stream it chunked rather
	// than buffer a layer.
	setBodyStream(ctx, acquireUpstreamBody(resp, -1), -1)
}

// rewriteChallenge points an upstream 401's realm at the mirror, keeping its service and scope.
func (h *Handler) rewriteChallenge(ctx *fasthttp.RequestCtx, reg *upstream.Registry, hostMatched bool, wa []byte) {
	c, ok := upstream.ParseChallenge(string(wa))
	if !ok {
		known, err := reg.Challenge()
		if err != nil {
			return
		}
		c = known
	}
	if c.Scheme == "Bearer" {
		c.Realm = h.realm(ctx, reg, hostMatched)
	}
	ctx.Response.Header.Set(fasthttp.HeaderWWWAuthenticate, c.String())
}

// HeaderDockerContentDigest carries the digest of the content served.
const HeaderDockerContentDigest = "Docker-Content-Digest"

// copyResponseHeaders copies the upstream headers a registry client uses. It is an allowlist:
// hop-by-hop headers, cookies and server internals never reach the client.
func copyResponseHeaders(dst, src *fasthttp.ResponseHeader) {
	if ct := src.ContentType(); len(ct) > 0 {
		dst.SetContentTypeBytes(ct)
	}
	for k, v := range src.All() {
		switch string(k) {
		case HeaderDockerContentDigest, "Etag", "Last-Modified", "Content-Range", "Content-Encoding",
			"Link", "Retry-After", "Ratelimit-Limit", "Ratelimit-Remaining", "Docker-Ratelimit-Source",
			"Oci-Subject", "Oci-Filters-Applied", "Cache-Control":
			dst.SetBytesKV(k, v)
		}
	}
}

// upstreamBody streams an upstream response body to the client and releases the response when
// fasthttp closes it. A body that ends before its Content-Length is an error, never a clean EOF,
// so the client connection is aborted instead of a short blob looking complete (FIELD-NOTES P7).
type upstreamBody struct {
	resp *fasthttp.Response
	r    io.Reader
	left int64 // bytes still expected, or -1 when unknown
}

var upstreamBodyPool = sync.Pool{New: func() any { return new(upstreamBody) }}

func acquireUpstreamBody(resp *fasthttp.Response, size int64) *upstreamBody {
	b := upstreamBodyPool.Get().(*upstreamBody)
	b.resp, b.r, b.left = resp, resp.BodyStream(), size
	return b
}

// Read implements io.Reader.
func (b *upstreamBody) Read(p []byte) (int, error) {
	if b.left == 0 || b.r == nil {
		return 0, io.EOF
	}
	if b.left > 0 && int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.r.Read(p)
	if b.left > 0 {
		b.left -= int64(n)
		if err == io.EOF && b.left > 0 {
			err = io.ErrUnexpectedEOF
		}
	}
	return n, err
}

// WriteTo implements io.WriterTo. fasthttp would otherwise copy through its 4 KiB write buffer;
// with a large pooled buffer, reads from the upstream and writes to the client go straight
// between the sockets and the buffer in few syscalls.
func (b *upstreamBody) WriteTo(w io.Writer) (int64, error) { return copyLarge(w, b) }

// copyLarge copies r to w through a pooled buffer large enough to bypass bufio on both sides.
func copyLarge(w io.Writer, r io.Reader) (int64, error) {
	bp := copyBufPool.Get().(*[]byte)
	defer copyBufPool.Put(bp)
	buf := *bp
	var total int64
	for {
		n, err := r.Read(buf)
		if n > 0 {
			m, werr := w.Write(buf[:n])
			total += int64(m)
			if werr != nil {
				return total, werr
			}
		}
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// Close implements io.Closer: it returns the upstream response (and its connection) to the pool.
// It is forbidden to use b after Close.
func (b *upstreamBody) Close() error {
	fasthttp.ReleaseResponse(b.resp)
	b.resp, b.r = nil, nil
	upstreamBodyPool.Put(b)
	return nil
}
