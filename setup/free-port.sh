# Sourced by scripts that start their own servers on loopback.
# free_port: prints a random port in 30000-49999 that nothing on 127.0.0.1 answers on.
free_port() {
  local port
  while :; do
    port=$((30000 + RANDOM % 20000))
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || { echo "$port"; return; }
  done
}
