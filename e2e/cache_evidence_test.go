package e2e

// Evidence for the cache (issue 3), with a real registry upstream and real clients: one upstream
// fill shared by a crowd, tag revalidation by HEAD, stale serving while the upstream is down, crash
// safety, the disk bound, and private content that never enters the cache. Helpers are in
// cache_evidence_tap_test.go.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/types"
)

// TestCacheConcurrentColdPull: 32 clients GET the same cold 256 MiB layer at once while the
// upstream sends it slowly. The upstream sends the blob once, every client streams it as it
// arrives (first byte before the upstream has finished), all bodies hash to the digest, and a
// later GET is a cache hit.
func TestCacheConcurrentColdPull(t *testing.T) {
	const (
		clients = 32
		rate    = 64 << 20 // bytes/s: the 256 MiB fill takes at least 4 s
	)
	w := getWorld(t)
	tap := startUpstreamTap(t, w.reg.URL)
	dir := filepath.Join(t.TempDir(), "cache")
	m := startMirror(t, mirrorOpts{Upstream: tap.URL, ExtraTOML: cacheTOML(dir, "1GiB", "")})
	repo, layer, size := w.seed.Big.Repo, w.seed.BigLayer, w.seed.BigLayerSize
	path := "/v2/" + repo + "/blobs/" + layer
	scope := pullScope(repo)
	c := newRegClient(m.URL, "", "", &http.Transport{Proxy: nil, DisableCompression: true, ResponseHeaderTimeout: time.Minute})
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()

	// Take the pull token once, so that the crowd asks for the blob at the same moment.
	resp := mustDo(t, c, ctx, http.MethodHead, "/v2/"+repo+"/manifests/"+w.seed.Big.Tag, scope, http.Header{"Accept": {manifestAccept}})
	resp.Body.Close()
	expectStatus(t, resp, http.StatusOK)

	type result struct {
		status   int
		xcache   string
		length   int64
		firstSeq int64 // cacheClock when the first body byte arrived
		firstAt  time.Duration
		digest   string
		n        int64
		err      error
		took     time.Duration
	}
	results := make([]result, clients)
	mark := tap.Mark()
	tap.SetRate(rate)
	gate := make(chan struct{})
	var wg sync.WaitGroup
	var t0 time.Time
	for i := range results {
		wg.Go(func() {
			r := &results[i]
			<-gate
			resp, err := c.do(ctx, http.MethodGet, path, scope, nil)
			if err != nil {
				r.err = err
				return
			}
			defer resp.Body.Close()
			r.status, r.xcache, r.length = resp.StatusCode, resp.Header.Get("X-Cache"), resp.ContentLength
			buf := make([]byte, 256<<10)
			n, err := resp.Body.Read(buf)
			for n == 0 && err == nil {
				n, err = resp.Body.Read(buf)
			}
			if n > 0 {
				r.firstSeq, r.firstAt = cacheTick(), time.Since(t0)
			}
			h := sha256.New()
			h.Write(buf[:n])
			r.n = int64(n)
			if err == nil {
				var more int64
				more, err = io.CopyBuffer(h, resp.Body, buf)
				r.n += more
			} else if err == io.EOF {
				err = nil
			}
			r.digest, r.err = "sha256:"+hex.EncodeToString(h.Sum(nil)), err
			r.took = time.Since(t0)
		})
	}
	t0 = time.Now()
	close(gate)
	wg.Wait()
	tap.SetRate(0)

	fills := tap.Matching(mark, http.MethodGet, path)
	var upstreamBytes int64
	for _, r := range tap.Since(mark) {
		if r.Path == path {
			upstreamBytes += r.Bytes
		}
	}
	t.Logf("upstream: %d GET of the blob, %d body bytes for it (blob is %d bytes)", len(fills), upstreamBytes, size)
	if len(fills) != 1 {
		t.Fatalf("unexpected upstream GETs of %s: got %d; want 1 (one fill shared by %d clients)", path, len(fills), clients)
	}
	fill := fills[0]
	if upstreamBytes > size {
		t.Errorf("upstream sent %d bytes of the blob; want at most one transfer (%d)", upstreamBytes, size)
	}
	if !fill.Complete || fill.Bytes != size {
		t.Errorf("upstream fill: complete %v, %d bytes; want the whole %d-byte blob", fill.Complete, fill.Bytes, size)
	}
	var firstMin, firstMax, tookMax time.Duration
	firstMin = time.Hour
	for i, r := range results {
		switch {
		case r.err != nil:
			t.Errorf("client %d: %v after %d bytes", i, r.err, r.n)
			continue
		case r.status != http.StatusOK || r.length != size:
			t.Errorf("client %d: status %d, Content-Length %d; want 200, %d", i, r.status, r.length, size)
		case r.xcache != "MISS":
			t.Errorf("client %d: X-Cache %q; want MISS (served from the fill in progress)", i, r.xcache)
		}
		if r.n != size || r.digest != layer {
			t.Errorf("client %d: got %d bytes hashing to %s; want %d bytes hashing to %s", i, r.n, r.digest, size, layer)
		}
		if r.firstSeq == 0 || r.firstSeq > fill.DoneSeq {
			t.Errorf("client %d: first body byte at event %d, upstream finished sending at event %d; want the first byte before the upstream finished", i, r.firstSeq, fill.DoneSeq)
		}
		if r.firstSeq < fill.StartSeq {
			t.Errorf("client %d: first body byte at event %d, before the upstream request (event %d)", i, r.firstSeq, fill.StartSeq)
		}
		firstMin, firstMax, tookMax = min(firstMin, r.firstAt), max(firstMax, r.firstAt), max(tookMax, r.took)
	}
	t.Logf("%d clients: first bytes %s..%s after the start, all done after %s; upstream fill took %s at %d MiB/s",
		clients, firstMin.Round(time.Millisecond), firstMax.Round(time.Millisecond), tookMax.Round(time.Millisecond),
		fill.Took.Round(time.Millisecond), rate>>20)

	// Once the fill is committed, the blob comes from disk.
	st := waitCacheIdle(t, m)
	resp = mustDo(t, c, ctx, http.MethodGet, path, scope, nil)
	digest, n, err := cacheReadBlob(resp.Body)
	resp.Body.Close()
	expectStatus(t, resp, http.StatusOK)
	expectHeader(t, resp, "X-Cache", "HIT")
	if err != nil || n != size || digest != layer {
		t.Errorf("33rd GET: %d bytes hashing to %s (err %v); want %d bytes hashing to %s", n, digest, err, size, layer)
	}
	if got := len(tap.Matching(mark, http.MethodGet, path)); got != 1 {
		t.Errorf("upstream GETs of the blob after the 33rd GET: got %d; want still 1", got)
	}
	files := cacheBlobFiles(t, dir)
	if st.Blobs.Entries != 1 || st.Blobs.Bytes != size || cacheSumSizes(files) != size || len(cacheFilesFor(files, layer)) != 1 {
		t.Errorf("cache after the crowd: stats %d entries / %d bytes, disk %v; want the one %d-byte blob", st.Blobs.Entries, st.Blobs.Bytes, files, size)
	}
}

