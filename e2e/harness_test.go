package e2e

// Self-tests of the harness: the upstream side works with real clients talking to it directly,
// so that a failure through docxy points at docxy.

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

func TestHarnessTokenServer(t *testing.T) {
	w := getWorld(t)
	ctx := context.Background()
	get := func(t *testing.T, user, pass string, scopes ...string) (int, map[string]any) {
		t.Helper()
		q := url.Values{"service": {tokenService}, "scope": scopes}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, w.tokens.URL+"?"+q.Encode(), nil)
		if user != "" {
			req.SetBasicAuth(user, pass)
		}
		return doToken(t, req)
	}
	post := func(t *testing.T, form url.Values) (int, map[string]any) {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, w.tokens.URL, strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		return doToken(t, req)
	}
	access := func(tok map[string]any) string { return accessOf(t, tok) }

	t.Run("anonymous pull", func(t *testing.T) {
		st, tok := get(t, "", "", "repository:library/hello:pull", "repository:library/alpine:pull,push")
		if st != http.StatusOK {
			t.Fatalf("unexpected status code: got %d; want 200", st)
		}
		want := "repository:library/hello:pull repository:library/alpine:pull"
		if got := access(tok); got != want {
			t.Errorf("access: got %s; want %s", got, want)
		}
		c := jwtClaims(t, tok["token"].(string))
		if c["iss"] != tokenIssuer || c["aud"] != tokenService || c["sub"] != "" || c["jti"] == "" {
			t.Errorf("claims: %v", c)
		}
	})
	t.Run("anonymous private", func(t *testing.T) {
		st, tok := get(t, "", "", "repository:private/secret:pull")
		if st != http.StatusOK || access(tok) != "" {
			t.Errorf("got %d %s; want 200 with no access", st, access(tok))
		}
	})
	t.Run("bob private", func(t *testing.T) {
		st, tok := get(t, bobUser, bobPass, "repository:private/secret:pull,push")
		want := "repository:private/secret:pull"
		if st != http.StatusOK || access(tok) != want {
			t.Errorf("got %d %s; want 200 %s", st, access(tok), want)
		}
	})
	t.Run("bad password", func(t *testing.T) {
		if st, _ := get(t, aliceUser, "wrong", "repository:library/hello:pull"); st != http.StatusUnauthorized {
			t.Errorf("unexpected status code: got %d; want 401", st)
		}
	})
	t.Run("password and refresh grants", func(t *testing.T) {
		st, tok := post(t, url.Values{"grant_type": {"password"}, "username": {aliceUser}, "password": {alicePass},
			"service": {tokenService}, "scope": {"repository:private/secret:pull,push repository:library/hello:pull"},
			"access_type": {"offline"}, "client_id": {"e2e"}})
		if st != http.StatusOK || tok["refresh_token"] == nil {
			t.Fatalf("password grant: got %d %v", st, tok)
		}
		want := "repository:private/secret:pull,push repository:library/hello:pull"
		if got := access(tok); got != want {
			t.Errorf("access: got %s; want %s", got, want)
		}
		st, tok2 := post(t, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tok["refresh_token"].(string)},
			"service": {tokenService}, "scope": {"repository:private/secret:pull"}})
		if st != http.StatusOK || jwtClaims(t, tok2["token"].(string))["sub"] != aliceUser {
			t.Errorf("refresh grant: got %d %v", st, tok2)
		}
		if st, _ := post(t, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {"nope"}}); st != http.StatusUnauthorized {
			t.Errorf("unknown refresh token: got %d; want 401", st)
		}
		if st, _ := post(t, url.Values{"grant_type": {"password"}, "username": {bobUser}, "password": {"x"}}); st != http.StatusUnauthorized {
			t.Errorf("bad password grant: got %d; want 401", st)
		}
	})
}

func doToken(t *testing.T, req *http.Request) (int, map[string]any) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	if resp.StatusCode == http.StatusOK {
		if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
			t.Fatal(err)
		}
	}
	return resp.StatusCode, m
}

