//go:build !race

package proxy

import (
	"testing"

	"github.com/docxy/docxy/config"
	"github.com/valyala/fasthttp"
)

// TestManifestCacheHitDoesNotAllocate guards the hottest path of a shared mirror: a manifest
// served from the cache (fasthttp's allocation_test.go habit).
func TestManifestCacheHitDoesNotAllocate(t *testing.T) {
	cfg, err := config.Parse([]byte(`
[cache]
dir = "`+t.TempDir()+`"
[log]
access_log = false
[[registry]]
name = "hub"
upstream = "http://127.0.0.1:1"
library_prefix = true
`), "test")
	if err != nil {
		t.Fatalf("cannot parse config: %s", err)
	}
	h, err := New(cfg, Options{})
	if err != nil {
		t.Fatalf("cannot build handler: %s", err)
	}
	body := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}`)
	digest := computeDigest(nil, nil, body)
	for _, ref := range [][]byte{[]byte("latest"), digest} {
		mask := acceptAll
		if ref[0] == 's' {
			mask = 0
		}
		key := appendManifestKey(nil, "hub", []byte("library/nginx"), ref, mask)
		h.manifests.put(newManifest(string(key), body, mtOCIIndex, digest, len(body)))
	}
	var ctx fasthttp.RequestCtx
	for _, tc := range []struct{ method, uri string }{
		{"GET", "/v2/nginx/manifests/latest"},
		{"HEAD", "/v2/nginx/manifests/latest"},
		{"GET", "/v2/nginx/manifests/" + string(digest)},
	} {
		serve := func() {
			ctx.Request.Reset()
			ctx.Response.Reset()
			ctx.Request.Header.SetMethod(tc.method)
			ctx.Request.SetRequestURI(tc.uri)
			h.ServeHTTP(&ctx)
		}
		serve()
		if got := ctx.Response.StatusCode(); got != fasthttp.StatusOK || string(ctx.Response.Header.Peek(HeaderXCache)) != "HIT" {
			t.Fatalf("%s %s: unexpected response: status %d, X-Cache %q", tc.method, tc.uri, got, ctx.Response.Header.Peek(HeaderXCache))
		}
		if n := testing.AllocsPerRun(100, serve); n != 0 {
			t.Fatalf("%s %s: unexpected allocations on a manifest cache hit: got %v; want 0", tc.method, tc.uri, n)
		}
	}
}
