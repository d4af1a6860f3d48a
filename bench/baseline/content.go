package baseline

import (
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"unsafe"

	"github.com/docxy/docxy/proxy/oci"
)

// maxBufferedBodySize is proxy's: non-blob bodies without Content-Length are read whole, capped.
const maxBufferedBodySize = 16 << 20

// copyBufferSize is the pooled buffer each body copy uses, as httputil.ReverseProxy.BufferPool
// users typically choose.
const copyBufferSize = 32 << 10

var copyBufPool = sync.Pool{New: func() any { b := make([]byte, copyBufferSize); return &b }}

// pathBufPool holds the buffers upstream URLs are built in.
var pathBufPool = sync.Pool{New: func() any { b := make([]byte, 0, 256); return &b }}

// forwardedBlobHeaders are proxy's forwardedBlobHeaders, in canonical form.
var forwardedBlobHeaders = []string{"Range", "If-Range", "If-Match", "If-None-Match", "If-Modified-Since", "If-Unmodified-Since"}

// allowedResponseHeaders is proxy's copyResponseHeaders allowlist, in canonical form.
var allowedResponseHeaders = []string{
	"Content-Type", "Docker-Content-Digest", "Etag", "Last-Modified", "Content-Range", "Content-Encoding",
	"Link", "Retry-After", "Ratelimit-Limit", "Ratelimit-Remaining", "Docker-Ratelimit-Source",
	"Oci-Subject", "Oci-Filters-Applied", "Cache-Control",
}

// bytesOf views s as bytes without copying; the oci functions only read their input.
func bytesOf(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }

// serveV2 serves GET and HEAD on /v2/<name>/{manifests,blobs,referrers}/<ref> and tags/list,
// validating like proxy's serveV2.
func (h *Handler) serveV2(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	if !strings.HasPrefix(p, "/v2/") {
		serveNotFound(w, r)
		return
	}
	name, kind, ref := oci.ParsePath(bytesOf(p[len("/v2/"):]))
	switch {
	case kind == oci.KindInvalid:
		serveNotFound(w, r)
		return
	case !oci.ValidName(name):
		writeJSON(w, r, http.StatusBadRequest, bodyNameInvalid)
		return
	case kind == oci.KindManifest && !oci.ValidReference(ref):
		if oci.IsDigest(ref) {
			writeJSON(w, r, http.StatusBadRequest, bodyDigestInvalid)
		} else {
			writeJSON(w, r, http.StatusBadRequest, bodyReferenceInvalid)
		}
		return
	case (kind == oci.KindBlob || kind == oci.KindReferrers) && !oci.ValidDigest(ref):
		writeJSON(w, r, http.StatusBadRequest, bodyDigestInvalid)
		return
	}
	reg, hostMatched := h.pick(r)
	h.passThrough(w, r, reg, hostMatched, name, kind, ref)
}

// upstreamURL returns scheme://host/v2/<upstream name>/<kind>/<ref>[?query without ns].
func upstreamURL(reg *registry, r *http.Request, name []byte, kind oci.Kind, ref []byte) string {
	bp := pathBufPool.Get().(*[]byte)
	b := append((*bp)[:0], reg.baseURL...)
	b = append(b, "/v2/"...)
	b = reg.appendUpstreamName(b, name)
	switch kind {
	case oci.KindManifest:
		b = append(b, "/manifests/"...)
	case oci.KindBlob:
		b = append(b, "/blobs/"...)
	case oci.KindReferrers:
		b = append(b, "/referrers/"...)
	case oci.KindTags:
		b = append(b, "/tags/list"...)
	}
	b = append(b, ref...)
	if q := r.URL.RawQuery; q != "" {
		if !strings.Contains(q, "ns=") {
			b = append(b, '?')
			b = append(b, q...)
		} else if v := r.URL.Query(); v.Has("ns") {
			v.Del("ns")
			if len(v) > 0 {
				b = append(b, '?')
				b = append(b, v.Encode()...)
			}
		}
	}
	s := string(b)
	*bp = b
	pathBufPool.Put(bp)
	return s
}

