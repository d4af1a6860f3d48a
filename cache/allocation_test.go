//go:build !race

package cache

import (
	"os"
	"testing"
)

func TestOpenHitAllocations(t *testing.T) {
	s := newTestStore(t, t.TempDir(), 0)
	data, d := testBlob(t, 100, 1)
	put(t, s, d, data)
	path := blobFile(s.dir, d)
	base := testing.AllocsPerRun(100, func() {
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
	})
	n := testing.AllocsPerRun(100, func() {
		f, _, err := s.Open(d)
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
	})
	if n > base {
		t.Fatalf("unexpected allocations on an Open hit: got %v; want at most the %v of os.Open", n, base)
	}
}

func TestParseDigestAllocations(t *testing.T) {
	_, d := testBlob(t, 1, 1)
	text, str := d.Append(nil), d.String()
	n := testing.AllocsPerRun(100, func() {
		if _, err := ParseDigestBytes(text); err != nil {
			t.Fatal(err)
		}
		if _, err := ParseDigest(str); err != nil {
			t.Fatal(err)
		}
	})
	if n != 0 {
		t.Fatalf("unexpected allocations in ParseDigest: got %v; want 0", n)
	}
}
