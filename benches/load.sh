#!/usr/bin/env bash
# gatehouse against its floor (examples/floor.rs: bare hyper + rustls, same TLS settings,
# constant answer), side by side in one run on 127.0.0.1, so the ratios survive a noisy machine.
#
#   benches/load.sh                       # 3 alternating rounds of 5 s per scenario (~5 min)
#   ROUNDS=5 DURATION=10 benches/load.sh  # longer, on a quiet machine
#   GATEHOUSE=path/to/gatehouse benches/load.sh   # measure another build (say, of main)
#
# For each scenario it prints req/s, p50/p99 latency and server CPU per request (utime+stime
# of the server process from /proc, all threads, divided by the requests answered) for both
# servers, then gatehouse's ratios to the floor. Load: wrk, 1 thread, CONNECTIONS keep-alive
# HTTP/1.1 connections over TLS; `new_connection` opens a new TLS connection per request
# (examples/handshakes.rs). Then, with examples/rate.rs, an open-loop run of /validate and
# /image_policy at half the floor's req/s (latency from each request's scheduled send time),
# the resident memory of a gatehouse holding CACHED distinct cached decisions, and with
# examples/ready.rs the time from spawning gatehouse to its first /readyz answer (median of
# STARTS starts). It ends with issue 11's targets: measured, met or missed, by how much.
# gatehouse logs access lines to a file, as in production. Traffic goes to 127.0.0.1 only;
# every run is bounded in time. Any failed request or unexpected first answer stops the run
# (exit status 1); every process it started is stopped on exit, Ctrl-C included.
# See BENCHMARKS.md.
set -euo pipefail

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
CONNECTIONS=${CONNECTIONS:-32}
WARMUP=${WARMUP:-1}
CACHED=${CACHED:-100000}
STARTS=${STARTS:-10}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

need() { command -v "$1" >/dev/null 2>&1; }
if ! need wrk || ! need curl; then
    echo "installing wrk and curl from Debian packages" >&2
    SUDO=$([ "$(id -u)" -eq 0 ] && echo "" || echo sudo)
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq wrk curl >/dev/null
fi

echo "building release binaries" >&2
cargo build --release --quiet --bin gatehouse \
    --example floor --example github_mock --example handshakes --example rate --example ready
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
GATEHOUSE=${GATEHOUSE:-$BIN/gatehouse}

RUN=$(mktemp -d "${TMPDIR:-/tmp}/gatehouse-load.XXXXXX")
PIDS=()
CLIENT=""
fail() {
    echo "load.sh: $*" >&2
    exit 1
}
# Stops every server this script started: SIGTERM, then SIGKILL for any still running after 5 s
# (gatehouse drains open connections first). Runs on every exit, Ctrl-C and errors included.
cleanup() {
    local status=$?
    trap - INT TERM
    [ -z "$CLIENT" ] || PIDS+=("$CLIENT")
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for _ in $(seq 50); do
        local alive=0
        for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        [ "$alive" = 0 ] && break
        sleep 0.1
    done
    for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [ -n "${KEEP:-}" ] || [ "$status" = 1 ]; then echo "logs kept in $RUN" >&2; else rm -rf "$RUN"; fi
}
trap cleanup EXIT
trap 'echo "load.sh: interrupted" >&2; exit 130' INT
trap 'echo "load.sh: terminated" >&2; exit 143' TERM

# client COMMAND...: runs a load client in the background and waits for it, its output in
# $RUN/client.out and client.err. Waiting with the `wait` builtin lets Ctrl-C stop the run at
# once: bash runs a trap only after a foreground command ends, and wrk exits 0 on SIGINT.
client() {
    "$@" >"$RUN/client.out" 2>"$RUN/client.err" &
    CLIENT=$!
    local status=0
    wait "$CLIENT" || status=$?
    CLIENT=""
    return "$status"
}
client_output() { cat "$RUN/client.out" "$RUN/client.err"; }