// TestCacheSecondPullRevalidatesTagWithHEAD: crane pulls a multi-platform image twice through a
// mirror with manifest_ttl = 1s, the second time after the TTL. The second pull fetches no blob
// and no manifest upstream: the tag is revalidated with HEAD only.
func TestCacheSecondPullRevalidatesTagWithHEAD(t *testing.T) {
	const ttl = time.Second
	w := getWorld(t)
	tap := startUpstreamTap(t, w.reg.URL)
	m := startMirror(t, mirrorOpts{Upstream: tap.URL, ExtraTOML: cacheTOML(filepath.Join(t.TempDir(), "cache"), "", ttl.String())})
	crane := newCrane(t, "", "")
	for _, img := range []seededImage{w.seed.Alpine, w.seed.Hello} {
		t.Run(img.Repo, func(t *testing.T) {
			ref := m.Host + "/" + img.Ref()
			tagPath := "/v2/" + img.Repo + "/manifests/" + img.Tag
			pull := func() {
				t.Helper()
				dir := t.TempDir()
				if _, err := crane.run(t, clientTimeout, "pull", "--format=oci", ref, dir); err != nil {
					t.Fatal(err)
				}
				checkLayout(t, dir, img)
			}
			mark := tap.Mark()
			pull()
			perBlob := map[string]int{}
			for _, r := range tap.Since(mark) {
				if r.Method == http.MethodGet && strings.Contains(r.Path, "/blobs/") {
					perBlob[r.Path[strings.LastIndexByte(r.Path, '/')+1:]]++
				}
			}
			for d := range img.Blobs {
				if perBlob[d] != 1 {
					t.Errorf("first pull: blob %s fetched upstream %d times; want 1", d, perBlob[d])
				}
			}
			logTap(t, "first pull", tap.Since(mark))

			waitCacheIdle(t, m)
			time.Sleep(ttl + 200*time.Millisecond) // the tag entry is now due for revalidation
			mark = tap.Mark()
			pull()
			second := tap.Since(mark)
			logTap(t, "second pull", second)
			heads := 0
			for _, r := range second {
				switch {
				case r.Method == http.MethodGet && strings.Contains(r.Path, "/blobs/"):
					t.Errorf("second pull: upstream blob GET %s; want none (blobs are cached)", r.Path)
				case r.Method == http.MethodGet && r.Path == tagPath:
					t.Errorf("second pull: upstream manifest GET by tag %s; want the tag revalidated with HEAD only", r.Path)
				case r.Method == http.MethodGet && strings.Contains(r.Path, "/manifests/"):
					t.Errorf("second pull: upstream manifest GET %s; want none (manifests by digest are cached)", r.Path)
				case r.Method == http.MethodHead && r.Path == tagPath:
					heads++
				}
			}
			if heads == 0 {
				t.Errorf("second pull after the TTL: no upstream HEAD %s; want the tag revalidated", tagPath)
			}
		})
	}
}

