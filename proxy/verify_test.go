package proxy

import (
	"io"
	"net/http"
	"strconv"
	"testing"
	"time"
)

// TestCachedBlobWithWrongDigestAbortsTheClient: a cold blob streamed through the cache ends with
// the digest check, so a client never gets a clean 200 for bytes that do not match (P7).
func TestCachedBlobWithWrongDigestAbortsTheClient(t *testing.T) {
	good, bad := randomBytes(64<<10, 8), randomBytes(64<<10, 9)
	d := digestOf(good)
	// The upstream sends all but the last byte, then waits for the client to hold them: the
	// client is then surely streaming from the fill when the digest check fails.
	clientHasMost := make(chan struct{})
	up, _ := fakeHub(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.Itoa(len(bad)))
		_, _ = w.Write(bad[:len(bad)-1])
		w.(http.Flusher).Flush()
		select {
		case <-clientHasMost:
		case <-time.After(10 * time.Second):
		}
		_, _ = w.Write(bad[len(bad)-1:])
	})
	m := hubMirror(t, up.URL(), mirrorModes[0].cache)
	resp, err := m.client.Do(m.request(t, "GET", "/v2/nginx/blobs/"+d, nil, ""))
	if err != nil {
		t.Fatalf("unexpected request error: %s", err)
	}
	defer resp.Body.Close()
	if got := resp.Header.Get(HeaderXCache); got != "MISS" {
		t.Fatalf("unexpected X-Cache: got %q; want MISS (streaming from the fill)", got)
	}
	head := make([]byte, len(bad)-1)
	if _, err := io.ReadFull(resp.Body, head); err != nil {
		t.Fatalf("cannot read the first bytes: %s", err)
	}
	close(clientHasMost)
	body, err := io.ReadAll(resp.Body)
	if err == nil {
		t.Fatalf("unexpected clean end of a blob that fails its digest check: status %d, %d bytes, X-Cache %q", resp.StatusCode, len(body), resp.Header.Get(HeaderXCache))
	}
}
