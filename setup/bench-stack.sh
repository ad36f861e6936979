#!/usr/bin/env bash
# Figures of the whole stack on this machine's Docker engine:
#  - cold `stackctl up` (no images: everything built), with the checkout's build and with a
#    `cargo install`ed one run from an empty folder with no cargo on the PATH, and warm
#    `stackctl up` (images and data present, containers removed), beside `docker-compose up -d` on an equivalent compose file
#    with the same images, volumes and settings, timed until every container is healthy;
#  - image sizes;
#  - req/s and p99 through the TLS edge (rate limit raised) for GET /a/health, POST /a/auth/me
#    and POST /b/payments, beside nginx answering on its own on the same TLS listener.
# Uses project "bench" on ports 28080, 28443, 25432, 25433 and removes it at the end.
#   setup/bench-stack.sh               BENCH_DURATION=30 setup/bench-stack.sh
#   BENCH_SKIP_COLD=1 setup/bench-stack.sh   keep the images (skips the cold figure)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
duration=${BENCH_DURATION:-10}
conns=${BENCH_CONNECTIONS:-32}

bash setup/setup.sh
echo "==> building stackctl (release)" >&2
cargo build --release --locked -p stackctl >&2
ctl="$repo/target/x86_64-unknown-linux-gnu/release/stackctl"

