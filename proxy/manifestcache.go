package proxy

import (
	"bytes"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultManifestCacheBytes caps the memory held by cached manifests. Manifests are small
// (a few KiB; the spec caps them at 4 MiB), so this holds tens of thousands.
const DefaultManifestCacheBytes = 64 << 20

// manifest is a cached manifest, immutable once stored. body is nil for a tag entry learned from
// a HEAD: the body then lives under the digest's own entry.
type manifest struct {
	body        []byte
	contentType []byte
	digest      []byte
	etag        []byte
	size        int
	checked     atomic.Int64 // unix nanoseconds of the last upstream confirmation (tags)
	key         string
}

func newManifest(key string, body, contentType, digest []byte, size int) *manifest {
	m := &manifest{
		body:        body,
		contentType: append([]byte(nil), contentType...),
		digest:      append([]byte(nil), digest...),
		size:        size,
		key:         key,
	}
	m.etag = append(append(append(make([]byte, 0, len(digest)+2), '"'), digest...), '"')
	m.checked.Store(time.Now().UnixNano())
	return m
}

func (m *manifest) fresh(ttl time.Duration, now time.Time) bool {
	return now.UnixNano()-m.checked.Load() < int64(ttl)
}

// manifestCache holds manifests in memory: by digest forever (they are immutable), by tag with a
// TTL after which the tag is revalidated upstream. Keys name the registry and repository (as the
// upstream names it), so a purge by repository is exact, and tag keys include what the client's
// Accept allowed (P6).
type manifestCache struct {
	ttl      atomic.Int64 // time.Duration; a configuration reload may change it
	maxBytes int64

	mu    sync.RWMutex // protects m, order and bytes
	m     map[string]*manifest
	order []string // insertion order, for eviction
	bytes int64

	hits, misses, stale atomic.Int64

	changes atomic.Int64 // bumped by every put and purge, so an unchanged cache is not saved again
	saveMu  sync.Mutex   // serialises snapshots, so the last one written is the newest
	savedAt int64        // changes when the snapshot on disk was taken (or read); saveMu protects it
}

func newManifestCache(ttl time.Duration, maxBytes int64) *manifestCache {
	c := &manifestCache{maxBytes: maxBytes, m: make(map[string]*manifest)}
	c.ttl.Store(int64(ttl))
	return c
}

// appendKey builds the cache key registry\x00repository\x00reference\x00acceptMask into dst.
func appendManifestKey(dst []byte, registry string, repo, ref []byte, mask byte) []byte {
	dst = append(dst, registry...)
	dst = append(dst, 0)
	dst = append(dst, repo...)
	dst = append(dst, 0)
	dst = append(dst, ref...)
	return append(dst, 0, mask)
}

// manifestKeyRepoEnd returns the length of the registry\x00repository prefix of a key.
func manifestKeyRepoEnd(key string) int {
	i := strings.IndexByte(key, 0)
	if i < 0 {
		return len(key)
	}
	if j := strings.IndexByte(key[i+1:], 0); j >= 0 {
		return i + 1 + j
	}
	return len(key)
}

// get looks key up without allocating.
func (c *manifestCache) get(key []byte) *manifest {
	c.mu.RLock()
	m := c.m[string(key)]
	c.mu.RUnlock()
	return m
}

func (c *manifestCache) put(m *manifest) {
	c.changes.Add(1)
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.m[m.key]; ok {
		c.bytes -= int64(len(old.body))
	} else {
		c.order = append(c.order, m.key)
	}
	c.m[m.key] = m
	c.bytes += int64(len(m.body))
	for c.bytes > c.maxBytes && len(c.order) > 0 {
		k := c.order[0]
		c.order = c.order[1:]
		if old, ok := c.m[k]; ok {
			c.bytes -= int64(len(old.body))
			delete(c.m, k)
		}
	}
	if cap(c.order) > 2*len(c.order)+1024 {
		c.order = append([]string(nil), c.order...) // let the evicted prefix be collected
	}
}

// purge removes the entries whose key starts with prefix and returns how many it removed.
func (c *manifestCache) purge(prefix []byte) int {
	c.changes.Add(1)
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for k, m := range c.m {
		if strings.HasPrefix(k, string(prefix)) {
			c.bytes -= int64(len(m.body))
			delete(c.m, k)
			n++
		}
	}
	c.compactLocked()
	return n
}

// purgeDigest removes every entry for the manifest digest, under any repository or tag.
func (c *manifestCache) purgeDigest(digest []byte) int {
	c.changes.Add(1)
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for k, m := range c.m {
		if bytes.Equal(m.digest, digest) {
			c.bytes -= int64(len(m.body))
			delete(c.m, k)
			n++
		}
	}
	c.compactLocked()
	return n
}

func (c *manifestCache) compactLocked() {
	kept := c.order[:0]
	for _, k := range c.order {
		if _, ok := c.m[k]; ok {
			kept = append(kept, k)
		}
	}
	c.order = kept
}

// stats returns the number of entries and the bytes of manifest bodies held.
func (c *manifestCache) stats() (entries int, size int64) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.m), c.bytes
}

