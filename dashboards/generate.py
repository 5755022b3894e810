#!/usr/bin/env python3
"""Generates the Grafana dashboards in dashboards/grafana/ from one spec.

Dashboards as code: every panel is one line of the spec below (title, what
it answers, unit, queries), and every dashboard gets the same variables
(datasource, job, instance) and the same filter on every query. Edit this
file, run it, commit both; scripts/dashboards-test.sh fails when the JSON
and this spec disagree.

    python3 dashboards/generate.py           # write dashboards/grafana/*.json
    python3 dashboards/generate.py --check   # exit 1 if they are out of date
"""

import json
import sys
from pathlib import Path

SEL = 'job=~"$job", instance=~"$instance"'
RI = "$__rate_interval"


def rate(metric, extra="", window=RI):
    sel = SEL + (", " + extra if extra else "")
    return f"rate({metric}{{{sel}}}[{window}])"


def eq(key, value):
    return f'{key}="{value}"'


def match(key, pattern):
    return f'{key}=~"{pattern}"'


def quantile(q, metric, by):
    return f"histogram_quantile({q}, sum by ({by}, le) ({rate(metric + '_bucket')}))"


# (title, description, unit, kind, [(expr, legend)])
DASHBOARDS = {
    "overview": (
        "Tollgate / Overview",
        "RED per route: how many requests, how many fail, how slow.",
        [
            ("Requests by route and status class",
             "Request rate per route template, split by status class (2xx, 4xx, 5xx).", "reqps", "timeseries",
             [(f'sum by (route, class) (label_replace({rate("http_requests_total")}, "class", "${{1}}xx", "status", "(.).."))',
               "{{route}} {{class}}")]),
            ("5xx ratio by route",
             "Share of each route's requests answered with a 5xx: server faults and unavailable dependencies.",
             "percentunit", "timeseries",
             [(f'sum by (route) ({rate("http_requests_total", match("status", "5.."))}) / sum by (route) ({rate("http_requests_total")})',
               "{{route}}")]),
            ("4xx ratio by route",
             "Share answered with a 4xx: refused tokens, validation errors, throttling. A jump after a deploy is a client or contract break.",
             "percentunit", "timeseries",
             [(f'sum by (route) ({rate("http_requests_total", match("status", "4.."))}) / sum by (route) ({rate("http_requests_total")})',
               "{{route}}")]),
            ("Latency p50 / p90 / p99 by route",
             "From routing to response, per route template, from the request duration histogram.", "s", "timeseries",
             [(quantile(q, "http_request_duration_seconds", "route"), f"{{{{route}}}} p{int(q * 100)}")
              for q in (0.5, 0.9, 0.99)]),
            ("Requests answered 503",
             "Requests refused because PostgreSQL or the hash pool was unavailable.", "reqps", "timeseries",
             [(f'sum by (route) ({rate("http_requests_total", eq("status", "503"))})', "{{route}}")]),
        ],
    ),
    "auth": (
        "Tollgate / Auth and revocation",
        "Logins, refreshes, reuse, and where revocation checks are answered.",
        [
            ("Logins by outcome",
             "success, failure (wrong email or password), inactive (403), throttled (429).", "reqps", "timeseries",
             [(f'sum by (outcome) ({rate("auth_events_total", eq("event", "login"))})', "{{outcome}}")]),
            ("Refreshes by outcome",
             "Refresh rotations: success, failure (expired, revoked, blocked), reuse (a consumed token presented again).",
             "reqps", "timeseries",
             [(f'sum by (outcome) ({rate("auth_events_total", eq("event", "refresh"))})', "{{outcome}}")]),
            ("Refresh-token reuse detected",
             "Sessions ended because a consumed refresh token came back: a stolen token or a buggy client.", "short",
             "stat",
             [(f'sum(increase(auth_events_total{{{SEL}, event="refresh", outcome="reuse"}}[$__range]))', "reuse")]),
            ("Revocation checks by source and result",
             "redis: one round trip; db: PostgreSQL answered (Redis down, flushed or rebuilding); revoked = refused.",
             "reqps", "timeseries",
             [(f'sum by (source, result) ({rate("revocation_checks_total")})', "{{source}} {{result}}")]),
            ("Share of checks answered by PostgreSQL",
             "Normally near 0. High while Redis is down or rebuilding; every such check costs a PostgreSQL query.",
             "percentunit", "timeseries",
             [(f'sum({rate("revocation_checks_total", eq("source", "db"))}) / sum({rate("revocation_checks_total")})',
               "from PostgreSQL")]),
            ("Redis rebuilds from PostgreSQL",
             "Rebuilds of lost revocation state: restored (with the epochs restored: one per Redis, one per hash slot "
             "on a cluster, only the lost ones), voided (a flush or failed write meanwhile), failed (retried).",
             "short", "timeseries",
             [(f'sum by (result) (increase(redis_rebuilds_total{{{SEL}}}[$__rate_interval]))', "{{result}}"),
              (f'sum(increase(redis_rebuilt_slots_total{{{SEL}}}[$__rate_interval]))', "epochs restored")]),
            ("Identity-provider tokens by outcome",
             "External (OIDC) access tokens: allowed; revoked here (a ban, logout or logout-all the provider cannot "
             "apply to a token it issued); refused (signature, claims, unknown key); unavailable (no key, provider "
             "unreachable: 503).", "reqps", "timeseries",
             [(f'sum by (result) ({rate("external_token_checks_total")})', "{{result}}")]),
            ("Identity-provider key (JWKS) fetches",
             "Fetches of the provider's signing keys: at start, on its max-age, and on an unknown kid (at most one "
             "per 10 s). Errors keep the known keys working.", "short", "timeseries",
             [(f'sum by (result) (increase(jwks_fetches_total{{{SEL}}}[$__rate_interval]))', "{{result}}")]),
            ("Password hash time p50 / p99",
             "Argon2id hash or verification time; sets the login capacity (cores / hash time).", "s", "timeseries",
             [(f"histogram_quantile({q}, sum by (le) ({rate('password_hash_duration_seconds_bucket')}))", f"p{int(q * 100)}")
              for q in (0.5, 0.99)]),
        ],
    ),
    "cache": (
        "Tollgate / Cache",
        "Task-list and posts caches: hit rate, misses, Redis errors.",
        [
            ("Hit rate over time",
             "Share of cache look-ups served from the cache, per cache.", "percentunit", "timeseries",
             [(f'sum by (cache) ({rate("cache_requests_total", eq("result", "hit"))}) / sum by (cache) ({rate("cache_requests_total")})',
               "{{cache}}")]),
            ("Hit rate now",
             "The same, over the last 5 minutes.", "percentunit", "stat",
             [(f'sum by (cache) ({rate("cache_requests_total", eq("result", "hit"), "5m")}) / sum by (cache) ({rate("cache_requests_total", "", "5m")})',
               "{{cache}}")]),
            ("Misses per second",
             "Look-ups that went to PostgreSQL: after writes, first reads, expiries.", "reqps", "timeseries",
             [(f'sum by (cache) ({rate("cache_requests_total", eq("result", "miss"))})', "{{cache}}")]),
            ("Redis errors by operation",
             "Failed or timed-out Redis calls; each is answered from PostgreSQL instead.", "reqps", "timeseries",
             [(f'sum by (op) ({rate("dependency_errors_total", eq("dependency", "redis"))})', "{{op}}")]),
        ],
    ),
    "graphql": (
        "Tollgate / GraphQL",
        "The blog API: operations by name and result, and the shared posts cache.",
        [
            ("Operations by name, type and result",
             "GraphQL operations per second by the document's operation name (anonymous without one).", "ops",
             "timeseries",
             [(f'sum by (operation, type, result) ({rate("graphql_operations_total")})', "{{operation}} {{type}} {{result}}")]),
            ("Error ratio by operation",
             "Share of operations answered with errors (refused documents, BAD_USER_INPUT, NOT_FOUND, FORBIDDEN).",
             "percentunit", "timeseries",
             [(f'sum by (operation) ({rate("graphql_operations_total", eq("result", "error"))}) / sum by (operation) ({rate("graphql_operations_total")})',
               "{{operation}}")]),
            ("Posts cache hit ratio",
             "Share of posts page look-ups served from Redis; every mutation starts a new generation.", "percentunit",
             "timeseries",
             [(f'sum({rate("cache_requests_total", eq("cache", "posts") + ", " + eq("result", "hit"))}) / sum({rate("cache_requests_total", eq("cache", "posts"))})',
               "posts")]),
        ],
    ),
    "dependencies": (
        "Tollgate / Dependencies",
        "Connection pools and dependency errors.",
        [
            ("Pool connections busy and idle",
             "Open pooled connections per pool; busy near the pool size means requests wait for a connection.",
             "short", "timeseries",
             [(f"sum by (pool, state) (pool_connections{{{SEL}}})", "{{pool}} {{state}}")]),
            ("Dependency errors by dependency and operation",
             "Failed calls to PostgreSQL (503s) and Redis (answered from PostgreSQL).", "reqps", "timeseries",
             [(f'sum by (dependency, op) ({rate("dependency_errors_total")})', "{{dependency}} {{op}}")]),
        ],
    ),
}

