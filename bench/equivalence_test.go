package bench

import (
	"crypto/sha256"
	"testing"

	"github.com/valyala/fasthttp"
)

// TestSameAnswers checks that the net/http baseline answers like docxy's pass-through, so that
// the benchmarks compare equal work: same status, same registry headers, same bytes.
func TestSameAnswers(t *testing.T) {
	docxy := startDocxyPassThrough(t)
	defer stopTest(t, docxy)
	netHTTP := startNetHTTP(t)
	defer stopTest(t, netHTTP)
	headers := []string{
		"Content-Type", "Content-Length", "Docker-Content-Digest", "Etag", "Accept-Ranges",
		"Docker-Distribution-Api-Version", "Ratelimit-Limit", "Ratelimit-Remaining", "Docker-Ratelimit-Source",
		"Cache-Control", "Www-Authenticate", "Strict-Transport-Security",
	}
	f := func(method, path string) {
		t.Helper()
		a, b := fetch(t, docxy.addr, method, path), fetch(t, netHTTP.addr, method, path)
		if a.status != b.status {
			t.Fatalf("unexpected status code for %s %s: docxy %d; net/http %d", method, path, a.status, b.status)
		}
		for _, k := range headers {
			if a.headers[k] != b.headers[k] {
				t.Fatalf("unexpected %s for %s %s: docxy %q; net/http %q", k, method, path, a.headers[k], b.headers[k])
			}
		}
		if a.sum != b.sum || a.size != b.size {
			t.Fatalf("unexpected body for %s %s: docxy %d bytes; net/http %d bytes, or different bytes", method, path, a.size, b.size)
		}
	}
	f(fasthttp.MethodGet, "/v2/")
	f(fasthttp.MethodGet, manifestPath)
	f(fasthttp.MethodHead, manifestPath)
	f(fasthttp.MethodGet, "/v2/bench/manifests/latest") // library/ added by the proxy
	f(fasthttp.MethodGet, "/v2/"+benchRepo+"/manifests/"+upstreamReg.manifestDigest)
	f(fasthttp.MethodGet, "/v2/"+benchRepo+"/manifests/missing")
	f(fasthttp.MethodGet, "/v2/"+benchRepo+"/manifests/bad!tag")
	f(fasthttp.MethodGet, "/v2/Bad/manifests/latest")
	f(fasthttp.MethodGet, "/v2/"+benchRepo+"/blobs/sha256:00")
	f(fasthttp.MethodGet, blobPath(upstreamReg.blob4KiB))
	f(fasthttp.MethodHead, blobPath(upstreamReg.blob1MiB))
	f(fasthttp.MethodGet, blobPath(upstreamReg.blob1MiB))
	f(fasthttp.MethodGet, "/v2/"+benchRepo+"/blobs/sha256:"+upstreamReg.manifestDigest[len("sha256:")+1:]+"0")
	f(fasthttp.MethodDelete, manifestPath)
	f(fasthttp.MethodGet, "/nothing")
}

type answer struct {
	status  int
	headers map[string]string
	size    int
	sum     [sha256.Size]byte
}

func fetch(t *testing.T, addr, method, path string) answer {
	t.Helper()
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("http://" + addr + path)
	req.Header.SetMethod(method)
	req.Header.Set(fasthttp.HeaderAccept, dockerAccept)
	if err := fasthttp.Do(req, resp); err != nil {
		t.Fatalf("cannot %s %s: %s", method, path, err)
	}
	a := answer{status: resp.StatusCode(), headers: map[string]string{}, size: len(resp.Body()), sum: sha256.Sum256(resp.Body())}
	for k, v := range resp.Header.All() {
		a.headers[string(k)] = string(v)
	}
	if method == fasthttp.MethodHead {
		a.headers["Content-Length"] = string(resp.Header.Peek(fasthttp.HeaderContentLength))
	}
	return a
}

func stopTest(t *testing.T, s *server) {
	if err := s.stop(); err != nil {
		t.Fatal(err)
	}
}
