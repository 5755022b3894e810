#!/usr/bin/env bash
# The main job (README): a load run against a server the harness starts on
# embedded defaults. Builds in release mode, installs and starts throwaway
# PostgreSQL and Redis when missing, runs tollgate-loadtest (by default
# `cached-read` for 30 s after measuring the generator's own ceiling on
# /healthz), prints the table, writes target/loadtest/summary.json and one
# HTML report per scenario, and stops everything it started.
#
# Arguments go to tollgate-loadtest, for example:
#   scripts/loadtest.sh all -- --users 64 --run-time 20
#   scripts/loadtest.sh mixed --host http://127.0.0.1:8080
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p tollgate-loadtest
for a in "$@"; do
  # A deployment is targeted: no local services needed.
  [ "$a" = "--host" ] && exec target/release/tollgate-loadtest "$@"
done
exec scripts/with-services.sh target/release/tollgate-loadtest "$@"
