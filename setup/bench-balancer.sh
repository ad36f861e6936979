#!/usr/bin/env bash
# The cost of the edge's Lua balancer (templates/images/nginx/stack_routes.lua) at the proxy
# alone: one nginx worker proxying to a backend that answers at once (nginx `return 200`, two
# ports), through nginx's own round robin and through the balancer, same keep-alive pools,
# alternating, three rounds of wrk -t1 -c32. Prints req/s and the ratio.
#   setup/bench-balancer.sh        BENCH_DURATION=10 setup/bench-balancer.sh
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${BENCH_DURATION:-5}
bash setup/setup.sh

work=$(mktemp -d /tmp/stackctl-balancer.XXXXXX)
chmod 755 "$work"
cleanup() {
  [[ -f $work/nginx.pid ]] && kill "$(cat "$work/nginx.pid")" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

source setup/free-port.sh
front=$(free_port)
back1=$(free_port)
back2=$(free_port)
mkdir -p "$work/lua"
cp templates/images/nginx/stack_routes.lua "$work/lua/"
echo "{\"auth\":[\"127.0.0.1:$back1\",\"127.0.0.1:$back2\"]}" >"$work/routes.json"
cat >"$work/nginx.conf" <<CONF
load_module /usr/lib/nginx/modules/ndk_http_module.so;
load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;
worker_processes 1;
pid $work/nginx.pid;
error_log $work/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  lua_package_path "$work/lua/?.lua;;";
  lua_shared_dict stack_routes 1m;
  init_by_lua_block { require("stack_routes").init("$work/routes.json") }
  upstream round_robin {
    server 127.0.0.1:$back1 max_fails=3 fail_timeout=10s;
    server 127.0.0.1:$back2 max_fails=3 fail_timeout=10s;
    keepalive 32;
  }
  upstream balancer {
    server 127.0.0.1:9 down;
    balancer_by_lua_block { require("stack_routes").balance("auth") }
    keepalive 32;
  }
  server { listen 127.0.0.1:$back1; listen 127.0.0.1:$back2; location / { return 200 "ok"; } }
  server {
    listen 127.0.0.1:$front;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    location /round_robin/ { proxy_pass http://round_robin/; }
    location /balancer/ { proxy_pass http://balancer/; }
  }
}
CONF
nginx -c "$work/nginx.conf" -p "$work"
sleep 0.5
for upstream in round_robin balancer; do
  curl -fs "http://127.0.0.1:$front/$upstream/" >/dev/null
done

declare -A total=([round_robin]=0 [balancer]=0)
echo "==> 3 rounds, ${duration} s per measurement" >&2
for round in 1 2 3; do
  for upstream in round_robin balancer; do
    rps=$(wrk -t1 -c32 -d"${duration}s" "http://127.0.0.1:$front/$upstream/" |
      awk '/Requests\/sec/ { print $2 }')
    total[$upstream]=$(awk -v a="${total[$upstream]}" -v b="$rps" 'BEGIN { print a + b }')
    printf '  round %d %-12s %s req/s\n' "$round" "$upstream" "$rps" >&2
  done
done
echo
echo "## The Lua balancer at the proxy alone ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores)"
echo
echo "| upstream | req/s (mean of 3) | vs round robin |"
echo "|---|---|---|"
awk -v r="${total[round_robin]}" -v b="${total[balancer]}" 'BEGIN {
  printf "| nginx round robin | %.0f | reference |\n", r / 3
  printf "| stack_routes.lua balancer | %.0f | %.1f %% |\n", b / 3, 100 * b / r
}'
