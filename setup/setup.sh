#!/usr/bin/env bash
# Installs what a fresh Debian 12 host needs to build, test and benchmark stackctl.
# Idempotent: packages already present are left alone, so a second run takes seconds.
set -euo pipefail

packages=(
  postgresql-15    # server binaries for the test clusters (initdb, pg_ctl)
  postgresql-client-15
  nginx-light      # the benchmark's yard-stick
  wrk              # load generator for the benchmarks
  nghttp2-client   # h2load: the HTTP/2 client of the zero-failed-request tests
  libnginx-mod-http-lua lua-cjson  # the edge's balancer, measured alone (bench-balancer.sh)
  python3-venv     # Schemathesis' own environment (setup/fuzz-api.sh)
  mmdebstrap       # builds the Debian base image on engines with no registry
  chromium         # renders the Swagger UI in the end-to-end test
  iproute2 util-linux  # ip, nsenter, unshare: the test cluster's nodes (setup/cluster.sh)
  openssl          # the test cluster's TLS engines (setup/cluster.sh)
  openssh-server openssh-client  # its ssh:// engine, sshd in a node's namespace only
  ca-certificates
  curl
  tmux             # a real terminal for the interactive tests (psql, status --watch)
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "setup: need root to install: ${missing[*]} (run: sudo $0)" >&2
    exit 1
  fi
  echo "==> installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # Debian starts the services it installs (nginx, sshd); the project runs its own instances,
  # so none may start on the host: policy-rc.d forbids it during the install.
  policy=/usr/sbin/policy-rc.d
  [[ -e $policy ]] || { printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && trap 'rm -f "$policy"' EXIT; }
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  if command -v systemctl >/dev/null && systemctl is-active --quiet nginx 2>/dev/null; then
    systemctl stop nginx || true
  fi
  if pgrep -x nginx >/dev/null 2>&1 && [[ -f /run/nginx.pid ]]; then
    nginx -s quit 2>/dev/null || true
  fi
fi

if ! command -v cargo >/dev/null; then
  echo "setup: cargo not found; install Rust stable (rustup) first" >&2
  exit 1
fi

echo "==> host ready: $(/usr/lib/postgresql/15/bin/postgres --version), $(nginx -v 2>&1), $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2)" >&2