# The load generator's own series (tollgate-loadtest --metrics-addr),
# filtered by run, beside the server's. Generators of one run share its
# run_id, so N of them add up here.
LT = 'run_id=~"$run_id"'
DASHBOARDS["loadtest"] = (
    "Tollgate / Load test",
    "A load run as the generator saw it, beside what the server saw; each scenario of a run is an annotation.",
    [
        ("Generator requests per second by scenario and request",
         "What the load generator sent and got answered, per request name.", "reqps", "timeseries",
         [(f"sum by (scenario, request) (rate(loadtest_requests_total{{{LT}}}[{RI}]))", "{{scenario}} {{request}}")]),
        ("Generator and server request rates",
         "The generator's answered requests beside the server's own count: a gap is traffic lost in between, "
         "or another client.", "reqps", "timeseries",
         [(f"sum(rate(loadtest_requests_total{{{LT}}}[{RI}]))", "generator"),
          (f"sum({rate('http_requests_total')})", "server")]),
        ("Latency p50 / p99: generator and server",
         "The generator's measured latency (network and queueing included) beside the server's own histogram.",
         "s", "timeseries",
         [(f"histogram_quantile({q}, sum by (le) (rate(loadtest_request_duration_seconds_bucket{{{LT}}}[{RI}])))",
           f"generator p{int(q * 100)}") for q in (0.5, 0.99)]
         + [(f"histogram_quantile(0.99, sum by (le) ({rate('http_request_duration_seconds_bucket')}))", "server p99")]),
        ("Generator answers by class",
         "2xx, 4xx, 5xx and transport errors as the generator saw them.", "reqps", "timeseries",
         [(f"sum by (class) (rate(loadtest_requests_total{{{LT}}}[{RI}]))", "{{class}}")]),
        ("Target and achieved rate",
         "The open model's scheduled rate (0 in the closed model) and what was answered in the last second "
         "(gauges of the generator; the last value in each interval, so a finished run still shows).",
         "reqps", "timeseries",
         [(f"sum by (scenario) (last_over_time(loadtest_target_rps{{{LT}}}[{RI}]))", "{{scenario}} target"),
          (f"sum by (scenario) (last_over_time(loadtest_achieved_rps{{{LT}}}[{RI}]))", "{{scenario}} achieved")]),
        ("Server cache hit ratio during the run",
         "Share of the server's cache look-ups served from the cache, per cache.", "percentunit", "timeseries",
         [(f'sum by (cache) ({rate("cache_requests_total", eq("result", "hit"))}) / sum by (cache) ({rate("cache_requests_total")})',
           "{{cache}}")]),
        ("Server revocation checks by source and result",
         "Where the server answered revocation during the run: redis (one round trip) or db (PostgreSQL).",
         "reqps", "timeseries",
         [(f'sum by (source, result) ({rate("revocation_checks_total")})', "{{source}} {{result}}")]),
    ],
)
EXTRA_VARIABLES = {
    "loadtest": [
        {"name": "run_id", "label": "Load run", "type": "query",
         "datasource": {"type": "prometheus", "uid": "${datasource}"},
         "query": {"query": "label_values(loadtest_requests_total, run_id)", "refId": "run_id"},
         "definition": "label_values(loadtest_requests_total, run_id)", "refresh": 2, "includeAll": True,
         "multi": True, "current": {}},
    ],
}
ANNOTATIONS = {
    "loadtest": [
        {"name": "Load test scenarios", "enable": True, "iconColor": "rgba(255, 96, 96, 1)",
         "datasource": {"type": "prometheus", "uid": "${datasource}"},
         "expr": f"loadtest_scenario_running{{{LT}}} == 1", "step": "1s",
         "titleFormat": "{{scenario}}", "textFormat": "run {{run_id}}", "tagKeys": "run_id,scenario"},
    ],
}


