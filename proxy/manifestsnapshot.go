package proxy

import (
	"bufio"
	"crypto/sha256"
	"encoding/gob"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/docxy/docxy/proxy/upstream"
)

// The manifest cache lives in memory. docxy writes it to this file in the cache directory every
// few minutes when it changed, after every admin purge and at a graceful shutdown, and reads it
// back at start, so a restart (even after a crash) costs a HEAD per tag, which Docker Hub does not
// count as a pull, instead of a GET. Writing after a purge keeps purged entries from coming back.
const manifestSnapshotFile = "manifests.snapshot"

// ManifestSnapshotInterval is how often docxy saves a changed manifest cache.
const ManifestSnapshotInterval = 5 * time.Minute

const manifestSnapshotVersion = 1

type manifestSnapshot struct {
	Version int
	Entries []manifestSnapshotEntry
	// Challenges holds each registry's auth challenge by registry name: a process started while
	// the upstream is down can then still answer /v2/ and serve what it has cached.
	Challenges map[string]upstream.Challenge
}

type manifestSnapshotEntry struct {
	Key                       string
	Body, ContentType, Digest []byte
	Size                      int
	Checked                   int64 // unix nanoseconds of the last upstream confirmation
}

// writeSnapshot writes every entry and the challenges to w and returns how many entries it wrote.
func (c *manifestCache) writeSnapshot(w io.Writer, challenges map[string]upstream.Challenge) (int, error) {
	c.mu.RLock()
	snap := manifestSnapshot{Version: manifestSnapshotVersion, Entries: make([]manifestSnapshotEntry, 0, len(c.order)),
		Challenges: challenges}
	for _, k := range c.order { // oldest first, so that loading keeps the eviction order
		if m, ok := c.m[k]; ok {
			snap.Entries = append(snap.Entries, manifestSnapshotEntry{Key: k, Body: m.body, ContentType: m.contentType,
				Digest: m.digest, Size: m.size, Checked: m.checked.Load()})
		}
	}
	c.mu.RUnlock()
	return len(snap.Entries), gob.NewEncoder(w).Encode(&snap)
}

// readSnapshot adds the entries of a snapshot, dropping any whose body does not match its digest.
// It returns how many it added and the challenges saved with them.
func (c *manifestCache) readSnapshot(r io.Reader) (int, map[string]upstream.Challenge, error) {
	var snap manifestSnapshot
	if err := gob.NewDecoder(r).Decode(&snap); err != nil {
		return 0, nil, fmt.Errorf("cannot decode: %w", err)
	}
	if snap.Version != manifestSnapshotVersion {
		return 0, nil, fmt.Errorf("version %d is not %d", snap.Version, manifestSnapshotVersion)
	}
	n := 0
	for _, e := range snap.Entries {
		if e.Body != nil && !bodyMatchesDigest(e.Body, e.Digest) {
			continue
		}
		m := newManifest(e.Key, e.Body, e.ContentType, e.Digest, e.Size)
		m.checked.Store(e.Checked)
		c.put(m)
		n++
	}
	return n, snap.Challenges, nil
}

func bodyMatchesDigest(body, digest []byte) bool {
	hexSum, ok := strings.CutPrefix(string(digest), "sha256:")
	if !ok {
		return false
	}
	sum := sha256.Sum256(body)
	return hexSum == hex.EncodeToString(sum[:])
}

// SaveManifests writes the manifest cache, with each registry's auth challenge, to the cache
// directory for the next start to read,
// unless it has not changed since the last time. It returns how many entries it wrote. docxy calls
// it every ManifestSnapshotInterval, after a purge and once the servers have stopped.
func (h *Handler) SaveManifests() (entries int, err error) {
	c := h.manifests
	if c == nil {
		return 0, nil
	}
	c.saveMu.Lock()
	defer c.saveMu.Unlock()
	changes := c.changes.Load()
	if changes == c.savedAt {
		return 0, nil
	}
	path := filepath.Join(h.cacheCfg.Dir, manifestSnapshotFile)
	f, err := os.CreateTemp(h.cacheCfg.Dir, manifestSnapshotFile+".*")
	if err != nil {
		return 0, fmt.Errorf("cannot save the manifest cache in cache.dir: %w", err)
	}
	defer os.Remove(f.Name()) // after a successful rename there is nothing left to remove
	w := bufio.NewWriter(f)
	challenges := map[string]upstream.Challenge{}
	for _, r := range h.registries {
		if ch, ok := r.CachedChallenge(); ok {
			challenges[r.Name] = ch
		}
	}
	entries, err = c.writeSnapshot(w, challenges)
	if err == nil {
		err = w.Flush()
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		return 0, fmt.Errorf("cannot save the manifest cache to %s: %w", path, err)
	}
	c.savedAt = changes
	return entries, nil
}

// loadManifests reads the snapshot SaveManifests left, if any.
func (h *Handler) loadManifests() {
	c := h.manifests
	path := filepath.Join(h.cacheCfg.Dir, manifestSnapshotFile)
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return
	}
	if err != nil {
		h.log.Warn("cannot read the saved manifest cache; starting without it", "file", path, "err", err)
		return
	}
	defer f.Close()
	start := time.Now()
	c.saveMu.Lock()
	defer c.saveMu.Unlock()
	n, challenges, err := c.readSnapshot(bufio.NewReader(f))
	if err != nil {
		h.log.Warn("the saved manifest cache is unreadable; starting without it (it is replaced at the next save)", "file", path, "err", err)
		return
	}
	for _, r := range h.registries {
		if ch, ok := challenges[r.Name]; ok {
			r.RestoreChallenge(ch)
		}
	}
	c.savedAt = c.changes.Load() // the file holds what was read
	h.log.Info("manifest cache restored", "entries", n, "took", time.Since(start).Round(time.Millisecond))
}
