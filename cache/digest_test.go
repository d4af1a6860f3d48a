package cache

import (
	"errors"
	"strings"
	"testing"
)

func TestParseDigest(t *testing.T) {
	f := func(s string, wantOK bool) {
		t.Helper()
		d, err := ParseDigest(s)
		db, errb := ParseDigestBytes([]byte(s))
		if d != db || (err == nil) != (errb == nil) {
			t.Fatalf("ParseDigest and ParseDigestBytes disagree on %q: (%v, %v) vs (%v, %v)", s, d, err, db, errb)
		}
		if !wantOK {
			if !errors.Is(err, ErrInvalidDigest) {
				t.Fatalf("unexpected error for %q: got %v; want %v", s, err, ErrInvalidDigest)
			}
			if !d.IsZero() {
				t.Fatalf("unexpected non-zero digest for %q: %v", s, d)
			}
			return
		}
		if err != nil {
			t.Fatalf("unexpected error for %q: %v", s, err)
		}
		if got := d.String(); got != s {
			t.Fatalf("unexpected String(); got %q; want %q", got, s)
		}
		if got := d.Algorithm() + ":" + d.Hex(); got != s {
			t.Fatalf("unexpected Algorithm():Hex(); got %q; want %q", got, s)
		}
	}
	h64 := strings.Repeat("0123456789abcdef", 4)
	f("sha256:"+h64, true)
	f("sha512:"+h64+h64, true)
	f("sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", true)
	f("", false)
	f("sha256", false)
	f("sha256:", false)
	f("sha256:"+h64[:63], false)
	f("sha256:"+h64+"0", false)
	f("sha256:"+strings.ToUpper(h64), false)
	f("sha256:"+h64[:63]+"g", false)
	f("sha512:"+h64, false)
	f("sha256:"+h64+h64, false)
	f("sha384:"+h64+h64[:32], false)
	f("SHA256:"+h64, false)
	f("sha256-"+h64, false)
	f("md5:d41d8cd98f00b204e9800998ecf8427e", false)
	f("blake3:"+h64, false)
	f(" sha256:"+h64[1:], false)
	f("sha256:"+h64[:62]+"\x00a", false)

	if s := (Digest{}).String(); s != "" {
		t.Fatalf("unexpected String() of the zero Digest; got %q; want \"\"", s)
	}
}

// validDigestRef is a slow, obviously correct statement of the grammar ParseDigest accepts.
func validDigestRef(s string) bool {
	algo, h, ok := strings.Cut(s, ":")
	if !ok || (algo != "sha256" || len(h) != 64) && (algo != "sha512" || len(h) != 128) {
		return false
	}
	return strings.Trim(h, "0123456789abcdef") == ""
}

func FuzzParseDigest(f *testing.F) {
	h64 := strings.Repeat("0123456789abcdef", 4)
	for _, s := range []string{"", "sha256:" + h64, "sha512:" + h64 + h64, "sha256:" + strings.ToUpper(h64), "sha256:x", "sha512:" + h64} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseDigest(s)
		if ok := validDigestRef(s); ok != (err == nil) {
			t.Fatalf("unexpected ParseDigest(%q) error: got %v; want valid=%v", s, err, ok)
		}
		db, errb := ParseDigestBytes([]byte(s))
		if d != db || (err == nil) != (errb == nil) {
			t.Fatalf("ParseDigest and ParseDigestBytes disagree on %q", s)
		}
		if err == nil && d.String() != s {
			t.Fatalf("unexpected round trip of %q: got %q", s, d.String())
		}
	})
}
