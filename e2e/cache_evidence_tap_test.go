package e2e

// Helpers of the cache evidence tests (cache_evidence_test.go): an upstream tap that counts and
// throttles what the registry sends docxy, a monotonic event clock, cache directory walks, the
// admin statistics, and seeding of extra images.

import (
	"archive/tar"
	"bytes"
	"context"
	crand "crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// cacheAdminToken enables /admin/cache on the mirrors of the cache evidence tests.
const cacheAdminToken = "cache-evidence-admin"

// cacheClock orders events across goroutines (clients, the tap): every tick is unique and larger
// than all ticks taken before it, whatever the wall clock does.
var cacheClock atomic.Int64

func cacheTick() int64 { return cacheClock.Add(1) }

// upstreamTap is an HTTP proxy in front of a registry that records every request docxy makes
// (method, path, status, body bytes sent) and can throttle response bodies. Point a mirror's
// upstream at URL.
type upstreamTap struct {
	URL string // http://127.0.0.1:PORT

	target string // http://host:port of the registry
	srv    *http.Server
	client *http.Client
	rate   atomic.Int64 // response body bytes per second; 0 means unthrottled

	mu   sync.Mutex // protects reqs
	reqs []*tapRequest
}

// tapRequest is one request the tap forwarded. Fields after Path are final once Done is set.
type tapRequest struct {
	Method, Path string
	StartSeq     int64 // cacheClock when the request arrived

	Status   int
	Bytes    int64 // response body bytes written to docxy
	Complete bool  // the whole upstream body was written to docxy
	DoneSeq  int64 // cacheClock after the last body byte was written (or the copy failed)
	Took     time.Duration
	Done     bool
}

func startUpstreamTap(t *testing.T, target string) *upstreamTap {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &upstreamTap{
		URL:    "http://" + ln.Addr().String(),
		target: strings.TrimSuffix(target, "/"),
		client: &http.Client{
			Transport: &http.Transport{Proxy: nil, DisableCompression: true, MaxIdleConnsPerHost: 64},
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return http.ErrUseLastResponse // docxy must see and follow redirects itself
			},
		},
	}
	u.srv = &http.Server{Handler: u, ReadHeaderTimeout: 10 * time.Second}
	go u.srv.Serve(ln)
	t.Cleanup(func() { u.srv.Close() })
	return u
}

// SetRate throttles response bodies to bytesPerSecond from now on (0: unthrottled).
func (u *upstreamTap) SetRate(bytesPerSecond int64) { u.rate.Store(bytesPerSecond) }

// Mark returns a position in the request log for Since.
func (u *upstreamTap) Mark() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.reqs)
}

// Since returns copies of the requests recorded after mark.
func (u *upstreamTap) Since(mark int) []tapRequest {
	u.mu.Lock()
	defer u.mu.Unlock()
	out := make([]tapRequest, 0, len(u.reqs)-mark)
	for _, r := range u.reqs[mark:] {
		out = append(out, *r)
	}
	return out
}

// Matching returns the requests since mark with the given method and path.
func (u *upstreamTap) Matching(mark int, method, path string) []tapRequest {
	var out []tapRequest
	for _, r := range u.Since(mark) {
		if r.Method == method && r.Path == path {
			out = append(out, r)
		}
	}
	return out
}

var tapHopByHop = []string{"Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

func (u *upstreamTap) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rec := &tapRequest{Method: r.Method, Path: r.URL.Path, StartSeq: cacheTick()}
	start := time.Now()
	u.mu.Lock()
	u.reqs = append(u.reqs, rec)
	u.mu.Unlock()
	var status int
	var sent int64
	complete := false
	defer func() {
		done := cacheTick()
		u.mu.Lock()
		rec.Status, rec.Bytes, rec.Complete, rec.DoneSeq, rec.Took, rec.Done = status, sent, complete, done, time.Since(start), true
		u.mu.Unlock()
	}()

	out, err := http.NewRequestWithContext(r.Context(), r.Method, u.target+r.URL.RequestURI(), nil)
	if err != nil {
		status = http.StatusBadGateway
		http.Error(w, err.Error(), status)
		return
	}
	out.Header = r.Header.Clone()
	for _, h := range tapHopByHop {
		out.Header.Del(h)
	}
	resp, err := u.client.Do(out)
	if err != nil {
		status = http.StatusBadGateway
		http.Error(w, err.Error(), status)
		return
	}
	defer resp.Body.Close()
	for k, vs := range resp.Header {
		w.Header()[k] = vs
	}
	for _, h := range tapHopByHop {
		w.Header().Del(h)
	}
	status = resp.StatusCode
	w.WriteHeader(status)
	flusher, _ := w.(http.Flusher)
	buf := make([]byte, 64<<10)
	// The throttle paces bytes from the last rate change on, so a change applies at once.
	paceStart, paceSent, paceRate := time.Now(), int64(0), u.rate.Load()
	for {
		n, rerr := resp.Body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return
			}
			if flusher != nil {
				flusher.Flush()
			}
			sent += int64(n)
			u.mu.Lock()
			rec.Bytes = sent
			u.mu.Unlock()
			if rate := u.rate.Load(); rate != paceRate {
				paceStart, paceSent, paceRate = time.Now(), 0, rate
			}
			paceSent += int64(n)
			if paceRate > 0 {
				due := paceStart.Add(time.Duration(float64(paceSent) / float64(paceRate) * float64(time.Second)))
				if d := time.Until(due); d > 0 {
					select {
					case <-time.After(d):
					case <-r.Context().Done():
						return
					}
				}
			}
		}
		if rerr == io.EOF {
			complete = true
			return
		}
		if rerr != nil {
			return
		}
	}
}

