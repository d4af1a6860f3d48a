package cache

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
)

// reader follows a Download; see Download.NewReader.
type reader struct {
	dl  *Download
	off int64

	// Guarded by dl.mu.
	f      *os.File
	err    error // sticky error from opening the file or from the offset
	closed bool
}

var _ io.ReadCloser = (*reader)(nil)

// openLocked opens the download's current file once the size is known. dl.mu must be held, so that
// the path cannot be renamed or removed between reading it and opening it.
func (r *reader) openLocked() {
	dl := r.dl
	if r.f != nil || r.err != nil {
		return
	}
	if r.off < 0 || r.off > dl.size {
		r.err = fmt.Errorf("%w: offset %d, size %d", ErrInvalidOffset, r.off, dl.size)
		return
	}
	if dl.path == "" {
		r.err = ErrNotFound
		return
	}
	f, err := os.Open(dl.path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			r.err = fmt.Errorf("%w: %w", ErrNotFound, err)
		} else {
			r.err = fmt.Errorf("cache: cannot open blob: %w", err)
		}
		return
	}
	r.f = f
}

// Read implements io.Reader; see Download.NewReader.
func (r *reader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	dl := r.dl
	dl.mu.Lock()
	for {
		if r.closed {
			dl.mu.Unlock()
			return 0, ErrClosed
		}
		if dl.err != nil {
			err := dl.err
			dl.mu.Unlock()
			return 0, err
		}
		if dl.size >= 0 {
			r.openLocked()
			if r.err != nil {
				err := r.err
				dl.mu.Unlock()
				return 0, err
			}
			if r.off < dl.written {
				break
			}
			if dl.done {
				dl.mu.Unlock()
				return 0, io.EOF
			}
		}
		dl.cond.Wait()
	}
	f, avail := r.f, dl.written-r.off
	dl.mu.Unlock()

	if int64(len(p)) > avail {
		p = p[:avail]
	}
	n, err := f.ReadAt(p, r.off)
	r.off += int64(n)
	if err != nil {
		if n == len(p) && err == io.EOF {
			return n, nil
		}
		dl.mu.Lock()
		closed := r.closed
		dl.mu.Unlock()
		if closed {
			return n, ErrClosed
		}
		if err == io.EOF {
			// The file is shorter than the bytes written to it: it was truncated on disk.
			return n, fmt.Errorf("cache: blob file truncated at %d: %w", r.off, io.ErrUnexpectedEOF)
		}
		return n, fmt.Errorf("cache: cannot read blob: %w", err)
	}
	return n, nil
}

// Close implements io.Closer. It unblocks a Read blocked on the download and releases the file.
func (r *reader) Close() error {
	dl := r.dl
	dl.mu.Lock()
	if r.closed {
		dl.mu.Unlock()
		return nil
	}
	r.closed = true
	f := r.f
	r.f = nil
	dl.readers--
	var remove string
	if dl.readers == 0 && dl.removeWhenIdle {
		remove, dl.path, dl.removeWhenIdle = dl.path, "", false
	}
	dl.mu.Unlock()
	dl.cond.Broadcast()

	if f != nil {
		_ = f.Close()
	}
	if remove != "" {
		_ = os.Remove(remove)
	}
	return nil
}
