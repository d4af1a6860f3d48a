package cache

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCommitOpen(t *testing.T) {
	dir := t.TempDir()
	s := newTestStore(t, dir, 0)
	f := func(size int, useSHA512 bool) {
		t.Helper()
		data, d := testBlob(t, size, uint64(size))
		if useSHA512 {
			d = sha512Digest(t, data)
		}
		if s.Has(d) {
			t.Fatalf("unexpected Has(%s) before commit", d)
		}
		if _, _, err := s.Open(d); !errors.Is(err, ErrNotFound) {
			t.Fatalf("unexpected Open error before commit: got %v; want %v", err, ErrNotFound)
		}
		put(t, s, d, data)
		if !s.Has(d) {
			t.Fatalf("unexpected Has(%s) = false after commit", d)
		}
		if got := readBlob(t, s, d); !bytes.Equal(got, data) {
			t.Fatalf("unexpected content of %s (%d bytes)", d, len(got))
		}
		if !fileExists(blobFile(dir, d)) {
			t.Fatalf("missing blob file %s", blobFile(dir, d))
		}
		journal, err := os.ReadFile(filepath.Join(dir, "journal"))
		if err != nil {
			t.Fatalf("cannot read journal: %v", err)
		}
		if !bytes.Contains(journal, appendJournalLine(nil, d, int64(size))) {
			t.Fatalf("journal lacks %s:\n%s", d, journal)
		}
	}
	f(0, false)
	f(1, false)
	f(100_000, false)
	f(3000, true)

	st := s.Stats()
	if st.Entries != 4 || st.Bytes != 0+1+100_000+3000 || st.Hits != 4 || st.Misses != 4 || st.InFlight != 0 || st.Reserved != 0 {
		t.Fatalf("unexpected stats: %+v", st)
	}
	if names := tempFiles(t, dir); len(names) != 0 {
		t.Fatalf("unexpected temp files left: %v", names)
	}
}

func TestBadBodyNeverCommitted(t *testing.T) {
	f := func(name string, announced int64, write func(dl *Download, data []byte) error, wantErr error) {
		t.Helper()
		dir := t.TempDir()
		s := newTestStore(t, dir, 0)
		data, d := testBlob(t, 4096, 7)
		dl, leader := s.Begin(d)
		if !leader {
			t.Fatalf("%s: unexpected follower", name)
		}
		early := dl.NewReader(0) // made before Start
		defer early.Close()
		if err := dl.Start(announced); err != nil {
			t.Fatalf("%s: cannot start: %v", name, err)
		}
		late := dl.NewReader(0) // made after Start
		defer late.Close()
		err := write(dl, data)
		if err == nil {
			err = dl.Commit()
		} else {
			dl.Abort(err) // as the proxy does when io.Copy fails; a no-op here
		}
		if !errors.Is(err, wantErr) {
			t.Fatalf("%s: unexpected error: got %v; want %v", name, err, wantErr)
		}
		for _, r := range []io.Reader{early, late} {
			if _, err := io.ReadAll(r); !errors.Is(err, wantErr) {
				t.Fatalf("%s: unexpected reader error: got %v; want %v", name, err, wantErr)
			}
		}
		if _, err := dl.Wait(t.Context()); !errors.Is(err, wantErr) {
			t.Fatalf("%s: unexpected Wait error: got %v; want %v", name, err, wantErr)
		}
		if s.Has(d) || fileExists(blobFile(dir, d)) {
			t.Fatalf("%s: bad body was committed", name)
		}
		if names := tempFiles(t, dir); len(names) != 0 {
			t.Fatalf("%s: unexpected temp files left: %v", name, names)
		}
		if st := s.Stats(); st.InFlight != 0 || st.Reserved != 0 || st.Bytes != 0 {
			t.Fatalf("%s: unexpected stats: %+v", name, st)
		}
		if _, leader := s.Begin(d); !leader {
			t.Fatalf("%s: Begin after a failed download is not a leader", name)
		}
	}
	writeAll := func(dl *Download, data []byte) error { _, err := dl.Write(data); return err }
	flipped := func(dl *Download, data []byte) error {
		bad := bytes.Clone(data)
		bad[len(bad)/2] ^= 1
		_, err := dl.Write(bad)
		return err
	}
	short := func(dl *Download, data []byte) error { _, err := dl.Write(data[:len(data)-1]); return err }
	f("digest mismatch", 4096, flipped, ErrDigestMismatch)
	f("short body", 4096, short, ErrSizeMismatch)
	f("long body", 4095, writeAll, ErrSizeMismatch)
	f("wrong content of right size", 4096, func(dl *Download, data []byte) error {
		_, err := dl.Write(make([]byte, len(data)))
		return err
	}, ErrDigestMismatch)
}

