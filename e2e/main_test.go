// Package e2e starts real parts on 127.0.0.1 (CNCF Distribution behind a Docker-Hub-like token
// server and blob CDN, docxy itself, dockerd, containerd) and pulls through docxy with real
// clients (crane, skopeo, docker, ctr). Run it with `go test -count=1 -v ./e2e/`.
package e2e

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"
)

// E2E_KEEP=1 keeps the temporary directory (logs, storage, configs) after a failed run.
const envKeep = "E2E_KEEP"

var (
	tmpRoot string // package temp dir, removed at exit

	teardownMu sync.Mutex
	teardowns  []func() // package-level cleanups, run in reverse order after all tests

	worldOnce sync.Once
	theWorld  *testWorld
	worldErr  error
)

func TestMain(m *testing.M) {
	flag.Parse()
	dir, err := os.MkdirTemp("", "docxy-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	tmpRoot = dir
	if !testing.Short() {
		go buildDocxy() // overlaps with seeding; tests wait for it
	}
	code := m.Run()
	teardownMu.Lock()
	for i := len(teardowns) - 1; i >= 0; i-- {
		teardowns[i]()
	}
	teardownMu.Unlock()
	if code != 0 && os.Getenv(envKeep) != "" {
		fmt.Fprintf(os.Stderr, "e2e: kept %s\n", dir)
	} else {
		os.RemoveAll(dir)
	}
	os.Exit(code)
}

// atTeardown registers a package-level cleanup.
func atTeardown(f func()) {
	teardownMu.Lock()
	teardowns = append(teardowns, f)
	teardownMu.Unlock()
}

// testWorld is the upstream side shared by all tests: a token server, a CDN, and two registry
// processes over one storage root (one plain, one redirecting blobs to the CDN), seeded once.
type testWorld struct {
	dir    string
	tokens *tokenServer
	cdn    *cdn
	reg    *registry // blobs served directly
	regCDN *registry // blobs answered with 307 to the CDN
	seed   *seededContent
	setup  []string // figures from the setup, logged by the first test
}

// getWorld returns the shared upstream side, starting and seeding it on first use.
func getWorld(t *testing.T) *testWorld {
	t.Helper()
	registryBin := needTool(t, "registry")
	first := false
	worldOnce.Do(func() {
		first = true
		theWorld, worldErr = setupWorld(registryBin)
	})
	if worldErr != nil {
		t.Fatalf("cannot set up the upstream registry: %v", worldErr)
	}
	if first {
		for _, s := range theWorld.setup {
			t.Log(s)
		}
	}
	return theWorld
}

func setupWorld(registryBin string) (*testWorld, error) {
	w := &testWorld{dir: filepath.Join(tmpRoot, "world")}
	root := filepath.Join(w.dir, "storage")
	if err := os.MkdirAll(root, 0o755); err != nil {
		return nil, err
	}
	var err error
	if w.tokens, err = startTokenServer(w.dir); err != nil {
		return nil, err
	}
	atTeardown(w.tokens.Close)
	if w.cdn, err = startCDN(root); err != nil {
		return nil, err
	}
	atTeardown(w.cdn.Close)
	start := time.Now()
	opts := registryOpts{Name: "plain", Root: root, TokenRealm: w.tokens.URL, TokenBundle: w.tokens.CertBundle}
	if w.reg, err = newRegistry(registryBin, w.dir, opts); err != nil {
		return nil, err
	}
	atTeardown(func() { w.reg.Stop() })
	opts.Name, opts.CDNBaseURL = "cdn", w.cdn.URL
	if w.regCDN, err = newRegistry(registryBin, w.dir, opts); err != nil {
		return nil, err
	}
	atTeardown(func() { w.regCDN.Stop() })
	w.setup = append(w.setup, fmt.Sprintf("setup: two registries ready in %s (plain %s, cdn %s -> %s)",
		time.Since(start).Round(time.Millisecond), w.reg.Host, w.regCDN.Host, w.cdn.URL))
	start = time.Now()
	if w.seed, err = seed(w.reg.Host); err != nil {
		return nil, err
	}
	runtime.GC() // drop the big layer's buffers
	w.setup = append(w.setup, fmt.Sprintf("setup: seeded hello %s, alpine %s, big/layer %s (layer %s, %d bytes), private/secret %s in %s",
		w.seed.Hello.Digest, w.seed.Alpine.Digest, w.seed.Big.Digest, w.seed.BigLayer, w.seed.BigLayerSize,
		w.seed.Secret.Digest, time.Since(start).Round(time.Millisecond)))
	return w, nil
}

// docxy's binary is built once per package run.
var docxyBuild struct {
	once sync.Once
	done chan struct{}
	path string
	err  error
	took time.Duration
}

func init() { docxyBuild.done = make(chan struct{}) }

// buildDocxy runs `go build -o $TMP/docxy github.com/docxy/docxy` from the module root.
func buildDocxy() {
	docxyBuild.once.Do(func() {
		defer close(docxyBuild.done)
		start := time.Now()
		gobin, err := exec.LookPath("go")
		if err != nil {
			gobin = filepath.Join(runtime.GOROOT(), "bin", "go")
		}
		modRoot, err := filepath.Abs("..")
		if err != nil {
			docxyBuild.err = err
			return
		}
		out := filepath.Join(tmpRoot, "docxy")
		cmd := exec.Command(gobin, "build", "-o", out, "github.com/docxy/docxy")
		cmd.Dir = modRoot
		if b, err := cmd.CombinedOutput(); err != nil {
			docxyBuild.err = fmt.Errorf("go build github.com/docxy/docxy: %w\n%s", err, b)
			return
		}
		docxyBuild.path, docxyBuild.took = out, time.Since(start)
	})
}

// docxyBinary returns the built docxy binary, failing the test if it cannot be built.
func docxyBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: docxy end-to-end tests skipped")
	}
	go buildDocxy()
	<-docxyBuild.done
	if docxyBuild.err != nil {
		t.Fatalf("cannot build docxy: %v", docxyBuild.err)
	}
	return docxyBuild.path
}
