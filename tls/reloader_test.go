package tls

import (
	"context"
	"crypto"
	stdtls "crypto/tls"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestReloaderKeyFormats(t *testing.T) {
	ca := newTestCA(t, "docxy test root", nil)
	f := func(pemType string, key crypto.Signer) {
		t.Helper()
		cert := ca.issue(t, key, "docxy.test")
		certFile, keyFile := writePair(t, t.TempDir(), certPEM(cert), keyPEM(t, pemType, key))
		r, err := NewReloader(certFile, keyFile)
		if err != nil {
			t.Fatalf("%s %T: unexpected error: %s", pemType, key, err)
		}
		if !sameSerial(r.Leaf(), cert) {
			t.Fatalf("%s %T: unexpected Leaf serial; got %s; want %s", pemType, key, r.Leaf().SerialNumber, cert.SerialNumber)
		}
		addr := serveTLS(t, ServerConfig(r.GetCertificate))
		if got := fetchLeaf(t, addr, "docxy.test", ca.pool()); !sameSerial(got, cert) {
			t.Fatalf("%s %T: unexpected served serial; got %s; want %s", pemType, key, got.SerialNumber, cert.SerialNumber)
		}
	}
	f("EC PRIVATE KEY", newECKey(t))
	f("RSA PRIVATE KEY", newRSAKey(t))
	f("PRIVATE KEY", newRSAKey(t))
	f("PRIVATE KEY", newECKey(t))
	f("PRIVATE KEY", newEd25519Key(t))
}

func TestReloaderServesChain(t *testing.T) {
	root := newTestCA(t, "docxy test root", nil)
	inter := newTestCA(t, "docxy test intermediate", root)
	key := newECKey(t)
	leaf := inter.issue(t, key, "docxy.test")
	certFile, keyFile := writePair(t, t.TempDir(), certPEM(leaf, inter.cert), keyPEM(t, "EC PRIVATE KEY", key))
	r, err := NewReloader(certFile, keyFile)
	if err != nil {
		t.Fatalf("unexpected error: %s", err)
	}
	addr := serveTLS(t, ServerConfig(r.GetCertificate))

	// The client trusts only the root, so the handshake verifies only if the server sent the
	// intermediate from cert_file too.
	resp, err := get(addr, "docxy.test", root.pool())
	if err != nil {
		t.Fatalf("cannot GET through the chain: %s", err)
	}
	if n := len(resp.TLS.PeerCertificates); n != 2 {
		t.Fatalf("unexpected number of certificates sent; got %d; want 2", n)
	}
	if !sameSerial(resp.TLS.PeerCertificates[0], leaf) {
		t.Fatalf("unexpected leaf serial; got %s; want %s", resp.TLS.PeerCertificates[0].SerialNumber, leaf.SerialNumber)
	}
	if n := len(resp.TLS.VerifiedChains[0]); n != 3 {
		t.Fatalf("unexpected verified chain length; got %d; want 3", n)
	}
}

func TestReloaderReload(t *testing.T) {
	ca := newTestCA(t, "docxy test root", nil)
	certA, certPEMA, keyPEMA := ecPair(t, ca)
	certB, certPEMB, keyPEMB := ecPair(t, ca)
	dir := t.TempDir()
	certFile, keyFile := writePair(t, dir, certPEMA, keyPEMA)
	r, err := NewReloader(certFile, keyFile)
	if err != nil {
		t.Fatalf("unexpected error: %s", err)
	}
	addr := serveTLS(t, ServerConfig(r.GetCertificate))
	if got := fetchLeaf(t, addr, "docxy.test", ca.pool()); !sameSerial(got, certA) {
		t.Fatalf("unexpected serial before renewal; got %s; want %s", got.SerialNumber, certA.SerialNumber)
	}

	writePair(t, dir, certPEMB, keyPEMB)
	// Nothing watches the files, so the old certificate stays until Reload.
	if got := fetchLeaf(t, addr, "docxy.test", ca.pool()); !sameSerial(got, certA) {
		t.Fatalf("unexpected serial before Reload; got %s; want %s", got.SerialNumber, certA.SerialNumber)
	}
	if err := r.Reload(); err != nil {
		t.Fatalf("cannot reload: %s", err)
	}
	if got := fetchLeaf(t, addr, "docxy.test", ca.pool()); !sameSerial(got, certB) {
		t.Fatalf("unexpected serial after Reload; got %s; want %s", got.SerialNumber, certB.SerialNumber)
	}
	if !sameSerial(r.Leaf(), certB) {
		t.Fatalf("unexpected Leaf serial after Reload; got %s; want %s", r.Leaf().SerialNumber, certB.SerialNumber)
	}
}

func TestReloaderReloadFailureKeepsCertificate(t *testing.T) {
	ca := newTestCA(t, "docxy test root", nil)
	certA, certPEMA, keyPEMA := ecPair(t, ca)
	_, _, keyPEMB := ecPair(t, ca)

	// f replaces the files with certData and keyData, expects Reload to fail with an error
	// that contains every string in wants, and checks that certificate A is still served.
	f := func(certData, keyData []byte, wants ...string) {
		t.Helper()
		dir := t.TempDir()
		certFile, keyFile := writePair(t, dir, certPEMA, keyPEMA)
		r, err := NewReloader(certFile, keyFile)
		if err != nil {
			t.Fatalf("unexpected error: %s", err)
		}
		addr := serveTLS(t, ServerConfig(r.GetCertificate))

		writePair(t, dir, certData, keyData)
		err = r.Reload()
		if err == nil {
			t.Fatalf("expected Reload to fail")
		}
		for _, want := range wants {
			want = strings.NewReplacer("{cert}", certFile, "{key}", keyFile).Replace(want)
			if !strings.Contains(err.Error(), want) {
				t.Fatalf("unexpected error; got %q; want it to contain %q", err, want)
			}
		}
		if got := fetchLeaf(t, addr, "docxy.test", ca.pool()); !sameSerial(got, certA) {
			t.Fatalf("unexpected serial after failed Reload; got %s; want %s", got.SerialNumber, certA.SerialNumber)
		}
		if !sameSerial(r.Leaf(), certA) {
			t.Fatalf("unexpected Leaf serial after failed Reload; got %s; want %s", r.Leaf().SerialNumber, certA.SerialNumber)
		}
	}

	// A truncated or garbage key file.
	f(certPEMA, []byte("not a key\n"), `key file "{key}"`, "no PEM")
	f(certPEMA, nil, `key file "{key}"`, "no PEM")
	// A renewal that wrote the new key but not yet the new certificate.
	f(certPEMA, keyPEMB, `"{key}"`, `"{cert}"`, "does not match")
}

func TestNewReloaderErrors(t *testing.T) {
	root := newTestCA(t, "docxy test root", nil)
	inter := newTestCA(t, "docxy test intermediate", root)
	key := newECKey(t)
	leaf := inter.issue(t, key, "docxy.test")
	goodCert, goodKey := certPEM(leaf), keyPEM(t, "EC PRIVATE KEY", key)
	_, _, otherKey := ecPair(t, root)

	// f writes certData and keyData (a nil slice leaves the file missing) and expects
	// NewReloader to fail with an error that contains every string in wants; {cert} and {key}
	// stand for the files' paths.
	f := func(certData, keyData []byte, wants ...string) {
		t.Helper()
		dir := t.TempDir()
		certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
		if certData != nil {
			writeFile(t, certFile, certData)
		}
		if keyData != nil {
			writeFile(t, keyFile, keyData)
		}
		r, err := NewReloader(certFile, keyFile)
		if err == nil {
			t.Fatalf("expected an error; got a Reloader serving serial %s", r.Leaf().SerialNumber)
		}
		if !strings.HasPrefix(err.Error(), "tls: cannot ") {
			t.Fatalf("unexpected error prefix: %q", err)
		}
		for _, want := range wants {
			want = strings.NewReplacer("{cert}", certFile, "{key}", keyFile).Replace(want)
			if !strings.Contains(err.Error(), want) {
				t.Fatalf("unexpected error; got %q; want it to contain %q", err, want)
			}
		}
	}

	f(nil, goodKey, "cannot read certificate file", "{cert}", "no such file")
	f(goodCert, nil, "cannot read key file", "{key}", "no such file")
	f([]byte{}, goodKey, `certificate file "{cert}": it holds no PEM "CERTIFICATE" block`, "no PEM data")
	f(goodKey, goodCert, `certificate file "{cert}": it holds a private key`, "swapped")
	f(goodCert, goodCert, `key file "{key}": it holds a certificate`, "swapped")
	f(goodCert, []byte("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"), `key file "{key}"`, `["PUBLIC KEY"]`)
	f([]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), goodKey, `certificate file "{cert}": cannot parse its certificate #1`)
	f(goodCert, []byte("-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n"), `key file "{key}"`, "encrypted")
	f(goodCert, []byte("-----BEGIN EC PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00000000000000000000000000000000\n\nAAAA\n-----END EC PRIVATE KEY-----\n"), `key file "{key}"`, "encrypted")
	f(goodCert, otherKey, `"{key}"`, `"{cert}"`, "does not match")
	// The intermediate must follow the leaf, not precede it.
	f(certPEM(inter.cert, leaf), goodKey, `"{key}"`, `"{cert}"`, "first certificate")
}

