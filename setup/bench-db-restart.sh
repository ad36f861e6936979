#!/usr/bin/env bash
# The database-restart drill: a steady load through the edge (POST /a/auth/me, GET and POST
# /b/payments), the main process of one database container killed with SIGKILL (its restart
# policy brings it back), and the answers counted: served, 503 (the contract while a database is
# out of reach), 500s and other failures, and the seconds from the kill until the last answer
# that was not 2xx. Once for each database, in the same run.
# Uses project "bench-drill" on ports 24080, 24443, 24432, 24433 and removes it at the end.
#   setup/bench-db-restart.sh
set -euo pipefail
source "$(dirname "$0")/bench-lib.sh"
bench_stack bench-drill 24

api "$edge/a/auth/register" -d '{"email":"drill@example.com","phone":"+256772999996","password":"drill-password"}' >/dev/null
token=$(api "$edge/a/auth/login" -d '{"identifier":"drill@example.com","password":"drill-password"}' |
  sed -E 's/.*"accessToken":"([^"]+)".*/\1/')
reference=$(api "$edge/b/payments" -H "Authorization: Bearer $token" \
  -d '{"amount":"12.50","currency":"USD","paymentMethod":"CARD","customerPhone":"+254712345678"}' |
  sed -E 's/.*"reference":"([^"]+)".*/\1/')

healthy() { [[ $(docker inspect -f '{{.State.Health.Status}}' "$1") == healthy ]]; }

echo
echo "| database killed | requests | served | 503 | 500s and failures | other | seconds from kill to last failure | seconds until healthy |"
echo "|---|---|---|---|---|---|---|---|"
for db in auth-db payments-db; do
  LOAD_TOKEN=$token LOAD_REFERENCE=$reference \
    wrk -t2 -c8 -d10m --timeout 10s -s "$repo/setup/drill.lua" "$edge" >"$work/drill.out" 2>"$work/drill.err" &
  load=$!
  sleep 5
  killed=$(date +%s)
  kill -KILL "$(docker inspect -f '{{.State.Pid}}' "$db")"
  sleep 2
  until healthy "$db"; do sleep 0.2; done
  up=$(($(date +%s) - killed))
  sleep 15
  kill -INT "$load"
  wait "$load" || true
  line=$(grep '^DRILL' "$work/drill.out")
  cat "$work/drill.err" >&2
  get() { sed -E "s/.* $1=([0-9]+).*/\1/" <<<" $line"; }
  last=$(get last)
  recover=$(( last == 0 ? 0 : last - killed + 1 ))
  printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "$db" "$(get requests)" "$(get ok)" \
    "$(get unavailable)" "$(get errors)" "$(get other)" "$recover" "$up"
  sleep 3
done
