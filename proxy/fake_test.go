package proxy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docxy/docxy/config"
	"github.com/valyala/fasthttp"
)

// Test fixtures shared by the handler tests: fake upstream registries, token servers and CDNs
// that record every request, and a mirror served by a real fasthttp server on 127.0.0.1.

const (
	// testPublicBase is the public_base_url of every test mirror.
	testPublicBase = "https://mirror.example.com"
	// fakeService is the token service the fake registries announce in their challenge.
	fakeService = "registry.fake.test"
	// goodToken is the only Authorization the fake registries accept on GET /v2/.
	goodToken = "Bearer good"
)

// recorded is one request a fake server received.
type recorded struct {
	Method   string
	Path     string // escaped, as sent
	RawQuery string
	Query    url.Values
	Header   http.Header
	Host     string
	Body     string
}

// fakeServer is an httptest server that records every request before its handler sees it.
type fakeServer struct {
	srv  *httptest.Server
	mu   sync.Mutex // protects reqs
	reqs []recorded
}

func newFakeServer(t *testing.T, h http.HandlerFunc) *fakeServer {
	t.Helper()
	f := &fakeServer{}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		f.record(recorded{
			Method:   r.Method,
			Path:     r.URL.EscapedPath(),
			RawQuery: r.URL.RawQuery,
			Query:    r.URL.Query(),
			Header:   r.Header.Clone(),
			Host:     r.Host,
			Body:     string(body),
		})
		if h == nil {
			http.NotFound(w, r)
			return
		}
		h(w, r)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeServer) record(r recorded) {
	f.mu.Lock()
	f.reqs = append(f.reqs, r)
	f.mu.Unlock()
}

// requests returns a copy of the requests received so far.
func (f *fakeServer) requests() []recorded {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]recorded(nil), f.reqs...)
}

// URL returns http://127.0.0.1:port.
func (f *fakeServer) URL() string { return f.srv.URL }

// Host returns 127.0.0.1:port.
func (f *fakeServer) Host() string { return strings.TrimPrefix(f.srv.URL, "http://") }

// fakeRegistry returns the handler of a fake upstream registry: GET /v2/ answers 200 to
// goodToken and otherwise challenges for a Bearer token from realm for fakeService; every other
// request goes to next.
func fakeRegistry(realm string, next http.HandlerFunc) http.HandlerFunc {
	return fakeRegistryService(realm, fakeService, next)
}

// fakeRegistryService is fakeRegistry with another token service.
func fakeRegistryService(realm, service string, next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v2/" {
			if r.Header.Get("Authorization") == goodToken {
				w.Header().Set("Content-Type", "application/json")
				_, _ = io.WriteString(w, "{}")
				return
			}
			w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm=%q,service=%q`, realm, service))
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = io.WriteString(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`)
			return
		}
		if next == nil {
			http.NotFound(w, r)
			return
		}
		next(w, r)
	}
}

// rawServer is a fake upstream on a bare TCP listener, for answers net/http will not produce:
// a HEAD without Content-Length, a body cut short, no answer at all. handle writes the raw
// response and reports whether to keep reading requests on the connection.
type rawServer struct {
	ln    net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex // protects reqs and conns
	reqs  []recorded
	conns map[net.Conn]struct{}
}

func newRawServer(t *testing.T, handle func(c net.Conn, r *http.Request) (keepAlive bool)) *rawServer {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("cannot listen: %s", err)
	}
	s := &rawServer{ln: ln, conns: map[net.Conn]struct{}{}}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns[c] = struct{}{}
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer func() {
					s.mu.Lock()
					delete(s.conns, c)
					s.mu.Unlock()
					_ = c.Close()
				}()
				br := bufio.NewReader(c)
				for {
					r, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					body, _ := io.ReadAll(r.Body)
					s.mu.Lock()
					s.reqs = append(s.reqs, recorded{
						Method: r.Method, Path: r.URL.EscapedPath(), RawQuery: r.URL.RawQuery,
						Query: r.URL.Query(), Header: r.Header.Clone(), Host: r.Host, Body: string(body),
					})
					s.mu.Unlock()
					if !handle(c, r) {
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		s.mu.Lock()
		for c := range s.conns {
			_ = c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return s
}

func (s *rawServer) URL() string { return "http://" + s.ln.Addr().String() }

func (s *rawServer) requests() []recorded {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]recorded(nil), s.reqs...)
}

// closedPortURL returns the URL of a 127.0.0.1 port nothing listens on.
func closedPortURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("cannot listen: %s", err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return "http://" + addr
}

// testConfig returns a configuration with public_base_url = testPublicBase, the given extra
// [server] lines and the given [[registry]] tables.
func testConfig(server string, registries ...string) string {
	return fmt.Sprintf("[server]\npublic_base_url = %q\n%s\n\n%s", testPublicBase, server, strings.Join(registries, "\n"))
}

// registryConfig returns one [[registry]] table; extra holds further key = value lines.
func registryConfig(name, upstreamURL string, extra ...string) string {
	return fmt.Sprintf("[[registry]]\nname = %q\nupstream = %q\n%s\n", name, upstreamURL, strings.Join(extra, "\n"))
}

// mirror is a docxy handler served by a fasthttp server on 127.0.0.1, set up as main.go does.
type mirror struct {
	h      *Handler
	addr   string
	client *http.Client
}

