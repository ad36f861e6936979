#!/usr/bin/env bash
# The project's test command: installs what the host lacks, starts a throwaway PostgreSQL,
# runs every test of the workspace against it, and removes the cluster again.
set -euo pipefail
cd "$(dirname "$0")/.."

bash setup/setup.sh

work=$(mktemp -d /tmp/stackctl-test.XXXXXX)
chmod 755 "$work"
cleanup() { bash setup/test-postgres.sh stop "$work/pg" || true; rm -rf "$work"; }
trap cleanup EXIT

echo "==> starting a throwaway PostgreSQL" >&2
DATABASE_URL=$(bash setup/test-postgres.sh start "$work/pg")
export DATABASE_URL

if (($#)); then
  cargo test --locked "$@"
else
  # --include-ignored: the end-to-end test of stackctl against the Docker engine too.
  echo "==> cargo test --workspace (with the Docker end-to-end test)" >&2
  cargo test --workspace --locked -- --include-ignored
  bash setup/fuzz-api.sh
fi
