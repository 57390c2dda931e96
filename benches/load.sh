#!/usr/bin/env bash
# gatehouse against its floor (examples/floor.rs: bare hyper + rustls, same TLS settings,
# constant answer), side by side in one run on 127.0.0.1, so the ratios survive a noisy machine.
#
#   benches/load.sh                       # 3 alternating rounds of 5 s per scenario
#   ROUNDS=5 DURATION=10 benches/load.sh  # longer, on a quiet machine
#   GATEHOUSE=path/to/gatehouse benches/load.sh   # measure another build (say, of main)
#
# For each scenario it prints req/s, p50/p99 latency and server CPU per request (utime+stime
# of the server process from /proc, all threads, divided by the requests answered) for both
# servers, then gatehouse's ratios to the floor. Load: wrk, 1 thread, CONNECTIONS keep-alive
# HTTP/1.1 connections over TLS; the last scenario opens a new TLS connection per request
# (examples/handshakes.rs). gatehouse logs JSON access lines to a file, as in production.
# Traffic goes to 127.0.0.1 only; every run is bounded by DURATION. See BENCHMARKS.md.
set -euo pipefail

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
CONNECTIONS=${CONNECTIONS:-32}
WARMUP=${WARMUP:-1}

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
    --example floor --example github_mock --example handshakes
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
GATEHOUSE=${GATEHOUSE:-$BIN/gatehouse}

RUN=$(mktemp -d "${TMPDIR:-/tmp}/gatehouse-load.XXXXXX")
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [ -n "${KEEP:-}" ]; then echo "kept $RUN" >&2; else rm -rf "$RUN"; fi
}
trap cleanup EXIT

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
start_gatehouse() {
    local name=$1 config=$2
    TMPDIR=$RUN "$GATEHOUSE" serve --config "$config" --listen 127.0.0.1:0 \
        --tls-cert "$RUN/tls.crt" --tls-key "$RUN/tls.key" --log-format json \
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
    cat >"$RUN/post.lua" <<EOF
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
EOF
}

cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
TICK=$(getconf CLK_TCK)

# load KIND ADDR PATH BODY SECONDS: one measured run; prints its result line.
load() {
    local kind=$1 addr=$2 path=$3 body=$4 seconds=$5
    if [ "$kind" = wrk ]; then
        wrk -t1 -c"$CONNECTIONS" -d"${seconds}s" --latency -s "$RUN/post.lua" \
            "https://$addr$path" | grep '^requests='
    else
        "$BIN/examples/handshakes" "$addr" "$path" "$body" "$CA" "$CONNECTIONS" "$seconds"
    fi
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
    answer=$(curl -sS --fail --cacert "$CA" -H 'Content-Type: application/json' \
        --data-binary "@$body" "https://$addr$path")
    if ! grep -q "$expect" <<<"$answer"; then
        echo "$name: gatehouse answered $answer (expected $expect)" >&2
        exit 1
    fi
    echo "== $name: $path, $(wc -c <"$body") B body, answer ${answer:0:110}..." >&2
    wrk_script "$(realpath "$body")"
    # Warm-up (caches, connection pools, page faults); not measured.
    load "$kind" "$FLOOR" "$path" "$body" "$WARMUP" >/dev/null
    load "$kind" "$addr" "$path" "$body" "$WARMUP" >/dev/null
    for round in $(seq "$ROUNDS"); do
        local order="floor gatehouse"
        [ $((round % 2)) -eq 0 ] && order="gatehouse floor"
        for server in $order; do
            local target=$FLOOR spid=$FLOOR_PID
            [ "$server" = gatehouse ] && target=$addr spid=$pid
            local before after line
            before=$(cpu_ticks "$spid")
            line=$(load "$kind" "$target" "$path" "$body" "$DURATION")
            after=$(cpu_ticks "$spid")
            if [ "$(field "$line" errors)" != 0 ]; then
                echo "$name/$server: errors in $line" >&2
                exit 1
            fi
            echo "$name $server $round $line cpu_ticks=$((after - before))" | tee -a "$RESULTS" >&2
        done
    done
}

scenario validate wrk policies "/validate?timeout=10s" "$POD" '"allowed"'
scenario image_policy wrk policies /image_policy "$RUN/image-review.json" '"allowed"'
scenario mutate wrk mutations "/mutate?timeout=10s" "$POD" '"patchType":"JSONPatch"'
scenario authenticate wrk authenticate "/authenticate?timeout=30s" "$RUN/token-review.json" \
    '"authenticated":true'
scenario new_connection handshakes policies "/validate?timeout=10s" "$POD" '"allowed"'

# Summary: per scenario and server, median req/s, p50, p99 over the rounds, and CPU per request
# over all rounds; then gatehouse / floor.
echo
echo "$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load average before the summary: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "wrk -t1 -c$CONNECTIONS, $ROUNDS rounds of ${DURATION}s, alternating; CPU = server utime+stime / requests"
awk -v tick="$TICK" '
function median(list,   n, a, i, j, t) {
    n = split(list, a, " ")
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
{
    key = $1 " " $2
    if (!(key in seen)) { seen[key] = 1; if (!($1 in sc)) { sc[$1] = 1; order[++n] = $1 } }
    for (i = 4; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
    rps[key] = rps[key] " " v["requests"] / v["seconds"]
    p50[key] = p50[key] " " v["p50_us"]
    p99[key] = p99[key] " " v["p99_us"]
    req[key] += v["requests"]
    cpu[key] += v["cpu_ticks"] / tick
}
END {
    printf "%-15s %-10s %10s %9s %9s %12s\n", "scenario", "server", "req/s", "p50 us", "p99 us", "CPU us/req"
    for (i = 1; i <= n; i++) {
        s = order[i]
        for (k = 0; k < 2; k++) {
            server = k ? "gatehouse" : "floor"; key = s " " server
            R[server] = median(rps[key]); P50[server] = median(p50[key]); P99[server] = median(p99[key])
            C[server] = req[key] ? cpu[key] * 1e6 / req[key] : 0
            printf "%-15s %-10s %10.0f %9.0f %9.0f %12.1f\n", s, server, R[server], P50[server], P99[server], C[server]
        }
        printf "%-15s %-10s %10.2f %9.2f %9.2f %12.2f\n", s, "ratio", \
            R["gatehouse"] / R["floor"], P50["gatehouse"] / P50["floor"], \
            P99["gatehouse"] / P99["floor"], C["floor"] ? C["gatehouse"] / C["floor"] : 0
    }
}' "$RESULTS"
for gh in policies mutations authenticate; do
    echo "gatehouse ($gh): peak RSS $(awk '/VmHWM/ {print $2 " " $3}' "/proc/${GATEHOUSE_PID[$gh]}/status"), access log $(grep -c '"message":"request"' "$RUN/gatehouse-$gh.log") lines"
done