func newMirror(t *testing.T, cfgText string) *mirror {
	t.Helper()
	return newMirrorInDir(t, cfgText, t.TempDir()) // never the working directory
}

// newMirrorInDir is newMirror with the cache in dir, for tests that restart docxy on one cache.
func newMirrorInDir(t *testing.T, cfgText, dir string) *mirror {
	t.Helper()
	cfg, err := config.Parse([]byte(cfgText), "test")
	if err != nil {
		t.Fatalf("cannot parse config: %s\n%s", err, cfgText)
	}
	cfg.Cache.Dir = dir
	h, err := New(cfg, Options{Version: "test"})
	if err != nil {
		t.Fatalf("cannot create handler: %s", err)
	}
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("cannot listen: %s", err)
	}
	s := &fasthttp.Server{
		Handler:            h.ServeHTTP,
		Name:               "docxy",
		ReadTimeout:        cfg.Server.ReadTimeout.Duration,
		IdleTimeout:        cfg.Server.IdleTimeout.Duration,
		MaxRequestBodySize: 64 << 10,
		ReadBufferSize:     16 << 10,
		CloseOnShutdown:    true,
		Logger:             log.New(io.Discard, "", 0), // refused Host headers are expected in tests
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()
	tr := &http.Transport{DisableCompression: true} // never let the client negotiate gzip (P3)
	m := &mirror{
		h:    h,
		addr: ln.Addr().String(),
		client: &http.Client{
			Transport:     tr,
			Timeout:       30 * time.Second,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}
	t.Cleanup(func() {
		tr.CloseIdleConnections()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := s.ShutdownWithContext(ctx); err != nil {
			t.Errorf("cannot shut the mirror down: %s", err)
		}
		select {
		case <-served:
		case <-time.After(time.Second):
			t.Errorf("server wasn't stopped")
		}
		h.Close()
		waitFills(t, h)
	})
	return m
}

// waitFills waits for h's blob fills, which run detached from clients, to commit or abort, so
// that a test's cache directory is not removed under them.
func waitFills(t *testing.T, h *Handler) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); h.Stats().Blobs.InFlight > 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Errorf("blob downloads still in flight 10s after the test")
			return
		}
	}
}

// request builds a request to the mirror; a "Host" entry in hdr sets the Host header.
func (m *mirror) request(t *testing.T, method, path string, hdr http.Header, body string) *http.Request {
	t.Helper()
	var rb io.Reader
	if body != "" {
		rb = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, "http://"+m.addr+path, rb)
	if err != nil {
		t.Fatalf("cannot build request: %s", err)
	}
	for k, vs := range hdr {
		if http.CanonicalHeaderKey(k) == "Host" {
			req.Host = vs[0]
			continue
		}
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	return req
}

// do sends a request to the mirror and reads the whole response.
func (m *mirror) do(t *testing.T, method, path string, hdr http.Header, body string) (*http.Response, []byte) {
	t.Helper()
	resp, err := m.client.Do(m.request(t, method, path, hdr, body))
	if err != nil {
		t.Fatalf("unexpected error for %s %s: %s", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("cannot read the response body of %s %s: %s", method, path, err)
	}
	return resp, b
}

// rawResponse is one response read off a raw connection.
type rawResponse struct {
	resp *http.Response
	body []byte
}

// raw writes raw (one request or several pipelined ones) on a fresh connection to the mirror and
// reads one response per method given, in order. Reading the next response after a HEAD proves
// that the HEAD carried no body bytes.
func (m *mirror) raw(t *testing.T, raw string, methods ...string) []rawResponse {
	t.Helper()
	c, err := net.Dial("tcp4", m.addr)
	if err != nil {
		t.Fatalf("cannot dial the mirror: %s", err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatalf("cannot write request: %s", err)
	}
	br := bufio.NewReader(c)
	var out []rawResponse
	for _, method := range methods {
		resp, err := http.ReadResponse(br, &http.Request{Method: method})
		if err != nil {
			t.Fatalf("cannot read the response to %s: %s", method, err)
		}
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("cannot read the response body to %s: %s", method, err)
		}
		out = append(out, rawResponse{resp: resp, body: b})
	}
	return out
}

// checkErrorBody checks that body is a registry error envelope with one error of code want.
func checkErrorBody(t *testing.T, body []byte, want string) {
	t.Helper()
	var e struct {
		Errors []struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"errors"`
	}
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("unexpected error body: got %q; want JSON: %s", body, err)
	}
	if len(e.Errors) != 1 || e.Errors[0].Code != want {
		t.Fatalf("unexpected error body: got %s; want one error with code %s", body, want)
	}
}

func checkStatus(t *testing.T, resp *http.Response, want int) {
	t.Helper()
	if resp.StatusCode != want {
		t.Fatalf("unexpected status code: got %d; want %d", resp.StatusCode, want)
	}
}

func checkHeader(t *testing.T, h http.Header, name, want string) {
	t.Helper()
	if got := h.Get(name); got != want {
		t.Fatalf("unexpected %s: got %q; want %q", name, got, want)
	}
}

// hdr builds an http.Header from name, value pairs.
func hdr(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Add(kv[i], kv[i+1])
	}
	return h
}
