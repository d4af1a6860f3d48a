#!/usr/bin/env bash
# Reads `go test -bench` output (bench/bench.txt by default) and prints, per case, the medians of
# docxy, net/http and direct (no proxy), the ratios docxy / net/http, and the proxies' own
# allocations per op (the Docxy or NetHTTP row minus the Direct row: client and upstream run in the
# same process). For comparisons between runs use benchstat old.txt new.txt.
#
#   bench/ratios.sh [bench.txt]
set -euo pipefail
awk '
/^Benchmark/ {
	name = $1
	sub(/-[0-9]+$/, "", name)
	sub(/^Benchmark/, "", name)
	side = ""
	if (name ~ /^Docxy/) side = "docxy"
	else if (name ~ /^NetHTTP/) side = "nethttp"
	else if (name ~ /^Direct/) side = "direct"
	else next
	c = name
	sub(/^(Docxy|NetHTTP|Direct)/, "", c)
	if (!(c in seen)) { seen[c] = 1; order[++n] = c }
	for (i = 3; i < NF; i += 2) {
		k = c SUBSEP side SUBSEP $(i + 1)
		vals[k] = vals[k] " " $i
	}
}
function median(s,    a, m, i, j, t) {
	m = split(s, a, " ")
	if (m == 0) return ""
	for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
	return (m % 2) ? a[(m + 1) / 2] : (a[m / 2] + a[m / 2 + 1]) / 2
}
function get(c, side, unit) { return median(vals[c SUBSEP side SUBSEP unit]) }
function ratio(a, b) { return (a == "" || b == "" || b + 0 == 0) ? "-" : sprintf("%.2f", a / b) }
function num(v, f) { return v == "" ? "-" : sprintf(f, v) }
function diff(a, b) { return (a == "" || b == "") ? "-" : sprintf("%.0f", a - b) }
END {
	# A manifest cache hit has no Direct twin of its own: Direct ManifestGet serves the same bytes from
	# memory. Blob cache hits have none (sendfile from a file is not the writev of the fake upstream).
	twin["ManifestCacheHit"] = "ManifestGet"
	f = "%-34s %11s %11s %11s %6s | %11s %11s %6s | %7s %7s | %8s %8s\n"
	printf f, "case (medians)", "docxy", "net/http", "direct", "d/n", "docxy", "net/http", "n/d", "docxy", "net/http", "docxy", "net/http"
	printf f, "", "ns/op", "ns/op", "ns/op", "", "proxy CPU", "proxy CPU", "", "allocs", "allocs", "B/op", "B/op"
	for (i = 1; i <= n; i++) {
		c = order[i]
		t = (c in twin) ? twin[c] : c
		d = get(c, "docxy", "ns/op"); h = get(c, "nethttp", "ns/op"); x = get(c, "direct", "ns/op")
		dc = get(c, "docxy", "cpu-ns/op"); hc = get(c, "nethttp", "cpu-ns/op"); xc = get(t, "direct", "cpu-ns/op")
		da = get(c, "docxy", "allocs/op"); ha = get(c, "nethttp", "allocs/op"); xa = get(t, "direct", "allocs/op")
		db = get(c, "docxy", "B/op"); hb = get(c, "nethttp", "B/op"); xb = get(t, "direct", "B/op")
		label = c
		if (xa == "") { xa = 0; xb = 0; xc = 0; label = c " (raw)" }
		pd = (dc == "") ? "" : dc - xc; ph = (hc == "") ? "" : hc - xc
		printf f, label, num(d, "%.0f"), num(h, "%.0f"), num(x, "%.0f"), ratio(d, h),
			num(pd, "%.0f"), num(ph, "%.0f"), ratio(ph, pd), diff(da, xa), diff(ha, xa), diff(db, xb), diff(hb, xb)
	}
	print ""
	print "ns/op: wall time per op. d/n = docxy / net/http. proxy CPU, allocs, B/op: the whole test process"
	print "(client, proxy, upstream) per op minus the Direct row (the same response without a proxy; for the"
	print "manifest cache hit, Direct ManifestGet), the share of the proxy; n/d = net/http / docxy proxy CPU."
	print "(raw) = no Direct twin: client and upstream costs included."
}' "${1:-bench/bench.txt}"
