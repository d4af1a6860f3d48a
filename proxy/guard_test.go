package proxy

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docxy/docxy/config"
	"golang.org/x/crypto/bcrypt"
)

func blobHub(t *testing.T, blob []byte, gate chan struct{}) *fakeServer {
	t.Helper()
	up, _ := fakeHub(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", fmt.Sprint(len(blob)))
		half := len(blob) / 2
		_, _ = w.Write(blob[:half])
		w.(http.Flusher).Flush()
		if gate != nil {
			<-gate
		}
		_, _ = w.Write(blob[half:])
	})
	return up
}

func TestRequestRateLimit(t *testing.T) {
	up, _ := fakeHub(t, nil)
	m := hubMirror(t, up.URL(), "[cache]\ndisabled = true\n[limits]\nrequests_per_second = 0.01\nburst = 2\n")
	for i := 0; i < 2; i++ {
		resp, _ := m.do(t, "GET", "/v2/", nil, "")
		checkStatus(t, resp, http.StatusUnauthorized) // within the burst: the usual challenge
	}
	resp, body := m.do(t, "GET", "/v2/", nil, "")
	checkStatus(t, resp, http.StatusTooManyRequests)
	if !bytes.Contains(body, []byte(`"code":"TOOMANYREQUESTS"`)) || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("unexpected 429: Retry-After %q, body %s", resp.Header.Get("Retry-After"), body)
	}
	// Probes and the front page are not rate limited.
	resp, _ = m.do(t, "GET", "/health", nil, "")
	checkStatus(t, resp, http.StatusOK)
}

// TestRateLimitPerIPv6Prefix: behind a trusted load balancer, clients named by X-Forwarded-For
// are limited per IPv6 /64, so hopping between addresses of one prefix gains nothing.
func TestRateLimitPerIPv6Prefix(t *testing.T) {
	up, _ := fakeHub(t, nil)
	m := hubMirror(t, up.URL(), "[cache]\ndisabled = true\n[limits]\nrequests_per_second = 0.01\nburst = 1\ntrusted_proxies = [\"127.0.0.1\"]\n")
	from := func(client string, want int) {
		t.Helper()
		resp, _ := m.do(t, "GET", "/v2/", http.Header{"X-Forwarded-For": {client}}, "")
		checkStatus(t, resp, want)
	}
	from("2001:db8:1:2::1", http.StatusUnauthorized)            // the burst of this /64
	from("2001:db8:1:2::dead:beef", http.StatusTooManyRequests) // same /64, another address
	from("2001:db8:1:3::1", http.StatusUnauthorized)            // the next /64 is another client
}

func TestConcurrentBlobLimit(t *testing.T) {
	for _, mode := range mirrorModes {
		t.Run(mode.name, func(t *testing.T) {
			blob := randomBytes(256<<10, 3)
			d := digestOf(blob)
			gate := make(chan struct{})
			up := blobHub(t, blob, gate)
			m := hubMirror(t, up.URL(), mode.cache+"\n[limits]\nmax_blobs_per_ip = 1\n")
			first, err := m.client.Do(m.request(t, "GET", "/v2/nginx/blobs/"+d, nil, ""))
			if err != nil {
				t.Fatalf("first GET: %s", err)
			}
			resp, body := m.do(t, "GET", "/v2/nginx/blobs/"+d, nil, "")
			checkStatus(t, resp, http.StatusTooManyRequests)
			if !bytes.Contains(body, []byte("concurrent downloads")) {
				t.Fatalf("unexpected body: %s", body)
			}
			close(gate)
			got, err := io.ReadAll(first.Body)
			first.Body.Close()
			if err != nil || !bytes.Equal(got, blob) {
				t.Fatalf("first download: %d bytes, %v", len(got), err)
			}
			// The slot is given back when the body is done.
			deadline := time.Now().Add(5 * time.Second)
			for {
				resp, body = m.do(t, "GET", "/v2/nginx/blobs/"+d, nil, "")
				if resp.StatusCode == http.StatusOK {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("download slot not released: status %d %s", resp.StatusCode, body)
				}
				time.Sleep(10 * time.Millisecond)
			}
			if !bytes.Equal(body, blob) {
				t.Fatalf("second download differs")
			}
		})
	}
}

