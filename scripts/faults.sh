#!/usr/bin/env bash
# Faults under load, each bounded in time, loopback only. Each scenario
# prints what it measured and the invariant it checked; the last line is
# "N passed, N failed".
#
#   scripts/faults.sh [redis|postgres|sigterm|disconnect|instances|cluster|all]   (default: all)
#
#   redis     a mixed load (including banned victims) while Redis is killed,
#             restarted empty, then flushed: no request of a banned user
#             accepted, no 5xx, and the server goes back to Redis by itself.
#   postgres  a mixed load while PostgreSQL is stopped for 4 s: 503s while it
#             is down, no answer slower than the pool timeout, recovery
#             without a restart, and every acknowledged write still there.
#   sigterm   SIGTERM during a load run: the server drains and exits 0
#             within its grace period.
#   disconnect  readers under load while a chaos client sends bans,
#             re-activations, logouts, task writes and logins and hangs up
#             0-3 ms later (scripts/disconnect.py): no token PostgreSQL calls
#             revoked is accepted, and login still answers afterwards.
#   instances three servers on one PostgreSQL and one Redis behind HAProxy
#             (Debian's package, installed when missing; round robin per
#             request): a mixed load with bans through the proxy accepts no
#             banned user's request, a ban, a logout and a logout-all
#             answered by one instance hold on the others' next requests,
#             a writer reads every write back at
#             once whichever instance answers (scripts/instances.py), the
#             login limit counts across instances, every instance served.
#   cluster   three servers behind HAProxy on a Redis Cluster of 3 primaries
#             and 3 replicas (scripts/redis-cluster.sh) under a mixed load
#             with bans and a
#             read-your-writes writer, while a primary is killed (its replica
#             takes over), 100 slots migrate between primaries, and every
#             primary is flushed: no banned request accepted, no stale read,
#             no 5xx but 503, and the server back on Redis at the end.
#
# Starts its own PostgreSQL and Redis (scripts/with-services.sh); the
# postgres scenario stops and starts that PostgreSQL, so it is skipped when
# DATABASE_URL points at a server this script did not start.
# KEEP_LOGS=1 keeps the servers' and the load's logs of a passing run too.
# PROFILE=debug uses debug builds (what scripts/test.sh does: they are built
# already); the default is release.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${DATABASE_URL:-}" ] || [ -z "${REDIS_URL:-}" ]; then
  exec scripts/with-services.sh "$0" "$@"
fi
what=${1:-all}
profile=${PROFILE:-release}
if [ "$profile" = release ]; then
  cargo build --locked --release -q -p tollgate -p tollgate-loadtest
else
  cargo build --locked -q -p tollgate -p tollgate-loadtest
fi
bin=target/$profile
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
start_run faults
admin_email=faults-admin@tollgate.example; admin_password=faults-admin-password

