package s3

import (
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"sync"

	"github.com/minio/minio-go/v7"

	"github.com/docxy/docxy/cache"
)

// Open returns a reader of blob d streamed from the bucket, and its size. The caller must close the
// reader; ctx must stay live until then, since it bounds the whole transfer. A connection that ends
// before size bytes makes Read return io.ErrUnexpectedEOF. The bytes are not verified against d:
// feed them to a cache.Download, whose Commit does that.
//
// It returns an error wrapping cache.ErrNotFound when the bucket has no object for d.
func (t *Tier) Open(ctx context.Context, d cache.Digest) (io.ReadCloser, int64, error) {
	key, err := t.key(d)
	if err != nil {
		return nil, 0, fmt.Errorf("s3: cannot open blob: %w", err)
	}
	body, info, _, err := minio.Core{Client: t.client}.GetObject(ctx, t.bucket, key, minio.GetObjectOptions{})
	if err != nil {
		if isNotFound(err) {
			return nil, 0, fmt.Errorf("s3: cannot open blob %s: %w", d, cache.ErrNotFound)
		}
		return nil, 0, fmt.Errorf("s3: cannot open blob %s in bucket %q at %s: %w", d, t.bucket, t.endpoint, err)
	}
	if info.Size < 0 {
		_ = body.Close()
		return nil, 0, fmt.Errorf("s3: cannot open blob %s: the response has no Content-Length", d)
	}
	return body, info.Size, nil
}

// Put uploads blob d of size bytes read from r, unless the bucket already has an object of that size
// for d. It reads exactly size bytes from r and hashes them; the object becomes visible only if all
// of them were read and they match d. A reader that ends early fails with an error wrapping
// cache.ErrSizeMismatch, one whose bytes do not hash to d with cache.ErrDigestMismatch, and in both
// cases no object is written: a single PUT is cut short, a multipart upload (above 16 MiB, one 16 MiB
// buffer per call) is aborted.
//
// Put does not close r, and does not read it after returning (it waits for a Read in progress, which
// net/http may still be doing when the server answered early).
//
// Concurrent Puts of the same digest, here or in other replicas, are harmless: S3 makes a PUT or a
// completed multipart upload visible atomically, and they all carry the same bytes.
func (t *Tier) Put(ctx context.Context, d cache.Digest, r io.Reader, size int64) error {
	key, err := t.key(d)
	if err != nil {
		return fmt.Errorf("s3: cannot upload blob: %w", err)
	}
	if size < 0 {
		return fmt.Errorf("s3: cannot upload blob %s: %w: got size %d", d, cache.ErrUnknownSize, size)
	}
	info, err := t.client.StatObject(ctx, t.bucket, key, minio.StatObjectOptions{})
	switch {
	case err == nil && info.Size == size:
		return nil
	case err != nil && !isNotFound(err):
		return fmt.Errorf("s3: cannot upload blob %s: cannot stat it in bucket %q at %s: %w%s", d, t.bucket, t.endpoint, err, hint(err))
	}
	// Absent, or present with the wrong size (a corrupt object): upload, replacing it.

	vr := newVerifyingReader(r, d, size)
	if size == 0 {
		// minio-go may not Read an empty body at all, so check the digest of nothing here.
		if err := vr.verify(); err != nil {
			return fmt.Errorf("s3: cannot upload blob %s: %w", d, err)
		}
	}
	_, err = t.client.PutObject(ctx, t.bucket, key, vr, size, minio.PutObjectOptions{ContentType: "application/octet-stream"})
	if rerr := vr.close(); rerr != nil {
		// The reader's failure is the cause; minio-go's error only says that the upload stopped.
		return fmt.Errorf("s3: cannot upload blob %s: %w", d, rerr)
	}
	if err != nil {
		return fmt.Errorf("s3: cannot upload blob %s to bucket %q at %s: %w%s", d, t.bucket, t.endpoint, err, hint(err))
	}
	return nil
}

// Has reports whether the bucket has an object for d. It returns false, not an error, when the
// bucket itself is missing (S3 answers a HEAD of either with a bare 404); Check tells those apart.
func (t *Tier) Has(ctx context.Context, d cache.Digest) (bool, error) {
	key, err := t.key(d)
	if err != nil {
		return false, fmt.Errorf("s3: cannot stat blob: %w", err)
	}
	if _, err := t.client.StatObject(ctx, t.bucket, key, minio.StatObjectOptions{}); err != nil {
		if isNotFound(err) {
			return false, nil
		}
		return false, fmt.Errorf("s3: cannot stat blob %s in bucket %q at %s: %w%s", d, t.bucket, t.endpoint, err, hint(err))
	}
	return true, nil
}