func TestReloaderWatch(t *testing.T) {
	ca := newTestCA(t, "docxy test root", nil)

	// f starts Watch, calls renew to replace the served certificate, and waits until a new
	// connection gets the new one. layout returns the paths given to NewReloader.
	f := func(name string, layout func(dir string, certData, keyData []byte) (string, string), renew func(dir string, certData, keyData []byte)) {
		t.Helper()
		certA, certPEMA, keyPEMA := ecPair(t, ca)
		certB, certPEMB, keyPEMB := ecPair(t, ca)
		dir := t.TempDir()
		certFile, keyFile := layout(dir, certPEMA, keyPEMA)
		r, err := NewReloader(certFile, keyFile)
		if err != nil {
			t.Fatalf("%s: unexpected error: %s", name, err)
		}
		addr := serveTLS(t, ServerConfig(r.GetCertificate))
		if got := fetchLeaf(t, addr, "docxy.test", ca.pool()); !sameSerial(got, certA) {
			t.Fatalf("%s: unexpected serial before renewal; got %s; want %s", name, got.SerialNumber, certA.SerialNumber)
		}

		var logs logLines
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			r.Watch(ctx, time.Millisecond, logs.logf)
			close(done)
		}()
		defer func() {
			cancel()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				t.Fatalf("%s: Watch did not return after its context was cancelled", name)
			}
		}()

		renew(dir, certPEMB, keyPEMB)
		deadline := time.Now().Add(20 * time.Second)
		for {
			got := fetchLeaf(t, addr, "docxy.test", ca.pool())
			if sameSerial(got, certB) {
				break
			}
			if !sameSerial(got, certA) {
				t.Fatalf("%s: unexpected serial; got %s; want %s or %s", name, got.SerialNumber, certA.SerialNumber, certB.SerialNumber)
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: Watch did not pick up the renewed certificate; log:\n%s", name, logs.String())
			}
			time.Sleep(5 * time.Millisecond)
		}
		if !sameSerial(r.Leaf(), certB) {
			t.Fatalf("%s: unexpected Leaf serial; got %s; want %s", name, r.Leaf().SerialNumber, certB.SerialNumber)
		}
		if want := "reloaded certificate from " + fmt.Sprintf("%q", certFile); !strings.Contains(logs.String(), want) {
			t.Fatalf("%s: unexpected log; got %q; want it to contain %q", name, logs.String(), want)
		}
	}

	plain := func(dir string, certData, keyData []byte) (string, string) {
		return writePair(t, dir, certData, keyData)
	}

	// acme.sh --install-cert rewrites the files in place: same inode, often the same size.
	f("in place", plain, func(dir string, certData, keyData []byte) {
		certFile, keyFile := writePair(t, dir, certData, keyData)
		// Some filesystems keep coarse mtimes, and the rewrite can land in the same tick as
		// the first write; a real renewal comes days later. Move the mtime so the test checks
		// Watch, not the filesystem's clock.
		later := time.Now().Add(time.Hour)
		for _, p := range []string{certFile, keyFile} {
			if err := os.Chtimes(p, later, later); err != nil {
				t.Fatalf("cannot set mtime: %s", err)
			}
		}
	})

	// Many tools write a temporary file and rename it over the old one: a new inode.
	f("rename", plain, func(dir string, certData, keyData []byte) {
		tmp := t.TempDir()
		tmpCert, tmpKey := writePair(t, tmp, certData, keyData)
		if err := os.Rename(tmpKey, filepath.Join(dir, "key.pem")); err != nil {
			t.Fatalf("cannot rename: %s", err)
		}
		if err := os.Rename(tmpCert, filepath.Join(dir, "cert.pem")); err != nil {
			t.Fatalf("cannot rename: %s", err)
		}
	})

	// certbot points live/NAME/*.pem symlinks at numbered files in archive/NAME and swaps the
	// symlinks on renewal; the paths docxy was given never change.
	certbotLayout := func(dir string, certData, keyData []byte) (string, string) {
		for _, d := range []string{"archive", "live"} {
			if err := os.Mkdir(filepath.Join(dir, d), 0o700); err != nil {
				t.Fatalf("cannot create directory: %s", err)
			}
		}
		writeFile(t, filepath.Join(dir, "archive", "fullchain1.pem"), certData)
		writeFile(t, filepath.Join(dir, "archive", "privkey1.pem"), keyData)
		certFile, keyFile := filepath.Join(dir, "live", "fullchain.pem"), filepath.Join(dir, "live", "privkey.pem")
		mustSymlink(t, "../archive/fullchain1.pem", certFile)
		mustSymlink(t, "../archive/privkey1.pem", keyFile)
		return certFile, keyFile
	}
	f("certbot symlinks", certbotLayout, func(dir string, certData, keyData []byte) {
		writeFile(t, filepath.Join(dir, "archive", "fullchain2.pem"), certData)
		writeFile(t, filepath.Join(dir, "archive", "privkey2.pem"), keyData)
		for _, l := range [][2]string{{"fullchain", "fullchain2.pem"}, {"privkey", "privkey2.pem"}} {
			tmp := filepath.Join(dir, "live", l[0]+".tmp")
			mustSymlink(t, "../archive/"+l[1], tmp)
			if err := os.Rename(tmp, filepath.Join(dir, "live", l[0]+".pem")); err != nil {
				t.Fatalf("cannot swap symlink: %s", err)
			}
		}
	})
}

