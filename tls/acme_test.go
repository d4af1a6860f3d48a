package tls

import (
	"bytes"
	stdtls "crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

func TestNewACMEErrors(t *testing.T) {
	dir := t.TempDir()
	noPEM := filepath.Join(dir, "empty.pem")
	writeFile(t, noPEM, []byte("not a certificate"))

	f := func(cfg ACMEConfig, want string) {
		t.Helper()
		_, err := NewACME(cfg)
		if err == nil {
			t.Fatalf("expected an error for %+v", cfg)
		}
		if !strings.HasPrefix(err.Error(), "tls: ") || !strings.Contains(err.Error(), want) {
			t.Fatalf("unexpected error; got %q; want it to contain %q", err, want)
		}
	}
	ok := func(mod func(*ACMEConfig)) ACMEConfig {
		cfg := ACMEConfig{Domains: []string{"registry.example.com"}, CacheDir: filepath.Join(dir, "cache")}
		mod(&cfg)
		return cfg
	}

	f(ok(func(c *ACMEConfig) { c.Domains = nil }), "without domains")
	f(ok(func(c *ACMEConfig) { c.Domains = []string{"*.example.com"} }), "wildcards")
	f(ok(func(c *ACMEConfig) { c.Domains = []string{"192.0.2.1"} }), "IP addresses")
	f(ok(func(c *ACMEConfig) { c.Domains = []string{"registry"} }), "fully qualified")
	f(ok(func(c *ACMEConfig) { c.Domains = []string{"a.example.com", " b.example.com"} }), "spaces")
	f(ok(func(c *ACMEConfig) { c.CacheDir = "" }), "without a cache directory")
	f(ok(func(c *ACMEConfig) { c.CacheDir = filepath.Join(noPEM, "sub") }), "cannot create ACME cache directory")
	f(ok(func(c *ACMEConfig) { c.DirectoryURL = "http://127.0.0.1:14000/dir" }), "want an https:// URL")
	f(ok(func(c *ACMEConfig) { c.CARootFile = filepath.Join(dir, "missing.pem") }), "cannot read ACME CA root file")
	f(ok(func(c *ACMEConfig) { c.CARootFile = noPEM }), "holds no PEM certificate")
}

func TestACMETLSConfig(t *testing.T) {
	a, err := NewACME(ACMEConfig{Domains: []string{"docxy.test"}, CacheDir: t.TempDir()})
	if err != nil {
		t.Fatalf("unexpected error: %s", err)
	}
	cfg := a.TLSConfig()
	if got, want := strings.Join(cfg.NextProtos, ","), "http/1.1,acme-tls/1"; got != want {
		t.Fatalf("unexpected NextProtos; got %q; want %q", got, want)
	}
	if cfg.MinVersion != stdtls.VersionTLS12 {
		t.Fatalf("unexpected MinVersion; got %x; want %x", cfg.MinVersion, stdtls.VersionTLS12)
	}

	// Requests that are not pending challenges for a configured domain get false, so the
	// caller answers 404; nothing here contacts the CA.
	f := func(host, path string) {
		t.Helper()
		if body, ok := a.HTTPChallengeResponse(host, path); ok {
			t.Fatalf("unexpected challenge response for %s%s: %q", host, path, body)
		}
	}
	f("docxy.test", "/v2/")
	f("docxy.test", "/.well-known/acme-challenge/unknown-token")
	f("docxy.test:80", "/.well-known/acme-challenge/unknown-token")
	f("other.test", "/.well-known/acme-challenge/unknown-token")
}

// TestACMEPebble gets certificates from Pebble, Let's Encrypt's test CA, through TLS-ALPN-01
// and HTTP-01 answered by fasthttp servers on loopback ports, then serves them from the cache.
func TestACMEPebble(t *testing.T) {
	pebbleBin := findTool(t, "pebble")
	challtestsrvBin := findTool(t, "pebble-challtestsrv")

	// Pebble's own HTTPS endpoints (ACME and management) get a certificate from a CA made
	// here; CARootFile makes docxy trust it.
	dir := t.TempDir()
	ca := newTestCA(t, "docxy test root for pebble", nil)
	pebbleKey := newECKey(t)
	pebbleCert := ca.issue(t, pebbleKey, "localhost", "127.0.0.1")
	writeFile(t, filepath.Join(dir, "pebble-cert.pem"), certPEM(pebbleCert))
	writeFile(t, filepath.Join(dir, "pebble-key.pem"), keyPEM(t, "EC PRIVATE KEY", pebbleKey))
	caFile := filepath.Join(dir, "ca.pem")
	writeFile(t, caFile, ca.pem())

	// The ACME instances are created before the servers that answer challenges, and the
	// servers before Pebble, because Pebble's config names the servers' ports.
	cacheALPN, cacheHTTP := filepath.Join(dir, "cache-alpn"), filepath.Join(dir, "cache-http")
	dnsPort := freeDNSPort(t)
	acmePort, mgmtPort, challMgmtPort := freeTCPPort(t), freeTCPPort(t), freeTCPPort(t)
	dirURL := fmt.Sprintf("https://127.0.0.1:%d/dir", acmePort)
	alpn, err := NewACME(ACMEConfig{Email: "ops@docxy.test", Domains: []string{"docxy.test"}, CacheDir: cacheALPN, DirectoryURL: dirURL, CARootFile: caFile})
	if err != nil {
		t.Fatalf("cannot create ACME: %s", err)
	}
	viaHTTP, err := NewACME(ACMEConfig{Domains: []string{"http.docxy.test"}, CacheDir: cacheHTTP, DirectoryURL: dirURL, CARootFile: caFile})
	if err != nil {
		t.Fatalf("cannot create ACME: %s", err)
	}

	// The HTTPS server answers TLS-ALPN-01 for docxy.test. It refuses http.docxy.test, as if
	// port 443 were unreachable for that name, so that order falls back to HTTP-01.
	tlsCfg := alpn.TLSConfig()
	tlsCfg.GetCertificate = func(hello *stdtls.ClientHelloInfo) (*stdtls.Certificate, error) {
		if hello.ServerName == "http.docxy.test" {
			return nil, errors.New("TLS-ALPN-01 is off for http.docxy.test in this test")
		}
		return alpn.GetCertificate(hello)
	}
	tlsLn := tlsListen(t, tlsCfg)
	tlsAddr := serveListener(t, tlsLn, func(ctx *fasthttp.RequestCtx) { ctx.WriteString("ok") })

	// The plain-HTTP server answers HTTP-01 the way docxy's fasthttp handler does, for
	// viaHTTP only: docxy.test can be validated by TLS-ALPN-01 alone.
	var http01Answers atomic.Int64
	httpLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("cannot listen: %s", err)
	}
	serveListener(t, httpLn, func(ctx *fasthttp.RequestCtx) {
		body, ok := viaHTTP.HTTPChallengeResponse(string(ctx.Host()), string(ctx.Path()))
		if !ok {
			ctx.Error("not found", fasthttp.StatusNotFound)
			return
		}
		http01Answers.Add(1)
		ctx.SetBody(body)
	})

	startProcess(t, challtestsrvBin, nil,
		"-dnsserver", fmt.Sprintf("127.0.0.1:%d", dnsPort),
		"-defaultIPv4", "127.0.0.1", "-defaultIPv6", "",
		"-http01", "", "-https01", "", "-tlsalpn01", "", "-doh", "",
		"-management", fmt.Sprintf("127.0.0.1:%d", challMgmtPort))
	waitForTCP(t, fmt.Sprintf("127.0.0.1:%d", challMgmtPort))

	pebbleConfig := map[string]any{"pebble": map[string]any{
		"listenAddress":           fmt.Sprintf("127.0.0.1:%d", acmePort),
		"managementListenAddress": fmt.Sprintf("127.0.0.1:%d", mgmtPort),
		"certificate":             filepath.Join(dir, "pebble-cert.pem"),
		"privateKey":              filepath.Join(dir, "pebble-key.pem"),
		"httpPort":                httpLn.Addr().(*net.TCPAddr).Port, // where the validator dials for HTTP-01
		"tlsPort":                 tlsLn.Addr().(*net.TCPAddr).Port,  // where the validator dials for TLS-ALPN-01
		"ocspResponderURL":        "",
		"keyAlgorithm":            "ecdsa",
		"profiles":                map[string]any{"default": map[string]any{"description": "docxy test", "validityPeriod": 7776000}},
	}}
	data, err := json.Marshal(pebbleConfig)
	if err != nil {
		t.Fatalf("cannot marshal pebble config: %s", err)
	}
	writeFile(t, filepath.Join(dir, "pebble.json"), data)
	startProcess(t, pebbleBin, []string{
		"PEBBLE_VA_NOSLEEP=1",      // validate at once instead of after a random 0-5 s
		"PEBBLE_WFE_NONCEREJECT=0", // no deliberate badNonce errors
		"PEBBLE_AUTHZREUSE=0",      // every order really runs its challenge
	}, "-config", filepath.Join(dir, "pebble.json"), "-dnsserver", fmt.Sprintf("127.0.0.1:%d", dnsPort))

	// Pebble makes a new root at every start; fetch it from the management API.
	mgmt := &http.Client{
		Transport: &http.Transport{TLSClientConfig: &stdtls.Config{RootCAs: ca.pool()}},
		Timeout:   5 * time.Second,
	}
	var rootPEM []byte
	waitFor(t, "pebble to serve its root", func() bool {
		resp, err := mgmt.Get(fmt.Sprintf("https://127.0.0.1:%d/roots/0", mgmtPort))
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		rootPEM, err = io.ReadAll(resp.Body)
		return err == nil && resp.StatusCode == http.StatusOK
	})
	pebbleRoots := x509.NewCertPool()
	if !pebbleRoots.AppendCertsFromPEM(rootPEM) {
		t.Fatalf("cannot parse pebble root %q", rootPEM)
	}

	// TLS-ALPN-01: the first handshake for docxy.test orders the certificate and waits for it.
	leaf := fetchLeaf(t, tlsAddr, "docxy.test", pebbleRoots)
	if got := strings.Join(leaf.DNSNames, ","); got != "docxy.test" {
		t.Fatalf("unexpected DNS names; got %q; want %q", got, "docxy.test")
	}
	if again := fetchLeaf(t, tlsAddr, "docxy.test", pebbleRoots); !sameSerial(again, leaf) {
		t.Fatalf("unexpected serial on the second connection; got %s; want %s", again.SerialNumber, leaf.SerialNumber)
	}

	// HTTP-01. The bare ClientHelloInfo advertises no ECDSA support, so this also covers
	// autocert's RSA certificates.
	cert, err := viaHTTP.GetCertificate(&stdtls.ClientHelloInfo{ServerName: "http.docxy.test"})
	if err != nil {
		t.Fatalf("cannot get a certificate through HTTP-01: %s", err)
	}
	verifyChain(t, cert, "http.docxy.test", pebbleRoots)
	if http01Answers.Load() == 0 {
		t.Fatalf("the HTTP-01 handler never answered a challenge")
	}

	// A restart reuses the cached certificate: a CA that cannot be reached is never asked.
	restarted, err := NewACME(ACMEConfig{Domains: []string{"docxy.test"}, CacheDir: cacheALPN, DirectoryURL: "https://127.0.0.1:1/dir"})
	if err != nil {
		t.Fatalf("cannot create ACME: %s", err)
	}
	hello := &stdtls.ClientHelloInfo{
		ServerName:       "docxy.test",
		SignatureSchemes: []stdtls.SignatureScheme{stdtls.ECDSAWithP256AndSHA256},
		SupportedCurves:  []stdtls.CurveID{stdtls.CurveP256},
		CipherSuites:     []uint16{stdtls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256},
	}
	cached, err := restarted.GetCertificate(hello)
	if err != nil {
		t.Fatalf("cannot get the cached certificate: %s", err)
	}
	if !sameSerial(verifyChain(t, cached, "docxy.test", pebbleRoots), leaf) {
		t.Fatalf("restart served a different certificate than the cached one")
	}
}

