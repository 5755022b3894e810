#!/usr/bin/env bash
# Supply-chain checks with cargo deny (deny.toml): licences, banned and
# duplicate crates, sources, and RustSec advisories. Installs cargo-deny
# (cargo install) when missing.
#
# Advisories need the RustSec database, a git repository fetched over the
# network. Where it cannot be fetched (a closed network), this says so
# plainly and runs the other checks offline; run it where the database is
# reachable to cover advisories too.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-deny >/dev/null || cargo install --locked cargo-deny
passed=0; failed=0
if timeout 60 cargo deny fetch >/tmp/deny-fetch.$$ 2>&1; then
  if cargo deny check advisories; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
else
  echo "deny: advisories NOT checked: the RustSec database could not be fetched here (run 'cargo deny fetch' to see why)"
fi
rm -f /tmp/deny-fetch.$$
for check in licenses bans sources; do
  if cargo deny --offline check "$check" 2>/tmp/deny.$$; then
    passed=$((passed + 1)); echo "ok    $check"
  else
    failed=$((failed + 1)); echo "FAIL  $check"; cat /tmp/deny.$$
  fi
done
rm -f /tmp/deny.$$
echo "deny: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
