package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

const daemonStartTimeout = 60 * time.Second

// proxyEnv makes any fallback to Docker Hub fail on loopback, so that a passing pull proves the
// mirror served it.
var proxyEnv = []string{
	"HTTP_PROXY=http://127.0.0.1:9", "HTTPS_PROXY=http://127.0.0.1:9", "NO_PROXY=localhost,127.0.0.1",
	"http_proxy=http://127.0.0.1:9", "https_proxy=http://127.0.0.1:9", "no_proxy=localhost,127.0.0.1",
}

// dockerEnv is the one dockerd of the package, configured with the shared docxy as its mirror.
type dockerEnv struct {
	sock   string
	mirror *mirror
	docker string // CLI
	proc   *proc
}

var theDockerd struct {
	once sync.Once
	d    *dockerEnv
	err  error
}

// getDockerd starts dockerd once for the package (it is the slowest part).
func getDockerd(t *testing.T) *dockerEnv {
	t.Helper()
	dockerdBin := needTool(t, "dockerd")
	dockerBin := needTool(t, "docker")
	needTool(t, "containerd") // dockerd starts its own
	needTool(t, "runc")
	m := sharedMirror(t)
	theDockerd.once.Do(func() {
		start := time.Now()
		theDockerd.d, theDockerd.err = startDockerd(dockerdBin, dockerBin, m)
		if theDockerd.err == nil {
			t.Logf("dockerd ready in %s (mirror %s)", time.Since(start).Round(time.Millisecond), m.URL)
		}
	})
	if theDockerd.err != nil {
		t.Fatalf("cannot start dockerd: %v", theDockerd.err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("dockerd log (%s) tail:\n%s", theDockerd.d.proc.logPath, theDockerd.d.proc.LogTail(30))
		}
	})
	return theDockerd.d
}

func startDockerd(dockerdBin, dockerBin string, m *mirror) (*dockerEnv, error) {
	dir := filepath.Join(tmpRoot, "dockerd")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	cfg, _ := json.Marshal(map[string]any{
		"registry-mirrors":    []string{m.URL},
		"insecure-registries": []string{m.Host},
	})
	if err := os.WriteFile(filepath.Join(dir, "daemon.json"), cfg, 0o644); err != nil {
		return nil, err
	}
	d := &dockerEnv{sock: filepath.Join(dir, "sock"), mirror: m, docker: dockerBin}
	p, err := startProc("dockerd", filepath.Join(dir, "dockerd.log"), proxyEnv, dockerdBin,
		"--config-file", filepath.Join(dir, "daemon.json"),
		"--data-root", filepath.Join(dir, "data"),
		"--exec-root", filepath.Join(dir, "exec"),
		"--pidfile", filepath.Join(dir, "pid"),
		"-H", "unix://"+d.sock,
		"--iptables=false", "--ip6tables=false", "--bridge=none", "--storage-driver=vfs")
	if err != nil {
		return nil, err
	}
	d.proc = p
	atTeardown(func() {
		if err := p.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "e2e:", err)
		}
	})
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", d.sock)
		},
	}}
	if err := waitReady(p, daemonStartTimeout, httpStatusIs(client, "http://docker/_ping", http.StatusOK)); err != nil {
		return nil, err
	}
	return d, nil
}

// run runs the docker CLI against this daemon with the given client config dir.
func (d *dockerEnv) run(t *testing.T, configDir string, args ...string) (string, error) {
	t.Helper()
	start := time.Now()
	env := []string{"DOCKER_HOST=unix://" + d.sock, "DOCKER_CONFIG=" + configDir}
	out, err := runCmd(context.Background(), clientTimeout, env, append([]string{d.docker}, args...)...)
	t.Logf("docker %s: %s", strings.Join(args, " "), time.Since(start).Round(time.Millisecond))
	return strings.TrimSpace(out), err
}

// TestDockerPull: `docker pull hello:latest` with registry-mirrors pointing at docxy.
func TestDockerPull(t *testing.T) {
	w := getWorld(t)
	d := getDockerd(t)
	cfg := dockerConfigDir(t, "", "")
	tokMark, cdnMark := w.tokens.Mark(), w.cdn.Mark()
	if _, err := d.run(t, cfg, "pull", "hello:latest"); err != nil {
		// dockerd reports only its failed fallback to Docker Hub; the mirror's answers are in
		// docxy's log, printed below.
		t.Fatalf("docker pull through the mirror failed (registry-1.docker.io in the message means dockerd gave up on docxy and fell back): %v", err)
	}
	got, err := d.run(t, cfg, "image", "inspect", "--format", "{{index .RepoDigests 0}}", "hello:latest")
	if err != nil {
		t.Fatal(err)
	}
	if want := "hello@" + w.seed.Hello.Digest; got != want {
		t.Errorf("RepoDigests[0]: got %q; want %q", got, want)
	}
	list, err := d.run(t, cfg, "images", "--digests", "--format", "{{.Repository}} {{.Tag}} {{.Digest}}")
	if err != nil {
		t.Fatal(err)
	}
	if want := "hello latest " + w.seed.Hello.Digest; !strings.Contains(list, want) {
		t.Errorf("docker images --digests: got\n%s\nwant a line %q", list, want)
	}
	assertOnlyDocxy(t, w, tokMark, cdnMark, false)
}

