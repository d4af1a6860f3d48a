package proxy

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// mirrorModes runs every content test against both ways docxy serves content: with its cache (the
// default; upstream requests carry the mirror's own token) and as a plain pass-through (upstream
// requests carry the client's credentials).
var mirrorModes = []struct {
	name  string
	cache string // extra configuration
}{
	{"cache", ""},
	{"passthrough", "[cache]\ndisabled = true\n"},
}

const (
	mirrorToken = "Bearer mirror-token" // what the fake token servers hand out
	clientToken = "Bearer client-token" // what the test clients send
)

// fakeHub starts a token server handing out mirror-token and a registry in front of it whose
// non-/v2/ requests go to next. It returns the registry and the token server.
func fakeHub(t *testing.T, next http.HandlerFunc) (up, token *fakeServer) {
	t.Helper()
	token = newFakeServer(t, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"token":"mirror-token","expires_in":300}`)
	})
	up = newFakeServer(t, fakeRegistry(token.URL()+"/token", next))
	return up, token
}

// hubMirror starts a mirror of up with library_prefix in the given mode.
func hubMirror(t *testing.T, upURL, mode string, extra ...string) *mirror {
	t.Helper()
	regs := []string{registryConfig("docker.io", upURL, append([]string{`library_prefix = true`}, extra...)...), mode}
	return newMirror(t, testConfig(`upstream_timeout = "3s"`, regs...))
}

func digestOf(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

func randomBytes(n int, seed uint64) []byte {
	b := make([]byte, n)
	_, _ = rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)}).Read(b)
	return b
}

const (
	mtOCIIndexS       = "application/vnd.oci.image.index.v1+json"
	mtDockerListS     = "application/vnd.docker.distribution.manifest.list.v2+json"
	mtOCIManifestS    = "application/vnd.oci.image.manifest.v1+json"
	mtDockerManifestS = "application/vnd.docker.distribution.manifest.v2+json"
)

var testManifest = []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}`)

// writeManifestResponse answers a manifest request as a registry does: exact length, type and digest.
func writeManifestResponse(w http.ResponseWriter, r *http.Request, ct string, body []byte) {
	d := digestOf(body)
	w.Header().Set("Content-Type", ct)
	w.Header().Set("Docker-Content-Digest", d)
	w.Header().Set("Etag", `"`+d+`"`)
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	if r.Method == http.MethodHead {
		return
	}
	_, _ = w.Write(body)
}

// onlyPath returns the requests of rs for path.
func onlyPath(rs []recorded, path string) []recorded {
	var out []recorded
	for _, r := range rs {
		if r.Path == path {
			out = append(out, r)
		}
	}
	return out
}

