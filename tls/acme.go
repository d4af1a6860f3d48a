package tls

import (
	stdtls "crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"

	"golang.org/x/crypto/acme"
	"golang.org/x/crypto/acme/autocert"
)

// ACMEConfig configures certificates obtained from an ACME CA such as Let's Encrypt.
type ACMEConfig struct {
	// Email is the contact address registered with the ACME account; the CA may send expiry
	// and policy notices to it. Optional.
	Email string

	// Domains are the host names docxy gets certificates for. Required. A TLS handshake
	// for any other name is refused, so a stranger cannot make docxy request certificates
	// for arbitrary names and burn the CA's rate limits. Wildcards and IP addresses are not
	// supported: TLS-ALPN-01 and HTTP-01 cannot validate them.
	Domains []string

	// CacheDir keeps the account key and the issued certificates across restarts. Required:
	// without it every restart would order new certificates and soon hit the CA's rate limits.
	// It is created with mode 0700 if missing.
	CacheDir string

	// DirectoryURL is the ACME directory. Empty means Let's Encrypt production
	// (autocert.DefaultACMEDirectory). Use
	// https://acme-staging-v02.api.letsencrypt.org/directory while testing a setup.
	DirectoryURL string

	// CARootFile is an optional PEM file with CA certificates trusted, in addition to the
	// system roots, for the HTTPS connection to DirectoryURL. It is for test or private ACME
	// servers such as Pebble or step-ca; leave it empty for public CAs.
	CARootFile string
}

// ACME serves certificates obtained and renewed from an ACME CA through autocert.
//
// The CA validates a domain with TLS-ALPN-01 on the HTTPS port (served by GetCertificate,
// provided the listener uses TLSConfig) or, if that fails, with HTTP-01 on port 80 (served by
// HTTPChallengeResponse).
type ACME struct {
	m *autocert.Manager

	// httpHandler answers HTTP-01 challenges. It is built once in NewACME because
	// autocert.Manager.HTTPHandler is also what enables HTTP-01 on the Manager.
	httpHandler http.Handler
}

// NewACME checks cfg and prepares an ACME certificate manager. It contacts the CA only at the
// first handshake for a domain that has no cached certificate.
//
// Using it means agreeing to the CA's terms of service on the operator's behalf.
func NewACME(cfg ACMEConfig) (*ACME, error) {
	if len(cfg.Domains) == 0 {
		return nil, fmt.Errorf("tls: cannot use ACME without domains; list the host names clients use to reach docxy")
	}
	for _, d := range cfg.Domains {
		if err := checkACMEDomain(d); err != nil {
			return nil, err
		}
	}
	if cfg.CacheDir == "" {
		return nil, fmt.Errorf("tls: cannot use ACME without a cache directory; it keeps the account key and certificates across restarts")
	}
	if err := os.MkdirAll(cfg.CacheDir, 0o700); err != nil {
		return nil, fmt.Errorf("tls: cannot create ACME cache directory: %w", err)
	}

	dirURL := cfg.DirectoryURL
	if dirURL == "" {
		dirURL = autocert.DefaultACMEDirectory
	}
	if u, err := url.Parse(dirURL); err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("tls: cannot use ACME directory URL %q; want an https:// URL such as %s", dirURL, autocert.DefaultACMEDirectory)
	}

	httpClient := http.DefaultClient
	if cfg.CARootFile != "" {
		pool, err := loadCAPool(cfg.CARootFile)
		if err != nil {
			return nil, err
		}
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = &stdtls.Config{RootCAs: pool, MinVersion: stdtls.VersionTLS12}
		httpClient = &http.Client{Transport: tr}
	}

	m := &autocert.Manager{
		Prompt:     autocert.AcceptTOS,
		Email:      cfg.Email,
		HostPolicy: autocert.HostWhitelist(cfg.Domains...),
		Cache:      autocert.DirCache(cfg.CacheDir),
		Client: &acme.Client{
			DirectoryURL: dirURL,
			HTTPClient:   httpClient,
			UserAgent:    "docxy",
		},
	}
	return &ACME{m: m, httpHandler: m.HTTPHandler(http.NotFoundHandler())}, nil
}

// GetCertificate returns the certificate for hello.ServerName, ordering one from the CA on the
// first handshake for a domain without a cached certificate (that handshake waits for the
// order, typically seconds), and answers TLS-ALPN-01 challenges. It has the signature of
// crypto/tls.Config.GetCertificate.
func (a *ACME) GetCertificate(hello *stdtls.ClientHelloInfo) (*stdtls.Certificate, error) {
	return a.m.GetCertificate(hello)
}

// TLSConfig returns ServerConfig(a.GetCertificate) with "acme-tls/1" added to NextProtos.
// Without it crypto/tls refuses the CA's TLS-ALPN-01 handshake, which offers only that protocol.
func (a *ACME) TLSConfig() *stdtls.Config {
	cfg := ServerConfig(a.GetCertificate)
	cfg.NextProtos = append(cfg.NextProtos, acme.ALPNProto)
	return cfg
}

// HTTPChallengeResponse returns the body to serve for an HTTP-01 challenge request to host and
// path, and false if the request is not a pending challenge for one of the configured domains.
// A plain-HTTP (fasthttp) handler calls it for paths under /.well-known/acme-challenge/ and
// responds 404 on false. host may carry a port. The returned slice belongs to the caller.
func (a *ACME) HTTPChallengeResponse(host, path string) ([]byte, bool) {
	if !strings.HasPrefix(path, "/.well-known/acme-challenge/") {
		return nil, false
	}
	// The host policy matches bare names; validators on a non-default port send "name:port".
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	req := &http.Request{
		Method: http.MethodGet,
		URL:    &url.URL{Path: path},
		Host:   host,
		Header: make(http.Header),
	}
	var w bodyRecorder
	a.httpHandler.ServeHTTP(&w, req)
	if w.code != http.StatusOK {
		return nil, false
	}
	return w.body, true
}

// bodyRecorder is the smallest http.ResponseWriter that captures autocert's HTTP-01 answer.
// It stands in for httptest.ResponseRecorder so the test package stays out of the binary.
type bodyRecorder struct {
	header http.Header
	code   int
	body   []byte
}

func (w *bodyRecorder) Header() http.Header {
	if w.header == nil {
		w.header = make(http.Header)
	}
	return w.header
}

func (w *bodyRecorder) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
}

func (w *bodyRecorder) Write(p []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	w.body = append(w.body, p...)
	return len(p), nil
}

func checkACMEDomain(d string) error {
	switch {
	case strings.TrimSpace(d) != d || d == "":
		return fmt.Errorf("tls: cannot use ACME domain %q: it is empty or has surrounding spaces", d)
	case strings.Contains(d, "*"):
		return fmt.Errorf("tls: cannot use ACME domain %q: wildcards need DNS-01 validation, which docxy does not do; list each host name", d)
	case net.ParseIP(strings.Trim(d, "[]")) != nil:
		return fmt.Errorf("tls: cannot use ACME domain %q: certificates for IP addresses are not supported; use a DNS name", d)
	case !strings.Contains(strings.Trim(d, "."), "."):
		// autocert refuses single-label server names in GetCertificate.
		return fmt.Errorf("tls: cannot use ACME domain %q: want a fully qualified name such as registry.example.com", d)
	}
	return nil
}

func loadCAPool(path string) (*x509.CertPool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tls: cannot read ACME CA root file: %w", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		// No system roots (e.g. a scratch container): the file alone must do.
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("tls: ACME CA root file %q holds no PEM certificate", path)
	}
	return pool, nil
}
