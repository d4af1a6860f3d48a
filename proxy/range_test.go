package proxy

import (
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

func TestParseRange(t *testing.T) {
	f := func(h string, size, wantStart, wantN int64, wantStatus int, wantOK bool) {
		t.Helper()
		start, n, status, ok := parseRange([]byte(h), size)
		if ok != wantOK || (ok && (start != wantStart || n != wantN || status != wantStatus)) {
			t.Fatalf("unexpected parseRange(%q, %d): got (%d, %d, %d, %v); want (%d, %d, %d, %v)",
				h, size, start, n, status, ok, wantStart, wantN, wantStatus, wantOK)
		}
	}
	f("", 100, 0, 100, 200, true)
	f("bytes=0-99", 100, 0, 100, 206, true)
	f("bytes=10-19", 100, 10, 10, 206, true)
	f("bytes=10-", 100, 10, 90, 206, true)
	f("bytes=90-200", 100, 90, 10, 206, true)
	f("bytes=-10", 100, 90, 10, 206, true)
	f("bytes=-1000", 100, 0, 100, 206, true)
	f("bytes=0-0", 100, 0, 1, 206, true)
	f("bytes=0-1,5-6", 100, 0, 100, 200, true) // multipart ranges: whole body
	f("items=0-1", 100, 0, 100, 200, true)     // unknown unit: ignored
	f("bytes=100-", 100, 0, 0, 0, false)
	f("bytes=20-10", 100, 0, 0, 0, false)
	f("bytes=-0", 100, 0, 0, 0, false)
	f("bytes=x-1", 100, 0, 0, 0, false)
	f("bytes=5", 100, 0, 0, 0, false)
	f("bytes=99999999999999999999-", 100, 0, 0, 0, false)
}

func FuzzParseRange(f *testing.F) {
	for _, s := range []string{"bytes=0-1", "bytes=-5", "bytes=5-", "bytes=1-0", "bytes=,", ""} {
		f.Add(s, int64(100))
	}
	f.Fuzz(func(t *testing.T, h string, size int64) {
		if size <= 0 {
			return
		}
		start, n, _, ok := parseRange([]byte(h), size)
		if ok && (start < 0 || n <= 0 || start+n > size) {
			t.Fatalf("parseRange(%q, %d) = %d, %d: outside the blob", h, size, start, n)
		}
	})
}

func TestAcceptMask(t *testing.T) {
	f := func(accept string, want byte) {
		t.Helper()
		if got := acceptMask([]byte(accept)); got != want {
			t.Fatalf("unexpected acceptMask(%q): got %05b; want %05b", accept, got, want)
		}
	}
	f("", acceptAll)
	f("application/vnd.docker.distribution.manifest.v2+json", acceptDockerManifest)
	f("application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json", acceptOCIIndex|acceptOCIManifest)
	f("application/vnd.docker.distribution.manifest.v2+json,application/vnd.docker.distribution.manifest.list.v2+json,application/vnd.oci.image.index.v1+json,application/vnd.oci.image.manifest.v1+json", acceptAll)
	f("application/vnd.docker.distribution.manifest.v1+prettyjws, application/vnd.docker.distribution.manifest.v2+json", acceptDockerManifest|acceptOther)
	f("*/*", acceptOther)
}

func TestAppendAcceptJoinsEveryLine(t *testing.T) {
	var h fasthttp.RequestHeader
	h.Add("Accept", "application/vnd.docker.distribution.manifest.v2+json")
	h.Add("Accept", "application/vnd.docker.distribution.manifest.list.v2+json")
	h.Add("User-Agent", "docker/20.10")
	h.Add("Accept", "application/vnd.oci.image.index.v1+json")
	got := string(appendAccept(nil, &h))
	want := "application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.index.v1+json"
	if got != want {
		t.Fatalf("unexpected Accept: got %q; want %q", got, want)
	}
	if m := acceptMask([]byte(got)); m != acceptDockerManifest|acceptDockerList|acceptOCIIndex {
		t.Fatalf("unexpected mask: got %05b", m)
	}
}

func TestStaleManifestAcrossAcceptSets(t *testing.T) {
	mc := newManifestCache(time.Minute, 1<<20)
	prefix := appendManifestKey(nil, "hub", []byte("library/x"), []byte("latest"), 0)
	prefix = prefix[:len(prefix)-1]
	key := append(append([]byte(nil), prefix...), acceptDockerList|acceptDockerManifest|acceptOther)
	mc.put(newManifest(string(key), []byte("{}"), mtDockerList, []byte("sha256:x"), 2))
	if m := mc.acceptable(prefix, acceptAll); m == nil {
		t.Fatalf("a client accepting manifest lists did not find the cached list")
	}
	if m := mc.acceptable(prefix, acceptOCIIndex|acceptOCIManifest); m != nil {
		t.Fatalf("an OCI-only client got a Docker manifest list")
	}
}
