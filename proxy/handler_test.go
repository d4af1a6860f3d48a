package proxy

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestPing(t *testing.T) {
	token := newFakeServer(t, nil)
	realm := token.URL() + "/token"
	up := newFakeServer(t, fakeRegistry(realm, nil))
	m := newMirror(t, testConfig("", registryConfig("docker.io", up.URL(),
		`library_prefix = true`, `hosts = ["docker.mirror.example"]`)))

	mirrorRealm := fmt.Sprintf(`Bearer realm="%s/auth/token",service="%s"`, testPublicBase, fakeService)
	tests := []struct {
		name       string
		method     string
		header     http.Header
		wantStatus int
		wantAuth   string // WWW-Authenticate; empty means none
	}{
		{"anonymous", "GET", nil, 401, mirrorRealm},
		{"anonymous HEAD", "HEAD", nil, 401, mirrorRealm},
		{"forged host", "GET", hdr("Host", "evil.example"), 401, mirrorRealm},
		{"forged host with port", "GET", hdr("Host", "evil.example:5000"), 401, mirrorRealm},
		{"host with configured suffix", "GET", hdr("Host", "docker.mirror.example.evil.example"), 401, mirrorRealm},
		{"forwarded host ignored", "GET", hdr("X-Forwarded-Host", "evil.example", "X-Forwarded-Proto", "http"), 401, mirrorRealm},
		{"configured host", "GET", hdr("Host", "docker.mirror.example"), 401,
			fmt.Sprintf(`Bearer realm="http://docker.mirror.example/auth/token",service="%s"`, fakeService)},
		{"configured host with port", "GET", hdr("Host", "docker.mirror.example:5000"), 401,
			fmt.Sprintf(`Bearer realm="http://docker.mirror.example:5000/auth/token",service="%s"`, fakeService)},
		{"configured host, X-Forwarded-Proto untrusted", "GET", hdr("Host", "docker.mirror.example", "X-Forwarded-Proto", "https"), 401,
			fmt.Sprintf(`Bearer realm="http://docker.mirror.example/auth/token",service="%s"`, fakeService)},
		{"valid credentials", "GET", hdr("Authorization", goodToken), 200, ""},
		{"invalid credentials", "GET", hdr("Authorization", "Bearer bad"), 401, mirrorRealm},
		{"invalid credentials, configured host", "GET", hdr("Authorization", "Bearer bad", "Host", "docker.mirror.example"), 401,
			fmt.Sprintf(`Bearer realm="http://docker.mirror.example/auth/token",service="%s"`, fakeService)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := m.do(t, tc.method, "/v2/", tc.header, "")
			checkStatus(t, resp, tc.wantStatus)
			checkHeader(t, resp.Header, "WWW-Authenticate", tc.wantAuth)
			checkHeader(t, resp.Header, "Docker-Distribution-Api-Version", "registry/2.0")
			if strings.Contains(resp.Header.Get("WWW-Authenticate"), "evil") {
				t.Fatalf("unexpected realm: got %q; the forged host must never appear", resp.Header.Get("WWW-Authenticate"))
			}
			if tc.method == "HEAD" {
				return
			}
			if tc.wantStatus == 401 {
				checkErrorBody(t, body, "UNAUTHORIZED")
			} else if !json.Valid(body) {
				t.Fatalf("unexpected body: got %q; want JSON", body)
			}
		})
	}

	// Credentials are checked upstream with the client's own Authorization.
	var sawGood, sawBad bool
	for _, r := range onlyPath(up.requests(), "/v2/") {
		switch r.Header.Get("Authorization") {
		case goodToken:
			sawGood = true
		case "Bearer bad":
			sawBad = true
		}
	}
	if !sawGood || !sawBad {
		t.Fatalf("unexpected upstream /v2/ checks: got good=%v bad=%v; want both forwarded", sawGood, sawBad)
	}
	if n := len(token.requests()); n != 0 {
		t.Fatalf("unexpected token server requests: got %d; want 0", n)
	}
}