func TestDailyByteBudget(t *testing.T) {
	blob := randomBytes(64<<10, 4)
	d := digestOf(blob)
	up := blobHub(t, blob, nil)
	m := hubMirror(t, up.URL(), "[limits]\ndaily_bytes_per_ip = \"100KiB\"\n")
	for i := 0; i < 2; i++ { // 64 KiB, then 128 KiB: the budget is checked before a download
		resp, body := m.do(t, "GET", "/v2/nginx/blobs/"+d, nil, "")
		checkStatus(t, resp, http.StatusOK)
		if !bytes.Equal(body, blob) {
			t.Fatalf("download %d differs", i)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, body := m.do(t, "GET", "/v2/nginx/blobs/"+d, nil, "")
		if resp.StatusCode == http.StatusTooManyRequests {
			if !bytes.Contains(body, []byte("budget")) || resp.Header.Get("Retry-After") == "" {
				t.Fatalf("unexpected 429: %s", body)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the daily budget was not enforced: status %d", resp.StatusCode)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestMirrorAccounts(t *testing.T) {
	hash, err := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu           sync.Mutex // protects upstreamAuth
		upstreamAuth []string
	)
	up, _ := fakeHub(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		upstreamAuth = append(upstreamAuth, r.Header.Get("Authorization"))
		mu.Unlock()
		w.Header().Set("Content-Type", mtOCIManifestS)
		_, _ = io.WriteString(w, `{"schemaVersion":2}`)
	})
	authCfg := fmt.Sprintf("[auth]\ntoken_secret = \"0123456789abcdef0123\"\n[[auth.users]]\nname = \"ci\"\npassword_hash = %q\n", hash)
	m := hubMirror(t, up.URL(), "[cache]\ndisabled = true\n"+authCfg)

	resp, _ := m.do(t, "GET", "/v2/", nil, "")
	checkStatus(t, resp, http.StatusUnauthorized)
	if got := resp.Header.Get("WWW-Authenticate"); got != `Bearer realm="`+testPublicBase+`/auth/token",service="docxy"` {
		t.Fatalf("unexpected challenge: %q", got)
	}
	resp, _ = m.do(t, "GET", "/v2/nginx/manifests/latest", nil, "")
	checkStatus(t, resp, http.StatusUnauthorized)

	basic := func(user, pass string) string {
		return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
	}
	resp, _ = m.do(t, "GET", "/auth/token?service=docxy&scope=repository:nginx:pull", hdr("Authorization", basic("ci", "wrong")), "")
	checkStatus(t, resp, http.StatusUnauthorized)
	resp, body := m.do(t, "GET", "/auth/token?service=docxy&scope=repository:nginx:pull", hdr("Authorization", basic("ci", "s3cret")), "")
	checkStatus(t, resp, http.StatusOK)
	var tok struct {
		Token     string `json:"token"`
		ExpiresIn int    `json:"expires_in"`
	}
	if err := json.Unmarshal(body, &tok); err != nil || tok.Token == "" || tok.ExpiresIn <= 0 {
		t.Fatalf("unexpected token response: %s", body)
	}
	// containerd's OAuth2 form works too.
	resp, _ = m.do(t, "POST", "/auth/token", hdr("Content-Type", "application/x-www-form-urlencoded"),
		"grant_type=password&username=ci&password=s3cret&service=docxy&scope=repository:nginx:pull")
	checkStatus(t, resp, http.StatusOK)

	for _, authz := range []string{"Bearer " + tok.Token, basic("ci", "s3cret")} {
		resp, body = m.do(t, "GET", "/v2/nginx/manifests/latest", hdr("Authorization", authz), "")
		checkStatus(t, resp, http.StatusOK)
		if string(body) != `{"schemaVersion":2}` {
			t.Fatalf("unexpected manifest: %s", body)
		}
	}
	resp, _ = m.do(t, "GET", "/v2/", hdr("Authorization", "Bearer "+tok.Token), "")
	checkStatus(t, resp, http.StatusOK)
	resp, _ = m.do(t, "GET", "/v2/nginx/manifests/latest", hdr("Authorization", "Bearer "+tok.Token+"x"), "")
	checkStatus(t, resp, http.StatusUnauthorized)

	// Upstream only ever saw the mirror's own token, never the client's credentials.
	mu.Lock()
	defer mu.Unlock()
	if len(upstreamAuth) != 2 {
		t.Fatalf("unexpected upstream manifest requests: got %d; want 2", len(upstreamAuth))
	}
	for _, a := range upstreamAuth {
		if a != mirrorToken {
			t.Fatalf("unexpected upstream Authorization: got %q; want the mirror's %q", a, mirrorToken)
		}
		if strings.Contains(a, tok.Token) || strings.HasPrefix(a, "Basic") {
			t.Fatalf("client credentials reached the upstream: %q", a)
		}
	}
}

// TestReloadKeepsLimitState: a SIGHUP reload (New with Previous) that leaves [limits] alone keeps
// every client's spent tokens and budget; changed limits start afresh.
func TestReloadKeepsLimitState(t *testing.T) {
	up, _ := fakeHub(t, nil)
	build := func(limits string, prev *Handler) *Handler {
		t.Helper()
		cfg, err := config.Parse([]byte(testConfig("", registryConfig("docker.io", up.URL()))+"\n[cache]\ndisabled = true\n"+limits), "test")
		if err != nil {
			t.Fatalf("cannot parse config: %s", err)
		}
		h, err := New(cfg, Options{Version: "test", Previous: prev})
		if err != nil {
			t.Fatalf("cannot create handler: %s", err)
		}
		if prev != nil {
			prev.Close()
		}
		return h
	}
	client := netip.MustParseAddr("192.0.2.1")
	allowed := func(h *Handler) bool {
		ok, _ := h.limiter.Allow(client, time.Now())
		return ok
	}
	a := build("[limits]\nrequests_per_second = 0.01\nburst = 1\n", nil)
	if !allowed(a) {
		t.Fatalf("the first request was refused")
	}
	b := build("[limits]\nrequests_per_second = 0.01\nburst = 1\n", a)
	if allowed(b) {
		t.Fatalf("the reload with the same limits gave the client a fresh token")
	}
	if b.stop == nil || a.stop != nil {
		t.Fatalf("the limiter's sweeper did not move to the new handler")
	}
	c := build("[limits]\nrequests_per_second = 0.01\nburst = 2\n", b)
	defer c.Close()
	if !allowed(c) {
		t.Fatalf("changed limits kept the old state")
	}
}
