#!/bin/bash
# PostgreSQL's archive_command: sends a WAL segment to every repository, but to the copy
# (repo 2) only while it does not hold another database cluster's backups. stackctl marks that
# with /var/lib/pgbackrest/copy-held-back (a new host's first database, beside the copy of the
# lost host's), so the new one archives to its own volume instead of failing for both. Its name
# holds "pgbackrest": pgBackRest checks that archive_command does.
set -euo pipefail
if [[ -e /var/lib/pgbackrest/copy-held-back ]]; then
  unset $(compgen -v PGBACKREST_REPO2_)
fi
exec pgbackrest archive-push "$1"
