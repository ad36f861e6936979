#!/usr/bin/env bash
# What continuous archiving costs POST /b/payments through the edge, in one run on one stack:
# the payments database as stackctl runs it (every WAL segment to the archive volume and, with
# backup.copy_to, encrypted to the copy), and the same database without archiving (a container
# with the same image, volumes, network name and settings but ARCHIVE_TIMEOUT_SECS, so no
# archive_command), measured on, off, on, off.
#   setup/bench-archive.sh                 20 s per measurement, 32 connections
#   BENCH_DURATION=60 setup/bench-archive.sh
set -euo pipefail
duration=${BENCH_DURATION:-20}
conns=${BENCH_CONNECTIONS:-32}
source "$(dirname "$0")/bench-lib.sh"
copy=$(mktemp -d /tmp/stackctl-bench-copy.XXXXXX)
without=bench-archive-off
bench_archive_cleanup() {
  docker rm -f "$without" >/dev/null 2>&1 || true
  bench_cleanup
  rm -rf "$copy"
}
bench_stack bench-archive 27
trap bench_archive_cleanup EXIT
printf '[backup]\ncopy_to = "%s"\n' "$copy" >>stack.toml
"$ctl" -q up

api "$edge/a/auth/register" \
  -d '{"email":"bench@example.com","phone":"+256772999997","password":"bench-password"}' >/dev/null
token=$(api "$edge/a/auth/login" -d '{"identifier":"bench@example.com","password":"bench-password"}' |
  sed -E 's/.*"accessToken":"([^"]+)".*/\1/')
payment='{"amount":"12.50","currency":"USD","paymentMethod":"MOBILE_MONEY","customerPhone":"+256772123456"}'

healthy() {
  for _ in $(seq 1 300); do
    [[ $(docker inspect -f '{{.State.Health.Status}}' "$1" 2>/dev/null) == healthy ]] && return 0
    sleep 0.2
  done
  echo "bench: $1 is not healthy" >&2
  return 1
}

# The database container stackctl made, stopped; in its place the same without archiving.
archiving_off() {
  docker stop -t 30 payments-db >/dev/null
  local env=$work/off.env
  (umask 077 && docker inspect -f '{{range .Config.Env}}{{println .}}{{end}}' payments-db |
    grep -v -e '^ARCHIVE_TIMEOUT_SECS=' -e '^$' >"$env")
  docker run -d --name "$without" --env-file "$env" --volumes-from payments-db \
    --network "$(docker inspect -f '{{range $n, $_ := .NetworkSettings.Networks}}{{$n}}{{end}}' payments-db)" \
    --network-alias payments-db \
    --memory "$(docker inspect -f '{{.HostConfig.Memory}}' payments-db)" \
    --health-cmd "$(docker inspect -f '{{join .Config.Healthcheck.Test " "}}' payments-db | sed 's/^CMD-SHELL //; s/^CMD //')" \
    --health-interval 1s \
    "$(docker inspect -f '{{.Config.Image}}' payments-db)" >/dev/null
  rm -f "$env"
  healthy "$without"
  if docker exec "$without" psql -U payments -d payments -Atc 'SHOW archive_mode' | grep -qx on; then
    echo "bench: archiving is still on" >&2
    return 1
  fi
}

archiving_on() {
  docker rm -f "$without" >/dev/null
  docker start payments-db >/dev/null
  healthy payments-db
}

archived() { docker exec payments-db psql -U payments -d payments -Atc 'SELECT archived_count FROM pg_stat_archiver'; }

declare -a on off
measure() {
  # The services' pools reconnect to the database that came up; a short load first.
  BENCH_METHOD=POST BENCH_BODY=$payment BENCH_TOKEN=$token \
    wrk -t2 -c"$conns" -d3s -s "$repo/setup/bench.lua" "$edge/b/payments" >/dev/null
  BENCH_METHOD=POST BENCH_BODY=$payment BENCH_TOKEN=$token \
    wrk -t2 -c"$conns" -d"${duration}s" --latency -s "$repo/setup/bench.lua" "$edge/b/payments" |
    grep '^RESULT' | cut -d' ' -f2-
}

echo "==> POST /b/payments through the edge: wrk -t2 -c$conns -d${duration}s, archiving on, off, on, off" >&2
segments=0
for round in 1 2; do
  before=$(archived)
  on[$round]=$(measure)
  segments=$((segments + $(archived) - before))
  printf '  on  %s\n' "${on[$round]}" >&2
  archiving_off
  off[$round]=$(measure)
  printf '  off %s\n' "${off[$round]}" >&2
  archiving_on
done

field() { cut -d' ' -f"$2" <<<"$1"; }
mean() { awk -v a="$(field "$1" "$3")" -v b="$(field "$2" "$3")" 'BEGIN { printf "%.1f", (a + b) / 2 }'; }
rps_on=$(mean "${on[1]}" "${on[2]}" 1)
rps_off=$(mean "${off[1]}" "${off[2]}" 1)
echo
echo "## What archiving costs POST /b/payments (\`setup/bench-archive.sh\`, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores)"
echo
echo "| run | archiving | req/s | p50 ms | p99 ms | failed | requests |"
echo "|---|---|---|---|---|---|---|"
row() { printf '| %s | %s | %s |\n' "$1" "$2" "$(sed 's/ / | /g' <<<"$3")"; }
for round in 1 2; do
  row "$round" on "${on[$round]}"
  row "$round" off "${off[$round]}"
done
echo
echo "| measurement | value |"
echo "|---|---|"
echo "| req/s with archiving, mean of 2 | $rps_on |"
echo "| req/s without, mean of 2 | $rps_off |"
echo "| ratio on / off (target >= 0.95) | $(awk -v a="$rps_on" -v b="$rps_off" 'BEGIN { printf "%.3f", a / b }') |"
echo "| WAL segments archived during the $((2 * duration)) s with archiving (to the archive and the copy) | $segments |"
