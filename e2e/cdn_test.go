package e2e

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"sync/atomic"
	"time"
)

// cdnPath is what Distribution's redirect middleware puts after the base URL.
var cdnPath = regexp.MustCompile(`^/docker/registry/v2/blobs/sha256/[0-9a-f]{2}/[0-9a-f]{64}/data$`)

// cdn is a static file server over a registry's storage root, standing in for Docker Hub's
// blob CDN. It supports Range (http.ServeContent), counts hits and bytes, and can cut a
// response after a number of bytes.
type cdn struct {
	URL  string // http://localhost:PORT/ (the redirect middleware's baseurl)
	root string

	srv      *http.Server
	bytes    atomic.Int64
	cutAfter atomic.Int64 // >0: abort the next response after that many body bytes

	mu   sync.Mutex // protects hits
	hits []cdnHit
}

// cdnHit is one request the CDN answered.
type cdnHit struct {
	Method string
	Path   string
	Range  string
	Auth   bool // the request carried an Authorization header
	Status int
	Bytes  int64
	Peer   peer
}

func startCDN(root string) (*cdn, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	c := &cdn{URL: fmt.Sprintf("http://localhost:%d/", ln.Addr().(*net.TCPAddr).Port), root: root}
	c.srv = &http.Server{Handler: http.HandlerFunc(c.serve), ReadHeaderTimeout: 10 * time.Second}
	go c.srv.Serve(ln)
	return c, nil
}

func (c *cdn) Close() { c.srv.Close() }

// CutNext makes the next response abort its connection after n body bytes.
func (c *cdn) CutNext(n int64) { c.cutAfter.Store(n) }

// Mark returns a position in the hit log for Since.
func (c *cdn) Mark() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.hits)
}

// Since returns the hits recorded after mark.
func (c *cdn) Since(mark int) []cdnHit {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]cdnHit(nil), c.hits[mark:]...)
}

func (c *cdn) serve(w http.ResponseWriter, r *http.Request) {
	hit := cdnHit{Method: r.Method, Path: r.URL.Path, Range: r.Header.Get("Range"),
		Auth: r.Header.Get("Authorization") != "", Peer: peerOf(r)}
	cw := &countingWriter{ResponseWriter: w, status: http.StatusOK}
	if n := c.cutAfter.Swap(0); n > 0 {
		cw.cutAfter = n
	}
	defer func() {
		hit.Status, hit.Bytes = cw.status, cw.n
		c.bytes.Add(cw.n)
		c.mu.Lock()
		c.hits = append(c.hits, hit)
		c.mu.Unlock()
	}()
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		http.Error(cw, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if !cdnPath.MatchString(r.URL.Path) {
		http.NotFound(cw, r)
		return
	}
	f, err := os.Open(filepath.Join(c.root, filepath.FromSlash(r.URL.Path)))
	if err != nil {
		http.NotFound(cw, r)
		return
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		http.Error(cw, err.Error(), http.StatusInternalServerError)
		return
	}
	cw.Header().Set("Content-Type", "application/octet-stream")
	http.ServeContent(cw, r, "", st.ModTime(), f)
}

// countingWriter counts body bytes and aborts the connection after cutAfter bytes, if set.
type countingWriter struct {
	http.ResponseWriter
	status   int
	n        int64
	cutAfter int64
}

func (w *countingWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

func (w *countingWriter) Write(p []byte) (int, error) {
	if w.cutAfter > 0 && w.n+int64(len(p)) > w.cutAfter {
		p = p[:w.cutAfter-w.n]
		n, _ := w.ResponseWriter.Write(p)
		w.n += int64(n)
		w.ResponseWriter.(http.Flusher).Flush()
		panic(http.ErrAbortHandler) // net/http closes the connection without finishing the body
	}
	n, err := w.ResponseWriter.Write(p)
	w.n += int64(n)
	return n, err
}
