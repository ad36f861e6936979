#!/usr/bin/env bash
# Property-based tests of the HTTP contract: Schemathesis generates requests from each service's
# OpenAPI document (valid ones, and invalid ones) and runs every check it has — a schema-valid
# request refused, an invalid one accepted, an answer not as documented, a 5xx — against both
# services, run natively on loopback with a throwaway database each. Any finding fails the run.
# What a schema cannot say is in setup/fuzz/ (the `phone` format, idempotency's 422).
#   setup/fuzz-api.sh [MAX_EXAMPLES]    (examples per operation and phase; default 30)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
examples=${1:-30}

venv=${STACKCTL_FUZZ_VENV:-$HOME/.cache/stackctl/schemathesis-4.32.5}
if [[ ! -x $venv/bin/st ]]; then
  echo "==> installing Schemathesis into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q schemathesis==4.32.5
fi
# The release build the images carry: after the end-to-end tests it is nearly all there.
echo "==> building the services (release)" >&2
cargo build --release --locked -p auth-svc -p payment-svc --bins >&2
bin=$repo/target/x86_64-unknown-linux-gnu/release

work=$(mktemp -d /tmp/stackctl-fuzz.XXXXXX)
chmod 755 "$work"
pids=()
cleanup() {
  ((${#pids[@]})) && kill "${pids[@]}" 2>/dev/null
  bash "$repo/setup/test-postgres.sh" stop "$work/pg" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

url=$(bash setup/test-postgres.sh start "$work/pg")
psql "$url" -qc 'CREATE DATABASE auth' -c 'CREATE DATABASE payments'

source setup/free-port.sh
auth_port=$(free_port)
payments_port=$(free_port)
while [[ $payments_port == "$auth_port" ]]; do payments_port=$(free_port); done
# Secrets of this run only, passed in the environment as the services require.
secret() { head -c 32 /dev/urandom | base64 | tr -d '/+='; }

# serving NAME PID PORT: waits up to 60 s for the service to answer its health check; says why
# (its log) when it does not, or when it exits first.
serving() {
  for _ in $(seq 600); do
    curl -fs "http://127.0.0.1:$3/health" >/dev/null && return 0
    kill -0 "$2" 2>/dev/null || break
    sleep 0.1
  done
  echo "fuzz: $1 does not answer on port $3; its log:" >&2
  cat "$work/$1.log" >&2
  return 1
}
DATABASE_URL=${url%/*}/auth JWT_SECRET=$(secret)$(secret) HOST=127.0.0.1 PORT=$auth_port \
  AUTH_TEST_MODE=true BCRYPT_COST=4 "$bin/auth-svc" >"$work/auth.log" 2>&1 &
pids+=($!)
serving auth "$!" "$auth_port"
DATABASE_URL=${url%/*}/payments WEBHOOK_SECRET=$(secret) HOST=127.0.0.1 PORT=$payments_port \
  AUTH_SERVICE_URL=http://127.0.0.1:$auth_port "$bin/payment-svc" >"$work/payments.log" 2>&1 &
pids+=($!)
serving payments "$!" "$payments_port"

api() { curl -fsS -H 'Content-Type: application/json' "$@"; }
api "http://127.0.0.1:$auth_port/auth/register" \
  -d '{"email":"fuzz@example.com","phone":"+256772123456","password":"fuzz-password"}' >/dev/null
token=$(api "http://127.0.0.1:$auth_port/auth/login" \
  -d '{"identifier":"fuzz@example.com","password":"fuzz-password"}' |
  sed -E 's/.*"accessToken":"([^"]+)".*/\1/')

# Schemathesis and Hypothesis keep their databases in the current folder: the run's own.
cd "$work"
export SCHEMATHESIS_HOOKS=$repo/setup/fuzz/hooks.py
status=0
for service in auth:$auth_port payments:$payments_port; do
  name=${service%:*}
  port=${service#*:}
  echo "==> Schemathesis: $name ($examples examples per operation)" >&2
  "$venv/bin/st" --config-file "$repo/setup/fuzz/schemathesis.toml" run \
    "http://127.0.0.1:$port/docs/openapi.json" --url "http://127.0.0.1:$port" \
    --checks all --max-examples "$examples" -H "Authorization: Bearer $token" || status=1
done
if ((status)); then
  echo "fuzz-api: findings above; the services' logs:" >&2
  tail -n 20 "$work/auth.log" "$work/payments.log" >&2
fi
exit $status
