package proxy

import (
	"strings"
	"testing"

	"github.com/docxy/docxy/config"
	"github.com/valyala/fasthttp"
)

// TestAccessRulesDenyBeforeUpstream checks that a denied repository gets 403 DENIED naming the
// rule, without any upstream call (the upstream address is unroutable on purpose).
func TestAccessRulesDenyBeforeUpstream(t *testing.T) {
	cfg, err := config.Parse([]byte(`
[cache]
disabled = true
[[registry]]
name = "hub"
upstream = "http://127.0.0.1:1"
library_prefix = true
allow = ["library/*", "myorg/**"]
deny = ["myorg/secret/**"]
`), "test")
	if err != nil {
		t.Fatalf("cannot parse config: %s", err)
	}
	h, err := New(cfg, Options{})
	if err != nil {
		t.Fatalf("cannot build handler: %s", err)
	}
	f := func(path string, wantStatus int, wantInBody string) {
		t.Helper()
		var ctx fasthttp.RequestCtx
		ctx.Request.SetRequestURI(path)
		h.ServeHTTP(&ctx)
		if got := ctx.Response.StatusCode(); got != wantStatus {
			t.Fatalf("unexpected status for %s: got %d; want %d (body %s)", path, got, wantStatus, ctx.Response.Body())
		}
		if !strings.Contains(string(ctx.Response.Body()), wantInBody) {
			t.Fatalf("unexpected body for %s: got %s; want it to contain %q", path, ctx.Response.Body(), wantInBody)
		}
	}
	f("/v2/evil/app/manifests/latest", 403, `"code":"DENIED"`)
	f("/v2/evil/app/manifests/latest", 403, "not in the allow list")
	f("/v2/myorg/secret/x/blobs/sha256:"+strings.Repeat("a", 64), 403, "deny myorg/secret/**")
	f("/v2/library/a/b/manifests/v1", 403, "library/a/b")
	// Allowed names go upstream: here an unreachable one, hence 502 and not 403.
	f("/v2/nginx/manifests/latest", 502, `"code":"UNAVAILABLE"`)
	f("/v2/myorg/team/app/manifests/latest", 502, `"code":"UNAVAILABLE"`)
}

func TestMetricsMoveWithRequests(t *testing.T) {
	cfg, err := config.Parse([]byte(`
[cache]
disabled = true
[[registry]]
name = "hub"
upstream = "http://127.0.0.1:1"
deny = ["blocked/**"]
`), "test")
	if err != nil {
		t.Fatalf("cannot parse config: %s", err)
	}
	h, err := New(cfg, Options{})
	if err != nil {
		t.Fatalf("cannot build handler: %s", err)
	}
	get := func(path string) *fasthttp.RequestCtx {
		var ctx fasthttp.RequestCtx
		ctx.Request.SetRequestURI(path)
		h.ServeHTTP(&ctx)
		return &ctx
	}
	get("/v2/blocked/x/manifests/latest")
	get("/v2/blocked/x/manifests/latest")
	get("/v2/open/x/blobs/sha256:" + strings.Repeat("b", 64))
	body := string(get("/metrics").Response.Body())
	for _, want := range []string{
		`docxy_requests_total{registry="hub",route="manifest",code="403"} 2`,
		`docxy_requests_total{registry="hub",route="blob",code="502"} 1`,
		`docxy_upstream_errors_total{registry="hub"} 1`,
		`docxy_upstream_ratelimit_remaining{registry="hub",account="anonymous"} -1`,
		`process_resident_memory_bytes`,
	} {
		if !strings.Contains(body, want) {
			t.Fatalf("metrics lack %q:\n%s", want, body)
		}
	}
}
