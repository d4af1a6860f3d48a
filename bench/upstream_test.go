package bench

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/docxy/docxy/proxy/oci"
	"github.com/valyala/fasthttp"
)

// Repository and paths the benchmarks pull. Clients send library/ themselves (Docker does when it
// talks to a mirror), so the same paths work on the proxies and directly on the upstream.
const (
	benchRepo    = "library/bench"
	manifestPath = "/v2/" + benchRepo + "/manifests/latest"
)

// Sizes of the blobs the fake registry serves.
const (
	size4KiB  = 4 << 10
	size1MiB  = 1 << 20
	size64MiB = 64 << 20
	// coldBlobSize is the blob that 32 clients pull at once in the ColdBlob32Concurrent cases.
	coldBlobSize = 4 << 20
)

// dockerAccept is what Docker 27 sends when it pulls a manifest.
const dockerAccept = "application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json, " +
	"application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json"

// fakeBlob is one blob the fake registry serves.
type fakeBlob struct {
	data   []byte
	digest string
	etag   string
	gets   atomic.Int64 // GET requests served, to count upstream fetches
}

// fakeRegistry is an in-process registry that needs no auth (/v2/ answers 200): one repository,
// one manifest (tag "latest") and blobs served from memory with Content-Length and the headers
// Docker Hub sends. It is a fasthttp.Server on loopback TCP, shared by every benchmark.
type fakeRegistry struct {
	ln   net.Listener
	srv  *fasthttp.Server
	addr string
	done chan struct{}

	manifest       []byte
	manifestDigest string
	manifestEtag   string
	blob4KiB       *fakeBlob
	blob1MiB       *fakeBlob
	blob64MiB      *fakeBlob
	coldBase       []byte        // random bytes that fresh cold blobs are made from
	coldSeq        atomic.Uint64 // makes every fresh cold blob unique

	mu    sync.RWMutex // protects blobs
	blobs map[string]*fakeBlob
}