# Waits (at most 20 s) for a line matching $2 in file $1 and prints its host:port.
address_in() {
    local file=$1 pattern=$2
    for _ in $(seq 200); do
        local line
        # Text ("... on https://host:port") or a JSON event ("listen":"https://host:port").
        line=$(grep -m1 "$pattern" "$file" 2>/dev/null | grep -o "https\?://[0-9.:]*" | head -n1 || true)
        if [ -n "$line" ]; then
            echo "${line##*://}"
            return
        fi
        sleep 0.1
    done
    echo "no '$pattern' line in $file:" >&2
    cat "$file" >&2
    exit 1
}

"$BIN/examples/floor" pki "$RUN"
CA=$RUN/ca.pem

"$BIN/examples/floor" serve 127.0.0.1:0 "$RUN/tls.crt" "$RUN/tls.key" >"$RUN/floor.out" 2>&1 &
PIDS+=($!)
FLOOR_PID=$!
FLOOR=$(address_in "$RUN/floor.out" "floor listening on")

TOKEN=ghp_loadbench0123456789abcdefghijklmnopqr
"$BIN/examples/github_mock" "$TOKEN" >"$RUN/github.out" 2>&1 &
PIDS+=($!)
GITHUB=$(address_in "$RUN/github.out" "github mock at")

# One gatehouse per configuration: the committed examples, and /authenticate on the mock.
cat >"$RUN/authenticate.yaml" <<EOF
routes:
  authenticate: true
authenticate:
  github:
    api_url: http://$GITHUB/
    allowed_orgs: [acme]
EOF
declare -A GATEHOUSE_PID GATEHOUSE_ADDR
# start_gatehouse NAME CONFIG [LOG_FORMAT]
start_gatehouse() {
    local name=$1 config=$2 format=${3:-json}
    TMPDIR=$RUN "$GATEHOUSE" serve --config "$config" --listen 127.0.0.1:0 \
        --tls-cert "$RUN/tls.crt" --tls-key "$RUN/tls.key" --log-format "$format" \
        >"$RUN/gatehouse-$name.log" 2>&1 &
    PIDS+=($!)
    GATEHOUSE_PID[$name]=$!
    GATEHOUSE_ADDR[$name]=$(address_in "$RUN/gatehouse-$name.log" "gatehouse listening")
}
start_gatehouse policies config/examples/policies.yaml
start_gatehouse mutations config/examples/mutations.yaml
start_gatehouse authenticate "$RUN/authenticate.yaml"

# Request bodies: the 5.4 KB Pod review, an ImageReview of its images, a TokenReview.
POD=tests/data/pod-admission-review.json
IMAGES=$(grep -o '"image":"[^"]*"' "$POD" | sed 's/^/{/; s/$/}/' | paste -sd, -)
printf '{"apiVersion":"imagepolicy.k8s.io/v1alpha1","kind":"ImageReview","spec":{"containers":[%s],"namespace":"team-a"}}' \
    "$IMAGES" >"$RUN/image-review.json"
printf '{"apiVersion":"authentication.k8s.io/v1","kind":"TokenReview","spec":{"token":"%s"}}' \
    "$TOKEN" >"$RUN/token-review.json"

# A wrk script POSTing file $1; its done() prints one machine-readable line.
wrk_script() {
    cat >"$RUN/post.lua" <<LUA
local f = assert(io.open("$1", "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("requests=%d errors=%d seconds=%.3f p50_us=%d p99_us=%d\n",
    summary.requests, e.connect + e.read + e.write + e.timeout + e.status,
    summary.duration / 1e6, latency:percentile(50), latency:percentile(99)))
end
LUA
}

cpu_ticks() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || fail "server $1 has exited; its log is in $RUN"
    sed 's/.*) //' <<<"$stat" | awk '{print $12 + $13}'
}
TICK=$(getconf CLK_TCK)