start_server() { # name redis_port [VAR=value ...]
  local name=$1 rport=$2; shift 2
  app_port=$(free_port)
  env BIND_ADDR="127.0.0.1:$app_port" REDIS_URL="redis://127.0.0.1:$rport" REDIS_KEY_PREFIX="f$RANDOM" \
    ADMIN_EMAIL=$admin_email ADMIN_PASSWORD=$admin_password RUST_LOG=warn "$@" \
    "$bin/tollgate" >"$tmp/$name-server.log" 2>&1 &
  server_pid=$!; pids+=("$server_pid")
  app=http://127.0.0.1:$app_port
  wait_http "$app/healthz" || { cat "$tmp/$name-server.log"; echo "server did not start"; exit 1; }
}
start_load() { # name scenario run_time [args...]; returns when the measured run starts
  local name=$1 scenario=$2 secs=$3; shift 3
  "$bin/tollgate-loadtest" "$scenario" --host "$app" --admin-email "$admin_email" --admin-password "$admin_password" \
    --no-calibrate --accounts 16 --victims 4 --out "$tmp/$name" "$@" -- --users 16 --increase-rate 16 --run-time "$secs" \
    >"$tmp/$name-load.log" 2>&1 &
  load_pid=$!; pids+=("$load_pid")
  for _ in $(seq 1 600); do grep -q "loadtest: running" "$tmp/$name-load.log" && return 0; sleep 0.1; done
  cat "$tmp/$name-load.log"; echo "load did not start"; exit 1
}
sum_metric() { # regex over series lines of /metrics
  curl -s "$app/metrics" | awk -v re="$1" '$0 ~ re {s += $NF} END {printf "%d", s}'
}
summary() { # name python-expression over the scenario summary `s`
  python3 -c "import json,sys; s=json.load(open('$tmp/$1/summary.json'))['scenarios'][-1]; print($2)"
}
start_instances() { # name redis_port [VAR=value ...]: three servers behind HAProxy
  # Sets servers, apps (each instance), proxy_pid, and app (the proxy).
  # REDIS_KEY_PREFIX empty: the default, derived from the database, so the
  # instances share their keys as a deployment's would.
  command -v haproxy >/dev/null || scripts/services.sh apt haproxy
  local name=$1 rport=$2 i; shift 2
  servers=(); apps=()
  for i in 1 2 3; do
    start_server "$name$i" "$rport" REDIS_KEY_PREFIX= "$@"
    servers+=("$server_pid"); apps+=("$app")
  done
  local pport; pport=$(free_port)
  { printf 'defaults\n  mode http\n  timeout connect 2s\n  timeout client 30s\n  timeout server 30s\n'
    printf 'frontend tollgate\n  bind 127.0.0.1:%s\n  default_backend instances\n' "$pport"
    printf 'backend instances\n  balance roundrobin\n'
    for i in 1 2 3; do printf '  server i%s %s\n' "$i" "${apps[$((i - 1))]#http://}"; done
  } >"$tmp/$name-haproxy.cfg"
  haproxy -f "$tmp/$name-haproxy.cfg" -db >"$tmp/$name-haproxy.log" 2>&1 &
  proxy_pid=$!; pids+=("$proxy_pid")
  app=http://127.0.0.1:$pport
  wait_http "$app/healthz" || { cat "$tmp/$name-haproxy.log"; echo "haproxy did not start"; exit 1; }
}
sum_instances() { # sum_metric over every instance of start_instances
  local a total=0 proxy=$app
  for a in "${apps[@]}"; do app=$a; total=$((total + $(sum_metric "$1"))); done
  app=$proxy; echo "$total"
}