func TestRestart(t *testing.T) {
	dir := t.TempDir()
	s := newTestStore(t, dir, 0)
	data, d := testBlob(t, 10_000, 1)
	put(t, s, d, data)
	// A download cut short by a crash, and a stray temp file.
	_, d2 := testBlob(t, 5000, 2)
	dl, _ := s.Begin(d2)
	if err := dl.Start(5000); err != nil {
		t.Fatalf("cannot start: %v", err)
	}
	if _, err := dl.Write(data[:100]); err != nil {
		t.Fatalf("cannot write: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "tmp", tempPrefix+"123.part"), []byte("partial"), 0o600); err != nil {
		t.Fatalf("cannot write leftover: %v", err)
	}
	foreign := filepath.Join(dir, "tmp", "not-ours")
	if err := os.WriteFile(foreign, nil, 0o600); err != nil {
		t.Fatalf("cannot write foreign file: %v", err)
	}

	s2 := newTestStore(t, dir, 0)
	if names := tempFiles(t, dir); len(names) != 0 {
		t.Fatalf("unexpected temp files after restart: %v", names)
	}
	if !fileExists(foreign) {
		t.Fatalf("restart removed a file it does not own")
	}
	if got := readBlob(t, s2, d); !bytes.Equal(got, data) {
		t.Fatalf("unexpected content after restart")
	}
	if s2.Has(d2) {
		t.Fatalf("unexpected partial download served after restart")
	}
	if st := s2.Stats(); st.Entries != 1 || st.Bytes != 10_000 {
		t.Fatalf("unexpected stats after restart: %+v", st)
	}
}

func TestScanDropsUnverifiedBlobs(t *testing.T) {
	f := func(name string, tamper func(t *testing.T, dir, path string)) {
		t.Helper()
		dir := t.TempDir()
		s := newTestStore(t, dir, 0)
		good, dg := testBlob(t, 2000, 1)
		bad, db := testBlob(t, 3000, 2)
		put(t, s, dg, good)
		put(t, s, db, bad)
		tamper(t, dir, blobFile(dir, db))

		s2 := newTestStore(t, dir, 0)
		if s2.Has(db) || fileExists(blobFile(dir, db)) {
			t.Fatalf("%s: tampered blob survived the scan", name)
		}
		if got := readBlob(t, s2, dg); !bytes.Equal(got, good) {
			t.Fatalf("%s: intact blob damaged", name)
		}
		if st := s2.Stats(); st.Entries != 1 || st.Bytes != 2000 {
			t.Fatalf("%s: unexpected stats: %+v", name, st)
		}
	}
	f("torn", func(t *testing.T, _, path string) {
		if err := os.Truncate(path, 1000); err != nil {
			t.Fatal(err)
		}
	})
	f("empty", func(t *testing.T, _, path string) {
		if err := os.Truncate(path, 0); err != nil {
			t.Fatal(err)
		}
	})
	f("extended", func(t *testing.T, _, path string) {
		if err := os.Truncate(path, 3001); err != nil {
			t.Fatal(err)
		}
	})
	f("not journaled", func(t *testing.T, dir, path string) {
		// A file renamed into place whose journal line was lost in a crash.
		journal := filepath.Join(dir, "journal")
		b, err := os.ReadFile(journal)
		if err != nil {
			t.Fatal(err)
		}
		var kept []string
		for _, line := range strings.Split(string(b), "\n") {
			if line != "" && !strings.HasPrefix(line, "sha256:"+filepath.Base(path)) {
				kept = append(kept, line+"\n")
			}
		}
		if err := os.WriteFile(journal, []byte(strings.Join(kept, "")), 0o644); err != nil {
			t.Fatal(err)
		}
	})
}

func TestEviction(t *testing.T) {
	const (
		blobSize = 1000
		maxSize  = 10 * blobSize
		count    = 35
	)
	dir := t.TempDir()
	s := newTestStore(t, dir, maxSize)
	hotData, hot := testBlob(t, blobSize, 1000)
	put(t, s, hot, hotData)
	first, firstSize, err := s.Open(hot) // held open across its eventual eviction
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()

	var all []Digest
	for i := range count {
		data, d := testBlob(t, blobSize+i, uint64(i))
		put(t, s, d, data)
		all = append(all, d)
		if i < count/2 {
			readBlob(t, s, hot) // keep it most recently used for a while
		}
		if st := s.Stats(); st.Bytes > maxSize {
			t.Fatalf("committed bytes over budget after %d commits: %+v", i+1, st)
		}
	}
	if s.Has(hot) {
		t.Fatalf("blob unused for %d commits was not evicted", count-count/2)
	}
	if !s.Has(all[count-1]) {
		t.Fatalf("the newest blob was evicted")
	}
	if s.Has(all[0]) {
		t.Fatalf("the oldest blob survived")
	}
	got, err := io.ReadAll(first)
	if err != nil || int64(len(got)) != firstSize || !bytes.Equal(got, hotData) {
		t.Fatalf("file open before eviction became unreadable: %d bytes, %v", len(got), err)
	}

	// The disk agrees with the index, and a restart keeps the most recently used blobs.
	st := s.Stats()
	var onDisk int64
	var files int
	if err := filepath.WalkDir(filepath.Join(dir, "blobs"), func(path string, de os.DirEntry, err error) error {
		if err == nil && de.Type().IsRegular() {
			info, _ := de.Info()
			onDisk += info.Size()
			files++
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if onDisk != st.Bytes || files != st.Entries || st.Evictions == 0 {
		t.Fatalf("disk (%d bytes in %d files) disagrees with stats %+v", onDisk, files, st)
	}
	if names := tempFiles(t, dir); len(names) != 0 {
		t.Fatalf("evicted files left in tmp: %v", names)
	}
	s2 := newTestStore(t, dir, maxSize/2)
	if st2 := s2.Stats(); st2.Bytes > maxSize/2 || !s2.Has(all[count-1]) {
		t.Fatalf("restart with a smaller budget: %+v, newest kept: %v", st2, s2.Has(all[count-1]))
	}
}

func TestInFlightReservation(t *testing.T) {
	dir := t.TempDir()
	s := newTestStore(t, dir, 10_000)
	var ds []Digest
	for i := range 4 {
		data, d := testBlob(t, 2000, uint64(i))
		put(t, s, d, data)
		ds = append(ds, d)
	}
	data, d := testBlob(t, 5000, 99)
	dl, _ := s.Begin(d)
	if err := dl.Start(5000); err != nil {
		t.Fatal(err)
	}
	// 8000 committed + 5000 reserved > 10000: the two least recently used blobs make room.
	if st := s.Stats(); st.Reserved != 5000 || st.Bytes != 4000 || st.InFlight != 1 || s.Has(ds[0]) || s.Has(ds[1]) || !s.Has(ds[3]) {
		t.Fatalf("unexpected state after Start: %+v", st)
	}
	if _, err := dl.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := dl.Commit(); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.Reserved != 0 || st.Bytes != 9000 || st.InFlight != 0 {
		t.Fatalf("unexpected state after Commit: %+v", st)
	}
}

func TestOversizedBlobNotKept(t *testing.T) {
	dir := t.TempDir()
	s := newTestStore(t, dir, 1000)
	small, ds := testBlob(t, 500, 1)
	put(t, s, ds, small)
	data, d := testBlob(t, 4000, 2)
	dl, _ := s.Begin(d)
	r := dl.NewReader(0)
	if err := dl.Start(4000); err != nil {
		t.Fatal(err)
	}
	if _, err := dl.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := dl.Commit(); err != nil {
		t.Fatalf("unexpected Commit error: %v", err)
	}
	got, err := io.ReadAll(r)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("oversized blob not streamed: %d bytes, %v", len(got), err)
	}
	if s.Has(d) || !s.Has(ds) {
		t.Fatalf("oversized blob kept (%v) or evicted others (%v)", s.Has(d), !s.Has(ds))
	}
	if names := tempFiles(t, dir); len(names) != 1 {
		t.Fatalf("temp file removed while a reader is open: %v", names)
	}
	r.Close()
	if names := tempFiles(t, dir); len(names) != 0 {
		t.Fatalf("temp file left after the last reader closed: %v", names)
	}
	if _, err := io.ReadAll(dl.NewReader(0)); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unexpected error from a reader made after the file left: got %v; want %v", err, ErrNotFound)
	}
}

func TestDelete(t *testing.T) {
	dir := t.TempDir()
	s := newTestStore(t, dir, 0)
	data, d := testBlob(t, 3000, 1)
	put(t, s, d, data)
	f, _, err := s.Open(d)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := s.Delete(d); err != nil {
		t.Fatalf("cannot delete: %v", err)
	}
	if s.Has(d) || fileExists(blobFile(dir, d)) {
		t.Fatalf("blob still present after Delete")
	}
	if _, _, err := s.Open(d); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unexpected Open error after Delete: got %v; want %v", err, ErrNotFound)
	}
	if err := s.Delete(d); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unexpected second Delete error: got %v; want %v", err, ErrNotFound)
	}
	if got, err := io.ReadAll(f); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("file open before Delete became unreadable: %v", err)
	}
	if st := s.Stats(); st.Entries != 0 || st.Bytes != 0 {
		t.Fatalf("unexpected stats after Delete: %+v", st)
	}
	// Purged, then fetched again.
	put(t, s, d, data)
	if got := readBlob(t, s, d); !bytes.Equal(got, data) {
		t.Fatalf("unexpected content after re-commit")
	}
	// The journal still lists it once or more; a restart keeps it.
	if s2 := newTestStore(t, dir, 0); !s2.Has(d) {
		t.Fatalf("re-committed blob lost at restart")
	}
}