// verifyChain checks that cert is valid for name under roots and returns its leaf.
func verifyChain(t *testing.T, cert *stdtls.Certificate, name string, roots *x509.CertPool) *x509.Certificate {
	t.Helper()
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		t.Fatalf("cannot parse leaf: %s", err)
	}
	inter := x509.NewCertPool()
	for _, der := range cert.Certificate[1:] {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatalf("cannot parse intermediate: %s", err)
		}
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: roots, Intermediates: inter}); err != nil {
		t.Fatalf("cannot verify certificate for %s: %s", name, err)
	}
	return leaf
}

// findTool returns the path of a test tool from PATH or from the directory `make tools`
// installs to: $TOOLS_BIN, default $HOME/.cache/docxy-tools/bin (see the Makefile).
func findTool(t *testing.T, name string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	toolsDir := os.Getenv("TOOLS_BIN")
	if toolsDir == "" {
		home, _ := os.UserHomeDir()
		toolsDir = filepath.Join(home, ".cache", "docxy-tools", "bin")
	}
	p := filepath.Join(toolsDir, name)
	if _, err := os.Stat(p); err == nil {
		return p
	}
	if testing.Short() {
		t.Skipf("%s not found in PATH or %s; `make tools` installs it", name, toolsDir)
	}
	t.Fatalf("%s not found in PATH or %s; `make tools` installs it (run with -short to skip this test)", name, toolsDir)
	return ""
}

// startProcess starts bin and kills it, and only it, when the test ends. Its output is shown
// if the test fails.
func startProcess(t *testing.T, bin string, env []string, args ...string) {
	t.Helper()
	var out syncBuffer
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("cannot start %s: %s", bin, err)
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("%s output:\n%s", filepath.Base(bin), out.String())
		}
	})
}

func freeTCPPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("cannot listen: %s", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// freeDNSPort returns a loopback port free for both UDP and TCP, as the DNS server binds both.
func freeDNSPort(t *testing.T) int {
	t.Helper()
	for range 20 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("cannot listen: %s", err)
		}
		port := pc.LocalAddr().(*net.UDPAddr).Port
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		pc.Close()
		if err == nil {
			ln.Close()
			return port
		}
	}
	t.Fatalf("cannot find a port free for both UDP and TCP")
	return 0
}

func waitForTCP(t *testing.T, addr string) {
	t.Helper()
	waitFor(t, addr+" to accept connections", func() bool {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return false
		}
		c.Close()
		return true
	})
}

// syncBuffer is a bytes.Buffer that a child process's output goroutines may write concurrently.
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
