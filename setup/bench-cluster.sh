#!/usr/bin/env bash
# Figures of the stack on a real three-node swarm built on this machine (setup/cluster.sh):
# `up` on nodes that have no image yet (built here first when missing; the seconds spent
# loading them into the three engines are shown apart) and a second `up`; each `scale`, rolling
# `restart` and `certs --force` under two steady loads through the edge node (setup/load.lua: a
# connection per request, and reused keep-alive connections), with the requests served and
# failed meanwhile; and the loss
# of the node that runs only instances, its engine stopped, then its network cut, under the same
# loads and a probe of ten health checks a second: requests failed, and the seconds from the
# loss to the last failed probe. Needs root. Uses project "bench-cluster" on ports 30080 and
# 30443 of the nodes and removes the cluster at the end.
#   setup/bench-cluster.sh
set -euo pipefail
source "$(dirname "$0")/bench-lib.sh"
repo=$(cd "$(dirname "$0")/.." && pwd)
bash "$repo/setup/setup.sh"
echo "==> building stackctl (release)" >&2
(cd "$repo" && cargo build --release --locked -p stackctl >&2)
ctl="$repo/target/x86_64-unknown-linux-gnu/release/stackctl"
work=$(mktemp -d /tmp/stackctl-bench-cluster.XXXXXX)
nodes=$work/nodes
cleanup() {
  (cd "$work" && "$ctl" -q down --volumes --yes) >/dev/null 2>&1 || true
  bash "$repo/setup/cluster.sh" stop "$nodes" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
cd "$work"

echo "==> three nodes" >&2
bash "$repo/setup/cluster.sh" start "$nodes" >/dev/null
address=$(cat "$nodes/edge-address")
cat >stack.toml <<TOML
project = "bench-cluster"
[ports]
http = 30080
https = 30443
[services.auth]
bcrypt_cost = 10
[nginx]
rate_limit_per_minute = 6000000
rate_limit_burst = 100000
login_rate_limit_per_minute = 6000000
login_rate_limit_burst = 100000
$(cat "$nodes/cluster.toml")
TOML
"$ctl" -q cluster init

seconds() { awk -v s="$1" -v e="$2" 'BEGIN { printf "%.1f", e - s }'; }
start=$(date +%s.%N)
"$ctl" up >/dev/null 2>"$work/up.err"
cold=$(seconds "$start" "$(date +%s.%N)")
shipped=$(sed -nE 's/.* MB in ([0-9.]+)s\)$/\1/p' "$work/up.err" | awk '{ s += $1 } END { printf "%.1f", s }')
start=$(date +%s.%N)
"$ctl" -q up >/dev/null
warm=$(seconds "$start" "$(date +%s.%N)")

# The API answers for localhost, the name on the certificate; the loads go to the address.
edge=https://$address:30443
api() {
  curl -fs --cacert "$work/.stackctl/tls/cert.pem" --resolve "localhost:30443:$address" \
    -H 'Content-Type: application/json' "${@:1:$#-1}" "https://localhost:30443${*: -1}"
}
api -d '{"email":"cluster@example.com","phone":"+256772999996","password":"bench-password"}' /a/auth/register >/dev/null
export LOAD_TOKEN LOAD_REFERENCE LOAD_DELAY_MS=${BENCH_DELAY_MS:-20}
LOAD_TOKEN=$(api -d '{"identifier":"cluster@example.com","password":"bench-password"}' /a/auth/login |
  sed -E 's/.*"accessToken":"([^"]+)".*/\1/')
LOAD_REFERENCE=$(api -H "Authorization: Bearer $LOAD_TOKEN" \
  -d '{"amount":"12.50","currency":"USD","paymentMethod":"CARD","customerPhone":"+254712345678"}' /b/payments |
  sed -E 's/.*"reference":"([^"]+)".*/\1/')

echo "==> steps under load (2 × wrk -t2 -c4, ${LOAD_DELAY_MS} ms between requests of a connection)" >&2
step "scale auth 2 → 3" "$ctl" -q scale auth 3
step "scale auth 3 → 1" "$ctl" -q scale auth 1
step "scale auth 1 → 2" "$ctl" -q scale auth 2
step "scale payments 2 → 1" "$ctl" -q scale payments 1
step "scale payments 1 → 3" "$ctl" -q scale payments 3
step "scale payments 3 → 2" "$ctl" -q scale payments 2
step "restart auth (rolling, 2 tasks)" "$ctl" -q restart auth
step "restart payments (rolling, 2 tasks)" "$ctl" -q restart payments
step "certs --force (the edge reloads in place)" "$ctl" -q certs --force

# Whether both services run two healthy tasks, none of them on node 3.
replaced() {
  "$ctl" ps --json | python3 -c '
import json, sys
tasks = json.load(sys.stdin)
ok = lambda s: sum(t["service"] == s and t["node"] != "stk-n3" and t["health"] == "healthy" for t in tasks)
sys.exit(0 if ok("auth") == 2 and ok("payments") == 2 else 1)'
}
# Ten health checks a second through the edge, one line each: seconds since the epoch, status.
probe() {
  while :; do
    printf '%s %s\n' "$(date +%s.%N)" \
      "$(curl -sk -o /dev/null -w '%{http_code}' --max-time 10 "$edge/a/health")"
    sleep 0.1
  done
}
losses=()
# lose HOW BACK: node 3 lost (its engine stopped, or its link cut) until its instances run
# healthy elsewhere, then 10 s more; then it comes back.
lose() {
  local how=$1 back=$2 lost probe_pid last failed total
  probe >"$work/probe.out" &
  probe_pid=$!
  sleep 2
  lost=$(date +%s.%N)
  bash "$repo/setup/cluster.sh" "$how" "$nodes" 3
  for _ in $(seq 240); do replaced && break; sleep 0.5; done
  local healthy_after
  healthy_after=$(seconds "$lost" "$(date +%s.%N)")
  sleep 10
  kill "$probe_pid"
  wait "$probe_pid" 2>/dev/null || true
  total=$(awk -v t="$lost" '$1 >= t' "$work/probe.out" | wc -l)
  failed=$(awk -v t="$lost" '$1 >= t && $2 != "200"' "$work/probe.out" | wc -l)
  last=$(awk -v t="$lost" '$1 >= t && $2 != "200" { l = $1 - t } END { printf "%.1f", l + 0 }' "$work/probe.out")
  losses+=("| node 3 lost: $how | $failed of $total | $last | $healthy_after |")
  bash "$repo/setup/cluster.sh" "$back" "$nodes" 3
  for _ in $(seq 120); do
    "$ctl" cluster status --json | grep -q '"state": "down"' || break
    sleep 0.5
  done
}
step "node 3 (instances only): engine stopped" lose stop-node start-node
step "node 3 (instances only): network cut" lose cut-node join-node

echo
echo "## The stack on three nodes (\`setup/bench-cluster.sh\`, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores)"
echo
echo "| up | seconds |"
echo "|---|---|"
echo "| on three nodes without images | $cold |"
echo "| … of which loading the images into the three nodes | $shipped |"
echo "| again, nothing to change | $warm |"
echo
echo "| step | seconds | requests (a connection each) | failed | requests (keep-alive) | failed |"
echo "|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
echo
echo "| loss | health checks failed (10/s) | seconds from the loss to the last failure | seconds until its instances ran healthy elsewhere |"
echo "|---|---|---|---|"
printf '%s\n' "${losses[@]}"