// TestPingForgedHostRaw sends Host values net/http refuses to send (CVE-2025-63761).
func TestPingForgedHostRaw(t *testing.T) {
	up := newFakeServer(t, fakeRegistry("http://127.0.0.1:1/token", nil))
	m := newMirror(t, testConfig("", registryConfig("docker.io", up.URL(), `hosts = ["docker.mirror.example"]`)))

	f := func(host string) {
		t.Helper()
		rs := m.raw(t, "GET /v2/ HTTP/1.1\r\nHost: "+host+"\r\n\r\n", "GET")
		wa := rs[0].resp.Header.Get("WWW-Authenticate")
		if rs[0].resp.StatusCode == 400 {
			return // refused outright: fine
		}
		if rs[0].resp.StatusCode != 401 {
			t.Fatalf("unexpected status code for Host %q: got %d; want 401 or 400", host, rs[0].resp.StatusCode)
		}
		want := fmt.Sprintf(`Bearer realm="%s/auth/token",service="%s"`, testPublicBase, fakeService)
		if wa != want && !strings.HasPrefix(wa, `Bearer realm="http://docker.mirror.example/`) {
			t.Fatalf("unexpected WWW-Authenticate for Host %q: got %q; want %q", host, wa, want)
		}
		if strings.Contains(wa, "evil") || strings.Contains(wa, "@") {
			t.Fatalf("unexpected WWW-Authenticate for Host %q: got %q; the forged host must never appear", host, wa)
		}
	}
	f("evil.example")
	f("docker.mirror.example@evil.example")
	f("docker.mirror.example:1@evil.example")
	f("docker.mirror.example:80@evil.example:80")
	f("evil.example#docker.mirror.example")
	f("evil.example/docker.mirror.example")
	f("docker.mirror.example/evil")
	f("docker.mirror.example:evil")
	f("docker.mirror.example:80:evil")
	f("[::1]:80")
}

func TestPingBehindProxy(t *testing.T) {
	up := newFakeServer(t, fakeRegistry("http://127.0.0.1:1/token", nil))
	m := newMirror(t, testConfig("behind_proxy = true", registryConfig("docker.io", up.URL(), `hosts = ["docker.mirror.example"]`)))

	f := func(header http.Header, wantRealm string) {
		t.Helper()
		resp, _ := m.do(t, "GET", "/v2/", header, "")
		checkStatus(t, resp, 401)
		checkHeader(t, resp.Header, "WWW-Authenticate", fmt.Sprintf(`Bearer realm="%s",service="%s"`, wantRealm, fakeService))
	}
	f(hdr("Host", "docker.mirror.example", "X-Forwarded-Proto", "https"), "https://docker.mirror.example/auth/token")
	f(hdr("Host", "docker.mirror.example", "X-Forwarded-Proto", "javascript"), "http://docker.mirror.example/auth/token")
	f(hdr("Host", "evil.example", "X-Forwarded-Proto", "http"), testPublicBase+"/auth/token")
}

func TestHealthAndGenerate204(t *testing.T) {
	up := newFakeServer(t, nil)
	m := newMirror(t, testConfig("", registryConfig("docker.io", up.URL())))

	resp, body := m.do(t, "GET", PathHealth, nil, "")
	checkStatus(t, resp, 200)
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Fatalf("unexpected Content-Type: got %q; want application/json", ct)
	}
	var health struct {
		Status     string `json:"status"`
		Version    string `json:"version"`
		Registries int    `json:"registries"`
	}
	if err := json.Unmarshal(body, &health); err != nil {
		t.Fatalf("unexpected /health body: got %q; want JSON: %s", body, err)
	}
	if health.Status != "ok" || health.Version != "test" || health.Registries != 1 {
		t.Fatalf("unexpected /health body: got %+v; want status ok, version test, 1 registry", health)
	}

	resp, body = m.do(t, "GET", PathGenerate204, nil, "")
	checkStatus(t, resp, 204)
	if len(body) != 0 {
		t.Fatalf("unexpected body: got %q; want none", body)
	}
	resp, _ = m.do(t, "HEAD", PathGenerate204, nil, "")
	checkStatus(t, resp, 204)

	if n := len(up.requests()); n != 0 {
		t.Fatalf("unexpected upstream requests: got %d; want 0", n)
	}
}

