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

echo "==> cargo test --workspace" >&2
cargo test --workspace --locked "$@"
