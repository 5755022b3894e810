#!/usr/bin/env bash
# The test command (README, .ci/run): installs PostgreSQL and Redis when
# missing, starts throwaway instances on free ports, runs every test of the
# workspace against them, and stops them whatever the outcome.
# Extra arguments go to `cargo test` (e.g. a test name filter).
set -euo pipefail
cd "$(dirname "$0")/.."
exec scripts/with-services.sh cargo test --workspace --locked "$@"
