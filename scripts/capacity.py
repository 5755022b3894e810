#!/usr/bin/env python3
"""Inputs of the capacity model: `scripts/bench.sh capacity`.

On the PostgreSQL and Redis of DATABASE_URL / REDIS_URL (scripts/bench.sh
provides throwaway ones), starts one server, three more behind HAProxy
(Debian's package; round robin per request; the same database, so the same
Redis keys), and a server with CACHE_BACKEND=off. Then, in interleaved rounds
with a warm-up each, wrk drives:

- cached `GET /tasks` on the one instance,
- cached `GET /tasks` through the proxy to the three,
- `GET /tasks` on the cache-less server (every request a PostgreSQL query),
- cached `GET /tasks` on one instance on a Redis Cluster, when
  REDIS_CLUSTER_URLS and REDIS_CLUSTER_DIR name one (scripts/bench.sh
  capacity starts one with scripts/redis-cluster.sh); its Redis column is
  the CPU of all the cluster's nodes.

For each, req/s (median over the rounds, with the spread) and the CPU
microseconds per request of every process on the path: the server(s),
Redis, PostgreSQL (the postmaster and its backends) and HAProxy, from
/proc over each measured round. CPU per request is what sizes a deployment:
one core of a component carries about 1e6 / (its µs per request) requests
per second of that kind, on hardware like this. Loopback only; bounded.
"""

import argparse
import glob
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hotpath import (ROOT, TICK, Server, die, free_port, http, postmaster_pid, redis_pid, set_up,  # noqa: E402
                     summary, tree_ticks, wait_ready, wrk)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--secs", type=int, default=8)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", action="store_true")
    p.add_argument("--profile", default="release")
    a = p.parse_args()
    # A SIGTERM (a CI timeout, kill) unwinds like Ctrl-C, so the servers
    # this started are stopped by the `finally` below, not left running.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    binary = os.path.join(ROOT, "target", a.profile, "tollgate")
    # Empty means unset: the single-Redis servers must not pick up the
    # cluster from the environment; the prefix derives from the database.
    base_env = {"RUST_LOG": "warn", "REDIS_KEY_PREFIX": "", "REDIS_CLUSTER_URLS": ""}
    servers = []
    try:
        one = Server("one", [binary], base_env)
        three = [Server(f"i{i}", [binary], base_env) for i in range(3)]
        miss = Server("miss", [binary], dict(base_env, CACHE_BACKEND="off"))
        servers = [one, *three, miss]
        cluster_dir = os.environ.get("REDIS_CLUSTER_DIR")
        on_cluster = None
        if os.environ.get("REDIS_CLUSTER_URLS") and cluster_dir:
            on_cluster = Server("cluster", [binary], dict(base_env, REDIS_CLUSTER_URLS=os.environ["REDIS_CLUSTER_URLS"]))
            servers.append(on_cluster)
        for s in servers:
            wait_ready(s.url, s.proc)
        proxy_port = free_port()
        cfg = tempfile.NamedTemporaryFile("w", prefix="capacity-haproxy-", suffix=".cfg", delete=False)
        cfg.write("defaults\n  mode http\n  timeout connect 2s\n  timeout client 30s\n  timeout server 30s\n"
                  f"frontend f\n  bind 127.0.0.1:{proxy_port}\n  default_backend b\n"
                  "backend b\n  balance roundrobin\n  http-reuse always\n"
                  + "".join(f"  server {s.name} 127.0.0.1:{s.port}\n" for s in three))
        cfg.close()
        proxy = Server("haproxy", ["haproxy", "-f", cfg.name, "-db"])
        servers.append(proxy)
        proxy_url = f"http://127.0.0.1:{proxy_port}"
        wait_ready(proxy_url, proxy.proc)
        token, _ = set_up(one.url)  # one database: the same user and token everywhere
        rpid, ppid = redis_pid(), postmaster_pid()
        single = lambda: tree_ticks(rpid)[0]
        paths = [
            ("cached GET /tasks, 1 instance", f"{one.url}/tasks", [one], single),
            ("cached GET /tasks, 3 instances behind HAProxy", f"{proxy_url}/tasks", [*three], single),
            ("GET /tasks, no cache (PostgreSQL)", f"{miss.url}/tasks", [miss], single),
        ]
        if on_cluster:
            pids = [int(open(f).read()) for f in sorted(glob.glob(os.path.join(cluster_dir, "*.pid")))]
            nodes = lambda: sum(tree_ticks(*pids))
            paths.append(("cached GET /tasks, 1 instance on Redis Cluster", f"{on_cluster.url}/tasks", [on_cluster], nodes))
        results = {name: [] for name, _, _, _ in paths}
        for _ in range(a.rounds):
            for name, url, procs, redis_ticks in paths:
                wrk(url, a.warmup, a.connections, a.threads, token)
                before = ([s.cpu_ticks() for s in procs], redis_ticks(), tree_ticks(ppid)[0], proxy.cpu_ticks())
                r = wrk(url, a.secs, a.connections, a.threads, token)
                after = ([s.cpu_ticks() for s in procs], redis_ticks(), tree_ticks(ppid)[0], proxy.cpu_ticks())
                if r["non_2xx"]:
                    die(f"{url}: {r['non_2xx']} answers were not 2xx")
                per = lambda t: t * 1e6 / TICK / max(r["requests"], 1)
                r["server_us"] = per(sum(after[0]) - sum(before[0]))
                r["redis_us"] = per(after[1] - before[1])
                r["postgres_us"] = per(after[2] - before[2])
                r["haproxy_us"] = per(after[3] - before[3])
                results[name].append(r)
        out = {name: {k: summary([r[k] for r in rs]) for k in
                      ("rps", "p99_ms", "server_us", "redis_us", "postgres_us", "haproxy_us")}
               for name, rs in results.items()}
        if a.json:
            print(json.dumps(out, indent=1))
            return
        print(f"{a.rounds} interleaved rounds of {a.secs} s, wrk -t{a.threads} -c{a.connections}; "
              "CPU microseconds per request by process")
        print(f"{'path':<48} {'req/s median (min..max)':>26} {'p99 ms':>7} {'server':>7} {'redis':>6} "
              f"{'pg':>6} {'proxy':>6}")
        for name, s in out.items():
            rps = s["rps"]
            print(f"{name:<48} {rps['median']:>10,.0f} ({rps['min']:,.0f}..{rps['max']:,.0f})".ljust(75)
                  + f"{s['p99_ms']['median']:>7.2f} {s['server_us']['median']:>7.1f} {s['redis_us']['median']:>6.1f}"
                  f" {s['postgres_us']['median']:>6.1f} {s['haproxy_us']['median']:>6.1f}")
    finally:
        for s in servers:
            s.stop()


if __name__ == "__main__":
    main()
