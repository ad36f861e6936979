#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for tests and benchmarks.
#   setup/test-postgres.sh start DIR   initdb + start on a free loopback port; prints DATABASE_URL
#   setup/test-postgres.sh stop DIR    stop it and delete DIR
# Durability is switched off: the data is disposable and the tests want speed.
set -euo pipefail

bin=/usr/lib/postgresql/15/bin
cmd=${1:-}
dir=${2:-}
[[ -n $cmd && -n $dir ]] || { echo "usage: $0 start|stop DIR" >&2; exit 2; }

# initdb refuses to run as root; run the cluster as the postgres user then.
as_owner() {
  if [[ $(id -u) -eq 0 ]]; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi
}

# A port nothing answers on, from a random start: two clusters starting at once (two test runs)
# would otherwise both pick the first one.
free_port() {
  local port offset=$((RANDOM % 100))
  for i in $(seq 0 99); do
    port=$((54320 + (offset + i) % 100))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return
    fi
  done
  echo "no free port in 54320-54419" >&2
  return 1
}

case $cmd in
  start)
    [[ -x $bin/initdb ]] || { echo "PostgreSQL 15 server not installed: run setup/setup.sh" >&2; exit 1; }
    mkdir -p "$dir"
    if [[ $(id -u) -eq 0 ]]; then
      chown postgres:postgres "$dir"
      runuser -u postgres -- test -w "$dir" \
        || { echo "user postgres cannot reach $dir: make its parent folders world-executable" >&2; exit 1; }
    fi
    as_owner "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --no-locale >"$dir/initdb.log" 2>&1 \
      || { cat "$dir/initdb.log" >&2; exit 1; }
    # A port free when probed can be taken before the server binds it: then another one.
    for _ in 1 2 3 4 5; do
      port=$(free_port)
      if as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 start -o \
        "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$dir \
         -c max_connections=300 -c shared_buffers=256MB -c fsync=off -c synchronous_commit=off \
         -c full_page_writes=off" >/dev/null; then
        echo "postgres://postgres@127.0.0.1:$port/postgres"
        exit 0
      fi
      grep -q "Address already in use" "$dir/postgres.log" || break
    done
    cat "$dir/postgres.log" >&2
    exit 1
    ;;
  stop)
    if [[ -f $dir/data/postmaster.pid ]]; then
      as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null || true
    fi
    rm -rf "$dir"
    ;;
  *)
    echo "usage: $0 start|stop DIR" >&2
    exit 2
    ;;
esac
