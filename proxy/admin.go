package proxy

import (
	"crypto/subtle"
	"encoding/json"
	"strings"

	"github.com/docxy/docxy/cache"
	"github.com/docxy/docxy/proxy/oci"
	"github.com/valyala/fasthttp"
)

// PathAdminCache serves cache statistics (GET) and purges (DELETE). It exists only when
// [admin] token is set, and answers only requests bearing that token.
const PathAdminCache = "/admin/cache"

var (
	bodyAdminDenied   = oci.ErrorBody(oci.ErrorCodeUnauthorized, "admin endpoints need Authorization: Bearer <admin token>")
	bodyAdminNoCache  = oci.ErrorBody(oci.ErrorCodeUnsupported, "the cache is disabled")
	bodyAdminBadPurge = oci.ErrorBody(oci.ErrorCodeUnsupported, "purge needs ?digest=sha256:..., or ?registry=NAME&repository=REPO[&reference=TAG]")
)

// CacheStats is what GET /admin/cache reports.
type CacheStats struct {
	Blobs struct {
		Bytes     int64  `json:"bytes"`
		Entries   int    `json:"entries"`
		Hits      uint64 `json:"hits"`
		Misses    uint64 `json:"misses"`
		InFlight  int    `json:"in_flight"`
		Evictions uint64 `json:"evictions"`
		// SharedHits counts blobs filled from the shared tier instead of the upstream;
		// SharedUploads, blobs this replica put there.
		SharedHits    int64 `json:"shared_hits"`
		SharedUploads int64 `json:"shared_uploads"`
	} `json:"blobs"`
	Manifests struct {
		Bytes   int64 `json:"bytes"`
		Entries int   `json:"entries"`
		Hits    int64 `json:"hits"`
		Misses  int64 `json:"misses"`
		Stale   int64 `json:"stale"`
	} `json:"manifests"`
	// HitRatio is the share of blob and manifest requests served from the cache.
	HitRatio float64 `json:"hit_ratio"`
}

// Stats returns the cache counters; zero when the cache is disabled.
func (h *Handler) Stats() CacheStats {
	var s CacheStats
	if h.blobs != nil {
		b := h.blobs.Stats()
		s.Blobs.Bytes, s.Blobs.Entries, s.Blobs.Hits, s.Blobs.Misses = b.Bytes, b.Entries, b.Hits, b.Misses
		s.Blobs.InFlight, s.Blobs.Evictions = b.InFlight, b.Evictions
		s.Blobs.SharedHits, s.Blobs.SharedUploads = h.sharedHits.Load(), h.sharedUploads.Load()
	}
	if h.manifests != nil {
		s.Manifests.Entries, s.Manifests.Bytes = h.manifests.stats()
		s.Manifests.Hits, s.Manifests.Misses, s.Manifests.Stale = h.manifests.hits.Load(), h.manifests.misses.Load(), h.manifests.stale.Load()
	}
	hits := float64(s.Blobs.Hits) + float64(s.Manifests.Hits) + float64(s.Manifests.Stale)
	if total := hits + float64(s.Blobs.Misses) + float64(s.Manifests.Misses); total > 0 {
		s.HitRatio = hits / total
	}
	return s
}

func (h *Handler) adminAuthorized(ctx *fasthttp.RequestCtx) bool {
	got := ctx.Request.Header.Peek(fasthttp.HeaderAuthorization)
	const prefix = "Bearer "
	if h.adminToken == "" || len(got) <= len(prefix) || !strings.EqualFold(string(got[:len(prefix)]), prefix) {
		return false
	}
	return subtle.ConstantTimeCompare(got[len(prefix):], []byte(h.adminToken)) == 1
}

// serveAdminCache: GET reports CacheStats; DELETE purges by digest (blob and manifests), by
// repository, or by repository and tag. Blobs are shared between repositories, so a repository
// purge drops its manifests and leaves shared layers to LRU eviction.
func (h *Handler) serveAdminCache(ctx *fasthttp.RequestCtx) {
	if !h.adminAuthorized(ctx) {
		ctx.Response.Header.Set(fasthttp.HeaderWWWAuthenticate, `Bearer realm="docxy-admin"`)
		writeError(ctx, fasthttp.StatusUnauthorized, bodyAdminDenied)
		return
	}
	if h.manifests == nil && h.blobs == nil {
		writeError(ctx, fasthttp.StatusNotFound, bodyAdminNoCache)
		return
	}
	if !ctx.IsDelete() {
		ctx.SetContentTypeBytes(contentTypeJSON)
		_ = json.NewEncoder(ctx).Encode(h.Stats())
		return
	}
	args := ctx.QueryArgs()
	digest := args.Peek("digest")
	registry, repo, ref := args.Peek("registry"), args.Peek("repository"), args.Peek("reference")
	var purged struct {
		Blobs     int `json:"blobs"`
		Manifests int `json:"manifests"`
	}
	switch {
	case len(digest) > 0:
		d, err := cache.ParseDigestBytes(digest)
		if err != nil {
			writeError(ctx, fasthttp.StatusBadRequest, bodyDigestInvalid)
			return
		}
		if h.blobs != nil && h.blobs.Delete(d) == nil {
			purged.Blobs = 1
		}
		if h.shared != nil {
			if err := h.shared.Delete(ctx, d); err != nil {
				h.log.Warn("cannot purge blob from the shared cache tier", "digest", string(digest), "err", err)
			}
		}
		if h.manifests != nil {
			purged.Manifests = h.manifests.purgeDigest(digest)
		}
	case len(registry) > 0 && len(repo) > 0 && h.manifests != nil:
		for _, r := range h.registries {
			if r.Name == string(registry) {
				repo = r.UpstreamName(nil, repo) // nginx is library/nginx on Docker Hub
			}
		}
		prefix := append(append(append([]byte(nil), registry...), 0), repo...)
		prefix = append(prefix, 0)
		if len(ref) > 0 {
			prefix = append(append(prefix, ref...), 0)
		}
		purged.Manifests = h.manifests.purge(prefix)
	default:
		writeError(ctx, fasthttp.StatusBadRequest, bodyAdminBadPurge)
		return
	}
	h.log.Info("cache purge", "registry", string(registry), "repository", string(repo), "reference", string(ref),
		"digest", string(digest), "blobs", purged.Blobs, "manifests", purged.Manifests)
	if purged.Manifests > 0 {
		// The saved copy must not bring the purged manifests back at the next start.
		if _, err := h.SaveManifests(); err != nil {
			h.log.Warn("cache purge: the saved manifest cache still holds the purged entries", "err", err)
		}
	}
	ctx.SetContentTypeBytes(contentTypeJSON)
	_ = json.NewEncoder(ctx).Encode(purged)
}
