package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"testing"
	"time"
)

const rangeStart = 1000

// TestBlobRangeAndHead: Range resumes and HEAD answers carry exact lengths and digests, with
// redirects off and on.
func TestBlobRangeAndHead(t *testing.T) {
	w := getWorld(t)
	wantTail := fileHash(t, blobPath(w.reg.Root, w.seed.BigLayer), rangeStart)
	for _, up := range []struct {
		name string
		reg  *registry
		cdn  bool
	}{{"direct", w.reg, false}, {"cdn", w.regCDN, true}} {
		t.Run(up.name, func(t *testing.T) {
			m := startMirror(t, mirrorOpts{Upstream: up.reg.URL})
			tokMark, cdnMark := w.tokens.Mark(), w.cdn.Mark()
			c := newRegClient(m.URL, "", "", nil)
			ctx := context.Background()
			big := "/v2/" + w.seed.Big.Repo + "/blobs/" + w.seed.BigLayer
			scope := pullScope(w.seed.Big.Repo)

			t.Run("HEAD blob", func(t *testing.T) {
				resp := mustDo(t, c, ctx, http.MethodHead, big, scope, nil)
				resp.Body.Close()
				expectStatus(t, resp, http.StatusOK)
				expectHeader(t, resp, "Content-Length", strconv.FormatInt(w.seed.BigLayerSize, 10))
				expectHeader(t, resp, "Docker-Content-Digest", w.seed.BigLayer)
			})

			t.Run("GET blob range", func(t *testing.T) {
				hdr := http.Header{"Range": {fmt.Sprintf("bytes=%d-", rangeStart)}}
				resp := mustDo(t, c, ctx, http.MethodGet, big, scope, hdr)
				defer resp.Body.Close()
				expectStatus(t, resp, http.StatusPartialContent)
				wantLen := w.seed.BigLayerSize - rangeStart
				expectHeader(t, resp, "Content-Range", fmt.Sprintf("bytes %d-%d/%d", rangeStart, w.seed.BigLayerSize-1, w.seed.BigLayerSize))
				expectHeader(t, resp, "Content-Length", strconv.FormatInt(wantLen, 10))
				h := sha256.New()
				start := time.Now()
				n, err := io.Copy(h, resp.Body)
				if err != nil {
					t.Fatalf("reading the range after %d bytes: %v", n, err)
				}
				if n != wantLen || hex.EncodeToString(h.Sum(nil)) != wantTail {
					t.Errorf("range body: got %d bytes (sha256 %x); want %d bytes equal to the seeded blob's tail", n, h.Sum(nil), wantLen)
				}
				t.Logf("range: %d bytes in %s", n, time.Since(start).Round(time.Millisecond))
				if up.cdn {
					ranged := false
					for _, h := range w.cdn.Since(cdnMark) {
						ranged = ranged || (h.Range == hdr.Get("Range") && h.Status == http.StatusPartialContent)
					}
					if !ranged {
						t.Errorf("CDN saw no %q request answered 206; docxy must pass the Range to the redirect target", hdr.Get("Range"))
					}
				}
			})

			t.Run("GET small blob", func(t *testing.T) {
				for d, size := range w.seed.Hello.Blobs {
					// The client offers gzip: the bytes must still come back unaltered.
					hdr := http.Header{"Accept-Encoding": {"gzip"}}
					resp := mustDo(t, c, ctx, http.MethodGet, "/v2/"+w.seed.Hello.Repo+"/blobs/"+d, pullScope(w.seed.Hello.Repo), hdr)
					body, err := io.ReadAll(resp.Body)
					resp.Body.Close()
					expectStatus(t, resp, http.StatusOK)
					expectHeader(t, resp, "Content-Length", strconv.FormatInt(size, 10))
					expectHeader(t, resp, "Content-Encoding", "")
					expectHeader(t, resp, "Docker-Content-Digest", d)
					if err != nil || int64(len(body)) != size || sha256Digest(body) != d {
						t.Errorf("GET blob %s: %d bytes, err %v; want %d bytes hashing to the digest", d, len(body), err, size)
					}
				}
			})

			t.Run("HEAD manifest", func(t *testing.T) {
				for _, img := range []seededImage{w.seed.Hello, w.seed.Alpine} {
					for _, ref := range []string{img.Tag, img.Digest} {
						hdr := http.Header{"Accept": {manifestAccept}}
						resp := mustDo(t, c, ctx, http.MethodHead, "/v2/"+img.Repo+"/manifests/"+ref, pullScope(img.Repo), hdr)
						resp.Body.Close()
						expectStatus(t, resp, http.StatusOK)
						expectHeader(t, resp, "Content-Length", strconv.Itoa(len(img.Manifest)))
						expectHeader(t, resp, "Docker-Content-Digest", img.Digest)
						expectHeader(t, resp, "Content-Type", string(img.MediaType))
					}
				}
			})

			t.Run("GET manifest", func(t *testing.T) {
				hdr := http.Header{"Accept": {manifestAccept}}
				img := w.seed.Alpine
				resp := mustDo(t, c, ctx, http.MethodGet, "/v2/"+img.Repo+"/manifests/"+img.Tag, pullScope(img.Repo), hdr)
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				expectStatus(t, resp, http.StatusOK)
				if err != nil || sha256Digest(body) != img.Digest {
					t.Errorf("GET manifest: body hashes to %s (err %v); want %s", sha256Digest(body), err, img.Digest)
				}
				expectHeader(t, resp, "Content-Length", strconv.Itoa(len(img.Manifest)))
				expectHeader(t, resp, "Docker-Content-Digest", img.Digest)
			})

			t.Run("GET manifest with several Accept lines", func(t *testing.T) {
				// dockerd 20.10 and containerd send one Accept header line per media type.
				img := w.seed.Hello
				hdr := http.Header{"Accept": {
					"application/vnd.docker.distribution.manifest.v2+json",
					"application/vnd.docker.distribution.manifest.list.v2+json",
					"application/vnd.oci.image.index.v1+json",
					"application/vnd.oci.image.manifest.v1+json",
				}}
				for _, method := range []string{http.MethodHead, http.MethodGet} {
					resp := mustDo(t, c, ctx, method, "/v2/"+img.Repo+"/manifests/"+img.Tag, pullScope(img.Repo), hdr)
					body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						t.Errorf("%s /v2/%s/manifests/%s with Accept lines %q: got %d %s; want 200 with the manifest list",
							method, img.Repo, img.Tag, hdr["Accept"], resp.StatusCode, body)
						continue
					}
					expectHeader(t, resp, "Docker-Content-Digest", img.Digest)
					expectHeader(t, resp, "Content-Type", string(img.MediaType))
				}
			})

			for _, r := range c.realms {
				if r != m.URL+"/auth/token" {
					t.Errorf("client was sent to realm %q; want %q", r, m.URL+"/auth/token")
				}
			}
			assertOnlyDocxy(t, w, tokMark, cdnMark, up.cdn)
		})
	}
}

