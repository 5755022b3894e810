#!/usr/bin/env bash
# The test command (README, .ci/run): checks the server's module layers
# against its crate doc (scripts/layers.py), installs Node.js and the test
# OpenID provider (npm) and PostgreSQL and Redis when
# missing, starts throwaway instances on free ports, runs every test of the
# workspace against them, then the dashboards test against a live Prometheus
# (installed when missing), then the load harness's reports in headless
# Chromium and compare's formats (scripts/report-test.sh), one quick round of
# scripts/bench.sh hotpath and of scripts/bench.sh capacity on the debug build
# (so they cannot rot), then the server
# against its OpenAPI document
# (scripts/schemathesis.sh), then the fault scenarios under load
# (scripts/faults.sh, debug builds), the supply-chain checks (scripts/deny.sh),
# then 10 s of each fuzz target (scripts/fuzz.sh), and stops everything
# whatever the outcome.
# --all-targets also builds the benches and runs each once (criterion test
# mode) and builds the examples. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 scripts/layers.py server/src
# The OpenID provider of the external-token tests (oidc-provider from the npm
# registry; the tests start it on loopback).
command -v node >/dev/null && command -v npm >/dev/null || scripts/services.sh apt nodejs npm
[ -d server/tests/oidc/node_modules/oidc-provider ] \
  || (cd server/tests/oidc && npm ci --no-audit --no-fund --loglevel=error)
exec scripts/with-services.sh bash -c \
  'cargo test --workspace --locked --all-targets "$@" && scripts/dashboards-test.sh && scripts/report-test.sh \
   && HOTPATH_PROFILE=debug scripts/bench.sh hotpath --rounds 1 --secs 1 --warmup 1 \
   && CAPACITY_PROFILE=debug scripts/bench.sh capacity --rounds 1 --secs 1 --warmup 1 && scripts/schemathesis.sh && PROFILE=debug scripts/faults.sh all \
   && scripts/deny.sh && scripts/fuzz.sh 10' \
  test.sh "$@"