func TestManifestGet(t *testing.T) {
	t.Parallel()
	const path = "/v2/library/nginx/manifests/latest"
	tests := []struct {
		name       string
		target     string
		header     http.Header
		wantAccept []string // media types the upstream's Accept must list; nil means exactly the client's
	}{
		{"client Accept is forwarded", "/v2/nginx/manifests/latest",
			hdr("Accept", mtOCIIndexS+", "+mtDockerListS, "Authorization", clientToken), nil},
		{"missing Accept asks for all four types", "/v2/nginx/manifests/latest",
			hdr("Authorization", clientToken), []string{mtOCIIndexS, mtDockerListS, mtOCIManifestS, mtDockerManifestS}},
		{"ns is not forwarded", "/v2/nginx/manifests/latest?ns=docker.io",
			hdr("Authorization", clientToken), []string{mtOCIIndexS, mtDockerListS, mtOCIManifestS, mtDockerManifestS}},
		{"full name", "/v2/library/nginx/manifests/latest",
			hdr("Accept", mtOCIIndexS, "Authorization", clientToken), nil},
		{"hop-by-hop request headers are not forwarded", "/v2/nginx/manifests/latest",
			hdr("Accept", mtOCIIndexS, "Authorization", clientToken, "Connection", "x-bar", "X-Bar", "1",
				"Proxy-Authorization", "Basic cHJveHk6cHJveHk=", "Cookie", "session=1", "Te", "trailers"), nil},
	}
	for _, mode := range mirrorModes {
		for _, tc := range tests {
			t.Run(mode.name+"/"+tc.name, func(t *testing.T) {
				up, _ := fakeHub(t, func(w http.ResponseWriter, r *http.Request) {
					if r.URL.Path != path {
						http.NotFound(w, r)
						return
					}
					writeManifestResponse(w, r, mtOCIIndexS, testManifest)
				})
				m := hubMirror(t, up.URL(), mode.cache)

				resp, body := m.do(t, "GET", tc.target, tc.header, "")
				checkStatus(t, resp, 200)
				if !bytes.Equal(body, testManifest) {
					t.Fatalf("unexpected body: got %q; want %q", body, testManifest)
				}
				checkHeader(t, resp.Header, "Content-Type", mtOCIIndexS)
				checkHeader(t, resp.Header, "Docker-Content-Digest", digestOf(testManifest))
				checkHeader(t, resp.Header, "Content-Length", strconv.Itoa(len(testManifest)))
				checkHeader(t, resp.Header, "Docker-Distribution-Api-Version", "registry/2.0")

				rs := onlyPath(up.requests(), path)
				if len(rs) != 1 {
					t.Fatalf("unexpected upstream manifest requests: got %d; want 1 (all: %v)", len(rs), up.requests())
				}
				r := rs[0]
				if r.Method != "GET" {
					t.Fatalf("unexpected upstream method: got %s; want GET", r.Method)
				}
				if r.RawQuery != "" {
					t.Fatalf("unexpected upstream query: got %q; want none", r.RawQuery)
				}
				if tc.wantAccept == nil {
					checkHeader(t, r.Header, "Accept", tc.header.Get("Accept"))
				} else {
					for _, mt := range tc.wantAccept {
						if !strings.Contains(r.Header.Get("Accept"), mt) {
							t.Fatalf("unexpected upstream Accept: got %q; want it to list %s", r.Header.Get("Accept"), mt)
						}
					}
				}
				wantAuth := clientToken
				if mode.name == "cache" {
					wantAuth = mirrorToken // shared content is fetched with the mirror's own token
				}
				checkHeader(t, r.Header, "Authorization", wantAuth)
				for _, h := range []string{"X-Bar", "Proxy-Authorization", "Cookie", "Te", "Accept-Encoding"} {
					if v := r.Header.Get(h); v != "" {
						t.Fatalf("unexpected upstream header %s: got %q; want none", h, v)
					}
				}
				if strings.Contains(strings.ToLower(r.Header.Get("Connection")), "x-bar") {
					t.Fatalf("unexpected upstream Connection: got %q", r.Header.Get("Connection"))
				}
			})
		}
	}
}

// TestManifestHead checks that HEAD goes upstream as HEAD (free on Docker Hub) and that the client
// gets the upstream's exact Content-Length, Content-Type and digest without body bytes (P1).
func TestManifestHead(t *testing.T) {
	const path = "/v2/library/nginx/manifests/latest"
	for _, mode := range mirrorModes {
		t.Run(mode.name, func(t *testing.T) {
			up, _ := fakeHub(t, func(w http.ResponseWriter, r *http.Request) {
				writeManifestResponse(w, r, mtDockerManifestS, testManifest)
			})
			m := hubMirror(t, up.URL(), mode.cache)

			// HEAD and then GET /health on one connection: the second answer parses only if the
			// HEAD answer carried no body.
			rs := m.raw(t, "HEAD /v2/nginx/manifests/latest HTTP/1.1\r\nHost: m\r\nAuthorization: "+clientToken+"\r\n\r\n"+
				"GET /health HTTP/1.1\r\nHost: m\r\n\r\n", "HEAD", "GET")
			head := rs[0].resp
			checkStatus(t, head, 200)
			checkHeader(t, head.Header, "Content-Length", strconv.Itoa(len(testManifest)))
			checkHeader(t, head.Header, "Content-Type", mtDockerManifestS)
			checkHeader(t, head.Header, "Docker-Content-Digest", digestOf(testManifest))
			if len(rs[0].body) != 0 {
				t.Fatalf("unexpected HEAD body: got %q; want none", rs[0].body)
			}
			checkStatus(t, rs[1].resp, 200)
			if !bytes.Contains(rs[1].body, []byte(`"status":"ok"`)) {
				t.Fatalf("unexpected response after HEAD: got %q; want /health (HEAD leaked body bytes?)", rs[1].body)
			}

			ups := onlyPath(up.requests(), path)
			if len(ups) != 1 || ups[0].Method != "HEAD" {
				var methods []string
				for _, r := range ups {
					methods = append(methods, r.Method)
				}
				t.Fatalf("unexpected upstream manifest requests: got %v; want [HEAD]", methods)
			}

			// The same through net/http, which reads Content-Length into ContentLength.
			resp, _ := m.do(t, "HEAD", "/v2/nginx/manifests/latest", hdr("Authorization", clientToken), "")
			checkStatus(t, resp, 200)
			if resp.ContentLength != int64(len(testManifest)) {
				t.Fatalf("unexpected ContentLength: got %d; want %d", resp.ContentLength, len(testManifest))
			}
		})
	}
}

