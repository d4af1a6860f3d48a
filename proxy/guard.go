package proxy

import (
	"encoding/json"
	"io"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/docxy/docxy/proxy/limit"
	"github.com/docxy/docxy/proxy/oci"
	"github.com/docxy/docxy/proxy/upstream"
	"github.com/valyala/fasthttp"
)

// mirrorService is the token service name of the mirror's own accounts.
const mirrorService = "docxy"

var (
	bodyTooManyRequests     = oci.ErrorBody(oci.ErrorCodeTooManyRequests, "too many requests from your address; slow down and retry after Retry-After seconds")
	bodyTooManyBlobs        = oci.ErrorBody(oci.ErrorCodeTooManyRequests, "too many concurrent downloads from your address; retry when one has finished")
	bodyDailyBudget         = oci.ErrorBody(oci.ErrorCodeTooManyRequests, "your address has used today's download budget on this mirror; it resets at 00:00 UTC")
	bodyLoginRequired       = oci.ErrorBody(oci.ErrorCodeUnauthorized, "this mirror requires an account: docker login with a mirror account")
	bodyBadCredentials      = oci.ErrorBody(oci.ErrorCodeUnauthorized, "incorrect mirror username or password")
	bodyMirrorAccountDenied = oci.ErrorBody(oci.ErrorCodeDenied, "the mirror's upstream account may not pull this repository")
)

// admit applies the per-client request rate. It answers 429 itself and reports false when the
// client is over its limit. Rate limiting comes before authentication, so that a flood of wrong
// passwords cannot burn CPU on bcrypt.
func (h *Handler) admit(ctx *fasthttp.RequestCtx) bool {
	ip := h.clientIP(ctx)
	ok, retry := h.limiter.Allow(ip, ctx.Time())
	if !ok {
		ctx.Response.Header.Set(fasthttp.HeaderRetryAfter, strconv.Itoa(limit.RetryAfterSeconds(retry)))
		writeError(ctx, fasthttp.StatusTooManyRequests, bodyTooManyRequests)
	}
	return ok
}

// clientIP is the peer address, or what X-Forwarded-For says when the peer is a trusted proxy.
func (h *Handler) clientIP(ctx *fasthttp.RequestCtx) netip.Addr {
	peer, _ := netip.AddrFromSlice(ctx.RemoteIP())
	peer = peer.Unmap()
	if len(ctx.Request.Header.Peek("X-Forwarded-For")) == 0 {
		return peer
	}
	return h.limiter.ClientIPLines(peer, ctx.Request.Header.PeekAll("X-Forwarded-For"))
}

// admitBlob takes a download slot and checks the daily byte budget for a blob GET. On success
// it registers a guard that releases the slot and counts the bytes when the body is done.
func (h *Handler) admitBlob(ctx *fasthttp.RequestCtx) (*blobGuard, bool) {
	ip := h.clientIP(ctx)
	if over, retry := h.limiter.OverBudget(ip, ctx.Time()); over {
		ctx.Response.Header.Set(fasthttp.HeaderRetryAfter, strconv.Itoa(limit.RetryAfterSeconds(retry)))
		writeError(ctx, fasthttp.StatusTooManyRequests, bodyDailyBudget)
		return nil, false
	}
	if !h.limiter.AcquireBlob(ip) {
		ctx.Response.Header.Set(fasthttp.HeaderRetryAfter, "1")
		writeError(ctx, fasthttp.StatusTooManyRequests, bodyTooManyBlobs)
		return nil, false
	}
	g := blobGuardPool.Get().(*blobGuard)
	g.lim, g.ip = h.limiter, ip
	ctx.SetUserValue(blobGuardKey, guardRef{g})
	return g, true
}

// finishBlob releases the guard unless a body stream took it over.
func (h *Handler) finishBlob(ctx *fasthttp.RequestCtx, g *blobGuard) {
	ctx.RemoveUserValue(blobGuardKey)
	if !g.attached {
		g.n = int64(len(ctx.Response.Body()))
		_ = g.Close()
	}
}

// setBodyStream sets a response body stream, metering it when the request holds a blob guard.
func setBodyStream(ctx *fasthttp.RequestCtx, r io.Reader, size int) {
	if ref, ok := ctx.UserValue(blobGuardKey).(guardRef); ok && ref.g != nil && !ref.g.attached {
		ref.g.r, ref.g.attached = r, true
		r = ref.g
	}
	ctx.Response.SetBodyStream(r, size)
}

const blobGuardKey = "docxy.blobGuard"

// guardRef keeps the guard in the request's user values without fasthttp closing it at the end
// of the request (it closes user values that are io.Closers); one pointer, so no allocation.
type guardRef struct{ g *blobGuard }

// blobGuard meters a blob body for the per-client limits: it counts the bytes sent and gives the
// download slot back when fasthttp closes the body. WriteTo delegates, so cache hits keep sendfile.
type blobGuard struct {
	lim      *limit.Limiter
	ip       netip.Addr
	r        io.Reader
	n        int64
	attached bool
}

var blobGuardPool = sync.Pool{New: func() any { return new(blobGuard) }}