func TestBlobVanishedBehindOurBack(t *testing.T) {
	dir := t.TempDir()
	s := newTestStore(t, dir, 0)
	data, d := testBlob(t, 100, 1)
	put(t, s, d, data)
	if err := os.Remove(blobFile(dir, d)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Open(d); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unexpected Open error: got %v; want %v", err, ErrNotFound)
	}
	if s.Has(d) {
		t.Fatalf("vanished blob still indexed")
	}
	if _, leader := s.Begin(d); !leader {
		t.Fatalf("vanished blob is not refetched")
	}
}

func TestOpenConfigErrors(t *testing.T) {
	f := func(cfg Config) {
		t.Helper()
		if _, err := Open(cfg); err == nil || !strings.HasPrefix(err.Error(), "cache: ") {
			t.Fatalf("unexpected error for %+v: %v", cfg, err)
		}
	}
	f(Config{})
	f(Config{Dir: t.TempDir(), MaxSize: -1})
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	f(Config{Dir: file})
}

func TestConcurrentUse(t *testing.T) {
	const (
		workers  = 8
		perWork  = 20
		blobSize = 1000
		maxSize  = 8 * blobSize
	)
	dir := t.TempDir()
	s := newTestStore(t, dir, maxSize)
	type blob struct {
		data []byte
		d    Digest
	}
	blobs := make([]blob, workers*perWork/2) // each blob is filled by up to two workers racing
	for i := range blobs {
		blobs[i].data, blobs[i].d = testBlob(t, blobSize+i, uint64(i))
	}
	errc := make(chan error, workers)
	for w := range workers {
		go func() {
			errc <- func() error {
				for i := range perWork {
					b := blobs[(w/2*perWork+i)%len(blobs)]
					if f, size, err := s.Open(b.d); err == nil {
						got, err := io.ReadAll(f)
						f.Close()
						if err != nil || int64(len(got)) != size || !bytes.Equal(got, b.data) {
							return errors.New("hit returned wrong bytes")
						}
						continue
					}
					dl, leader := s.Begin(b.d)
					if leader {
						if err := dl.Start(int64(len(b.data))); err != nil {
							return err
						}
						if _, err := dl.Write(b.data); err != nil {
							return err
						}
						if err := dl.Commit(); err != nil {
							return err
						}
					}
					r := dl.NewReader(0)
					got, err := io.ReadAll(r)
					r.Close()
					if errors.Is(err, ErrNotFound) {
						continue // evicted before this reader opened it
					}
					if err != nil || !bytes.Equal(got, b.data) {
						return errors.New("download returned wrong bytes")
					}
					if st := s.Stats(); st.Bytes > maxSize {
						return errors.New("over budget")
					}
				}
				return nil
			}()
		}()
	}
	for range workers {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	st := s.Stats()
	if st.Bytes > maxSize || st.InFlight != 0 || st.Reserved != 0 {
		t.Fatalf("unexpected final stats: %+v", st)
	}
	s2 := newTestStore(t, dir, maxSize)
	if st2 := s2.Stats(); st2.Entries != st.Entries || st2.Bytes != st.Bytes {
		t.Fatalf("restart disagrees: %+v vs %+v", st2, st)
	}
}
