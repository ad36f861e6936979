#!/usr/bin/env bash
# Figures of `stackctl scale` and `stackctl restart` under a steady mixed load through the TLS
# edge (setup/load.lua: reads and writes of both services): the wall time of each step and the
# requests served and failed while it ran (failed must be 0). As the same run's reference, the
# by-hand way: `docker restart` of each payment instance in turn, with no drain and no health gate.
# Uses project "bench-scale" on ports 29080, 29443, 29432, 29433 and removes it at the end.
#   setup/bench-scale.sh          BENCH_DELAY_MS=10 setup/bench-scale.sh   (a heavier load)
set -euo pipefail
source "$(dirname "$0")/bench-lib.sh"
bench_stack bench-scale 29
api "$edge/a/auth/register" -d '{"email":"scale@example.com","phone":"+256772999997","password":"bench-password"}' >/dev/null
export LOAD_TOKEN LOAD_REFERENCE LOAD_DELAY_MS=${BENCH_DELAY_MS:-20}
LOAD_TOKEN=$(api "$edge/a/auth/login" -d '{"identifier":"scale@example.com","password":"bench-password"}' |
  sed -E 's/.*"accessToken":"([^"]+)".*/\1/')
LOAD_REFERENCE=$(api "$edge/b/payments" -H "Authorization: Bearer $LOAD_TOKEN" \
  -d '{"amount":"12.50","currency":"USD","paymentMethod":"CARD","customerPhone":"+254712345678"}' |
  sed -E 's/.*"reference":"([^"]+)".*/\1/')

rows=()
# step NAME COMMAND...: runs the command under load; records seconds, requests, failures.
step() {
  local name=$1
  shift
  wrk -t2 -c4 -d30m --timeout 10s -s "$repo/setup/load.lua" "$edge" >"$work/wrk.out" 2>"$work/wrk.err" &
  local wrk_pid=$!
  sleep 1
  local start end
  start=$(date +%s.%N)
  "$@" >"$work/step.out" 2>&1 || { cat "$work/step.out" >&2; kill -INT $wrk_pid; return 1; }
  end=$(date +%s.%N)
  sleep 1
  kill -INT $wrk_pid
  wait $wrk_pid || true
  local line
  line=$(grep '^LOAD ' "$work/wrk.out") || { cat "$work/wrk.out" "$work/wrk.err" >&2; return 1; }
  local requests failed
  requests=$(sed -E 's/.*requests=([0-9]+).*/\1/' <<<"$line")
  failed=$(awk '{ n = 0; for (i = 3; i <= NF; i++) { split($i, kv, "="); if (kv[1] != "ok") n += kv[2] } print n }' <<<"$line")
  rows+=("$(printf '| %s | %s | %s | %s |' "$name" "$(awk -v s="$start" -v e="$end" 'BEGIN { printf "%.1f", e - s }')" "$requests" "$failed")")
  printf '  %-40s %s\n' "$name" "${rows[-1]}" >&2
}

echo "==> steps under load (wrk -t2 -c4, ${LOAD_DELAY_MS} ms between requests of a connection)" >&2
step "scale auth 2 → 3" "$ctl" -q scale auth 3
step "scale auth 3 → 1" "$ctl" -q scale auth 1
step "scale auth 1 → 2" "$ctl" -q scale auth 2
step "scale payments 2 → 1" "$ctl" -q scale payments 1
step "scale payments 1 → 3" "$ctl" -q scale payments 3
step "scale payments 3 → 2" "$ctl" -q scale payments 2
step "restart auth (rolling, 2 instances)" "$ctl" -q restart auth
step "restart payments (rolling, 2 instances)" "$ctl" -q restart payments
by_hand() { docker restart app_b1 >/dev/null && sleep 5 && docker restart app_b2 >/dev/null && sleep 5; }
step "reference: docker restart app_b1, app_b2 by hand" by_hand

echo
echo "## Scale and rolling replacement under load ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores)"
echo
echo "| step | seconds | requests | failed |"
echo "|---|---|---|---|"
printf '%s\n' "${rows[@]}"