// TestCacheRestartKeepsManifests: docxy stopped with SIGTERM saves its manifest cache; the next
// process on the same cache directory pulls the image again with one upstream HEAD per tag and
// no GET at all (Docker Hub counts GETs of manifests against the pull limit, not HEADs).
func TestCacheRestartKeepsManifests(t *testing.T) {
	const ttl = time.Second
	w := getWorld(t)
	tap := startUpstreamTap(t, w.reg.URL)
	dir := filepath.Join(t.TempDir(), "cache")
	opts := mirrorOpts{Name: "restart-1", Upstream: tap.URL, ExtraTOML: cacheTOML(dir, "", ttl.String())}
	img := w.seed.Alpine
	tagPath := "/v2/" + img.Repo + "/manifests/" + img.Tag
	crane := newCrane(t, "", "")
	pull := func(m *mirror) {
		t.Helper()
		out := t.TempDir()
		if _, err := crane.run(t, clientTimeout, "pull", "--format=oci", m.Host+"/"+img.Ref(), out); err != nil {
			t.Fatal(err)
		}
		checkLayout(t, out, img)
	}

	first := startMirror(t, opts)
	pull(first)
	waitCacheIdle(t, first)
	if err := first.Stop(); err != nil {
		t.Fatal(err)
	}
	if log := first.proc.LogTail(20); !strings.Contains(log, "manifest cache saved") {
		t.Fatalf("docxy did not save its manifest cache at SIGTERM; log tail:\n%s", log)
	}

	opts.Name = "restart-2"
	second := startMirror(t, opts)
	time.Sleep(ttl + 200*time.Millisecond) // every tag restored is due for revalidation
	mark := tap.Mark()
	pull(second)
	reqs := tap.Since(mark)
	logTap(t, "pull after the restart", reqs)
	heads := 0
	for _, r := range reqs {
		switch {
		case r.Method == http.MethodGet && (strings.Contains(r.Path, "/blobs/") || strings.Contains(r.Path, "/manifests/")):
			t.Errorf("pull after the restart: upstream GET %s; want none (manifests restored, blobs on disk)", r.Path)
		case r.Method == http.MethodHead && r.Path == tagPath:
			heads++
		}
	}
	if heads == 0 {
		t.Errorf("pull after the restart: no upstream HEAD %s; want the restored tag revalidated", tagPath)
	}

	// Restarted while the registry is down, docxy still knows its auth challenge (saved with the
	// manifests) and serves the cached image: the token comes from the token server, which is up.
	waitCacheIdle(t, second)
	if err := second.Stop(); err != nil {
		t.Fatal(err)
	}
	tap.srv.Close()
	opts.Name = "restart-3"
	third := startMirror(t, opts)
	pull(third)
}

func logTap(t *testing.T, what string, reqs []tapRequest) {
	t.Helper()
	count := map[string]int{}
	var bytes int64
	for _, r := range reqs {
		kind := "other"
		switch {
		case strings.Contains(r.Path, "/blobs/"):
			kind = "blob"
		case strings.HasSuffix(r.Path, "/manifests/latest"):
			kind = "manifest-by-tag"
		case strings.Contains(r.Path, "/manifests/"):
			kind = "manifest-by-digest"
		}
		count[r.Method+" "+kind]++
		bytes += r.Bytes
	}
	keys := make([]string, 0, len(count))
	for k := range count {
		keys = append(keys, fmt.Sprintf("%s=%d", k, count[k]))
	}
	sort.Strings(keys)
	t.Logf("%s: upstream requests %v, %d body bytes", what, keys, bytes)
}

