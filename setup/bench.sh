#!/usr/bin/env bash
# Benchmarks the services against a real PostgreSQL, beside a yard-stick measured in the same run:
# a stock nginx answering `return 200`, driven by the same load tool with the same connections.
# Prints req/s, p50 and p99 per endpoint, the ratio to the yard-stick, and resident memory; and
# the cost of the metrics: the hot paths alternated between instances run with METRICS_PORT=off
# and instances that count.
#   setup/bench.sh                 all figures, 10 s per measurement
#   BENCH_FLOOD_CONNECTIONS=512 setup/bench.sh   clients in the log-in flood (default 256)
#   BENCH_DURATION=30 setup/bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."

duration=${BENCH_DURATION:-10}
conns=${BENCH_CONNECTIONS:-32}
cost=${BENCH_BCRYPT_COST:-10}
cores=$(nproc)

bash setup/setup.sh
echo "==> building release binaries" >&2
cargo build --release --locked -p auth-svc -p payment-svc -p svc-common --bins --examples >&2

work=$(mktemp -d /tmp/stackctl-bench.XXXXXX)
chmod 755 "$work"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  [[ -f $work/nginx.pid ]] && kill "$(cat "$work/nginx.pid")" 2>/dev/null || true
  bash setup/test-postgres.sh stop "$work/pg" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() {
  local port
  for port in $(seq "$1" $(($1 + 100))); do
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then echo "$port"; return; fi
  done
  return 1
}

wait_http() {
  for _ in $(seq 1 200); do
    curl -fs -o /dev/null "$1" && return 0
    sleep 0.1
  done
  echo "bench: $1 did not come up" >&2
  return 1
}

# load NAME URL [METHOD BODY TOKEN [CONNECTIONS [SECONDS]]]: runs wrk, records "rps p50 p99 failed total".
declare -A result
load() {
  local name=$1 url=$2 method=${3:-GET} body=${4:-} token=${5:-} c=${6:-$conns} d=${7:-$duration}
  local line
  line=$(BENCH_METHOD=$method BENCH_BODY=$body BENCH_TOKEN=$token \
    wrk -t2 -c"$c" -d"${d}s" --latency -s setup/bench.lua "$url" | grep '^RESULT' | cut -d' ' -f2-)
  result[$name]=$line
  printf '  %-34s %s\n' "$name" "$line" >&2
}

rss_kib() { awk -v k="$2" '$1 == k":" {print $2}' "/proc/$1/status"; }

echo "==> PostgreSQL, nginx yard-stick" >&2
db=$(bash setup/test-postgres.sh start "$work/pg")
psql -q "$db" -c 'CREATE DATABASE auth' -c 'CREATE DATABASE payments' >/dev/null
nginx_port=$(free_port 18080)
cat >"$work/nginx.conf" <<CONF
worker_processes auto;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  server { listen 127.0.0.1:$nginx_port; location / { return 200 "ok\n"; } }
}
CONF
nginx -c "$work/nginx.conf" -p "$work"
wait_http "http://127.0.0.1:$nginx_port/"

echo "==> auth-svc (bcrypt cost $cost), and one with METRICS_PORT=off" >&2
# start_auth METRICS_PORT: sets auth_pid and auth (its URL).
start_auth() {
  local port
  port=$(free_port 13000)
  DATABASE_URL="${db%/postgres}/auth" JWT_SECRET="bench-secret-bench-secret-bench-secret" \
    PORT=$port METRICS_PORT=$1 BCRYPT_COST=$cost RUST_LOG=warn \
    ./target/x86_64-unknown-linux-gnu/release/auth-svc >>"$work/auth.log" 2>&1 &
  auth_pid=$!
  pids+=("$auth_pid")
  auth="http://127.0.0.1:$port"
  wait_http "$auth/health"
}
start_auth off
auth_off=$auth
auth_off_pid=$auth_pid
start_auth "$(free_port 19300)"

credentials='{"identifier":"bench@example.com","password":"bench-password"}'
curl -fs "$auth/auth/register" -H 'Content-Type: application/json' \
  -d '{"email":"bench@example.com","phone":"+256772999999","password":"bench-password"}' >/dev/null
token=$(curl -fs "$auth/auth/login" -H 'Content-Type: application/json' -d "$credentials" |
  sed -E 's/.*"accessToken":"([^"]+)".*/\1/')