scenario_redis() {
  echo "redis: mixed load with banned victims; Redis killed at +5 s, restarted empty at +9 s, FLUSHALL at +13 s"
  local rport; rport=$(free_port)
  start_redis "$rport" "$tmp/redis.log"
  start_server redis "$rport" RUST_LOG=info
  start_load redis mixed 20 --mix cached-read=55,miss-and-write=15,refresh=10,login=5,revocation=15
  sleep 5; kill "$redis_pid"
  sleep 4; start_redis "$rport" "$tmp/redis.log"
  sleep 4; redis-cli -p "$rport" flushall >/dev/null
  wait "$load_pid" || true
  local requests failures accepted fivexx db before after
  requests=$(summary redis "s['requests']"); failures=$(summary redis "s['failures']")
  accepted=$(summary redis "s['revocation']['accepted_after_ban']")
  fivexx=$(sum_metric '^http_requests_total\\{.*status="5')
  db=$(sum_metric '^revocation_checks_total\\{.*source="db"')
  before=$(sum_metric '^revocation_checks_total\\{.*source="redis"')
  local token; token=$(curl -s -X POST "$app/auth/login" -H 'content-type: application/json' \
    -d '{"email":"loadtest-user-1@tollgate-loadtest.example","password":"loadtest-password-1"}' \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
  for _ in 1 2 3 4 5; do curl -s -o /dev/null -H "authorization: Bearer $token" "$app/tasks"; sleep 0.2; done
  after=$(sum_metric '^revocation_checks_total\\{.*source="redis"')
  echo "  requests $requests, failures $failures, 5xx $fivexx, accepted after ban $accepted, checks answered by PostgreSQL $db"
  check "no request of a banned user accepted" [ "$accepted" -eq 0 ]
  check "no 5xx and no failed request" test "$fivexx" -eq 0 -a "$failures" -eq 0
  check "back on Redis by itself (redis-sourced checks $before -> $after)" [ "$after" -gt "$before" ]
  kill "$server_pid" "$redis_pid" 2>/dev/null || true
}

scenario_postgres() {
  if [ -z "${TOLLGATE_SERVICES_DIR:-}" ]; then
    echo "postgres: skipped (DATABASE_URL is not a PostgreSQL this script started)"; return
  fi
  echo "postgres: mixed load and a writer; PostgreSQL stopped at +5 s for 4 s"
  local rport; rport=$(free_port)
  start_redis "$rport" "$tmp/redis.log"
  start_server postgres "$rport" POOL_TIMEOUT_MS=1000
  local token; token=$(curl -s -X POST "$app/auth/register" -H 'content-type: application/json' \
    -d '{"email":"writer@tollgate.example","password":"writer-password"}' >/dev/null;
    curl -s -X POST "$app/auth/login" -H 'content-type: application/json' \
    -d '{"email":"writer@tollgate.example","password":"writer-password"}' \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
  start_load postgres mixed 16
  ( end=$((SECONDS + 15)); i=0
    while [ $SECONDS -lt $end ]; do
      i=$((i + 1))
      out=$(curl -s -m 5 -w '\n%{http_code}' -X POST "$app/tasks" -H "authorization: Bearer $token" \
        -H 'content-type: application/json' -d "{\"title\":\"fault write $i\"}") || true
      [ "$(tail -n1 <<<"$out")" = 201 ] && head -n1 <<<"$out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])' >>"$tmp/acked"
      sleep 0.02
    done ) &
  local writer=$!
  sleep 5; scripts/services.sh pg-stop "$TOLLGATE_SERVICES_DIR"
  local down_status; down_status=$(curl -s -o /dev/null -w '%{http_code}' -m 5 "$app/readyz")
  sleep 4; scripts/services.sh pg-start "$TOLLGATE_SERVICES_DIR"
  wait "$writer" || true
  wait "$load_pid" || true
  local requests failures max503 maxms acked missing=0 ready
  requests=$(summary postgres "s['requests']"); failures=$(summary postgres "s['failures']")
  maxms=$(summary postgres "max(r['max_ms'] for r in s['by_request'])")
  max503=$(sum_metric '^http_requests_total\\{.*status="503"')
  acked=$(wc -l <"$tmp/acked" 2>/dev/null || echo 0)
  while read -r id; do
    [ "$(curl -s -o /dev/null -w '%{http_code}' -H "authorization: Bearer $token" "$app/tasks/$id")" = 200 ] || missing=$((missing + 1))
  done <"$tmp/acked"
  ready=$(curl -s -o /dev/null -w '%{http_code}' "$app/readyz")
  echo "  requests $requests, failures $failures, 503s $max503, slowest answer ${maxms} ms, /readyz while down $down_status, acknowledged writes $acked, missing $missing"
  check "503s while PostgreSQL is down" test "$max503" -gt 0 -a "$down_status" = 503
  check "no answer slower than the pool timeout (1 s) plus 1 s" python3 -c "import sys; sys.exit(0 if $maxms < 2000 else 1)"
  check "recovered without a restart (/readyz $ready)" [ "$ready" = 200 ]
  check "every acknowledged write is there ($acked)" test "$missing" -eq 0 -a "$acked" -gt 0
  kill "$server_pid" "$redis_pid" 2>/dev/null || true
}

scenario_sigterm() {
  echo "sigterm: cached-read load; SIGTERM at +4 s, grace period 5 s"
  local rport; rport=$(free_port)
  start_redis "$rport" "$tmp/redis.log"
  start_server sigterm "$rport" SHUTDOWN_GRACE_SECS=5 RUST_LOG=info
  start_load sigterm cached-read 8
  sleep 4
  local t0=$SECONDS rc=0
  kill -TERM "$server_pid"
  wait "$server_pid" || rc=$?
  local took=$((SECONDS - t0))
  wait "$load_pid" || true
  local served; served=$(summary sigterm "s['requests'] - s['failures']")
  echo "  exit code $rc after ${took} s; $served requests answered before the stop"
  check "exited 0 within the grace period" test "$rc" -eq 0 -a "$took" -le 5
  check "stopped accepting and drained (server log)" grep -q "all connections drained" "$tmp/sigterm-server.log"
  kill "$redis_pid" 2>/dev/null || true
}

scenario_disconnect() {
  echo "disconnect: clients hang up mid-request while bans, logouts and writes happen (${DISCONNECT_SECS:-10} s)"
  local rport; rport=$(free_port)
  start_redis "$rport" "$tmp/redis.log"
  start_server disconnect "$rport"
  local out
  out=$(python3 scripts/disconnect.py --url "$app" --database-url "$DATABASE_URL" --admin-email "$admin_email" \
    --admin-password "$admin_password" --seconds "${DISCONNECT_SECS:-10}") || { echo "  disconnect.py failed"; failed=$((failed + 1)); return; }
  echo "  $out"
  local accepted revoked login reads errors
  accepted=$(python3 -c "import json,sys; print(json.loads(sys.argv[1])['accepted_after_revocation'])" "$out")
  revoked=$(python3 -c "import json,sys; print(json.loads(sys.argv[1])['revoked_tokens'])" "$out")
  login=$(python3 -c "import json,sys; print(json.loads(sys.argv[1])['login_after'])" "$out")
  errors=$(python3 -c "import json,sys; print(json.loads(sys.argv[1])['read_errors'])" "$out")
  check "0 revoked requests accepted ($revoked revoked tokens checked)" test "$accepted" -eq 0 -a "$revoked" -gt 0
  check "login still answers afterwards ($login)" [ "$login" = 200 ]
  check "ordinary readers got only 200 or 401 ($errors others)" [ "$errors" -eq 0 ]
  kill "$server_pid" "$redis_pid" 2>/dev/null || true
}

scenario_instances() {
  echo "instances: 3 servers, one PostgreSQL and one Redis, behind HAProxy; mixed load with bans, a read-your-writes writer, the login limit"
  local rport; rport=$(free_port)
  start_redis "$rport" "$tmp/redis.log"
  start_instances instance "$rport"
  start_load instances mixed 15 --mix cached-read=50,miss-and-write=20,refresh=10,login=5,revocation=15
  local out; out=$(python3 scripts/instances.py --url "$app" --seconds 8 --admin-email "$admin_email" \
    --admin-password "$admin_password") || { echo "  instances.py failed"; failed=$((failed + 1)); }
  wait "$load_pid" || true
  local requests failures accepted bans served=() a proxy=$app
  requests=$(summary instances "s['requests']"); failures=$(summary instances "s['failures']")
  accepted=$(summary instances "s['revocation']['accepted_after_ban']"); bans=$(summary instances "s['revocation']['bans']")
  for a in "${apps[@]}"; do app=$a; served+=("$(sum_metric '^http_requests_total\\{')"); done
  app=$proxy
  echo "  requests $requests, failures $failures, bans $bans, accepted after ban $accepted, served per instance ${served[*]}"
  echo "  $out"
  local j; j() { python3 -c "import json,sys; print(json.loads(sys.argv[1])['$1'])" "$out"; }
  check "no request of a banned user accepted ($bans bans through the proxy)" test "$accepted" -eq 0 -a "$bans" -gt 0
  check "no failed request" [ "$failures" -eq 0 ]
  check "a ban, a logout, a logout-all answered by one instance hold on all ($(j revoked_checked) requests)" \
    test "$(j accepted_after_revocation)" -eq 0 -a "$(j revoked_checked)" -gt 0
  check "every write read back at once through any instance ($(j writes) writes)" test "$(j stale_reads)" -eq 0 -a "$(j errors)" -eq 0 -a "$(j writes)" -gt 0
  check "the login limit is shared: $(j max_failures) verified, then 429" test "$(j verified_failures)" -eq "$(j max_failures)" -a "$(j throttled)" -eq 5
  check "every instance served" test "${served[0]}" -gt 0 -a "${served[1]}" -gt 0 -a "${served[2]}" -gt 0
  kill "${servers[@]}" "$proxy_pid" "$redis_pid" 2>/dev/null || true
}

scenario_cluster() {
  echo "cluster: 3 servers behind HAProxy on a Redis Cluster of 3 primaries + 3 replicas; a primary killed at +4 s, 100 slots migrated at +10 s, FLUSHALL on every primary at +16 s"
  local env_lines; env_lines=$(scripts/redis-cluster.sh start) || { failed=$((failed + 1)); return; }
  eval "$env_lines"
  local cdir=$REDIS_CLUSTER_DIR ports; read -r -a ports <"$cdir/ports"
  start_instances cluster 1 REDIS_CLUSTER_URLS="$REDIS_CLUSTER_URLS" RUST_LOG=info
  start_load cluster mixed 24 --mix cached-read=50,miss-and-write=20,refresh=10,login=5,revocation=15
  python3 scripts/instances.py --url "$app" --seconds 20 --admin-email "$admin_email" \
    --admin-password "$admin_password" >"$tmp/cluster-writer.json" 2>"$tmp/cluster-writer.log" &
  local writer=$!
  primary() { # the port of the live primary serving slot $1, as a live node sees it
    local p; for p in "${ports[@]}"; do
      redis-cli -p "$p" ping >/dev/null 2>&1 || continue
      redis-cli -p "$p" cluster nodes | awk -v s="$1" '$3 ~ /master/ && $3 !~ /fail/ {
        for (i = 9; i <= NF; i++) { n = split($i, r, "-"); if (n == 1) r[2] = r[1]
          if (s + 0 >= r[1] + 0 && s + 0 <= r[2] + 0) { split($2, a, "[:@]"); print a[2]; exit } } }'
      return
    done; }
  sleep 4
  local victim; victim=$(primary 0)
  kill -9 "$(cat "$cdir/$victim.pid")"
  local t0=$SECONDS promoted=""
  for _ in $(seq 1 150); do
    promoted=$(primary 0)
    [ -n "$promoted" ] && [ "$promoted" != "$victim" ] && break
    promoted=""; sleep 0.1
  done
  local failover_s=$((SECONDS - t0))
  sleep $((6 - failover_s > 0 ? 6 - failover_s : 0))
  local from to from_id to_id
  from=$(primary 16383); to=$(primary 8000)
  from_id=$(redis-cli -p "$from" cluster myid); to_id=$(redis-cli -p "$to" cluster myid)
  redis-cli --cluster reshard "127.0.0.1:$to" --cluster-from "$from_id" --cluster-to "$to_id" --cluster-slots 100 \
    --cluster-yes >"$tmp/reshard.log" 2>&1 || echo "  reshard failed (see $tmp/reshard.log)"
  local moved; moved=$(grep -c "^Moving slot" "$tmp/reshard.log" || true)
  sleep 4
  local p; for p in "${ports[@]}"; do redis-cli -p "$p" flushall >/dev/null 2>&1 || true; done
  wait "$load_pid" || true
  wait "$writer" || true
  local requests failures accepted bans f503 f5xx before after out
  requests=$(summary cluster "s['requests']"); failures=$(summary cluster "s['failures']")
  accepted=$(summary cluster "s['revocation']['accepted_after_ban']"); bans=$(summary cluster "s['revocation']['bans']")
  f503=$(sum_instances '^http_requests_total\\{.*status="503"'); f5xx=$(sum_instances '^http_requests_total\\{.*status="5')
  out=$(cat "$tmp/cluster-writer.json")
  before=$(sum_instances '^revocation_checks_total\\{.*source="redis"')
  local token; token=$(curl -s -X POST "$app/auth/login" -H 'content-type: application/json' \
    -d '{"email":"loadtest-user-1@tollgate-loadtest.example","password":"loadtest-password-1"}' \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
  for _ in 1 2 3 4 5 6 7 8 9 10; do curl -s -o /dev/null -H "authorization: Bearer $token" "$app/tasks"; sleep 0.3; done
  after=$(sum_instances '^revocation_checks_total\\{.*source="redis"')
  local slots rebuilds voided
  slots=$(sum_instances '^redis_rebuilt_slots_total'); rebuilds=$(sum_instances '^redis_rebuilds_total\\{result="restored"')
  voided=$(sum_instances '^redis_rebuilds_total\\{result="(voided|failed)"')
  echo "  failover of :$victim to :${promoted:-?} in ~${failover_s} s; $moved slots moved :$from -> :$to"
  echo "  requests $requests, failures $failures, 503s $f503, other 5xx $((f5xx - f503)), bans $bans, accepted after ban $accepted"
  echo "  rebuilds over the 3 instances: $rebuilds restored $slots slots (start-up: 3 x 16384), $voided voided or failed"
  echo "  writer: $out"
  local j; j() { python3 -c "import json,sys; print(json.loads(sys.argv[1])['$1'])" "$out"; }
  check "no request of a banned user accepted ($bans bans)" test "$accepted" -eq 0 -a "$bans" -gt 0
  check "a ban, a logout, a logout-all hold ($(j revoked_checked) requests)" test "$(j accepted_after_revocation)" -eq 0
  check "every write read back at once ($(j writes) writes, $(j errors) refused)" test "$(j stale_reads)" -eq 0 -a "$(j writes)" -gt 0
  check "no 5xx but 503" [ "$((f5xx - f503))" -eq 0 ]
  check "the replica took over (:$victim -> :${promoted:-none}) and slots moved ($moved)" test -n "$promoted" -a "$moved" -gt 0
  check "back on Redis after it all (redis-sourced checks $before -> $after)" [ "$after" -gt "$before" ]
  kill "${servers[@]}" "$proxy_pid" 2>/dev/null || true
  scripts/redis-cluster.sh stop "$cdir"
}

case "$what" in
  redis) scenario_redis ;;
  postgres) scenario_postgres ;;
  sigterm) scenario_sigterm ;;
  disconnect) scenario_disconnect ;;
  instances) scenario_instances ;;
  cluster) scenario_cluster ;;
  all) scenario_redis; scenario_postgres; scenario_sigterm; scenario_disconnect; scenario_instances; scenario_cluster ;;
  *) sed -n '2,34p' "$0" >&2; exit 2 ;;
esac
echo "faults: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
