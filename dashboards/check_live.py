#!/usr/bin/env python3
"""Checks the dashboards and rules against a live Prometheus that scrapes a
live Tollgate server (scripts/dashboards-test.sh sets both up).

    check_live.py PROMETHEUS_URL METRICS_TEXT_FILE[,FILE...] JOB

- every panel query of every dashboard, variables substituted, must succeed
  and return at least one series (a panel showing "no data" after real
  traffic is a broken panel);
- every rule must be loaded and healthy; every recording rule must return
  data, and so must the measured side of every alert (the part before its
  comparison: an alert that is not firing returns nothing by design);
- every annotation query must have returned data over the last 10 minutes
  (a range query, as Grafana asks: the load-test annotations mark scenarios
  that have ended);
- every metric a dashboard or rule reads must be one the server (or the
  load generator, whose exposition is the second file) exports, or a
  recording rule.

Prints one line per check, each panel's value, and "N passed, N failed".
"""

import json
import re
import sys
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent
PROMQL_WORDS = {
    "sum", "by", "rate", "increase", "histogram_quantile", "label_replace", "and", "on", "or", "unless",
    "without", "le", "ignoring", "group_left", "group_right", "offset", "bool", "avg", "max", "min", "count",
    "last_over_time",
}


def query(prom, expr):
    url = f"{prom}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return json.load(r)
    except urllib.error.HTTPError as e:
        return json.load(e)


def query_range(prom, expr, seconds=600):
    import time
    now = time.time()
    params = {"query": expr, "start": now - seconds, "end": now, "step": "1"}
    url = f"{prom}/api/v1/query_range?" + urllib.parse.urlencode(params)
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return json.load(r)
    except urllib.error.HTTPError as e:
        return json.load(e)


def substitute(expr, job):
    return (expr.replace("$__rate_interval", "1m").replace("$__range", "5m")
            .replace('"$job"', f'"{job}"').replace('"$instance"', '".+"').replace('"$run_id"', '".+"'))


def metric_names(expr):
    expr = re.sub(r'"[^"]*"', '""', expr)          # drop label values
    expr = re.sub(r"\{[^}]*\}", "", expr)            # drop selectors
    expr = re.sub(r"\[[^\]]*\]", "", expr)           # drop ranges
    expr = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", expr)  # drop grouping labels
    names = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr))
    return {n for n in names if n not in PROMQL_WORDS and not re.fullmatch(r"[0-9.e]+", n)}


def value_of(result):
    try:
        v = float(result["data"]["result"][0]["value"][1])
        return f"{v:.4g}"
    except (KeyError, IndexError, ValueError):
        return "?"


def main():
    prom, metrics_file, job = sys.argv[1], sys.argv[2], sys.argv[3]
    exported = set()
    text = "\n".join(Path(f).read_text() for f in metrics_file.split(","))
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            name, kind = line.split()[2:4]
            exported.add(name)
            if kind == "histogram":
                exported |= {name + "_bucket", name + "_sum", name + "_count"}
    passed = failed = 0

    def check(ok, what):
        nonlocal passed, failed
        if ok:
            passed += 1
            print(f"ok    {what}")
        else:
            failed += 1
            print(f"FAIL  {what}")

    with urllib.request.urlopen(f"{prom}/api/v1/rules", timeout=10) as r:
        loaded = [rule for g in json.load(r)["data"]["groups"] for rule in g["rules"]]
    expected = len(re.findall(r"^\s+- (?:record|alert):", (ROOT / "prometheus" / "rules.yml").read_text(), re.M))
    recorded = {r["name"] for r in loaded if r["type"] == "recording"}

    for f in sorted((ROOT / "grafana").glob("*.json")):
        dash = json.loads(f.read_text())
        vars_ = {v["name"] for v in dash["templating"]["list"]}
        check({"datasource", "job", "instance"} <= vars_, f"{f.name}: datasource, job and instance variables")
        for a in dash.get("annotations", {}).get("list", []):
            unknown = metric_names(a["expr"]) - exported - recorded
            check(not unknown, f"{f.name} / annotation {a['name']}: reads only exported metrics {sorted(unknown) or ''}")
            r = query_range(prom, substitute(a["expr"], job))
            ok = r.get("status") == "success" and len(r["data"]["result"]) > 0
            n = len(r.get("data", {}).get("result", []))
            check(ok, f"{f.name} / annotation {a['name']}: marked {n} scenario runs in the last 10 minutes"
                      + ("" if ok else f" -- {r.get('error', 'no series')}"))
        for p in dash["panels"]:
            check(bool(p.get("description")) and bool(p["fieldConfig"]["defaults"].get("unit")),
                  f"{f.name} / {p['title']}: has a description and a unit")
            for t in p["targets"]:
                expr = t["expr"]
                unknown = metric_names(expr) - exported - recorded
                check(not unknown, f"{f.name} / {p['title']}: reads only exported metrics {sorted(unknown) or ''}")
                r = query(prom, substitute(expr, job))
                ok = r.get("status") == "success" and len(r["data"]["result"]) > 0
                check(ok, f"{f.name} / {p['title']} [{t['refId']}]: returns data (value {value_of(r)})"
                          + ("" if ok else f" -- {r.get('error', 'no series')}"))

    check(len(loaded) == expected > 0, f"all {expected} rules of rules.yml loaded ({len(loaded)})")
    for rule in loaded:
        name = rule["name"]
        check(rule.get("health") == "ok", f"rule {name}: healthy {rule.get('lastError', '')}")
        expr = name if rule["type"] == "recording" else re.split(r"\s[<>]=?\s", rule["query"])[0]
        unknown = metric_names(rule["query"]) - exported - recorded
        check(not unknown, f"rule {name}: reads only exported metrics {sorted(unknown) or ''}")
        r = query(prom, expr)
        ok = r.get("status") == "success" and len(r["data"]["result"]) > 0
        check(ok, f"rule {name}: {'series' if rule['type'] == 'recording' else 'measured side'} returns data "
                  f"(value {value_of(r)})")

    print(f"dashboards: {passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