// TestCacheUpstreamStopped: after a cached pull the registry process is stopped. The cached image
// still pulls with crane; an uncached one gets a registry JSON error, UNAVAILABLE with a 5xx;
// after the registry restarts, the uncached image pulls.
func TestCacheUpstreamStopped(t *testing.T) {
	w := getWorld(t)
	// A registry of our own over the shared storage, so that stopping it disturbs no other test.
	reg, err := newRegistry(needTool(t, "registry"), t.TempDir(), registryOpts{Name: "cache-stopped", Root: w.reg.Root,
		TokenRealm: w.tokens.URL, TokenBundle: w.tokens.CertBundle})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Stop() })
	const ttl = time.Second
	m := startMirror(t, mirrorOpts{Upstream: reg.URL, ExtraTOML: cacheTOML(filepath.Join(t.TempDir(), "cache"), "", ttl.String())})
	crane := newCrane(t, "", "")
	cached, uncached := w.seed.Alpine, w.seed.Hello
	pull := func(t *testing.T, img seededImage) {
		t.Helper()
		dir := t.TempDir()
		if _, err := crane.run(t, clientTimeout, "pull", "--format=oci", m.Host+"/"+img.Ref(), dir); err != nil {
			t.Fatal(err)
		}
		checkLayout(t, dir, img)
	}
	pull(t, cached)
	c := newRegClient(m.URL, "", "", nil)
	ctx := t.Context()
	hdr := http.Header{"Accept": {manifestAccept}}
	tagPath := "/v2/" + cached.Repo + "/manifests/" + cached.Tag
	waitCacheIdle(t, m)
	time.Sleep(ttl + 200*time.Millisecond) // tags are due for revalidation: they will be served stale
	if err := reg.Stop(); err != nil {
		t.Fatal(err)
	}
	if resp, err := http.Get(reg.URL + "/v2/"); err == nil {
		resp.Body.Close()
		t.Fatalf("the registry still answers after Stop")
	}

	t.Run("cached image pulls", func(t *testing.T) {
		staleBefore := cacheStats(t, m).Manifests.Stale
		pull(t, cached)
		if st := cacheStats(t, m); st.Manifests.Stale <= staleBefore {
			t.Errorf("crane pull with the upstream down: /admin/cache counted no stale manifest (%d); want the tag served STALE", st.Manifests.Stale)
		} else {
			t.Logf("crane pull with the upstream down: %d manifest(s) served STALE", st.Manifests.Stale-staleBefore)
		}
		for d, size := range cached.Blobs {
			resp := mustDo(t, c, ctx, http.MethodGet, "/v2/"+cached.Repo+"/blobs/"+d, pullScope(cached.Repo), nil)
			digest, n, err := cacheReadBlob(resp.Body)
			resp.Body.Close()
			expectStatus(t, resp, http.StatusOK)
			expectHeader(t, resp, "X-Cache", "HIT")
			if err != nil || n != size || digest != d {
				t.Errorf("blob %s: %d bytes hashing to %s (%v); want %d", d, n, digest, err, size)
			}
		}
	})

	// Other clients of the fleet get the tag crane cached, stale, with their own Accept lines.
	for _, client := range []struct{ name, accept string }{
		// What dockerd 28.2 sends on its HEAD by tag (captured through docxy).
		{"docker", "application/json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json, " +
			"application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.index.v1+json, " +
			"application/vnd.docker.distribution.manifest.v1+prettyjws"},
		// containerd's resolver: the four manifest types and */*.
		{"containerd", manifestAccept + ", */*"},
	} {
		t.Run("cached tag with "+client.name+"'s Accept", func(t *testing.T) {
			for _, method := range []string{http.MethodHead, http.MethodGet} {
				resp := mustDo(t, c, ctx, method, tagPath, pullScope(cached.Repo), http.Header{"Accept": {client.accept}})
				body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
				resp.Body.Close()
				x := resp.Header.Get("X-Cache")
				if resp.StatusCode != http.StatusOK || resp.Header.Get("Docker-Content-Digest") != cached.Digest || (x != "STALE" && x != "HIT") {
					t.Errorf("%s %s with the upstream down: got %d, digest %q, X-Cache %q, %s; want 200 with the cached %s, X-Cache STALE",
						method, tagPath, resp.StatusCode, resp.Header.Get("Docker-Content-Digest"), x, strings.TrimSpace(string(body)), cached.Digest)
					continue
				}
				if method == http.MethodGet && sha256Digest(body) != cached.Digest {
					t.Errorf("GET %s with the upstream down: body hashes to %s; want %s", tagPath, sha256Digest(body), cached.Digest)
				}
				t.Logf("%s %s: %d X-Cache %s", method, tagPath, resp.StatusCode, x)
			}
		})
	}

	t.Run("uncached image is UNAVAILABLE", func(t *testing.T) {
		var layer string
		for d := range uncached.Blobs {
			layer = d
			break
		}
		for _, p := range []string{
			"/v2/" + uncached.Repo + "/manifests/" + uncached.Tag,
			"/v2/" + uncached.Repo + "/manifests/" + uncached.Digest,
			"/v2/" + uncached.Repo + "/blobs/" + layer,
		} {
			resp, err := c.do(ctx, http.MethodGet, p, pullScope(uncached.Repo), hdr)
			if err != nil {
				t.Errorf("GET %s: %v; want a registry error response", p, err)
				continue
			}
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
			var doc struct {
				Errors []struct {
					Code    string `json:"code"`
					Message string `json:"message"`
				} `json:"errors"`
			}
			jerr := json.Unmarshal(body, &doc)
			if resp.StatusCode < 500 || jerr != nil || len(doc.Errors) == 0 || doc.Errors[0].Code != "UNAVAILABLE" {
				t.Errorf("GET %s with the upstream down: got %d %q; want 5xx with {\"errors\":[{\"code\":\"UNAVAILABLE\",...}]}", p, resp.StatusCode, body)
				continue
			}
			t.Logf("GET %s: %d %s", p, resp.StatusCode, strings.TrimSpace(string(body)))
		}
		out, err := crane.run(t, clientTimeout, "digest", m.Host+"/"+uncached.Ref())
		if err == nil {
			t.Errorf("crane digest %s with the upstream down succeeded (%s); want an error", uncached.Ref(), out)
		} else if !strings.Contains(out, "UNAVAILABLE") {
			t.Errorf("crane digest %s with the upstream down: %s; want the UNAVAILABLE error code in the message", uncached.Ref(), out)
		} else {
			lines := strings.Split(strings.TrimSpace(out), "\n")
			t.Logf("crane says: %s", lines[len(lines)-1])
		}
	})

	if err := reg.Start(); err != nil {
		t.Fatal(err)
	}
	t.Run("after restart", func(t *testing.T) { pull(t, uncached) })
}

