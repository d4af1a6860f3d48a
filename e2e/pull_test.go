package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestMirrorChallenge: docxy answers /v2/ with its own realm, never the upstream's.
func TestMirrorChallenge(t *testing.T) {
	w := getWorld(t)
	m := startMirror(t, mirrorOpts{Upstream: w.reg.URL})
	resp, err := http.Get(m.URL + "/v2/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("GET /v2/: unexpected status code: got %d; want 401", resp.StatusCode)
	}
	ch := parseChallenge(resp.Header.Get("WWW-Authenticate"))
	if ch.scheme != "bearer" || ch.params["realm"] != m.URL+"/auth/token" {
		t.Errorf("WWW-Authenticate: got %q; want Bearer realm=%q", resp.Header.Get("WWW-Authenticate"), m.URL+"/auth/token")
	}
	if v := resp.Header.Get("Docker-Distribution-Api-Version"); v != "registry/2.0" {
		t.Errorf("Docker-Distribution-Api-Version: got %q; want registry/2.0", v)
	}
}

// TestTokenRelay: docxy's /auth/token relays GET (all scopes, Basic auth) and the OAuth2 POST
// form (password and refresh_token grants) to the upstream token server.
func TestTokenRelay(t *testing.T) {
	w := getWorld(t)
	m := startMirror(t, mirrorOpts{Upstream: w.reg.URL})
	realm := m.URL + "/auth/token"
	tokMark, cdnMark := w.tokens.Mark(), w.cdn.Mark()
	scopes := []string{"repository:library/hello:pull", "repository:private/secret:pull"}

	t.Run("GET anonymous, two scopes", func(t *testing.T) {
		q := url.Values{"service": {tokenService}, "scope": scopes}
		req, _ := http.NewRequest(http.MethodGet, realm+"?"+q.Encode(), nil)
		st, tok := doToken(t, req)
		if st != http.StatusOK {
			t.Fatalf("unexpected status code: got %d; want 200", st)
		}
		if got := accessOf(t, tok); got != "repository:library/hello:pull" {
			t.Errorf("access: got %q; want only library/hello pull (anonymous)", got)
		}
		last := w.tokens.Since(tokMark)
		if len(last) == 0 || strings.Join(last[len(last)-1].Scopes, " ") != strings.Join(scopes, " ") {
			t.Errorf("token server saw scopes %v; want %v", last, scopes)
		}
	})
	t.Run("GET Basic", func(t *testing.T) {
		q := url.Values{"service": {tokenService}, "scope": scopes[1:]}
		req, _ := http.NewRequest(http.MethodGet, realm+"?"+q.Encode(), nil)
		req.SetBasicAuth(bobUser, bobPass)
		if st, tok := doToken(t, req); st != http.StatusOK || accessOf(t, tok) != "repository:private/secret:pull" {
			t.Errorf("bob: got %d %v; want 200 with private/secret pull", st, tok)
		}
		req, _ = http.NewRequest(http.MethodGet, realm+"?"+q.Encode(), nil)
		req.SetBasicAuth(bobUser, "wrong")
		if st, _ := doToken(t, req); st != http.StatusUnauthorized {
			t.Errorf("wrong password: unexpected status code: got %d; want 401", st)
		}
	})
	t.Run("POST password and refresh", func(t *testing.T) {
		post := func(form url.Values) (int, map[string]any) {
			req, _ := http.NewRequest(http.MethodPost, realm, strings.NewReader(form.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			return doToken(t, req)
		}
		st, tok := post(url.Values{"grant_type": {"password"}, "username": {aliceUser}, "password": {alicePass},
			"service": {tokenService}, "scope": {strings.Join(scopes, " ")}, "client_id": {"e2e"}, "access_type": {"offline"}})
		if st != http.StatusOK || tok["refresh_token"] == nil {
			t.Fatalf("password grant: got %d %v; want 200 with a refresh_token", st, tok)
		}
		st, tok = post(url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tok["refresh_token"].(string)},
			"service": {tokenService}, "scope": {scopes[1]}, "client_id": {"e2e"}})
		if st != http.StatusOK || accessOf(t, tok) != "repository:private/secret:pull" {
			t.Errorf("refresh grant: got %d %v; want 200 with private/secret pull", st, tok)
		}
		if st, _ := post(url.Values{"grant_type": {"password"}, "username": {aliceUser}, "password": {"wrong"},
			"service": {tokenService}}); st != http.StatusUnauthorized {
			t.Errorf("bad password grant: unexpected status code: got %d; want 401", st)
		}
	})
	assertOnlyDocxy(t, w, tokMark, cdnMark, false)
}

