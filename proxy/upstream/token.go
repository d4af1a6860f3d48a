package upstream

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
)

const (
	// minTokenLifetime is what the token spec says to assume when expires_in is missing.
	minTokenLifetime = 60 * time.Second
	// tokenRefreshMargin renews a cached token before it expires mid-request.
	tokenRefreshMargin = 10 * time.Second
	maxCachedTokens    = 4096
)

// TokenResponse is a token server's answer.
// See https://distribution.github.io/distribution/spec/auth/token/#token-response-fields.
type TokenResponse struct {
	Token       string `json:"token"`
	AccessToken string `json:"access_token"`
	ExpiresIn   int    `json:"expires_in"`
}

// ErrTokenDenied is returned when the token server refuses the mirror's own credentials a token
// for a scope: the content is private to other accounts.
var ErrTokenDenied = errors.New("upstream: the token server refused the mirror's credentials")

type token struct {
	value   string // "Bearer ..."
	expires time.Time
	account int // index of the mirror account it was issued to, -1 for anonymous
}

type tokenCache struct {
	mu sync.RWMutex // protects m
	m  map[string]token
}

// MirrorAuthorization returns the Authorization value the mirror uses on its own behalf for
// scope (e.g. "repository:library/nginx:pull"): a Bearer token fetched anonymously or with one of
// the mirror's configured accounts (in turn), cached until shortly before it expires, and the
// index of that account (-1: anonymous). It returns "" when the registry needs no auth.
func (r *Registry) MirrorAuthorization(scope string) (string, int, error) {
	c, err := r.Challenge()
	if err != nil {
		return "", -1, err
	}
	switch c.Scheme {
	case "":
		return "", -1, nil
	case "Basic":
		a, i := r.BasicAuth()
		return a, i, nil
	}
	now := time.Now()
	r.tokens.mu.RLock()
	t, ok := r.tokens.m[scope]
	r.tokens.mu.RUnlock()
	if ok && now.Before(t.expires) {
		return t.value, t.account, nil
	}
	t, err = r.fetchToken(c, scope)
	if err != nil {
		return "", -1, err
	}
	r.tokens.mu.Lock()
	if len(r.tokens.m) >= maxCachedTokens {
		for k, v := range r.tokens.m {
			if now.After(v.expires) {
				delete(r.tokens.m, k)
			}
		}
		if len(r.tokens.m) >= maxCachedTokens {
			clear(r.tokens.m)
		}
	}
	r.tokens.m[scope] = t
	r.tokens.mu.Unlock()
	return t.value, t.account, nil
}

func (r *Registry) fetchToken(c Challenge, scope string) (token, error) {
	u, err := url.Parse(c.Realm)
	if err != nil {
		return token{}, fmt.Errorf("cannot parse token realm %q: %w", c.Realm, err)
	}
	q := u.Query()
	if c.Service != "" {
		q.Set("service", c.Service)
	}
	if scope != "" {
		q.Set("scope", scope)
	}
	u.RawQuery = q.Encode()
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI(u.String())
	basic, account := r.BasicAuth()
	if basic != "" {
		req.Header.Set(fasthttp.HeaderAuthorization, basic)
	}
	if err := r.auth.Do(req, resp); err != nil {
		return token{}, fmt.Errorf("cannot fetch token from %s: %w", u.Host, err)
	}
	switch resp.StatusCode() {
	case fasthttp.StatusOK:
	case fasthttp.StatusUnauthorized, fasthttp.StatusForbidden:
		return token{}, fmt.Errorf("%w: status %d for scope %q", ErrTokenDenied, resp.StatusCode(), scope)
	default:
		return token{}, fmt.Errorf("token server %s answered status %d for scope %q", u.Host, resp.StatusCode(), scope)
	}
	var tr TokenResponse
	if err := json.Unmarshal(resp.Body(), &tr); err != nil {
		return token{}, fmt.Errorf("cannot parse token response from %s: %w", u.Host, err)
	}
	v := tr.Token
	if v == "" {
		v = tr.AccessToken
	}
	if v == "" {
		return token{}, fmt.Errorf("token server %s answered without a token", u.Host)
	}
	life := time.Duration(tr.ExpiresIn) * time.Second
	if life < minTokenLifetime {
		life = minTokenLifetime
	}
	return token{value: "Bearer " + v, expires: time.Now().Add(life - tokenRefreshMargin), account: account}, nil
}
