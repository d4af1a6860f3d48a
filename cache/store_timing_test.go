package cache

import (
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"testing"
)

// benchSink keeps the compiler from dropping the benchmarked work.
var benchSink atomic.Int64

func BenchmarkOpenHit(b *testing.B) {
	s := newTestStore(b, b.TempDir(), 0)
	const blobs = 64
	ds := make([]Digest, blobs)
	for i := range ds {
		data, d := testBlob(b, 1024, uint64(i))
		put(b, s, d, data)
		ds[i] = d
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		var n int64
		i := 0
		for pb.Next() {
			f, size, err := s.Open(ds[i%blobs])
			if err != nil {
				b.Fatalf("unexpected Open error: %v", err)
			}
			f.Close()
			n += size
			i++
		}
		benchSink.Add(n)
	})
}

func BenchmarkParseDigest(b *testing.B) {
	_, d := testBlob(b, 1, 1)
	text := d.Append(nil)
	b.ReportAllocs()
	b.SetBytes(int64(len(text)))
	b.RunParallel(func(pb *testing.PB) {
		var n int64
		for pb.Next() {
			d, err := ParseDigestBytes(text)
			if err != nil {
				b.Fatalf("unexpected error: %v", err)
			}
			n += int64(d.sum[0])
		}
		benchSink.Add(n)
	})
}

// BenchmarkDownload measures a fill (write, hash, fsync, rename) followed by 4 readers.
func BenchmarkDownload(b *testing.B) {
	for _, size := range []int{64 << 10, 4 << 20} {
		b.Run(fmt.Sprintf("%dKiB", size>>10), func(b *testing.B) {
			data, d := testBlob(b, size, 1)
			const chunk = 32 << 10
			buf := make([]byte, chunk)
			b.ReportAllocs()
			b.SetBytes(int64(size))
			b.ResetTimer()
			for range b.N {
				b.StopTimer()
				s := newTestStore(b, b.TempDir(), 0)
				b.StartTimer()
				dl, _ := s.Begin(d)
				readers := make(chan error, 4)
				for range 4 {
					r := dl.NewReader(0)
					go func() {
						defer r.Close()
						p := make([]byte, chunk)
						for {
							_, err := r.Read(p)
							if err != nil {
								if errors.Is(err, io.EOF) {
									err = nil
								}
								readers <- err
								return
							}
						}
					}()
				}
				if err := dl.Start(int64(size)); err != nil {
					b.Fatal(err)
				}
				for off := 0; off < size; off += chunk {
					n := copy(buf, data[off:])
					if _, err := dl.Write(buf[:n]); err != nil {
						b.Fatal(err)
					}
				}
				if err := dl.Commit(); err != nil {
					b.Fatal(err)
				}
				for range 4 {
					if err := <-readers; err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}