// TestCranePull pulls every seeded image through docxy with crane, redirects off.
func TestCranePull(t *testing.T) {
	w := getWorld(t)
	m := startMirror(t, mirrorOpts{Upstream: w.reg.URL})
	tokMark, cdnMark := w.tokens.Mark(), w.cdn.Mark()
	anon := newCrane(t, "", "")

	t.Run("digest", func(t *testing.T) {
		for _, img := range []seededImage{w.seed.Hello, w.seed.Alpine, w.seed.Big} {
			got, err := anon.run(t, clientTimeout, "digest", m.Host+"/"+img.Ref())
			if err != nil {
				t.Fatal(err)
			}
			if got != img.Digest {
				t.Errorf("crane digest %s: got %s; want %s", img.Ref(), got, img.Digest)
			}
		}
		// A single-component name gets library/ (Docker Hub semantics).
		got, err := anon.run(t, clientTimeout, "digest", m.Host+"/hello:latest")
		if err != nil {
			t.Fatal(err)
		}
		if got != w.seed.Hello.Digest {
			t.Errorf("crane digest hello:latest: got %s; want %s", got, w.seed.Hello.Digest)
		}
		got, err = anon.run(t, clientTimeout, "digest", "--platform", "linux/arm64", m.Host+"/"+w.seed.Hello.Ref())
		if err != nil {
			t.Fatal(err)
		}
		if want := w.seed.Hello.Platforms["linux/arm64"]; got != want {
			t.Errorf("crane digest --platform linux/arm64: got %s; want %s", got, want)
		}
	})

	t.Run("manifest by digest", func(t *testing.T) {
		for _, img := range []seededImage{w.seed.Hello, w.seed.Alpine} {
			for d, raw := range img.Manifests {
				got, err := anon.run(t, clientTimeout, "manifest", m.Host+"/"+img.Repo+"@"+d)
				if err != nil {
					t.Fatal(err)
				}
				// crane prints the bytes it received; the digest of those bytes must match.
				if sha256Digest([]byte(got)) != d {
					t.Errorf("crane manifest %s@%s: bytes differ from the seeded manifest\ngot:  %.300s\nwant: %.300s", img.Repo, d, got, raw)
				}
			}
		}
	})

	for _, img := range []seededImage{w.seed.Hello, w.seed.Alpine, w.seed.Big} {
		t.Run("pull "+img.Repo, func(t *testing.T) {
			dir := t.TempDir()
			timeout := clientTimeout
			if img.Repo == w.seed.Big.Repo {
				timeout = bigClientTimeout
			}
			if _, err := anon.run(t, timeout, "pull", "--format=oci", m.Host+"/"+img.Ref(), dir); err != nil {
				t.Fatal(err)
			}
			checkLayout(t, dir, img)
		})
	}

	t.Run("private", func(t *testing.T) {
		ref := m.Host + "/" + w.seed.Secret.Ref()
		if out, err := anon.run(t, clientTimeout, "digest", ref); err == nil {
			t.Errorf("anonymous crane digest %s succeeded (%s); want denied", ref, out)
		}
		for _, u := range [][2]string{{aliceUser, alicePass}, {bobUser, bobPass}} {
			c := newCrane(t, u[0], u[1], m.Host)
			dir := t.TempDir()
			if _, err := c.run(t, clientTimeout, "pull", "--format=oci", ref, dir); err != nil {
				t.Fatalf("%s: %v", u[0], err)
			}
			checkLayout(t, dir, w.seed.Secret)
		}
		bad := newCrane(t, aliceUser, "wrong", m.Host)
		if out, err := bad.run(t, clientTimeout, "digest", ref); err == nil {
			t.Errorf("crane digest with a wrong password succeeded (%s); want 401", out)
		}
	})

	assertOnlyDocxy(t, w, tokMark, cdnMark, false)
}

