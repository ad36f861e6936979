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
  ctl="$repo/target/release/stackctl"
  export STACKCTL_SOURCE_DIR=$repo
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