# load KIND ADDR PATH BODY SECONDS: one measured run; sets LINE to its result line. KIND rate
# sends RATE requests a second.
load() {
    local kind=$1 addr=$2 path=$3 body=$4 seconds=$5
    case $kind in
    wrk)
        client wrk -t1 -c"$CONNECTIONS" -d"${seconds}s" --latency -s "$RUN/post.lua" \
            "https://$addr$path" || fail "wrk against $addr$path failed: $(client_output)"
        ;;
    handshakes)
        client "$BIN/examples/handshakes" "$addr" "$path" "$body" "$CA" "$CONNECTIONS" \
            "$seconds" || fail "examples/handshakes against $addr$path failed: $(client_output)"
        ;;
    rate)
        client "$BIN/examples/rate" open "$addr" "$path" "$body" "$CA" "$CONNECTIONS" "$RATE" \
            "$seconds" || fail "examples/rate against $addr$path failed: $(client_output)"
        ;;
    esac
    LINE=$(grep '^requests=' "$RUN/client.out") ||
        fail "no result line from $kind against $addr$path: $(client_output)"
}

field() { sed -n "s/.*\b$2=\([0-9.]*\).*/\1/p" <<<"$1"; }

RESULTS=$RUN/results.txt
: >"$RESULTS"

# scenario NAME KIND GATEHOUSE PATH BODY EXPECT: checks one gatehouse answer, then alternates
# rounds between the floor and gatehouse.
scenario() {
    local name=$1 kind=$2 gh=$3 path=$4 body=$5 expect=$6
    local addr=${GATEHOUSE_ADDR[$gh]} pid=${GATEHOUSE_PID[$gh]}
    local answer
    # The status on a last line of its own (curl's --fail-with-body needs curl 7.76).
    answer=$(curl -sS --max-time 10 -w '\n%{http_code}' --cacert "$CA" \
        -H 'Content-Type: application/json' --data-binary "@$body" "https://$addr$path") ||
        fail "$name: the first request failed: $answer"
    [ "${answer##*$'\n'}" = 200 ] || fail "$name: gatehouse answered status ${answer//$'\n'/ }"
    answer=${answer%$'\n'*}
    grep -q "$expect" <<<"$answer" || fail "$name: gatehouse answered $answer (expected $expect)"
    echo "== $name: $path, $(wc -c <"$body") B body, answer ${answer:0:110}..." >&2
    wrk_script "$(realpath "$body")"
    # Warm-up (caches, connection pools, page faults); not measured.
    load "$kind" "$FLOOR" "$path" "$body" "$WARMUP"
    load "$kind" "$addr" "$path" "$body" "$WARMUP"
    for round in $(seq "$ROUNDS"); do
        local order="floor gatehouse"
        [ $((round % 2)) -eq 0 ] && order="gatehouse floor"
        for server in $order; do
            local target=$FLOOR spid=$FLOOR_PID
            [ "$server" = gatehouse ] && target=$addr spid=$pid
            local before after line
            before=$(cpu_ticks "$spid")
            load "$kind" "$target" "$path" "$body" "$DURATION"
            line=$LINE
            after=$(cpu_ticks "$spid")
            [ "$(field "$line" errors)" = 0 ] || fail "$name/$server: errors in $line"
            echo "$name $server $round $line cpu_ticks=$((after - before))" | tee -a "$RESULTS" >&2
        done
    done
}