// TestDockerLoginPrivate: anonymous pull of private/secret through docxy fails; after
// `docker login` to docxy as alice it succeeds.
func TestDockerLoginPrivate(t *testing.T) {
	w := getWorld(t)
	d := getDockerd(t)
	cfg := dockerConfigDir(t, "", "")
	ref := d.mirror.Host + "/" + w.seed.Secret.Ref()
	tokMark, cdnMark := w.tokens.Mark(), w.cdn.Mark()
	if out, err := d.run(t, cfg, "pull", ref); err == nil {
		t.Fatalf("anonymous docker pull %s succeeded; want denied\n%s", ref, out)
	}
	if out, err := d.run(t, cfg, "login", d.mirror.Host, "-u", aliceUser, "-p", "wrong"); err == nil {
		t.Errorf("docker login with a wrong password succeeded; want failure\n%s", out)
	}
	if _, err := d.run(t, cfg, "login", d.mirror.Host, "-u", aliceUser, "-p", alicePass); err != nil {
		t.Fatal(err)
	}
	if _, err := d.run(t, cfg, "pull", ref); err != nil {
		t.Fatal(err)
	}
	got, err := d.run(t, cfg, "image", "inspect", "--format", "{{index .RepoDigests 0}}", ref)
	if err != nil {
		t.Fatal(err)
	}
	if want := d.mirror.Host + "/" + w.seed.Secret.Repo + "@" + w.seed.Secret.Digest; got != want {
		t.Errorf("RepoDigests[0]: got %q; want %q", got, want)
	}
	if _, err := d.run(t, cfg, "logout", d.mirror.Host); err != nil {
		t.Error(err)
	}
	users := map[string]int{}
	for _, r := range w.tokens.Since(tokMark) {
		users[r.User]++
	}
	if users[aliceUser] == 0 {
		t.Errorf("token server saw no request authenticated as alice (saw %v); docxy must pass the client's credentials", users)
	}
	assertOnlyDocxy(t, w, tokMark, cdnMark, false)
}

// TestContainerdPull: ctr pulls docker.io/library/hello:latest through a hosts.toml mirror.
func TestContainerdPull(t *testing.T) {
	w := getWorld(t)
	containerdBin := needTool(t, "containerd")
	ctrBin := needTool(t, "ctr")
	m := sharedMirror(t)
	dir, err := os.MkdirTemp(tmpRoot, "ctrd-") // short: unix socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "c.sock")
	cfg := fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = %q
[ttrpc]
  address = %q
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), sock, sock+".ttrpc")
	cfgPath := filepath.Join(dir, "config.toml")
	os.WriteFile(cfgPath, []byte(cfg), 0o644)
	hostsDir := filepath.Join(dir, "certs.d")
	os.MkdirAll(filepath.Join(hostsDir, "docker.io"), 0o755)
	hosts := fmt.Sprintf("server = \"http://127.0.0.1:9\"\n\n[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n", m.URL)
	os.WriteFile(filepath.Join(hostsDir, "docker.io", "hosts.toml"), []byte(hosts), 0o644)

	p, err := startProc("containerd", filepath.Join(dir, "containerd.log"), proxyEnv, containerdBin, "--config", cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("containerd log tail:\n%s", p.LogTail(20))
		}
		p.Stop()
	})
	ctr := func(timeout time.Duration, args ...string) (string, error) {
		return runCmd(context.Background(), timeout, proxyEnv, append([]string{ctrBin, "--address", sock, "--namespace", "e2e"}, args...)...)
	}
	if err := waitReady(p, daemonStartTimeout, func() error { _, err := ctr(5*time.Second, "version"); return err }); err != nil {
		t.Fatal(err)
	}

	tokMark, cdnMark := w.tokens.Mark(), w.cdn.Mark()
	ref := "docker.io/" + w.seed.Hello.Ref()
	start := time.Now()
	if _, err := ctr(clientTimeout, "images", "pull", "--hosts-dir", hostsDir, "--snapshotter", "native", ref); err != nil {
		t.Fatal(err)
	}
	t.Logf("ctr images pull %s: %s", ref, time.Since(start).Round(time.Millisecond))
	out, err := ctr(clientTimeout, "images", "ls")
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 && f[0] == ref {
			found = true
			if f[2] != w.seed.Hello.Digest {
				t.Errorf("ctr images ls: %s has digest %s; want %s", ref, f[2], w.seed.Hello.Digest)
			}
		}
	}
	if !found {
		t.Errorf("ctr images ls has no %s:\n%s", ref, out)
	}
	assertOnlyDocxy(t, w, tokMark, cdnMark, false)
}