func TestReloaderWatchLogsFailureOnce(t *testing.T) {
	ca := newTestCA(t, "docxy test root", nil)
	certA, certPEMA, keyPEMA := ecPair(t, ca)
	certB, certPEMB, keyPEMB := ecPair(t, ca)
	dir := t.TempDir()
	certFile, keyFile := writePair(t, dir, certPEMA, keyPEMA)
	r, err := NewReloader(certFile, keyFile)
	if err != nil {
		t.Fatalf("unexpected error: %s", err)
	}
	addr := serveTLS(t, ServerConfig(r.GetCertificate))

	var logs logLines
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		r.Watch(ctx, time.Millisecond, logs.logf)
		close(done)
	}()
	defer func() { cancel(); <-done }()

	// A broken key file (renamed into place, so it is a change whatever its mtime) is
	// reported, and certificate A keeps being served.
	tmp := filepath.Join(t.TempDir(), "key.pem")
	writeFile(t, tmp, []byte("garbage"))
	if err := os.Rename(tmp, keyFile); err != nil {
		t.Fatalf("cannot rename: %s", err)
	}
	waitFor(t, "the failed reload to be logged", func() bool { return logs.count("still serving") > 0 })
	if got := fetchLeaf(t, addr, "docxy.test", ca.pool()); !sameSerial(got, certA) {
		t.Fatalf("unexpected serial after a failed reload; got %s; want %s", got.SerialNumber, certA.SerialNumber)
	}
	if want := fmt.Sprintf("key file %q", keyFile); !strings.Contains(logs.String(), want) {
		t.Fatalf("unexpected log; got %q; want it to contain %q", logs.String(), want)
	}

	// Fixing the files is picked up; the failure was logged once, not at every tick.
	tmpCert, tmpKey := writePair(t, t.TempDir(), certPEMB, keyPEMB)
	if err := os.Rename(tmpCert, certFile); err != nil {
		t.Fatalf("cannot rename: %s", err)
	}
	if err := os.Rename(tmpKey, keyFile); err != nil {
		t.Fatalf("cannot rename: %s", err)
	}
	waitFor(t, "the fixed files to be loaded", func() bool { return sameSerial(r.Leaf(), certB) })
	if got := fetchLeaf(t, addr, "docxy.test", ca.pool()); !sameSerial(got, certB) {
		t.Fatalf("unexpected serial after the fix; got %s; want %s", got.SerialNumber, certB.SerialNumber)
	}
	// Between the two renames Watch may also see certificate B with garbage or key A: at
	// most a few failures, each for a distinct state of the files.
	if n := logs.count("still serving"); n > 3 {
		t.Fatalf("failure logged %d times; want it logged once per change of the files; log:\n%s", n, logs.String())
	}
}

