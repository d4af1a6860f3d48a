package tls

import (
	stdtls "crypto/tls"
)

// ServerConfig returns the *crypto/tls.Config for docxy's HTTPS listener, serving the certificates
// returned by getCert (Reloader.GetCertificate or ACME.GetCertificate).
//
// The caller owns the returned Config and may adjust it before the first handshake; it must not
// modify it afterwards.
func ServerConfig(getCert func(*stdtls.ClientHelloInfo) (*stdtls.Certificate, error)) *stdtls.Config {
	return &stdtls.Config{
		GetCertificate: getCert,

		// TLS 1.0 and 1.1 are deprecated (RFC 8996) and every Docker, containerd and
		// podman release in use speaks TLS 1.2+.
		MinVersion: stdtls.VersionTLS12,

		// fasthttp serves HTTP/1.1 only. Offering just "http/1.1" means clients that
		// prefer h2 negotiate h1 instead of sending an HTTP/2 preface we cannot parse.
		NextProtos: []string{"http/1.1"},

		// CipherSuites, CurvePreferences and the session ticket keys are left to
		// crypto/tls on purpose: its defaults track current advice (AEAD-only suites,
		// post-quantum key exchange), and when SessionTicketKey is unset it generates
		// random ticket keys and rotates them itself, so resumption keeps forward
		// secrecy. Setting a fixed key here would silently give that up.
	}
}
