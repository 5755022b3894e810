#!/usr/bin/env bash
# Throwaway PostgreSQL and Redis for tests and load runs.
#
#   scripts/services.sh start      start both on free loopback ports in a fresh
#                                  temporary folder; prints `export ...` lines
#                                  (use: eval "$(scripts/services.sh start)")
#   scripts/services.sh stop DIR   stop what `start` started in DIR and delete it
#   scripts/services.sh install    only make sure the servers are installed
#   scripts/services.sh apt PKG... install Debian packages the same way (no
#                                  packaged service is started)
#   scripts/services.sh pg-stop DIR / pg-start DIR
#                                  stop or start the PostgreSQL of DIR (fault tests)
#
# Installs Debian's postgresql and redis-server when they are missing and we
# are root; otherwise says what to install. Nothing here touches a system-wide
# cluster or service: the instances live and die in their own folder.
# Overridable: PG_BINDIR (PostgreSQL's bin folder), SERVICES_TMPDIR (parent
# of the temporary folder), DB_NAME (default: tasks).
set -euo pipefail

log() { printf 'services: %s\n' "$*" >&2; }
die() { printf 'services: error: %s\n' "$*" >&2; exit 1; }

pg_bindir() {
  if [ -n "${PG_BINDIR:-}" ]; then echo "$PG_BINDIR"; return; fi
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  [ -n "$d" ] && [ -x "$d/initdb" ] && echo "$d"
}

apt_install() {
  if [ "$(id -u)" -ne 0 ]; then
    die "$* not installed and not root: install the Debian packages ($*) or set PG_BINDIR"
  fi
  command -v apt-get >/dev/null || die "$* not installed and apt-get is not available"
  log "installing $* from Debian's packages"
  # Debian starts a packaged service on install; we want only our own
  # throwaway instances, so forbid that for the duration of the install.
  local policy=/usr/sbin/policy-rc.d created=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod +x "$policy"; created=1
  fi
  local rc=0
  { [ -n "$(ls -A /var/lib/apt/lists 2>/dev/null | grep -v -e lock -e partial || true)" ] \
      || apt-get update -qq; } >&2 || rc=$?
  [ $rc -eq 0 ] && { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2 || rc=$?; }
  # A stale package list can make install fail with 404s: refresh once and retry.
  if [ $rc -ne 0 ]; then
    rc=0
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2 || rc=$?
  fi
  [ $created -eq 1 ] && rm -f "$policy"
  [ $rc -eq 0 ] || die "apt-get install $* failed (exit $rc)"
}

install() {
  [ -n "$(pg_bindir)" ] || apt_install postgresql
  [ -n "$(pg_bindir)" ] || die "PostgreSQL's initdb not found after install; set PG_BINDIR"
  command -v redis-server >/dev/null && command -v redis-cli >/dev/null || apt_install redis-server redis-tools
  command -v redis-server >/dev/null || die "redis-server not found after install"
}

# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

# Run a command as the owner of the data folder: PostgreSQL refuses root.
as_pg() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

start() {
  install
  local bindir dir pg_port redis_port db
  bindir=$(pg_bindir)
  db=${DB_NAME:-tasks}
  dir=$(mktemp -d "${SERVICES_TMPDIR:-/tmp}/tollgate-services.XXXXXX")
  chmod 755 "$dir"
  mkdir -p "$dir/pg"
  [ "$(id -u)" -eq 0 ] && chown postgres "$dir/pg"
  pg_port=$(free_port)
  redis_port=$(free_port)
  while [ "$redis_port" = "$pg_port" ]; do redis_port=$(free_port); done

  as_pg "$bindir/initdb" -D "$dir/pg/data" -U postgres -A trust -E UTF8 --no-locale >"$dir/initdb.log" 2>&1 \
    || { cat "$dir/initdb.log" >&2; die "initdb failed"; }
  # Throwaway instance: durability off, room for many test connections.
  cat >>"$dir/pg/data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $pg_port
unix_socket_directories = '$dir/pg'
max_connections = 400
fsync = off
synchronous_commit = off
full_page_writes = off
shared_buffers = 128MB
EOF
  as_pg "$bindir/pg_ctl" -D "$dir/pg/data" -l "$dir/pg/server.log" -w -t 60 start >/dev/null \
    || { cat "$dir/pg/server.log" >&2; die "PostgreSQL did not start"; }
  as_pg "$bindir/createdb" -h 127.0.0.1 -p "$pg_port" -U postgres "$db" \
    || die "createdb $db failed"

  # Redis is an accelerator only: no persistence, so a restart is empty.
  # It listens on a Unix socket too (REDIS_SOCKET_URL): the single-host
  # deployment, as scripts/bench.sh hotpath measures it.
  redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
    --unixsocket "$dir/redis.sock" --unixsocketperm 700 \
    --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" --dir "$dir" \
    || die "redis-server did not start"
  local i
  for i in $(seq 1 100); do
    redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break
    sleep 0.1
  done
  redis-cli -p "$redis_port" ping >/dev/null 2>&1 || { cat "$dir/redis.log" >&2; die "Redis did not answer"; }

  printf '%s\n' "$bindir" >"$dir/pg_bindir"
  log "PostgreSQL on 127.0.0.1:$pg_port, Redis on 127.0.0.1:$redis_port, state in $dir"
  cat <<EOF
export TOLLGATE_SERVICES_DIR='$dir'
export DATABASE_URL='postgres://postgres@127.0.0.1:$pg_port/$db'
export REDIS_URL='redis://127.0.0.1:$redis_port'
export REDIS_SOCKET_URL='unix://$dir/redis.sock'
export PG_BINDIR='$bindir'
EOF
}

stop() {
  local dir=${1:-${TOLLGATE_SERVICES_DIR:-}}
  [ -n "$dir" ] && [ -d "$dir" ] || die "stop needs the folder that start printed (TOLLGATE_SERVICES_DIR)"
  case "$dir" in */tollgate-services.*) ;; *) die "refusing to remove $dir: not a services folder";; esac
  if [ -f "$dir/redis.pid" ]; then
    kill "$(cat "$dir/redis.pid")" 2>/dev/null || true
  fi
  if [ -d "$dir/pg/data" ]; then
    as_pg "$(cat "$dir/pg_bindir")/pg_ctl" -D "$dir/pg/data" -m fast -w stop >/dev/null 2>&1 || true
  fi
  rm -rf "$dir"
  log "stopped and removed $dir"
}

case "${1:-}" in
  start) start ;;
  stop) shift; stop "$@" ;;
  install) install ;;
  apt) shift; apt_install "$@" ;;
  pg-stop) as_pg "$(cat "$2/pg_bindir")/pg_ctl" -D "$2/pg/data" -m fast -w stop >/dev/null ;;
  pg-start) as_pg "$(cat "$2/pg_bindir")/pg_ctl" -D "$2/pg/data" -l "$2/pg/server.log" -w start >/dev/null ;;
  *) echo "usage: $0 start | stop DIR | install | apt PKG..." >&2; exit 64 ;;
esac