func jwtClaims(t *testing.T, tok string) map[string]any {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %q", tok)
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestHarnessDirectPull pulls with crane straight from the registries (no docxy): token auth,
// the seeded digests, the CDN redirect path and the private repository all work.
func TestHarnessDirectPull(t *testing.T) {
	w := getWorld(t)
	anon := newCrane(t, "", "")
	t.Run("digest", func(t *testing.T) {
		for _, img := range []seededImage{w.seed.Hello, w.seed.Alpine, w.seed.Big} {
			got, err := anon.run(t, clientTimeout, "digest", w.reg.Host+"/"+img.Ref())
			if err != nil {
				t.Fatal(err)
			}
			if got != img.Digest {
				t.Errorf("crane digest %s: got %s; want %s", img.Ref(), got, img.Digest)
			}
		}
	})
	t.Run("pull via cdn", func(t *testing.T) {
		mark := w.cdn.Mark()
		dir := t.TempDir()
		if _, err := anon.run(t, clientTimeout, "pull", "--format=oci", w.regCDN.Host+"/"+w.seed.Alpine.Ref(), dir); err != nil {
			t.Fatal(err)
		}
		checkLayout(t, dir, w.seed.Alpine)
		hits := w.cdn.Since(mark)
		if len(hits) < len(w.seed.Alpine.Blobs) {
			t.Errorf("CDN hits: got %d; want at least %d (one per blob)", len(hits), len(w.seed.Alpine.Blobs))
		}
		for _, h := range hits {
			if h.Peer.Comm != "crane" {
				t.Errorf("CDN hit from %s; want crane (peer attribution broken)", h.Peer)
			}
		}
	})
	t.Run("private", func(t *testing.T) {
		ref := w.reg.Host + "/" + w.seed.Secret.Ref()
		if out, err := anon.run(t, clientTimeout, "digest", ref); err == nil {
			t.Errorf("anonymous crane digest %s succeeded (%s); want denied", ref, out)
		}
		bob := newCrane(t, bobUser, bobPass, w.reg.Host)
		got, err := bob.run(t, clientTimeout, "digest", ref)
		if err != nil {
			t.Fatal(err)
		}
		if got != w.seed.Secret.Digest {
			t.Errorf("bob: got %s; want %s", got, w.seed.Secret.Digest)
		}
	})
}

// TestHarnessCutProxy checks that the TCP proxy really breaks a blob download, so that a clean
// short body seen through docxy is docxy's doing.
func TestHarnessCutProxy(t *testing.T) {
	w := getWorld(t)
	px, err := startTCPProxy(w.reg.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer px.Close()
	c := newRegClient("http://"+px.Addr, "", "", nil)
	ctx := context.Background()
	px.Arm(1 << 20)
	resp, err := c.do(ctx, http.MethodGet, "/v2/big/layer/blobs/"+w.seed.BigLayer, pullScope("big/layer"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, resp.Body)
	if err == nil || n >= w.seed.BigLayerSize {
		t.Fatalf("direct GET through the cutting proxy: read %d bytes, err %v; want an error before %d bytes", n, err, w.seed.BigLayerSize)
	}
	if px.Cuts() != 1 {
		t.Errorf("cuts: got %d; want 1", px.Cuts())
	}
	t.Logf("cut after %d body bytes: %v", n, err)
}

// TestHarnessCDNRange checks the CDN's Range support and hit accounting.
func TestHarnessCDNRange(t *testing.T) {
	w := getWorld(t)
	hex := strings.TrimPrefix(w.seed.BigLayer, "sha256:")
	u := w.cdn.URL + "docker/registry/v2/blobs/sha256/" + hex[:2] + "/" + hex + "/data"
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	req.Header.Set("Range", "bytes=100-199")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusPartialContent || len(b) != 100 {
		t.Errorf("CDN range: got %d with %d bytes; want 206 with 100", resp.StatusCode, len(b))
	}
	// A cut response must fail on the client side.
	w.cdn.CutNext(1 << 20)
	resp, err = http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err == nil || errors.Is(err, io.EOF) {
		t.Errorf("cut CDN response: read %d bytes without error; want an error", n)
	}
}

// accessOf summarises a token response's access claim as "type:name:actions ...".
func accessOf(t *testing.T, tok map[string]any) string {
	t.Helper()
	raw, _ := tok["token"].(string)
	if raw == "" {
		raw, _ = tok["access_token"].(string)
	}
	claims := jwtClaims(t, raw)
	var parts []string
	list, _ := claims["access"].([]any)
	for _, a := range list {
		m := a.(map[string]any)
		var acts []string
		for _, x := range m["actions"].([]any) {
			acts = append(acts, x.(string))
		}
		parts = append(parts, m["type"].(string)+":"+m["name"].(string)+":"+strings.Join(acts, ","))
	}
	return strings.Join(parts, " ")
}