echo "==> payment-svc, and one with METRICS_PORT=off" >&2
# start_pay METRICS_PORT AUTH_URL: sets pay_pid and pay (its URL).
start_pay() {
  local port
  port=$(free_port 14000)
  DATABASE_URL="${db%/postgres}/payments" WEBHOOK_SECRET="bench-webhook-secret-0123456789" \
    AUTH_SERVICE_URL="$2" PORT=$port METRICS_PORT=$1 RUST_LOG=warn \
    ./target/x86_64-unknown-linux-gnu/release/payment-svc >>"$work/payments.log" 2>&1 &
  pay_pid=$!
  pids+=("$pay_pid")
  pay="http://127.0.0.1:$port"
  wait_http "$pay/health"
}
start_pay off "$auth_off"
pay_off=$pay
pay_off_pid=$pay_pid
start_pay "$(free_port 19400)" "$auth"
payment='{"amount":"12.50","currency":"USD","paymentMethod":"MOBILE_MONEY","customerPhone":"+256772123456"}'
reference=$(curl -fs "$pay/payments" -H 'Content-Type: application/json' -H "Authorization: Bearer $token" \
  -d "$payment" | sed -E 's/.*"reference":"([^"]+)".*/\1/')
sleep 1
auth_idle=$(rss_kib "$auth_pid" VmRSS)
pay_idle=$(rss_kib "$pay_pid" VmRSS)

echo "==> load: wrk -t2 -c$conns -d${duration}s (req/s p50_ms p99_ms failed total)" >&2
load yardstick "http://127.0.0.1:$nginx_port/"
load "GET /health" "$auth/health"
load "POST /auth/me" "$auth/auth/me" POST "" "$token"
load "POST /payments" "$pay/payments" POST "$payment" "$token"
load "GET /payments/{reference}" "$pay/payments/$reference" GET "" "$token"
pay_peak=$(rss_kib "$pay_pid" VmHWM)
# The same paths on the instances that count nothing, alternated with the counted ones (off on
# on off off on, 5 s each) so that the machine's drift weighs on both alike. Beside req/s, the
# CPU time the instance itself spent per request: what the metrics add, less shaken by the
# machine's other tenants than throughput is.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
declare -A cpu
compare() {
  local name=$1 off=$2 on=$3 off_pid=$4 on_pid=$5 method=${6:-GET} token=${7:-} n=0 v url pid before
  for v in off on on off off on; do
    n=$((n + 1))
    url=$on pid=$on_pid
    [[ $v == off ]] && url=$off pid=$off_pid
    before=$(cpu_ticks "$pid")
    load "$name (metrics $v) $n" "$url" "$method" "" "$token" "$conns" 5
    cpu["$name (metrics $v) $n"]=$(($(cpu_ticks "$pid") - before))
  done
}
compare "GET /health" "$auth_off/health" "$auth/health" "$auth_off_pid" "$auth_pid"
compare "POST /auth/me" "$auth_off/auth/me" "$auth/auth/me" "$auth_off_pid" "$auth_pid" POST "$token"
compare "GET /payments/{reference}" "$pay_off/payments/$reference" "$pay/payments/$reference" \
  "$pay_off_pid" "$pay_pid" GET "$token"

hash_ms=$(./target/x86_64-unknown-linux-gnu/release/examples/bcrypt_time "$cost" 20)
load "POST /auth/login" "$auth/auth/login" POST "$credentials"
# Health while logins keep every core busy: a light probe beside a full login load.
BENCH_METHOD=POST BENCH_BODY=$credentials \
  wrk -t1 -c"$conns" -d"$((duration + 4))s" -s setup/bench.lua "$auth/auth/login" >/dev/null &
login_load=$!
sleep 2
load "GET /health under login load" "$auth/health" GET "" "" 2 "$duration"
wait "$login_load"
# A log-in flood: more clients at once than the hashing queue holds (cores x 17). The payment
# reads beside it must stay fast, and logins past the queue are answered 503 at once instead of
# waiting out the 30 s timeout.
flood=${BENCH_FLOOD_CONNECTIONS:-256}
BENCH_METHOD=POST BENCH_BODY=$credentials \
  wrk -t2 -c"$flood" -d"$((duration + 4))s" --timeout 35s --latency -s setup/bench.lua \
  "$auth/auth/login" >"$work/flood.out" &
flood_load=$!
sleep 2
load "GET /payments/{reference} under a log-in flood" "$pay/payments/$reference" GET "" "$token" 8 "$duration"
wait "$flood_load"
flood_line=$(grep '^RESULT' "$work/flood.out" | cut -d' ' -f2-)
auth_peak=$(rss_kib "$auth_pid" VmHWM)

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f %%", 100 * a / b }'; }
field() { echo "${result[$1]}" | cut -d' ' -f"$2"; }
yard=$(field yardstick 1)
bound=$(awk -v c="$cores" -v ms="$hash_ms" 'BEGIN { printf "%.1f", c * 1000 / ms }')

