#!/usr/bin/env bash
# A real multi-node Docker cluster on one machine, for the cluster tests: N extra Docker engines,
# each in a network namespace of its own, joined by veth pairs to a bridge in a "switch"
# namespace (so overlay traffic between nodes really crosses a network), and the host joined to
# that switch too, so tests reach the nodes' published ports. The host's own engine is left alone.
#   setup/cluster.sh start DIR [N]     start N nodes (default 3) and write DIR/cluster.toml (the
#                                      `[cluster]` table for them, node 1 labelled edge and
#                                      auth-db, node 2 payments-db) and DIR/edge-address (where
#                                      node 1's published ports answer from the host). Node 1 is
#                                      reached on a unix socket, node 2 over ssh (an sshd in its
#                                      namespace only, keys in DIR/ssh; its host key is added to
#                                      root's known_hosts and removed by `stop`), the others on
#                                      TCP with TLS (a CA and certificates made in DIR/tls,
#                                      client certificate required), as remote hosts are; every
#                                      node has its socket DIR/stk-nN.sock too.
#   setup/cluster.sh stop-node DIR N   stop node N's engine (a lost node)
#   setup/cluster.sh start-node DIR N  start it again (the node returns)
#   setup/cluster.sh cut-node DIR N    cut node N off the network, its engine left running
#   setup/cluster.sh join-node DIR N   put it back on the network
#   setup/cluster.sh stop DIR          stop the engines, remove the namespaces and DIR
# Needs root. Nodes are 192.168.200.11, .12, …; the host is 192.168.200.1.
set -euo pipefail

cmd=${1:-}
dir=${2:-}
arg=${3:-}
usage() {
  echo "usage: $0 start DIR [N] | stop DIR | stop-node|start-node|cut-node|join-node DIR N" >&2
  exit 2
}
[[ -n $cmd && -n $dir ]] || usage
[[ $(id -u) -eq 0 ]] || { echo "cluster: needs root (network namespaces)" >&2; exit 1; }

PREFIX=192.168.200
SWITCH=stk-switch

node_names() {
  local i
  for i in $(seq "$1"); do echo "stk-n$i"; done
}

# This node is reached over ssh; those from FIRST_TLS_NODE on over TCP with TLS.
SSH_NODE=2
FIRST_TLS_NODE=3
TLS_PORT=2376

# An sshd in node SSH_NODE's namespace, for root with a key made here, whose `docker` (run by
# stackctl's ssh connection as `docker system dial-stdio`) talks to that node's engine.
start_sshd() {
  local ssh=$dir/ssh name=stk-n$SSH_NODE
  mkdir -p "$ssh" /run/sshd
  # A host key of an earlier cluster at this address would be refused as a changed one.
  ssh-keygen -R "$PREFIX.$((10 + SSH_NODE))" >/dev/null 2>&1
  ssh-keygen -q -t ed25519 -N '' -C "$name" -f "$ssh/host_key" || return 1
  ssh-keygen -q -t ed25519 -N '' -C stackctl-test -f "$ssh/id_ed25519" || return 1
  printf 'environment="DOCKER_HOST=unix://%s/%s.sock" %s\n' "$dir" "$name" \
    "$(cat "$ssh/id_ed25519.pub")" >"$ssh/authorized_keys"
  cat >"$ssh/sshd_config" <<CONF
ListenAddress $PREFIX.$((10 + SSH_NODE))
HostKey $ssh/host_key
AuthorizedKeysFile $ssh/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitUserEnvironment DOCKER_HOST
StrictModes no
UsePAM no
PidFile $ssh/sshd.pid
CONF
  nsenter --net="/run/netns/$name" /usr/sbin/sshd -f "$ssh/sshd_config" -E "$ssh/sshd.log"
}

stop_sshd() {
  local pidfile=$dir/ssh/sshd.pid address=$PREFIX.$((10 + SSH_NODE))
  if [[ -f $pidfile ]]; then
    kill "$(cat "$pidfile")" 2>/dev/null || true
  fi
  # ssh masters that a killed stackctl left (ControlPersist) would wait on a gone network.
  pkill -f "^ssh .*-M .* root@$address\$" 2>/dev/null || true
  ssh-keygen -R "$address" >/dev/null 2>&1 || true
}