// TestHeadWithoutLength: an upstream HEAD without Content-Length makes docxy ask with GET, so the
// client still learns the size (Docker 29 checks it).
func TestHeadWithoutLength(t *testing.T) {
	blob := randomBytes(3000, 7)
	blobDigest := digestOf(blob)
	tests := []struct {
		name   string
		target string
		path   string // upstream
		ct     string
		body   []byte
	}{
		{"manifest", "/v2/nginx/manifests/latest", "/v2/library/nginx/manifests/latest", mtOCIIndexS, testManifest},
		{"blob", "/v2/nginx/blobs/" + blobDigest, "/v2/library/nginx/blobs/" + blobDigest, "application/octet-stream", blob},
	}
	for _, mode := range mirrorModes {
		for _, tc := range tests {
			t.Run(mode.name+"/"+tc.name, func(t *testing.T) {
				up := newRawServer(t, func(c net.Conn, r *http.Request) bool {
					switch {
					case r.URL.Path == "/v2/":
						_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
						return true
					case r.URL.Path != tc.path:
						_, _ = io.WriteString(c, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
						return true
					case r.Method == "HEAD":
						// No Content-Length, as some registries and CDNs answer HEAD.
						fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Type: %s\r\nDocker-Content-Digest: %s\r\n\r\n", tc.ct, digestOf(tc.body))
						return false
					default:
						fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Type: %s\r\nDocker-Content-Digest: %s\r\nContent-Length: %d\r\n\r\n%s",
							tc.ct, digestOf(tc.body), len(tc.body), tc.body)
						return true
					}
				})
				m := hubMirror(t, up.URL(), mode.cache)

				resp, body := m.do(t, "HEAD", tc.target, nil, "")
				checkStatus(t, resp, 200)
				if resp.ContentLength != int64(len(tc.body)) {
					t.Fatalf("unexpected Content-Length: got %d; want %d", resp.ContentLength, len(tc.body))
				}
				if len(body) != 0 {
					t.Fatalf("unexpected HEAD body: got %d bytes; want none", len(body))
				}
				checkHeader(t, resp.Header, "Content-Type", tc.ct)
				checkHeader(t, resp.Header, "Docker-Content-Digest", digestOf(tc.body))
				var methods []string
				for _, r := range up.requests() {
					if r.Path == tc.path {
						methods = append(methods, r.Method)
					}
				}
				if strings.Join(methods, ",") != "HEAD,GET" {
					t.Fatalf("unexpected upstream requests for %s: got %v; want [HEAD GET]", tc.path, methods)
				}
			})
		}
	}
}

