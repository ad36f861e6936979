# Sourced by the stack benchmarks: builds stackctl (release) and starts a stack of its own in a
# temporary folder, removed with its data when the script exits.
#   bench_stack PROJECT PORT_PREFIX   ports PREFIX080, PREFIX443, PREFIX432, PREFIX433
# Sets: repo, ctl (the stackctl binary), work (the stack's folder, the current directory), edge
# (its HTTPS URL); api (curl trusting the stack's certificate, JSON body).
bench_stack() {
  local project=$1 prefix=$2
  repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  bash "$repo/setup/setup.sh"
  echo "==> building stackctl (release)" >&2
  (cd "$repo" && cargo build --release --locked -p stackctl >&2)
  ctl="$repo/target/x86_64-unknown-linux-gnu/release/stackctl"
  work=$(mktemp -d "/tmp/stackctl-$project.XXXXXX")
  trap bench_cleanup EXIT
  cd "$work"
  cat >stack.toml <<TOML
project = "$project"
[ports]
http = ${prefix}080
https = ${prefix}443
auth_db = ${prefix}432
payments_db = ${prefix}433
[services.auth]
bcrypt_cost = 10
[nginx]
rate_limit_per_minute = 6000000
rate_limit_burst = 100000
login_rate_limit_per_minute = 6000000
login_rate_limit_burst = 100000
TOML
  # Data of an interrupted earlier run was made with other secrets.
  "$ctl" -q down --volumes --yes
  echo "==> stackctl up" >&2
  "$ctl" -q up
  edge=https://localhost:${prefix}443
}

bench_cleanup() {
  cd "$work" || return
  "$ctl" -q down --volumes --yes >/dev/null 2>&1 || true
  rm -rf "$work"
}

api() { curl -fs --cacert "$work/.stackctl/tls/cert.pem" -H 'Content-Type: application/json' "$@"; }

rows=()
# failures OUT: the requests of a finished wrk run that did not get a 2xx (errors included).
failures() {
  local line
  line=$(grep '^LOAD ' "$1") || { cat "$1" >&2; return 1; }
  awk '{ n = 0; for (i = 3; i <= NF; i++) { split($i, kv, "="); if (kv[1] != "ok") n += kv[2] } print n }' <<<"$line"
}
requests() { sed -nE 's/^LOAD requests=([0-9]+).*/\1/p' "$1"; }

# step NAME COMMAND...: runs the command under both loads (setup/load.lua against $edge, with
# LOAD_TOKEN and LOAD_REFERENCE set); appends a table row to `rows`: seconds, requests, failures.
step() {
  local name=$1
  shift
  LOAD_CONNECTION=close LOAD_INSTANCE=0 wrk -t2 -c4 -d30m --timeout 10s -s "$repo/setup/load.lua" \
    "$edge" >"$work/close.out" 2>&1 &
  local close_pid=$!
  LOAD_CONNECTION=keep-alive LOAD_INSTANCE=1 wrk -t2 -c4 -d30m --timeout 10s \
    -s "$repo/setup/load.lua" "$edge" >"$work/kept.out" 2>&1 &
  local kept_pid=$!
  sleep 1
  local start end
  start=$(date +%s.%N)
  "$@" >"$work/step.out" 2>&1 || { cat "$work/step.out" >&2; kill -INT $close_pid $kept_pid; return 1; }
  end=$(date +%s.%N)
  sleep 1
  kill -INT $close_pid $kept_pid
  wait $close_pid $kept_pid || true
  rows+=("$(printf '| %s | %s | %s | %s | %s | %s |' "$name" \
    "$(awk -v s="$start" -v e="$end" 'BEGIN { printf "%.1f", e - s }')" \
    "$(requests "$work/close.out")" "$(failures "$work/close.out")" \
    "$(requests "$work/kept.out")" "$(failures "$work/kept.out")")")
  printf '  %-40s %s\n' "$name" "${rows[-1]}" >&2
}

