package cache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"sync"
)

// Download is one single-flight fill of a blob, shared by the leader that writes it and by any number
// of followers that read it while it arrives.
//
// The leader (the caller to which Begin returned leader=true) must call Start, then Write (Download is
// an io.Writer), then exactly one of Commit or Abort, from one goroutine; Abort may also be called
// from any goroutine at any time and is a no-op once Commit has verified the bytes. A leader that
// never calls Commit or Abort leaves followers blocked in Wait until their context ends and readers
// blocked until they are closed: the leader must bound its upstream read with an idle timeout.
//
// Followers call Wait, then NewReader.
type Download struct {
	s       *Store
	d       Digest
	started chan struct{} // closed when Start succeeds or the download ends before it

	// Owned by the leader's goroutine: no lock.
	h     hash.Hash
	wrote int64

	mu   sync.Mutex // protects the fields below and the f and closed fields of this download's readers
	cond *sync.Cond // L is &mu; broadcast on every Write, Start, Commit, Abort and reader Close

	f       *os.File // temp file open for writing; set by Start, written only by the leader
	path    string   // temp file, then the committed blob after the rename; "" once removed
	size    int64    // announced size, -1 before Start
	keep    bool     // size fits MaxSize: reserved in the budget, renamed into blobs/ at Commit
	written int64    // bytes written to f and so readable by readers
	done    bool     // all size bytes written and verified: readers end with io.EOF
	err     error    // why the download was aborted; readers and Wait return it

	readers         int  // readers not yet closed
	removeWhenIdle  bool // path is a verified temp file that is not kept: remove it when readers drops to 0
	startedIsClosed bool
}

// Begin returns the download of d and whether the caller is its leader, which must then fill it.
// Exactly one caller per digest is the leader until that download is committed or aborted; other
// callers get the same Download as followers.
//
// If d is already committed, Begin returns leader=false and a Download that is already complete:
// Wait returns the size at once and NewReader reads the committed blob. So a caller whose Open missed
// just before another commit needs no special case.
func (s *Store) Begin(d Digest) (dl *Download, leader bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if dl := s.inflight[d]; dl != nil {
		return dl, false
	}
	if e := s.index[d]; e != nil {
		s.moveToFrontLocked(e)
		dl := newDownload(s, d)
		dl.path, dl.size, dl.written, dl.done = e.path, e.size, e.size, true
		dl.closeStartedLocked()
		return dl, false
	}
	dl = newDownload(s, d)
	s.inflight[d] = dl
	return dl, true
}

func newDownload(s *Store, d Digest) *Download {
	dl := &Download{s: s, d: d, started: make(chan struct{}), size: -1}
	dl.cond = sync.NewCond(&dl.mu)
	return dl
}

// Digest returns the digest being downloaded.
func (dl *Download) Digest() Digest { return dl.d }

// Start announces the blob size, creates the temp file, reserves the size in the disk budget and
// wakes the followers in Wait. A size larger than MaxSize is streamed to readers but not kept.
// On error (ErrUnknownSize for a negative size, ErrInvalidDigest, a file error) the download is
// aborted with that error and there is no need to call Abort.
func (dl *Download) Start(size int64) error {
	dl.mu.Lock()
	err := dl.err
	if err == nil && (dl.size >= 0 || dl.done) {
		err = ErrDownloadState
	}
	dl.mu.Unlock()
	if err != nil {
		return err
	}
	switch {
	case size < 0:
		err = fmt.Errorf("%w: got size %d", ErrUnknownSize, size)
	case dl.d.IsZero():
		err = ErrInvalidDigest
	}
	if err != nil {
		dl.abort(err)
		return err
	}
	f, err := os.CreateTemp(dl.s.tmpDir, tempPrefix+"*.part")
	if err != nil {
		err = fmt.Errorf("cache: cannot create temp file: %w", err)
		dl.abort(err)
		return err
	}
	keep := dl.s.reserve(size)
	dl.h = dl.d.algo.newHash()

	dl.mu.Lock()
	if err := dl.err; err != nil { // aborted from another goroutine meanwhile
		dl.mu.Unlock()
		_ = f.Close()
		_ = os.Remove(f.Name())
		if keep {
			dl.s.release(dl, size)
		}
		return err
	}
	dl.f, dl.path, dl.size, dl.keep = f, f.Name(), size, keep
	dl.closeStartedLocked()
	dl.mu.Unlock()
	dl.cond.Broadcast()
	return nil
}

