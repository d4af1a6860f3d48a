package proxy

import (
	"bytes"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/docxy/docxy/proxy/upstream"
)

// TestManifestCacheSurvivesRestart: after a graceful shutdown the next start serves a tag after
// one upstream HEAD (free on Docker Hub) instead of a GET, and a digest with no upstream request.
func TestManifestCacheSurvivesRestart(t *testing.T) {
	const path = "/v2/library/nginx/manifests/latest"
	up := manifestHub(t, path)
	dir := t.TempDir()
	cfg := testConfig(`upstream_timeout = "3s"`, registryConfig("docker.io", up.URL(), `library_prefix = true`),
		"[cache]\nmanifest_ttl = \"1ns\"\n") // every tag is stale at once: the restart must revalidate
	get := func(m *mirror, target, wantCache string) {
		t.Helper()
		resp, body := m.do(t, "GET", target, nil, "")
		checkStatus(t, resp, 200)
		if !bytes.Equal(body, testManifest) {
			t.Fatalf("unexpected body: got %q; want %q", body, testManifest)
		}
		checkHeader(t, resp.Header, "X-Cache", wantCache)
	}

	first := newMirrorInDir(t, cfg, dir)
	get(first, "/v2/nginx/manifests/latest", "MISS")
	if n, err := first.h.SaveManifests(); err != nil || n == 0 {
		t.Fatalf("unexpected SaveManifests: got %d entries, %v; want some, no error", n, err)
	}
	before := len(onlyPath(up.requests(), path))

	if n, err := first.h.SaveManifests(); err != nil || n != 0 {
		t.Fatalf("unexpected second SaveManifests of an unchanged cache: got %d entries, %v; want none written", n, err)
	}

	second := newMirrorInDir(t, cfg, dir)
	get(second, "/v2/nginx/manifests/latest", "HIT")
	get(second, "/v2/nginx/manifests/"+digestOf(testManifest), "HIT")
	// (The new process also discovers the upstream's challenge with GET /v2/ once.)
	after := onlyPath(up.requests(), path)[before:]
	if len(after) != 1 || after[0].Method != "HEAD" {
		t.Fatalf("unexpected upstream manifest requests after the restart: got %v; want one HEAD", after)
	}
}

// TestManifestSnapshotDropsBadEntries: an entry whose body does not match its digest is not
// restored, and an unreadable snapshot does not stop docxy from starting.
func TestManifestSnapshotDropsBadEntries(t *testing.T) {
	c := newManifestCache(0, DefaultManifestCacheBytes)
	good, bad := []byte(`{"schemaVersion":2}`), []byte(`{"schemaVersion":2,"tampered":true}`)
	c.put(newManifest("good", good, []byte(mtOCIManifestS), []byte(digestOf(good)), len(good)))
	c.put(newManifest("bad", bad, []byte(mtOCIManifestS), []byte(digestOf(good)), len(bad)))
	c.put(newManifest("tag", nil, []byte(mtOCIManifestS), []byte(digestOf(good)), len(good))) // learned from a HEAD
	var buf bytes.Buffer
	saved := map[string]upstream.Challenge{"hub": {Scheme: "Bearer", Realm: "https://auth.example/token", Service: "registry"}}
	if _, err := c.writeSnapshot(&buf, saved); err != nil {
		t.Fatalf("cannot write the snapshot: %s", err)
	}
	restored := newManifestCache(0, DefaultManifestCacheBytes)
	n, challenges, err := restored.readSnapshot(&buf)
	if err != nil || n != 2 {
		t.Fatalf("unexpected readSnapshot: got %d entries, %v; want 2, no error", n, err)
	}
	if challenges["hub"] != saved["hub"] {
		t.Fatalf("unexpected challenges restored: got %+v; want %+v", challenges, saved)
	}
	if restored.get([]byte("bad")) != nil || restored.get([]byte("good")) == nil || restored.get([]byte("tag")) == nil {
		t.Fatalf("unexpected entries restored: want good and tag, not bad")
	}

	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, manifestSnapshotFile), []byte("not a snapshot"), 0o600); err != nil {
		t.Fatal(err)
	}
	up, _ := fakeHub(t, nil)
	m := newMirrorInDir(t, testConfig("", registryConfig("docker.io", up.URL())), dir)
	resp, _ := m.do(t, "GET", "/v2/", nil, "")
	checkStatus(t, resp, http.StatusUnauthorized)
}

// TestManifestPurgeIsSaved: a purge rewrites the saved manifests, so a start after a crash (no
// save at shutdown) does not bring the purged tag back: it is fetched again with GET.
func TestManifestPurgeIsSaved(t *testing.T) {
	const path = "/v2/library/nginx/manifests/latest"
	up := manifestHub(t, path)
	dir := t.TempDir()
	cfg := testConfig("", registryConfig("docker.io", up.URL(), `library_prefix = true`), "[admin]\ntoken = \"s3cret\"\n")
	first := newMirrorInDir(t, cfg, dir)
	resp, _ := first.do(t, "GET", "/v2/nginx/manifests/latest", nil, "")
	checkStatus(t, resp, 200)
	if _, err := first.h.SaveManifests(); err != nil { // the periodic save
		t.Fatal(err)
	}
	resp, body := first.do(t, "DELETE", PathAdminCache+"?registry=docker.io&repository=nginx&reference=latest", // = library/nginx
		http.Header{"Authorization": {"Bearer s3cret"}}, "")
	checkStatus(t, resp, 200)
	if !bytes.Contains(body, []byte(`"manifests":1`)) {
		t.Fatalf("unexpected purge answer: %s; want one manifest purged", body)
	}

	before := len(onlyPath(up.requests(), path))
	second := newMirrorInDir(t, cfg, dir) // no SaveManifests at shutdown: as after a crash
	resp, _ = second.do(t, "GET", "/v2/nginx/manifests/latest", nil, "")
	checkStatus(t, resp, 200)
	checkHeader(t, resp.Header, "X-Cache", "MISS")
	if rs := onlyPath(up.requests(), path)[before:]; len(rs) != 1 || rs[0].Method != "GET" {
		t.Fatalf("unexpected upstream requests for the purged tag: got %v; want one GET", rs)
	}
}

// manifestHub is a registry that serves testManifest at path and nothing else.
func manifestHub(t *testing.T, path string) *fakeServer {
	t.Helper()
	up, _ := fakeHub(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != path {
			http.NotFound(w, r)
			return
		}
		writeManifestResponse(w, r, mtOCIIndexS, testManifest)
	})
	return up
}