func newFakeRegistry() (*fakeRegistry, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("cannot listen for the fake registry: %w", err)
	}
	f := &fakeRegistry{ln: ln, addr: ln.Addr().String(), done: make(chan struct{}), blobs: map[string]*fakeBlob{}}
	rng := rand.NewChaCha8([32]byte{'d', 'o', 'c', 'x', 'y'})
	randomBytes := func(n int) []byte {
		b := make([]byte, n)
		_, _ = rng.Read(b)
		return b
	}
	f.blob4KiB = f.addBlob(randomBytes(size4KiB))
	f.blob1MiB = f.addBlob(randomBytes(size1MiB))
	f.blob64MiB = f.addBlob(randomBytes(size64MiB))
	f.coldBase = randomBytes(coldBlobSize)
	config := f.addBlob([]byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`))
	f.manifest = buildManifest(config, f.blob4KiB, f.blob1MiB, f.blob64MiB)
	f.manifestDigest = digestOf(f.manifest)
	f.manifestEtag = `"` + f.manifestDigest + `"`
	f.srv = &fasthttp.Server{
		Handler:        f.serve,
		Name:           "fake-registry",
		ReadBufferSize: 16 << 10,
		Logger:         discardLogger{},
	}
	go func() {
		_ = f.srv.Serve(ln)
		close(f.done)
	}()
	return f, nil
}

// Close stops the server and checks that it stopped within a second.
func (f *fakeRegistry) Close() error {
	_ = f.ln.Close()
	select {
	case <-f.done:
		return nil
	case <-time.After(time.Second):
		return fmt.Errorf("fake registry wasn't stopped")
	}
}

func digestOf(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

func (f *fakeRegistry) addBlob(data []byte) *fakeBlob {
	d := digestOf(data)
	b := &fakeBlob{data: data, digest: d, etag: `"` + d + `"`}
	f.mu.Lock()
	f.blobs[b.digest] = b
	f.mu.Unlock()
	return b
}

func (f *fakeRegistry) removeBlob(b *fakeBlob) {
	f.mu.Lock()
	delete(f.blobs, b.digest)
	f.mu.Unlock()
}

// newColdBlob registers a coldBlobSize blob that no one has pulled yet.
func (f *fakeRegistry) newColdBlob() *fakeBlob {
	data := bytes.Clone(f.coldBase)
	seq := f.coldSeq.Add(1)
	for i := range 8 {
		data[i] = byte(seq >> (8 * i))
	}
	return f.addBlob(data)
}

func blobPath(b *fakeBlob) string { return "/v2/" + benchRepo + "/blobs/" + b.digest }

func buildManifest(config *fakeBlob, layers ...*fakeBlob) []byte {
	type descriptor struct {
		MediaType string `json:"mediaType"`
		Digest    string `json:"digest"`
		Size      int    `json:"size"`
	}
	m := struct {
		SchemaVersion int               `json:"schemaVersion"`
		MediaType     string            `json:"mediaType"`
		Config        descriptor        `json:"config"`
		Layers        []descriptor      `json:"layers"`
		Annotations   map[string]string `json:"annotations"`
	}{
		SchemaVersion: 2,
		MediaType:     oci.MediaTypeOCIManifest,
		Config:        descriptor{"application/vnd.oci.image.config.v1+json", config.digest, len(config.data)},
		Annotations: map[string]string{
			"org.opencontainers.image.created":  "2025-01-01T00:00:00Z",
			"org.opencontainers.image.source":   "https://github.com/docxy/docxy",
			"org.opencontainers.image.revision": "0123456789abcdef0123456789abcdef01234567",
		},
	}
	for _, l := range layers {
		m.Layers = append(m.Layers, descriptor{"application/vnd.oci.image.layer.v1.tar+gzip", l.digest, len(l.data)})
	}
	b, err := json.MarshalIndent(m, "", "   ")
	if err != nil {
		panic("BUG: cannot marshal the bench manifest: " + err.Error())
	}
	return b
}

var (
	fakeManifestPrefix = []byte("/v2/" + benchRepo + "/manifests/")
	fakeBlobPrefix     = []byte("/v2/" + benchRepo + "/blobs/")
)

// serve answers like Docker Hub minus auth: the headers a client sees, and some it must not.
func (f *fakeRegistry) serve(ctx *fasthttp.RequestCtx) {
	h := &ctx.Response.Header
	h.Set("Docker-Distribution-Api-Version", "registry/2.0")
	h.Set("Strict-Transport-Security", "max-age=31536000") // not on docxy's allowlist
	p := ctx.Path()
	switch {
	case string(p) == "/v2/":
		ctx.SetContentType("application/json")
		ctx.SetBodyString("{}")
	case bytes.HasPrefix(p, fakeManifestPrefix):
		ref := string(p[len(fakeManifestPrefix):])
		if ref != "latest" && ref != f.manifestDigest {
			f.notFound(ctx, oci.ErrorCodeManifestUnknown)
			return
		}
		h.SetContentType(oci.MediaTypeOCIManifest)
		h.Set("Docker-Content-Digest", f.manifestDigest)
		h.Set("Etag", f.manifestEtag)
		h.Set("Ratelimit-Limit", "100;w=21600")
		h.Set("Ratelimit-Remaining", "99;w=21600")
		h.Set("Docker-Ratelimit-Source", "127.0.0.1")
		ctx.Response.SetBodyRaw(f.manifest)
	case bytes.HasPrefix(p, fakeBlobPrefix):
		f.mu.RLock()
		b := f.blobs[string(p[len(fakeBlobPrefix):])]
		f.mu.RUnlock()
		if b == nil {
			f.notFound(ctx, oci.ErrorCodeBlobUnknown)
			return
		}
		if !ctx.IsHead() {
			b.gets.Add(1)
		}
		h.SetContentType("application/octet-stream")
		h.Set("Docker-Content-Digest", b.digest)
		h.Set("Etag", b.etag)
		h.Set("Cache-Control", "max-age=31536000")
		h.Set("Accept-Ranges", "bytes")
		ctx.Response.SetBodyRaw(b.data)
	default:
		f.notFound(ctx, oci.ErrorCodeNotFound)
	}
}

func (f *fakeRegistry) notFound(ctx *fasthttp.RequestCtx, code oci.ErrorCode) {
	ctx.SetStatusCode(fasthttp.StatusNotFound)
	ctx.SetContentType("application/json")
	ctx.SetBody(oci.ErrorBody(code, "not found"))
}

type discardLogger struct{}

func (discardLogger) Printf(string, ...any) {}
