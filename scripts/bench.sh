#!/usr/bin/env bash
# Benchmarks and their regression gates (README, "Benchmarks").
#
#   scripts/bench.sh save [NAME]                 criterion: run every bench, save as baseline NAME (main)
#   scripts/bench.sh check [NAME] [--threshold PCT]
#                                                criterion: compare with baseline NAME; exit 1 on a
#                                                significant slow-down beyond PCT (10) that a second
#                                                measurement of the flagged benches confirms
#   scripts/bench.sh instructions save           callgrind: store counts in benches/baselines/instructions.json
#   scripts/bench.sh instructions check [--threshold PCT]
#                                                callgrind: compare with that file; exit 1 beyond PCT (2)
#   scripts/bench.sh hotpath [--rounds N] [--secs S] [--base-bin PATH] [--json]
#                                                wrk (installed when missing): the server's paths
#                                                against a bare hyper server and pgbench, interleaved;
#                                                ratios, CPU µs per request, login capacity, memory
#                                                (scripts/hotpath.py --help)
#   scripts/bench.sh capacity [--rounds N] [--secs S] [--json]
#                                                wrk and HAProxy (installed when missing): cached GET
#                                                /tasks on 1 instance, on 3 behind HAProxy, on 1 on a
#                                                Redis Cluster (scripts/redis-cluster.sh), and the
#                                                cache-less path; CPU µs per request of the servers,
#                                                Redis, PostgreSQL and HAProxy (scripts/capacity.py)
#
# The service and loopback benches need PostgreSQL and Redis: started here
# as throwaway instances unless DATABASE_URL and REDIS_URL are set.
set -euo pipefail
cd "$(dirname "$0")/.."

need_valgrind() {
  command -v valgrind >/dev/null && return
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    echo "bench: installing valgrind from Debian's packages" >&2
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >&2
  else
    echo "bench: valgrind is not installed (apt-get install valgrind)" >&2; exit 2
  fi
}

baseline_file=benches/baselines/instructions.json
case "${1:-}" in
  save)
    name=${2:-main}
    exec scripts/with-services.sh cargo bench --locked -p tollgate-benches --bench paths -- --save-baseline "$name" ;;
  check)
    shift; name=main
    if [ $# -gt 0 ] && [ "${1#--}" = "$1" ]; then name=$1; shift; fi
    threshold=10
    while [ $# -gt 0 ]; do case "$1" in --threshold) threshold=$2; shift 2;; *) echo "bench: unknown option $1" >&2; exit 2;; esac; done
    gate() { cargo run --locked --release -q -p tollgate-benches --bin bench-gate -- \
               --baseline "$name" --threshold "$threshold" --regressed target/criterion/regressed.txt; }
    scripts/with-services.sh cargo bench --locked -p tollgate-benches --bench paths -- --baseline "$name"
    rc=0; gate || rc=$?
    if [ "$rc" -eq 1 ] && [ -s target/criterion/regressed.txt ]; then
      # A shared machine has bursts of noise that are "significant" within
      # one run. Measure only the flagged benches once more; fail if they
      # regress again.
      filter="^($(paste -sd'|' target/criterion/regressed.txt))\$"
      echo "bench: measuring the flagged benches again: $filter"
      scripts/with-services.sh cargo bench --locked -p tollgate-benches --bench paths -- --baseline "$name" "$filter"
      rc=0; gate || rc=$?
    fi
    exit "$rc" ;;
  instructions)
    need_valgrind
    cargo build --locked --release -q -p tollgate-benches --bin instructions
    case "${2:-check}" in
      save) target/release/instructions measure --out "$baseline_file"; cat "$baseline_file" ;;
      check) shift 2 || true; target/release/instructions check "$baseline_file" "$@" ;;
      *) echo "usage: $0 instructions save|check [--threshold PCT]" >&2; exit 2 ;;
    esac ;;
  hotpath)
    shift
    command -v wrk >/dev/null || scripts/services.sh apt wrk
    # HOTPATH_PROFILE=debug: the test command's quick run (no release build).
    profile=${HOTPATH_PROFILE:-release}
    flag=(); [ "$profile" = release ] && flag=(--release)
    cargo build --locked "${flag[@]}" -q -p tollgate --bin tollgate
    cargo build --locked "${flag[@]}" -q -p tollgate-benches --example bare --example hashing
    set -- --profile "$profile" "$@"
    exec scripts/with-services.sh python3 scripts/hotpath.py "$@" ;;
  capacity)
    shift
    command -v wrk >/dev/null || scripts/services.sh apt wrk
    command -v haproxy >/dev/null || scripts/services.sh apt haproxy
    profile=${CAPACITY_PROFILE:-release}
    flag=(); [ "$profile" = release ] && flag=(--release)
    cargo build --locked "${flag[@]}" -q -p tollgate --bin tollgate
    set -- --profile "$profile" "$@"
    eval "$(scripts/redis-cluster.sh start)"
    trap 'scripts/redis-cluster.sh stop "$REDIS_CLUSTER_DIR"' EXIT
    scripts/with-services.sh python3 scripts/capacity.py "$@" ;;
  *) sed -n '2,24p' "$0" >&2; exit 2 ;;
esac