# A CA, a server certificate for each TLS node's address, and one client certificate.
make_tls() {
  local count=$1 tls=$dir/tls i address
  mkdir -p "$tls"
  (
    umask 077
    cd "$tls"
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=stk-ca \
      -keyout ca-key.pem -out ca.pem 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj /CN=stackctl -keyout client-key.pem \
      -out client.csr 2>/dev/null
    printf 'extendedKeyUsage = clientAuth\n' >client.ext
    openssl x509 -req -in client.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 2 \
      -extfile client.ext -out client-cert.pem 2>/dev/null
    for i in $(seq "$FIRST_TLS_NODE" "$count"); do
      address=$PREFIX.$((10 + i))
      openssl req -newkey rsa:2048 -nodes -subj "/CN=$address" -keyout "stk-n$i-key.pem" \
        -out "stk-n$i.csr" 2>/dev/null
      printf 'subjectAltName = IP:%s\nextendedKeyUsage = serverAuth\n' "$address" >"stk-n$i.ext"
      openssl x509 -req -in "stk-n$i.csr" -CA ca.pem -CAkey ca-key.pem -CAcreateserial \
        -days 2 -extfile "stk-n$i.ext" -out "stk-n$i-cert.pem" 2>/dev/null
    done
  )
}

# How stackctl reaches node I (NAME): its `engine` (and `tls`) in the [cluster] table.
engine_of() {
  local i=$1 name=$2
  if ((i == SSH_NODE)); then
    printf 'engine = "ssh://root@%s", ssh_key = "%s"' "$PREFIX.$((10 + i))" "$dir/ssh/id_ed25519"
  elif ((i >= FIRST_TLS_NODE)); then
    printf 'engine = "tcp://%s:%s", tls = { ca = "%s", cert = "%s", key = "%s" }' \
      "$PREFIX.$((10 + i))" "$TLS_PORT" "$dir/tls/ca.pem" "$dir/tls/client-cert.pem" \
      "$dir/tls/client-key.pem"
  else
    printf 'engine = "unix://%s/%s.sock"' "$dir" "$name"
  fi
}

stop() {
  local node
  stop_sshd
  for node in "$dir"/stk-n*/; do
    [[ -d $node ]] && stop_daemon "$(basename "$node")"
  done
  for netns in $(ip netns list | awk '/^stk-/ { print $1 }'); do
    # What still runs there (sshd's sessions) would keep the namespace alive.
    ip netns pids "$netns" 2>/dev/null | xargs -r kill 2>/dev/null || true
    ip netns delete "$netns"
  done
  ip link delete stk-host 2>/dev/null || true
  # Overlay mounts of the nodes' containers, if a daemon died without unmounting.
  grep -o "$dir/[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  rm -rf "$dir"
}

# Starts node NAME's engine in its namespace (its configuration written by `start`).
start_daemon() {
  local name=$1
  # nsenter, not `ip netns exec`: that remounts /sys and leaves the cgroup mount empty. A UTS
  # namespace of its own gives the node its own host name (swarm names nodes by it).
  DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1 nsenter --net="/run/netns/$name" unshare --uts \
    sh -c 'hostname "$1" && exec dockerd --config-file "$2"' sh "$name" \
    "$dir/$name/daemon.json" >>"$dir/$name/dockerd.log" 2>&1 &
}

wait_daemon() {
  local name=$1
  for _ in $(seq 300); do
    docker -H "unix://$dir/$name.sock" version >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "cluster: $name did not start:" >&2
  tail -n 20 "$dir/$name/dockerd.log" >&2
  return 1
}

stop_daemon() {
  local pidfile=$dir/$1/docker.pid pid
  [[ -f $pidfile ]] || return 0
  pid=$(cat "$pidfile")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
}

