package cache

import (
	"bufio"
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// The journal is a text file with one "algorithm:hex size" line per committed blob, appended after
// the blob's rename is durable. A blob file is trusted at startup only if the journal lists it with
// its exact size: a torn or tampered file, or one renamed just before a crash whose line was lost,
// is deleted instead of served. Lines of deleted and evicted blobs stay until the journal is
// rewritten, at Open and whenever it holds more than twice the live entries plus journalSlack lines.
// A torn last line (crash mid-append) fails to parse and is skipped.
const journalSlack = 1024

// cleanTemp removes the files left in tmp/ by downloads or evictions cut short by a crash.
func (s *Store) cleanTemp() error {
	des, err := os.ReadDir(s.tmpDir)
	if err != nil {
		return fmt.Errorf("cache: cannot read %s: %w", s.tmpDir, err)
	}
	for _, de := range des {
		if strings.HasPrefix(de.Name(), tempPrefix) {
			if err := os.Remove(filepath.Join(s.tmpDir, de.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("cache: cannot remove leftover temp file: %w", err)
			}
		}
	}
	return nil
}

// scan loads the committed blobs listed in the journal into the index, deletes blob files that the
// journal does not vouch for, evicts down to MaxSize and rewrites the journal.
func (s *Store) scan() error {
	sizes, err := readJournal(s.journalPath)
	if err != nil {
		return err
	}
	var entries []*entry
	for _, algo := range []algorithm{algoSHA256, algoSHA512} {
		algoDir := filepath.Join(s.blobDir, algo.name())
		shards, err := os.ReadDir(algoDir)
		if err != nil {
			return fmt.Errorf("cache: cannot read %s: %w", algoDir, err)
		}
		for _, shard := range shards {
			if !shard.IsDir() {
				continue
			}
			shardDir := filepath.Join(algoDir, shard.Name())
			files, err := os.ReadDir(shardDir)
			if err != nil {
				return fmt.Errorf("cache: cannot read %s: %w", shardDir, err)
			}
			for _, fe := range files {
				d, err := ParseDigest(algo.name() + ":" + fe.Name())
				if err != nil || len(shard.Name()) != 2 || fe.Name()[:2] != shard.Name() || !fe.Type().IsRegular() {
					continue // not ours; leave it alone
				}
				path := filepath.Join(shardDir, fe.Name())
				info, err := fe.Info()
				if err != nil {
					continue // vanished meanwhile
				}
				if want, ok := sizes[d]; !ok || want != info.Size() {
					if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
						return fmt.Errorf("cache: cannot remove unverified blob: %w", err)
					}
					continue
				}
				entries = append(entries, &entry{d: d, path: path, size: info.Size(), mtime: info.ModTime().UnixNano()})
			}
		}
	}

	// Push the least recently used first so that the most recent ends at the front.
	slices.SortFunc(entries, func(a, b *entry) int { return cmp.Compare(a.mtime, b.mtime) })
	s.mu.Lock()
	for _, e := range entries {
		s.index[e.d] = e
		s.bytes += e.size
		s.pushFrontLocked(e)
	}
	victims := s.evictLocked(nil)
	s.mu.Unlock()
	removeFiles(victims...)

	s.jmu.Lock()
	defer s.jmu.Unlock()
	return s.rewriteJournalLocked()
}

// readJournal returns the size recorded for each digest. A missing journal is an empty one.
func readJournal(path string) (map[Digest]int64, error) {
	sizes := make(map[Digest]int64)
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return sizes, nil
		}
		return nil, fmt.Errorf("cache: cannot open journal: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		ds, ns, ok := bytes.Cut(sc.Bytes(), []byte{' '})
		if !ok {
			continue
		}
		d, err := ParseDigestBytes(ds)
		if err != nil {
			continue
		}
		n, err := strconv.ParseInt(string(ns), 10, 64)
		if err != nil || n < 0 {
			continue
		}
		sizes[d] = n
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("cache: cannot read journal: %w", err)
	}
	return sizes, nil
}

func appendJournalLine(dst []byte, d Digest, size int64) []byte {
	dst = d.Append(dst)
	dst = append(dst, ' ')
	dst = strconv.AppendInt(dst, size, 10)
	return append(dst, '\n')
}

// appendJournalLocked records a committed blob. The line needs no fsync: if it is lost in a crash the
// blob is merely dropped at the next Open, and it is written only after the blob's rename is durable.
func (s *Store) appendJournalLocked(d Digest, size int64) error {
	f, err := os.OpenFile(s.journalPath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("cache: cannot open journal: %w", err)
	}
	var buf [160]byte
	_, err = f.Write(appendJournalLine(buf[:0], d, size))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("cache: cannot append to journal: %w", err)
	}
	s.journalLines++
	return nil
}

// maybeCompactJournalLocked rewrites the journal when dead lines dominate it.
func (s *Store) maybeCompactJournalLocked() {
	s.mu.Lock()
	live := len(s.index)
	s.mu.Unlock()
	if s.journalLines > 2*live+journalSlack {
		// Best effort: on failure the old journal stays valid, and the next commit retries.
		_ = s.rewriteJournalLocked()
	}
}

// rewriteJournalLocked atomically replaces the journal with the live entries.
func (s *Store) rewriteJournalLocked() error {
	s.mu.Lock()
	buf := make([]byte, 0, len(s.index)*90)
	for e := s.lru.prev; e != &s.lru; e = e.prev {
		buf = appendJournalLine(buf, e.d, e.size)
	}
	n := len(s.index)
	s.mu.Unlock()

	tmp := filepath.Join(s.tmpDir, tempPrefix+"journal")
	if err := writeFileSync(tmp, buf); err != nil {
		return fmt.Errorf("cache: cannot write journal: %w", err)
	}
	if err := os.Rename(tmp, s.journalPath); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("cache: cannot replace journal: %w", err)
	}
	if err := syncDir(s.dir); err != nil {
		return fmt.Errorf("cache: cannot sync %s: %w", s.dir, err)
	}
	s.journalLines = n
	return nil
}

func writeFileSync(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(path)
	}
	return err
}

// syncDir fsyncs a directory so that the renames and creations in it survive a crash.
func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
