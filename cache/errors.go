package cache

import "errors"

var (
	// ErrNotFound is returned by Store.Open and Store.Delete when the blob is not committed, and by a
	// reader whose blob left the disk (evicted, purged, or not kept) before the reader opened it.
	ErrNotFound = errors.New("cache: blob not found")

	// ErrInvalidDigest is returned by ParseDigest for anything but sha256:<64 hex> or sha512:<128 hex>
	// in lowercase hex.
	ErrInvalidDigest = errors.New("cache: invalid digest")

	// ErrDigestMismatch is returned by Download.Commit, and by the readers of the download, when the
	// written bytes do not hash to the digest. Nothing is committed.
	ErrDigestMismatch = errors.New("cache: digest mismatch")

	// ErrSizeMismatch is returned by Download.Commit when fewer bytes than announced were written, and
	// by Download.Write when a write would go past the announced size. The readers get it too.
	ErrSizeMismatch = errors.New("cache: size mismatch")

	// ErrUnknownSize is returned by Download.Start for a negative size: a blob can only be cached when
	// its length is known up front (the upstream sent Content-Length).
	ErrUnknownSize = errors.New("cache: blob size unknown")

	// ErrAborted wraps the error given to Download.Abort; Download.Wait and the readers return it.
	ErrAborted = errors.New("cache: download aborted")

	// ErrClosed is returned by Read on a reader that was closed, including a Read blocked at the time.
	ErrClosed = errors.New("cache: reader closed")

	// ErrInvalidOffset is returned by a reader whose start offset is negative or beyond the blob size.
	ErrInvalidOffset = errors.New("cache: offset outside the blob")

	// ErrDownloadState is returned when the leader's methods are called out of order: Write or Commit
	// before Start, Start twice, Commit twice.
	ErrDownloadState = errors.New("cache: download method called out of order")
)