echo
echo "## Figures ($(date -u +%Y-%m-%dT%H:%MZ), $cores cores, wrk -t2 -c$conns -d${duration}s)"
echo
echo "| measurement | req/s | p50 ms | p99 ms | failed | vs reference |"
echo "|---|---|---|---|---|---|"
row() { printf '| %s | %s | %s | %s | %s | %s |\n' "$1" "$(field "$1" 1)" "$(field "$1" 2)" "$(field "$1" 3)" "$(field "$1" 4)" "$2"; }
row yardstick "reference"
row "GET /health" "$(ratio "$(field "GET /health" 1)" "$yard") of yard-stick (target >= 40 %)"
row "POST /auth/me" "$(ratio "$(field "POST /auth/me" 1)" "$yard") of yard-stick (target >= 20 %, p99 < 10 ms)"
row "POST /payments" "$(ratio "$(field "POST /payments" 1)" "$yard") of yard-stick (target >= 5 %)"
row "GET /payments/{reference}" "$(ratio "$(field "GET /payments/{reference}" 1)" "$yard") of yard-stick (target >= 10 %)"
row "POST /auth/login" "$(ratio "$(field "POST /auth/login" 1)" "$bound") of bcrypt bound $bound/s (target >= 85 %)"
row "GET /health under login load" "p99 target < 25 ms"
row "GET /payments/{reference} under a log-in flood" "p99 target < 50 ms"
echo
echo "The metrics' cost: each path on an instance with METRICS_PORT=off and on one that counts, three rounds of 5 s each, alternated; req/s, and the CPU time the instance spent per request (target: on within 3 % of off)"
echo
# total NAME VARIANT: the req/s of its rounds, summed.
total() {
  local key sum=0
  for key in "${!result[@]}"; do
    [[ $key == "$1 (metrics $2) "* ]] || continue
    sum=$(awk -v a="$sum" -v b="${result[$key]%% *}" 'BEGIN { print a + b }')
  done
  echo "$sum"
}
# per_request NAME VARIANT: the instance's CPU microseconds per request over its rounds.
per_request() {
  local key ticks=0 requests=0
  for key in "${!result[@]}"; do
    [[ $key == "$1 (metrics $2) "* ]] || continue
    ticks=$((ticks + cpu[$key]))
    requests=$((requests + $(cut -d' ' -f5 <<<"${result[$key]}")))
  done
  awk -v t="$ticks" -v r="$requests" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.2f", t / hz * 1e6 / r }'
}
echo "| path | off req/s (sum of 3) | on req/s (sum of 3) | on vs off | off CPU µs/request | on CPU µs/request | on vs off |"
echo "|---|---|---|---|---|---|---|"
for path in "GET /health" "POST /auth/me" "GET /payments/{reference}"; do
  off_total=$(total "$path" off)
  on_total=$(total "$path" on)
  off_cpu=$(per_request "$path" off)
  on_cpu=$(per_request "$path" on)
  printf '| %s | %.0f | %.0f | %s | %s | %s | %s |\n' "$path" "$off_total" "$on_total" \
    "$(ratio "$on_total" "$off_total")" "$off_cpu" "$on_cpu" "$(ratio "$on_cpu" "$off_cpu")"
done
# In-process, where the machine's noise is smaller: the CPU the counting adds to a request that
# does nothing else, against each path's CPU per request on its instance without metrics.
read -r bare_ns counted_ns <<<"$(./target/x86_64-unknown-linux-gnu/release/examples/metrics_cost 400000)"
echo
echo "In-process (examples/metrics_cost): $bare_ns ns of CPU per request without the metrics layer, $counted_ns ns with it: +$((counted_ns - bare_ns)) ns per request"
for path in "GET /health" "POST /auth/me" "GET /payments/{reference}"; do
  awk -v add="$((counted_ns - bare_ns))" -v off="$(per_request "$path" off)" -v p="$path" \
    'BEGIN { printf "  %s: %.1f %% of its %.2f µs without metrics\n", p, add / 10 / off, off }'
done
read -r f_rps f_p50 f_p99 f_failed f_total <<<"$flood_line"
echo
echo "log-in flood, $flood connections: $f_total answered in $((duration + 4)) s ($f_rps/s), p50 $f_p50 ms, p99 $f_p99 ms; $f_failed not 200 (503 past the hashing queue, or errors)"
echo
echo "bcrypt cost $cost: ${hash_ms} ms per hash, bound = $cores cores / hash time = $bound logins/s"
echo "auth-svc resident memory: idle $((auth_idle / 1024)) MiB (target <= 20), peak under load $((auth_peak / 1024)) MiB (target <= 64)"
echo "payment-svc resident memory: idle $((pay_idle / 1024)) MiB (target <= 20), peak under load $((pay_peak / 1024)) MiB (target <= 64)"
