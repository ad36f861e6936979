#!/usr/bin/env bash
# Figures of `stackctl scale` and `stackctl restart` under a steady mixed load through the TLS
# edge (setup/load.lua: reads and writes of both services) from two kinds of client at once, one
# opening a connection per request and one reusing its HTTP/1.1 connections: the wall time of
# each step and the requests served and failed while it ran (failed must be 0). As the same
# run's references: the by-hand way, `docker restart` of each payment instance in turn with no
# drain and no health gate; and ten nginx reloads (the way routes changed before they moved out
# of nginx's configuration), which cost the keep-alive client requests.
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

echo "==> steps under load (2 × wrk -t2 -c4, ${LOAD_DELAY_MS} ms between requests of a connection)" >&2
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
reloads() { for _ in $(seq 10); do docker exec nginx-proxy stack-edge reload && sleep 0.5; done; }
step "reference: 10 nginx reloads, 0.5 s apart" reloads

echo
echo "## Scale and rolling replacement under load ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores)"
echo
echo "| step | seconds | requests (a connection each) | failed | requests (keep-alive) | failed |"
echo "|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
