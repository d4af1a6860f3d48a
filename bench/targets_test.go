package bench

import (
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/docxy/docxy/bench/baseline"
	"github.com/docxy/docxy/config"
	"github.com/docxy/docxy/proxy"
	"github.com/docxy/docxy/proxy/oci"
	"github.com/valyala/fasthttp"
)

// upstreamReg is the fake registry every target sits in front of. TestMain starts it once.
var upstreamReg *fakeRegistry

func TestMain(m *testing.M) {
	var err error
	if upstreamReg, err = newFakeRegistry(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	if err := upstreamReg.Close(); err != nil && code == 0 {
		fmt.Fprintln(os.Stderr, err)
		code = 1
	}
	os.Exit(code)
}

// server is a running target: its loopback address and how to stop it.
type server struct {
	addr string
	stop func() error
}

// startFunc starts a target in front of upstreamReg.
type startFunc func(tb testing.TB) *server

// benchConfig is docxy's configuration for the benchmarks: one registry (the fake upstream),
// access logs off (they are on by default; the load test turns them off too), and the cache
// off unless cacheDir is set.
func benchConfig(tb testing.TB, cacheDir string) *config.Config {
	tb.Helper()
	cache := "disabled = true"
	if cacheDir != "" {
		cache = fmt.Sprintf("dir = %q", cacheDir)
	}
	toml := fmt.Sprintf(`
[server]
listen = "127.0.0.1:0"
public_base_url = "http://127.0.0.1:5000"

[cache]
%s

[log]
level = "error"
access_log = false

[[registry]]
name = "bench"
upstream = "http://%s"
library_prefix = true
default = true
`, cache, upstreamReg.addr)
	cfg, err := config.Parse([]byte(toml), "bench.toml")
	if err != nil {
		tb.Fatalf("cannot parse the bench configuration: %s", err)
	}
	return cfg
}

// startDocxyPassThrough runs docxy with the cache disabled: every request goes upstream.
func startDocxyPassThrough(tb testing.TB) *server { return startDocxy(tb, "") }

// startDocxyCache runs docxy with its cache in a fresh directory.
func startDocxyCache(tb testing.TB) *server { return startDocxy(tb, tb.TempDir()) }

// startDocxy serves proxy.New on a fasthttp.Server configured as docxy's main.go configures it.
func startDocxy(tb testing.TB, cacheDir string) *server {
	tb.Helper()
	cfg := benchConfig(tb, cacheDir)
	h, err := proxy.New(cfg, proxy.Options{Version: "bench"})
	if err != nil {
		tb.Fatalf("cannot build docxy: %s", err)
	}
	srv := &fasthttp.Server{
		Handler:            h.ServeHTTP,
		Name:               "docxy",
		ReadTimeout:        cfg.Server.ReadTimeout.Duration,
		IdleTimeout:        cfg.Server.IdleTimeout.Duration,
		MaxRequestBodySize: 64 << 10,
		ReadBufferSize:     16 << 10,
		CloseOnShutdown:    true,
		Logger:             discardLogger{},
	}
	ln := listen(tb)
	done := make(chan struct{})
	go func() {
		_ = srv.Serve(ln)
		close(done)
	}()
	return &server{addr: ln.Addr().String(), stop: func() error {
		go func() { _ = srv.Shutdown() }()
		defer h.Close()
		return waitStopped(done)
	}}
}

// startNetHTTP serves the net/http baseline (package baseline).
func startNetHTTP(tb testing.TB) *server {
	tb.Helper()
	cfg := benchConfig(tb, "")
	h := baseline.New(cfg)
	return serveNetHTTP(tb, baseline.NewServer(cfg, h), func() { h.(*baseline.Handler).CloseIdleConnections() })
}

// startDirect is no proxy at all: clients pull from the fake registry itself.
func startDirect(testing.TB) *server {
	return &server{addr: upstreamReg.addr, stop: func() error { return nil }}
}

func serveNetHTTP(tb testing.TB, srv *http.Server, closeIdle func()) *server {
	srv.ErrorLog = log.New(io.Discard, "", 0)
	ln := listen(tb)
	done := make(chan struct{})
	go func() {
		_ = srv.Serve(ln)
		close(done)
	}()
	return &server{addr: ln.Addr().String(), stop: func() error {
		err := srv.Close()
		if closeIdle != nil {
			closeIdle()
		}
		return errors.Join(err, waitStopped(done))
	}}
}

func listen(tb testing.TB) net.Listener {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("cannot listen: %s", err)
	}
	return ln
}

func waitStopped(done <-chan struct{}) error {
	select {
	case <-done:
		return nil
	case <-time.After(time.Second):
		return errors.New("server wasn't stopped")
	}
}

// startNetHTTPCache is the net/http counterpart of a docxy cache hit: the same path validation,
// then the manifest from memory, or the blob from a file with http.ServeContent (sendfile).
// It serves the manifest and the blobs of upstreamReg, stored as files under a temporary directory.
func startNetHTTPCache(tb testing.TB) *server {
	tb.Helper()
	dir := tb.TempDir()
	for _, b := range []*fakeBlob{upstreamReg.blob4KiB, upstreamReg.blob1MiB, upstreamReg.blob64MiB} {
		if err := os.WriteFile(filepath.Join(dir, b.digest), b.data, 0o644); err != nil {
			tb.Fatalf("cannot write the cached blob: %s", err)
		}
	}
	c := &netHTTPCache{
		dir:          dir,
		manifest:     upstreamReg.manifest,
		manifestLen:  []string{fmt.Sprint(len(upstreamReg.manifest))},
		manifestType: []string{oci.MediaTypeOCIManifest},
		digest:       []string{upstreamReg.manifestDigest},
		etag:         []string{upstreamReg.manifestEtag},
		tag:          "latest",
	}
	return serveNetHTTP(tb, &http.Server{Handler: c, MaxHeaderBytes: 16 << 10}, nil)
}

type netHTTPCache struct {
	dir                                     string
	manifest                                []byte
	manifestLen, manifestType, digest, etag []string
	tag                                     string
}

var (
	hvAPIVersion  = []string{"registry/2.0"}
	hvHit         = []string{"HIT"}
	hvOctetStream = []string{"application/octet-stream"}
	hvBytes       = []string{"bytes"}
)

func (c *netHTTPCache) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	out := w.Header()
	out["Docker-Distribution-Api-Version"] = hvAPIVersion
	p, ok := strings.CutPrefix(r.URL.Path, "/v2/")
	if !ok {
		http.NotFound(w, r)
		return
	}
	name, kind, ref := oci.ParsePath([]byte(p))
	switch {
	case !oci.ValidName(name):
		http.NotFound(w, r)
	case kind == oci.KindManifest && oci.ValidReference(ref) && string(ref) == c.tag:
		out["Content-Type"] = c.manifestType
		out["Docker-Content-Digest"] = c.digest
		out["Etag"] = c.etag
		out["X-Cache"] = hvHit
		out["Content-Length"] = c.manifestLen
		if r.Method != http.MethodHead {
			_, _ = w.Write(c.manifest)
		}
	case kind == oci.KindBlob && oci.ValidDigest(ref):
		f, err := os.Open(filepath.Join(c.dir, string(ref)))
		if err != nil {
			http.NotFound(w, r)
			return
		}
		defer f.Close()
		out["Content-Type"] = hvOctetStream
		out["Docker-Content-Digest"] = []string{string(ref)}
		out["Accept-Ranges"] = hvBytes
		out["X-Cache"] = hvHit
		http.ServeContent(w, r, "", time.Time{}, f)
	default:
		http.NotFound(w, r)
	}
}
