package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestSIGTERMLetsARunningBlobDownloadFinish: docxy stops accepting connections on SIGTERM but a
// layer download already under way completes, byte for byte, before the process exits.
func TestSIGTERMLetsARunningBlobDownloadFinish(t *testing.T) {
	w := getWorld(t)
	m := startMirror(t, mirrorOpts{Upstream: "http://" + w.reg.Host})
	c := newRegClient(m.URL, "", "", nil)
	repo, layer := w.seed.Big.Repo, w.seed.BigLayer
	resp, err := c.do(t.Context(), http.MethodGet, "/v2/"+repo+"/blobs/"+layer, pullScope(repo), nil)
	if err != nil {
		t.Fatalf("GET blob: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.ContentLength != w.seed.BigLayerSize {
		t.Fatalf("unexpected response: status %d, length %d; want 200, %d", resp.StatusCode, resp.ContentLength, w.seed.BigLayerSize)
	}
	h := sha256.New()
	if _, err := io.CopyN(h, resp.Body, 1<<20); err != nil {
		t.Fatalf("cannot read the first MiB: %v", err)
	}

	if err := syscall.Kill(m.PID(), syscall.SIGTERM); err != nil {
		t.Fatalf("cannot signal docxy: %v", err)
	}
	// New connections are refused once docxy has closed its listener.
	port := m.healthURL[len("http://127.0.0.1:"):strings.LastIndex(m.healthURL, "/")]
	deadline := time.Now().Add(10 * time.Second)
	for {
		conn, err := net.DialTimeout("tcp", "127.0.0.1:"+port, time.Second)
		if err != nil {
			break
		}
		conn.Close()
		if time.Now().After(deadline) {
			t.Fatalf("docxy still accepts connections after SIGTERM")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if m.proc.Exited() {
		t.Fatalf("docxy exited while a download was running")
	}

	n, err := io.Copy(h, resp.Body)
	if err != nil {
		t.Fatalf("download broke after SIGTERM: %v after %d more bytes", err, n)
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != layer || n+1<<20 != w.seed.BigLayerSize {
		t.Fatalf("unexpected download: got %s (%d bytes); want %s (%d bytes)", got, n+1<<20, layer, w.seed.BigLayerSize)
	}
	resp.Body.Close()
	select {
	case <-m.proc.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("docxy did not exit after its last download finished")
	}
	t.Logf("a %d-byte download finished after SIGTERM; docxy then exited", w.seed.BigLayerSize)
}
