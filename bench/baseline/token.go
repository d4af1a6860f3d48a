package baseline

import (
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/docxy/docxy/proxy"
	"github.com/docxy/docxy/proxy/upstream"
)

// serveToken relays a token request (GET with query, or the OAuth2 POST form) to the upstream's
// token server, like proxy's serveToken: every scope kept, library/ added where needed, the
// client's credentials passed through, else the mirror's account.
func (h *Handler) serveToken(w http.ResponseWriter, r *http.Request) {
	reg, _ := h.pick(r)
	post := r.Method == http.MethodPost
	var args url.Values
	if post {
		r.Body = http.MaxBytesReader(w, r.Body, maxRequestBodySize)
		if err := r.ParseForm(); err != nil {
			writeJSON(w, r, http.StatusBadRequest, bodyBadTokenRequest)
			return
		}
		args = r.PostForm
	} else {
		args = r.URL.Query()
	}
	if !h.routed(r) {
		if other := h.registryByService(args.Get("service")); other != nil {
			reg = other
		}
	}
	c, err := reg.getChallenge()
	if err != nil {
		h.log.Warn("cannot discover upstream auth", "registry", reg.name, "err", err)
		writeUpstreamError(w, r, err)
		return
	}
	if c.Scheme != "Bearer" {
		writeJSON(w, r, http.StatusNotFound, bodyNoTokenAuth)
		return
	}
	u, err := url.Parse(c.Realm)
	if err != nil {
		h.log.Error("upstream token realm is not a URL", "registry", reg.name, "realm", c.Realm)
		writeJSON(w, r, http.StatusBadGateway, bodyUnavailable)
		return
	}
	params := u.Query()
	hasService := false
	for key, vs := range args {
		for _, v := range vs {
			switch key {
			case "ns":
				continue
			case "service":
				hasService = true
				params.Set("service", c.Service)
				continue
			case "scope":
				params.Add("scope", rewriteScope(reg, v))
				continue
			}
			params.Add(key, v)
		}
	}
	if !hasService && c.Service != "" {
		params.Set("service", c.Service)
	}
	var req *http.Request
	if post {
		req, err = http.NewRequestWithContext(r.Context(), http.MethodPost, u.String(), strings.NewReader(params.Encode()))
		if err == nil {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
	} else {
		u.RawQuery = params.Encode()
		req, err = http.NewRequestWithContext(r.Context(), http.MethodGet, u.String(), nil)
	}
	if err != nil {
		writeJSON(w, r, http.StatusBadGateway, bodyUnavailable)
		return
	}
	req.Header["User-Agent"] = reg.userAgent
	switch auth := r.Header["Authorization"]; {
	case len(auth) > 0:
		req.Header["Authorization"] = auth
	case reg.basicAuth != "" && params.Get("username") == "" && params.Get("refresh_token") == "":
		req.Header.Set("Authorization", reg.basicAuth)
	}
	resp, err := reg.auth.Do(req)
	if err != nil {
		h.log.Warn("token request failed", "registry", reg.name, "realm_host", u.Host, "err", err)
		writeUpstreamError(w, r, err)
		return
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxSmallBodySize+1))
	if err != nil || len(body) > maxSmallBodySize {
		writeJSON(w, r, http.StatusBadGateway, bodyUnavailable)
		return
	}
	out := w.Header()
	for _, k := range []string{"Content-Type", "Www-Authenticate", "Retry-After", "Ratelimit-Limit", "Ratelimit-Remaining"} {
		if v := resp.Header[k]; len(v) > 0 {
			out[k] = v
		}
	}
	out["Cache-Control"] = hvNoStore
	w.WriteHeader(resp.StatusCode)
	_, _ = w.Write(body)
}

// routed reports whether Host or ?ns= chose the registry (proxy's pickRouted).
func (h *Handler) routed(r *http.Request) bool {
	if _, hostMatched := h.pick(r); hostMatched {
		return true
	}
	ns := r.URL.Query().Get("ns")
	return ns != "" && h.byNS[ns] != nil
}

// rewriteScope is proxy's rewriteScope.
func rewriteScope(reg *registry, scope string) string {
	if !reg.libraryPrefix {
		return scope
	}
	return upstream.PrefixScopes(scope)
}

// rewriteChallenge points an upstream 401's realm at the mirror, keeping its service and scope.
func (h *Handler) rewriteChallenge(out http.Header, r *http.Request, reg *registry, hostMatched bool, wa string) {
	c, ok := upstream.ParseChallenge(wa)
	if !ok {
		known, err := reg.getChallenge()
		if err != nil {
			return
		}
		c = known
	}
	if c.Scheme == "Bearer" {
		c.Realm = h.realmBase(r, hostMatched) + proxy.PathToken
	}
	out["Www-Authenticate"] = []string{c.String()}
}