// TestUpstreamDiesMidBlob: when the upstream connection breaks during a blob, the client sees an
// error (or, if docxy resumes upstream, the complete and correct blob), never a clean short 200.
func TestUpstreamDiesMidBlob(t *testing.T) {
	w := getWorld(t)
	const cutAt = 4 << 20

	t.Run("registry connection cut", func(t *testing.T) {
		px, err := startTCPProxy(w.reg.Host)
		if err != nil {
			t.Fatal(err)
		}
		defer px.Close()
		m := startMirror(t, mirrorOpts{Upstream: "http://" + px.Addr})
		checkBrokenBlob(t, w, m, func() { px.Arm(cutAt) }, nil)
		if px.Cuts() != 1 {
			t.Errorf("proxy cuts: got %d; want 1", px.Cuts())
		}
	})

	t.Run("cdn connection cut", func(t *testing.T) {
		m := startMirror(t, mirrorOpts{Upstream: w.regCDN.URL})
		checkBrokenBlob(t, w, m, func() { w.cdn.CutNext(cutAt) }, nil)
	})

	t.Run("registry killed", func(t *testing.T) {
		reg, err := newRegistry(needTool(t, "registry"), t.TempDir(), registryOpts{Name: "killed", Root: w.reg.Root,
			TokenRealm: w.tokens.URL, TokenBundle: w.tokens.CertBundle})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { reg.Stop() })
		m := startMirror(t, mirrorOpts{Upstream: reg.URL})
		checkBrokenBlob(t, w, m, nil, func() { reg.Kill() })

		// While the upstream is down, docxy answers with an error status, and it recovers when
		// the registry is back.
		c := newRegClient(m.URL, "", "", nil)
		ctx := context.Background()
		manifest := "/v2/" + w.seed.Hello.Repo + "/manifests/" + w.seed.Hello.Digest
		hdr := http.Header{"Accept": {manifestAccept}}
		if resp, err := c.do(ctx, http.MethodGet, manifest, pullScope(w.seed.Hello.Repo), hdr); err == nil {
			resp.Body.Close()
			if resp.StatusCode < 500 {
				t.Errorf("GET manifest with the upstream down: got %d; want 5xx", resp.StatusCode)
			}
		}
		if err := reg.Start(); err != nil {
			t.Fatal(err)
		}
		resp := mustDo(t, c, ctx, http.MethodGet, manifest, pullScope(w.seed.Hello.Repo), hdr)
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		expectStatus(t, resp, http.StatusOK)
		if sha256Digest(body) != w.seed.Hello.Digest {
			t.Errorf("after the registry restarted: manifest hashes to %s; want %s", sha256Digest(body), w.seed.Hello.Digest)
		}
	})
}