// Delete removes the object for d. Deleting an absent blob is not an error, as in S3. Other replicas
// keep their local copies, and one of them may upload d again.
func (t *Tier) Delete(ctx context.Context, d cache.Digest) error {
	key, err := t.key(d)
	if err != nil {
		return fmt.Errorf("s3: cannot delete blob: %w", err)
	}
	if err := t.client.RemoveObject(ctx, t.bucket, key, minio.RemoveObjectOptions{}); err != nil && !isNotFound(err) {
		return fmt.Errorf("s3: cannot delete blob %s from bucket %q at %s: %w%s", d, t.bucket, t.endpoint, err, hint(err))
	}
	return nil
}

// key returns the object key of d: prefix + "blobs/<algorithm>/<first two hex>/<hex>", the layout
// of the local cache.Store under its blobs/ directory.
func (t *Tier) key(d cache.Digest) (string, error) {
	if d.IsZero() {
		return "", cache.ErrInvalidDigest
	}
	h := d.Hex()
	return t.prefix + "blobs/" + d.Algorithm() + "/" + h[:2] + "/" + h, nil
}

func isNotFound(err error) bool {
	var er minio.ErrorResponse
	return errors.As(err, &er) && er.Code == minio.NoSuchKey
}

// verifyingReader passes exactly size bytes of r through, hashing them. It fails instead of
// returning io.EOF early, and withholds the last bytes when the hash does not match the digest, so
// that an upload fed from it can only complete with the right bytes. Its error sticks.
//
// net/http reads a request body in its own goroutine, and may still be reading when the response
// has arrived; so every Read holds mu, and close waits for the Read in progress and ends reading.
type verifyingReader struct {
	mu sync.Mutex // held across Read; protects the fields below

	r    io.Reader
	d    cache.Digest
	h    hash.Hash
	size int64
	left int64
	err  error // why reading failed; nil while it goes well and at the end
	done bool  // verified: all size bytes read and matching d

	closed bool // set by close: Read fails from then on
}

// errReaderClosed is returned by a Read after Put returned; it only reaches minio-go, never a caller.
var errReaderClosed = errors.New("s3: upload body read after the upload ended")

// close waits for the Read in progress, if any, makes later Reads fail, and returns why reading failed.
func (vr *verifyingReader) close() error {
	vr.mu.Lock()
	defer vr.mu.Unlock()
	vr.closed = true
	return vr.err
}

func newVerifyingReader(r io.Reader, d cache.Digest, size int64) *verifyingReader {
	var h hash.Hash
	if d.Algorithm() == "sha512" {
		h = sha512.New()
	} else {
		h = sha256.New()
	}
	return &verifyingReader{r: r, d: d, h: h, size: size, left: size}
}

// Read implements io.Reader.
func (vr *verifyingReader) Read(p []byte) (int, error) {
	vr.mu.Lock()
	defer vr.mu.Unlock()
	if vr.closed {
		return 0, errReaderClosed
	}
	if vr.err != nil {
		return 0, vr.err
	}
	if vr.left == 0 {
		if err := vr.verify(); err != nil {
			return 0, err
		}
		return 0, io.EOF
	}
	if int64(len(p)) > vr.left {
		p = p[:vr.left]
	}
	n, err := vr.r.Read(p)
	vr.h.Write(p[:n])
	vr.left -= int64(n)
	if vr.left == 0 {
		if err := vr.verify(); err != nil {
			return 0, err
		}
		return n, nil
	}
	switch {
	case err == io.EOF:
		vr.err = fmt.Errorf("%w: the reader ended after %d bytes; want %d", cache.ErrSizeMismatch, vr.size-vr.left, vr.size)
		return 0, vr.err
	case err != nil:
		vr.err = fmt.Errorf("cannot read blob: %w", err)
		return 0, vr.err
	}
	return n, nil
}

// verify checks the hash once all size bytes are read. vr.mu must be held, or vr not yet shared.
func (vr *verifyingReader) verify() error {
	if vr.done || vr.err != nil {
		return vr.err
	}
	var buf [sha512.Size]byte
	if got, want := hex.EncodeToString(vr.h.Sum(buf[:0])), vr.d.Hex(); got != want {
		vr.err = fmt.Errorf("%w: got %s:%s; want %s", cache.ErrDigestMismatch, vr.d.Algorithm(), got, vr.d)
		return vr.err
	}
	vr.done = true
	return nil
}
