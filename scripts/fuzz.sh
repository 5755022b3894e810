#!/usr/bin/env bash
# libFuzzer targets of fuzz/ through cargo fuzz: request_body (JSON bodies
# of POST/PATCH /tasks), jwt (bearer token parsing and verification),
# list_query (the ?limit=&offset=&completed= parser).
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET ...]    (default: 30 s, all)
#
# Installs cargo-fuzz (cargo install) when missing. cargo fuzz passes
# nightly-only flags; the machine has one stable toolchain, whose sanitizer
# runtimes are enough, so RUSTC_BOOTSTRAP=1 lets it accept them.
# The committed corpus (fuzz/corpus/TARGET) seeds each run; new inputs go to
# a temporary folder unless FUZZ_GROW_CORPUS=1, so a run does not change the
# repository. A crash fails the run and leaves its input in
# fuzz/artifacts/TARGET for `cargo fuzz run TARGET fuzz/artifacts/TARGET/...`.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-30}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(request_body jwt list_query)
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
export RUSTC_BOOTSTRAP=1
tmp=$(mktemp -d /tmp/tollgate-fuzz.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
cd fuzz
cargo fuzz build
passed=0; failed=0
for t in "${targets[@]}"; do
  dirs=("corpus/$t")
  [ "${FUZZ_GROW_CORPUS:-0}" = 1 ] || { mkdir -p "$tmp/$t"; dirs=("$tmp/$t" "corpus/$t"); }
  if cargo fuzz run "$t" "${dirs[@]}" -- -max_total_time="$secs" -print_final_stats=1 >"$tmp/$t.log" 2>&1; then
    passed=$((passed + 1))
    echo "ok    $t: $(grep -E '^Done [0-9]+ runs' "$tmp/$t.log" | tail -n1)"
  else
    failed=$((failed + 1))
    echo "FAIL  $t:"; tail -n 30 "$tmp/$t.log"
  fi
done
echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