// cacheAdminStats is the part of GET /admin/cache the evidence tests read.
type cacheAdminStats struct {
	Blobs struct {
		Bytes     int64  `json:"bytes"`
		Entries   int    `json:"entries"`
		Hits      uint64 `json:"hits"`
		Misses    uint64 `json:"misses"`
		InFlight  int    `json:"in_flight"`
		Evictions uint64 `json:"evictions"`
	} `json:"blobs"`
	Manifests struct {
		Bytes   int64 `json:"bytes"`
		Entries int   `json:"entries"`
		Hits    int64 `json:"hits"`
		Misses  int64 `json:"misses"`
		Stale   int64 `json:"stale"`
	} `json:"manifests"`
}

func cacheStats(t *testing.T, m *mirror) cacheAdminStats {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, strings.TrimSuffix(m.healthURL, "/health")+"/admin/cache", nil)
	req.Header.Set("Authorization", "Bearer "+cacheAdminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET /admin/cache: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	var s cacheAdminStats
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /admin/cache: unexpected status code: got %d; want 200 (%s)", resp.StatusCode, body)
	}
	if err := json.Unmarshal(body, &s); err != nil {
		t.Fatalf("GET /admin/cache: %v in %s", err, body)
	}
	return s
}

// waitCacheIdle polls /admin/cache until no download is in flight (fills are committed after
// their last reader got its bytes) and returns the statistics then.
func waitCacheIdle(t *testing.T, m *mirror) cacheAdminStats {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		s := cacheStats(t, m)
		if s.Blobs.InFlight == 0 {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("/admin/cache still reports %d downloads in flight after 60s", s.Blobs.InFlight)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// cacheTOML is the [cache] body (and an [admin] section) for a mirror whose cache lives in dir.
func cacheTOML(dir, maxSize, manifestTTL string) string {
	s := fmt.Sprintf("dir = %q\n", dir)
	if maxSize != "" {
		s += fmt.Sprintf("max_size = %q\n", maxSize)
	}
	if manifestTTL != "" {
		s += fmt.Sprintf("manifest_ttl = %q\n", manifestTTL)
	}
	return s + fmt.Sprintf("\n[admin]\ntoken = %q\n", cacheAdminToken)
}

// cacheBlobFiles returns every regular file under dir/blobs, by path relative to dir, with its size.
func cacheBlobFiles(t *testing.T, dir string) map[string]int64 {
	t.Helper()
	files := map[string]int64{}
	root := filepath.Join(dir, "blobs")
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			info, err := d.Info()
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(dir, p)
			files[rel] = info.Size()
		}
		return nil
	})
	if err != nil && !os.IsNotExist(err) {
		t.Fatalf("walking %s: %v", root, err)
	}
	return files
}

// cacheFilesFor returns the files under dir/blobs whose name contains digest's hex.
func cacheFilesFor(files map[string]int64, digest string) []string {
	hexd := strings.TrimPrefix(digest, "sha256:")
	var out []string
	for p := range files {
		if strings.Contains(filepath.Base(p), hexd) {
			out = append(out, p)
		}
	}
	return out
}

// cacheDirListing returns path:size of every file under dir (recursively), relative to dir.
func cacheDirListing(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			info, ierr := d.Info()
			size := int64(-1)
			if ierr == nil {
				size = info.Size()
			}
			rel, _ := filepath.Rel(dir, p)
			out = append(out, fmt.Sprintf("%s:%d", rel, size))
		}
		return nil
	})
	return out
}

func cacheSumSizes(files map[string]int64) int64 {
	var n int64
	for _, s := range files {
		n += s
	}
	return n
}

// cacheReadBlob reads a response body whole, returning its sha256 digest and length.
func cacheReadBlob(r io.Reader) (string, int64, error) {
	h := sha256.New()
	n, err := io.CopyBuffer(h, r, make([]byte, 256<<10))
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), n, err
}

// cacheSeedOpts are remote options to push to the shared registry as alice.
func cacheSeedOpts(ctx context.Context) []remote.Option {
	return []remote.Option{
		remote.WithAuth(&authn.Basic{Username: aliceUser, Password: alicePass}),
		remote.WithContext(ctx),
		remote.WithUserAgent("e2e-seed"),
	}
}

// cacheSeedImage pushes repo:tag, a linux/amd64 OCI image whose layers are uncompressed tars of
// random bytes of the given sizes, to the registry at host.
func cacheSeedImage(t *testing.T, host, repo, tag string, layerSizes ...int) seededImage {
	t.Helper()
	var layers []v1.Layer
	for _, size := range layerSizes {
		var seed [32]byte
		crand.Read(seed[:])
		data := make([]byte, size)
		rand.NewChaCha8(seed).Read(data)
		var buf bytes.Buffer
		buf.Grow(size + 4096)
		tw := tar.NewWriter(&buf)
		if err := tw.WriteHeader(&tar.Header{Name: "data.bin", Size: int64(size), Mode: 0o644, Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		tw.Write(data)
		if err := tw.Close(); err != nil {
			t.Fatal(err)
		}
		layers = append(layers, static.NewLayer(buf.Bytes(), types.OCIUncompressedLayer))
	}
	base := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err := mutate.AppendLayers(base, layers...)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = linuxAMD64.OS, linuxAMD64.Architecture
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), seedTimeout)
	defer cancel()
	s, err := seedImage(host, repo, tag, img, cacheSeedOpts(ctx))
	if err != nil {
		t.Fatal(err)
	}
	return s
}