// TestCacheSIGKILLMidDownload: docxy is killed with SIGKILL while it fills the cache with a large
// blob. Restarted on the same cache directory, it holds no partial blob (nothing under blobs/ for
// that digest, tmp/ empty), and the next pull is complete and correct.
func TestCacheSIGKILLMidDownload(t *testing.T) {
	w := getWorld(t)
	tap := startUpstreamTap(t, w.reg.URL)
	dir := filepath.Join(t.TempDir(), "cache")
	opts := mirrorOpts{Name: "sigkill-1", Upstream: tap.URL, ExtraTOML: cacheTOML(dir, "1GiB", "")}
	m := startMirror(t, opts)
	repo, layer, size := w.seed.Big.Repo, w.seed.BigLayer, w.seed.BigLayerSize
	path := "/v2/" + repo + "/blobs/" + layer
	ctx := t.Context()

	mark := tap.Mark()
	tap.SetRate(32 << 20) // 8 s for the blob; docxy dies long before
	c := newRegClient(m.URL, "", "", nil)
	resp := mustDo(t, c, ctx, http.MethodGet, path, pullScope(repo), nil)
	defer resp.Body.Close()
	expectStatus(t, resp, http.StatusOK)
	const before = 16 << 20
	if _, err := io.CopyN(io.Discard, resp.Body, before); err != nil {
		t.Fatalf("cannot read the first %d bytes: %v", before, err)
	}
	t.Logf("cache dir while downloading: %v", cacheDirListing(t, dir))
	if err := syscall.Kill(m.PID(), syscall.SIGKILL); err != nil {
		t.Fatalf("cannot kill docxy (pid %d): %v", m.PID(), err)
	}
	<-m.proc.done
	n, err := io.Copy(io.Discard, resp.Body)
	if err == nil {
		t.Errorf("download through the killed docxy ended cleanly after %d bytes; want an error", before+n)
	}
	// Wait for the tap to see the broken connection, then check the kill came mid-transfer.
	deadline := time.Now().Add(10 * time.Second)
	for {
		fills := tap.Matching(mark, http.MethodGet, path)
		if len(fills) == 1 && fills[0].Done {
			if fills[0].Complete || fills[0].Bytes >= size {
				t.Fatalf("the upstream finished sending the blob before the kill (%d bytes); the test needs a kill mid-download", fills[0].Bytes)
			}
			t.Logf("killed docxy (pid %d) after the upstream sent %d of %d bytes; client had %d bytes, then: %v", m.PID(), fills[0].Bytes, size, before+n, err)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("upstream GETs of the blob: %+v; want one, ended by the kill", fills)
		}
		time.Sleep(20 * time.Millisecond)
	}
	left := cacheDirListing(t, dir)
	t.Logf("cache dir after SIGKILL: %v", left)
	if f := cacheFilesFor(cacheBlobFiles(t, dir), layer); len(f) > 0 {
		t.Errorf("after SIGKILL the cache holds %v under blobs/ for %s; want no file for an unfinished blob", f, layer)
	}

	opts.Name = "sigkill-2"
	m2 := startMirror(t, opts)
	if f := cacheFilesFor(cacheBlobFiles(t, dir), layer); len(f) > 0 {
		t.Errorf("after restart the cache holds %v under blobs/ for %s; want none", f, layer)
	}
	if tmp := cacheDirListing(t, filepath.Join(dir, "tmp")); len(tmp) > 0 {
		t.Errorf("after restart tmp/ holds %v; want it empty", tmp)
	}
	if st := cacheStats(t, m2); st.Blobs.Entries != 0 || st.Blobs.Bytes != 0 {
		t.Errorf("after restart /admin/cache reports %d blobs, %d bytes; want none", st.Blobs.Entries, st.Blobs.Bytes)
	}
	t.Logf("cache dir after restart: %v", cacheDirListing(t, dir))

	tap.SetRate(0)
	c2 := newRegClient(m2.URL, "", "", nil)
	start := time.Now()
	resp2 := mustDo(t, c2, ctx, http.MethodGet, path, pullScope(repo), nil)
	digest, n, err := cacheReadBlob(resp2.Body)
	resp2.Body.Close()
	expectStatus(t, resp2, http.StatusOK)
	if err != nil || n != size || digest != layer {
		t.Fatalf("pull after restart: %d bytes hashing to %s (err %v); want %d bytes hashing to %s", n, digest, err, size, layer)
	}
	t.Logf("pull after restart: %d bytes, digest verified, in %s (X-Cache %s)", n, time.Since(start).Round(time.Millisecond), resp2.Header.Get("X-Cache"))
	st := waitCacheIdle(t, m2)
	files := cacheBlobFiles(t, dir)
	got := cacheFilesFor(files, layer)
	if len(got) != 1 || files[got[0]] != size || st.Blobs.Entries != 1 {
		t.Errorf("after the pull: blob files %v, stats %d entries; want the one %d-byte blob committed", files, st.Blobs.Entries, size)
	}
	if tmp := cacheDirListing(t, filepath.Join(dir, "tmp")); len(tmp) > 0 {
		t.Errorf("after the pull tmp/ holds %v; want it empty", tmp)
	}
}

