#!/usr/bin/env bash
# A real multi-node Docker cluster on one machine, for the cluster tests: N extra Docker engines,
# each in a network namespace of its own, joined by veth pairs to a bridge in a "switch"
# namespace (so overlay traffic between nodes really crosses a network), and the host joined to
# that switch too, so tests reach the nodes' published ports. The host's own engine is left alone.
#   setup/cluster-nodes.sh start DIR [N]   start N nodes (default 3); prints one line per node:
#                                          "NAME ADDRESS unix://DIR/NAME.sock"
#   setup/cluster-nodes.sh stop DIR        stop the engines, remove the namespaces and DIR
# Needs root. Nodes are 192.168.200.11, .12, …; the host is 192.168.200.1.
set -euo pipefail

cmd=${1:-}
dir=${2:-}
count=${3:-3}
[[ -n $cmd && -n $dir ]] || { echo "usage: $0 start|stop DIR [N]" >&2; exit 2; }
[[ $(id -u) -eq 0 ]] || { echo "cluster-nodes: needs root (network namespaces)" >&2; exit 1; }

PREFIX=192.168.200
SWITCH=stk-switch

node_names() {
  local i
  for i in $(seq "$1"); do echo "stk-n$i"; done
}

stop() {
  local pidfile pid
  for pidfile in "$dir"/*/docker.pid; do
    [[ -f $pidfile ]] || continue
    pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  done
  for netns in $(ip netns list | awk '/^stk-/ { print $1 }'); do
    ip netns delete "$netns"
  done
  ip link delete stk-host 2>/dev/null || true
  # Overlay mounts of the nodes' containers, if a daemon died without unmounting.
  grep -o "$dir/[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  rm -rf "$dir"
}

start() {
  local driver i name address
  driver=$(docker info -f '{{.Driver}}')
  mkdir -p "$dir"
  ip netns add "$SWITCH"
  ip -n "$SWITCH" link add br0 type bridge
  ip -n "$SWITCH" link set br0 up
  ip -n "$SWITCH" link set lo up

  # The host's side of the switch.
  ip link add stk-host type veth peer name host netns "$SWITCH"
  ip -n "$SWITCH" link set host master br0 up
  ip addr add "$PREFIX.1/24" dev stk-host
  ip link set stk-host up

  i=0
  for name in $(node_names "$count"); do
    i=$((i + 1))
    address=$PREFIX.$((10 + i))
    ip netns add "$name"
    ip -n "$name" link set lo up
    ip link add "$name" netns "$SWITCH" type veth peer name eth0 netns "$name"
    ip -n "$SWITCH" link set "$name" master br0 up
    ip -n "$name" addr add "$address/24" dev eth0
    ip -n "$name" link set eth0 up
    ip -n "$name" route add default via "$PREFIX.1"

    mkdir -p "$dir/$name"
    cat >"$dir/$name/daemon.json" <<JSON
{
  "data-root": "$dir/$name/data",
  "exec-root": "$dir/$name/exec",
  "pidfile": "$dir/$name/docker.pid",
  "hosts": ["unix://$dir/$name.sock"],
  "containerd-namespace": "$name",
  "containerd-plugins-namespace": "$name-plugins",
  "storage-driver": "$driver",
  "mtu": 1400
}
JSON
    # nsenter, not `ip netns exec`: that remounts /sys and leaves the cgroup mount empty. A UTS
    # namespace of its own gives the node its own host name (swarm names nodes by it).
    DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1 nsenter --net="/run/netns/$name" unshare --uts \
      sh -c 'hostname "$1" && exec dockerd --config-file "$2"' sh "$name" \
      "$dir/$name/daemon.json" >"$dir/$name/dockerd.log" 2>&1 &
  done

  for name in $(node_names "$count"); do
    for _ in $(seq 300); do
      docker -H "unix://$dir/$name.sock" version >/dev/null 2>&1 && break
      sleep 0.1
    done
    docker -H "unix://$dir/$name.sock" version >/dev/null 2>&1 || {
      echo "cluster-nodes: $name did not start:" >&2
      tail -n 20 "$dir/$name/dockerd.log" >&2
      return 1
    }
  done
  i=0
  for name in $(node_names "$count"); do
    i=$((i + 1))
    echo "$name $PREFIX.$((10 + i)) unix://$dir/$name.sock"
  done
}

case $cmd in
start)
  if ! start; then
    stop
    exit 1
  fi
  ;;
stop) stop ;;
*)
  echo "usage: $0 start|stop DIR [N]" >&2
  exit 2
  ;;
esac
