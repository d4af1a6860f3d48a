package proxy

import (
	"bytes"
	"context"
	"fmt"
	"image/png"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/docxy/docxy/config"
	"github.com/valyala/fasthttp"
)

// serveOnLoopback serves h on 127.0.0.1 and returns the base URL.
func serveOnLoopback(t *testing.T, h *Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("cannot listen: %s", err)
	}
	s := &fasthttp.Server{Handler: h.ServeHTTP}
	go func() { _ = s.Serve(ln) }()
	t.Cleanup(func() { _ = s.Shutdown() })
	return "http://" + ln.Addr().String()
}

func frontPageHandler(t *testing.T, publicURL string) *Handler {
	t.Helper()
	cfg, err := config.Parse([]byte(fmt.Sprintf(`
[server]
public_base_url = %q
[cache]
dir = %q
[[registry]]
name = "docker.io"
upstream = "http://127.0.0.1:1"
library_prefix = true
default = true
[[registry]]
name = "ghcr.io"
upstream = "http://127.0.0.1:2"
hosts = ["ghcr.mirror.test"]
`, publicURL, t.TempDir())), "test")
	if err != nil {
		t.Fatalf("cannot parse config: %s", err)
	}
	h, err := New(cfg, Options{Version: "test"})
	if err != nil {
		t.Fatalf("cannot build handler: %s", err)
	}
	h.metrics.activity.pulled("docker.io\x00library/nginx")
	h.metrics.activity.request(time.Now(), 1<<20)
	return h
}

func TestFrontPageShowsThisMirror(t *testing.T) {
	h := frontPageHandler(t, "https://mirror.example.com")
	var ctx fasthttp.RequestCtx
	ctx.Request.SetRequestURI("/")
	ctx.Request.Header.SetHost("evil.example") // never echoed: the page uses public_base_url
	h.ServeHTTP(&ctx)
	body := string(ctx.Response.Body())
	if ctx.Response.StatusCode() != 200 || !strings.HasPrefix(string(ctx.Response.Header.ContentType()), "text/html") {
		t.Fatalf("unexpected response: %d %s", ctx.Response.StatusCode(), ctx.Response.Header.ContentType())
	}
	for _, want := range []string{
		`"registry-mirrors": ["https://mirror.example.com"]`,
		"docker login mirror.example.com",
		"docker pull mirror.example.com/nginx:latest",
		"certs.d/docker.io/hosts.toml", `server = "https://registry-1.docker.io"`,
		"certs.d/ghcr.io/hosts.toml", "ghcr.mirror.test/owner/image:tag",
		"docker.io/library/nginx",
	} {
		if !strings.Contains(body, want) {
			t.Fatalf("front page lacks %q", want)
		}
	}
	if strings.Contains(body, "evil.example") || strings.Contains(body, "insecure-registries") {
		t.Fatalf("front page echoes the Host header or calls an https mirror insecure")
	}
	for _, external := range []string{"<script src", "<link rel=\"stylesheet\"", "https://cdn", "//fonts."} {
		if strings.Contains(body, external) {
			t.Fatalf("front page loads an external asset: %q", external)
		}
	}
}

// TestFrontPageInChromium renders the page in headless Chromium (Debian's package) and checks the
// DOM it built and the screenshot it took.
func TestFrontPageInChromium(t *testing.T) {
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		if testing.Short() {
			t.Skip("chromium not installed")
		}
		t.Fatalf("chromium is not installed: run `make tools` (apt-get install chromium)")
	}
	h := frontPageHandler(t, "http://localhost:5000")
	url := serveOnLoopback(t, h) + "/"
	run := func(args ...string) []byte {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		base := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
			"--disable-background-networking", "--disable-component-update", "--disable-sync",
			"--user-data-dir=" + t.TempDir()}
		out, err := exec.CommandContext(ctx, chromium, append(base, args...)...).Output()
		if err != nil {
			t.Fatalf("chromium %v failed: %s", args, err)
		}
		return out
	}
	dom := run("--dump-dom", url)
	for _, want := range []string{"docxy registry mirror", `"registry-mirrors": ["http://localhost:5000"]`, `"insecure-registries": ["localhost:5000"]`, "<rect"} {
		if !bytes.Contains(dom, []byte(want)) {
			t.Fatalf("rendered DOM lacks %q", want)
		}
	}
	shot := filepath.Join(t.TempDir(), "front.png")
	run("--screenshot="+shot, "--window-size=1200,900", url)
	f, err := os.Open(shot)
	if err != nil {
		t.Fatalf("no screenshot: %s", err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("screenshot is not a PNG: %s", err)
	}
	if b := img.Bounds(); b.Dx() != 1200 || b.Dy() != 900 {
		t.Fatalf("unexpected screenshot size: got %v; want 1200x900", b)
	}
	// The dark header band and the light page must both be there: a blank or error page is uniform.
	dark, light := 0, 0
	for y := 0; y < 900; y += 10 {
		for x := 0; x < 1200; x += 10 {
			r, g, b, _ := img.At(x, y).RGBA()
			switch lum := (r + g + b) / 3 >> 8; {
			case lum < 60:
				dark++
			case lum > 200:
				light++
			}
		}
	}
	if dark < 200 || light < 2000 {
		t.Fatalf("screenshot does not look like the front page: %d dark and %d light samples", dark, light)
	}
	if os.Getenv("DOCXY_KEEP_SCREENSHOT") != "" {
		data, _ := os.ReadFile(shot)
		_ = os.WriteFile(os.Getenv("DOCXY_KEEP_SCREENSHOT"), data, 0o644)
	}
}