// TestCacheDiskBound: with max_size = 64 MiB, crane pulls 96 MiB of images one after the other,
// then a 256 MiB layer is fetched. After each pull the bytes under blobs/ stay within max_size and
// /admin/cache agrees with the disk.
func TestCacheDiskBound(t *testing.T) {
	const (
		maxSize   = 64 << 20
		layerSize = 12 << 20
		images    = 4
	)
	w := getWorld(t)
	start := time.Now()
	var imgs []seededImage
	for i := range images {
		imgs = append(imgs, cacheSeedImage(t, w.reg.Host, fmt.Sprintf("cache/bound%d", i), "latest", layerSize, layerSize))
	}
	t.Logf("seeded %d images of 2 x %d MiB in %s", images, layerSize>>20, time.Since(start).Round(time.Millisecond))
	dir := filepath.Join(t.TempDir(), "cache")
	m := startMirror(t, mirrorOpts{Upstream: w.reg.URL, ExtraTOML: cacheTOML(dir, "64MiB", "")})
	crane := newCrane(t, "", "")

	check := func(t *testing.T, what string, pulled int64) cacheAdminStats {
		t.Helper()
		st := waitCacheIdle(t, m)
		files := cacheBlobFiles(t, dir)
		disk := cacheSumSizes(files)
		t.Logf("%s: pulled %d MiB in all; blobs/ holds %d files, %d bytes; stats %d entries, %d bytes, %d evictions",
			what, pulled>>20, len(files), disk, st.Blobs.Entries, st.Blobs.Bytes, st.Blobs.Evictions)
		if disk > maxSize {
			t.Errorf("%s: blobs/ holds %d bytes; want at most max_size %d", what, disk, maxSize)
		}
		if st.Blobs.Bytes != disk || st.Blobs.Entries != len(files) {
			t.Errorf("%s: /admin/cache reports %d blobs, %d bytes; the disk holds %d files, %d bytes", what, st.Blobs.Entries, st.Blobs.Bytes, len(files), disk)
		}
		return st
	}
	var pulled int64
	for _, img := range imgs {
		dst := t.TempDir()
		if _, err := crane.run(t, clientTimeout, "pull", "--format=oci", m.Host+"/"+img.Ref(), dst); err != nil {
			t.Fatal(err)
		}
		checkLayout(t, dst, img)
		for _, s := range img.Blobs {
			pulled += s
		}
		check(t, "after "+img.Repo, pulled)
	}
	if pulled <= maxSize {
		t.Fatalf("pulled %d bytes; the test needs more than max_size %d", pulled, maxSize)
	}

	// The cache still works under pressure: the last image is served from disk.
	c := newRegClient(m.URL, "", "", nil)
	last := imgs[len(imgs)-1]
	for d := range last.Blobs {
		resp := mustDo(t, c, t.Context(), http.MethodGet, "/v2/"+last.Repo+"/blobs/"+d, pullScope(last.Repo), nil)
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		expectHeader(t, resp, "X-Cache", "HIT")
	}

	// A blob larger than max_size is served whole but not kept.
	repo, layer, size := w.seed.Big.Repo, w.seed.BigLayer, w.seed.BigLayerSize
	resp := mustDo(t, c, t.Context(), http.MethodGet, "/v2/"+repo+"/blobs/"+layer, pullScope(repo), nil)
	digest, n, err := cacheReadBlob(resp.Body)
	resp.Body.Close()
	expectStatus(t, resp, http.StatusOK)
	if err != nil || n != size || digest != layer {
		t.Errorf("GET of the %d-byte layer: %d bytes hashing to %s (%v)", size, n, digest, err)
	}
	pulled += n
	st := check(t, "after the 256 MiB layer", pulled)
	if f := cacheFilesFor(cacheBlobFiles(t, dir), layer); len(f) > 0 {
		t.Errorf("a blob larger than max_size was kept: %v", f)
	}
	if st.Blobs.Evictions == 0 {
		t.Errorf("no evictions after pulling %d bytes into a %d-byte cache", pulled, maxSize)
	}
}

