#!/usr/bin/env bash
# Figures of `stackctl backup` and `stackctl restore` on a payments database of BENCH_ROWS
# payments (default 1,000,000) with one history row each, beside the by-hand pipelines run in
# the same database container in the same run:
#   backup:  `pg_dump | gzip -6 > file` in the container   (throughput ratio, target >= 1.0)
#   restore: `gunzip -c file | psql --single-transaction`   (time ratio, target <= 1.0)
#   size:    the backup file beside `gzip -6` of the same dump
#   drill:   `stackctl backup verify payments` (a throwaway database, the replay, the checks)
#            beside the by-hand replay: what a drill adds to a restore
#   archive: the physical backup `stackctl backup` adds; for each database in turn, a writer
#            commits a row every 0.1 s while the database's container is killed and its data
#            volume deleted, then `restore APP --to latest`: its time (recovery time) and how
#            many seconds of acknowledged commits it lost (recovery point;
#            backup.archive_timeout_secs bounds it)
# Uses project "bench-backup" on ports 21080, 21443, 21432, 21433 and removes it at the end.
#   setup/bench-backup.sh          BENCH_ROWS=200000 setup/bench-backup.sh
set -euo pipefail
source "$(dirname "$0")/bench-lib.sh"
rows=${BENCH_ROWS:-1000000}
bench_stack bench-backup 21
db() { docker exec -u postgres payments-db "$@"; }
psql_pay() { db psql -U payments -d payments -v ON_ERROR_STOP=1 -qAt "$@"; }

echo "==> filling payments with $rows rows (and one history row each)" >&2
psql_pay -c "
INSERT INTO payments (id, reference, user_id, amount, currency, payment_method, customer_phone,
                      customer_email, description, state, created_at, updated_at)
SELECT gen_random_uuid(),
       'PAY-' || (1764000000000 + i) || '-' || upper(substr(md5(i::text), 1, 10)),
       ('00000000-0000-4000-8000-' || lpad(to_hex(i % 5000), 12, '0'))::uuid,
       round((random() * 10000 + 1)::numeric, 2), 'USD', 'CARD', '+254712345678',
       'customer' || i || '@example.com', 'order ' || i, 'SUCCESS',
       now() - make_interval(secs => i), now() - make_interval(secs => i)
FROM generate_series(1, $rows) AS i" -c "
INSERT INTO payment_transactions (id, payment_id, status, source, amount, currency, created_at)
SELECT gen_random_uuid(), id, 'SUCCESS', 'api', amount, currency, created_at FROM payments" \
  -c "VACUUM ANALYZE"
dump_mb=$(db bash -c "pg_dump -U payments -d payments --clean --if-exists | wc -c" | awk '{ printf "%.1f", $1 / 1e6 }')

# seconds COMMAND...: wall time of a command that must succeed; its output in $work/cmd.out.
seconds() {
  local start end
  start=$(date +%s.%N)
  "$@" >"$work/cmd.out" 2>&1 || { cat "$work/cmd.out" >&2; return 1; }
  end=$(date +%s.%N)
  awk -v s="$start" -v e="$end" 'BEGIN { printf "%.2f", e - s }'
}

