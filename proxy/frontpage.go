package proxy

import (
	_ "embed"
	"fmt"
	"html/template"
	"strings"
	"time"

	"github.com/valyala/fasthttp"
)

//go:embed frontpage.html
var frontPageHTML string

var frontPage = template.Must(template.New("front").Parse(frontPageHTML))

type frontRegistry struct {
	Name, Upstream, Namespace string
	Examples                  []string
}

type frontBar struct{ X, Y, H float64 }

type frontPageData struct {
	BaseURL, Host, Version      string
	Insecure                    bool
	Registries                  []frontRegistry
	Uptime, HitRatio, CacheSize string
	CacheEntries                int
	BytesServed                 string
	Requests                    int64
	Bars                        []frontBar
	Peak                        int64
	Top                         []repoPulls
}

// serveFrontPage shows a person how to use this mirror, with its own URL filled in, and how it
// is doing. Everything is inline: the mirror's users may be unable to reach any CDN.
func (h *Handler) serveFrontPage(ctx *fasthttp.RequestCtx) {
	reg, hostMatched := h.pick(ctx)
	base := h.realmBase(ctx, hostMatched)
	host := strings.TrimPrefix(strings.TrimPrefix(base, "https://"), "http://")
	d := frontPageData{BaseURL: base, Host: host, Version: h.version, Insecure: strings.HasPrefix(base, "http://")}
	for _, r := range h.registries {
		fr := frontRegistry{Name: r.Name, Upstream: r.BaseURL(), Namespace: r.Name}
		if r.Name == "docker.io" || r.Host == "registry-1.docker.io" {
			fr.Upstream, fr.Namespace = "https://registry-1.docker.io", "docker.io"
		}
		switch {
		case r == h.def && r.LibraryPrefix:
			fr.Examples = []string{host + "/nginx:latest", host + "/library/alpine:3"}
		case r == h.def:
			fr.Examples = []string{host + "/owner/image:tag"}
		}
		for name, hr := range h.byHost {
			if hr == r && hr != reg {
				fr.Examples = append(fr.Examples, name+"/owner/image:tag")
			}
		}
		d.Registries = append(d.Registries, fr)
	}
	s := h.Stats()
	d.Uptime = formatDuration(time.Since(h.started))
	d.HitRatio = fmt.Sprintf("%.0f%%", 100*s.HitRatio)
	d.CacheSize = formatBytes(s.Blobs.Bytes + s.Manifests.Bytes)
	d.CacheEntries = s.Blobs.Entries
	a := h.metrics.activity
	d.BytesServed = formatBytes(a.bytes.Load())
	d.Requests = a.requests.Load()
	counts := a.perMinute(time.Now())
	for _, c := range counts {
		d.Peak = max(d.Peak, c)
	}
	for i, c := range counts {
		hgt := 0.0
		if d.Peak > 0 {
			hgt = 86 * float64(c) / float64(d.Peak)
		}
		d.Bars = append(d.Bars, frontBar{X: float64(i) * 10, Y: 89 - hgt, H: hgt})
	}
	d.Top = a.top(10)
	ctx.SetContentType("text/html; charset=utf-8")
	ctx.Response.Header.Set(fasthttp.HeaderCacheControl, "no-store")
	if err := frontPage.Execute(ctx, d); err != nil {
		h.log.Error("cannot render the front page", "err", err)
	}
}

func formatBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func formatDuration(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh %dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd %dh", int(d.Hours())/24, int(d.Hours())%24)
}
