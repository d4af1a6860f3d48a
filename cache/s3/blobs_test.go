package s3

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"testing/iotest"

	"github.com/minio/minio-go/v7"

	"github.com/docxy/docxy/cache"
)

const bigSize = 20 << 20 // above minio-go's 16 MiB part size: a multipart upload

func TestPutOpenRoundTrip(t *testing.T) {
	g := startGateway(t)
	tr := g.tier(t, Config{})
	f := func(size int, seed uint64) {
		t.Helper()
		data, d := testBlob(t, size, seed)
		mustHas(t, tr, d, false)
		mustPut(t, tr, d, data)
		mustHas(t, tr, d, true)
		if got := readBlob(t, tr, d); !bytes.Equal(got, data) {
			t.Fatalf("unexpected bytes of a %d-byte blob; got %d different bytes", size, len(got))
		}
	}
	f(0, 1)
	f(1, 2)
	f(4096, 3)
	f(bigSize, 4)
}

func TestObjectKeyLayout(t *testing.T) {
	g := startGateway(t)
	data, d := testBlob(t, 100, 1)
	mustPut(t, g.tier(t, Config{}), d, data)
	mustPut(t, g.tier(t, Config{Prefix: "/mirror/eu"}), d, data)
	for _, prefix := range []string{"docxy", "mirror/eu"} {
		p := filepath.Join(g.dir, testBucket, prefix, "blobs", "sha256", d.Hex()[:2], d.Hex())
		got, err := os.ReadFile(p)
		if err != nil {
			t.Fatalf("cannot read the object as a file: %v", err)
		}
		if !bytes.Equal(got, data) {
			t.Fatalf("unexpected object content at %s", p)
		}
	}
}

func TestOpenMissing(t *testing.T) {
	g := startGateway(t)
	tr := g.tier(t, Config{})
	_, d := testBlob(t, 10, 1)
	rc, _, err := tr.Open(context.Background(), d)
	if !errors.Is(err, cache.ErrNotFound) {
		if rc != nil {
			rc.Close()
		}
		t.Fatalf("unexpected error; got %v; want cache.ErrNotFound", err)
	}
	if _, _, err := tr.Open(context.Background(), cache.Digest{}); !errors.Is(err, cache.ErrInvalidDigest) {
		t.Fatalf("unexpected error for the zero digest; got %v; want cache.ErrInvalidDigest", err)
	}
}

func TestPutRejectsBadReaders(t *testing.T) {
	g := startGateway(t)
	tr := g.tier(t, Config{})
	f := func(name string, size int, r func(data []byte) io.Reader, wantErr error) {
		t.Helper()
		data, d := testBlob(t, size, uint64(size))
		err := tr.Put(context.Background(), d, r(data), int64(size))
		if !errors.Is(err, wantErr) {
			t.Fatalf("%s, %d bytes: unexpected error; got %v; want %v", name, size, err, wantErr)
		}
		mustHas(t, tr, d, false)
	}
	short := func(data []byte) io.Reader { return bytes.NewReader(data[:len(data)-1]) }
	corrupt := func(data []byte) io.Reader {
		bad := bytes.Clone(data)
		bad[len(bad)-1] ^= 1
		return bytes.NewReader(bad)
	}
	errRead := errors.New("disk on fire")
	failing := func(data []byte) io.Reader {
		return io.MultiReader(bytes.NewReader(data[:len(data)/2]), iotest.ErrReader(errRead))
	}
	for _, size := range []int{1000, bigSize} {
		f("short reader", size, short, cache.ErrSizeMismatch)
		f("wrong bytes", size, corrupt, cache.ErrDigestMismatch)
		f("failing reader", size, failing, errRead)
	}

	// A reader that is too short for the digest of nothing.
	_, d := testBlob(t, 1, 1)
	if err := tr.Put(context.Background(), d, bytes.NewReader(nil), 0); !errors.Is(err, cache.ErrDigestMismatch) {
		t.Fatalf("unexpected error for an empty upload of a non-empty digest; got %v; want cache.ErrDigestMismatch", err)
	}
	if err := tr.Put(context.Background(), d, bytes.NewReader(nil), -1); !errors.Is(err, cache.ErrUnknownSize) {
		t.Fatalf("unexpected error for size -1; got %v; want cache.ErrUnknownSize", err)
	}

	// The aborted multipart uploads are gone too.
	for u := range tr.client.ListIncompleteUploads(context.Background(), testBucket, tr.prefix, true) {
		if u.Err != nil {
			t.Fatalf("cannot list incomplete uploads: %v", u.Err)
		}
		t.Fatalf("unexpected incomplete upload left behind: %s (%s)", u.Key, u.UploadID)
	}
}

