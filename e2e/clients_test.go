package e2e

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	clientTimeout    = 2 * time.Minute // bound for one client command
	bigClientTimeout = 4 * time.Minute // bound for a command that moves the big layer
)

// dockerConfigDir writes a Docker config.json with credentials for the given hosts ("" user means
// anonymous: an empty config) and returns its directory, for DOCKER_CONFIG.
func dockerConfigDir(t *testing.T, user, pass string, hosts ...string) string {
	t.Helper()
	dir := t.TempDir()
	auths := map[string]any{}
	if user != "" {
		for _, h := range hosts {
			auths[h] = map[string]string{"auth": base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))}
		}
	}
	b, _ := json.Marshal(map[string]any{"auths": auths})
	if err := os.WriteFile(filepath.Join(dir, "config.json"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

// craneCmd runs crane with its own DOCKER_CONFIG and any extra environment.
type craneCmd struct {
	bin string
	env []string
}

func newCrane(t *testing.T, user, pass string, hosts ...string) *craneCmd {
	t.Helper()
	return &craneCmd{
		bin: needTool(t, "crane"),
		env: []string{"DOCKER_CONFIG=" + dockerConfigDir(t, user, pass, hosts...)},
	}
}

func (c *craneCmd) run(t *testing.T, timeout time.Duration, args ...string) (string, error) {
	t.Helper()
	start := time.Now()
	out, err := runCmd(context.Background(), timeout, c.env, append([]string{c.bin}, args...)...)
	t.Logf("crane %s: %s", strings.Join(args, " "), time.Since(start).Round(time.Millisecond))
	return strings.TrimSpace(out), err
}

// regClient is a minimal registry client for raw HTTP checks. It performs the Bearer token
// dance against whatever realm the registry names, and never follows redirects, so that a
// redirect handed to the client is visible to the test.
type regClient struct {
	base       string // http://host:port
	user, pass string
	http       *http.Client

	mu     sync.Mutex        // protects tokens
	tokens map[string]string // scope -> "Bearer ..."
	realms []string          // realms the registry named
}

func newRegClient(base, user, pass string, tr http.RoundTripper) *regClient {
	if tr == nil {
		tr = &http.Transport{DisableCompression: true, ResponseHeaderTimeout: 30 * time.Second}
	}
	return &regClient{
		base: base, user: user, pass: pass,
		http: &http.Client{
			Transport:     tr,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		tokens: map[string]string{},
	}
}

// do sends method path with hdr, authorizing for scope when challenged. The caller closes the body.
func (c *regClient) do(ctx context.Context, method, path, scope string, hdr http.Header) (*http.Response, error) {
	for attempt := 0; ; attempt++ {
		req, err := http.NewRequestWithContext(ctx, method, c.base+path, nil)
		if err != nil {
			return nil, err
		}
		for k, v := range hdr {
			req.Header[k] = v
		}
		c.mu.Lock()
		tok := c.tokens[scope]
		c.mu.Unlock()
		if tok != "" {
			req.Header.Set("Authorization", tok)
		}
		resp, err := c.http.Do(req)
		if err != nil {
			return nil, err
		}
		if resp.StatusCode != http.StatusUnauthorized || attempt > 0 {
			return resp, nil
		}
		ch := parseChallenge(resp.Header.Get("WWW-Authenticate"))
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		if ch.scheme != "bearer" || ch.params["realm"] == "" {
			return nil, fmt.Errorf("%s %s: 401 without a Bearer challenge: %q", method, path, resp.Header.Get("WWW-Authenticate"))
		}
		tok, err = c.fetchToken(ctx, ch.params["realm"], ch.params["service"], scope)
		if err != nil {
			return nil, err
		}
		c.mu.Lock()
		c.tokens[scope] = tok
		c.realms = append(c.realms, ch.params["realm"])
		c.mu.Unlock()
	}
}

func (c *regClient) fetchToken(ctx context.Context, realm, service, scope string) (string, error) {
	u, err := url.Parse(realm)
	if err != nil {
		return "", err
	}
	q := u.Query()
	if service != "" {
		q.Set("service", service)
	}
	if scope != "" {
		q.Set("scope", scope)
	}
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return "", err
	}
	if c.user != "" {
		req.SetBasicAuth(c.user, c.pass)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("token %s: status %d: %s", u, resp.StatusCode, body)
	}
	var tr struct {
		Token       string `json:"token"`
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal(body, &tr); err != nil {
		return "", fmt.Errorf("token %s: %w", u, err)
	}
	if tr.Token == "" {
		tr.Token = tr.AccessToken
	}
	return "Bearer " + tr.Token, nil
}

// challenge is a parsed WWW-Authenticate header (one challenge).
type challenge struct {
	scheme string // lower case
	params map[string]string
}

func parseChallenge(h string) challenge {
	ch := challenge{params: map[string]string{}}
	scheme, rest, _ := strings.Cut(strings.TrimSpace(h), " ")
	ch.scheme = strings.ToLower(scheme)
	for rest != "" {
		rest = strings.TrimLeft(rest, " ,")
		k, v, ok := strings.Cut(rest, "=")
		if !ok {
			break
		}
		k = strings.ToLower(strings.TrimSpace(k))
		if strings.HasPrefix(v, `"`) {
			end := strings.IndexByte(v[1:], '"')
			if end < 0 {
				ch.params[k] = v[1:]
				break
			}
			ch.params[k], rest = v[1:1+end], v[2+end:]
		} else {
			val, r, _ := strings.Cut(v, ",")
			ch.params[k], rest = strings.TrimSpace(val), r
		}
	}
	return ch
}

func pullScope(repo string) string { return "repository:" + repo + ":pull" }

// manifestAccept is what a multi-arch aware client sends.
var manifestAccept = strings.Join([]string{
	"application/vnd.oci.image.index.v1+json",
	"application/vnd.docker.distribution.manifest.list.v2+json",
	"application/vnd.oci.image.manifest.v1+json",
	"application/vnd.docker.distribution.manifest.v2+json",
}, ", ")
