package cache

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"
)

// touchInterval is how stale a blob's on-disk mtime may get before a hit refreshes it. The mtime is
// only the last-use hint for the LRU order after a restart, so an hour of imprecision is fine and a
// hit costs a syscall at most once an hour per blob.
const touchInterval = time.Hour

// tempPrefix starts every file the store creates in Dir/tmp. Open removes only files with this
// prefix, so a mistaken Dir never costs someone else's files.
const tempPrefix = "docxy-"

// Config configures a Store. It is meant to be filled from the [cache] section of docxy's config.
type Config struct {
	// Dir is the cache root. It holds blobs/<algorithm>/<first two hex>/<hex>, tmp/ for downloads in
	// progress and journal, the list of committed blobs with their sizes. Required. One process per Dir.
	Dir string
	// MaxSize caps the bytes of committed blobs; least recently used blobs are evicted to stay under it,
	// and a blob larger than MaxSize is streamed to its readers but not kept. 0 means no limit.
	MaxSize int64
}

// Stats is a snapshot of the store's counters.
type Stats struct {
	Bytes     int64  // bytes of committed blobs on disk
	Entries   int    // committed blobs
	Hits      uint64 // Store.Open calls that found the blob
	Misses    uint64 // Store.Open calls that did not
	InFlight  int    // downloads begun and not yet committed or aborted
	Reserved  int64  // announced sizes of in-flight downloads that will be kept; see Store
	Evictions uint64 // blobs evicted to honour MaxSize
}

// entry is one committed blob; it is a node of the store's intrusive LRU list.
type entry struct {
	d          Digest
	path       string
	size       int64
	mtime      int64 // unix nanoseconds of the last use written to disk (file mtime)
	prev, next *entry
}

// Store is a content-addressed blob store on local disk.
//
// Blobs are written to Dir/tmp, verified against their digest, fsynced, renamed into Dir/blobs and
// recorded in Dir/journal. After a crash Open deletes the temp files, and drops any blob whose size
// differs from its journal record or that has none, so only complete, verified blobs are ever served.
//
// Disk budget: a download of announced size n (n ≤ MaxSize) reserves n bytes at Download.Start, and
// least recently used blobs are evicted until committed + reserved ≤ MaxSize; after each commit the
// same rule is applied again, never evicting the blob just committed. Committed bytes therefore never
// exceed MaxSize, and disk use exceeds it only when in-flight downloads alone add up to more than
// MaxSize, or by the temp files of blobs larger than MaxSize (which are not kept).
//
// A Store is safe for concurrent use. It starts no goroutines and holds no files open between calls.
type Store struct {
	dir         string
	blobDir     string
	tmpDir      string
	journalPath string
	maxSize     int64

	mu        sync.Mutex // protects index, lru, inflight, bytes, reserved, hits, misses, evictions, seq
	index     map[Digest]*entry
	lru       entry // sentinel: lru.next is the most recently used entry, lru.prev the least
	inflight  map[Digest]*Download
	bytes     int64
	reserved  int64
	hits      uint64
	misses    uint64
	evictions uint64
	seq       uint64 // names files moved to tmp/ for unlinking

	jmu          sync.Mutex // protects journal writes and journalLines; taken before mu, never after
	journalLines int
}

// Open opens the store in cfg.Dir, creating its directories. It removes leftover temp files, loads
// the committed blobs into the LRU index (their file mtime is the last use) and evicts down to
// cfg.MaxSize.
func Open(cfg Config) (*Store, error) {
	if cfg.Dir == "" {
		return nil, errors.New("cache: Config.Dir is empty")
	}
	if cfg.MaxSize < 0 {
		return nil, fmt.Errorf("cache: negative Config.MaxSize %d", cfg.MaxSize)
	}
	s := &Store{
		dir:         cfg.Dir,
		blobDir:     filepath.Join(cfg.Dir, "blobs"),
		tmpDir:      filepath.Join(cfg.Dir, "tmp"),
		journalPath: filepath.Join(cfg.Dir, "journal"),
		maxSize:     cfg.MaxSize,
		index:       make(map[Digest]*entry),
		inflight:    make(map[Digest]*Download),
	}
	s.lru.next, s.lru.prev = &s.lru, &s.lru
	for _, dir := range []string{s.tmpDir, filepath.Join(s.blobDir, algoSHA256.name()), filepath.Join(s.blobDir, algoSHA512.name())} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("cache: cannot create %s: %w", dir, err)
		}
	}
	if err := s.cleanTemp(); err != nil {
		return nil, err
	}
	if err := s.scan(); err != nil {
		return nil, err
	}
	return s, nil
}

// Open opens the committed blob d for reading and returns it with its size, marking it most recently
// used. The caller owns the file and must close it; it stays readable even if the blob is evicted
// meanwhile. It returns ErrNotFound if d is not committed.
func (s *Store) Open(d Digest) (*os.File, int64, error) {
	now := time.Now().UnixNano()
	s.mu.Lock()
	e := s.index[d]
	if e == nil {
		s.misses++
		s.mu.Unlock()
		return nil, 0, ErrNotFound
	}
	s.hits++
	s.moveToFrontLocked(e)
	touch := now-e.mtime >= int64(touchInterval)
	if touch {
		e.mtime = now
	}
	path, size := e.path, e.size
	s.mu.Unlock()

	if touch {
		// Best effort: a stale mtime only makes the LRU order after a restart less precise.
		t := time.Unix(0, now)
		_ = os.Chtimes(path, t, t)
	}
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			// Evicted since the lookup, or removed behind our back: forget it so Begin refetches.
			s.forget(e)
			return nil, 0, ErrNotFound
		}
		return nil, 0, fmt.Errorf("cache: cannot open blob: %w", err)
	}
	return f, size, nil
}

