package proxy

import (
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"reflect"
	"testing"

	"github.com/docxy/docxy/proxy/upstream"
)

func TestTokenRelay(t *testing.T) {
	t.Parallel()
	const tokenJSON = `{"token":"t0k3n","access_token":"t0k3n","expires_in":300,"issued_at":"2024-01-01T00:00:00Z"}`
	mirrorBasic := "Basic " + base64.StdEncoding.EncodeToString([]byte("mirror-user:mirror-pass"))
	account := []string{`library_prefix = true`, `username = "mirror-user"`, `password = "mirror-pass"`}
	form := "application/x-www-form-urlencoded"

	tests := []struct {
		name          string
		registryExtra []string // default: library_prefix = true
		method        string
		target        string // path and query at the mirror
		header        http.Header
		body          string // POST form
		tokenStatus   int
		tokenCT       string
		tokenBody     string
		wantForm      url.Values // query (GET) or form (POST) at the token server, in order
		wantAuth      string     // Authorization at the token server
	}{
		{
			name:        "GET keeps every scope, prefixes library/ only where needed, drops ns",
			method:      "GET",
			target:      "/auth/token?service=x&scope=repository:nginx:pull&scope=repository:foo/bar:pull&ns=docker.io",
			header:      hdr("Authorization", "Basic Y2xpZW50OnNlY3JldA=="),
			tokenStatus: 200, tokenCT: "application/json", tokenBody: tokenJSON,
			wantForm: url.Values{"service": {fakeService}, "scope": {"repository:library/nginx:pull", "repository:foo/bar:pull"}},
			wantAuth: "Basic Y2xpZW50OnNlY3JldA==",
		},
		{
			name:        "GET without service gets the upstream's",
			method:      "GET",
			target:      "/auth/token?scope=repository:library/nginx:pull",
			tokenStatus: 200, tokenCT: "application/json", tokenBody: tokenJSON,
			wantForm: url.Values{"service": {fakeService}, "scope": {"repository:library/nginx:pull"}},
		},
		{
			name:        "GET passes other parameters through",
			method:      "GET",
			target:      "/auth/token?service=x&scope=repository:nginx:pull&offline_token=true&client_id=docker",
			tokenStatus: 200, tokenCT: "application/json", tokenBody: tokenJSON,
			wantForm: url.Values{"service": {fakeService}, "scope": {"repository:library/nginx:pull"}, "offline_token": {"true"}, "client_id": {"docker"}},
		},
		{
			name:        "space-separated scopes in one parameter",
			method:      "GET",
			target:      "/auth/token?service=x&scope=" + url.QueryEscape("repository:nginx:pull repository:foo/bar:pull"),
			tokenStatus: 200, tokenCT: "application/json", tokenBody: tokenJSON,
			wantForm: url.Values{"service": {fakeService}, "scope": {"repository:library/nginx:pull repository:foo/bar:pull"}},
		},
		{
			name:          "no library/ without library_prefix",
			registryExtra: []string{`library_prefix = false`},
			method:        "GET",
			target:        "/auth/token?service=x&scope=repository:nginx:pull",
			tokenStatus:   200, tokenCT: "application/json", tokenBody: tokenJSON,
			wantForm: url.Values{"service": {fakeService}, "scope": {"repository:nginx:pull"}},
		},
		{
			name:          "anonymous client borrows the mirror account",
			registryExtra: account,
			method:        "GET",
			target:        "/auth/token?service=x&scope=repository:nginx:pull",
			tokenStatus:   200, tokenCT: "application/json", tokenBody: tokenJSON,
			wantForm: url.Values{"service": {fakeService}, "scope": {"repository:library/nginx:pull"}},
			wantAuth: mirrorBasic,
		},
		{
			name:          "client credentials win over the mirror account",
			registryExtra: account,
			method:        "GET",
			target:        "/auth/token?service=x&scope=repository:nginx:pull",
			header:        hdr("Authorization", "Basic Y2xpZW50OnNlY3JldA=="),
			tokenStatus:   200, tokenCT: "application/json", tokenBody: tokenJSON,
			wantForm: url.Values{"service": {fakeService}, "scope": {"repository:library/nginx:pull"}},
			wantAuth: "Basic Y2xpZW50OnNlY3JldA==",
		},
		{
			name:   "POST form is forwarded as POST and rewritten",
			method: "POST",
			target: "/auth/token?ns=docker.io",
			header: hdr("Content-Type", form),
			body: url.Values{"grant_type": {"password"}, "service": {"x"}, "client_id": {"containerd"},
				"scope": {"repository:nginx:pull", "repository:foo/bar:pull"}, "username": {"alice"}, "password": {"pw"}}.Encode(),
			tokenStatus: 200, tokenCT: "application/json", tokenBody: tokenJSON,
			wantForm: url.Values{"grant_type": {"password"}, "service": {fakeService}, "client_id": {"containerd"},
				"scope": {"repository:library/nginx:pull", "repository:foo/bar:pull"}, "username": {"alice"}, "password": {"pw"}},
		},
		{
			name:        "POST form with a charset, as containerd sends it",
			method:      "POST",
			target:      "/auth/token",
			header:      hdr("Content-Type", form+"; charset=utf-8"),
			body:        url.Values{"grant_type": {"password"}, "service": {"x"}, "scope": {"repository:nginx:pull"}, "username": {"alice"}, "password": {"pw"}}.Encode(),
			tokenStatus: 200, tokenCT: "application/json", tokenBody: tokenJSON,
			wantForm: url.Values{"grant_type": {"password"}, "service": {fakeService}, "scope": {"repository:library/nginx:pull"}, "username": {"alice"}, "password": {"pw"}},
		},
		{
			name:          "POST with a refresh token does not borrow the mirror account",
			registryExtra: account,
			method:        "POST",
			target:        "/auth/token",
			header:        hdr("Content-Type", form),
			body:          url.Values{"grant_type": {"refresh_token"}, "refresh_token": {"r3fr3sh"}, "service": {"x"}, "scope": {"repository:nginx:pull"}}.Encode(),
			tokenStatus:   200, tokenCT: "application/json", tokenBody: tokenJSON,
			wantForm: url.Values{"grant_type": {"refresh_token"}, "refresh_token": {"r3fr3sh"}, "service": {fakeService}, "scope": {"repository:library/nginx:pull"}},
		},
		{
			name:        "token server error is relayed unchanged",
			method:      "GET",
			target:      "/auth/token?service=x&scope=repository:nginx:pull",
			header:      hdr("Authorization", "Basic d3Jvbmc6d3Jvbmc="),
			tokenStatus: 401, tokenCT: "application/json; charset=utf-8", tokenBody: `{"details":"incorrect username or password"}`,
			wantForm: url.Values{"service": {fakeService}, "scope": {"repository:library/nginx:pull"}},
			wantAuth: "Basic d3Jvbmc6d3Jvbmc=",
		},
		{
			name:        "token server 429 is relayed unchanged",
			method:      "GET",
			target:      "/auth/token?service=x&scope=repository:nginx:pull",
			tokenStatus: 429, tokenCT: "text/plain", tokenBody: "Too Many Requests (HAP429).\n",
			wantForm: url.Values{"service": {fakeService}, "scope": {"repository:library/nginx:pull"}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			token := newFakeServer(t, func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Content-Type", tc.tokenCT)
				w.WriteHeader(tc.tokenStatus)
				_, _ = io.WriteString(w, tc.tokenBody)
			})
			up := newFakeServer(t, fakeRegistry(token.URL()+"/token", nil))
			extra := tc.registryExtra
			if extra == nil {
				extra = []string{`library_prefix = true`}
			}
			m := newMirror(t, testConfig("", registryConfig("docker.io", up.URL(), extra...)))

			resp, body := m.do(t, tc.method, tc.target, tc.header, tc.body)
			checkStatus(t, resp, tc.tokenStatus)
			checkHeader(t, resp.Header, "Content-Type", tc.tokenCT)
			if string(body) != tc.tokenBody {
				t.Fatalf("unexpected body: got %q; want %q", body, tc.tokenBody)
			}

			rs := token.requests()
			if len(rs) != 1 {
				t.Fatalf("unexpected token server requests: got %d; want 1", len(rs))
			}
			r := rs[0]
			if r.Method != tc.method {
				t.Fatalf("unexpected token request method: got %s; want %s", r.Method, tc.method)
			}
			if r.Path != "/token" {
				t.Fatalf("unexpected token request path: got %q; want /token", r.Path)
			}
			got := r.Query
			if tc.method == "POST" {
				checkHeader(t, r.Header, "Content-Type", form)
				if r.RawQuery != "" {
					t.Fatalf("unexpected token request query on POST: got %q; want none", r.RawQuery)
				}
				var err error
				if got, err = url.ParseQuery(r.Body); err != nil {
					t.Fatalf("cannot parse the forwarded form %q: %s", r.Body, err)
				}
			}
			if !reflect.DeepEqual(got, tc.wantForm) {
				t.Fatalf("unexpected token request parameters: got %v; want %v", got, tc.wantForm)
			}
			checkHeader(t, r.Header, "Authorization", tc.wantAuth)
			for _, r := range up.requests() {
				if r.Path != "/v2/" {
					t.Fatalf("unexpected upstream request: got %s %s; want only the /v2/ discovery", r.Method, r.Path)
				}
			}
		})
	}
}