start() {
  local driver i name address remote count=${arg:-3}
  # Called in a condition, where `set -e` does not apply: every step says when it failed.
  driver=$(docker info -f '{{.Driver}}') || return 1
  mkdir -p "$dir"
  ip netns add "$SWITCH" || return 1
  ip -n "$SWITCH" link add br0 type bridge
  ip -n "$SWITCH" link set br0 up
  ip -n "$SWITCH" link set lo up

  # The host's side of the switch.
  ip link add stk-host type veth peer name host netns "$SWITCH"
  ip -n "$SWITCH" link set host master br0 up
  ip addr add "$PREFIX.1/24" dev stk-host
  ip link set stk-host up

  make_tls "$count" || return 1
  i=0
  for name in $(node_names "$count"); do
    i=$((i + 1))
    address=$PREFIX.$((10 + i))
    ip netns add "$name" || return 1
    ip -n "$name" link set lo up
    ip link add "$name" netns "$SWITCH" type veth peer name eth0 netns "$name"
    ip -n "$SWITCH" link set "$name" master br0 up
    ip -n "$name" addr add "$address/24" dev eth0
    ip -n "$name" link set eth0 up
    ip -n "$name" route add default via "$PREFIX.1"

    mkdir -p "$dir/$name"
    if ((i >= FIRST_TLS_NODE)); then
      remote=", \"tcp://$address:$TLS_PORT\"],
  \"tlsverify\": true,
  \"tlscacert\": \"$dir/tls/ca.pem\",
  \"tlscert\": \"$dir/tls/$name-cert.pem\",
  \"tlskey\": \"$dir/tls/$name-key.pem\","
    else
      remote="],"
    fi
    cat >"$dir/$name/daemon.json" <<JSON
{
  "data-root": "$dir/$name/data",
  "exec-root": "$dir/$name/exec",
  "pidfile": "$dir/$name/docker.pid",
  "hosts": ["unix://$dir/$name.sock"$remote
  "containerd-namespace": "$name",
  "containerd-plugins-namespace": "$name-plugins",
  "storage-driver": "$driver",
  "mtu": 1400
}
JSON
    start_daemon "$name"
  done
  for name in $(node_names "$count"); do
    wait_daemon "$name" || return 1
  done
  if ((count >= SSH_NODE)); then
    start_sshd || return 1
  fi

  {
    echo "# Written by setup/cluster.sh: the nodes of the test cluster in $dir."
    echo "[cluster]"
    echo "nodes = ["
    i=0
    for name in $(node_names "$count"); do
      i=$((i + 1))
      case $i in
      1) labels=', labels = ["edge", "auth-db"]' ;;
      2) labels=', labels = ["payments-db"]' ;;
      *) labels='' ;;
      esac
      echo "  { $(engine_of "$i" "$name"), address = \"$PREFIX.$((10 + i))\"$labels },"
    done
    echo "]"
  } >"$dir/cluster.toml"
  echo "$PREFIX.11" >"$dir/edge-address"
  i=0
  for name in $(node_names "$count"); do
    i=$((i + 1))
    echo "$name $PREFIX.$((10 + i)) $(engine_of "$i" "$name")"
  done
}

# The name of node N, refusing one this cluster does not have.
node() {
  local n=$1
  [[ $n =~ ^[0-9]+$ && -f $dir/stk-n$n/daemon.json ]] || {
    echo "cluster: no node $n in $dir" >&2
    exit 2
  }
  echo "stk-n$n"
}

case $cmd in
start)
  # One at a time: the namespaces and addresses are fixed (and `stop` would take the other's).
  if ip netns list | grep -q "^$SWITCH\b"; then
    echo "cluster: a test cluster already runs (namespace $SWITCH); stop it first" >&2
    exit 1
  fi
  if ! start; then
    stop
    exit 1
  fi
  ;;
stop) stop ;;
stop-node)
  name=$(node "$arg")
  stop_daemon "$name"
  ;;
start-node)
  name=$(node "$arg")
  start_daemon "$name"
  wait_daemon "$name"
  ;;
# The node's link to the switch goes down: its engine runs on, unreachable by the others.
cut-node)
  name=$(node "$arg")
  ip -n "$SWITCH" link set "$name" down
  ;;
join-node)
  name=$(node "$arg")
  ip -n "$SWITCH" link set "$name" up
  ;;
*) usage ;;
esac
