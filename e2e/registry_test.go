package e2e

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"
)

const registryStartTimeout = 20 * time.Second

// registry is one CNCF Distribution process. Several may share one storage root: one is used to
// seed, others serve the same content with or without CDN redirects.
type registry struct {
	Host string // 127.0.0.1:PORT
	URL  string // http://127.0.0.1:PORT
	Root string // filesystem storage root

	name    string
	bin     string
	cfgPath string
	logPath string
	proc    *proc
}

// registryOpts configures a registry instance.
type registryOpts struct {
	Name        string // used for file names
	Root        string // storage root
	CDNBaseURL  string // non-empty: redirect blob GET/HEAD there (Docker Hub's CDN behaviour)
	TokenRealm  string
	TokenBundle string
}

func newRegistry(bin, dir string, o registryOpts) (*registry, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	r := &registry{
		Host:    fmt.Sprintf("127.0.0.1:%d", port),
		URL:     fmt.Sprintf("http://127.0.0.1:%d", port),
		Root:    o.Root,
		name:    "registry-" + o.Name,
		bin:     bin,
		cfgPath: filepath.Join(dir, "registry-"+o.Name+".yml"),
		logPath: filepath.Join(dir, "registry-"+o.Name+".log"),
	}
	cfg := fmt.Sprintf(`version: 0.1
log:
  level: info
  formatter: text
storage:
  filesystem:
    rootdirectory: %q
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: %q
  secret: e2e-shared-secret
  draintimeout: 1s
auth:
  token:
    realm: %q
    service: %q
    issuer: %q
    rootcertbundle: %q
`, o.Root, r.Host, o.TokenRealm, tokenService, tokenIssuer, o.TokenBundle)
	if o.CDNBaseURL != "" {
		cfg += fmt.Sprintf(`middleware:
  storage:
    - name: redirect
      options:
        baseurl: %q
`, o.CDNBaseURL)
	}
	if err := os.WriteFile(r.cfgPath, []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	return r, r.Start()
}

// Start starts (or restarts) the registry on its port and waits until /v2/ answers.
func (r *registry) Start() error {
	p, err := startProc(r.name, r.logPath, []string{"OTEL_TRACES_EXPORTER=none"}, r.bin, "serve", r.cfgPath)
	if err != nil {
		return err
	}
	r.proc = p
	client := &http.Client{Timeout: 2 * time.Second}
	// With token auth, an anonymous /v2/ is answered 401 once the registry is up.
	if err := waitReady(p, registryStartTimeout, httpStatusIs(client, r.URL+"/v2/", http.StatusUnauthorized, http.StatusOK)); err != nil {
		p.Kill()
		return fmt.Errorf("%s: %w", r.name, err)
	}
	return nil
}

// Stop stops the registry gracefully.
func (r *registry) Stop() error { return r.proc.Stop() }

// Kill kills the registry with SIGKILL, as a crash would.
func (r *registry) Kill() { r.proc.Kill() }

// PID returns the registry's process id.
func (r *registry) PID() int { return r.proc.PID() }

// blobPath is where the filesystem driver keeps a blob.
func blobPath(root, digest string) string {
	hex := digest[len("sha256:"):]
	return filepath.Join(root, "docker/registry/v2/blobs/sha256", hex[:2], hex, "data")
}