def panel(pid, x, y, title, description, unit, kind, targets):
    p = {
        "id": pid,
        "type": kind,
        "title": title,
        "description": description,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"h": 8, "w": 12, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}} if kind == "timeseries" else
                   {"reduceOptions": {"calcs": ["lastNotNull"]}},
        "targets": [
            {"refId": chr(65 + i), "expr": expr, "legendFormat": legend,
             "datasource": {"type": "prometheus", "uid": "${datasource}"}}
            for i, (expr, legend) in enumerate(targets)
        ],
    }
    return p


def variables(uid):
    return {"list": [
        {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
         "current": {}, "hide": 0},
        {"name": "job", "label": "Job", "type": "query", "datasource": {"type": "prometheus", "uid": "${datasource}"},
         "query": {"query": "label_values(http_requests_total, job)", "refId": "job"},
         "definition": "label_values(http_requests_total, job)", "refresh": 2, "includeAll": True, "multi": True,
         "current": {}},
        {"name": "instance", "label": "Instance", "type": "query",
         "datasource": {"type": "prometheus", "uid": "${datasource}"},
         "query": {"query": 'label_values(http_requests_total{job=~"$job"}, instance)', "refId": "instance"},
         "definition": 'label_values(http_requests_total{job=~"$job"}, instance)', "refresh": 2,
         "includeAll": True, "multi": True, "current": {}},
    ] + EXTRA_VARIABLES.get(uid, [])}


def dashboard(uid, title, description, panels):
    out = []
    for i, (ptitle, desc, unit, kind, targets) in enumerate(panels):
        out.append(panel(i + 1, (i % 2) * 12, (i // 2) * 8, ptitle, desc, unit, kind, targets))
    return {
        "uid": f"tollgate-{uid}",
        "title": title,
        "description": description,
        "tags": ["tollgate"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "10s",
        "time": {"from": "now-30m", "to": "now"},
        "templating": variables(uid),
        "annotations": {"list": ANNOTATIONS.get(uid, [])},
        "panels": out,
    }


def render():
    return {f"{uid}.json": json.dumps(dashboard(uid, *spec), indent=2) + "\n" for uid, spec in DASHBOARDS.items()}


def main():
    folder = Path(__file__).resolve().parent / "grafana"
    files = render()
    if "--check" in sys.argv:
        stale = [n for n, text in files.items() if not (folder / n).exists() or (folder / n).read_text() != text]
        if stale:
            print(f"dashboards out of date, run python3 dashboards/generate.py: {', '.join(stale)}")
            sys.exit(1)
        return
    folder.mkdir(exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)
        print(f"wrote dashboards/grafana/{name}")


if __name__ == "__main__":
    main()