// Write implements io.Writer for the leader: it appends p to the temp file, hashes it and wakes the
// readers. Writing past the announced size fails with ErrSizeMismatch. Any error aborts the download.
func (dl *Download) Write(p []byte) (int, error) {
	if dl.f == nil {
		dl.mu.Lock()
		err := dl.err
		dl.mu.Unlock()
		if err == nil {
			err = ErrDownloadState
		}
		return 0, err
	}
	if dl.wrote+int64(len(p)) > dl.size {
		err := fmt.Errorf("%w: more than the announced %d bytes", ErrSizeMismatch, dl.size)
		dl.abort(err)
		return 0, err
	}
	n, werr := dl.f.Write(p)
	dl.h.Write(p[:n])
	dl.wrote += int64(n)

	dl.mu.Lock()
	if err := dl.err; err != nil {
		dl.mu.Unlock()
		return n, err
	}
	dl.written = dl.wrote
	dl.mu.Unlock()
	dl.cond.Broadcast()

	if werr != nil {
		err := fmt.Errorf("cache: cannot write temp file: %w", werr)
		dl.abort(err)
		return n, err
	}
	return n, nil
}

// Commit checks that exactly the announced size was written and that it hashes to the digest, lets
// the readers finish with io.EOF, then fsyncs the file, renames it into place, records it in the
// journal and evicts down to MaxSize. On ErrSizeMismatch or ErrDigestMismatch the download is
// aborted with that error: readers get it and nothing is committed. An I/O error after the check
// leaves the readers' data intact (it was verified) but nothing committed.
// A blob larger than MaxSize is verified the same way and then not kept; Commit returns nil.
func (dl *Download) Commit() error {
	dl.mu.Lock()
	err := dl.err
	if err == nil && (dl.f == nil || dl.done) {
		err = ErrDownloadState
	}
	dl.mu.Unlock()
	if err != nil {
		return err
	}
	if dl.wrote != dl.size {
		err := fmt.Errorf("%w: got %d bytes; want %d", ErrSizeMismatch, dl.wrote, dl.size)
		dl.abort(err)
		return err
	}
	var buf [64]byte
	if sum := dl.h.Sum(buf[:0]); !bytes.Equal(sum, dl.d.rawSum()) {
		err := fmt.Errorf("%w: got %s:%x; want %s", ErrDigestMismatch, dl.d.algo.name(), sum, dl.d)
		dl.abort(err)
		return err
	}

	dl.mu.Lock()
	if err := dl.err; err != nil {
		dl.mu.Unlock()
		return err
	}
	dl.done = true
	keep, tmp := dl.keep, dl.path
	var removeNow bool
	if !keep {
		removeNow = dl.readers == 0
		dl.removeWhenIdle = !removeNow
		if removeNow {
			dl.path = ""
		}
	}
	dl.mu.Unlock()
	dl.cond.Broadcast()

	if !keep {
		_ = dl.f.Close()
		if removeNow {
			_ = os.Remove(tmp)
		}
		dl.s.release(dl, 0)
		return nil
	}
	if err := dl.persist(tmp); err != nil {
		dl.mu.Lock()
		dl.path = ""
		dl.mu.Unlock()
		dl.s.release(dl, dl.size)
		return err
	}
	return nil
}

