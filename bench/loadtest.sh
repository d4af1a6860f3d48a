#!/usr/bin/env bash
# Out-of-process load test: docxy, nginx proxy_pass (tuned) and the net/http baseline
# (bench/cmd/baseline), each in turn in front of the same nginx upstream serving static manifests
# and blobs, plus that upstream served directly, plus docxy with its cache on and warmed (every
# request a cache hit), which is compared with nginx serving the same files statically (direct).
# Prints one side-by-side table.
#
#   bench/loadtest.sh            # or: make loadtest; about 14 minutes with the defaults
#
# Everything listens on 127.0.0.1. The server under test runs alone on SERVER_CPU; the load
# generator (wrk, bombardier, curl) and the upstream nginx share LOAD_CPU. Server CPU is read from
# /proc/PID/stat (utime+stime) before and after each run, peak RSS from /proc/PID/status (VmHWM,
# reset per phase through /proc/PID/clear_refs). The script stops only the PIDs it started.
#
# Environment (defaults):
#   DURATION=10      seconds per wrk/bombardier run
#   CONNS=64         connections for manifest HEAD/GET
#   BLOB_CONNS=8     connections for 64 MiB blobs
#   STREAMS=8        concurrent 1 GiB downloads in the memory phase
#   ROUNDS=3         rounds over all targets, each in a rotated order; the table shows medians
#   LOAD_CPU=0 SERVER_CPU=1
#   TARGETS="docxy nginx nethttp direct cache"
#   NGINX_BUFFER=32k nginx proxy_buffer_size (its relay buffer with proxy_buffering off); 32k
#                    matches the 32 KiB that docxy and the baseline copy blobs through
#   TOOLS_BIN=$HOME/.cache/docxy-tools/bin   where bombardier is installed if missing
#   KEEP=0           1 keeps the work directory (configs, logs, data)
#   PROFILE=0        1 runs bench/cmd/docxyprof in place of docxy and writes its CPU and allocation
#                    profiles per round to PROFILE_DIR (/tmp/docxy-profiles): go tool pprof FILE
set -euo pipefail

DURATION=${DURATION:-10}
CONNS=${CONNS:-64}
BLOB_CONNS=${BLOB_CONNS:-8}
STREAMS=${STREAMS:-8}
ROUNDS=${ROUNDS:-3}
LOAD_CPU=${LOAD_CPU:-0}
SERVER_CPU=${SERVER_CPU:-1}
TARGETS=${TARGETS:-"docxy nginx nethttp direct cache"}
TOOLS_BIN=${TOOLS_BIN:-$HOME/.cache/docxy-tools/bin}
NGINX_BUFFER=${NGINX_BUFFER:-32k}
KEEP=${KEEP:-0}
PROFILE=${PROFILE:-0}
PROFILE_DIR=${PROFILE_DIR:-/tmp/docxy-profiles}
GO=${GO:-go}

REPO=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/docxy-loadtest.XXXXXX)
CLK_TCK=$(getconf CLK_TCK)
STARTED=() # PIDs this script started and has not stopped yet
LAST_PID=