// Has reports whether d is committed. It does not count as a use.
func (s *Store) Has(d Digest) bool {
	s.mu.Lock()
	_, ok := s.index[d]
	s.mu.Unlock()
	return ok
}

// Delete purges the committed blob d. Open files keep reading it. It returns ErrNotFound if d is not
// committed; a download of d in flight is not affected and commits normally.
func (s *Store) Delete(d Digest) error {
	s.mu.Lock()
	e := s.index[d]
	if e == nil {
		s.mu.Unlock()
		return ErrNotFound
	}
	victim := s.removeLocked(e)
	s.mu.Unlock()
	removeFiles(victim)
	return nil
}

// Stats returns a snapshot of the counters.
func (s *Store) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Stats{
		Bytes:     s.bytes,
		Entries:   len(s.index),
		Hits:      s.hits,
		Misses:    s.misses,
		InFlight:  len(s.inflight),
		Reserved:  s.reserved,
		Evictions: s.evictions,
	}
}

// blobPath returns Dir/blobs/<algorithm>/<first two hex>/<hex>.
func (s *Store) blobPath(d Digest) string {
	h := d.Hex()
	return filepath.Join(s.blobDir, d.algo.name(), h[:2], h)
}

// forget drops e from the index if it is still there after its file vanished.
func (s *Store) forget(e *entry) {
	s.mu.Lock()
	if s.index[e.d] == e {
		s.unlinkLocked(e)
	}
	s.hits--
	s.misses++
	s.mu.Unlock()
}

// reserve counts size bytes of an in-flight download toward the budget and evicts to make room.
// It returns false, reserving nothing, when the blob is larger than MaxSize and will not be kept.
func (s *Store) reserve(size int64) bool {
	if s.maxSize > 0 && size > s.maxSize {
		return false
	}
	s.mu.Lock()
	s.reserved += size
	victims := s.evictLocked(nil)
	s.mu.Unlock()
	removeFiles(victims...)
	return true
}

// release ends the in-flight state of dl, returning its reservation if it had one.
func (s *Store) release(dl *Download, reserved int64) {
	s.mu.Lock()
	if s.inflight[dl.d] == dl {
		delete(s.inflight, dl.d)
	}
	s.reserved -= reserved
	s.mu.Unlock()
}

// insert adds the blob just renamed to path to the index in place of dl's reservation and evicts
// down to the budget, sparing the new blob.
func (s *Store) insert(dl *Download, path string, size int64) {
	now := time.Now().UnixNano()
	s.mu.Lock()
	if s.inflight[dl.d] == dl {
		delete(s.inflight, dl.d)
	}
	s.reserved -= size
	e := s.index[dl.d]
	if e == nil {
		e = &entry{d: dl.d, path: path, size: size, mtime: now}
		s.index[dl.d] = e
		s.bytes += size
		s.pushFrontLocked(e)
	} else {
		e.mtime = now
		s.moveToFrontLocked(e)
	}
	victims := s.evictLocked(e)
	s.mu.Unlock()
	removeFiles(victims...)
}

// evictLocked evicts least recently used entries, other than keep, until committed plus reserved
// bytes fit MaxSize. It returns the files to unlink once mu is released.
func (s *Store) evictLocked(keep *entry) []string {
	if s.maxSize <= 0 {
		return nil
	}
	var victims []string
	for s.bytes+s.reserved > s.maxSize {
		e := s.lru.prev
		if e == &s.lru || e == keep {
			break
		}
		s.evictions++
		if v := s.removeLocked(e); v != "" {
			victims = append(victims, v)
		}
	}
	return victims
}

// removeLocked drops e from the index and moves its file into tmp/, where the caller unlinks it after
// releasing mu: a rename is cheap, while unlinking a large file frees extents and may take a while.
// Moving the file away under mu also keeps a later commit of the same digest from being unlinked.
// It returns the path to unlink, or "" if there is nothing left to unlink.
func (s *Store) removeLocked(e *entry) string {
	s.unlinkLocked(e)
	s.seq++
	victim := filepath.Join(s.tmpDir, tempPrefix+"evicted-"+strconv.FormatUint(s.seq, 10))
	if err := os.Rename(e.path, victim); err != nil {
		// Already gone, or the rename failed: remove it in place rather than leave it behind.
		// An error here leaves an orphan that the next Open drops (it has no index entry then).
		_ = os.Remove(e.path)
		return ""
	}
	return victim
}

// unlinkLocked drops e from the index, the LRU list and the byte count.
func (s *Store) unlinkLocked(e *entry) {
	delete(s.index, e.d)
	e.prev.next, e.next.prev = e.next, e.prev
	e.prev, e.next = nil, nil
	s.bytes -= e.size
}

func (s *Store) pushFrontLocked(e *entry) {
	e.prev, e.next = &s.lru, s.lru.next
	s.lru.next.prev = e
	s.lru.next = e
}

func (s *Store) moveToFrontLocked(e *entry) {
	if s.lru.next == e {
		return
	}
	e.prev.next, e.next.prev = e.next, e.prev
	s.pushFrontLocked(e)
}

// removeFiles unlinks files no longer referenced by the store. Errors are ignored: the files live in
// tmp/, which the next Open empties.
func removeFiles(paths ...string) {
	for _, p := range paths {
		if p != "" {
			_ = os.Remove(p)
		}
	}
}
