# Helpers shared by the scripts in this folder (sourced, not run).

# A loopback port nothing listens on (checked by connecting), taken below
# the kernel's ephemeral range: a port in that range can refuse connections
# and still be unbindable (an outgoing socket or TIME_WAIT holds it), which
# made a PostgreSQL or Redis start fail after a busy load run.
free_port() {
  local p i low=32768
  read -r low _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || true
  [ "$low" -gt 11000 ] || low=32768
  for i in $(seq 1 200); do
    p=$(( 10000 + RANDOM % (low - 10000) ))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return 0; fi
  done
  echo "no free port found" >&2
  return 1
}

# Waits up to 20 s for URL to answer 2xx.
wait_http() {
  local _
  for _ in $(seq 1 200); do curl -sf "$1" >/dev/null && return 0; sleep 0.1; done
  return 1
}

# start_redis PORT LOG: a throwaway redis-server on loopback (no
# persistence, so a restart is empty); sets redis_pid and adds it to the
# caller's pids array; waits until it answers.
start_redis() {
  local _
  redis-server --port "$1" --bind 127.0.0.1 --save '' --appendonly no >>"$2" 2>&1 &
  redis_pid=$!; pids+=("$redis_pid")
  for _ in $(seq 1 50); do redis-cli -p "$1" ping >/dev/null 2>&1 && return 0; sleep 0.1; done
  return 1
}

# check NAME COMMAND...: runs COMMAND, prints "ok NAME" or "FAIL NAME", counts.
passed=0
failed=0
check() {
  local name=$1; shift
  if "$@"; then passed=$((passed + 1)); echo "ok    $name"; else failed=$((failed + 1)); echo "FAIL  $name"; fi
}

# start_run NAME: a temporary directory $tmp for one run's logs and an
# empty pids array; on exit every pid is killed, then each command of
# end_hooks runs (e.g. dropping a database the run made), and $tmp is
# removed unless a check failed, in which case it is kept and its path
# printed.
start_run() {
  tmp=$(mktemp -d "/tmp/tollgate-$1.XXXXXX")
  pids=()
  end_hooks=()
  run_name=$1
  trap _end_run EXIT
}
_end_run() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true
  for h in "${end_hooks[@]}"; do eval "$h" || true; done
  if [ "${failed:-0}" -eq 0 ] && [ -z "${KEEP_LOGS:-}" ]; then rm -rf "$tmp"; else echo "$run_name: logs kept in $tmp" >&2; fi
}