log() { printf '%s loadtest: %s\n' "$(date +%T)" "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }

cleanup() {
	local pid i
	for pid in "${STARTED[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
	for pid in "${STARTED[@]}"; do
		for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$pid" 2>/dev/null || true
	done
	if [ "$KEEP" = 1 ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- tools -------------------------------------------------------------------------------------
need_apt=()
command -v nginx >/dev/null || need_apt+=(nginx)
command -v wrk >/dev/null || need_apt+=(wrk)
if [ ${#need_apt[@]} -gt 0 ]; then
	log "installing ${need_apt[*]} with apt-get"
	apt-get install -y "${need_apt[@]}" >&2
fi
BOMBARDIER=$TOOLS_BIN/bombardier
if [ ! -x "$BOMBARDIER" ]; then
	log "installing bombardier into $TOOLS_BIN"
	mkdir -p "$TOOLS_BIN"
	GOBIN=$TOOLS_BIN $GO install github.com/codesenberg/bombardier@v1.2.6 >&2
fi
for t in taskset curl awk sed; do command -v $t >/dev/null || die "$t is required"; done

# ---- helpers -----------------------------------------------------------------------------------
calc() { awk "BEGIN { v = $1; if (v != v) print \"-\"; else printf \"%.${2:-2}f\", v }"; }

free_port() {
	local p
	while :; do
		p=$((20000 + RANDOM % 20000))
		(exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
	done
}

# start CPU LOGFILE CMD...: runs CMD pinned to CPU in the background; sets LAST_PID.
start() {
	local cpu=$1 logfile=$2
	shift 2
	taskset -c "$cpu" "$@" >"$logfile" 2>&1 &
	LAST_PID=$!
	STARTED+=("$LAST_PID")
}

# stop PID: TERM, wait up to 5 s, then KILL; forgets the PID.
stop() {
	local pid=$1 i keep=()
	kill -TERM "$pid" 2>/dev/null || true
	for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	for i in "${STARTED[@]}"; do [ "$i" = "$pid" ] || keep+=("$i"); done
	STARTED=("${keep[@]}")
}

wait_http() { # URL PID LOG: waits up to 10 s for a 200 while PID lives
	local i
	for i in $(seq 100); do
		[ "$(curl -s -o /dev/null -w '%{http_code}' "$1" || true)" = 200 ] && return 0
		kill -0 "$2" 2>/dev/null || die "$1: the server exited: $(tail -3 "$3")"
		sleep 0.1
	done
	die "$1 did not answer 200"
}

# pids_of PID: PID and its children (nginx master and workers).
pids_of() { echo "$1" $(ps -o pid= --ppid "$1" 2>/dev/null || true); }

cpu_ticks() { # PIDS...: utime+stime summed
	local p t=0 v
	for p in "$@"; do
		v=$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | awk '{ print $12 + $13 }') || v=0
		t=$((t + ${v:-0}))
	done
	echo "$t"
}

status_kib() { # FIELD PIDS...: sum of a /proc/PID/status field in KiB
	local f=$1 p t=0 v
	shift
	for p in "$@"; do
		v=$(awk -v f="$f:" '$1 == f { print $2 }' "/proc/$p/status" 2>/dev/null) || v=0
		t=$((t + ${v:-0}))
	done
	echo "$t"
}

reset_hwm() { # PIDS...: VmHWM := VmRSS (Linux >= 4.0)
	local p
	for p in "$@"; do echo 5 >"/proc/$p/clear_refs" 2>/dev/null || HWM_RESET=no; done
}
HWM_RESET=yes

declare -A R # R[target,metric] of the current round
declare -A M # M[target,metric]: the values of every round, space-separated

# record TARGET: derives per-request and per-GiB figures for this round and appends the round to M.
record() {
	local t=$1 k
	R[$t,head.cpu100k]=$(calc "${R[$t,head.cpu]} / ${R[$t,head.req]} * 100000" 3)
	R[$t,head.percore]=$(calc "${R[$t,head.req]} / ${R[$t,head.cpu]}" 0)
	R[$t,get.cpu100k]=$(calc "${R[$t,get.cpu]} / ${R[$t,get.req]} * 100000" 3)
	R[$t,get.percore]=$(calc "${R[$t,get.req]} / ${R[$t,get.cpu]}" 0)
	for k in b64 b1g streams; do
		R[$t,$k.cpugib]=$(calc "${R[$t,$k.cpu]} / (${R[$t,$k.bytes]} / 1073741824)" 3)
	done
	for k in rss_idle rss_small rss_blob rss_before_streams rss_streams; do
		R[$t,$k]=$(calc "${R[$t,$k]} / 1024" 1) # MiB
	done
	for k in "${!R[@]}"; do
		[[ $k == "$t,"* ]] || continue
		M[$k]="${M[$k]:-} ${R[$k]}"
		unset "R[$k]"
	done
}

median() { # VALUES...
	printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}

# ---- content -----------------------------------------------------------------------------------
log "work directory $WORK"
UP_ROOT=$WORK/up
mkdir -p "$UP_ROOT/v2/library/bench/manifests" "$UP_ROOT/v2/library/bench/blobs" "$WORK/nginx-tmp"
head -c $((64 << 20)) /dev/urandom >"$WORK/b64"
for i in $(seq 16); do cat "$WORK/b64"; done >"$WORK/b1g"
printf 'linux/amd64 layer\n' >"$WORK/bcfg"
digest() { echo "sha256:$(sha256sum "$1" | cut -d' ' -f1)"; }
D64=$(digest "$WORK/b64")
D1G=$(digest "$WORK/b1g")
DCFG=$(digest "$WORK/bcfg")
mv "$WORK/b64" "$UP_ROOT/v2/library/bench/blobs/$D64"
mv "$WORK/b1g" "$UP_ROOT/v2/library/bench/blobs/$D1G"
mv "$WORK/bcfg" "$UP_ROOT/v2/library/bench/blobs/$DCFG"
cat >"$UP_ROOT/v2/library/bench/manifests/latest" <<EOF
{
   "schemaVersion": 2,
   "mediaType": "application/vnd.oci.image.manifest.v1+json",
   "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "$DCFG", "size": 18},
   "layers": [
      {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": "$D64", "size": $((64 << 20))},
      {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": "$D1G", "size": $((1 << 30))}
   ],
   "annotations": {"org.opencontainers.image.source": "https://github.com/docxy/docxy", "org.opencontainers.image.revision": "0123456789abcdef0123456789abcdef01234567"}
}
EOF
DMAN=$(digest "$UP_ROOT/v2/library/bench/manifests/latest")
chmod 755 "$WORK"           # nginx workers run as an unprivileged user
chmod -R a+rX "$UP_ROOT"
cat "$UP_ROOT"/v2/library/bench/blobs/* >/dev/null # into the page cache

static_conf() { # PORT: nginx serving $UP_ROOT like a registry without auth
	cat <<EOF
daemon off;
worker_processes 1;
pid $WORK/nginx-$1.pid;
error_log $WORK/nginx-$1.err warn;
events { worker_connections 4096; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    open_file_cache max=64 inactive=300s; # keep the files open: no open/fstat/close per request
    open_file_cache_valid 300s;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    client_body_temp_path $WORK/nginx-tmp/body-$1;
    proxy_temp_path $WORK/nginx-tmp/proxy-$1;
    fastcgi_temp_path $WORK/nginx-tmp/fastcgi-$1;
    uwsgi_temp_path $WORK/nginx-tmp/uwsgi-$1;
    scgi_temp_path $WORK/nginx-tmp/scgi-$1;
    server {
        listen 127.0.0.1:$1 backlog=4096;
        root $UP_ROOT;
        add_header Docker-Distribution-Api-Version registry/2.0 always;
        location = /v2/ { default_type application/json; return 200 '{}'; }
        location /v2/library/bench/manifests/ {
            types { }
            default_type application/vnd.oci.image.manifest.v1+json;
            add_header Docker-Content-Digest $DMAN;
            add_header Docker-Distribution-Api-Version registry/2.0;
        }
        location /v2/library/bench/blobs/ {
            types { }
            default_type application/octet-stream;
        }
    }
}
EOF
}

proxy_conf() { # PORT UPPORT: nginx proxy_pass, tuned for a pass-through mirror
	cat <<EOF
daemon off;
worker_processes 1;
pid $WORK/nginx-$1.pid;
error_log $WORK/nginx-$1.err warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    client_body_temp_path $WORK/nginx-tmp/body-$1;
    proxy_temp_path $WORK/nginx-tmp/proxy-$1;
    fastcgi_temp_path $WORK/nginx-tmp/fastcgi-$1;
    uwsgi_temp_path $WORK/nginx-tmp/uwsgi-$1;
    scgi_temp_path $WORK/nginx-tmp/scgi-$1;
    upstream origin {
        server 127.0.0.1:$2;
        keepalive 256;
        keepalive_requests 10000000;
    }
    server {
        listen 127.0.0.1:$1 backlog=4096;
        location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_buffer_size $NGINX_BUFFER; # the relay buffer with buffering off
            proxy_buffers 4 $NGINX_BUFFER;
            proxy_busy_buffers_size $NGINX_BUFFER;
        }
    }
}
EOF
}

docxy_conf() { # PORT UPPORT [CACHEDIR]: the TOML docxy and the baseline both read; the cache is
	# off unless CACHEDIR is given
	local cache='disabled = true'
	[ -z "${3:-}" ] || cache="dir = \"$3\"
max_size = \"4GiB\"
manifest_ttl = \"1h\""
	cat <<EOF
[server]
listen = "127.0.0.1:$1"
public_base_url = "http://127.0.0.1:$1"

[cache]
$cache

[log]
level = "warn"
access_log = false

[[registry]]
name = "up"
upstream = "http://127.0.0.1:$2"
library_prefix = true
default = true
EOF
}

cat >"$WORK/report.lua" <<'EOF'
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT requests=%d bytes=%.0f duration_us=%.0f p99_us=%.0f errors=%d status_errors=%d\n",
    summary.requests, summary.bytes, summary.duration, latency:percentile(99),
    e.connect + e.read + e.write + e.timeout, e.status))
end
EOF

# ---- binaries ----------------------------------------------------------------------------------
log "building docxy and the net/http baseline"
GIT_REV=$(cd "$REPO" && { git rev-parse --short HEAD 2>/dev/null || echo '?'; } && { git diff --quiet HEAD -- . ':!bench' 2>/dev/null || echo '+changes'; })
GIT_REV=$(echo $GIT_REV | tr -d ' ')
(cd "$REPO" && CGO_ENABLED=0 $GO build -trimpath -ldflags '-s -w' -o "$WORK/docxy" . &&
	CGO_ENABLED=0 $GO build -trimpath -ldflags '-s -w' -o "$WORK/baseline" ./bench/cmd/baseline &&
	CGO_ENABLED=0 $GO build -trimpath -o "$WORK/docxyprof" ./bench/cmd/docxyprof)
if [ "$PROFILE" = 1 ]; then mkdir -p "$PROFILE_DIR"; fi

# ---- upstream ----------------------------------------------------------------------------------
UP=$(free_port)
static_conf "$UP" >"$WORK/upstream.conf"
start "$LOAD_CPU" "$WORK/upstream.log" nginx -p "$WORK/" -e "$WORK/upstream.err" -c "$WORK/upstream.conf"
UP_PID=$LAST_PID
wait_http "http://127.0.0.1:$UP/v2/" "$UP_PID" "$WORK/upstream.err"

# ---- runs --------------------------------------------------------------------------------------
# measure TARGET METRIC PIDS -- CMD...: runs CMD pinned to LOAD_CPU; records server CPU seconds
# in R[TARGET,METRIC.cpu] and the wall time in R[TARGET,METRIC.wall]; CMD's stdout is in $OUT.
measure() {
	local target=$1 metric=$2 pids=() t0 t1 w0 w1
	shift 2
	while [ "$1" != -- ]; do pids+=("$1"); shift; done
	shift
	t0=$(cpu_ticks "${pids[@]}")
	w0=$(date +%s.%N)
	OUT=$(taskset -c "$LOAD_CPU" timeout $((DURATION + 60)) "$@" 2>&1) || log "$target $metric: load tool exited with an error: $OUT"
	w1=$(date +%s.%N)
	t1=$(cpu_ticks "${pids[@]}")
	R[$target,$metric.cpu]=$(calc "($t1 - $t0) / $CLK_TCK" 3)
	R[$target,$metric.wall]=$(calc "$w1 - $w0" 3)
}

wrk_field() { echo "$OUT" | sed -n "s/.*RESULT.* $1=\([0-9.]*\).*/\1/p"; }

run_target() {
	local target=$1 port pid url pids i
	port=$(free_port)
	case $target in
	docxy)
		docxy_conf "$port" "$UP" >"$WORK/docxy.toml"
		if [ "$PROFILE" = 1 ]; then
			start "$SERVER_CPU" "$WORK/docxy.log" "$WORK/docxyprof" -config "$WORK/docxy.toml" \
				-cpuprofile "$PROFILE_DIR/docxy-round$((r + 1)).cpu.pprof" -memprofile "$PROFILE_DIR/docxy-round$((r + 1)).allocs.pprof"
		else
			start "$SERVER_CPU" "$WORK/docxy.log" "$WORK/docxy" -config "$WORK/docxy.toml"
		fi
		;;
	cache)
		rm -rf "$WORK/cache-data"
		docxy_conf "$port" "$UP" "$WORK/cache-data" >"$WORK/cache.toml"
		start "$SERVER_CPU" "$WORK/cache.log" "$WORK/docxy" -config "$WORK/cache.toml"
		;;
	nethttp)
		docxy_conf "$port" "$UP" >"$WORK/nethttp.toml"
		start "$SERVER_CPU" "$WORK/nethttp.log" "$WORK/baseline" -config "$WORK/nethttp.toml"
		;;
	nginx)
		proxy_conf "$port" "$UP" >"$WORK/proxy.conf"
		start "$SERVER_CPU" "$WORK/proxy.log" nginx -p "$WORK/" -e "$WORK/proxy.err" -c "$WORK/proxy.conf"
		;;
	direct)
		static_conf "$port" >"$WORK/direct.conf"
		start "$SERVER_CPU" "$WORK/direct.log" nginx -p "$WORK/" -e "$WORK/direct.err" -c "$WORK/direct.conf"
		;;
	esac
	pid=$LAST_PID
	url=http://127.0.0.1:$port
	wait_http "$url/v2/" "$pid" "$(ls -t "$WORK"/*.log "$WORK"/*.err 2>/dev/null | head -1)"
	sleep 0.3 # nginx workers
	pids=$(pids_of "$pid")
	local man=$url/v2/library/bench/manifests/latest b64=$url/v2/library/bench/blobs/$D64 b1g=$url/v2/library/bench/blobs/$D1G
	for u in "$man" "$b64"; do
		[ "$(curl -s -o /dev/null -w '%{http_code}' "$u")" = 200 ] || die "$target: GET $u failed"
	done
	if [ "$target" = cache ]; then # warm the cache, then check that every URL is a hit
		curl -s -o /dev/null "$b1g" || die "cache: GET $b1g failed"
		for u in "$man" "$b64" "$b1g"; do # a blob is a hit once committed (fsync) after its download
			for i in $(seq 30); do
				curl -s -o /dev/null -D "$WORK/hit.headers" "$u"
				! grep -qi '^X-Cache: HIT' "$WORK/hit.headers" || break
				sleep 1
			done
			grep -qi '^X-Cache: HIT' "$WORK/hit.headers" || die "cache: GET $u is not a cache hit: $(cat "$WORK/hit.headers")"
		done
		curl -s -I -o /dev/null -D "$WORK/hit.headers" "$man"
		grep -qi '^X-Cache: HIT' "$WORK/hit.headers" || die "cache: HEAD $man is not a cache hit: $(cat "$WORK/hit.headers")"
	fi
	R[$target,rss_idle]=$(status_kib VmRSS $pids)
	log "$target: pid $pid on CPU $SERVER_CPU, $url"

	# Small requests: HEAD (bombardier; wrk cannot HEAD), then GET (wrk), CONNS connections.
	reset_hwm $pids
	measure "$target" head $pids -- "$BOMBARDIER" -c "$CONNS" -d "${DURATION}s" -t 10s -m HEAD -l -p r -o json "$man"
	local ok total secs
	ok=$(echo "$OUT" | sed -n 's/.*"req2xx":\([0-9]*\).*/\1/p')
	total=$(echo "$OUT" | sed -n 's/.*"req1xx":\([0-9]*\),"req2xx":\([0-9]*\),"req3xx":\([0-9]*\),"req4xx":\([0-9]*\),"req5xx":\([0-9]*\),"others":\([0-9]*\).*/\1+\2+\3+\4+\5+\6/p')
	secs=$(echo "$OUT" | sed -n 's/.*"timeTakenSeconds":\([0-9.e+-]*\).*/\1/p')
	R[$target,head.req]=${ok:-0}
	R[$target,head.err]=$(calc "${total:-0} - ${ok:-0}" 0)
	R[$target,head.rps]=$(calc "${ok:-0} / ${secs:-1}" 0)
	R[$target,head.p99]=$(calc "$(echo "$OUT" | sed -n 's/.*"latency":{[^}]*"percentiles":{[^}]*"99":\([0-9.]*\).*/\1/p') / 1000" 2)

	measure "$target" get $pids -- wrk -t1 -c"$CONNS" -d"${DURATION}s" --timeout 10s --latency -s "$WORK/report.lua" "$man"
	R[$target,get.req]=$(wrk_field requests)
	R[$target,get.err]=$(calc "$(wrk_field errors) + $(wrk_field status_errors)" 0)
	R[$target,get.rps]=$(calc "$(wrk_field requests) / ($(wrk_field duration_us) / 1e6)" 0)
	R[$target,get.p99]=$(calc "$(wrk_field p99_us) / 1000" 2)
	R[$target,rss_small]=$(status_kib VmHWM $pids)

	# 64 MiB blobs, BLOB_CONNS connections.
	reset_hwm $pids
	measure "$target" b64 $pids -- wrk -t1 -c"$BLOB_CONNS" -d"${DURATION}s" --timeout 60s -s "$WORK/report.lua" "$b64"
	R[$target,b64.bytes]=$(wrk_field bytes)
	R[$target,b64.err]=$(calc "$(wrk_field errors) + $(wrk_field status_errors)" 0)
	R[$target,b64.mibs]=$(calc "$(wrk_field bytes) / 1048576 / ($(wrk_field duration_us) / 1e6)" 0)

	# One 1 GiB stream.
	measure "$target" b1g $pids -- curl -s -o /dev/null --max-time 120 -w '%{http_code} %{size_download} %{time_total}' "$b1g"
	read -r code size secs <<<"$OUT"
	[ "$code" = 200 ] && [ "$size" = $((1 << 30)) ] || log "$target: 1 GiB download: $OUT"
	R[$target,b1g.bytes]=$size
	R[$target,b1g.mibs]=$(calc "$size / 1048576 / $secs" 0)
	R[$target,rss_blob]=$(status_kib VmHWM $pids)

	# STREAMS x 1 GiB at once: is memory flat?
	reset_hwm $pids
	R[$target,rss_before_streams]=$(status_kib VmRSS $pids)
	local script="for i in \$(seq $STREAMS); do curl -s -o /dev/null --max-time 300 -w '%{http_code} %{size_download}\n' '$b1g' & done; wait"
	measure "$target" streams $pids -- bash -c "$script"
	local good
	good=$(echo "$OUT" | grep -c "^200 $((1 << 30))$" || true)
	[ "$good" = "$STREAMS" ] || log "$target: $STREAMS x 1 GiB: only $good complete: $OUT"
	R[$target,streams.bytes]=$((good << 30))
	R[$target,streams.mibs]=$(calc "${R[$target,streams.bytes]} / 1048576 / ${R[$target,streams.wall]}" 0)
	R[$target,rss_streams]=$(status_kib VmHWM $pids)

	stop "$pid"
	[ "$target" != cache ] || rm -rf "$WORK/cache-data"
	record "$target"
	log "$target: done"
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
read -r -a TL <<<"$TARGETS"
r=0 # the round, read by run_target
for ((r = 0; r < ROUNDS; r++)); do
	log "round $((r + 1)) of $ROUNDS"
	for ((i = 0; i < ${#TL[@]}; i++)); do run_target "${TL[(i + r) % ${#TL[@]}]}"; done
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# ---- table -------------------------------------------------------------------------------------
name() { case $1 in docxy) echo docxy ;; nginx) echo "nginx proxy" ;; nethttp) echo "net/http" ;; direct) echo "direct nginx" ;; cache) echo "docxy cache" ;; esac; }
has() { [[ " $TARGETS " == *" $1 "* ]]; }
v() { median ${M[$1,$2]:-}; }
row() { # LABEL METRIC
	local t
	printf '%-44s' "$1"
	for t in $TARGETS; do printf ' %13s' "$(v "$t" "$2")"; done
	printf '\n'
}
ratio() { # LABEL METRIC: docxy / each column
	local t d
	d=$(v docxy "$2")
	printf '%-44s' "$1"
	for t in $TARGETS; do printf ' %13s' "$(calc "$d / $(v "$t" "$2")" 2)"; done
	printf '\n'
}
pair() { # LABEL METRIC A B: A / B
	printf '%-44s %13s\n' "$1" "$(calc "$(v "$3" "$2") / $(v "$4" "$2")" 2)"
}
rounds() { # LABEL METRIC: every round's value, per target
	local t
	printf '%-44s' "$1"
	for t in $TARGETS; do printf ' %s:%s' "$t" "$(echo ${M[$t,$2]:-} | tr ' ' ,)"; done
	printf '\n'
}

echo
echo "docxy load test: $(date -u +%FT%TZ), $(nproc) CPUs ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)),"
echo "server on CPU $SERVER_CPU, load generator + upstream nginx on CPU $LOAD_CPU, ${DURATION}s per run, medians of $ROUNDS rounds,"
echo "nginx proxy_buffer_size $NGINX_BUFFER; load average before $LOAD_BEFORE, after $LOAD_AFTER; built from git $GIT_REV"
echo
printf '%-44s' ""
for t in $TARGETS; do printf ' %13s' "$(name "$t")"; done
printf '\n'
row "manifest HEAD req/s (c=$CONNS)" head.rps
row "manifest HEAD p99 ms" head.p99
row "manifest HEAD errors" head.err
row "manifest HEAD server CPU s / 100k req" head.cpu100k
row "manifest HEAD req/s per server core" head.percore
row "manifest GET req/s (c=$CONNS)" get.rps
row "manifest GET p99 ms" get.p99
row "manifest GET errors" get.err
row "manifest GET server CPU s / 100k req" get.cpu100k
row "manifest GET req/s per server core" get.percore
row "64 MiB blobs MiB/s (c=$BLOB_CONNS)" b64.mibs
row "64 MiB blobs server CPU s / GiB" b64.cpugib
row "64 MiB blobs errors" b64.err
row "1 GiB single stream MiB/s" b1g.mibs
row "1 GiB single stream server CPU s / GiB" b1g.cpugib
row "${STREAMS} x 1 GiB MiB/s" streams.mibs
row "${STREAMS} x 1 GiB server CPU s / GiB" streams.cpugib
row "RSS idle MiB" rss_idle
row "peak RSS, c=$CONNS small requests MiB" rss_small
row "peak RSS, 64 MiB c=$BLOB_CONNS + 1 GiB MiB" rss_blob
row "RSS before ${STREAMS} x 1 GiB MiB" rss_before_streams
row "peak RSS during ${STREAMS} x 1 GiB MiB" rss_streams
echo
if has docxy; then
	echo "docxy / column (CPU: lower is better; req/s per core and MiB/s: higher is better)"
	ratio "manifest HEAD CPU per request" head.cpu100k
	ratio "manifest HEAD req/s per core" head.percore
	ratio "manifest GET CPU per request" get.cpu100k
	ratio "manifest GET req/s per core" get.percore
	ratio "64 MiB blobs CPU per GiB" b64.cpugib
	ratio "64 MiB blobs MiB/s" b64.mibs
	ratio "1 GiB stream CPU per GiB" b1g.cpugib
	ratio "1 GiB stream MiB/s" b1g.mibs
	ratio "${STREAMS} x 1 GiB CPU per GiB" streams.cpugib
	echo
fi
if has cache && has direct; then
	echo "cache hits: docxy cache / direct nginx serving the same files"
	pair "manifest HEAD req/s per core" head.percore cache direct
	pair "manifest GET req/s per core" get.percore cache direct
	pair "64 MiB blobs CPU per GiB" b64.cpugib cache direct
	pair "1 GiB stream CPU per GiB" b1g.cpugib cache direct
	pair "${STREAMS} x 1 GiB CPU per GiB" streams.cpugib cache direct
	echo
fi
echo "every round:"
rounds "manifest HEAD CPU s / 100k req" head.cpu100k
rounds "manifest GET CPU s / 100k req" get.cpu100k
rounds "64 MiB blobs CPU s / GiB" b64.cpugib
rounds "1 GiB stream CPU s / GiB" b1g.cpugib
rounds "${STREAMS} x 1 GiB CPU s / GiB" streams.cpugib
rounds "peak RSS during ${STREAMS} x 1 GiB MiB" rss_streams
echo
[ "$HWM_RESET" = yes ] || echo "note: /proc/PID/clear_refs was not writable: peak RSS rows are peaks since start"
echo "nginx rows sum the master and worker processes (CPU and RSS)."
