package cache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"
	"testing"
	"time"
)

// failAfter bounds how long a test waits for something that must happen; it only turns a hang into
// a failure and never decides ordering.
const failAfter = 20 * time.Second

func TestConcurrentReadersFollowDownload(t *testing.T) {
	const (
		readers   = 32
		chunkSize = 16 << 10
		chunks    = 48
	)
	dir := t.TempDir()
	s := newTestStore(t, dir, 0)
	data, d := testBlob(t, chunkSize*chunks+123, 42)
	dl, leader := s.Begin(d)
	if !leader {
		t.Fatal("unexpected follower")
	}

	firstChunk := make(chan struct{}, readers) // one token per reader that saw the first chunk
	results := make([][]byte, readers)
	errs := make([]error, readers)
	var wg sync.WaitGroup
	follow := func(i int) {
		defer wg.Done()
		fdl, leader := s.Begin(d)
		if leader || fdl != dl {
			errs[i] = errors.New("follower did not join the download in flight")
			firstChunk <- struct{}{}
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), failAfter)
		defer cancel()
		size, err := fdl.Wait(ctx)
		if err != nil {
			errs[i] = err
			firstChunk <- struct{}{}
			return
		}
		r := fdl.NewReader(0)
		defer r.Close()
		buf := make([]byte, 0, size)
		p := make([]byte, 4096+i) // odd sizes so reads straddle writes
		signalled := false
		for {
			n, err := r.Read(p)
			buf = append(buf, p[:n]...)
			if !signalled && len(buf) >= chunkSize {
				signalled = true
				firstChunk <- struct{}{}
			}
			if err == io.EOF {
				break
			}
			if err != nil {
				errs[i] = err
				break
			}
		}
		if !signalled {
			firstChunk <- struct{}{}
		}
		results[i] = buf
	}
	// Half the followers arrive before Start, half while the writer is waiting on the first chunk.
	wg.Add(readers)
	for i := range readers / 2 {
		go follow(i)
	}

	writerErr := make(chan error, 1)
	go func() {
		if err := dl.Start(int64(len(data))); err != nil {
			writerErr <- err
			return
		}
		if _, err := dl.Write(data[:chunkSize]); err != nil {
			writerErr <- err
			return
		}
		for i := readers / 2; i < readers; i++ {
			go follow(i)
		}
		// The rest is written only after every reader has received the first chunk: readers that
		// could only see bytes after Commit would deadlock here.
		deadline := time.After(failAfter)
		for range readers {
			select {
			case <-firstChunk:
			case <-deadline:
				dl.Abort(errors.New("readers did not get the first chunk before the writer finished"))
				writerErr <- errors.New("readers did not get the first chunk before the writer finished")
				return
			}
		}
		for off := chunkSize; off < len(data); off += chunkSize {
			if _, err := dl.Write(data[off:min(off+chunkSize, len(data))]); err != nil {
				writerErr <- err
				return
			}
			runtime.Gosched() // a slow writer: give readers a chance to catch up and block
		}
		writerErr <- dl.Commit()
	}()

	if err := <-writerErr; err != nil {
		t.Fatalf("writer failed: %v", err)
	}
	wg.Wait()
	for i := range readers {
		if errs[i] != nil {
			t.Fatalf("reader %d failed: %v", i, errs[i])
		}
		if !bytes.Equal(results[i], data) {
			t.Fatalf("reader %d got %d bytes that differ from the %d written", i, len(results[i]), len(data))
		}
	}
	if got := readBlob(t, s, d); !bytes.Equal(got, data) {
		t.Fatal("committed blob differs")
	}
}