work=$(mktemp -d /tmp/stackctl-bench-stack.XXXXXX)
compose() { docker-compose -p benchcompose -f "$work/compose.yml" "$@"; }
cleanup() {
  cd "$work" || return
  "$ctl" -q down --volumes --yes >/dev/null 2>&1 || true
  if [[ -f compose.yml ]]; then compose down >/dev/null 2>&1 || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
cd "$work"
cat >stack.toml <<'TOML'
project = "bench"
[ports]
http = 28080
https = 28443
auth_db = 25432
payments_db = 25433
[services.auth]
bcrypt_cost = 10
[nginx]
rate_limit_per_minute = 6000000
rate_limit_burst = 100000
login_rate_limit_per_minute = 6000000
login_rate_limit_burst = 100000
TOML

# seconds COMMAND...: wall time of a command that must succeed.
seconds() {
  local start end
  start=$(date +%s.%N)
  "$@" >"$work/cmd.out" 2>"$work/cmd.err" || { cat "$work/cmd.err" >&2; return 1; }
  end=$(date +%s.%N)
  awk -v s="$start" -v e="$end" 'BEGIN { printf "%.1f", e - s }'
}

# Data of an interrupted earlier run was made with other secrets.
"$ctl" -q down --volumes --yes
if [[ -z ${BENCH_SKIP_COLD:-} ]]; then
  "$ctl" -q down --images --yes
  echo "==> cold up (builds every image)" >&2
  cold=$(seconds "$ctl" up)
  "$ctl" -q down --volumes --yes
  # The same, as a user runs it: installed, from an empty folder, no cargo on the PATH.
  echo "==> cold up of an installed stackctl" >&2
  cargo install --locked --offline --quiet --path "$repo/cli" --root "$work/root" \
    --target-dir "$repo/target" >&2
  "$ctl" -q down --images --yes
  mkdir "$work/installed"
  installed_cold=$(cd "$work/installed" && env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
    STACKCTL_PROJECT=bench STACKCTL_HTTP_PORT=28080 STACKCTL_HTTPS_PORT=28443 \
    STACKCTL_AUTH_DB_PORT=25432 STACKCTL_PAYMENTS_DB_PORT=25433 \
    bash -c "$(declare -f seconds); work=$work; seconds $work/root/bin/stackctl up")
  (cd "$work/installed" && STACKCTL_PROJECT=bench "$work/root/bin/stackctl" -q down --volumes --yes)
  "$ctl" -q up
else
  "$ctl" -q up
  cold="skipped"
  installed_cold="skipped"
fi
"$ctl" -q down
echo "==> warm up" >&2
warm=$(seconds "$ctl" up)
sizes=$(sed -nE 's/^ +(stackctl\/[^ ]+): (.*)$/| \1 | \2 |/p' "$work/cmd.err")

# The same containers as a compose file: images, environment, volumes, ports, health checks.
"$ctl" ps --json >ps.json
image() { python3 -c "import json,sys; print(next(c['image'] for c in json.load(open('ps.json')) if c['name']==sys.argv[1]))" "$1"; }
secret() { "$ctl" secrets show "$1"; }
cat >compose.yml <<YAML
version: "2.4"
networks:
  default:
    name: app-network
volumes:
  auth-db-data:
    name: bench_auth-db-data
    external: true
  payments-db-data:
    name: bench_payments-db-data
    external: true
x-db-health: &dbhealth
  interval: 2s
  timeout: 3s
  retries: 30
x-auth-health: &authhealth
  test: ["CMD", "/stackctl", "serve", "auth", "healthcheck"]
  interval: 2s
  timeout: 3s
  retries: 3
x-payments-health: &paymentshealth
  test: ["CMD", "/stackctl", "serve", "payments", "healthcheck"]
  interval: 2s
  timeout: 3s
  retries: 3
services:
  auth-db:
    image: $(image auth-db)
    container_name: auth-db
    environment: {POSTGRES_USER: auth, POSTGRES_PASSWORD: "$(secret auth_db_password)", POSTGRES_DB: nest}
    volumes: ["auth-db-data:/var/lib/postgresql/data"]
    ports: ["127.0.0.1:25432:5432"]
    healthcheck: {<<: *dbhealth, test: ["CMD", "pg_isready", "-h", "127.0.0.1", "-U", "auth", "-d", "nest"]}
  payments-db:
    image: $(image payments-db)
    container_name: payments-db
    environment: {POSTGRES_USER: payments, POSTGRES_PASSWORD: "$(secret payments_db_password)", POSTGRES_DB: payments}
    volumes: ["payments-db-data:/var/lib/postgresql/data"]
    ports: ["127.0.0.1:25433:5432"]
    healthcheck: {<<: *dbhealth, test: ["CMD", "pg_isready", "-h", "127.0.0.1", "-U", "payments", "-d", "payments"]}
YAML
for i in 1 2; do
  cat >>compose.yml <<YAML
  app_a$i:
    image: $(image app_a1)
    container_name: app_a$i
    hostname: app_a$i
    read_only: true
    environment:
      DATABASE_URL: "postgres://auth:$(secret auth_db_password)@auth-db:5432/nest"
      JWT_SECRET: "$(secret jwt_secret)"
      PORT: "3000"
      BCRYPT_COST: "10"
    networks: {default: {aliases: [auth-svc]}}
    healthcheck: *authhealth
    depends_on: {auth-db: {condition: service_healthy}}
  app_b$i:
    image: $(image app_b1)
    container_name: app_b$i
    hostname: app_b$i
    read_only: true
    environment:
      DATABASE_URL: "postgres://payments:$(secret payments_db_password)@payments-db:5432/payments"
      WEBHOOK_SECRET: "$(secret webhook_secret)"
      AUTH_SERVICE_URL: "http://auth-svc:3000"
      PORT: "4000"
    healthcheck: *paymentshealth
    depends_on: {payments-db: {condition: service_healthy}, app_a$i: {condition: service_healthy}}
YAML
done
cat >>compose.yml <<YAML
  nginx-proxy:
    image: $(image nginx-proxy)
    container_name: nginx-proxy
    volumes: ["$work/.stackctl/nginx:/etc/nginx/site:ro", "$work/.stackctl/tls:/etc/nginx/tls:ro"]
    ports: ["28080:80", "28443:443"]
    healthcheck: {test: ["CMD", "bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/443"], interval: 2s, timeout: 3s, retries: 5}
    depends_on:
      app_a1: {condition: service_healthy}
      app_a2: {condition: service_healthy}
      app_b1: {condition: service_healthy}
      app_b2: {condition: service_healthy}
YAML
chmod 600 compose.yml

# docker-compose 1.29 has no --wait: poll until all seven report healthy.
compose_up_wait() {
  compose up -d >/dev/null 2>&1
  for _ in $(seq 1 600); do
    [[ $(compose ps | grep -c '(healthy)') -eq 7 ]] && return 0
    sleep 0.2
  done
  echo "docker-compose stack did not become healthy" >&2
  return 1
}
"$ctl" -q down
echo "==> docker-compose up -d, same images and volumes" >&2
compose_warm=$(seconds compose_up_wait)
compose down >/dev/null 2>&1
"$ctl" -q up

echo "==> load through the TLS edge: wrk -t2 -c$conns -d${duration}s" >&2
edge=https://localhost:28443
curl -fs --cacert .stackctl/tls/cert.pem "$edge/a/auth/register" -H 'Content-Type: application/json' \
  -d '{"email":"bench@example.com","phone":"+256772999998","password":"bench-password"}' >/dev/null
token=$(curl -fs --cacert .stackctl/tls/cert.pem "$edge/a/auth/login" -H 'Content-Type: application/json' \
  -d '{"identifier":"bench@example.com","password":"bench-password"}' | sed -E 's/.*"accessToken":"([^"]+)".*/\1/')
payment='{"amount":"12.50","currency":"USD","paymentMethod":"MOBILE_MONEY","customerPhone":"+256772123456"}'
declare -A result
load() {
  local name=$1 url=$2 method=${3:-GET} body=${4:-} tok=${5:-}
  result[$name]=$(BENCH_METHOD=$method BENCH_BODY=$body BENCH_TOKEN=$tok \
    wrk -t2 -c"$conns" -d"${duration}s" --latency -s "$repo/setup/bench.lua" "$url" | grep '^RESULT' | cut -d' ' -f2-)
  printf '  %-28s %s\n' "$name" "${result[$name]}" >&2
}
load "edge only (/edge/ping)" "$edge/edge/ping"
load "GET /a/health" "$edge/a/health"
load "POST /a/auth/me" "$edge/a/auth/me" POST "" "$token"
load "POST /b/payments" "$edge/b/payments" POST "$payment" "$token"

field() { echo "${result[$1]}" | cut -d' ' -f"$2"; }
ref=$(field "edge only (/edge/ping)" 1)
echo
echo "## Stack figures ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores)"
echo
echo "| measurement | seconds |"
echo "|---|---|"
echo "| cold stackctl up (no images), checkout's release build | $cold |"
echo "| cold stackctl up (no images), installed, empty folder, no cargo on the PATH | $installed_cold |"
echo "| warm stackctl up (images, data present) | $warm |"
echo "| docker-compose up -d until healthy, same images and data | $compose_warm |"
echo "| ratio warm stackctl / compose (target <= 1.0) | $(awk -v a="$warm" -v b="$compose_warm" 'BEGIN { printf "%.2f", a / b }') |"
echo
echo "| image | size |"
echo "|---|---|"
echo "$sizes"
echo
echo "| through the edge (TLS) | req/s | p50 ms | p99 ms | failed | vs edge alone |"
echo "|---|---|---|---|---|---|"
for name in "edge only (/edge/ping)" "GET /a/health" "POST /a/auth/me" "POST /b/payments"; do
  printf '| %s | %s | %s | %s | %s | %s |\n' "$name" "$(field "$name" 1)" "$(field "$name" 2)" \
    "$(field "$name" 3)" "$(field "$name" 4)" \
    "$(awk -v a="$(field "$name" 1)" -v b="$ref" 'BEGIN { printf "%.1f %%", 100 * a / b }')"
done
