package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

const mirrorStartTimeout = 20 * time.Second

// mirror is a running docxy process.
type mirror struct {
	Host string // localhost:PORT, what clients use (the plain listener, or the TLS one)
	URL  string // scheme://Host, the public base URL

	healthURL string
	proc      *proc
	cfgPath   string
}

// mirrorOpts configures a docxy instance under test.
type mirrorOpts struct {
	Name               string // for file names
	Upstream           string // http://127.0.0.1:PORT
	Username, Password string // docxy's own upstream account, optional
	CertFile, KeyFile  string // non-empty: serve HTTPS on a second port; clients use it
	ExtraTOML          string // appended to the [cache] section, e.g. dir and max_size (cache stays off without it)
}

// newMirror writes a config and starts docxy, waiting for GET /health = 200.
func newMirror(bin, dir string, o mirrorOpts) (*mirror, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	m := &mirror{
		Host:      fmt.Sprintf("localhost:%d", port),
		healthURL: fmt.Sprintf("http://127.0.0.1:%d/health", port),
		cfgPath:   filepath.Join(dir, "docxy-"+o.Name+".toml"),
	}
	m.URL = "http://" + m.Host
	var b strings.Builder
	fmt.Fprintf(&b, "[server]\nlisten = %q\n", fmt.Sprintf("127.0.0.1:%d", port))
	healthClient := &http.Client{Timeout: 2 * time.Second}
	if o.CertFile != "" {
		tport, err := freePort()
		if err != nil {
			return nil, err
		}
		m.Host = fmt.Sprintf("localhost:%d", tport)
		m.URL = "https://" + m.Host
		fmt.Fprintf(&b, "tls_listen = %q\n", fmt.Sprintf("127.0.0.1:%d", tport))
	}
	// The realm must be the mirror's own host:port for crane and oras.
	fmt.Fprintf(&b, "public_base_url = %q\nupstream_timeout = \"10s\"\n", m.URL)
	if o.CertFile != "" {
		fmt.Fprintf(&b, "\n[tls]\ncert_file = %q\nkey_file = %q\n", o.CertFile, o.KeyFile)
	}
	if o.ExtraTOML != "" {
		fmt.Fprintf(&b, "\n[cache]\n%s\n", o.ExtraTOML)
	} else {
		b.WriteString("\n[cache]\ndisabled = true\n")
	}
	b.WriteString("\n[log]\nlevel = \"debug\"\n")
	fmt.Fprintf(&b, "\n[[registry]]\nname = \"docker.io\"\nupstream = %q\nlibrary_prefix = true\ndefault = true\n", o.Upstream)
	if o.Username != "" {
		fmt.Fprintf(&b, "username = %q\npassword = %q\n", o.Username, o.Password)
	}
	if err := os.WriteFile(m.cfgPath, []byte(b.String()), 0o644); err != nil {
		return nil, err
	}
	p, err := startProc("docxy-"+o.Name, filepath.Join(dir, "docxy-"+o.Name+".log"), nil, bin, "-config", m.cfgPath)
	if err != nil {
		return nil, err
	}
	m.proc = p
	registerDocxyPID(p.PID())
	if err := waitReady(p, mirrorStartTimeout, httpStatusIs(healthClient, m.healthURL, http.StatusOK)); err != nil {
		p.Kill()
		return nil, fmt.Errorf("docxy (%s): %w\nconfig:\n%s", m.cfgPath, err, b.String())
	}
	return m, nil
}

// PID returns docxy's process id.
func (m *mirror) PID() int { return m.proc.PID() }

// Stop stops docxy and reports a panic found in its log.
func (m *mirror) Stop() error {
	err := m.proc.Stop()
	if b, rerr := os.ReadFile(m.proc.logPath); rerr == nil && strings.Contains(string(b), "panic:") {
		return fmt.Errorf("docxy log contains a panic:\n%s", m.proc.LogTail(60))
	}
	return err
}

