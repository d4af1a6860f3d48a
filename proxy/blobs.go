package proxy

import (
	"context"
	"errors"
	"io"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/docxy/docxy/cache"
	"github.com/docxy/docxy/proxy/oci"
	"github.com/docxy/docxy/proxy/upstream"
	"github.com/valyala/fasthttp"
)

var contentTypeOctetStream = []byte("application/octet-stream")

// serveBlob serves a blob from the cache, from a download in progress, or by starting one:
// concurrent requests for the same uncached blob cause exactly one upstream fetch, and every
// requester streams the bytes as they arrive. The fill runs detached from any one client, so it
// completes for the others (and the cache) when the first requester goes away.
func (h *Handler) serveBlob(ctx *fasthttp.RequestCtx, reg *upstream.Registry, hostMatched bool, name, ref []byte) {
	d, err := cache.ParseDigestBytes(ref)
	if err != nil {
		writeError(ctx, fasthttp.StatusBadRequest, bodyDigestInvalid)
		return
	}
	rangeHeader := ctx.Request.Header.Peek(fasthttp.HeaderRange)
	if f, size, err := h.blobs.Open(d); err == nil {
		serveBlobFile(ctx, f, size, ref, rangeHeader)
		return
	}
	if ctx.IsHead() {
		// A HEAD needs no bytes: ask upstream (HEADs are free) rather than start a download.
		h.passThrough(ctx, reg, hostMatched, name, oci.KindBlob, ref)
		return
	}
	// Begin on a blob committed since Open returns a complete download: no special case.
	dl, leader := h.blobs.Begin(d)
	if leader {
		if len(rangeHeader) > 0 {
			// A resumed download of a blob nobody is fetching: forward the range rather than make
			// the client wait for the bytes before it. The fill is not started for it.
			dl.Abort(errRangeNotFilled)
			h.passThrough(ctx, reg, hostMatched, name, oci.KindBlob, ref)
			return
		}
		go h.fillBlob(reg, append([]byte(nil), name...), append([]byte(nil), ref...), dl)
	}
	size, err := dl.Wait(ctx)
	if err != nil {
		// Not shareable (private), or the upstream refused the mirror: the client's own
		// credentials decide, uncached.
		ctx.Response.Header.SetBytesV(HeaderXCache, cacheBypass)
		h.passThrough(ctx, reg, hostMatched, name, oci.KindBlob, ref)
		return
	}
	start, n, status, ok := parseRange(rangeHeader, size)
	if !ok {
		writeRangeNotSatisfiable(ctx, size)
		return
	}
	r := dl.NewReader(start)
	setBlobHeaders(ctx, ref, cacheMiss)
	if status == fasthttp.StatusPartialContent {
		setContentRange(ctx, start, n, size)
	}
	ctx.SetStatusCode(status)
	ctx.Response.ImmediateHeaderFlush = true // followers see headers before the first bytes arrive
	// For the whole blob, the end of the body waits for the digest check: a blob that fails it
	// aborts the connection instead of ending as a clean 200.
	setBodyStream(ctx, &limitedReadCloser{r: r, left: n, verify: n == size}, int(n))
}

var errRangeNotFilled = errors.New("proxy: range request on a cold blob is forwarded, not filled")

// fillBlob downloads a blob into the cache download dl: from the shared tier when another replica
// has it, else from the upstream with the mirror's own credentials (and then shares it).
func (h *Handler) fillBlob(reg *upstream.Registry, name, ref []byte, dl *cache.Download) {
	if h.shared != nil && h.fillFromShared(dl) {
		return
	}
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseResponse(resp)
	if err := h.mirrorDo(reg, name, oci.KindBlob, ref, methodGet, nil, resp); err != nil {
		dl.Abort(err)
		return
	}
	if resp.StatusCode() != fasthttp.StatusOK {
		dl.Abort(errNotShareable)
		return
	}
	size := resp.Header.ContentLength()
	if size < 0 {
		dl.Abort(errors.New("proxy: upstream blob has no Content-Length"))
		return
	}
	if err := dl.Start(int64(size)); err != nil {
		dl.Abort(err)
		return
	}
	bp := copyBufPool.Get().(*[]byte)
	_, err := io.CopyBuffer(dl, io.LimitReader(resp.BodyStream(), int64(size)+1), *bp)
	copyBufPool.Put(bp)
	if err != nil {
		h.log.Warn("blob download failed", "registry", reg.Name, "digest", string(ref), "err", err)
		dl.Abort(err)
		return
	}
	if err := dl.Commit(); err != nil {
		h.log.Warn("blob not cached", "registry", reg.Name, "digest", string(ref), "err", err)
		return
	}
	if h.shared != nil {
		h.share(dl.Digest())
	}
}

