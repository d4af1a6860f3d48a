package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/docxy/docxy/config"
	"strings"
	"syscall"
	"testing"
	"time"
)

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("cannot listen: %s", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// TestSIGHUPReloadsAccessRulesAndSIGTERMStops runs the real main loop: a denied repository is
// allowed after the file changes and SIGHUP arrives, and SIGTERM makes run return.
func TestSIGHUPReloadsAccessRulesAndSIGTERMStops(t *testing.T) {
	port := freePort(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "docxy.toml")
	write := func(deny string) {
		t.Helper()
		cfg := fmt.Sprintf(`
[server]
listen = "127.0.0.1:%d"
shutdown_timeout = "2s"
[cache]
dir = %q
[log]
access_log = false
[[registry]]
name = "hub"
upstream = "http://127.0.0.1:1"
deny = [%s]
`, port, filepath.Join(dir, "cache"), deny)
		if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
			t.Fatalf("cannot write config: %s", err)
		}
	}
	write(`"blocked/**"`)
	cfg, err := loadConfig(path)
	if err != nil {
		t.Fatalf("cannot load config: %s", err)
	}
	done := make(chan error, 1)
	go func() { done <- run(cfg, path) }()

	url := fmt.Sprintf("http://127.0.0.1:%d/v2/blocked/app/manifests/latest", port)
	status := func() int {
		resp, err := http.Get(url)
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	waitFor := func(want int) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for status() != want {
			if time.Now().After(deadline) {
				t.Fatalf("unexpected status for %s: got %d; want %d", url, status(), want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitFor(http.StatusForbidden)

	write("")
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatalf("cannot send SIGHUP: %s", err)
	}
	waitFor(http.StatusBadGateway) // allowed now: the (unreachable) upstream is tried

	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatalf("cannot send SIGTERM: %s", err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run returned an error: %s", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("run did not return after SIGTERM")
	}
}

// TestInstallScriptIntoThrowawayRoot runs install.sh as an operator would, into a temporary root.
func TestInstallScriptIntoThrowawayRoot(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "docxy")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("cannot build docxy: %s\n%s", err, out)
	}
	root := filepath.Join(dir, "root")
	out, err := exec.Command("./install.sh", "--root", root, "--binary", bin, "--no-start",
		"--public-url", "https://mirror.example.com").CombinedOutput()
	if err != nil {
		t.Fatalf("install.sh failed: %s\n%s", err, out)
	}
	for _, f := range []string{"/usr/local/bin/docxy", "/etc/docxy/config.toml", "/etc/systemd/system/docxy.service"} {
		if _, err := os.Stat(filepath.Join(root, f)); err != nil {
			t.Fatalf("install.sh did not install %s: %s", f, err)
		}
	}
	cfg, err := loadConfig(filepath.Join(root, "/etc/docxy/config.toml"))
	if err != nil {
		t.Fatalf("installed configuration does not load: %s", err)
	}
	if cfg.Cache.Dir != "/var/cache/docxy" || cfg.Server.PublicBaseURL != "https://mirror.example.com" {
		t.Fatalf("unexpected installed configuration: cache.dir %q, public_base_url %q", cfg.Cache.Dir, cfg.Server.PublicBaseURL)
	}
	unit, _ := os.ReadFile(filepath.Join(root, "/etc/systemd/system/docxy.service"))
	if !strings.Contains(string(unit), "ExecStart=/usr/local/bin/docxy -config /etc/docxy/config.toml") {
		t.Fatalf("unexpected unit:\n%s", unit)
	}
	// A second run keeps the operator's configuration.
	if err := os.WriteFile(filepath.Join(root, "/etc/docxy/config.toml"), []byte("[server]\nlisten = \":6000\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("./install.sh", "--root", root, "--binary", bin, "--no-start").CombinedOutput(); err != nil {
		t.Fatalf("second install.sh failed: %s\n%s", err, out)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "/etc/docxy/config.toml")); string(b) != "[server]\nlisten = \":6000\"\n" {
		t.Fatalf("install.sh overwrote the existing configuration:\n%s", b)
	}
}

// TestSlowClientIsCutOff: a client that trickles its request headers (slow-loris) is disconnected
// after read_timeout instead of holding a connection forever.
func TestSlowClientIsCutOff(t *testing.T) {
	port := freePort(t)
	cfg, err := config.Parse([]byte(fmt.Sprintf(`
[server]
listen = "127.0.0.1:%d"
read_timeout = "1s"
[cache]
disabled = true
[log]
access_log = false
`, port)), "test")
	if err != nil {
		t.Fatalf("cannot parse config: %s", err)
	}
	done := make(chan error, 1)
	go func() { done <- run(cfg, "") }()
	t.Cleanup(func() {
		_ = syscall.Kill(os.Getpid(), syscall.SIGTERM)
		<-done
	})
	var conn net.Conn
	deadline := time.Now().Add(10 * time.Second)
	for conn == nil {
		conn, err = net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			if time.Now().After(deadline) {
				t.Fatalf("docxy does not listen: %s", err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	defer conn.Close()
	// Trickle a header line byte by byte, never finishing the request.
	closed := make(chan struct{})
	go func() {
		buf := make([]byte, 512)
		for {
			if _, err := conn.Read(buf); err != nil {
				close(closed)
				return
			}
		}
	}()
	for _, b := range []byte("GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa") {
		select {
		case <-closed:
			return // cut off: what we want
		case <-time.After(100 * time.Millisecond):
		}
		if _, err := conn.Write([]byte{b}); err != nil {
			return // the server closed the connection
		}
	}
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatalf("a client trickling its headers was not disconnected")
	}
}

// TestPlainHTTPRedirectsToHTTPS: with both listeners on, plain HTTP answers 301 to the public HTTPS
// URL, except /health; the HTTPS listener serves the registry API with the configured certificate.
func TestPlainHTTPRedirectsToHTTPS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	writeSelfSigned(t, certFile, keyFile)
	port, tlsPort := freePort(t), freePort(t)
	cfg, err := config.Parse([]byte(fmt.Sprintf(`
[server]
listen = "127.0.0.1:%d"
tls_listen = "127.0.0.1:%d"
public_base_url = "https://localhost:%d"
[tls]
cert_file = %q
key_file = %q
[cache]
disabled = true
[log]
access_log = false
`, port, tlsPort, tlsPort, certFile, keyFile)), "test")
	if err != nil {
		t.Fatalf("cannot parse config: %s", err)
	}
	done := make(chan error, 1)
	go func() { done <- run(cfg, "") }()
	t.Cleanup(func() {
		_ = syscall.Kill(os.Getpid(), syscall.SIGTERM)
		<-done
	})
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	var resp *http.Response
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err = client.Get(fmt.Sprintf("http://127.0.0.1:%d/v2/library/nginx/manifests/latest", port))
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("docxy does not listen: %s", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	resp.Body.Close()
	if want := fmt.Sprintf("https://localhost:%d/v2/library/nginx/manifests/latest", tlsPort); resp.StatusCode != http.StatusMovedPermanently || resp.Header.Get("Location") != want {
		t.Fatalf("unexpected answer on plain HTTP: %d Location %q; want 301 %q", resp.StatusCode, resp.Header.Get("Location"), want)
	}
	resp, err = client.Get(fmt.Sprintf("http://127.0.0.1:%d/health", port))
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("unexpected /health on plain HTTP: %v %v", resp, err)
	}
	resp.Body.Close()

	pool := x509.NewCertPool()
	certPEM, _ := os.ReadFile(certFile)
	pool.AppendCertsFromPEM(certPEM)
	tlsClient := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost"}}}
	resp, err = tlsClient.Get(fmt.Sprintf("https://127.0.0.1:%d/health", tlsPort))
	if err != nil {
		t.Fatalf("HTTPS with the configured certificate failed: %s", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("unexpected /health over HTTPS: %d", resp.StatusCode)
	}
}

func writeSelfSigned(t *testing.T, certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost"}, DNSNames: []string{"localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA: true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, pemEncode("CERTIFICATE", der), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pemEncode("EC PRIVATE KEY", keyDER), 0o600); err != nil {
		t.Fatal(err)
	}
}

func pemEncode(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}
