package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// versitygw is an S3 gateway over a local directory, started for one test.
func startVersityGW(t *testing.T) (endpoint, bucket string) {
	t.Helper()
	bin := needTool(t, "versitygw")
	dir := t.TempDir()
	bucket = "docxy-shared"
	if err := os.MkdirAll(filepath.Join(dir, bucket), 0o755); err != nil { // posix backend: a directory is a bucket
		t.Fatal(err)
	}
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	endpoint = fmt.Sprintf("127.0.0.1:%d", port)
	p, err := startProc("versitygw", filepath.Join(t.TempDir(), "versitygw.log"),
		[]string{"ROOT_ACCESS_KEY=docxy", "ROOT_SECRET_KEY=docxy-secret"},
		bin, "--port", endpoint, "--health", "/health", "-q", "posix", dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Stop() })
	client := &http.Client{Timeout: 2 * time.Second}
	if err := waitReady(p, 20*time.Second, httpStatusIs(client, "http://"+endpoint+"/health", http.StatusOK)); err != nil {
		t.Fatalf("versitygw: %v", err)
	}
	return endpoint, bucket
}

type adminStats struct {
	Blobs struct {
		Entries       int   `json:"entries"`
		SharedHits    int64 `json:"shared_hits"`
		SharedUploads int64 `json:"shared_uploads"`
	} `json:"blobs"`
}

func readAdminStats(t *testing.T, m *mirror, token string) adminStats {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, strings.Replace(m.healthURL, "/health", "/admin/cache", 1), nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("admin stats: %v", err)
	}
	defer resp.Body.Close()
	var s adminStats
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("admin stats: status %d, %v", resp.StatusCode, err)
	}
	return s
}

// TestCacheSharedS3TwoReplicas: two docxy replicas share one bucket on a real S3-compatible server.
// A pull through the first fills the bucket; the same pull through the second is served from it
// with no upstream blob fetch (blobs are redirected to the CDN upstream, so the CDN counts them).
func TestCacheSharedS3TwoReplicas(t *testing.T) {
	w := getWorld(t)
	endpoint, bucket := startVersityGW(t)
	const adminToken = "s3-test-admin"
	replica := func(name string) *mirror {
		return startMirror(t, mirrorOpts{Name: name, Upstream: "http://" + w.regCDN.Host, ExtraTOML: fmt.Sprintf(
			"dir = %q\nmax_size = \"1GiB\"\n[cache.s3]\nendpoint = %q\nbucket = %q\naccess_key = \"docxy\"\nsecret_key = \"docxy-secret\"\ninsecure = true\npath_style = true\n[admin]\ntoken = %q\n",
			filepath.Join(t.TempDir(), "cache-"+name), endpoint, bucket, adminToken)})
	}
	a, b := replica("a"), replica("b")
	img := w.seed.Alpine
	crane := newCrane(t, "", "")

	mark := w.cdn.Mark()
	dirA := t.TempDir()
	if _, err := crane.run(t, clientTimeout, "pull", "--format=oci", a.Host+"/"+img.Ref(), dirA); err != nil {
		t.Fatal(err)
	}
	checkLayout(t, dirA, img)
	fromUpstream := 0
	for _, h := range w.cdn.Since(mark) {
		if h.Method == http.MethodGet {
			fromUpstream++
		}
	}
	if fromUpstream < len(img.Blobs) {
		t.Fatalf("unexpected upstream blob GETs for the first pull: got %d; want at least %d", fromUpstream, len(img.Blobs))
	}
	// The first replica uploads in the background: wait until every blob is in the bucket.
	deadline := time.Now().Add(60 * time.Second)
	for readAdminStats(t, a, adminToken).Blobs.SharedUploads < int64(len(img.Blobs)) {
		if time.Now().After(deadline) {
			t.Fatalf("replica a uploaded %d blobs to the bucket; want %d", readAdminStats(t, a, adminToken).Blobs.SharedUploads, len(img.Blobs))
		}
		time.Sleep(50 * time.Millisecond)
	}

	mark = w.cdn.Mark()
	dirB := t.TempDir()
	if _, err := crane.run(t, clientTimeout, "pull", "--format=oci", b.Host+"/"+img.Ref(), dirB); err != nil {
		t.Fatal(err)
	}
	checkLayout(t, dirB, img)
	for _, h := range w.cdn.Since(mark) {
		if h.Method == http.MethodGet && strings.Contains(h.Path, "/blobs/") {
			t.Fatalf("unexpected upstream blob fetch during the second replica's pull: %s %s", h.Method, h.Path)
		}
	}
	// A fill is counted after its commit, which may end just after the client has its bytes.
	deadline = time.Now().Add(10 * time.Second)
	for readAdminStats(t, b, adminToken).Blobs.SharedHits < int64(len(img.Blobs)) {
		if time.Now().After(deadline) {
			t.Fatalf("unexpected shared-tier fills on replica b: got %d; want %d", readAdminStats(t, b, adminToken).Blobs.SharedHits, len(img.Blobs))
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("replica a: %d upstream blob GETs, %d uploads; replica b: 0 upstream blob GETs, %d blobs from the bucket",
		fromUpstream, readAdminStats(t, a, adminToken).Blobs.SharedUploads, readAdminStats(t, b, adminToken).Blobs.SharedHits)
}