// Read implements io.Reader.
func (g *blobGuard) Read(p []byte) (int, error) {
	n, err := g.r.Read(p)
	g.n += int64(n)
	return n, err
}

// WriteTo implements io.WriterTo.
func (g *blobGuard) WriteTo(w io.Writer) (int64, error) {
	if wt, ok := g.r.(io.WriterTo); ok {
		n, err := wt.WriteTo(w)
		g.n += n
		return n, err
	}
	n, err := io.Copy(w, struct{ io.Reader }{g.r})
	g.n += n
	return n, err
}

// Close implements io.Closer. It is forbidden to use g after Close.
func (g *blobGuard) Close() error {
	var err error
	if c, ok := g.r.(io.Closer); ok {
		err = c.Close()
	}
	g.lim.AddBytes(g.ip, g.n, time.Now())
	g.lim.ReleaseBlob(g.ip)
	*g = blobGuard{}
	blobGuardPool.Put(g)
	return err
}

// authorized checks a /v2/ request against the mirror accounts.
func (h *Handler) authorized(ctx *fasthttp.RequestCtx) bool {
	return h.auth.Authorize(ctx.Request.Header.Peek(fasthttp.HeaderAuthorization), ctx.Time())
}

// challengeAccount asks the client to log in with a mirror account.
func (h *Handler) challengeAccount(ctx *fasthttp.RequestCtx, hostMatched bool) {
	c := upstream.Challenge{Scheme: "Bearer", Realm: h.realmBase(ctx, hostMatched) + PathToken, Service: mirrorService}
	if p := ctx.Path(); len(p) > len(prefixV2) {
		if name, kind, _ := oci.ParsePath(p[len(prefixV2):]); kind != oci.KindInvalid {
			c.Scope = "repository:" + string(name) + ":pull"
		}
	}
	ctx.Response.Header.Set(fasthttp.HeaderWWWAuthenticate, c.String())
	writeError(ctx, fasthttp.StatusUnauthorized, bodyLoginRequired)
}

// serveAccountToken is the token endpoint when mirror accounts are on: it checks the client's
// mirror credentials (Basic, or the OAuth2 password/refresh form containerd posts) and issues the
// mirror's own token. Nothing is forwarded upstream.
func (h *Handler) serveAccountToken(ctx *fasthttp.RequestCtx) {
	var user, pass []byte
	ok := false
	if authz := ctx.Request.Header.Peek(fasthttp.HeaderAuthorization); len(authz) > 0 {
		user, pass, ok = h.auth.ParseBasic(authz)
	}
	if !ok && ctx.IsPost() {
		form := ctx.PostArgs()
		switch string(form.Peek("grant_type")) {
		case "password":
			user, pass, ok = form.Peek("username"), form.Peek("password"), true
		case "refresh_token":
			rt := append([]byte("Bearer "), form.Peek("refresh_token")...)
			if u, valid := h.auth.VerifyBearer(rt, ctx.Time()); valid {
				h.writeAccountToken(ctx, string(u))
				return
			}
			ctx.Response.Header.Set(fasthttp.HeaderWWWAuthenticate, `Basic realm="docxy"`)
			writeError(ctx, fasthttp.StatusUnauthorized, bodyBadCredentials)
			return
		}
	}
	if !ok {
		ctx.Response.Header.Set(fasthttp.HeaderWWWAuthenticate, `Basic realm="docxy"`)
		writeError(ctx, fasthttp.StatusUnauthorized, bodyLoginRequired)
		return
	}
	if !h.auth.CheckBasic(user, pass) {
		h.log.Info("mirror login refused", "user", string(user), "remote", ctx.RemoteIP().String())
		ctx.Response.Header.Set(fasthttp.HeaderWWWAuthenticate, `Basic realm="docxy"`)
		writeError(ctx, fasthttp.StatusUnauthorized, bodyBadCredentials)
		return
	}
	h.writeAccountToken(ctx, string(user))
}

func (h *Handler) writeAccountToken(ctx *fasthttp.RequestCtx, user string) {
	token, expiresIn := h.auth.IssueToken(user, ctx.Time())
	ctx.SetContentTypeBytes(contentTypeJSON)
	ctx.Response.Header.Set(fasthttp.HeaderCacheControl, "no-store")
	_ = json.NewEncoder(ctx).Encode(struct {
		Token       string `json:"token"`
		AccessToken string `json:"access_token"`
		ExpiresIn   int    `json:"expires_in"`
		IssuedAt    string `json:"issued_at"`
	}{token, token, expiresIn, ctx.Time().UTC().Format(time.RFC3339)})
}

// useMirrorAccount replaces the client's credentials on an upstream request with the mirror's
// own: with mirror accounts on, the client's token is the mirror's and must never go upstream.
func (h *Handler) useMirrorAccount(req *fasthttp.Request, reg *upstream.Registry, name []byte) (int, error) {
	req.Header.Del(fasthttp.HeaderAuthorization)
	scope := "repository:" + string(name) + ":pull"
	a, account, err := reg.MirrorAuthorization(scope)
	if err != nil {
		return accountClient, err
	}
	if a != "" {
		req.Header.Set(fasthttp.HeaderAuthorization, a)
	}
	return account, nil
}