// sharedTimeout bounds one transfer between the local cache and the shared tier.
const sharedTimeout = 30 * time.Minute

// maxSharedUploads bounds concurrent uploads to the shared tier (each may hold a 16 MiB part).
const maxSharedUploads = 4

// fillFromShared fills dl from the shared tier. It reports false, leaving dl untouched, when the
// tier does not have the blob (or cannot be read), so the caller goes upstream.
func (h *Handler) fillFromShared(dl *cache.Download) bool {
	ctx, cancel := context.WithTimeout(context.Background(), sharedTimeout)
	defer cancel()
	rc, size, err := h.shared.Open(ctx, dl.Digest())
	if err != nil {
		if !errors.Is(err, cache.ErrNotFound) {
			h.log.Warn("shared cache tier unreadable; going upstream", "digest", dl.Digest().String(), "err", err)
		}
		return false
	}
	defer rc.Close()
	if err := dl.Start(size); err != nil {
		dl.Abort(err)
		return true
	}
	bp := copyBufPool.Get().(*[]byte)
	_, err = io.CopyBuffer(dl, rc, *bp)
	copyBufPool.Put(bp)
	if err == nil {
		err = dl.Commit() // verifies the digest: a corrupt object in the bucket is never served as complete
	} else {
		dl.Abort(err)
	}
	if err != nil {
		h.log.Warn("blob from the shared cache tier rejected", "digest", dl.Digest().String(), "err", err)
		return true
	}
	h.sharedHits.Add(1)
	return true
}

// share uploads a committed blob to the shared tier in the background, so other replicas find it.
func (h *Handler) share(d cache.Digest) {
	select {
	case h.uploads <- struct{}{}:
	default:
		h.log.Warn("shared cache tier: too many uploads in flight; not sharing this blob", "digest", d.String())
		return
	}
	go func() {
		defer func() { <-h.uploads }()
		f, size, err := h.blobs.Open(d)
		if err != nil {
			return // evicted meanwhile
		}
		defer f.Close()
		ctx, cancel := context.WithTimeout(context.Background(), sharedTimeout)
		defer cancel()
		if err := h.shared.Put(ctx, d, f, size); err != nil {
			h.log.Warn("cannot share blob in the shared cache tier", "digest", d.String(), "err", err)
			return
		}
		h.sharedUploads.Add(1)
	}()
}

// copyBufPool holds the buffers that fill the cache from upstream; 256 KiB keeps syscalls few.
var copyBufPool = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}

func setBlobHeaders(ctx *fasthttp.RequestCtx, ref, cacheStatus []byte) {
	out := &ctx.Response.Header
	out.SetContentTypeBytes(contentTypeOctetStream)
	out.SetBytesV(HeaderDockerContentDigest, ref)
	out.Set(fasthttp.HeaderAcceptRanges, "bytes")
	out.SetBytesV(HeaderXCache, cacheStatus)
}

// serveBlobFile answers from a committed blob; fasthttp sends it with sendfile.
func serveBlobFile(ctx *fasthttp.RequestCtx, f *os.File, size int64, ref, rangeHeader []byte) {
	setBlobHeaders(ctx, ref, cacheHit)
	if ctx.IsHead() {
		f.Close()
		ctx.Response.Header.SetContentLength(int(size))
		return
	}
	start, n, status, ok := parseRange(rangeHeader, size)
	if !ok {
		f.Close()
		writeRangeNotSatisfiable(ctx, size)
		return
	}
	if start > 0 {
		if _, err := f.Seek(start, io.SeekStart); err != nil {
			f.Close()
			writeError(ctx, fasthttp.StatusInternalServerError, bodyCacheRead)
			return
		}
	}
	if status == fasthttp.StatusPartialContent {
		setContentRange(ctx, start, n, size)
	}
	ctx.SetStatusCode(status)
	b := fileBodyPool.Get().(*fileBody)
	b.f = f
	b.lr = io.LimitedReader{R: f, N: n}
	setBodyStream(ctx, b, int(n))
}

var bodyCacheRead = oci.ErrorBody(oci.ErrorCodeUnavailable, "cannot read the cached blob")

// fileBody streams n bytes of a cached file. Its WriteTo hands fasthttp an *io.LimitedReader over
// the *os.File, which fasthttp turns into sendfile: zero user-space copies on a cache hit.
type fileBody struct {
	f  *os.File
	lr io.LimitedReader
}

var fileBodyPool = sync.Pool{New: func() any { return new(fileBody) }}

// Read implements io.Reader, for writers that cannot take the file directly (TLS).
func (b *fileBody) Read(p []byte) (int, error) { return b.lr.Read(p) }