// startMirror starts a docxy instance owned by the test.
func startMirror(t *testing.T, o mirrorOpts) *mirror {
	t.Helper()
	bin := docxyBinary(t)
	if o.Name == "" {
		o.Name = strings.NewReplacer("/", "-", " ", "_").Replace(t.Name())
	}
	m, err := newMirror(bin, t.TempDir(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("docxy log (%s) tail:\n%s", m.proc.logPath, m.proc.LogTail(40))
		}
		if err := m.Stop(); err != nil {
			t.Error(err)
		}
	})
	return m
}

// The shared mirror serves the plain registry for the whole package; dockerd is configured
// with it as registry-mirror.
var shared struct {
	once sync.Once
	m    *mirror
	err  error
}

func sharedMirror(t *testing.T) *mirror {
	t.Helper()
	w := getWorld(t)
	bin := docxyBinary(t)
	shared.once.Do(func() {
		dir := filepath.Join(tmpRoot, "shared-mirror")
		if shared.err = os.MkdirAll(dir, 0o755); shared.err != nil {
			return
		}
		shared.m, shared.err = newMirror(bin, dir, mirrorOpts{Name: "shared", Upstream: w.reg.URL})
		if shared.err == nil {
			atTeardown(func() {
				if err := shared.m.Stop(); err != nil {
					fmt.Fprintln(os.Stderr, "e2e: shared docxy:", err)
				}
			})
		}
	})
	if shared.err != nil {
		t.Fatalf("cannot start the shared docxy: %v", shared.err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("shared docxy log (%s) tail:\n%s", shared.m.proc.logPath, shared.m.proc.LogTail(40))
		}
	})
	return shared.m
}

// assertOnlyDocxy checks that every request the token server and the CDN saw since the marks came
// from a docxy process, and that docxy did use the token server (so the check is not vacuous).
func assertOnlyDocxy(t *testing.T, w *testWorld, tokMark, cdnMark int, wantCDN bool) {
	t.Helper()
	toks := w.tokens.Since(tokMark)
	if len(toks) == 0 {
		t.Errorf("token server: no requests; want docxy's upstream token requests")
	}
	for _, r := range toks {
		if !r.Peer.IsDocxy() {
			t.Errorf("token server: %s request (user %q, scopes %v) came from %s; want only docxy", r.Method, r.User, r.Scopes, r.Peer)
		}
		if !strings.HasPrefix(r.Peer.UserAgent, "docxy/") {
			t.Errorf("token server: User-Agent %q from %s; want docxy/<version>", r.Peer.UserAgent, r.Peer)
		}
	}
	hits := w.cdn.Since(cdnMark)
	if wantCDN && len(hits) == 0 {
		t.Errorf("CDN: no hits; want docxy to follow the registry's redirects")
	}
	if !wantCDN && len(hits) > 0 {
		t.Errorf("CDN: %d hits; want none (redirects off)", len(hits))
	}
	var bytes int64
	for _, h := range hits {
		bytes += h.Bytes
		if !h.Peer.IsDocxy() {
			t.Errorf("CDN: %s %s came from %s; want only docxy", h.Method, h.Path, h.Peer)
		}
		if h.Auth {
			t.Errorf("CDN: %s %s carried an Authorization header; a redirect target must not get the registry token", h.Method, h.Path)
		}
		if !strings.HasPrefix(h.Peer.UserAgent, "docxy/") {
			t.Errorf("CDN: User-Agent %q from %s; want docxy/<version>", h.Peer.UserAgent, h.Peer)
		}
	}
	t.Logf("upstream side saw %d token requests and %d CDN hits (%d bytes), all attributed to docxy", len(toks), len(hits), bytes)
}

// tlsClientFor returns an HTTP transport trusting caPEM.
func tlsClientFor(caPEM []byte) (*http.Transport, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("no certificate in CA PEM")
	}
	return &http.Transport{
		TLSClientConfig:    &tls.Config{RootCAs: pool},
		DisableCompression: true,
	}, nil
}
