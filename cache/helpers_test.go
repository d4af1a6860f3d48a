package cache

import (
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func newTestStore(t testing.TB, dir string, maxSize int64) *Store {
	t.Helper()
	s, err := Open(Config{Dir: dir, MaxSize: maxSize})
	if err != nil {
		t.Fatalf("cannot open store: %v", err)
	}
	return s
}

// testBlob returns n pseudo-random bytes derived from seed and their sha256 digest.
func testBlob(t testing.TB, n int, seed uint64) ([]byte, Digest) {
	t.Helper()
	data := make([]byte, n)
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	sum := sha256.Sum256(data)
	return data, mustDigest(t, "sha256:"+hex.EncodeToString(sum[:]))
}

func sha512Digest(t testing.TB, data []byte) Digest {
	t.Helper()
	sum := sha512.Sum512(data)
	return mustDigest(t, "sha512:"+hex.EncodeToString(sum[:]))
}

func mustDigest(t testing.TB, s string) Digest {
	t.Helper()
	d, err := ParseDigest(s)
	if err != nil {
		t.Fatalf("cannot parse digest %q: %v", s, err)
	}
	return d
}

// put fills d with data as a leader would and fails the test on any error.
func put(t testing.TB, s *Store, d Digest, data []byte) {
	t.Helper()
	dl, leader := s.Begin(d)
	if !leader {
		t.Fatalf("unexpected follower for %s", d)
	}
	if err := dl.Start(int64(len(data))); err != nil {
		t.Fatalf("cannot start: %v", err)
	}
	if _, err := dl.Write(data); err != nil {
		t.Fatalf("cannot write: %v", err)
	}
	if err := dl.Commit(); err != nil {
		t.Fatalf("cannot commit: %v", err)
	}
}

// readBlob reads a committed blob through Store.Open.
func readBlob(t testing.TB, s *Store, d Digest) []byte {
	t.Helper()
	f, size, err := s.Open(d)
	if err != nil {
		t.Fatalf("cannot open %s: %v", d, err)
	}
	defer f.Close()
	data, err := io.ReadAll(f)
	if err != nil {
		t.Fatalf("cannot read %s: %v", d, err)
	}
	if int64(len(data)) != size {
		t.Fatalf("unexpected size of %s: got %d bytes; Open said %d", d, len(data), size)
	}
	return data
}

// tempFiles lists the store's files in dir/tmp.
func tempFiles(t testing.TB, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(filepath.Join(dir, "tmp"))
	if err != nil {
		t.Fatalf("cannot read tmp: %v", err)
	}
	var names []string
	for _, de := range des {
		if strings.HasPrefix(de.Name(), tempPrefix) {
			names = append(names, de.Name())
		}
	}
	return names
}

func blobFile(dir string, d Digest) string {
	h := d.Hex()
	return filepath.Join(dir, "blobs", d.Algorithm(), h[:2], h)
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return !errors.Is(err, os.ErrNotExist)
}