func TestRequestErrors(t *testing.T) {
	up := newFakeServer(t, fakeRegistry("http://127.0.0.1:1/token", nil))
	m := newMirror(t, testConfig("", registryConfig("docker.io", up.URL(), `library_prefix = true`)))
	digest := "sha256:" + strings.Repeat("a", 64)

	tests := []struct {
		method     string
		path       string
		wantStatus int
		wantCode   string
	}{
		{"GET", "/v2/UPPER/manifests/x", 400, "NAME_INVALID"},
		{"HEAD", "/v2/UPPER/manifests/x", 400, ""},
		{"GET", "/v2/a/B/manifests/x", 400, "NAME_INVALID"},
		{"GET", "/v2/a/b_/manifests/x", 400, "NAME_INVALID"},
		{"GET", "/v2/-a/blobs/" + digest, 400, "NAME_INVALID"},
		{"GET", "/v2/a/blobs/sha256:zz", 400, "DIGEST_INVALID"},
		{"GET", "/v2/a/blobs/sha256:" + strings.Repeat("A", 64), 400, "DIGEST_INVALID"},
		{"GET", "/v2/a/blobs/md5:d41d8cd98f00b204e9800998ecf8427e", 400, "DIGEST_INVALID"},
		{"GET", "/v2/a/blobs/latest", 400, "DIGEST_INVALID"},
		{"GET", "/v2/a/manifests/sha256:zz", 400, "DIGEST_INVALID"},
		{"GET", "/v2/a/manifests/-bad", 400, "MANIFEST_INVALID"},
		{"PUT", "/v2/a/manifests/latest", 405, "UNSUPPORTED"},
		{"DELETE", "/v2/a/manifests/latest", 405, "UNSUPPORTED"},
		{"DELETE", "/v2/a/blobs/" + digest, 405, "UNSUPPORTED"},
		{"POST", "/v2/a/blobs/uploads/", 405, "UNSUPPORTED"},
		{"PATCH", "/v2/a/blobs/uploads/1234", 405, "UNSUPPORTED"},
		{"GET", "/nope", 404, "NOT_FOUND"},
		{"GET", "/v2/a/nope/x", 404, "NOT_FOUND"},
		{"GET", "/v2/a", 404, "NOT_FOUND"},
		{"GET", "/auth/nope", 404, "NOT_FOUND"},
	}
	for _, tc := range tests {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			resp, body := m.do(t, tc.method, tc.path, nil, "")
			checkStatus(t, resp, tc.wantStatus)
			if tc.method == "HEAD" {
				return
			}
			if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
				t.Fatalf("unexpected Content-Type: got %q; want application/json", ct)
			}
			checkErrorBody(t, body, tc.wantCode)
		})
	}
	if rs := up.requests(); len(rs) != 0 {
		t.Fatalf("unexpected upstream requests: got %d (first %s %s); want none", len(rs), rs[0].Method, rs[0].Path)
	}
}

func TestUpstreamUnreachable(t *testing.T) {
	m := newMirror(t, testConfig(`upstream_timeout = "2s"`,
		registryConfig("docker.io", closedPortURL(t), `library_prefix = true`)))
	digest := "sha256:" + strings.Repeat("b", 64)

	f := func(method, path string) {
		t.Helper()
		resp, body := m.do(t, method, path, nil, "")
		checkStatus(t, resp, 502)
		if method != "HEAD" {
			checkErrorBody(t, body, "UNAVAILABLE")
		}
	}
	f("GET", "/v2/")
	f("GET", "/v2/nginx/manifests/latest")
	f("HEAD", "/v2/nginx/manifests/latest")
	f("GET", "/v2/nginx/blobs/"+digest)
	f("GET", "/v2/nginx/tags/list")
	f("GET", "/auth/token?scope=repository:nginx:pull")
}