// acceptable finds a cached entry for the tag key prefix (the key without its mask byte) under
// any Accept set whose media type the client's mask accepts. Only for serving stale content
// when the upstream fails: up to 31 lookups.
func (c *manifestCache) acceptable(prefix []byte, mask byte) *manifest {
	key := append(make([]byte, 0, len(prefix)+1), prefix...)
	key = append(key, 0)
	for other := byte(1); other < 1<<5; other++ {
		key[len(key)-1] = other
		m := c.get(key)
		if m != nil && mask&mediaTypeBit(m.contentType) != 0 {
			return m
		}
	}
	return nil
}

// mediaTypeBit returns the accept bit of a manifest media type, acceptOther for any other.
func mediaTypeBit(ct []byte) byte {
	if i := bytes.IndexByte(ct, ';'); i >= 0 {
		ct = bytes.TrimSpace(ct[:i])
	}
	for _, t := range manifestTypes {
		if bytes.Equal(ct, t.mediaType) {
			return t.bit
		}
	}
	return acceptOther
}

// Accept mask bits: which manifest media types the client accepts. Tag entries are keyed by the
// mask so that a client asking only for Docker schema2 never gets a cached OCI index.
const (
	acceptOCIIndex byte = 1 << iota
	acceptDockerList
	acceptOCIManifest
	acceptDockerManifest
	acceptOther
	acceptAll = acceptOCIIndex | acceptDockerList | acceptOCIManifest | acceptDockerManifest
)

var (
	mtOCIIndex       = []byte("application/vnd.oci.image.index.v1+json")
	mtDockerList     = []byte("application/vnd.docker.distribution.manifest.list.v2+json")
	mtOCIManifest    = []byte("application/vnd.oci.image.manifest.v1+json")
	mtDockerManifest = []byte("application/vnd.docker.distribution.manifest.v2+json")
)

// manifestTypes pairs each manifest media type docxy tells apart with its Accept mask bit.
var manifestTypes = [...]struct {
	mediaType []byte
	bit       byte
}{
	{mtOCIIndex, acceptOCIIndex},
	{mtDockerList, acceptDockerList},
	{mtOCIManifest, acceptOCIManifest},
	{mtDockerManifest, acceptDockerManifest},
}

// acceptMask summarises an Accept header; no header means docxy's default (all four types).
func acceptMask(accept []byte) byte {
	if len(accept) == 0 {
		return acceptAll
	}
	var m byte
	n := 0
	for _, t := range manifestTypes {
		if bytes.Contains(accept, t.mediaType) {
			m |= t.bit
			n++
		}
	}
	if bytes.Count(accept, []byte(","))+1 > n {
		m |= acceptOther // something else too (schema1, */*, artifacts): keep it apart
	}
	return m
}