func TestManifestUpstreamErrors(t *testing.T) {
	t.Parallel()
	const unauthorizedBody = `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required","detail":[{"Type":"repository","Class":"","Name":"library/private","Action":"pull"}]}]}`
	const tooManyBody = `{"errors":[{"code":"TOOMANYREQUESTS","message":"You have reached your unauthenticated pull rate limit. https://www.docker.com/increase-rate-limit"}]}`
	tests := []struct {
		name       string
		method     string
		upstream   http.HandlerFunc
		wantStatus int
		wantHeader map[string]string
		wantBody   string
	}{
		{
			name:   "401 realm is the mirror's, scope kept",
			method: "GET",
			upstream: func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("WWW-Authenticate", `Bearer realm="https://auth.example.net/token",service="`+fakeService+`",scope="repository:library/private:pull",error="insufficient_scope"`)
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(401)
				_, _ = io.WriteString(w, unauthorizedBody)
			},
			wantStatus: 401,
			wantHeader: map[string]string{
				"WWW-Authenticate": `Bearer realm="` + testPublicBase + `/auth/token",service="` + fakeService + `",scope="repository:library/private:pull",error="insufficient_scope"`,
				"Content-Type":     "application/json",
			},
			wantBody: unauthorizedBody,
		},
		{
			name:   "401 on HEAD",
			method: "HEAD",
			upstream: func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("WWW-Authenticate", `Bearer realm="https://auth.example.net/token",service="`+fakeService+`",scope="repository:library/private:pull"`)
				w.WriteHeader(401)
			},
			wantStatus: 401,
			wantHeader: map[string]string{
				"WWW-Authenticate": `Bearer realm="` + testPublicBase + `/auth/token",service="` + fakeService + `",scope="repository:library/private:pull"`,
			},
		},
		{
			name:   "429 with rate limit headers",
			method: "GET",
			upstream: func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Retry-After", "3600")
				w.Header().Set("RateLimit-Limit", "100;w=21600")
				w.Header().Set("RateLimit-Remaining", "0;w=21600")
				w.Header().Set("Docker-RateLimit-Source", "203.0.113.7")
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(429)
				_, _ = io.WriteString(w, tooManyBody)
			},
			wantStatus: 429,
			wantHeader: map[string]string{
				"Retry-After":             "3600",
				"Ratelimit-Limit":         "100;w=21600",
				"Ratelimit-Remaining":     "0;w=21600",
				"Docker-Ratelimit-Source": "203.0.113.7",
				"Content-Type":            "application/json",
			},
			wantBody: tooManyBody,
		},
		{
			name:   "429 on HEAD",
			method: "HEAD",
			upstream: func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Retry-After", "60")
				w.Header().Set("RateLimit-Limit", "100;w=21600")
				w.Header().Set("RateLimit-Remaining", "0;w=21600")
				w.WriteHeader(429)
			},
			wantStatus: 429,
			wantHeader: map[string]string{"Retry-After": "60", "Ratelimit-Limit": "100;w=21600", "Ratelimit-Remaining": "0;w=21600"},
		},
		{
			name:   "404 body relayed",
			method: "GET",
			upstream: func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(404)
				_, _ = io.WriteString(w, `{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}`)
			},
			wantStatus: 404,
			wantHeader: map[string]string{"Content-Type": "application/json"},
			wantBody:   `{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}`,
		},
	}
	for _, mode := range mirrorModes {
		for _, tc := range tests {
			t.Run(mode.name+"/"+tc.name, func(t *testing.T) {
				up, _ := fakeHub(t, tc.upstream)
				m := hubMirror(t, up.URL(), mode.cache)
				resp, body := m.do(t, tc.method, "/v2/private/manifests/latest", hdr("Authorization", clientToken), "")
				checkStatus(t, resp, tc.wantStatus)
				for k, v := range tc.wantHeader {
					checkHeader(t, resp.Header, k, v)
				}
				if tc.method == "GET" && string(body) != tc.wantBody {
					t.Fatalf("unexpected body: got %q; want %q", body, tc.wantBody)
				}
				// The client's own credentials were tried upstream before the answer was relayed.
				sawClient := false
				for _, r := range onlyPath(up.requests(), "/v2/library/private/manifests/latest") {
					sawClient = sawClient || r.Header.Get("Authorization") == clientToken
				}
				if !sawClient && tc.wantStatus != 429 {
					t.Fatalf("unexpected upstream requests: the client's Authorization never reached the upstream")
				}
			})
		}
	}
}