# median_rps NAME SERVER: the median req/s of that scenario's rounds so far.
median_rps() {
    awk -v name="$1" -v server="$2" '
        $1 == name && $2 == server {
            for (i = 4; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
            r[++n] = v["requests"] / v["seconds"]
        }
        END {
            for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (r[j] < r[i]) { t = r[i]; r[i] = r[j]; r[j] = t }
            if (n == 0) exit 1
            printf "%d\n", n % 2 ? r[(n + 1) / 2] : (r[n / 2] + r[n / 2 + 1]) / 2
        }' "$RESULTS"
}

scenario validate wrk policies "/validate?timeout=10s" "$POD" '"allowed":true'
scenario image_policy wrk policies /image_policy "$RUN/image-review.json" '"allowed":true'
scenario mutate wrk mutations "/mutate?timeout=10s" "$POD" '"patchType":"JSONPatch"'
scenario authenticate wrk authenticate "/authenticate?timeout=30s" "$RUN/token-review.json" \
    '"authenticated":true'
scenario new_connection handshakes policies "/validate?timeout=10s" "$POD" '"allowed":true'

# Open loop: the same reviews at a constant half of the floor's closed-loop req/s.
RATE=$(( $(median_rps validate floor) / 2 ))
scenario validate@half rate policies "/validate?timeout=10s" "$POD" '"allowed":true'
RATE=$(( $(median_rps image_policy floor) / 2 ))
scenario image_policy@half rate policies /image_policy "$RUN/image-review.json" '"allowed":true'

# Memory: a fresh gatehouse (the policies example, TTLs of an hour so nothing expires, room for
# CACHED entries so nothing is evicted, the ops listener for /metrics) filled with CACHED
# distinct decisions, half allowed and half denied. 5% headroom: the cache's shards each hold
# their share of max_entries, and keys do not fall evenly on them.
awk '/^[a-z_]+:/ { skip = ($0 ~ /^cache:/) } !skip' config/examples/policies.yaml >"$RUN/memory.yaml"
cat >>"$RUN/memory.yaml" <<EOF
cache:
  allow_ttl: 1h
  deny_ttl: 1h
  max_entries: $((CACHED * 105 / 100))
ops:
  listen: 127.0.0.1:0
EOF
# Text log: its banner names the ops listener's address (the JSON event does not).
start_gatehouse memory "$RUN/memory.yaml" text
OPS=$(address_in "$RUN/gatehouse-memory.log" "health probes")
status_kb() { awk -v key="$1:" '$1 == key { print $2 }' "/proc/${GATEHOUSE_PID[memory]}/status"; }
# Decision-cache entries from /metrics on the ops listener (a gatehouse_* series with
# "decision" and "entries" in its name or labels), or nothing when gatehouse has no /metrics.
cache_entries() {
    curl -sf --max-time 10 "http://$OPS/metrics" 2>/dev/null |
        awk '/^gatehouse_/ && /entries/ && /decision/ { print $NF; exit }' || true
}
echo "== memory: $CACHED distinct ImageReviews (/image_policy) into a fresh gatehouse" >&2
MEMORY_BEFORE=$(status_kb VmRSS)
client "$BIN/examples/rate" fill "${GATEHOUSE_ADDR[memory]}" "$CA" "$CACHED" "$CONNECTIONS" ||
    fail "memory: filling the cache failed: $(client_output)"
FILL=$(cat "$RUN/client.out")
echo "memory fill: $FILL" >&2
[ "$(field "$FILL" requests)" = "$CACHED" ] || fail "memory: $FILL (expected $CACHED answers)"
# The scrape counts live entries; retry briefly in case the last answers are still settling.
ENTRIES=""
for _ in $(seq 50); do
    ENTRIES=$(cache_entries)
    { [ -z "$ENTRIES" ] || [ "${ENTRIES%.*}" -ge "$CACHED" ]; } && break
    sleep 0.1
done
MEMORY_RSS=$(status_kb VmRSS)
MEMORY_HWM=$(status_kb VmHWM)
if [ -z "$ENTRIES" ]; then
    ENTRIES_NOTE="entries not verified: no decision-cache entries on http://$OPS/metrics"
elif [ "${ENTRIES%.*}" -ge "$CACHED" ]; then
    ENTRIES_NOTE="$ENTRIES entries on /metrics"
else
    ENTRIES_NOTE="only $ENTRIES entries on /metrics: evicted or not cached"
fi

# Start to ready: STARTS starts with the certificate files, STARTS with a generated certificate.
echo "== start to ready: $STARTS starts each, certificate files and generated certificate" >&2
client "$BIN/examples/ready" "$GATEHOUSE" config/examples/policies.yaml "$STARTS" \
    "$RUN/tls.crt" "$RUN/tls.key" || fail "start to ready (certificate files): $(client_output)"
READY_FILES=$(cat "$RUN/client.out")
client "$BIN/examples/ready" "$GATEHOUSE" config/examples/policies.yaml "$STARTS" ||
    fail "start to ready (generated certificate): $(client_output)"
READY_GENERATED=$(cat "$RUN/client.out")

# Summary: per scenario and server, median req/s, p50, p99 (and p99.9 for open-loop runs) over
# the rounds, and CPU per request over all rounds; then gatehouse / floor.
SUMMARY=$RUN/summary.txt
echo
echo "$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load average before the summary: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "wrk -t1 -c$CONNECTIONS, $ROUNDS rounds of ${DURATION}s, alternating; @half: open loop at half the floor's req/s over $CONNECTIONS connections, latency from the scheduled send (client lag: how late its pacer released requests, worst round; a busy machine shows here); CPU = server utime+stime / requests"
awk -v tick="$TICK" -v summary="$SUMMARY" '
function median(list,   n, a, i, j, t) {
    n = split(list, a, " ")
    if (n == 0) return -1
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
function cell(x, format) { return x < 0 ? sprintf("%9s", "-") : sprintf(format, x) }
{
    key = $1 " " $2
    if (!(key in seen)) { seen[key] = 1; if (!($1 in sc)) { sc[$1] = 1; order[++n] = $1 } }
    split("", v)
    for (i = 4; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
    rps[key] = rps[key] " " v["requests"] / v["seconds"]
    p50[key] = p50[key] " " v["p50_us"]
    p99[key] = p99[key] " " v["p99_us"]
    if ("p999_us" in v) p999[key] = p999[key] " " v["p999_us"]
    unsent[key] += v["unsent"]
    if ("lag_p99_us" in v && v["lag_p99_us"] + 0 > lag[key] + 0) lag[key] = v["lag_p99_us"]
    req[key] += v["requests"]
    cpu[key] += v["cpu_ticks"] / tick
}
END {
    printf "%-18s %-10s %10s %9s %9s %9s %12s\n", "scenario", "server", "req/s", "p50 us", "p99 us", "p99.9 us", "CPU us/req"
    for (i = 1; i <= n; i++) {
        s = order[i]
        for (k = 0; k < 2; k++) {
            server = k ? "gatehouse" : "floor"; key = s " " server
            R[server] = median(rps[key]); P50[server] = median(p50[key]); P99[server] = median(p99[key])
            P999[server] = median(p999[key])
            C[server] = req[key] ? cpu[key] * 1e6 / req[key] : 0
            printf "%-18s %-10s %10.0f %9.0f %9.0f %s %12.1f%s%s\n", s, server, R[server], P50[server], P99[server], \
                cell(P999[server], "%9.0f"), C[server], \
                key in lag ? sprintf("  [client lag p99 <= %d us]", lag[key]) : "", \
                unsent[key] ? sprintf("  (%d unanswered 2 s after the schedule: could not keep up)", unsent[key]) : ""
        }
        ratio_p999 = P999["floor"] > 0 ? P999["gatehouse"] / P999["floor"] : -1
        printf "%-18s %-10s %10.2f %9.2f %9.2f %s %12.2f\n", s, "ratio", \
            R["gatehouse"] / R["floor"], P50["gatehouse"] / P50["floor"], \
            P99["gatehouse"] / P99["floor"], cell(ratio_p999, "%9.2f"), C["floor"] ? C["gatehouse"] / C["floor"] : 0
        printf "%s %f %f %f %f\n", s, R["gatehouse"] / R["floor"], P99["gatehouse"] / P99["floor"], \
            C["gatehouse"], C["floor"] > summary
    }
}' "$RESULTS"
for gh in policies mutations authenticate; do
    echo "gatehouse ($gh): peak RSS $(awk '/VmHWM/ {print $2 " " $3}' "/proc/${GATEHOUSE_PID[$gh]}/status"), access log $(grep -c '"message":"request"' "$RUN/gatehouse-$gh.log") lines"
done
echo
echo "memory, $CACHED cached decisions ($(field "$FILL" allowed) allowed, $(field "$FILL" denied) denied; $ENTRIES_NOTE):"
awk -v before="$MEMORY_BEFORE" -v rss="$MEMORY_RSS" -v hwm="$MEMORY_HWM" -v n="$CACHED" 'BEGIN {
    printf "  VmRSS %.1f MiB after start, %.1f MiB filled (VmHWM %.1f MiB): %.0f B per cached decision\n",
        before / 1024, rss / 1024, hwm / 1024, (rss - before) * 1024 / n }'
echo "start to ready, median of $STARTS starts (min-max). webhook: the first 200 from /readyz over TLS"
echo "on the webhook port; both: then also over HTTP on the ops listener; [mean poll period: the resolution]"
for mode in files generated; do
    line=$READY_FILES label="certificate files:"
    [ "$mode" = generated ] && line=$READY_GENERATED label="generated certificate:"
    awk -v label="$label" -v line="$line" 'BEGIN {
        n = split(line, f, " "); for (i = 1; i <= n; i++) { split(f[i], kv, "="); v[kv[1]] = kv[2] }
        printf "  %-23s webhook %5.1f ms (%.1f-%.1f), both %5.1f ms (max %.1f) [%d us]\n", label,
            v["main_median_us"] / 1e3, v["main_min_us"] / 1e3, v["main_max_us"] / 1e3,
            v["ops_median_us"] / 1e3, v["ops_max_us"] / 1e3, v["poll_us"] }'
done

# Issue 11's targets against this run.
echo
echo "targets (issue 11) in this run:"
# target LABEL MEASURED OP LIMIT UNIT [NOTE]: OP is le (at most) or ge (at least).
target() {
    awk -v label="$1" -v m="$2" -v op="$3" -v limit="$4" -v unit="$5" -v note="${6:-}" 'BEGIN {
        met = op == "le" ? m <= limit : m >= limit
        gap = op == "le" ? m - limit : limit - m
        verdict = met ? sprintf("met (%.3g%s to spare)", -gap, unit) \
            : sprintf("MISSED by %.3g%s (%.0f%%)", gap, unit, 100 * gap / limit)
        printf "  %-58s %8.3g%-4s (%s %s%s) %s%s\n", label, m, unit, op == "le" ? "<=" : ">=", limit, \
            unit, verdict, note != "" ? "; " note : ""
    }'
}
row() { awk -v s="$1" -v c="$2" '$1 == s { print $c }' "$SUMMARY"; }
for s in validate image_policy; do
    target "$s: server CPU per review" "$(row "$s" 4)" le 20 " us" \
        "the floor: $(printf %.1f "$(row "$s" 5)") us"
    target "$s: throughput / the floor's" "$(row "$s" 2)" ge 0.75 ""
    target "$s: p99 / the floor's, open loop at half its peak" "$(row "$s@half" 3)" le 1.5 ""
done
target "authenticate (cached): throughput / the floor's" "$(row authenticate 2)" ge 0.90 ""
target "resident memory with $CACHED cached decisions" \
    "$(awk -v k="$MEMORY_RSS" 'BEGIN { print k / 1024 }')" le 40 " MiB" "$ENTRIES_NOTE"
target "start to ready, certificate files (median)" \
    "$(awk -v u="$(field "$READY_FILES" ops_median_us)" 'BEGIN { print u / 1000 }')" le 50 " ms"
target "start to ready, generated certificate (median)" \
    "$(awk -v u="$(field "$READY_GENERATED" ops_median_us)" 'BEGIN { print u / 1000 }')" le 50 " ms"