// checkBrokenBlob fetches the big layer through m. arm runs before the GET; kill runs after the
// client has read the first MiB. The outcome must be an error or the full, correct blob.
func checkBrokenBlob(t *testing.T, w *testWorld, m *mirror, arm, kill func()) {
	t.Helper()
	c := newRegClient(m.URL, "", "", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	path := "/v2/" + w.seed.Big.Repo + "/blobs/" + w.seed.BigLayer
	scope := pullScope(w.seed.Big.Repo)
	// Warm up the token and upstream connections before breaking anything.
	resp := mustDo(t, c, ctx, http.MethodHead, path, scope, nil)
	resp.Body.Close()
	expectStatus(t, resp, http.StatusOK)
	if arm != nil {
		arm()
	}
	resp, err := c.do(ctx, http.MethodGet, path, scope, nil)
	if err != nil {
		t.Logf("GET failed before a response: %v (acceptable: the client sees an error)", err)
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Logf("GET answered %d (acceptable: the client sees an error)", resp.StatusCode)
		return
	}
	h := sha256.New()
	n, err := io.CopyN(h, resp.Body, 1<<20)
	if err == nil && kill != nil {
		kill()
	}
	if err == nil {
		var m int64
		m, err = io.Copy(h, resp.Body)
		n += m
	}
	got := "sha256:" + hex.EncodeToString(h.Sum(nil))
	switch {
	case err != nil:
		t.Logf("client saw an error after %d of %d bytes: %v", n, w.seed.BigLayerSize, err)
	case n == w.seed.BigLayerSize && got == w.seed.BigLayer:
		t.Logf("docxy delivered the complete blob despite the upstream failure (resumed upstream)")
	default:
		t.Errorf("GET %s: clean 200 with %d of %d bytes (sha256 %s) and no error; want the connection aborted", path, n, w.seed.BigLayerSize, got)
	}
	if errors.Is(err, io.EOF) {
		t.Errorf("body ended with io.EOF after %d bytes; a short body must not look complete", n)
	}
}

func mustDo(t *testing.T, c *regClient, ctx context.Context, method, path, scope string, hdr http.Header) *http.Response {
	t.Helper()
	resp, err := c.do(ctx, method, path, scope, hdr)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	return resp
}

func expectStatus(t *testing.T, resp *http.Response, want int) {
	t.Helper()
	if resp.StatusCode != want {
		t.Errorf("%s %s: unexpected status code: got %d; want %d", resp.Request.Method, resp.Request.URL.Path, resp.StatusCode, want)
	}
}

func expectHeader(t *testing.T, resp *http.Response, key, want string) {
	t.Helper()
	if got := resp.Header.Get(key); got != want {
		t.Errorf("%s %s: %s: got %q; want %q", resp.Request.Method, resp.Request.URL.Path, key, got, want)
	}
}

// fileHash returns the hex sha256 of the file from offset on.
func fileHash(t *testing.T, path string, offset int64) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}