// TestManifestHopByHop: hop-by-hop and server-internal headers from the upstream are not relayed (P16).
func TestManifestHopByHop(t *testing.T) {
	const path = "/v2/library/nginx/manifests/latest"
	for _, mode := range mirrorModes {
		for _, method := range []string{"GET", "HEAD"} {
			t.Run(mode.name+"/"+method, func(t *testing.T) {
				up := newRawServer(t, func(c net.Conn, r *http.Request) bool {
					if r.URL.Path != path {
						_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
						return true
					}
					fmt.Fprintf(c, "HTTP/1.1 200 OK\r\n"+
						"Content-Type: %s\r\nDocker-Content-Digest: %s\r\nContent-Length: %d\r\n"+
						"Connection: x-foo\r\nX-Foo: bar\r\nKeep-Alive: timeout=5, max=100\r\n"+
						"Proxy-Authenticate: Basic realm=\"proxy\"\r\nProxy-Connection: keep-alive\r\n"+
						"Set-Cookie: session=secret; Path=/\r\nAlt-Svc: h3=\":443\"\r\n\r\n",
						mtOCIIndexS, digestOf(testManifest), len(testManifest))
					if r.Method != "HEAD" {
						_, _ = c.Write(testManifest)
					}
					return true
				})
				m := hubMirror(t, up.URL(), mode.cache)
				resp, body := m.do(t, method, "/v2/nginx/manifests/latest", nil, "")
				checkStatus(t, resp, 200)
				if method == "GET" && !bytes.Equal(body, testManifest) {
					t.Fatalf("unexpected body: got %q; want %q", body, testManifest)
				}
				for _, h := range []string{"X-Foo", "Keep-Alive", "Proxy-Authenticate", "Proxy-Connection", "Set-Cookie", "Alt-Svc"} {
					if v := resp.Header.Get(h); v != "" {
						t.Fatalf("unexpected header %s: got %q; want none", h, v)
					}
				}
				if c := resp.Header.Get("Connection"); strings.Contains(strings.ToLower(c), "x-foo") {
					t.Fatalf("unexpected Connection: got %q", c)
				}
			})
		}
	}
}

// TestManifestChunked: a manifest the upstream sends chunked reaches the client with an exact
// Content-Length (P2).
func TestManifestChunked(t *testing.T) {
	for _, mode := range mirrorModes {
		t.Run(mode.name, func(t *testing.T) {
			up, _ := fakeHub(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", mtOCIIndexS)
				w.Header().Set("Docker-Content-Digest", digestOf(testManifest))
				_, _ = w.Write(testManifest[:10])
				w.(http.Flusher).Flush() // forces chunked encoding
				_, _ = w.Write(testManifest[10:])
			})
			m := hubMirror(t, up.URL(), mode.cache)
			resp, body := m.do(t, "GET", "/v2/nginx/manifests/latest", nil, "")
			checkStatus(t, resp, 200)
			if !bytes.Equal(body, testManifest) {
				t.Fatalf("unexpected body: got %q; want %q", body, testManifest)
			}
			if resp.ContentLength != int64(len(testManifest)) || len(resp.TransferEncoding) != 0 {
				t.Fatalf("unexpected framing: got Content-Length %d, Transfer-Encoding %v; want Content-Length %d",
					resp.ContentLength, resp.TransferEncoding, len(testManifest))
			}
		})
	}
}

// blobHandler serves blobs by digest with http.ServeContent (exact length, Range support) under
// any path ending in /blobs/<digest> or /cdn/<digest>.
func blobHandler(blobs map[string][]byte) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		d := r.URL.Path[strings.LastIndexByte(r.URL.Path, '/')+1:]
		b, ok := blobs[d]
		if !ok {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(404)
			_, _ = io.WriteString(w, `{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown to registry"}]}`)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(b))
	}
}

