package s3

import (
	"context"
	"strings"
	"testing"
)

func TestNewValidates(t *testing.T) {
	f := func(cfg Config, wantErr string) {
		t.Helper()
		_, err := New(cfg)
		if err == nil || !strings.HasPrefix(err.Error(), "s3: cannot ") || !strings.Contains(err.Error(), wantErr) {
			t.Fatalf("unexpected error for %+v; got %v; want one containing %q", cfg, err, wantErr)
		}
	}
	f(Config{Bucket: "b"}, "empty endpoint")
	f(Config{Endpoint: "https://s3.amazonaws.com", Bucket: "b"}, `without "https://"`)
	f(Config{Endpoint: "s3.amazonaws.com/b", Bucket: "b"}, "without a path")
	f(Config{Endpoint: "s3.amazonaws.com"}, "bucket name")
	f(Config{Endpoint: "s3.amazonaws.com", Bucket: "No_Such"}, "bucket name")
	f(Config{Endpoint: "s3.amazonaws.com", Bucket: "b-1", AccessKey: "k"}, "access_key and secret_key")
}

func TestNewDefaults(t *testing.T) {
	f := func(prefix, want string) {
		t.Helper()
		tr, err := New(Config{Endpoint: "127.0.0.1:9000", Bucket: "bucket", Prefix: prefix})
		if err != nil {
			t.Fatalf("cannot create tier: %v", err)
		}
		if tr.prefix != want {
			t.Fatalf("unexpected prefix for %q; got %q; want %q", prefix, tr.prefix, want)
		}
	}
	f("", "docxy/")
	f("docxy/", "docxy/")
	f("mirror", "mirror/")
	f("/a/b", "a/b/")
	f("/", "")
}

func TestCheck(t *testing.T) {
	g := startGateway(t)
	if err := g.tier(t, Config{}).Check(context.Background()); err != nil {
		t.Fatalf("unexpected error checking a good bucket: %v", err)
	}
	f := func(cfg Config, want ...string) {
		t.Helper()
		err := g.tier(t, cfg).Check(context.Background())
		if err == nil {
			t.Fatalf("unexpected success checking %+v", cfg)
		}
		if !strings.HasPrefix(err.Error(), "s3: cannot ") {
			t.Fatalf("unexpected error prefix; got %q", err)
		}
		for _, w := range want {
			if !strings.Contains(err.Error(), w) {
				t.Fatalf("unexpected error; got %q; want it to contain %q", err, w)
			}
		}
	}
	f(Config{Bucket: "no-such-bucket"}, `bucket "no-such-bucket"`, "does not exist", "cache.s3.bucket")
	f(Config{SecretKey: "wrong", AccessKey: testAccessKey}, "access_key", "secret_key")
	f(Config{Endpoint: g.endpoint, Insecure: false}, "cache.s3.insecure = true")
	f(Config{Endpoint: freeAddr(t), Insecure: true}, "unreachable", "cache.s3.endpoint")
}