func TestPutTwice(t *testing.T) {
	g := startGateway(t)
	tr := g.tier(t, Config{})
	data, d := testBlob(t, 5000, 1)
	mustPut(t, tr, d, data)
	mustPut(t, tr, d, data)
	// The object is there: the second upload does not even read its reader.
	if err := tr.Put(context.Background(), d, iotest.ErrReader(errors.New("read")), int64(len(data))); err != nil {
		t.Fatalf("cannot put an existing blob again: %v", err)
	}
	if got := readBlob(t, tr, d); !bytes.Equal(got, data) {
		t.Fatalf("unexpected bytes after a second Put")
	}

	// An object of the wrong size under d's key (a corrupt upload by some other tool) is replaced.
	key, _ := tr.key(d)
	if _, err := tr.client.PutObject(context.Background(), testBucket, key, bytes.NewReader([]byte("junk")), 4, minio.PutObjectOptions{}); err != nil {
		t.Fatalf("cannot plant a corrupt object: %v", err)
	}
	mustPut(t, tr, d, data)
	if got := readBlob(t, tr, d); !bytes.Equal(got, data) {
		t.Fatalf("unexpected bytes: the corrupt object was not replaced")
	}
}

func TestDelete(t *testing.T) {
	g := startGateway(t)
	tr := g.tier(t, Config{})
	data, d := testBlob(t, 3000, 1)
	mustPut(t, tr, d, data)
	if err := tr.Delete(context.Background(), d); err != nil {
		t.Fatalf("cannot delete: %v", err)
	}
	mustHas(t, tr, d, false)
	if _, _, err := tr.Open(context.Background(), d); !errors.Is(err, cache.ErrNotFound) {
		t.Fatalf("unexpected error opening a deleted blob; got %v; want cache.ErrNotFound", err)
	}
	if err := tr.Delete(context.Background(), d); err != nil {
		t.Fatalf("unexpected error deleting an absent blob: %v", err)
	}
}

// TestTwoReplicas shares one bucket between two Tier values, as two docxy replicas do.
func TestTwoReplicas(t *testing.T) {
	g := startGateway(t)
	a, b := g.tier(t, Config{}), g.tier(t, Config{})

	data, d := testBlob(t, 7000, 1)
	mustHas(t, b, d, false)
	mustPut(t, a, d, data)
	mustHas(t, b, d, true)
	if got := readBlob(t, b, d); !bytes.Equal(got, data) {
		t.Fatalf("unexpected bytes read by the other replica")
	}
	if err := b.Delete(context.Background(), d); err != nil {
		t.Fatalf("cannot delete: %v", err)
	}
	mustHas(t, a, d, false)

	// Both fill the same big blob at once: both succeed and the object is whole.
	data, d = testBlob(t, bigSize, 2)
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, tr := range []*Tier{a, b} {
		wg.Go(func() { errs[i] = tr.Put(context.Background(), d, bytes.NewReader(data), int64(len(data))) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("replica %d: cannot put: %v", i, err)
		}
	}
	if got := readBlob(t, a, d); !bytes.Equal(got, data) {
		t.Fatalf("unexpected bytes after concurrent uploads")
	}

	// A replica with another prefix does not see them.
	mustHas(t, g.tier(t, Config{Prefix: "other/"}), d, false)
}