func TestBlobGet(t *testing.T) {
	t.Parallel()
	small, big := randomBytes(4<<10, 1), randomBytes(8<<20, 2)
	blobs := map[string][]byte{digestOf(small): small, digestOf(big): big}
	for _, mode := range mirrorModes {
		t.Run(mode.name, func(t *testing.T) {
			up, _ := fakeHub(t, blobHandler(blobs))
			m := hubMirror(t, up.URL(), mode.cache)
			for _, b := range [][]byte{small, big} {
				d := digestOf(b)
				attempts := 2 // the second one may be a cache hit
				if mode.name == "passthrough" && len(b) > 1<<20 {
					attempts = 1 // the same path twice, and slow under -race
				}
				for attempt := 0; attempt < attempts; attempt++ {
					resp, body := m.do(t, "GET", "/v2/nginx/blobs/"+d, hdr("Authorization", clientToken), "")
					checkStatus(t, resp, 200)
					if resp.ContentLength != int64(len(b)) || len(resp.TransferEncoding) != 0 {
						t.Fatalf("unexpected framing: got Content-Length %d, Transfer-Encoding %v; want Content-Length %d",
							resp.ContentLength, resp.TransferEncoding, len(b))
					}
					if !bytes.Equal(body, b) {
						t.Fatalf("unexpected body: got %d bytes (sha %s); want %d bytes (%s)", len(body), digestOf(body), len(b), d)
					}
					checkHeader(t, resp.Header, "Docker-Content-Digest", d)
				}
				if n := len(onlyPath(up.requests(), "/v2/library/nginx/blobs/"+d)); n == 0 {
					t.Fatalf("unexpected upstream requests for %s: got none", d)
				}
				resp, body := m.do(t, "HEAD", "/v2/nginx/blobs/"+d, nil, "")
				checkStatus(t, resp, 200)
				if resp.ContentLength != int64(len(b)) || len(body) != 0 {
					t.Fatalf("unexpected HEAD: got Content-Length %d and %d body bytes; want %d and none", resp.ContentLength, len(body), len(b))
				}
				checkHeader(t, resp.Header, "Docker-Content-Digest", d)
			}
		})
	}
}

func TestBlobRange(t *testing.T) {
	b := randomBytes(4096, 3)
	d := digestOf(b)
	for _, mode := range mirrorModes {
		t.Run(mode.name, func(t *testing.T) {
			up, _ := fakeHub(t, blobHandler(map[string][]byte{d: b}))
			m := hubMirror(t, up.URL(), mode.cache)
			f := func(rangeHeader string, wantStatus int, wantContentRange string, want []byte) {
				t.Helper()
				resp, body := m.do(t, "GET", "/v2/nginx/blobs/"+d, hdr("Range", rangeHeader, "Authorization", clientToken), "")
				checkStatus(t, resp, wantStatus)
				checkHeader(t, resp.Header, "Content-Range", wantContentRange)
				if resp.ContentLength != int64(len(want)) {
					t.Fatalf("unexpected Content-Length: got %d; want %d", resp.ContentLength, len(want))
				}
				if !bytes.Equal(body, want) {
					t.Fatalf("unexpected body: got %d bytes; want %d bytes", len(body), len(want))
				}
			}
			f("bytes=100-199", 206, "bytes 100-199/4096", b[100:200]) // cold
			if rs := onlyPath(up.requests(), "/v2/library/nginx/blobs/"+d); len(rs) == 0 || rs[0].Header.Get("Range") != "bytes=100-199" {
				t.Fatalf("unexpected upstream requests: the Range was not forwarded on a cold blob: %v", rs)
			}
			resp, body := m.do(t, "GET", "/v2/nginx/blobs/"+d, nil, "")
			checkStatus(t, resp, 200)
			if !bytes.Equal(body, b) {
				t.Fatalf("unexpected body: got %d bytes; want %d", len(body), len(b))
			}
			f("bytes=100-199", 206, "bytes 100-199/4096", b[100:200]) // warm, if cached
			f("bytes=4000-", 206, "bytes 4000-4095/4096", b[4000:])
		})
	}
}