// persist makes the verified temp file a committed blob: fsync, rename, directory fsync, journal
// line, index. On error it removes whatever file is left.
func (dl *Download) persist(tmp string) (err error) {
	s := dl.s
	final := s.blobPath(dl.d)
	cur := tmp
	defer func() {
		if err != nil {
			_ = os.Remove(cur)
		}
	}()
	if err := dl.f.Sync(); err != nil {
		_ = dl.f.Close()
		return fmt.Errorf("cache: cannot sync temp file: %w", err)
	}
	if err := dl.f.Close(); err != nil {
		return fmt.Errorf("cache: cannot close temp file: %w", err)
	}
	shardDir := filepath.Dir(final)
	switch err := os.Mkdir(shardDir, 0o755); {
	case err == nil:
		if err := syncDir(filepath.Dir(shardDir)); err != nil {
			return fmt.Errorf("cache: cannot sync %s: %w", filepath.Dir(shardDir), err)
		}
	case !errors.Is(err, os.ErrExist):
		return fmt.Errorf("cache: cannot create %s: %w", shardDir, err)
	}
	// Rename under mu: a reader opening the file concurrently sees either path, never a stale one.
	dl.mu.Lock()
	err = os.Rename(tmp, final)
	if err == nil {
		dl.path, cur = final, final
	}
	dl.mu.Unlock()
	if err != nil {
		return fmt.Errorf("cache: cannot rename blob into place: %w", err)
	}
	if err := syncDir(shardDir); err != nil {
		return fmt.Errorf("cache: cannot sync %s: %w", shardDir, err)
	}

	// The journal lock spans the append and the index insert, so a journal rewrite never misses a
	// blob that is journaled but not yet indexed.
	s.jmu.Lock()
	defer s.jmu.Unlock()
	if err := s.appendJournalLocked(dl.d, dl.size); err != nil {
		return err
	}
	s.insert(dl, final, dl.size)
	s.maybeCompactJournalLocked()
	return nil
}

// Abort ends the download with err (wrapped in ErrAborted; nil means ErrAborted alone): the temp file
// is removed, and Wait and every reader return the error. It is a no-op after Commit verified the
// bytes or after an earlier abort, and may be called from any goroutine.
func (dl *Download) Abort(err error) {
	switch {
	case err == nil:
		err = ErrAborted
	case !errors.Is(err, ErrAborted):
		err = fmt.Errorf("%w: %w", ErrAborted, err)
	}
	dl.abort(err)
}

func (dl *Download) abort(err error) {
	dl.mu.Lock()
	if dl.err != nil || dl.done {
		dl.mu.Unlock()
		return
	}
	dl.err = err
	f, path, reserved := dl.f, dl.path, int64(0)
	if dl.keep {
		reserved = dl.size
	}
	dl.path = ""
	dl.closeStartedLocked()
	dl.mu.Unlock()
	dl.cond.Broadcast()

	if f != nil {
		_ = f.Close()
		_ = os.Remove(path)
	}
	dl.s.release(dl, reserved)
}

func (dl *Download) closeStartedLocked() {
	if !dl.startedIsClosed {
		dl.startedIsClosed = true
		close(dl.started)
	}
}

// Wait blocks until the leader calls Start or the download ends, and returns the announced size.
// It returns the abort error if the download was aborted, or ctx.Err() if ctx ends first.
func (dl *Download) Wait(ctx context.Context) (int64, error) {
	select {
	case <-dl.started:
	default:
		select {
		case <-dl.started:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	dl.mu.Lock()
	defer dl.mu.Unlock()
	if dl.err != nil {
		return 0, dl.err
	}
	return dl.size, nil
}

// NewReader returns a reader of the blob from offset on, with its own file descriptor. Read returns
// bytes as soon as the leader has written them and blocks for more; it ends with io.EOF at the size
// once Commit has verified the digest, or with the abort error (ErrDigestMismatch, ErrSizeMismatch,
// ErrAborted, ...) — never with io.EOF for a short or unverified blob. Close unblocks a blocked Read.
// The caller must Close the reader.
//
// A reader made after Start holds the file open, so it keeps reading even if the blob is evicted or,
// being larger than MaxSize, not kept. A reader made later than that, when the file is already gone,
// fails with ErrNotFound; the caller should fetch again.
func (dl *Download) NewReader(offset int64) io.ReadCloser {
	r := &reader{dl: dl, off: offset}
	dl.mu.Lock()
	dl.readers++
	if dl.size >= 0 && dl.err == nil {
		r.openLocked()
	}
	dl.mu.Unlock()
	return r
}
