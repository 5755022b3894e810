#!/usr/bin/env bash
# A throwaway Redis Cluster on loopback: 3 primaries and 3 replicas
# (redis-cli --cluster create), no persistence, a 2 s node timeout so a
# failover takes seconds. Redis comes from Debian's packages when missing.
#
#   eval "$(scripts/redis-cluster.sh start)"   # exports REDIS_CLUSTER_URLS and REDIS_CLUSTER_DIR
#   scripts/redis-cluster.sh stop "$REDIS_CLUSTER_DIR"
#   scripts/redis-cluster.sh restart-node DIR PORT   # kill -9 a node, start it again empty
#
# Node N listens on its port and on port+10000 (the cluster bus); both are
# checked free. Each node's pid is in DIR/PORT.pid, its log in DIR/PORT.log.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=scripts/lib.sh
. "$here/lib.sh"

node() { # DIR PORT: one cluster node in the background
  mkdir -p "$1/$2"
  redis-server --port "$2" --bind 127.0.0.1 --cluster-enabled yes --cluster-config-file "$1/$2/nodes.conf" \
    --cluster-node-timeout 2000 --save '' --appendonly no --dir "$1/$2" >>"$1/$2.log" 2>&1 &
  echo $! >"$1/$2.pid"
  local _
  for _ in $(seq 1 50); do redis-cli -p "$2" ping >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "redis-cluster: node $2 did not start" >&2; return 1
}

cluster_port() { # a port whose bus port (+10000) is free too
  local p _
  for _ in $(seq 1 50); do
    p=$(free_port)
    if [ "$p" -lt 22000 ] && ! (exec 3<>"/dev/tcp/127.0.0.1/$((p + 10000))") 2>/dev/null; then echo "$p"; return; fi
  done
  echo "redis-cluster: no free port pair" >&2; return 1
}

case "${1:-}" in
  start)
    command -v redis-server >/dev/null && command -v redis-cli >/dev/null || "$here/services.sh" apt redis-server >&2
    dir=$(mktemp -d /tmp/tollgate-cluster.XXXXXX)
    ports=()
    for _ in 1 2 3 4 5 6; do p=$(cluster_port); ports+=("$p"); node "$dir" "$p" >&2; done
    addrs=(); for p in "${ports[@]}"; do addrs+=("127.0.0.1:$p"); done
    redis-cli --cluster create "${addrs[@]}" --cluster-replicas 1 --cluster-yes >"$dir/create.log" 2>&1 \
      || { cat "$dir/create.log" >&2; exit 1; }
    for _ in $(seq 1 100); do
      ok=0; for p in "${ports[@]}"; do redis-cli -p "$p" cluster info | grep -q 'cluster_state:ok' && ok=$((ok + 1)); done
      [ "$ok" -eq 6 ] && break; sleep 0.2
    done
    [ "$ok" -eq 6 ] || { echo "redis-cluster: cluster_state not ok on every node" >&2; exit 1; }
    echo "${ports[*]}" >"$dir/ports"
    urls=$(printf 'redis://127.0.0.1:%s,' "${ports[@]}"); urls=${urls%,}
    echo "export REDIS_CLUSTER_URLS='$urls'"
    echo "export REDIS_CLUSTER_DIR='$dir'"
    echo "redis-cluster: 3 primaries and 3 replicas on ${ports[*]}, state in $dir" >&2
    ;;
  stop)
    dir=${2:?usage: $0 stop DIR}
    for f in "$dir"/*.pid; do [ -e "$f" ] && kill "$(cat "$f")" 2>/dev/null || true; done
    sleep 0.3; rm -rf "$dir"
    ;;
  restart-node)
    dir=${2:?usage: $0 restart-node DIR PORT}; p=${3:?port}
    kill -9 "$(cat "$dir/$p.pid")" 2>/dev/null || true
    sleep 0.2; node "$dir" "$p"
    ;;
  *) sed -n '2,12p' "$0" >&2; exit 2 ;;
esac