// TestBlobRedirect: a blob redirect to a CDN on another host:port is followed by docxy; the CDN
// never sees an Authorization header (S3 rejects it, P5) and the client never sees a 3xx.
func TestBlobRedirect(t *testing.T) {
	t.Parallel()
	b := randomBytes(64<<10, 4)
	d := digestOf(b)
	cdn := newFakeServer(t, blobHandler(map[string][]byte{d: b}))
	tests := []struct {
		name     string
		status   int
		location func(r *http.Request) string
		viaCDN   bool
	}{
		{"307 to CDN", 307, func(*http.Request) string { return cdn.URL() + "/cdn/" + d + "?sig=abc%2Fdef&expires=1700000000" }, true},
		{"302 to CDN", 302, func(*http.Request) string { return cdn.URL() + "/cdn/" + d + "?sig=x" }, true},
		{"301 to CDN", 301, func(*http.Request) string { return cdn.URL() + "/cdn/" + d }, true},
		{"308 to CDN", 308, func(*http.Request) string { return cdn.URL() + "/cdn/" + d }, true},
		{"303 to CDN", 303, func(*http.Request) string { return cdn.URL() + "/cdn/" + d }, true},
		{"307 on the same host", 307, func(*http.Request) string { return "/storage/" + d }, false},
	}
	for _, mode := range mirrorModes {
		for _, tc := range tests {
			t.Run(mode.name+"/"+tc.name, func(t *testing.T) {
				cdnBefore := len(cdn.requests())
				up, _ := fakeHub(t, func(w http.ResponseWriter, r *http.Request) {
					if strings.HasPrefix(r.URL.Path, "/storage/") {
						blobHandler(map[string][]byte{d: b})(w, r)
						return
					}
					http.Redirect(w, r, tc.location(r), tc.status)
				})
				m := hubMirror(t, up.URL(), mode.cache)

				for _, rng := range []string{"bytes=10-19", ""} { // a cold Range first: it is forwarded
					h := hdr("Authorization", clientToken)
					want, wantStatus := b, 200
					if rng != "" {
						h.Set("Range", rng)
						want, wantStatus = b[10:20], 206
					}
					resp, body := m.do(t, "GET", "/v2/nginx/blobs/"+d, h, "")
					checkStatus(t, resp, wantStatus)
					if loc := resp.Header.Get("Location"); loc != "" {
						t.Fatalf("unexpected Location: got %q; want none (docxy follows redirects)", loc)
					}
					if !bytes.Equal(body, want) || resp.ContentLength != int64(len(want)) {
						t.Fatalf("unexpected body: got %d bytes (Content-Length %d); want %d", len(body), resp.ContentLength, len(want))
					}
					checkHeader(t, resp.Header, "Docker-Content-Digest", d)
				}

				if !tc.viaCDN {
					rs := onlyPath(up.requests(), "/storage/"+d)
					if len(rs) == 0 {
						t.Fatalf("unexpected upstream requests: the same-host redirect was not followed")
					}
					for _, r := range rs {
						if r.Header.Get("Authorization") == "" {
							t.Fatalf("unexpected Authorization on a same-host redirect: got none; want it kept")
						}
					}
					return
				}
				rs := cdn.requests()[cdnBefore:]
				if len(rs) == 0 {
					t.Fatalf("unexpected CDN requests: got none; want the redirect followed")
				}
				sawRange := false
				for _, r := range rs {
					if a := r.Header.Get("Authorization"); a != "" {
						t.Fatalf("unexpected Authorization at the CDN: got %q; want none", a)
					}
					if r.Path != "/cdn/"+d {
						t.Fatalf("unexpected CDN path: got %q; want %q", r.Path, "/cdn/"+d)
					}
					if u, _ := urlQuery(tc.location(nil)); r.RawQuery != u {
						t.Fatalf("unexpected CDN query: got %q; want %q", r.RawQuery, u)
					}
					sawRange = sawRange || r.Header.Get("Range") == "bytes=10-19"
				}
				if !sawRange {
					t.Fatalf("unexpected CDN requests: the client's Range never reached the CDN")
				}
			})
		}
	}
}

func urlQuery(u string) (string, bool) {
	_, q, ok := strings.Cut(u, "?")
	return q, ok
}

func TestBlobRedirectLoop(t *testing.T) {
	d := digestOf([]byte("loop"))
	for _, mode := range mirrorModes {
		t.Run(mode.name, func(t *testing.T) {
			up, _ := fakeHub(t, func(w http.ResponseWriter, r *http.Request) {
				http.Redirect(w, r, r.URL.Path, http.StatusTemporaryRedirect) // to itself
			})
			m := hubMirror(t, up.URL(), mode.cache)
			resp, body := m.do(t, "GET", "/v2/nginx/blobs/"+d, nil, "")
			checkStatus(t, resp, 502)
			checkErrorBody(t, body, "UNAVAILABLE")
			if n := len(onlyPath(up.requests(), "/v2/library/nginx/blobs/"+d)); n > 20 {
				t.Fatalf("unexpected upstream requests: got %d; want the loop cut after a few hops", n)
			}
		})
	}
}