// TestUpstreamIPVersion: upstream_ip_version = 4 or 6 keeps upstream connections to that family;
// the IPv4-only fake upstream is reached with 0 and 4 and not with 6.
func TestUpstreamIPVersion(t *testing.T) {
	up, _ := fakeHub(t, nil)
	for _, tc := range []struct {
		version int
		want    int
	}{{0, 401}, {4, 401}, {6, 502}} {
		m := newMirror(t, testConfig(fmt.Sprintf("upstream_ip_version = %d", tc.version),
			registryConfig("docker.io", up.URL(), `library_prefix = true`)))
		resp, body := m.do(t, "GET", "/v2/", nil, "")
		checkStatus(t, resp, tc.want)
		if tc.want == 502 {
			checkErrorBody(t, body, "UNAVAILABLE")
		}
	}
}

func TestUpstreamTimeout(t *testing.T) {
	t.Parallel()
	// The upstream accepts connections and reads requests but never answers.
	up := newRawServer(t, func(c net.Conn, _ *http.Request) bool {
		_, _ = io.Copy(io.Discard, c) // until docxy gives up and closes
		return false
	})
	m := newMirror(t, testConfig(`upstream_timeout = "100ms"`,
		registryConfig("docker.io", up.URL(), `library_prefix = true`)))

	f := func(method, path string) {
		t.Helper()
		start := time.Now()
		resp, body := m.do(t, method, path, nil, "")
		checkStatus(t, resp, 504)
		if method != "HEAD" {
			checkErrorBody(t, body, "UNAVAILABLE")
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("unexpected duration: got %s; want about the upstream timeout", d)
		}
	}
	f("GET", "/v2/nginx/manifests/latest")
	f("HEAD", "/v2/nginx/manifests/latest")
	f("GET", "/v2/nginx/blobs/sha256:"+strings.Repeat("c", 64))
	f("GET", "/v2/")
}

