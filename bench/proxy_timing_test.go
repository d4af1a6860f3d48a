package bench

import (
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// Benchmarks come in pairs (plus a Direct reference without any proxy): the same helper, the
// same fasthttp client and the same fake upstream; only the proxy differs. ns/op and allocs/op
// cover the whole process (client, proxy and upstream): subtract the Direct row to get the
// proxy's own share (see RESULTS.md).

// Client goroutines per GOMAXPROCS (b.SetParallelism): enough to keep both cores busy while
// requests wait on loopback round trips.
const (
	parallelismSmall = 8 // 16 connections on 2 cores
	parallelism1MiB  = 4
	parallelism64MiB = 1
	coldPullers      = 32 // ColdBlob32Concurrent: clients pulling the same cold blob at once
)

func BenchmarkDocxyManifestGet(b *testing.B)   { benchmarkManifestGet(b, startDocxyPassThrough) }
func BenchmarkNetHTTPManifestGet(b *testing.B) { benchmarkManifestGet(b, startNetHTTP) }
func BenchmarkDirectManifestGet(b *testing.B)  { benchmarkManifestGet(b, startDirect) }

func BenchmarkDocxyManifestHead(b *testing.B)   { benchmarkManifestHead(b, startDocxyPassThrough) }
func BenchmarkNetHTTPManifestHead(b *testing.B) { benchmarkManifestHead(b, startNetHTTP) }
func BenchmarkDirectManifestHead(b *testing.B)  { benchmarkManifestHead(b, startDirect) }

func BenchmarkDocxyBlob4KiB(b *testing.B) {
	benchmarkBlob(b, startDocxyPassThrough, upstreamReg.blob4KiB)
}
func BenchmarkNetHTTPBlob4KiB(b *testing.B) { benchmarkBlob(b, startNetHTTP, upstreamReg.blob4KiB) }
func BenchmarkDirectBlob4KiB(b *testing.B)  { benchmarkBlob(b, startDirect, upstreamReg.blob4KiB) }

func BenchmarkDocxyBlob1MiB(b *testing.B) {
	benchmarkBlob(b, startDocxyPassThrough, upstreamReg.blob1MiB)
}
func BenchmarkNetHTTPBlob1MiB(b *testing.B) { benchmarkBlob(b, startNetHTTP, upstreamReg.blob1MiB) }
func BenchmarkDirectBlob1MiB(b *testing.B)  { benchmarkBlob(b, startDirect, upstreamReg.blob1MiB) }

func BenchmarkDocxyBlob64MiB(b *testing.B) {
	benchmarkBlob(b, startDocxyPassThrough, upstreamReg.blob64MiB)
}
func BenchmarkNetHTTPBlob64MiB(b *testing.B) { benchmarkBlob(b, startNetHTTP, upstreamReg.blob64MiB) }
func BenchmarkDirectBlob64MiB(b *testing.B)  { benchmarkBlob(b, startDirect, upstreamReg.blob64MiB) }

func BenchmarkDocxyColdBlob32Concurrent(b *testing.B) {
	benchmarkColdBlobConcurrent(b, startDocxyPassThrough, coldPullers)
}

func BenchmarkNetHTTPColdBlob32Concurrent(b *testing.B) {
	benchmarkColdBlobConcurrent(b, startNetHTTP, coldPullers)
}

// BenchmarkDocxyColdBlob32ConcurrentCache is the cache variant: the 32 clients should cause one
// upstream fetch (upstream-fetches/op = 1) and all stream from it. Its net/http pair is
// BenchmarkNetHTTPColdBlob32Concurrent: the baseline has no cache, so each client fetches.
func BenchmarkDocxyColdBlob32ConcurrentCache(b *testing.B) {
	benchmarkColdBlobConcurrent(b, startDocxyCache, coldPullers)
}

// Cache hits: docxy with its cache warmed, against net/http serving the same bytes from memory
// (manifest) or from a file with http.ServeContent (blob).
func BenchmarkDocxyManifestCacheHit(b *testing.B)   { benchmarkManifestCacheHit(b, startDocxyCache) }
func BenchmarkNetHTTPManifestCacheHit(b *testing.B) { benchmarkManifestCacheHit(b, startNetHTTPCache) }

func BenchmarkDocxyBlobCacheHit1MiB(b *testing.B) {
	benchmarkBlobCacheHit(b, startDocxyCache, upstreamReg.blob1MiB, parallelism1MiB)
}

func BenchmarkNetHTTPBlobCacheHit1MiB(b *testing.B) {
	benchmarkBlobCacheHit(b, startNetHTTPCache, upstreamReg.blob1MiB, parallelism1MiB)
}

func BenchmarkDocxyBlobCacheHit64MiB(b *testing.B) {
	benchmarkBlobCacheHit(b, startDocxyCache, upstreamReg.blob64MiB, parallelism64MiB)
}

func BenchmarkNetHTTPBlobCacheHit64MiB(b *testing.B) {
	benchmarkBlobCacheHit(b, startNetHTTPCache, upstreamReg.blob64MiB, parallelism64MiB)
}

func benchmarkManifestGet(b *testing.B, start startFunc) {
	benchmarkPull(b, start, fasthttp.MethodGet, manifestPath, int64(len(upstreamReg.manifest)), parallelismSmall, nil)
}

func benchmarkManifestHead(b *testing.B, start startFunc) {
	benchmarkPull(b, start, fasthttp.MethodHead, manifestPath, int64(len(upstreamReg.manifest)), parallelismSmall, nil)
}

func benchmarkBlob(b *testing.B, start startFunc, blob *fakeBlob) {
	parallelism := parallelismSmall
	switch {
	case len(blob.data) >= size64MiB:
		parallelism = parallelism64MiB
	case len(blob.data) >= size1MiB:
		parallelism = parallelism1MiB
	}
	benchmarkPull(b, start, fasthttp.MethodGet, blobPath(blob), int64(len(blob.data)), parallelism, nil)
}

func benchmarkManifestCacheHit(b *testing.B, start startFunc) {
	benchmarkPull(b, start, fasthttp.MethodGet, manifestPath, int64(len(upstreamReg.manifest)), parallelismSmall, warmCache)
}

func benchmarkBlobCacheHit(b *testing.B, start startFunc, blob *fakeBlob, parallelism int) {
	benchmarkPull(b, start, fasthttp.MethodGet, blobPath(blob), int64(len(blob.data)), parallelism, warmCache)
}

// warmCache pulls until the target answers X-Cache: HIT (docxy commits a blob to its cache just
// after the first client has it).
func warmCache(p *puller) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		if err := p.pull(); err != nil {
			return err
		}
		if p.lastCache == "HIT" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no cache hit after 10s: X-Cache is %q", p.lastCache)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// benchmarkPull runs b.RunParallel with parallelism goroutines per GOMAXPROCS, each pulling path
// over its own connection and checking the status and the body size. warm, when set, runs once
// before the timer starts (after a first pull that discovers the upstream's auth).
func benchmarkPull(b *testing.B, start startFunc, method, path string, size int64, parallelism int, warm func(*puller) error) {
	s := start(b)
	defer stopServer(b, s)
	c := newClient(s.addr)
	defer c.CloseIdleConnections()

	n := parallelism * runtime.GOMAXPROCS(0)
	pullers := make([]*puller, n)
	for i := range pullers {
		pullers[i] = newPuller(c, method, path, size)
		defer pullers[i].release()
	}
	if err := pullers[0].pull(); err != nil {
		b.Fatal(err)
	}
	if warm != nil {
		if err := warm(pullers[0]); err != nil {
			b.Fatal(err)
		}
	}
	if method == fasthttp.MethodGet {
		b.SetBytes(size)
	}
	var next atomic.Int32
	b.ReportAllocs()
	b.SetParallelism(parallelism)
	b.ResetTimer()
	cpu := startCPU()
	b.RunParallel(func(pb *testing.PB) {
		p := pullers[int(next.Add(1)-1)%n]
		for pb.Next() {
			if err := p.pull(); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	cpu.report(b)
}

// benchmarkColdBlobConcurrent measures clients pulling one blob nobody has pulled before, all at
// once: each op registers a fresh coldBlobSize blob upstream (timer stopped), then clients
// goroutines GET it and the op ends when the last one has every byte. It reports how many GETs
// the upstream served per op: clients for a pass-through proxy, 1 for a single-flight cache.
// (An op is a group of concurrent pulls of one new digest, which b.RunParallel cannot express.)
func benchmarkColdBlobConcurrent(b *testing.B, start startFunc, clients int) {
	s := start(b)
	defer stopServer(b, s)
	c := newClient(s.addr)
	defer c.CloseIdleConnections()

	pullers := make([]*puller, clients)
	for i := range pullers {
		pullers[i] = newPuller(c, fasthttp.MethodGet, blobPath(upstreamReg.blob4KiB), size4KiB)
		defer pullers[i].release()
		if err := pullers[i].pull(); err != nil { // discovers auth and opens the connections
			b.Fatal(err)
		}
	}
	var fetches int64
	errs := make(chan error, clients)
	b.SetBytes(int64(clients) * coldBlobSize)
	b.ReportAllocs()
	b.ResetTimer()
	cpu := startCPU()
	for range b.N {
		b.StopTimer()
		blob := upstreamReg.newColdBlob()
		for _, p := range pullers {
			p.setPath(blobPath(blob), coldBlobSize)
		}
		b.StartTimer()

		var wg sync.WaitGroup
		for _, p := range pullers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := p.pull(); err != nil {
					errs <- err
				}
			}()
		}
		wg.Wait()

		b.StopTimer()
		fetches += blob.gets.Load()
		upstreamReg.removeBlob(blob)
		select {
		case err := <-errs:
			b.Fatal(err)
		default:
		}
		b.StartTimer()
	}
	b.StopTimer()
	cpu.report(b) // includes making the fresh blobs (one copy and SHA-256 of coldBlobSize per op)
	b.ReportMetric(float64(fetches)/float64(b.N), "upstream-fetches/op")
}

// cpuMeter measures the CPU time (user + system) the whole test process spends: on this busy
// 2-core machine CPU per op varies less than wall time per op when other processes compete.
type cpuMeter struct{ start time.Duration }

func startCPU() cpuMeter { return cpuMeter{start: processCPU()} }

// report adds cpu-ns/op: process CPU (client, proxy and upstream together) per op.
func (m cpuMeter) report(b *testing.B) {
	b.ReportMetric(float64(processCPU()-m.start)/float64(b.N), "cpu-ns/op")
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func stopServer(b *testing.B, s *server) {
	if err := s.stop(); err != nil {
		b.Fatal(err)
	}
}

// newClient returns the client used for every target. It is fasthttp's HostClient because it
// allocates nothing per request and costs the least CPU, so the differences measured are the
// proxies'. Bodies are streamed, as a registry client does with layers.
func newClient(addr string) *fasthttp.HostClient {
	return &fasthttp.HostClient{
		Addr:                addr,
		Name:                "docker/27.5.1 go/go1.22.10 (bench)",
		MaxConns:            1024,
		MaxIdleConnDuration: time.Minute,
		ReadBufferSize:      16 << 10,
		StreamResponseBody:  true,
	}
}

// puller pulls one path repeatedly and checks each answer. It is used by one goroutine at a time.
type puller struct {
	c         *fasthttp.HostClient
	req       *fasthttp.Request
	resp      *fasthttp.Response
	buf       []byte
	want      int64
	head      bool
	lastCache string // X-Cache of the last answer
}

func newPuller(c *fasthttp.HostClient, method, path string, want int64) *puller {
	p := &puller{
		c:    c,
		req:  fasthttp.AcquireRequest(),
		resp: fasthttp.AcquireResponse(),
		buf:  make([]byte, 64<<10),
		head: method == fasthttp.MethodHead,
	}
	p.req.Header.SetMethod(method)
	p.req.Header.Set(fasthttp.HeaderAccept, dockerAccept)
	p.setPath(path, want)
	return p
}

func (p *puller) setPath(path string, want int64) {
	p.req.SetRequestURI(path)
	p.req.Header.SetHost("127.0.0.1")
	p.want = want
}

func (p *puller) release() {
	fasthttp.ReleaseRequest(p.req)
	fasthttp.ReleaseResponse(p.resp)
}

var errShortBody = errors.New("bench: body shorter than expected")

// pull sends the request and reads the whole answer, returning an error for any status but 200
// or a body (or, for HEAD, a Content-Length) of the wrong size.
func (p *puller) pull() error {
	if err := p.c.Do(p.req, p.resp); err != nil {
		return fmt.Errorf("cannot pull %s: %w", p.req.URI().Path(), err)
	}
	defer func() { _ = p.resp.CloseBodyStream() }()
	if code := p.resp.StatusCode(); code != fasthttp.StatusOK {
		return fmt.Errorf("unexpected status code for %s: got %d; want %d", p.req.URI().Path(), code, fasthttp.StatusOK)
	}
	if v := p.resp.Header.Peek("X-Cache"); string(v) != p.lastCache {
		p.lastCache = string(v) // allocates only when the value changes
	}
	var n int64
	switch r := p.resp.BodyStream(); {
	case p.head:
		n = int64(p.resp.Header.ContentLength())
	case r != nil:
		for {
			m, err := r.Read(p.buf)
			n += int64(m)
			if err == io.EOF {
				break
			}
			if err != nil {
				return fmt.Errorf("cannot read the body of %s after %d bytes: %w", p.req.URI().Path(), n, err)
			}
		}
	default:
		n = int64(len(p.resp.Body()))
	}
	if n != p.want {
		return fmt.Errorf("unexpected body size for %s: got %d; want %d: %w", p.req.URI().Path(), n, p.want, errShortBody)
	}
	return nil
}