func TestServerConfig(t *testing.T) {
	ca := newTestCA(t, "docxy test root", nil)
	key := newECKey(t)
	cert := ca.issue(t, key, "docxy.test")
	certFile, keyFile := writePair(t, t.TempDir(), certPEM(cert), keyPEM(t, "EC PRIVATE KEY", key))
	r, err := NewReloader(certFile, keyFile)
	if err != nil {
		t.Fatalf("unexpected error: %s", err)
	}
	addr := serveTLS(t, ServerConfig(r.GetCertificate))

	f := func(client *stdtls.Config, wantErr bool, wantProto string) {
		t.Helper()
		client.RootCAs = ca.pool()
		client.ServerName = "docxy.test"
		conn, err := stdtls.Dial("tcp", addr, client)
		if wantErr {
			if err == nil {
				conn.Close()
				t.Fatalf("expected the handshake to fail")
			}
			return
		}
		if err != nil {
			t.Fatalf("unexpected handshake error: %s", err)
		}
		defer conn.Close()
		if got := conn.ConnectionState().NegotiatedProtocol; got != wantProto {
			t.Fatalf("unexpected ALPN protocol; got %q; want %q", got, wantProto)
		}
	}

	// A client that prefers HTTP/2 still gets HTTP/1.1: fasthttp cannot speak h2.
	f(&stdtls.Config{NextProtos: []string{"h2", "http/1.1"}}, false, "http/1.1")
	f(&stdtls.Config{}, false, "")
	f(&stdtls.Config{MinVersion: stdtls.VersionTLS12, MaxVersion: stdtls.VersionTLS12}, false, "")
	f(&stdtls.Config{MaxVersion: stdtls.VersionTLS11}, true, "")
}

func mustSymlink(t *testing.T, target, link string) {
	t.Helper()
	if err := os.Symlink(target, link); err != nil {
		t.Fatalf("cannot create symlink: %s", err)
	}
}

// waitFor polls cond until it holds, failing the test after a generous deadline; it asserts
// that something happens, not how fast.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// logLines collects Watch's log lines; Watch calls logf from its own goroutine.
type logLines struct {
	mu    sync.Mutex
	lines []string
}

func (l *logLines) logf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, fmt.Sprintf(format, args...))
}

func (l *logLines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

func (l *logLines) count(substr string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, line := range l.lines {
		if strings.Contains(line, substr) {
			n++
		}
	}
	return n
}