// passThrough relays one request upstream and its answer to the client, like proxy's passThrough.
func (h *Handler) passThrough(w http.ResponseWriter, r *http.Request, reg *registry, hostMatched bool, name []byte, kind oci.Kind, ref []byte) {
	req, err := http.NewRequestWithContext(r.Context(), r.Method, upstreamURL(reg, r, name, kind, ref), nil)
	if err != nil {
		writeUpstreamError(w, r, err)
		return
	}
	in, out := r.Header, req.Header
	out["User-Agent"] = reg.userAgent
	if v := in["Accept"]; len(v) > 0 {
		out["Accept"] = v
	} else if kind == oci.KindManifest {
		out["Accept"] = hvDefaultAccept
	}
	if v := in["Authorization"]; len(v) > 0 {
		out["Authorization"] = v
	}
	for _, k := range forwardedBlobHeaders {
		if v := in[k]; len(v) > 0 {
			out[k] = v
		}
	}
	resp, err := h.do(reg, req, kind)
	if err != nil {
		h.log.Warn("upstream request failed", "registry", reg.name, "path", r.URL.Path, "err", err)
		writeUpstreamError(w, r, err)
		return
	}
	if r.Method == http.MethodHead && resp.StatusCode == http.StatusOK && resp.ContentLength < 0 {
		// The upstream omitted the length on HEAD: ask with GET and close the body unread.
		resp.Body.Close()
		req.Method = http.MethodGet
		if resp, err = h.do(reg, req, kind); err != nil {
			writeUpstreamError(w, r, err)
			return
		}
	}
	h.relay(w, r, reg, hostMatched, kind, ref, resp)
}

func (h *Handler) do(reg *registry, req *http.Request, kind oci.Kind) (*http.Response, error) {
	resp, err := reg.client.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	if kind == oci.KindBlob {
		return reg.followRedirects(req, resp)
	}
	return resp, nil
}

// relay writes the upstream response to the client and closes its body, like proxy's relay.
func (h *Handler) relay(w http.ResponseWriter, r *http.Request, reg *registry, hostMatched bool, kind oci.Kind, ref []byte, resp *http.Response) {
	defer resp.Body.Close()
	status := resp.StatusCode
	out := w.Header()
	for _, k := range allowedResponseHeaders {
		if v := resp.Header[k]; len(v) > 0 {
			out[k] = v
		}
	}
	if status == http.StatusUnauthorized {
		h.rewriteChallenge(out, r, reg, hostMatched, resp.Header.Get("Www-Authenticate"))
	}
	if kind == oci.KindBlob && (status == http.StatusOK || status == http.StatusPartialContent) {
		if len(out["Docker-Content-Digest"]) == 0 {
			out["Docker-Content-Digest"] = []string{string(ref)}
		}
		out["Accept-Ranges"] = hvAcceptRanges
	}
	size := resp.ContentLength
	if size >= 0 {
		if v := resp.Header["Content-Length"]; len(v) == 1 {
			out["Content-Length"] = v
		} else {
			out["Content-Length"] = []string{strconv.FormatInt(size, 10)}
		}
	}
	if r.Method == http.MethodHead || status == http.StatusNoContent || status == http.StatusNotModified {
		w.WriteHeader(status)
		return
	}
	if size >= 0 || kind == oci.KindBlob {
		// Known length, or a blob streamed chunked rather than buffered.
		w.WriteHeader(status)
		if err := copyBody(w, resp.Body, size); err != nil {
			// Abort the connection so that a short body never looks complete (FIELD-NOTES P7).
			panic(http.ErrAbortHandler)
		}
		return
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBufferedBodySize+1))
	if err != nil || len(body) > maxBufferedBodySize {
		writeJSON(w, r, http.StatusBadGateway, bodyTooLarge)
		return
	}
	out["Content-Length"] = []string{strconv.Itoa(len(body))}
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

var errShortBody = errors.New("baseline: upstream body ended before its Content-Length")

// copyBody copies size bytes (all of r when size < 0) to w through a pooled 32 KiB buffer. It
// calls w.Write directly: http.response.ReadFrom would hand the copy to net.TCPConn.ReadFrom,
// which allocates a fresh 32 KiB buffer for every non-socket source.
func copyBody(w io.Writer, r io.Reader, size int64) error {
	bp := copyBufPool.Get().(*[]byte)
	defer copyBufPool.Put(bp)
	buf := *bp
	left := size
	for left != 0 {
		b := buf
		if left > 0 && int64(len(b)) > left {
			b = b[:left]
		}
		n, rerr := r.Read(b)
		if n > 0 {
			if _, werr := w.Write(b[:n]); werr != nil {
				return werr
			}
			if left > 0 {
				left -= int64(n)
			}
		}
		if rerr == io.EOF {
			if left > 0 {
				return errShortBody
			}
			return nil
		}
		if rerr != nil {
			return rerr
		}
	}
	return nil
}