func TestReaderOffset(t *testing.T) {
	dir := t.TempDir()
	s := newTestStore(t, dir, 0)
	data, d := testBlob(t, 10_000, 3)
	dl, _ := s.Begin(d)
	if err := dl.Start(int64(len(data))); err != nil {
		t.Fatal(err)
	}
	if _, err := dl.Write(data[:4000]); err != nil {
		t.Fatal(err)
	}
	// Readers made in flight, before and past the bytes written so far, checked after Commit.
	offsets := []int64{0, 1, 3999, 4000, 4001, 9999, 10_000}
	var inFlight []io.ReadCloser
	for _, off := range offsets {
		inFlight = append(inFlight, dl.NewReader(off))
	}
	if _, err := dl.Write(data[4000:]); err != nil {
		t.Fatal(err)
	}
	if err := dl.Commit(); err != nil {
		t.Fatal(err)
	}
	for i, r := range inFlight {
		got, err := io.ReadAll(r)
		r.Close()
		if err != nil || !bytes.Equal(got, data[offsets[i]:]) {
			t.Fatalf("in flight, offset %d: got %d bytes, %v; want %d bytes", offsets[i], len(got), err, len(data)-int(offsets[i]))
		}
	}

	// Readers of the committed blob, through Begin on its digest.
	f := func(offset int64, wantErr error) {
		t.Helper()
		cdl, leader := s.Begin(d)
		if leader {
			t.Fatal("Begin on a committed digest made a leader")
		}
		r := cdl.NewReader(offset)
		defer r.Close()
		got, err := io.ReadAll(r)
		if wantErr != nil {
			if !errors.Is(err, wantErr) {
				t.Fatalf("offset %d: unexpected error: got %v; want %v", offset, err, wantErr)
			}
			return
		}
		if err != nil || !bytes.Equal(got, data[offset:]) {
			t.Fatalf("offset %d: got %d bytes, %v; want %d bytes", offset, len(got), err, len(data)-int(offset))
		}
	}
	f(0, nil)
	f(5000, nil)
	f(9999, nil)
	f(10_000, nil)
	f(10_001, ErrInvalidOffset)
	f(-1, ErrInvalidOffset)
}

func TestAbortWakesEveryone(t *testing.T) {
	f := func(name string, cause error, afterStart bool) {
		t.Helper()
		s := newTestStore(t, t.TempDir(), 0)
		data, d := testBlob(t, 50_000, 5)
		dl, _ := s.Begin(d)
		const waiters = 8
		errc := make(chan error, 2*waiters)
		blocked := make(chan struct{}, 2*waiters)
		for range waiters {
			// Followers: Wait, then read until the end.
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), failAfter)
				defer cancel()
				if !afterStart {
					blocked <- struct{}{} // about to block in Wait
				}
				if _, err := dl.Wait(ctx); err != nil {
					if afterStart {
						blocked <- struct{}{}
					}
					errc <- err
					return
				}
				r := dl.NewReader(0)
				defer r.Close()
				p := make([]byte, len(data))
				n, err := io.ReadAtLeast(r, p, 1000) // the bytes written before the abort
				blocked <- struct{}{}
				if err != nil {
					errc <- fmt.Errorf("read %d bytes: %w", n, err)
					return
				}
				_, err = io.ReadAll(r) // blocks until the abort
				errc <- err
			}()
			// Readers made before Start.
			go func() {
				r := dl.NewReader(0)
				defer r.Close()
				blocked <- struct{}{}
				_, err := io.ReadAll(r)
				errc <- err
			}()
		}
		if afterStart {
			if err := dl.Start(int64(len(data))); err != nil {
				t.Fatal(err)
			}
			if _, err := dl.Write(data[:1000]); err != nil {
				t.Fatal(err)
			}
		}
		for range 2 * waiters {
			<-blocked // every goroutine has at least reached its blocking call
		}
		dl.Abort(cause)
		for range 2 * waiters {
			select {
			case err := <-errc:
				if !errors.Is(err, ErrAborted) || (cause != nil && !errors.Is(err, cause)) {
					t.Fatalf("%s: unexpected error: got %v; want %v wrapping %v", name, err, ErrAborted, cause)
				}
			case <-time.After(failAfter):
				t.Fatalf("%s: a waiter was not woken by Abort", name)
			}
		}
		if _, leader := s.Begin(d); !leader {
			t.Fatalf("%s: Begin after Abort is not a leader", name)
		}
		if err := dl.Commit(); !errors.Is(err, ErrAborted) {
			t.Fatalf("%s: unexpected Commit after Abort: got %v", name, err)
		}
		if _, err := dl.Write(data); !errors.Is(err, ErrAborted) && !errors.Is(err, ErrSizeMismatch) {
			t.Fatalf("%s: unexpected Write after Abort: got %v", name, err)
		}
	}
	f("before start", io.ErrUnexpectedEOF, false)
	f("after start", io.ErrUnexpectedEOF, true)
	f("nil cause", nil, true)
}

