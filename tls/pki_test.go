package tls

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	stdtls "crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// testCA is a CA generated for one test; pki_test.go holds no fixed key material, so nothing
// expires or needs regenerating.
type testCA struct {
	cert *x509.Certificate
	key  crypto.Signer
}

// newTestCA returns a self-signed root when parent is nil, else an intermediate signed by parent.
func newTestCA(t *testing.T, name string, parent *testCA) *testCA {
	t.Helper()
	key := newECKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          newSerial(t),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	signerCert, signerKey := tmpl, crypto.Signer(key)
	if parent != nil {
		signerCert, signerKey = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signerCert, key.Public(), signerKey)
	if err != nil {
		t.Fatalf("cannot create CA certificate: %s", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("cannot parse CA certificate: %s", err)
	}
	return &testCA{cert: cert, key: key}
}

func (ca *testCA) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

func (ca *testCA) pem() []byte {
	return certPEM(ca.cert)
}

// issue returns a server certificate for key, valid for names (DNS names or IP addresses).
func (ca *testCA) issue(t *testing.T, key crypto.Signer, names ...string) *x509.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: newSerial(t),
		Subject:      pkix.Name{CommonName: names[0]},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if _, ok := key.(*rsa.PrivateKey); ok {
		tmpl.KeyUsage |= x509.KeyUsageKeyEncipherment
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		t.Fatalf("cannot create certificate: %s", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("cannot parse certificate: %s", err)
	}
	return cert
}

func newSerial(t *testing.T) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		t.Fatalf("cannot generate serial: %s", err)
	}
	return n
}

func newECKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("cannot generate ECDSA key: %s", err)
	}
	return k
}

func newRSAKey(t *testing.T) *rsa.PrivateKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatalf("cannot generate RSA key: %s", err)
	}
	return k
}

func newEd25519Key(t *testing.T) ed25519.PrivateKey {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatalf("cannot generate Ed25519 key: %s", err)
	}
	return k
}

func certPEM(certs ...*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

// keyPEM encodes key in the PEM block type that names its encoding: "EC PRIVATE KEY" (SEC 1),
// "RSA PRIVATE KEY" (PKCS #1) or "PRIVATE KEY" (PKCS #8).
func keyPEM(t *testing.T, pemType string, key crypto.Signer) []byte {
	t.Helper()
	var der []byte
	var err error
	switch pemType {
	case "EC PRIVATE KEY":
		der, err = x509.MarshalECPrivateKey(key.(*ecdsa.PrivateKey))
	case "RSA PRIVATE KEY":
		der = x509.MarshalPKCS1PrivateKey(key.(*rsa.PrivateKey))
	case "PRIVATE KEY":
		der, err = x509.MarshalPKCS8PrivateKey(key)
	default:
		t.Fatalf("BUG: unknown PEM key type %q", pemType)
	}
	if err != nil {
		t.Fatalf("cannot marshal %s: %s", pemType, err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemType, Bytes: der})
}

// ecPair returns a new ECDSA certificate for docxy.test and its PEM files' contents.
func ecPair(t *testing.T, ca *testCA) (*x509.Certificate, []byte, []byte) {
	t.Helper()
	key := newECKey(t)
	cert := ca.issue(t, key, "docxy.test")
	return cert, certPEM(cert), keyPEM(t, "EC PRIVATE KEY", key)
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatalf("cannot write %s: %s", path, err)
	}
}

// writePair writes cert.pem and key.pem into dir and returns their paths.
func writePair(t *testing.T, dir string, certData, keyData []byte) (string, string) {
	t.Helper()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	writeFile(t, certFile, certData)
	writeFile(t, keyFile, keyData)
	return certFile, keyFile
}

// serveTLS serves "ok" over HTTPS with fasthttp, docxy's server, on a loopback port and
// returns its address. The server is shut down when the test ends.
func serveTLS(t *testing.T, cfg *stdtls.Config) string {
	t.Helper()
	return serveListener(t, tlsListen(t, cfg), func(ctx *fasthttp.RequestCtx) { ctx.WriteString("ok") })
}

func tlsListen(t *testing.T, cfg *stdtls.Config) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("cannot listen: %s", err)
	}
	return stdtls.NewListener(ln, cfg)
}

func serveListener(t *testing.T, ln net.Listener, h fasthttp.RequestHandler) string {
	t.Helper()
	s := &fasthttp.Server{Handler: h, Logger: testLogger{t}}
	errc := make(chan error, 1)
	go func() { errc <- s.Serve(ln) }()
	t.Cleanup(func() {
		if err := s.Shutdown(); err != nil {
			t.Errorf("cannot shut down server: %s", err)
		}
		select {
		case <-errc:
		case <-time.After(5 * time.Second):
			t.Errorf("server wasn't stopped")
		}
	})
	return ln.Addr().String()
}

// fetchLeaf makes a GET request over a new connection to addr, verifying the server as
// serverName against roots, and returns the leaf certificate the server presented.
func fetchLeaf(t *testing.T, addr, serverName string, roots *x509.CertPool) *x509.Certificate {
	t.Helper()
	resp, err := get(addr, serverName, roots)
	if err != nil {
		t.Fatalf("cannot GET https://%s/ as %s: %s", addr, serverName, err)
	}
	return resp.TLS.PeerCertificates[0]
}

// get makes a GET request over a new connection; no session cache is set, so the handshake is
// never resumed and always shows the server's current certificate.
func get(addr, serverName string, roots *x509.CertPool) (*http.Response, error) {
	c := &http.Client{
		Transport: &http.Transport{
			TLSClientConfig:   &stdtls.Config{RootCAs: roots, ServerName: serverName},
			DisableKeepAlives: true,
		},
		Timeout: 30 * time.Second,
	}
	resp, err := c.Get("https://" + addr + "/")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, errors.New("unexpected status " + resp.Status)
	}
	return resp, nil
}

func sameSerial(a, b *x509.Certificate) bool {
	return a.SerialNumber.Cmp(b.SerialNumber) == 0
}

// testLogger sends fasthttp's log lines, such as refused handshakes, to the test log.
type testLogger struct{ t *testing.T }

func (l testLogger) Printf(format string, args ...any) { l.t.Logf(format, args...) }
