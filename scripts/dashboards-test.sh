#!/usr/bin/env bash
# Dashboards and alert rules, tested against a real Prometheus (run by
# scripts/test.sh; needs DATABASE_URL, so run it under scripts/with-services.sh).
#
# 1. The JSON matches its generator, promtool checks and unit-tests the rules.
# 2. Prometheus (installed from Debian when missing) scrapes a real server
#    and the load generator (--metrics-addr) every second on loopback, with
#    the rules loaded.
# 3. Traffic: every load scenario for a few seconds (hits, misses, logins,
#    refreshes, bans, GraphQL reads and writes), failed logins, failing
#    GraphQL operations, and Redis stopped and restarted.
# 4. Every panel query (variables substituted) and every rule is evaluated
#    through Prometheus's HTTP API; `promtool check metrics` lints /metrics;
#    every metric a dashboard reads must be exported (dashboards/check_live.py).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${DATABASE_URL:?run under scripts/with-services.sh (or set DATABASE_URL and REDIS_URL)}"

command -v prometheus >/dev/null && command -v promtool >/dev/null || scripts/services.sh apt prometheus

# shellcheck source=scripts/lib.sh
. scripts/lib.sh

check "dashboards match dashboards/generate.py" python3 dashboards/generate.py --check
check "promtool check rules" promtool check rules dashboards/prometheus/rules.yml
check "promtool test rules" promtool test rules dashboards/prometheus/rules_test.yml

cargo build --locked -q -p tollgate -p tollgate-loadtest
tmp=$(mktemp -d /tmp/tollgate-dashboards.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT

redis_port=$(free_port); app_port=$(free_port); prom_port=$(free_port); gen_port=$(free_port)
start_redis "$redis_port" "$tmp/redis.log"
admin_email=dash-admin@tollgate.example; admin_password=dash-admin-password
BIND_ADDR=127.0.0.1:$app_port REDIS_URL=redis://127.0.0.1:$redis_port REDIS_KEY_PREFIX=dash$RANDOM \
  ADMIN_EMAIL=$admin_email ADMIN_PASSWORD=$admin_password RUST_LOG=warn \
  target/debug/tollgate >"$tmp/server.log" 2>&1 &
pids+=($!)
app=http://127.0.0.1:$app_port
wait_http "$app/healthz" || { cat "$tmp/server.log"; echo "server did not start"; exit 1; }

cat >"$tmp/prometheus.yml" <<YAML
global: {scrape_interval: 1s, evaluation_interval: 1s}
rule_files: ["$PWD/dashboards/prometheus/rules.yml"]
scrape_configs:
  - job_name: tollgate
    static_configs: [{targets: ["127.0.0.1:$app_port"]}]
  - job_name: tollgate-loadtest
    static_configs: [{targets: ["127.0.0.1:$gen_port"]}]
YAML
prometheus --config.file="$tmp/prometheus.yml" --storage.tsdb.path="$tmp/data" \
  --web.listen-address="127.0.0.1:$prom_port" >"$tmp/prometheus.log" 2>&1 &
pids+=($!)
prom=http://127.0.0.1:$prom_port
wait_http "$prom/-/ready" || { cat "$tmp/prometheus.log"; echo "prometheus did not start"; exit 1; }

# Traffic. The generator serves its own metrics while it runs and 4 s after
# (Prometheus scrapes it each second); a copy of its exposition is kept for
# the check that every metric a dashboard reads is exported.
target/debug/tollgate-loadtest all --host "$app" --admin-email "$admin_email" --admin-password "$admin_password" \
  --no-calibrate --accounts 4 --victims 2 --ban-hold-ms 200 --out "$tmp/lt" --run-id dashboards-test \
  --metrics-addr "127.0.0.1:$gen_port" --metrics-linger-secs 4 --progress-secs 0 \
  -- --users 4 --run-time 2 >"$tmp/lt.log" 2>&1 &
lt_pid=$!
while kill -0 "$lt_pid" 2>/dev/null; do
  curl -sf "http://127.0.0.1:$gen_port/metrics" -o "$tmp/gen-metrics.next" && mv "$tmp/gen-metrics.next" "$tmp/gen-metrics.txt"
  sleep 0.5
done
wait "$lt_pid" || { tail -30 "$tmp/lt.log"; echo "load traffic failed"; exit 1; }
[ -s "$tmp/gen-metrics.txt" ] || { echo "the generator served no metrics on --metrics-addr"; exit 1; }
for _ in 1 2 3; do
  curl -s -o /dev/null -X POST "$app/auth/login" -H 'content-type: application/json' \
    -d '{"email":"loadtest-user-0@tollgate-loadtest.example","password":"wrong password"}'
done
token=$(curl -s -X POST "$app/auth/login" -H 'content-type: application/json' \
  -d '{"email":"loadtest-user-1@tollgate-loadtest.example","password":"loadtest-password-1"}' \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
# GraphQL operations that fail (the error-ratio panel needs an error).
for _ in 1 2 3; do
  curl -s -o /dev/null -X POST "$app/graphql" -H "authorization: Bearer $token" -H 'content-type: application/json' \
    -d '{"query":"mutation Missing { deletePost(id: \"999999999\") }"}'
done
kill "$redis_pid"; sleep 0.5
for _ in $(seq 1 20); do curl -s -o /dev/null -H "authorization: Bearer $token" "$app/tasks"; done
start_redis "$redis_port" "$tmp/redis.log"
sleep 1
for _ in $(seq 1 20); do curl -s -o /dev/null -H "authorization: Bearer $token" "$app/tasks"; done
sleep 4   # a few more scrapes and rule evaluations

curl -s "$app/metrics" >"$tmp/metrics.txt"
check "promtool check metrics on /metrics" bash -c "promtool check metrics <'$tmp/metrics.txt'"
rc=0
check "promtool check metrics on the generator's /metrics" bash -c "promtool check metrics <'$tmp/gen-metrics.txt'"
python3 dashboards/check_live.py "$prom" "$tmp/metrics.txt,$tmp/gen-metrics.txt" tollgate | tee "$tmp/live.txt" || rc=$?
live=$(tail -n 1 "$tmp/live.txt")
p=$(sed -E 's/.* ([0-9]+) passed, ([0-9]+) failed/\1/' <<<"$live"); f=$(sed -E 's/.* ([0-9]+) passed, ([0-9]+) failed/\2/' <<<"$live")
passed=$((passed + p)); failed=$((failed + f))
[ "$rc" -eq 0 ] || [ "$f" -gt 0 ] || failed=$((failed + 1))
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
