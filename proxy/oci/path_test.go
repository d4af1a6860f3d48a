package oci

import (
	"strings"
	"testing"
)

func TestParsePath(t *testing.T) {
	f := func(path, wantName string, wantKind Kind, wantRef string) {
		t.Helper()
		name, kind, ref := ParsePath([]byte(path))
		if string(name) != wantName || kind != wantKind || string(ref) != wantRef {
			t.Fatalf("unexpected ParsePath(%q): got (%q, %s, %q); want (%q, %s, %q)",
				path, name, kind, ref, wantName, wantKind, wantRef)
		}
	}
	f("library/nginx/manifests/latest", "library/nginx", KindManifest, "latest")
	f("nginx/manifests/sha256:abc", "nginx", KindManifest, "sha256:abc")
	f("a/b/c/d/blobs/sha256:0123", "a/b/c/d", KindBlob, "sha256:0123")
	f("org/manifests/manifests/v1", "org/manifests", KindManifest, "v1") // names may contain "manifests"
	f("x/blobs/manifests/1.0", "x/blobs", KindManifest, "1.0")
	f("library/alpine/tags/list", "library/alpine", KindTags, "")
	f("a/referrers/sha256:00", "a", KindReferrers, "sha256:00")
	f("manifests/latest", "", KindInvalid, "")
	f("a/manifests/", "a", KindManifest, "")
	f("", "", KindInvalid, "")
	f("a/b", "", KindInvalid, "")
	f("a/uploads/x", "", KindInvalid, "")
	f("/manifests/x", "", KindManifest, "x")
}

func TestValidName(t *testing.T) {
	f := func(name string, want bool) {
		t.Helper()
		if got := ValidName([]byte(name)); got != want {
			t.Fatalf("unexpected ValidName(%q): got %v; want %v", name, got, want)
		}
	}
	f("nginx", true)
	f("library/nginx", true)
	f("a/b/c/d/e", true)
	f("my-org/my_repo.v2", true)
	f("a__b", true)
	f("a---b", true)
	f("a1/2b", true)
	f("", false)
	f("UPPER", false)
	f("a//b", false)
	f("/a", false)
	f("a/", false)
	f("-a", false)
	f("a-", false)
	f("a___b", false)
	f("a..b", false)
	f("a._b", false)
	f("a b", false)
	f("../etc/passwd", false)
	f("a/.hidden", false)
	f(strings.Repeat("a", 255), true)
	f(strings.Repeat("a", 256), false)
}

func TestValidReference(t *testing.T) {
	hex64 := strings.Repeat("0123456789abcdef", 4)
	hex128 := hex64 + hex64
	f := func(ref string, want bool) {
		t.Helper()
		if got := ValidReference([]byte(ref)); got != want {
			t.Fatalf("unexpected ValidReference(%q): got %v; want %v", ref, got, want)
		}
	}
	f("latest", true)
	f("v1.2.3-rc_1", true)
	f("_x", true)
	f(strings.Repeat("t", 128), true)
	f(strings.Repeat("t", 129), false)
	f(".hidden", false)
	f("-x", false)
	f("a/b", false)
	f("", false)
	f("sha256:"+hex64, true)
	f("sha512:"+hex128, true)
	f("sha256:"+strings.ToUpper(hex64), false)
	f("sha256:"+hex64[:63], false)
	f("sha256:"+hex64+"0", false)
	f("md5:"+hex64, false)
	f("sha256:", false)
	f("sha512:"+hex64, false)
}

func TestErrorCodeStatus(t *testing.T) {
	f := func(c ErrorCode, want int) {
		t.Helper()
		if got := c.Status(); got != want {
			t.Fatalf("unexpected status for %s: got %d; want %d", c, got, want)
		}
	}
	f(ErrorCodeNameInvalid, 400)
	f(ErrorCodeBlobUnknown, 404)
	f(ErrorCodeUnauthorized, 401)
	f(ErrorCodeDenied, 403)
	f(ErrorCodeUnsupported, 405)
	f(ErrorCodeTooManyRequests, 429)
	f(ErrorCodeUnavailable, 503)
	if got, want := string(ErrorBody(ErrorCodeDenied, `rule "x"`)), `{"errors":[{"code":"DENIED","message":"rule \"x\""}]}`; got != want {
		t.Fatalf("unexpected error body: got %s; want %s", got, want)
	}
}

func FuzzParsePath(f *testing.F) {
	for _, s := range []string{"library/nginx/manifests/latest", "a/blobs/sha256:00", "x/tags/list", "a/referrers/", "//", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		name, kind, ref := ParsePath([]byte(p))
		if kind == KindInvalid {
			return
		}
		// What ParsePath returns must be pieces of the input, in order.
		if !strings.HasPrefix(p, string(name)) || !strings.HasSuffix(p, string(ref)) {
			t.Fatalf("ParsePath(%q) = %q, %q: not pieces of the input", p, name, ref)
		}
		if ValidName(name) {
			for _, c := range []string{"..", "//", " "} {
				if strings.Contains(string(name), c) {
					t.Fatalf("ValidName accepted %q", name)
				}
			}
		}
		_ = ValidReference(ref)
		_ = ValidDigest(ref)
	})
}

func FuzzValidName(f *testing.F) {
	for _, s := range []string{"a", "a__b", "a-", "a._b", "a/b", "-", "_", "."} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		if !ValidName([]byte(name)) {
			return
		}
		for _, b := range []byte(name) {
			if !isAlnumLower(b) && !strings.ContainsRune("._-/", rune(b)) {
				t.Fatalf("ValidName accepted byte %q in %q", b, name)
			}
		}
		if strings.HasPrefix(name, "/") || strings.HasSuffix(name, "/") {
			t.Fatalf("ValidName accepted %q", name)
		}
	})
}
