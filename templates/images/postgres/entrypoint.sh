#!/bin/bash
# Initialises the cluster on first start (as the official image does), then runs PostgreSQL
# as the postgres user in the foreground.
set -euo pipefail
# A swarm secret is a file: POSTGRES_PASSWORD_FILE names it.
if [[ -z ${POSTGRES_PASSWORD:-} && -n ${POSTGRES_PASSWORD_FILE:-} ]]; then
  POSTGRES_PASSWORD=$(<"$POSTGRES_PASSWORD_FILE")
fi
: "${POSTGRES_USER:?POSTGRES_USER is required}"
: "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD is required}"
: "${POSTGRES_DB:=$POSTGRES_USER}"
: "${PGDATA:=/var/lib/postgresql/data}"

as_postgres() { setpriv --reuid=postgres --regid=postgres --init-groups "$@"; }

mkdir -p "$PGDATA" /var/run/postgresql /var/lib/pgbackrest /tmp/pgbackrest
chown postgres:postgres "$PGDATA" /var/run/postgresql /var/lib/pgbackrest /tmp/pgbackrest
chmod 700 "$PGDATA"
# The archive's copy (backup.copy_to) when it is a host folder; one in an S3 store has none.
if [[ -n ${PGBACKREST_REPO2_PATH:-} && ${PGBACKREST_REPO2_TYPE:-posix} == posix ]]; then
  chown postgres:postgres "$PGBACKREST_REPO2_PATH"
fi

if [[ ! -s $PGDATA/PG_VERSION ]]; then
  echo "initialising database cluster in $PGDATA"
  pwfile=$(mktemp)
  printf '%s' "$POSTGRES_PASSWORD" >"$pwfile"
  chown postgres "$pwfile"
  as_postgres initdb -D "$PGDATA" -U "$POSTGRES_USER" --pwfile="$pwfile" \
    --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 >/dev/null
  rm -f "$pwfile"
  echo "listen_addresses = '*'" >>"$PGDATA/postgresql.conf"
  echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
  if [[ $POSTGRES_DB != postgres ]]; then
    as_postgres pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
    as_postgres psql -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d postgres \
      -c "CREATE DATABASE \"$POSTGRES_DB\"" >/dev/null
    as_postgres pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
  fi
fi

# Every WAL segment goes to the repository as it fills, and at least every ARCHIVE_TIMEOUT_SECS:
# what a restore to the latest moment can lose. A segment the repository does not take (no
# stanza yet, say) stays in pg_wal and is offered again.
archiving=()
if [[ -n ${ARCHIVE_TIMEOUT_SECS:-} ]]; then
  archiving=(-c wal_level=replica -c archive_mode=on
    -c "archive_command=/usr/local/bin/pgbackrest-archive-push %p"
    -c "archive_timeout=${ARCHIVE_TIMEOUT_SECS}s")
fi

# jit=off: the image leaves out LLVM, the JIT compiler (two thirds of PostgreSQL's packages).
exec setpriv --reuid=postgres --regid=postgres --init-groups postgres -D "$PGDATA" -c jit=off \
  "${archiving[@]}" "$@"
