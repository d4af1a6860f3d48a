package tls

import (
	"bytes"
	"context"
	stdtls "crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultWatchInterval is the polling interval Watch uses when it is given a non-positive one.
// Certificates are renewed days before they expire, so a minute of delay costs nothing.
const DefaultWatchInterval = time.Minute

// Reloader serves a certificate loaded from a PEM certificate file and a PEM key file, and swaps
// in a new one when Reload succeeds. GetCertificate takes no lock, so reloads never stall handshakes.
type Reloader struct {
	certFile string
	keyFile  string

	cert atomic.Pointer[stdtls.Certificate]

	mu       sync.Mutex // serializes Reload and protects certSeen and keySeen
	certSeen fileStamp  // certFile as stat-ed before the last load attempt
	keySeen  fileStamp  // keyFile as stat-ed before the last load attempt
}

// NewReloader loads the certificate chain from certFile and its private key from keyFile.
//
// certFile holds PEM "CERTIFICATE" blocks, the leaf first, optionally followed by intermediates.
// keyFile holds an unencrypted "EC PRIVATE KEY" (SEC 1), "RSA PRIVATE KEY" (PKCS #1) or
// "PRIVATE KEY" (PKCS #8) block. The error says which file is wrong and how.
func NewReloader(certFile, keyFile string) (*Reloader, error) {
	r := &Reloader{certFile: certFile, keyFile: keyFile}
	if err := r.Reload(); err != nil {
		return nil, err
	}
	return r, nil
}

// GetCertificate returns the current certificate. It has the signature of
// crypto/tls.Config.GetCertificate.
//
// The returned certificate is shared by all connections and must not be modified.
func (r *Reloader) GetCertificate(*stdtls.ClientHelloInfo) (*stdtls.Certificate, error) {
	return r.cert.Load(), nil
}

// Leaf returns the parsed leaf of the current certificate, never nil, e.g. to report its
// NotAfter and SerialNumber. The returned certificate is shared and must not be modified.
func (r *Reloader) Leaf() *x509.Certificate {
	return r.cert.Load().Leaf
}

// Reload re-reads the certificate and key files. On success new handshakes get the new
// certificate; on failure the current certificate stays in use and the error is returned.
func (r *Reloader) Reload() error {
	r.mu.Lock()
	defer r.mu.Unlock()

	// Stat before reading: if a file changes while we read it, the next Watch tick sees a
	// stamp that differs from this one and loads again.
	r.certSeen = statFile(r.certFile)
	r.keySeen = statFile(r.keyFile)

	cert, err := loadKeyPair(r.certFile, r.keyFile)
	if err != nil {
		return err
	}
	r.cert.Store(cert)
	return nil
}

// Watch checks the size, modification time and identity of the certificate and key files
// every interval and calls Reload when either has changed. This catches both renewals that
// rewrite the files in place (acme.sh) and renewals that swap a symlink or rename a new file
// over the old one (certbot). It polls rather than using inotify, which needs a dependency
// and watches an inode that a rename or symlink swap leaves behind. An in-place rewrite that
// keeps the size and lands within the filesystem's timestamp granularity of the previous write
// goes unnoticed; real renewals are days apart, and Reload (e.g. on SIGHUP) covers the rest.
//
// logf, if not nil, receives one line per reload and per failed reload; a failure is not
// repeated until the files change again. Watch returns when ctx is done.
func (r *Reloader) Watch(ctx context.Context, interval time.Duration, logf func(format string, args ...any)) {
	if interval <= 0 {
		interval = DefaultWatchInterval
	}
	if logf == nil {
		logf = func(string, ...any) {}
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		certStamp := statFile(r.certFile)
		keyStamp := statFile(r.keyFile)
		r.mu.Lock()
		changed := !certStamp.equal(r.certSeen) || !keyStamp.equal(r.keySeen)
		r.mu.Unlock()
		if !changed {
			continue
		}
		old := r.Leaf()
		if err := r.Reload(); err != nil {
			logf("%s; still serving the certificate with serial %s valid until %s", err, old.SerialNumber, old.NotAfter.Format(time.RFC3339))
			continue
		}
		leaf := r.Leaf()
		logf("tls: reloaded certificate from %q: serial %s, valid until %s", r.certFile, leaf.SerialNumber, leaf.NotAfter.Format(time.RFC3339))
	}
}

// fileStamp is what Watch compares to tell that a file changed.
type fileStamp struct {
	info os.FileInfo // nil if the file could not be stat-ed
}

func statFile(path string) fileStamp {
	fi, err := os.Stat(path) // Stat, not Lstat: follow certbot's live/ symlinks to the real files.
	if err != nil {
		return fileStamp{}
	}
	return fileStamp{info: fi}
}

func (a fileStamp) equal(b fileStamp) bool {
	if a.info == nil || b.info == nil {
		// A file that stays missing is no change, so a failure is logged once.
		return a.info == nil && b.info == nil
	}
	// os.SameFile compares device and inode: a file renamed into place with a preserved
	// mtime and the same size still counts as a change.
	return a.info.Size() == b.info.Size() && a.info.ModTime().Equal(b.info.ModTime()) && os.SameFile(a.info, b.info)
}

// loadKeyPair reads and parses the files. Before handing them to crypto/tls.X509KeyPair it
// checks the PEM block types itself, because X509KeyPair's errors name neither file and do
// not say that the two paths were swapped or that the key is encrypted.
func loadKeyPair(certFile, keyFile string) (*stdtls.Certificate, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("tls: cannot read certificate file: %w", err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("tls: cannot read key file: %w", err)
	}

	certTypes := pemTypes(certPEM)
	if !slices.Contains(certTypes, "CERTIFICATE") {
		if hasPrivateKey(certTypes) {
			return nil, fmt.Errorf("tls: cannot load certificate file %q: it holds a private key but no certificate; are the certificate and key paths swapped?", certFile)
		}
		return nil, fmt.Errorf("tls: cannot load certificate file %q: it holds no PEM \"CERTIFICATE\" block (found %s)", certFile, describeTypes(certTypes))
	}
	for i, b := 0, certPEM; ; i++ {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		if _, err := x509.ParseCertificate(block.Bytes); err != nil {
			return nil, fmt.Errorf("tls: cannot load certificate file %q: cannot parse its certificate #%d: %w", certFile, i+1, err)
		}
	}

	keyTypes := pemTypes(keyPEM)
	if slices.Contains(keyTypes, "ENCRYPTED PRIVATE KEY") || bytes.Contains(keyPEM, []byte("Proc-Type: 4,ENCRYPTED")) {
		return nil, fmt.Errorf("tls: cannot load key file %q: the private key is encrypted; docxy needs it unencrypted (e.g. `openssl pkey -in KEY -out KEY.plain`)", keyFile)
	}
	if !hasPrivateKey(keyTypes) {
		if slices.Contains(keyTypes, "CERTIFICATE") {
			return nil, fmt.Errorf("tls: cannot load key file %q: it holds a certificate but no private key; are the certificate and key paths swapped?", keyFile)
		}
		return nil, fmt.Errorf("tls: cannot load key file %q: it holds no PEM \"EC PRIVATE KEY\", \"RSA PRIVATE KEY\" or \"PRIVATE KEY\" block (found %s)", keyFile, describeTypes(keyTypes))
	}

	cert, err := stdtls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("tls: cannot use key file %q with certificate file %q: the key must belong to the first certificate in that file: %w", keyFile, certFile, err)
	}
	if cert.Leaf == nil {
		// X509KeyPair fills Leaf unless GODEBUG=x509keypairleaf=0; Leaf() must not return nil.
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("tls: cannot load certificate file %q: cannot parse its first certificate: %w", certFile, err)
		}
	}
	return &cert, nil
}

// pemTypes returns the types of the PEM blocks in data, in order.
func pemTypes(data []byte) []string {
	var types []string
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return types
		}
		types = append(types, block.Type)
	}
}

func hasPrivateKey(types []string) bool {
	return slices.Contains(types, "PRIVATE KEY") || slices.Contains(types, "EC PRIVATE KEY") || slices.Contains(types, "RSA PRIVATE KEY")
}

func describeTypes(types []string) string {
	if len(types) == 0 {
		return "no PEM data"
	}
	return fmt.Sprintf("%q", types)
}
