#!/bin/bash
# Restores the data folder from a pgBackRest repository, in a container of its own while the
# database's is stopped (or gone, with its volume):
#   postgres-recover --repo=N latest           up to the last archived WAL
#   postgres-recover --repo=N time TIMESTAMP   every transaction committed before TIMESTAMP
# repo 1 is the archive volume, repo 2 the copy in backup.copy_to. The database then starts,
# replays the archived WAL up to the target and opens for writes on a new timeline. --delta
# keeps the files that are already right, so a restore that was interrupted is simply run again.
set -euo pipefail
repo=${1:?usage: postgres-recover --repo=N latest | time TIMESTAMP}
shift
mkdir -p "$PGDATA" /tmp/pgbackrest
chown postgres:postgres "$PGDATA" /var/lib/pgbackrest /tmp/pgbackrest
if [[ -n ${PGBACKREST_REPO2_PATH:-} && ${PGBACKREST_REPO2_TYPE:-posix} == posix ]]; then
  chown postgres:postgres "$PGBACKREST_REPO2_PATH"
fi
chmod 700 "$PGDATA"
# Left by a database that was killed; its container is stopped now.
rm -f "$PGDATA/postmaster.pid"
case ${1:-} in
latest) target=() ;;
time) target=(--type=time "--target=${2:?a timestamp}" --target-action=promote) ;;
*)
  echo "usage: postgres-recover --repo=N latest | time TIMESTAMP" >&2
  exit 2
  ;;
esac
exec setpriv --reuid=postgres --regid=postgres --init-groups \
  pgbackrest --delta --log-level-console=warn "$repo" "${target[@]}" restore