// TestCachePrivateNeverLeaks: alice pulls private/secret through a cache-enabled mirror. Anonymous
// requests for its manifest (by tag and digest) and its blobs are then refused, and nothing of it
// is in the cache.
func TestCachePrivateNeverLeaks(t *testing.T) {
	w := getWorld(t)
	dir := filepath.Join(t.TempDir(), "cache")
	m := startMirror(t, mirrorOpts{Upstream: w.reg.URL, ExtraTOML: cacheTOML(dir, "", "")})
	img := w.seed.Secret
	alice := newCrane(t, aliceUser, alicePass, m.Host)
	dst := t.TempDir()
	if _, err := alice.run(t, clientTimeout, "pull", "--format=oci", m.Host+"/"+img.Ref(), dst); err != nil {
		t.Fatal(err)
	}
	checkLayout(t, dst, img)

	// Alice's own requests are passed through, uncached.
	ac := newRegClient(m.URL, aliceUser, alicePass, nil)
	ctx := t.Context()
	hdr := http.Header{"Accept": {manifestAccept}}
	scope := pullScope(img.Repo)
	paths := []string{"/v2/" + img.Repo + "/manifests/" + img.Tag, "/v2/" + img.Repo + "/manifests/" + img.Digest}
	for d := range img.Blobs {
		paths = append(paths, "/v2/"+img.Repo+"/blobs/"+d)
	}
	for _, p := range paths {
		resp := mustDo(t, ac, ctx, http.MethodGet, p, scope, hdr)
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		expectStatus(t, resp, http.StatusOK)
		expectHeader(t, resp, "X-Cache", "BYPASS")
	}
	waitCacheIdle(t, m)

	anon := newRegClient(m.URL, "", "", nil)
	refused := func(status int) bool {
		return status == http.StatusUnauthorized || status == http.StatusForbidden || status == http.StatusNotFound
	}
	for _, p := range paths {
		for _, method := range []string{http.MethodGet, http.MethodHead} {
			// With no credentials at all.
			req, _ := http.NewRequestWithContext(ctx, method, m.URL+p, nil)
			req.Header.Set("Accept", manifestAccept)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if !refused(resp.StatusCode) {
				t.Errorf("%s %s without credentials: got %d (X-Cache %q); want 401, 403 or 404", method, p, resp.StatusCode, resp.Header.Get("X-Cache"))
			}
			// With an anonymous token from the mirror, as a client does after the challenge.
			resp, err = anon.do(ctx, method, p, scope, hdr)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if !refused(resp.StatusCode) {
				t.Errorf("%s %s with an anonymous token: got %d (X-Cache %q); want 401, 403 or 404", method, p, resp.StatusCode, resp.Header.Get("X-Cache"))
			}
		}
	}
	// Nor through a public repository's name: the blob is not linked there.
	pub := w.seed.Alpine.Repo
	for d := range img.Blobs {
		resp, err := anon.do(ctx, http.MethodGet, "/v2/"+pub+"/blobs/"+d, pullScope(pub), nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if !refused(resp.StatusCode) {
			t.Errorf("GET /v2/%s/blobs/%s (a private blob under a public name) anonymously: got %d (X-Cache %q); want 401, 403 or 404", pub, d, resp.StatusCode, resp.Header.Get("X-Cache"))
		}
	}
	files := cacheBlobFiles(t, dir)
	for d := range img.Blobs {
		if f := cacheFilesFor(files, d); len(f) > 0 {
			t.Errorf("private blob %s is in the cache: %v", d, f)
		}
	}
	st := cacheStats(t, m)
	if st.Blobs.Entries != 0 || st.Manifests.Entries != 0 {
		t.Errorf("cache after private pulls only: %d blobs, %d manifests; want none", st.Blobs.Entries, st.Manifests.Entries)
	}
	t.Logf("%d private paths refused to anonymous clients (GET and HEAD, with and without a token); cache dir blobs: %v", len(paths), files)
}

// TestCacheDefaultConfigClients: crane and docker pull through a mirror with the default cache
// configuration (only dir set), and the digests are the seeded ones. Pulls repeated from the
// cache fetch no blob upstream.
func TestCacheDefaultConfigClients(t *testing.T) {
	w := getWorld(t)
	tap := startUpstreamTap(t, w.reg.URL)
	dir := filepath.Join(t.TempDir(), "cache")
	m := startMirror(t, mirrorOpts{Upstream: tap.URL, ExtraTOML: cacheTOML(dir, "", "")})
	blobGETs := func(mark int) map[string]int {
		n := map[string]int{}
		for _, r := range tap.Since(mark) {
			if r.Method == http.MethodGet && strings.Contains(r.Path, "/blobs/") {
				n[r.Path[strings.LastIndexByte(r.Path, '/')+1:]]++
			}
		}
		return n
	}

	t.Run("crane", func(t *testing.T) {
		crane := newCrane(t, "", "")
		for _, img := range []seededImage{w.seed.Hello, w.seed.Alpine} {
			got, err := crane.run(t, clientTimeout, "digest", m.Host+"/"+img.Ref())
			if err != nil {
				t.Fatal(err)
			}
			if got != img.Digest {
				t.Errorf("crane digest %s: got %s; want %s", img.Ref(), got, img.Digest)
			}
			for round := range 2 {
				mark, hits := tap.Mark(), cacheStats(t, m).Blobs.Hits
				dst := t.TempDir()
				if _, err := crane.run(t, clientTimeout, "pull", "--format=oci", m.Host+"/"+img.Ref(), dst); err != nil {
					t.Fatal(err)
				}
				checkLayout(t, dst, img)
				waitCacheIdle(t, m)
				gets := blobGETs(mark)
				if round == 1 && len(gets) > 0 {
					t.Errorf("second crane pull of %s fetched blobs upstream: %v; want none", img.Ref(), gets)
				}
				if got := cacheStats(t, m).Blobs.Hits - hits; round == 1 && got < uint64(len(img.Blobs)) {
					t.Errorf("second crane pull of %s: %d blob cache hits; want %d (every blob from the cache)", img.Ref(), got, len(img.Blobs))
				}
				logTap(t, fmt.Sprintf("crane pull %s #%d", img.Ref(), round+1), tap.Since(mark))
			}
		}
	})

	t.Run("docker", func(t *testing.T) {
		if _, err := lookTool("dockerd"); err != nil {
			t.Skipf("no dockerd: %v", err)
		}
		d := getDockerd(t)
		ctx, cancel := context.WithTimeout(t.Context(), seedTimeout)
		defer cancel()
		img, err := seedIndex(w.reg.Host, "cache/docker", "latest", types.DockerManifestList, cacheSeedOpts(ctx))
		if err != nil {
			t.Fatal(err)
		}
		var mf manifestDoc
		amd64 := img.Platforms["linux/amd64"]
		if err := json.Unmarshal(img.Manifests[amd64], &mf); err != nil {
			t.Fatal(err)
		}
		want := []string{mf.Config.Digest}
		for _, l := range mf.Layers {
			want = append(want, l.Digest)
		}
		cfg := dockerConfigDir(t, "", "")
		ref := m.Host + "/" + img.Ref()
		t.Cleanup(func() { d.run(t, cfg, "rmi", "-f", ref) })
		for round := range 2 {
			mark, hits := tap.Mark(), cacheStats(t, m).Blobs.Hits
			if _, err := d.run(t, cfg, "pull", ref); err != nil {
				t.Fatalf("docker pull %s (round %d): %v", ref, round+1, err)
			}
			got, err := d.run(t, cfg, "image", "inspect", "--format", "{{index .RepoDigests 0}}", ref)
			if err != nil {
				t.Fatal(err)
			}
			if wantRD := m.Host + "/" + img.Repo + "@" + img.Digest; got != wantRD {
				t.Errorf("RepoDigests[0]: got %q; want %q", got, wantRD)
			}
			waitCacheIdle(t, m)
			gets := blobGETs(mark)
			logTap(t, fmt.Sprintf("docker pull #%d", round+1), tap.Since(mark))
			for _, b := range want {
				if round == 0 && gets[b] != 1 {
					t.Errorf("first docker pull: blob %s fetched upstream %d times; want 1 (docker must have pulled through docxy)", b, gets[b])
				}
			}
			if round == 1 && len(gets) > 0 {
				t.Errorf("docker pull after rmi fetched blobs upstream: %v; want none (served from the cache)", gets)
			}
			if got := cacheStats(t, m).Blobs.Hits - hits; round == 1 && got < uint64(len(want)) {
				t.Errorf("docker pull after rmi: %d blob cache hits; want %d (docker must have downloaded every blob again, from the cache)", got, len(want))
			}
			if _, err := d.run(t, cfg, "rmi", ref); err != nil {
				t.Fatal(err)
			}
		}
	})
	st := cacheStats(t, m)
	t.Logf("cache: %d blobs (%d bytes), %d hits, %d misses; manifests %d entries, %d hits, %d misses",
		st.Blobs.Entries, st.Blobs.Bytes, st.Blobs.Hits, st.Blobs.Misses, st.Manifests.Entries, st.Manifests.Hits, st.Manifests.Misses)
}