# The by-hand dump goes to the data volume: the container's /tmp is a 64 MB tmpfs.
ref=/var/lib/postgresql/data/bench-ref.sql.gz
echo "==> backup: by hand in the container, then stackctl" >&2
ref_backup=$(seconds db bash -c "pg_dump -U payments -d payments --clean --if-exists | gzip -6 >$ref")
ref_size=$(db stat -c %s "$ref")
seconds "$ctl" backup payments >/dev/null
# The dump's own time, and the physical backup's, from their lines.
ctl_backup=$(sed -nE 's/^==> payments: .*\.sql\.gz \(.*, ([0-9.]+)s\)$/\1/p' "$work/cmd.out")
physical=$(sed -nE 's/^==> payments: physical backup (full|differential) .* \(([0-9.]+)s\)$/\2 (\1)/p' "$work/cmd.out")
file=$(ls backups/payments/*.sql.gz | tail -1)
ctl_size=$(stat -c %s "$file")

echo "==> restore: by hand in the container, then stackctl" >&2
ref_restore=$(seconds db bash -c "gunzip -c $ref | psql -U payments -d payments --single-transaction -v ON_ERROR_STOP=1 -q -X >/dev/null")
db rm -f "$ref"
ctl_restore=$(seconds "$ctl" restore payments "$file" --yes)
replay=$(sed -nE 's/.*replayed in ([0-9.]+)s.*/\1/p' "$work/cmd.out")

echo "==> restore drill of the same backup" >&2
ctl_drill=$(seconds "$ctl" backup verify payments)

# point_in_time APP CONTAINER SUPERUSER DATABASE: a writer commits a row every 0.1 s into the
# database for 90 s, its container is removed with SIGKILL and its data volume deleted, then
# `restore APP --to latest`. Sets rto (seconds), lost, acked_n and rpo (seconds before the kill
# the oldest lost commit was acknowledged).
point_in_time() {
  local app=$1 container=$2 user=$3 database=$4
  echo "==> point in time, $app: a writer, the database and its volume lost, restore --to latest" >&2
  in_db() { docker exec -u postgres "$container" psql -U "$user" -d "$database" -v ON_ERROR_STOP=1 -qAt "$@"; }
  in_db -c "CREATE TABLE IF NOT EXISTS rpo_probe (n bigint PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())"
  local acked=$work/acked-$app
  : >"$acked"
  (
    n=0
    while in_db -c "INSERT INTO rpo_probe (n) VALUES ($((n + 1)))" >/dev/null 2>&1; do
      n=$((n + 1))
      echo "$n $(date +%s.%N)" >>"$acked"
      sleep 0.1
    done
  ) &
  local writer=$!
  sleep 90
  local killed_at
  killed_at=$(date +%s.%N)
  docker rm -f "$container" >/dev/null
  wait "$writer" || true
  docker volume rm "bench-backup_$container-data" >/dev/null
  rto=$(seconds "$ctl" restore "$app" --to latest --yes)
  local last
  last=$(in_db -c "SELECT coalesce(max(n), 0) FROM rpo_probe")
  acked_n=$(tail -1 "$acked" | cut -d' ' -f1)
  lost=$((acked_n - last))
  rpo=$(awk -v n="$((last + 1))" -v k="$killed_at" 'BEGIN { r = "0.0" } $1 == n { r = sprintf("%.1f", k - $2) } END { print r }' "$acked")
}
point_in_time payments payments-db payments payments
pay_rto=$rto pay_lost=$lost pay_acked=$acked_n pay_rpo=$rpo
auth_users=$(docker exec -u postgres auth-db psql -U auth -d nest -qAt -c "SELECT count(*) FROM users")
auth_mb=$(docker exec -u postgres auth-db psql -U auth -d nest -qAt -c "SELECT round(pg_database_size('nest') / 1e6, 1)")
point_in_time auth auth-db auth nest

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
mbps() { awk -v m="$dump_mb" -v s="$1" 'BEGIN { printf "%.1f", m / s }'; }
echo
echo "## Backup and restore ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $rows payments + $rows history rows, dump $dump_mb MB)"
echo
echo "| measurement | stackctl | by hand in the container | ratio | target |"
echo "|---|---|---|---|---|"
echo "| backup, MB of dump per second | $(mbps "$ctl_backup") ($ctl_backup s) | $(mbps "$ref_backup") ($ref_backup s, pg_dump \| gzip -6) | $(ratio "$ref_backup" "$ctl_backup") | >= 1.0 |"
echo "| backup file size, MB | $(awk -v b="$ctl_size" 'BEGIN { printf "%.1f", b / 1e6 }') | $(awk -v b="$ref_size" 'BEGIN { printf "%.1f", b / 1e6 }') (gzip -6) | $(ratio "$ctl_size" "$ref_size") | |"
echo "| restore: replay in one transaction, s | $replay | $ref_restore (gunzip \| psql --single-transaction) | $(ratio "$replay" "$ref_restore") | <= 1.0 |"
echo "| restore: whole command, s (checks, safety backup, instances stopped and started) | $ctl_restore | | | |"
echo "| restore drill (\`backup verify\`: throwaway database, replay, migrations, every table read, amcheck), s | $ctl_drill | $ref_restore (the replay alone) | $(ratio "$ctl_drill" "$ref_restore") | |"
echo "| physical backup into the archive (\`stackctl backup\` after its dump), s | $physical | | | |"
echo "| payments: restore --to latest after the data volume is lost (recovery time), s | $pay_rto | $ref_restore (replaying the dump by hand) | $(ratio "$pay_rto" "$ref_restore") | |"
echo "| payments: commits lost by it (recovery point): acknowledged commits, and seconds before the kill | $pay_lost of $pay_acked, the oldest of them acknowledged $pay_rpo s before the kill | | | <= backup.archive_timeout_secs (60) |"
echo "| auth ($auth_users users, $auth_mb MB): restore --to latest after the data volume is lost (recovery time), s | $rto | | | |"
echo "| auth: commits lost by it (recovery point) | $lost of $acked_n, the oldest of them acknowledged $rpo s before the kill | | | <= backup.archive_timeout_secs (60) |"