// WriteTo implements io.WriterTo.
func (b *fileBody) WriteTo(w io.Writer) (int64, error) {
	if rf, ok := w.(io.ReaderFrom); ok {
		return rf.ReadFrom(&b.lr)
	}
	return io.Copy(w, &b.lr)
}

// Close implements io.Closer. It is forbidden to use b after Close.
func (b *fileBody) Close() error {
	err := b.f.Close()
	b.f, b.lr = nil, io.LimitedReader{}
	fileBodyPool.Put(b)
	return err
}

// limitedReadCloser serves n bytes of an in-progress download and closes the reader after.
//
// With verify set it holds back the last byte until the download's digest check passes: once a
// client has Content-Length bytes the response is complete, so a bad blob must fail before that.
type limitedReadCloser struct {
	r      io.ReadCloser
	left   int64
	verify bool
	probe  [1]byte
}

func (l *limitedReadCloser) Read(p []byte) (int, error) {
	if l.left <= 0 {
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	if !l.verify || l.left > 1 {
		limit := l.left
		if l.verify {
			limit-- // keep the last byte back
		}
		if int64(len(p)) > limit {
			p = p[:limit]
		}
		n, err := l.r.Read(p)
		l.left -= int64(n)
		if err == io.EOF && l.left > 0 {
			err = io.ErrUnexpectedEOF
		}
		return n, err
	}
	n, err := io.ReadFull(l.r, p[:1])
	if n != 1 {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return 0, err
	}
	// The reader ends with EOF only after the digest was verified; any error means it was not.
	if m, err := l.r.Read(l.probe[:]); m > 0 || err != io.EOF {
		if err == nil || err == io.EOF {
			err = errors.New("proxy: cached download is longer than announced")
		}
		return 0, err
	}
	l.left = 0
	return 1, io.EOF
}

// WriteTo implements io.WriterTo, with few large writes (see upstreamBody.WriteTo).
func (l *limitedReadCloser) WriteTo(w io.Writer) (int64, error) { return copyLarge(w, l) }

func (l *limitedReadCloser) Close() error { return l.r.Close() }

// parseRange reads a single "bytes=" range against size. It returns the start, the length and
// 206, or the whole blob and 200 when there is no (usable) Range. ok is false for a range that
// cannot be satisfied (416). Multiple ranges are answered with the whole blob, as RFC 9110 allows.
func parseRange(h []byte, size int64) (start, n int64, status int, ok bool) {
	const prefix = "bytes="
	if len(h) == 0 {
		return 0, size, fasthttp.StatusOK, true
	}
	if len(h) <= len(prefix) || string(h[:len(prefix)]) != prefix {
		return 0, size, fasthttp.StatusOK, true // not a byte range: ignore it
	}
	spec := h[len(prefix):]
	for _, c := range spec {
		if c == ',' {
			return 0, size, fasthttp.StatusOK, true
		}
	}
	dash := -1
	for i, c := range spec {
		if c == '-' {
			dash = i
			break
		}
	}
	if dash < 0 {
		return 0, 0, 0, false
	}
	first, last := spec[:dash], spec[dash+1:]
	switch {
	case len(first) == 0: // suffix: the last N bytes
		suffix, err := parseUint(last)
		if err != nil || suffix == 0 {
			return 0, 0, 0, false
		}
		suffix = min(suffix, size)
		return size - suffix, suffix, fasthttp.StatusPartialContent, true
	default:
		s, err := parseUint(first)
		if err != nil || s >= size {
			return 0, 0, 0, false
		}
		e := size - 1
		if len(last) > 0 {
			v, err := parseUint(last)
			if err != nil || v < s {
				return 0, 0, 0, false
			}
			e = min(v, size-1)
		}
		return s, e - s + 1, fasthttp.StatusPartialContent, true
	}
}

func parseUint(b []byte) (int64, error) {
	if len(b) == 0 || len(b) > 18 {
		return 0, strconv.ErrSyntax
	}
	var v int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, strconv.ErrSyntax
		}
		v = v*10 + int64(c-'0')
	}
	return v, nil
}

func setContentRange(ctx *fasthttp.RequestCtx, start, n, size int64) {
	ctx.Response.Header.SetContentRange(int(start), int(start+n-1), int(size))
}

var bodyRangeInvalid = oci.ErrorBody(oci.ErrorCodeRangeInvalid, "the requested range is not satisfiable")

func writeRangeNotSatisfiable(ctx *fasthttp.RequestCtx, size int64) {
	ctx.Response.Header.Set(fasthttp.HeaderContentRange, "bytes */"+strconv.FormatInt(size, 10))
	writeError(ctx, fasthttp.StatusRequestedRangeNotSatisfiable, bodyRangeInvalid)
}
