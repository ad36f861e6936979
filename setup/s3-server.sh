#!/usr/bin/env bash
# A local S3-compatible store for the tests of backup.copy_to = "s3://…": moto's server, over
# TLS with a certificate of an authority made here, on the Docker bridge's address, which both
# this host and the stack's containers reach. Nothing leaves the machine.
#
#   setup/s3-server.sh start DIR PORT   prints the endpoint (https://ADDRESS:PORT); DIR gets
#                                       ca.pem, credentials (0600), server.pid and server.log
#   setup/s3-server.sh stop DIR
set -euo pipefail

venv=${STACKCTL_MOTO_VENV:-$HOME/.cache/stackctl/moto-5.2.5}

start() {
  local dir=$1 port=$2
  mkdir -p "$dir"
  if [[ ! -x $venv/bin/moto_server ]]; then
    echo "==> installing moto into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q 'moto[server]==5.2.5'
  fi
  local address
  address=$(ip -4 -o addr show docker0 | awk '{ split($4, a, "/"); print a[1]; exit }')
  [[ -n $address ]] || { echo "s3-server: docker0 has no IPv4 address" >&2; exit 1; }
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=stackctl test store CA" \
    -keyout "$dir/ca.key" -out "$dir/ca.pem" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=$address" \
    -keyout "$dir/server.key" -out "$dir/server.csr" 2>/dev/null
  # The address as an IP name for rustls (stackctl), and as a DNS name for pgBackRest, which
  # matches only those.
  printf 'subjectAltName=IP:%s,DNS:%s\nbasicConstraints=CA:FALSE\n' "$address" "$address" >"$dir/server.ext"
  openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
    -CAcreateserial -days 2 -extfile "$dir/server.ext" -out "$dir/server.pem" 2>/dev/null
  (umask 077 && printf 'AWS_ACCESS_KEY_ID=stackctl-test\nAWS_SECRET_ACCESS_KEY=%s\n' \
    "$(openssl rand -hex 20)" >"$dir/credentials")
  setsid "$venv/bin/python" "$(dirname "$0")/s3-server.py" "$address" "$port" "$dir/server.pem" \
    "$dir/server.key" >"$dir/server.log" 2>&1 &
  echo $! >"$dir/server.pid"
  local endpoint="https://$address:$port"
  for _ in $(seq 1 100); do
    if curl -fsS --cacert "$dir/ca.pem" -o /dev/null "$endpoint/" 2>/dev/null; then
      echo "$endpoint"
      return
    fi
    kill -0 "$(cat "$dir/server.pid")" 2>/dev/null || break
    sleep 0.2
  done
  echo "s3-server: moto did not answer at $endpoint" >&2
  cat "$dir/server.log" >&2
  exit 1
}

stop() {
  local dir=$1
  [[ -f $dir/server.pid ]] || return 0
  kill "$(cat "$dir/server.pid")" 2>/dev/null || true
  rm -f "$dir/server.pid"
}

case ${1:-} in
  start) start "$2" "$3" ;;
  stop) stop "$2" ;;
  *) echo "usage: $0 start DIR PORT | stop DIR" >&2; exit 2 ;;
esac
