package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("cannot listen: %s", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// TestSIGHUPReloadsAccessRulesAndSIGTERMStops runs the real main loop: a denied repository is
// allowed after the file changes and SIGHUP arrives, and SIGTERM makes run return.
func TestSIGHUPReloadsAccessRulesAndSIGTERMStops(t *testing.T) {
	port := freePort(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "docxy.toml")
	write := func(deny string) {
		t.Helper()
		cfg := fmt.Sprintf(`
[server]
listen = "127.0.0.1:%d"
shutdown_timeout = "2s"
[cache]
dir = %q
[log]
access_log = false
[[registry]]
name = "hub"
upstream = "http://127.0.0.1:1"
deny = [%s]
`, port, filepath.Join(dir, "cache"), deny)
		if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
			t.Fatalf("cannot write config: %s", err)
		}
	}
	write(`"blocked/**"`)
	cfg, err := loadConfig(path)
	if err != nil {
		t.Fatalf("cannot load config: %s", err)
	}
	done := make(chan error, 1)
	go func() { done <- run(cfg, path) }()

	url := fmt.Sprintf("http://127.0.0.1:%d/v2/blocked/app/manifests/latest", port)
	status := func() int {
		resp, err := http.Get(url)
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	waitFor := func(want int) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for status() != want {
			if time.Now().After(deadline) {
				t.Fatalf("unexpected status for %s: got %d; want %d", url, status(), want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitFor(http.StatusForbidden)

	write("")
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatalf("cannot send SIGHUP: %s", err)
	}
	waitFor(http.StatusBadGateway) // allowed now: the (unreachable) upstream is tried

	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatalf("cannot send SIGTERM: %s", err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run returned an error: %s", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("run did not return after SIGTERM")
	}
}
