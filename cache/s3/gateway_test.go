package s3

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/docxy/docxy/cache"
)

// Credentials of the test gateway.
const (
	testAccessKey = "docxy-test"
	testSecretKey = "docxy-test-secret"
	testBucket    = "docxy-test"
)

// gateway is a versitygw serving a temp directory on loopback, killed by its PID when the test ends.
type gateway struct {
	endpoint string // 127.0.0.1:port
	dir      string // posix root: each subdirectory is a bucket
}

// startGateway starts versitygw with a bucket named testBucket, and waits until it answers.
func startGateway(t *testing.T) *gateway {
	t.Helper()
	bin := findTool(t, "versitygw")
	g := &gateway{endpoint: freeAddr(t), dir: t.TempDir()}
	var out syncBuffer
	cmd := exec.Command(bin, "-q", "--port", g.endpoint, "--health", "/health", "posix", g.dir)
	cmd.Env = append(os.Environ(), "ROOT_ACCESS_KEY="+testAccessKey, "ROOT_SECRET_KEY="+testSecretKey)
	cmd.Stdout, cmd.Stderr = &out, &out
	// Kill the gateway if the test binary dies without cleaning up.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("cannot start %s: %v", bin, err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("versitygw output:\n%s", out.String())
		}
	})

	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get("http://" + g.endpoint + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		select {
		case <-exited:
			t.Fatalf("versitygw exited before it was ready:\n%s", out.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("versitygw not ready at %s after 15s (last error: %v)", g.endpoint, err)
		}
	}

	tr := g.tier(t, Config{})
	if err := tr.client.MakeBucket(context.Background(), testBucket, minio.MakeBucketOptions{}); err != nil {
		t.Fatalf("cannot create bucket %s: %v", testBucket, err)
	}
	return g
}

// tier returns a Tier on the gateway; cfg's zero fields get the gateway's endpoint, bucket and keys.
func (g *gateway) tier(t *testing.T, cfg Config) *Tier {
	t.Helper()
	if cfg.Endpoint == "" {
		cfg.Endpoint = g.endpoint
		cfg.Insecure = true
	}
	if cfg.Bucket == "" {
		cfg.Bucket = testBucket
	}
	if cfg.AccessKey == "" {
		cfg.AccessKey, cfg.SecretKey = testAccessKey, testSecretKey
	}
	cfg.PathStyle = true
	tr, err := New(cfg)
	if err != nil {
		t.Fatalf("cannot create tier: %v", err)
	}
	return tr
}

// findTool returns the path of a test tool from PATH or from the directory `make tools` installs
// to: $TOOLS_BIN, default $HOME/.cache/docxy-tools/bin (see the Makefile).
func findTool(t *testing.T, name string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	dir := os.Getenv("TOOLS_BIN")
	if dir == "" {
		home, _ := os.UserHomeDir()
		dir = filepath.Join(home, ".cache", "docxy-tools", "bin")
	}
	p := filepath.Join(dir, name)
	if _, err := os.Stat(p); err == nil {
		return p
	}
	if testing.Short() {
		t.Skipf("%s not found in PATH or %s; run `make tools` to install it", name, dir)
	}
	t.Fatalf("%s not found in PATH or %s; run `make tools` to install it (or -short to skip this test)", name, dir)
	return ""
}

// freeAddr returns a loopback address with a port that was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("cannot listen: %v", err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// testBlob returns n pseudo-random bytes derived from seed and their sha256 digest.
func testBlob(t *testing.T, n int, seed uint64) ([]byte, cache.Digest) {
	t.Helper()
	data := make([]byte, n)
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	for i := 0; i+8 <= n; i += 8 {
		v := rng.Uint64()
		for j := range 8 {
			data[i+j] = byte(v >> (8 * j))
		}
	}
	for i := n &^ 7; i < n; i++ {
		data[i] = byte(rng.Uint32())
	}
	sum := sha256.Sum256(data)
	d, err := cache.ParseDigest("sha256:" + hex.EncodeToString(sum[:]))
	if err != nil {
		t.Fatalf("cannot parse digest: %v", err)
	}
	return data, d
}

// mustPut uploads data as blob d and fails the test on error.
func mustPut(t *testing.T, tr *Tier, d cache.Digest, data []byte) {
	t.Helper()
	if err := tr.Put(context.Background(), d, bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatalf("cannot put %s: %v", d, err)
	}
}

// mustHas checks whether the tier has d.
func mustHas(t *testing.T, tr *Tier, d cache.Digest, want bool) {
	t.Helper()
	got, err := tr.Has(context.Background(), d)
	if err != nil {
		t.Fatalf("cannot stat %s: %v", d, err)
	}
	if got != want {
		t.Fatalf("unexpected Has(%s); got %v; want %v", d, got, want)
	}
}

// readBlob opens d and returns its bytes after checking the announced size against them.
func readBlob(t *testing.T, tr *Tier, d cache.Digest) []byte {
	t.Helper()
	rc, size, err := tr.Open(context.Background(), d)
	if err != nil {
		t.Fatalf("cannot open %s: %v", d, err)
	}
	defer rc.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(rc); err != nil {
		t.Fatalf("cannot read %s: %v", d, err)
	}
	if int64(buf.Len()) != size {
		t.Fatalf("unexpected blob length; got %d bytes; Open said %d", buf.Len(), size)
	}
	return buf.Bytes()
}

// syncBuffer is a bytes.Buffer safe for a process's stdout and stderr writing at once.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
