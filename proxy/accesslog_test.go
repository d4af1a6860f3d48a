package proxy

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/docxy/docxy/config"
	"github.com/valyala/fasthttp"
)

// syncBuffer is a bytes.Buffer safe for the logger and the test to share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// TestAccessLogBytes: the access log and /metrics count the body bytes of every answer, whether
// the body was set whole (manifests, /health, errors) or streamed (blobs).
func TestAccessLogBytes(t *testing.T) {
	blob := randomBytes(4096, 9)
	d := digestOf(blob)
	up, _ := fakeHub(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v2/library/nginx/manifests/latest":
			writeManifestResponse(w, r, mtOCIIndexS, testManifest)
		case "/v2/library/nginx/blobs/" + d:
			w.Header().Set("Content-Length", strconv.Itoa(len(blob)))
			_, _ = w.Write(blob)
		default:
			http.NotFound(w, r)
		}
	})
	for _, mode := range mirrorModes {
		t.Run(mode.name, func(t *testing.T) {
			cfg, err := config.Parse([]byte(testConfig("", registryConfig("docker.io", up.URL(), `library_prefix = true`), mode.cache)), "test")
			if err != nil {
				t.Fatal(err)
			}
			cfg.Cache.Dir = t.TempDir()
			var out syncBuffer
			h, err := New(cfg, Options{Version: "test", Logger: slog.New(slog.NewJSONHandler(&out, nil))})
			if err != nil {
				t.Fatal(err)
			}
			defer waitFills(t, h)
			defer h.Close()
			serve := func(method, path string) *fasthttp.RequestCtx {
				t.Helper()
				var req fasthttp.Request
				req.Header.SetMethod(method)
				req.SetRequestURI(path)
				var ctx fasthttp.RequestCtx
				ctx.Init(&req, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}, nil)
				h.ServeHTTP(&ctx)
				if s := ctx.Response.StatusCode(); s != 200 {
					t.Fatalf("%s %s: unexpected status %d", method, path, s)
				}
				return &ctx
			}
			done := func(ctx *fasthttp.RequestCtx) { ctx.Response.Reset() } // closes a streamed body
			done(serve("GET", "/v2/nginx/manifests/latest"))
			done(serve("HEAD", "/v2/nginx/manifests/latest"))
			done(serve("GET", "/v2/nginx/blobs/"+d))
			done(serve("GET", PathHealth))
			metrics := string(serve("GET", "/metrics").Response.Body())
			for _, want := range []string{
				`docxy_response_bytes_total{registry="docker.io",route="manifest"} ` + strconv.Itoa(len(testManifest)),
				`docxy_response_bytes_total{registry="docker.io",route="blob"} ` + strconv.Itoa(len(blob)),
			} {
				if !strings.Contains(metrics, want+"\n") {
					t.Fatalf("/metrics lacks %q", want)
				}
			}

			want := map[string]int{"GET /v2/nginx/manifests/latest": len(testManifest), "HEAD /v2/nginx/manifests/latest": 0,
				"GET /v2/nginx/blobs/" + d: len(blob)}
			out.mu.Lock()
			defer out.mu.Unlock()
			dec := json.NewDecoder(&out.b)
			seen := 0
			for dec.More() {
				var line struct {
					Msg, Method, Path string
					Bytes             int
				}
				if err := dec.Decode(&line); err != nil {
					t.Fatalf("cannot decode the log: %s", err)
				}
				if line.Msg != "request" {
					continue
				}
				k := line.Method + " " + line.Path
				if line.Path == PathHealth {
					if line.Bytes == 0 {
						t.Fatalf("unexpected bytes for %s: got 0; want the /health body's length", k)
					}
					seen++
					continue
				}
				if w, ok := want[k]; ok {
					if line.Bytes != w {
						t.Fatalf("unexpected bytes for %s: got %d; want %d", k, line.Bytes, w)
					}
					seen++
				}
			}
			if seen != 4 {
				t.Fatalf("unexpected access log lines: found %d of 4", seen)
			}
		})
	}
}