// TestTokenFlowTwoRegistries pulls a private manifest from the second of two registries the way
// clients do: request, 401, token from the realm the mirror announced (without ?ns=, which
// containerd only adds to registry requests), then the request again with the token.
func TestTokenFlowTwoRegistries(t *testing.T) {
	t.Parallel()
	const alice = "Basic YWxpY2U6cHc=" // alice:pw, the only account ghcr's token server knows
	tokenHandler := func(tok, wantAuth string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			if wantAuth != "" && r.Header.Get("Authorization") != wantAuth {
				w.WriteHeader(http.StatusUnauthorized)
				_, _ = io.WriteString(w, `{"details":"access to the requested resource is not authorized"}`)
				return
			}
			_, _ = io.WriteString(w, `{"token":"`+tok+`","expires_in":300}`)
		}
	}
	const manifest = `{"schemaVersion":2}`
	tests := []struct {
		name      string
		pingFirst bool // Docker pings /v2/ first; containerd goes straight to the manifest
		header    http.Header
		query     string
	}{
		{"docker flow, selected by host", true, hdr("Host", "ghcr.mirror.example"), ""},
		{"containerd flow, selected by host", false, hdr("Host", "ghcr.mirror.example"), ""},
		{"docker flow, selected by ns", true, nil, "?ns=ghcr.io"},
		{"containerd flow, selected by ns", false, nil, "?ns=ghcr.io"},
	}
	for _, mode := range mirrorModes {
		for _, tc := range tests {
			t.Run(mode.name+"/"+tc.name, func(t *testing.T) {
				hubToken := newFakeServer(t, tokenHandler("hub-token", ""))
				ghcrToken := newFakeServer(t, tokenHandler("ghcr-token", alice))
				hub := newFakeServer(t, fakeRegistryService(hubToken.URL()+"/token", "hub.fake.test", nil))
				ghcrRealm := ghcrToken.URL() + "/token"
				ghcr := newFakeServer(t, fakeRegistryService(ghcrRealm, "ghcr.fake.test", func(w http.ResponseWriter, r *http.Request) {
					if r.Header.Get("Authorization") != "Bearer ghcr-token" {
						w.Header().Set("WWW-Authenticate", `Bearer realm="`+ghcrRealm+`",service="ghcr.fake.test",scope="repository:owner/app:pull"`)
						w.Header().Set("Content-Type", "application/json")
						w.WriteHeader(http.StatusUnauthorized)
						_, _ = io.WriteString(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`)
						return
					}
					w.Header().Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
					_, _ = io.WriteString(w, manifest)
				}))
				m := newMirror(t, testConfig("",
					registryConfig("docker.io", hub.URL(), `library_prefix = true`, `default = true`, `hosts = ["docker.mirror.example"]`),
					registryConfig("ghcr.io", ghcr.URL(), `hosts = ["ghcr.mirror.example"]`), mode.cache))

				if tc.pingFirst {
					resp, _ := m.do(t, "GET", "/v2/"+tc.query, tc.header, "")
					checkStatus(t, resp, 401)
				}
				resp, _ := m.do(t, "GET", "/v2/owner/app/manifests/v1"+tc.query, tc.header, "")
				checkStatus(t, resp, 401)
				c, ok := upstream.ParseChallenge(resp.Header.Get("WWW-Authenticate"))
				if !ok || c.Scheme != "Bearer" || c.Service != "ghcr.fake.test" || c.Scope != "repository:owner/app:pull" {
					t.Fatalf("unexpected challenge: got %q; want Bearer with ghcr's service and the scope", resp.Header.Get("WWW-Authenticate"))
				}
				realm, err := url.Parse(c.Realm)
				if err != nil || realm.Path != PathToken {
					t.Fatalf("unexpected realm: got %q; want the mirror's %s", c.Realm, PathToken)
				}
				hubBefore, ghcrBefore := len(hubToken.requests()), len(ghcrToken.requests())
				// Like containerd and Docker, keep the realm's own query and add service and scope.
				q := realm.Query()
				q.Set("service", c.Service)
				q.Add("scope", c.Scope)
				resp, body := m.do(t, "GET", PathToken+"?"+q.Encode(), hdr("Host", realm.Host, "Authorization", alice), "")
				if n := len(hubToken.requests()) - hubBefore; n != 0 {
					t.Fatalf("unexpected requests to docker.io's token server: got %d (service=%q); want 0: the token is for ghcr.io",
						n, hubToken.requests()[hubBefore].Query.Get("service"))
				}
				checkStatus(t, resp, 200)
				rs := ghcrToken.requests()[ghcrBefore:]
				if len(rs) != 1 {
					t.Fatalf("unexpected requests to ghcr.io's token server: got %d; want 1", len(rs))
				}
				if got := rs[0].Query.Get("service"); got != "ghcr.fake.test" {
					t.Fatalf("unexpected service at ghcr.io's token server: got %q; want %q", got, "ghcr.fake.test")
				}
				var tr struct{ Token string }
				if err := json.Unmarshal(body, &tr); err != nil || tr.Token != "ghcr-token" {
					t.Fatalf("unexpected token response: got %s; want ghcr-token", body)
				}

				h := hdr("Authorization", "Bearer "+tr.Token)
				for k, v := range tc.header {
					h[k] = v
				}
				resp, body = m.do(t, "GET", "/v2/owner/app/manifests/v1"+tc.query, h, "")
				checkStatus(t, resp, 200)
				if string(body) != manifest {
					t.Fatalf("unexpected manifest: got %q; want %q", body, manifest)
				}
			})
		}
	}
}
