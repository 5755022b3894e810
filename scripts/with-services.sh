#!/usr/bin/env bash
# Run a command with throwaway PostgreSQL and Redis, then stop them whatever
# the command's outcome. The command sees DATABASE_URL and REDIS_URL.
#
#   scripts/with-services.sh cargo test --workspace
#
# If DATABASE_URL and REDIS_URL are both set already, they are used as they
# are and nothing is started: point the same commands at your own servers.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

if [ -n "${DATABASE_URL:-}" ] && [ -n "${REDIS_URL:-}" ]; then
  echo "with-services: using DATABASE_URL and REDIS_URL from the environment" >&2
  exec "$@"
fi

env_lines=$("$here/services.sh" start)
eval "$env_lines"
trap '"$here/services.sh" stop "$TOLLGATE_SERVICES_DIR"' EXIT INT TERM
rc=0
"$@" || rc=$?
exit $rc
