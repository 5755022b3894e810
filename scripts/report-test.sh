#!/usr/bin/env bash
# The load harness as a person meets it (run by scripts/test.sh; needs
# DATABASE_URL and REDIS_URL, so run it under scripts/with-services.sh):
#
# 1. Two closed-model runs with bans and one staircase, against a server
#    the harness starts on those services: progress lines while they run.
# 2. Each run's report.html opened in headless Chromium (Debian's
#    chromium, installed when missing; driven by playwright-core from the
#    npm registry, installed when missing): every chart must be drawn with
#    data, and the page must ask the network for nothing.
# 3. compare in its three formats (text, md, junit), and its refusal (exit
#    3) of runs made with different settings unless told.
#
# The reports and screenshots stay in target/report-test/ to be looked at.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${DATABASE_URL:?run under scripts/with-services.sh (or set DATABASE_URL and REDIS_URL)}"
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

command -v chromium >/dev/null || scripts/services.sh apt chromium
command -v node >/dev/null && command -v npm >/dev/null || scripts/services.sh apt nodejs npm
[ -d loadtest/report-check/node_modules/playwright-core ] \
  || (cd loadtest/report-check && npm ci --no-audit --no-fund --loglevel=error)

cargo build --locked -q -p tollgate-loadtest
lt=target/debug/tollgate-loadtest
out=target/report-test
rm -rf "$out"; mkdir -p "$out"
common=(--no-calibrate --accounts 4 --tasks 20 --progress-secs 1)

for run in a b; do
  "$lt" cached-read revocation "${common[@]}" --victims 2 --ban-hold-ms 200 --users 4 --run-time 4 \
    --out "$out/$run" >"$out/$run.out" 2>"$out/$run.err" || { tail -20 "$out/$run.err"; echo "run $run failed"; exit 1; }
done
"$lt" cached-read "${common[@]}" --rate-steps 50:2s,100:2s,200:2s --out "$out/stairs" >"$out/stairs.out" 2>"$out/stairs.err" \
  || { tail -20 "$out/stairs.err"; echo "staircase failed"; exit 1; }

check "progress lines on stderr while a scenario runs" \
  grep -Eq '^loadtest: cached-read  [0-9]+/4 s  [0-9]+ req/s  errors \(5xx, transport\) 0  p99 [0-9.]+ ms' "$out/a.err"
check "progress lines for the revocation scenario too" grep -q '^loadtest: revocation  ' "$out/a.err"
check "the table shows the server's hit ratio" grep -q 'server: cache hit ratio [0-9.]*%' "$out/a.out"

# 2. The reports in a browser: charts of the timeline, the distribution,
# the hit ratio, ban-to-401 (revocation) and the staircase.
check "report with bans renders every chart with data" \
  node loadtest/report-check/check.mjs "$out/a/report.html" "$out/report-a.png" 9
check "staircase report renders every chart with data" \
  node loadtest/report-check/check.mjs "$out/stairs/report.html" "$out/report-stairs.png" 5
check "the staircase chart is drawn" grep -q 'aria-label="Staircase: latency against achieved throughput"' "$out/stairs/report.html"
check "the ban-to-401 chart is drawn" grep -q 'aria-label="Ban to first 401' "$out/a/report.html"
check "report redrawn from summary.json alone" bash -c \
  "'$lt' report '$out/a/summary.json' --out '$out/redrawn.html' >/dev/null && cmp -s '$out/a/report.html' '$out/redrawn.html'"

# 3. compare: both verdicts are possible between two runs on a noisy machine
# (0 or 2); what is checked is each format and the refusal.
cmp_run() { # FORMAT FILE ARGS...: runs compare, keeps its exit code in $code
  local format=$1 file=$2; shift 2
  code=0; "$lt" compare "$@" --format "$format" >"$file" 2>"$file.err" || code=$?
}
cmp_run text "$out/compare.txt" "$out/a/summary.json" "$out/b/summary.json"
check "compare --format text: a table and the verdict last (exit $code)" \
  bash -c "[ $code -eq 0 -o $code -eq 2 ] && grep -q 'cached-read *GET /tasks' '$out/compare.txt' && tail -1 '$out/compare.txt' | grep -Eq '^(no regression|REGRESSION)'"
cmp_run md "$out/compare.md" "$out/a/summary.json" "$out/b/summary.json"
check "compare --format md: the verdict first, then a Markdown table (exit $code)" \
  bash -c "[ $code -eq 0 -o $code -eq 2 ] && head -1 '$out/compare.md' | grep -Eq '^\*\*(✅ no regression|❌ REGRESSION)' && grep -q '^| cached-read | \`GET /tasks\` |' '$out/compare.md'"
cmp_run junit "$out/compare.xml" "$out/a/summary.json" "$out/b/summary.json"
check "compare --format junit: well-formed, a test case per scenario, request and metric (exit $code)" \
  python3 -c "
import sys, xml.etree.ElementTree as ET
s = ET.parse('$out/compare.xml').getroot()
cases = s.findall('testcase')
names = {c.get('name') for c in cases}
assert s.tag == 'testsuite' and int(s.get('tests')) == len(cases) > 0, s.attrib
assert {'GET /tasks req/s', 'GET /tasks p99'} <= names, names
assert int(s.get('failures')) == sum(1 for c in cases if c.find('failure') is not None)
assert ($code == 2) == (int(s.get('failures')) > 0)
"
cmp_run text "$out/refused.txt" "$out/a/summary.json" "$out/stairs/summary.json"
check "compare refuses runs with different settings (exit 3, says which)" \
  bash -c "[ $code -eq 3 ] && grep -q 'different settings' '$out/refused.txt.err'"
cmp_run text "$out/allowed.txt" "$out/a/summary.json" "$out/stairs/summary.json" --allow-different-settings
check "... unless told (--allow-different-settings: exit $code)" bash -c "[ $code -eq 0 -o $code -eq 2 ]"

echo "reports and screenshots: $out/"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
