package proxy

import (
	"errors"

	"github.com/docxy/docxy/proxy/oci"
	"github.com/docxy/docxy/proxy/upstream"
	"github.com/valyala/fasthttp"
)

// Prebuilt error bodies, so that the request path never marshals JSON.
var (
	bodyNameInvalid      = oci.ErrorBody(oci.ErrorCodeNameInvalid, "invalid repository name")
	bodyDigestInvalid    = oci.ErrorBody(oci.ErrorCodeDigestInvalid, "invalid digest: want sha256:<64 hex> or sha512:<128 hex>")
	bodyReferenceInvalid = oci.ErrorBody(oci.ErrorCodeManifestInvalid, "invalid reference: want a tag or a digest")
	bodyNotFound         = oci.ErrorBody(oci.ErrorCodeNotFound, "no such endpoint: docxy serves the registry API under /v2/")
	bodyUnsupported      = oci.ErrorBody(oci.ErrorCodeUnsupported, "docxy is a pull-only mirror: push and delete are not supported")
	bodyUnauthorized     = oci.ErrorBody(oci.ErrorCodeUnauthorized, "authentication required")
	bodyUnavailable      = oci.ErrorBody(oci.ErrorCodeUnavailable, "the upstream registry cannot be reached; try again later")
	bodyTimeout          = oci.ErrorBody(oci.ErrorCodeUnavailable, "the upstream registry did not answer in time; try again later")
	bodyBusy             = oci.ErrorBody(oci.ErrorCodeUnavailable, "too many concurrent requests to the upstream registry; try again later")
	bodyTooLarge         = oci.ErrorBody(oci.ErrorCodeSizeInvalid, "the upstream response is larger than docxy accepts for this kind of object")
	bodyNoTokenAuth      = oci.ErrorBody(oci.ErrorCodeNotFound, "this registry does not use token authentication")
	bodyBadRedirect      = oci.ErrorBody(oci.ErrorCodeUnavailable, "the upstream redirected the download somewhere docxy will not follow")
)

var contentTypeJSON = []byte("application/json; charset=utf-8")

// writeError answers with a registry JSON error body.
func writeError(ctx *fasthttp.RequestCtx, status int, body []byte) {
	ctx.Response.Header.SetContentTypeBytes(contentTypeJSON)
	ctx.SetStatusCode(status)
	if ctx.IsHead() {
		ctx.Response.Header.SetContentLength(len(body))
		return
	}
	ctx.SetBody(body)
}

// writeUpstreamError maps a failure to reach the upstream to 502, 504 or 503, as Caddy's
// statusError does: a timeout is the gateway's timeout, a full pool is our own overload.
func writeUpstreamError(ctx *fasthttp.RequestCtx, err error) {
	switch {
	case errors.Is(err, fasthttp.ErrNoFreeConns) || errors.Is(err, fasthttp.ErrConnPoolStrategyNotImpl):
		writeError(ctx, fasthttp.StatusServiceUnavailable, bodyBusy)
	case errors.Is(err, upstream.ErrForbiddenAddress) || errors.Is(err, upstream.ErrTooManyRedirects):
		writeError(ctx, fasthttp.StatusBadGateway, bodyBadRedirect)
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		writeError(ctx, fasthttp.StatusBadGateway, bodyTooLarge)
	case upstream.IsTimeout(err):
		writeError(ctx, fasthttp.StatusGatewayTimeout, bodyTimeout)
	default:
		writeError(ctx, fasthttp.StatusBadGateway, bodyUnavailable)
	}
}