// TestBlobTruncated: when the upstream (or the CDN) closes the connection mid-blob, the client's
// read fails; it never gets a clean, short 200 (P7).
func TestBlobTruncated(t *testing.T) {
	const size = 1 << 20
	b := randomBytes(size, 5)
	d := digestOf(b)
	truncating := func(prefix string) func(c net.Conn, r *http.Request) bool {
		return func(c net.Conn, r *http.Request) bool {
			if !strings.HasPrefix(r.URL.Path, prefix) {
				_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
				return true
			}
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n", size)
			_, _ = c.Write(b[:size/4])
			time.Sleep(20 * time.Millisecond)
			return false // close mid-body
		}
	}
	tests := []struct {
		name  string
		setup func(t *testing.T) string // returns the upstream URL
	}{
		{"upstream", func(t *testing.T) string { return newRawServer(t, truncating("/v2/library/nginx/blobs/")).URL() }},
		{"CDN", func(t *testing.T) string {
			cdn := newRawServer(t, truncating("/cdn/"))
			up := newRawServer(t, func(c net.Conn, r *http.Request) bool {
				if r.URL.Path == "/v2/" {
					_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
					return true
				}
				fmt.Fprintf(c, "HTTP/1.1 307 Temporary Redirect\r\nLocation: %s/cdn/%s\r\nContent-Length: 0\r\n\r\n", cdn.URL(), d)
				return true
			})
			return up.URL()
		}},
	}
	for _, mode := range mirrorModes {
		for _, tc := range tests {
			t.Run(mode.name+"/"+tc.name, func(t *testing.T) {
				m := hubMirror(t, tc.setup(t), mode.cache)
				for attempt := 0; attempt < 2; attempt++ { // a failed fill must not be served later either
					resp, err := m.client.Do(m.request(t, "GET", "/v2/nginx/blobs/"+d, nil, ""))
					if err != nil {
						continue // the connection was aborted before the headers: fine
					}
					body, err := io.ReadAll(resp.Body)
					resp.Body.Close()
					if err == nil {
						if resp.StatusCode >= 400 {
							continue // an error answer is honest too
						}
						t.Fatalf("unexpected clean response on attempt %d: got status %d with %d of %d bytes; want the read to fail",
							attempt, resp.StatusCode, len(body), size)
					}
					if !errors.Is(err, io.ErrUnexpectedEOF) && !isConnError(err) {
						t.Fatalf("unexpected read error: got %v; want unexpected EOF or a closed connection", err)
					}
				}
			})
		}
	}
}

func isConnError(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, io.EOF) || strings.Contains(err.Error(), "connection reset")
}

// TestBlobDigestMismatch: bytes that do not match the requested digest are never kept and served
// later as a cache hit.
func TestBlobDigestMismatch(t *testing.T) {
	good, bad := randomBytes(32<<10, 8), randomBytes(32<<10, 9)
	d := digestOf(good)
	for _, mode := range mirrorModes {
		t.Run(mode.name, func(t *testing.T) {
			up, _ := fakeHub(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/octet-stream")
				http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(bad))
			})
			m := hubMirror(t, up.URL(), mode.cache)
			// A request during the failed fill may join it (one upstream fetch per blob), so retry
			// until a request goes upstream again: none may be a cache hit meanwhile.
			upstreamGets := func() int { return len(onlyPath(up.requests(), "/v2/library/nginx/blobs/"+d)) }
			for attempt := 0; attempt < 50 && upstreamGets() < 2; attempt++ {
				if attempt > 0 {
					time.Sleep(20 * time.Millisecond)
				}
				resp, err := m.client.Do(m.request(t, "GET", "/v2/nginx/blobs/"+d, nil, ""))
				if err != nil {
					continue
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if bytes.Equal(body, good) {
					t.Fatalf("unexpected body: got the good bytes from an upstream that never sent them")
				}
				if resp.Header.Get(HeaderXCache) == "HIT" {
					t.Fatalf("unexpected X-Cache on attempt %d: got HIT for bytes that do not match %s", attempt, d)
				}
			}
			if n := upstreamGets(); n < 2 {
				t.Fatalf("unexpected upstream requests: got %d; want 2 (the bad bytes must not be cached)", n)
			}
		})
	}
}