func TestRegistrySelection(t *testing.T) {
	// Blob bodies match their digests, prepared per case below; only the test goroutine writes
	// the map, before the request that reads it.
	blobBodies := map[string]string{}
	var mu sync.Mutex
	content := func(name string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if i := strings.Index(r.URL.Path, "/blobs/"); i >= 0 {
				mu.Lock()
				b, ok := blobBodies[r.URL.Path[i+len("/blobs/"):]]
				mu.Unlock()
				if !ok {
					http.NotFound(w, r)
					return
				}
				w.Header().Set("Content-Type", "application/octet-stream")
				_, _ = io.WriteString(w, b)
				return
			}
			w.Header().Set("Content-Type", "application/vnd.oci.image.index.v1+json")
			_, _ = fmt.Fprintf(w, `{"from":%q}`, name)
		}
	}
	// Every case asks for its own tag or blob, so that no answer comes from the cache.
	tests := []struct {
		name     string
		path     string // %s is the tag
		header   http.Header
		wantFrom string
		wantPath string // %s is the tag
	}{
		{"default", "/v2/nginx/manifests/%s", nil, "hub", "/v2/library/nginx/manifests/%s"},
		{"unknown host", "/v2/nginx/manifests/%s", hdr("Host", "other.example"), "hub", "/v2/library/nginx/manifests/%s"},
		{"host selects ghcr", "/v2/nginx/manifests/%s", hdr("Host", "ghcr.mirror.example"), "ghcr", "/v2/nginx/manifests/%s"},
		{"host with port selects ghcr", "/v2/owner/app/manifests/%s", hdr("Host", "ghcr.mirror.example:5000"), "ghcr", "/v2/owner/app/manifests/%s"},
		{"host is case-insensitive", "/v2/owner/app/manifests/%s", hdr("Host", "GHCR.Mirror.Example"), "ghcr", "/v2/owner/app/manifests/%s"},
		{"host selects hub", "/v2/nginx/manifests/%s", hdr("Host", "docker.mirror.example"), "hub", "/v2/library/nginx/manifests/%s"},
		{"ns names ghcr", "/v2/owner/app/manifests/%s?ns=ghcr.io", nil, "ghcr", "/v2/owner/app/manifests/%s"},
		{"ns is ghcr's upstream host", "/v2/owner/app/manifests/%s?ns=<ghcr>", nil, "ghcr", "/v2/owner/app/manifests/%s"},
		{"ns docker.io", "/v2/nginx/manifests/%s?ns=docker.io", nil, "hub", "/v2/library/nginx/manifests/%s"},
		{"unknown ns", "/v2/nginx/manifests/%s?ns=quay.io", nil, "hub", "/v2/library/nginx/manifests/%s"},
		{"host wins over ns", "/v2/nginx/manifests/%s?ns=ghcr.io", hdr("Host", "docker.mirror.example"), "hub", "/v2/library/nginx/manifests/%s"},
		{"blob by ns", "/v2/owner/app/blobs/%s?ns=ghcr.io", nil, "ghcr", "/v2/owner/app/blobs/%s"},
		{"blob by host", "/v2/nginx/blobs/%s", hdr("Host", "ghcr.mirror.example"), "ghcr", "/v2/nginx/blobs/%s"},
		{"blob by default", "/v2/nginx/blobs/%s", nil, "hub", "/v2/library/nginx/blobs/%s"},
	}
	for _, mode := range mirrorModes {
		t.Run(mode.name, func(t *testing.T) {
			hub, _ := fakeHub(t, content("hub"))
			ghcr, _ := fakeHub(t, content("ghcr"))
			m := newMirror(t, testConfig("",
				registryConfig("docker.io", hub.URL(), `library_prefix = true`, `default = true`, `hosts = ["docker.mirror.example"]`),
				registryConfig("ghcr.io", ghcr.URL(), `hosts = ["ghcr.mirror.example"]`), mode.cache))
			contentRequests := func(f *fakeServer) []recorded {
				var rs []recorded
				for _, r := range f.requests() {
					if strings.Contains(r.Path, "/manifests/") || strings.Contains(r.Path, "/blobs/") {
						rs = append(rs, r)
					}
				}
				return rs
			}
			for i, tc := range tests {
				t.Run(tc.name, func(t *testing.T) {
					ref := fmt.Sprintf("t%d-%s", i, mode.name)
					want := fmt.Sprintf(`{"from":%q}`, tc.wantFrom)
					if strings.Contains(tc.path, "/blobs/") {
						want = fmt.Sprintf(`{"from":%q,"case":%q}`, tc.wantFrom, ref)
						ref = digestOf([]byte(want))
						mu.Lock()
						blobBodies[ref] = want
						mu.Unlock()
					}
					path := strings.Replace(fmt.Sprintf(tc.path, ref), "<ghcr>", ghcr.Host(), 1)
					wantPath := fmt.Sprintf(tc.wantPath, ref)
					hubBefore, ghcrBefore := len(contentRequests(hub)), len(contentRequests(ghcr))
					resp, body := m.do(t, "GET", path, tc.header, "")
					checkStatus(t, resp, 200)
					if string(body) != want {
						t.Fatalf("unexpected body: got %s; want %s", body, want)
					}
					got, other := contentRequests(hub)[hubBefore:], contentRequests(ghcr)[ghcrBefore:]
					if tc.wantFrom == "ghcr" {
						got, other = other, got
					}
					if len(got) == 0 || len(other) != 0 {
						t.Fatalf("unexpected upstream requests: got %d to %s and %d to the other; want some and 0", len(got), tc.wantFrom, len(other))
					}
					for _, r := range got {
						if r.Path != wantPath {
							t.Fatalf("unexpected upstream path: got %q; want %q", r.Path, wantPath)
						}
						if r.RawQuery != "" {
							t.Fatalf("unexpected upstream query: got %q; want none (ns is docxy's)", r.RawQuery)
						}
					}
				})
			}
		})
	}
}