func TestReaderCloseUnblocksRead(t *testing.T) {
	s := newTestStore(t, t.TempDir(), 0)
	_, d := testBlob(t, 100, 1)
	dl, _ := s.Begin(d)
	if err := dl.Start(100); err != nil {
		t.Fatal(err)
	}
	r := dl.NewReader(0)
	done := make(chan error, 1)
	go func() {
		_, err := r.Read(make([]byte, 10))
		done <- err
	}()
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("unexpected Read error: got %v; want %v", err, ErrClosed)
		}
	case <-time.After(failAfter):
		t.Fatal("Close did not unblock Read")
	}
	if err := r.Close(); err != nil {
		t.Fatalf("unexpected error from a second Close: %v", err)
	}
	dl.Abort(nil)
}

func TestWaitHonoursContext(t *testing.T) {
	s := newTestStore(t, t.TempDir(), 0)
	_, d := testBlob(t, 100, 1)
	dl, _ := s.Begin(d)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := dl.Wait(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("unexpected Wait error: got %v; want %v", err, context.Canceled)
	}
	dl.Abort(nil)
}

func TestSingleFlight(t *testing.T) {
	s := newTestStore(t, t.TempDir(), 0)
	data, d := testBlob(t, 1000, 1)
	const callers = 64
	var (
		mu      sync.Mutex
		leaders int
		dls     = map[*Download]bool{}
		wg      sync.WaitGroup
	)
	start := make(chan struct{})
	for range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			dl, leader := s.Begin(d)
			mu.Lock()
			defer mu.Unlock()
			dls[dl] = true
			if leader {
				leaders++
			}
		}()
	}
	close(start)
	wg.Wait()
	if leaders != 1 || len(dls) != 1 {
		t.Fatalf("unexpected single flight: %d leaders, %d downloads", leaders, len(dls))
	}
	if st := s.Stats(); st.InFlight != 1 {
		t.Fatalf("unexpected InFlight: %d", st.InFlight)
	}
	for dl := range dls {
		if err := dl.Start(1000); err != nil {
			t.Fatal(err)
		}
		if _, err := dl.Write(data); err != nil {
			t.Fatal(err)
		}
		if err := dl.Commit(); err != nil {
			t.Fatal(err)
		}
		if err := dl.Commit(); !errors.Is(err, ErrDownloadState) {
			t.Fatalf("unexpected second Commit: got %v; want %v", err, ErrDownloadState)
		}
		dl.Abort(errors.New("too late")) // no-op after Commit
		if got, err := io.ReadAll(dl.NewReader(0)); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("Abort after Commit broke readers: %v", err)
		}
	}
	// Begin on a committed digest: a finished download, no leader.
	dl, leader := s.Begin(d)
	if leader {
		t.Fatal("Begin on a committed digest made a leader")
	}
	if size, err := dl.Wait(context.Background()); err != nil || size != 1000 {
		t.Fatalf("unexpected Wait on a committed digest: %d, %v", size, err)
	}
	if err := dl.Start(1000); !errors.Is(err, ErrDownloadState) {
		t.Fatalf("unexpected Start on a committed download: got %v; want %v", err, ErrDownloadState)
	}
	if st := s.Stats(); st.InFlight != 0 || st.Entries != 1 {
		t.Fatalf("unexpected stats: %+v", st)
	}
}

func TestLeaderMisuse(t *testing.T) {
	s := newTestStore(t, t.TempDir(), 0)
	_, d := testBlob(t, 10, 1)
	dl, _ := s.Begin(d)
	if _, err := dl.Write([]byte("x")); !errors.Is(err, ErrDownloadState) {
		t.Fatalf("unexpected Write before Start: got %v; want %v", err, ErrDownloadState)
	}
	if err := dl.Commit(); !errors.Is(err, ErrDownloadState) {
		t.Fatalf("unexpected Commit before Start: got %v; want %v", err, ErrDownloadState)
	}
	if err := dl.Start(-1); !errors.Is(err, ErrUnknownSize) {
		t.Fatalf("unexpected Start(-1): got %v; want %v", err, ErrUnknownSize)
	}
	if _, err := dl.Wait(context.Background()); !errors.Is(err, ErrUnknownSize) {
		t.Fatalf("unexpected Wait after Start(-1): got %v; want %v", err, ErrUnknownSize)
	}
	if _, leader := s.Begin(d); !leader {
		t.Fatal("Begin after a failed Start is not a leader")
	}
}
