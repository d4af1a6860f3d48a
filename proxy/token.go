package proxy

import (
	"net/url"

	"github.com/docxy/docxy/proxy/upstream"
	"github.com/valyala/fasthttp"
)

// serveToken relays a token request (GET with query, or the OAuth2 POST form that containerd and
// docker login use) to the upstream's token server, so clients never need to reach it themselves.
// Every scope is kept (containerd sends several), library/ is added where the registry needs it,
// and the client's own credentials pass through; without them the mirror's account is used.
func (h *Handler) serveToken(ctx *fasthttp.RequestCtx) {
	if h.auth != nil {
		h.serveAccountToken(ctx)
		return
	}
	reg, hostMatched := h.pick(ctx)
	post := ctx.IsPost()
	var args *fasthttp.Args
	if post {
		args = ctx.PostArgs()
	} else {
		args = ctx.QueryArgs()
	}
	// A registry named by Host or ?ns= wins; else the token request's service may name one.
	if !hostMatched && h.byNS[string(ctx.QueryArgs().Peek("ns"))] == nil {
		if r := h.registryByService(string(args.Peek("service"))); r != nil {
			reg = r
		}
	}
	c, err := reg.Challenge()
	if err != nil {
		h.log.Warn("cannot discover upstream auth", "registry", reg.Name, "err", err)
		writeUpstreamError(ctx, err)
		return
	}
	if c.Scheme != "Bearer" {
		writeError(ctx, fasthttp.StatusNotFound, bodyNoTokenAuth)
		return
	}
	u, err := url.Parse(c.Realm)
	if err != nil {
		h.log.Error("upstream token realm is not a URL", "registry", reg.Name, "realm", c.Realm)
		writeError(ctx, fasthttp.StatusBadGateway, bodyUnavailable)
		return
	}
	params := u.Query()
	hasService := false
	for k, v := range args.All() {
		key := string(k)
		switch key {
		case "ns":
			continue // ours (containerd's routing hint), not the token server's
		case "service":
			hasService = true
			params.Set("service", c.Service)
			continue
		case "scope":
			params.Add("scope", rewriteScope(reg, string(v)))
			continue
		}
		params.Add(key, string(v))
	}
	if !hasService && c.Service != "" {
		params.Set("service", c.Service)
	}

	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	if post {
		req.Header.SetMethod(fasthttp.MethodPost)
		req.Header.SetContentType("application/x-www-form-urlencoded")
		req.SetBodyString(params.Encode())
	} else {
		u.RawQuery = params.Encode()
	}
	req.SetRequestURI(u.String())
	switch auth := ctx.Request.Header.Peek(fasthttp.HeaderAuthorization); {
	case len(auth) > 0:
		req.Header.SetBytesV(fasthttp.HeaderAuthorization, auth)
	case reg.HasAccount() && params.Get("username") == "" && params.Get("refresh_token") == "":
		// An anonymous client borrows the mirror's own upstream account (and its higher rate limit).
		basic, _ := reg.BasicAuth()
		req.Header.Set(fasthttp.HeaderAuthorization, basic)
	}
	if err := reg.DoAuth(req, resp); err != nil {
		h.log.Warn("token request failed", "registry", reg.Name, "realm_host", u.Host, "err", err)
		writeUpstreamError(ctx, err)
		return
	}
	ctx.SetStatusCode(resp.StatusCode())
	if ct := resp.Header.ContentType(); len(ct) > 0 {
		ctx.Response.Header.SetContentTypeBytes(ct)
	}
	if wa := resp.Header.Peek(fasthttp.HeaderWWWAuthenticate); len(wa) > 0 {
		ctx.Response.Header.SetBytesV(fasthttp.HeaderWWWAuthenticate, wa)
	}
	for _, name := range []string{fasthttp.HeaderRetryAfter, "Ratelimit-Limit", "Ratelimit-Remaining"} {
		if v := resp.Header.Peek(name); len(v) > 0 {
			ctx.Response.Header.SetBytesV(name, v)
		}
	}
	ctx.Response.Header.Set(fasthttp.HeaderCacheControl, "no-store")
	ctx.SetBody(resp.Body())
}

// rewriteScope adds library/ to official-image scopes of registries that need it. A scope value
// may itself hold several space-separated scopes.
func rewriteScope(reg *upstream.Registry, scope string) string {
	if !reg.LibraryPrefix {
		return scope
	}
	return upstream.PrefixScopes(scope)
}