// TestCranePullCDN pulls through docxy from the registry that redirects blobs to the CDN: docxy
// must follow the redirects itself.
func TestCranePullCDN(t *testing.T) {
	w := getWorld(t)
	m := startMirror(t, mirrorOpts{Upstream: w.regCDN.URL})
	tokMark, cdnMark := w.tokens.Mark(), w.cdn.Mark()
	anon := newCrane(t, "", "")
	for _, img := range []seededImage{w.seed.Alpine, w.seed.Big} {
		t.Run(img.Repo, func(t *testing.T) {
			dir := t.TempDir()
			if _, err := anon.run(t, bigClientTimeout, "pull", "--format=oci", m.Host+"/"+img.Ref(), dir); err != nil {
				t.Fatal(err)
			}
			checkLayout(t, dir, img)
		})
	}
	assertOnlyDocxy(t, w, tokMark, cdnMark, true)
}

// skopeo writes OCI layouts; it re-serialises OCI indexes, so --all is checked per platform.
func TestSkopeoCopy(t *testing.T) {
	w := getWorld(t)
	bin := needTool(t, "skopeo")
	m := startMirror(t, mirrorOpts{Upstream: w.reg.URL})
	tokMark, cdnMark := w.tokens.Mark(), w.cdn.Mark()
	tmp := t.TempDir()
	policy := filepath.Join(tmp, "policy.json")
	os.WriteFile(policy, []byte(`{"default":[{"type":"insecureAcceptAnything"}]}`), 0o644)
	env := []string{"REGISTRY_AUTH_FILE=" + filepath.Join(tmp, "auth.json")}
	copyTo := func(t *testing.T, dir string, extra ...string) {
		t.Helper()
		args := append([]string{bin, "--policy", policy, "copy", "--src-tls-verify=false"}, extra...)
		args = append(args, "docker://"+m.Host+"/"+w.seed.Alpine.Ref(), "oci:"+dir+":latest")
		if _, err := runCmd(context.Background(), clientTimeout, env, args...); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("single platform", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "oci")
		copyTo(t, dir, "--override-os", "linux", "--override-arch", "amd64")
		lc, err := verifyLayout(dir)
		if err != nil {
			t.Fatal(err)
		}
		want := w.seed.Alpine.Platforms["linux/amd64"]
		if len(lc.Roots) != 1 || lc.Roots[0].Digest != want {
			t.Errorf("layout root: got %+v; want the linux/amd64 manifest %s", lc.Roots, want)
		}
		assertManifestBlobs(t, lc, w.seed.Alpine, want)
	})

	t.Run("all platforms", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "oci")
		copyTo(t, dir, "--all")
		lc, err := verifyLayout(dir)
		if err != nil {
			t.Fatal(err)
		}
		for p, d := range w.seed.Alpine.Platforms {
			if _, ok := lc.Blobs[d]; !ok {
				t.Errorf("layout lacks the %s manifest %s", p, d)
			}
			assertManifestBlobs(t, lc, w.seed.Alpine, d)
		}
		t.Logf("skopeo --all: %d blobs, %d bytes verified", len(lc.Blobs), lc.Bytes)
	})

	assertOnlyDocxy(t, w, tokMark, cdnMark, false)
}

// assertManifestBlobs checks that the config and layers of the seeded manifest d are in lc.
func assertManifestBlobs(t *testing.T, lc *layoutContents, img seededImage, d string) {
	t.Helper()
	var mf manifestDoc
	if err := json.Unmarshal(img.Manifests[d], &mf); err != nil {
		t.Fatal(err)
	}
	for _, b := range append([]descriptor{*mf.Config}, mf.Layers...) {
		if got, ok := lc.Blobs[b.Digest]; !ok || got != b.Size {
			t.Errorf("blob %s of %s: present %v size %d; want size %d", b.Digest, d, ok, got, b.Size)
		}
	}
}
