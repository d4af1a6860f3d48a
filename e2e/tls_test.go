package e2e

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestTLS serves docxy over HTTPS with an ECDSA and then an RSA certificate from a test CA that
// the clients trust, and resolves a digest through it with crane and a Go client.
func TestTLS(t *testing.T) {
	w := getWorld(t)
	dir := t.TempDir()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "docxy e2e test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, caPEM, 0o644); err != nil {
		t.Fatal(err)
	}

	for i, kind := range []struct {
		name string
		algo x509.PublicKeyAlgorithm
		gen  func() (crypto.Signer, error)
	}{
		{"ecdsa", x509.ECDSA, func() (crypto.Signer, error) { return ecdsa.GenerateKey(elliptic.P256(), rand.Reader) }},
		{"rsa", x509.RSA, func() (crypto.Signer, error) { return rsa.GenerateKey(rand.Reader, 2048) }},
	} {
		t.Run(kind.name, func(t *testing.T) {
			key, err := kind.gen()
			if err != nil {
				t.Fatal(err)
			}
			tmpl := &x509.Certificate{
				SerialNumber: big.NewInt(int64(i + 2)),
				Subject:      pkix.Name{CommonName: "localhost"},
				DNSNames:     []string{"localhost"},
				IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
				NotBefore:    time.Now().Add(-time.Hour),
				NotAfter:     time.Now().Add(24 * time.Hour),
				KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
				ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			}
			der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, key.Public(), caKey)
			if err != nil {
				t.Fatal(err)
			}
			keyDER, err := x509.MarshalPKCS8PrivateKey(key)
			if err != nil {
				t.Fatal(err)
			}
			certFile, keyFile := filepath.Join(dir, kind.name+".crt"), filepath.Join(dir, kind.name+".key")
			os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
			os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600)

			m := startMirror(t, mirrorOpts{Upstream: w.reg.URL, CertFile: certFile, KeyFile: keyFile})
			tokMark, cdnMark := w.tokens.Mark(), w.cdn.Mark()
			defer assertOnlyDocxy(t, w, tokMark, cdnMark, false)
			tr, err := tlsClientFor(caPEM)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get(m.URL + "/v2/")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.TLS == nil || len(resp.TLS.PeerCertificates) == 0 || resp.TLS.PeerCertificates[0].PublicKeyAlgorithm != kind.algo {
				t.Errorf("served certificate: got %+v; want a %s leaf", resp.TLS, kind.algo)
			}
			ch := parseChallenge(resp.Header.Get("WWW-Authenticate"))
			if resp.StatusCode != http.StatusUnauthorized || ch.params["realm"] != m.URL+"/auth/token" {
				t.Errorf("GET /v2/ over TLS: got %d %q; want 401 with realm %s", resp.StatusCode, resp.Header.Get("WWW-Authenticate"), m.URL+"/auth/token")
			}

			c := newCrane(t, "", "")
			c.env = append(c.env, "SSL_CERT_FILE="+caFile)
			got, err := c.run(t, clientTimeout, "digest", m.Host+"/"+w.seed.Hello.Ref())
			if err != nil {
				t.Fatal(err)
			}
			if got != w.seed.Hello.Digest {
				t.Errorf("crane digest over TLS: got %s; want %s", got, w.seed.Hello.Digest)
			}
			// A Go client fetching a blob over TLS, through the token dance at the https realm.
			rc := newRegClient(m.URL, "", "", tr)
			for d, size := range w.seed.Alpine.Blobs {
				resp := mustDo(t, rc, t.Context(), http.MethodHead, "/v2/"+w.seed.Alpine.Repo+"/blobs/"+d, pullScope(w.seed.Alpine.Repo), nil)
				resp.Body.Close()
				expectStatus(t, resp, http.StatusOK)
				if resp.ContentLength != size {
					t.Errorf("HEAD blob over TLS: Content-Length %d; want %d", resp.ContentLength, size)
				}
				break
			}
		})
	}
}
