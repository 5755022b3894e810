#!/usr/bin/env bash
# The main job (README): a load run against a server the harness starts on
# embedded defaults. Builds in release mode, checks every option first (so a
# typo or --help costs no service start), installs and starts throwaway
# PostgreSQL and Redis when missing, runs tollgate-loadtest (by default
# `cached-read` for 30 s after measuring the generator's own ceiling on
# /healthz) with a progress line every 5 s, prints the table (with what the
# server's own /metrics saw), writes target/loadtest/summary.json,
# target/loadtest/report.html (charts, opens offline) and goose's HTML
# report per scenario, and stops everything it started. Its exit status
# is the harness's (0 passed, 1 contract broken, 2 threshold, 3 could not run).
#
# Arguments go to tollgate-loadtest, for example:
#   scripts/loadtest.sh all --users 64 --run-time 20
#   scripts/loadtest.sh cached-read --rate-steps 2000:10s,4000:10s,8000:10s
#   scripts/loadtest.sh mixed --host http://127.0.0.1:8080
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p tollgate-loadtest
bin=target/release/tollgate-loadtest
case "${1:-}" in
  compare|report|merge|list|login-timing|help) exec "$bin" "$@" ;;
esac
for a in "$@"; do
  case "$a" in
    -h|--help) exec "$bin" "$@" ;;
    # A deployment is targeted: no local services needed.
    --host|--host=*|-H) exec "$bin" "$@" ;;
  esac
done
"$bin" "$@" --dry-run
exec scripts/with-services.sh "$bin" "$@"
