#!/usr/bin/env python3
"""The hot path side by side with a bare server: `scripts/bench.sh hotpath`.

Starts (on the PostgreSQL and Redis of DATABASE_URL / REDIS_URL, which
scripts/bench.sh provides) the release server, a second one with
CACHE_BACKEND=off (the miss path), the bare hyper server of
benches/examples/bare.rs answering a body of the cached page's size, and,
with --base-bin, another build of the server (its own database) to compare
against. Then, in interleaved rounds (A B C ... A B C, each with a warm-up),
wrk measures each path, and pgbench -S -M prepared the database's own
ceiling (and pgbench of the miss path's SELECT, that statement's). Per
path: req/s, p50 and p99 (medians over the rounds, with their spread) and
the CPU microseconds per request of each process on it, from /proc over the
round, divided by the requests wrk (or pgbench) counted: the server,
PostgreSQL (postmaster and backends), Redis, and the client making the load.
On a saturated machine they add up to its cores, so the miss path's columns
show where its budget goes (the line after the ratios: what 50 % of pgbench
-S leaves per request, against what it takes). A second bare server reads
the miss path's page before each answer (the server's own listener, lanes
and read, without authentication, revocation or JSON): the floor of a cache
miss, the most any server on this storage layer answers here.

Then logins, in rounds: a storm of correct logins (Argon2id) alone on the
machine against the server's hashing pool alone, kept busy with no server
around it (benches/examples/hashing.rs: HASH_CONCURRENCY threads, one per
core by default, so its rate is cores / hash time), the median of the
rounds' ratios being login throughput against that ceiling; the cached GET
/tasks p99 during a storm against the same read just before it (the median
of their ratios); the bare server's p99 before and during the same hashing
with no server around it, what the hashing alone costs any server's p99 on
this machine; and the other side of that trade: single logins while cached
reads keep the cores busy. Last, the
resident size of a fresh server of its own (so the rounds above leave
nothing in it): idle at start, idle after a login storm, and at its peak
under 256 keep-alive connections.

On a shared machine absolute numbers move by tens of percent from run to
run; the ratios within one run (cached/bare, miss/pgbench, head/base) and
CPU per request are what to read. Only loopback addresses are used; every
load is bounded in time. Exit 0 when it ran (the targets are reported, not
enforced: this is a measurement), 1 when something could not run.
"""

import argparse
import glob
import json
import os
import re
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TICK = os.sysconf("SC_CLK_TCK")
EMAIL, PASSWORD = "hotpath@tollgate-bench.example", "hotpath-password-1"
# The login storms' accounts, taken in turn: a storm is many people logging
# in, not one account gathering thousands of sessions, whose trimming to
# MAX_SESSIONS_PER_USER would cost PostgreSQL more with every login.
STORM_USERS = 64


def die(msg):
    print(f"hotpath: {msg}", file=sys.stderr)
    sys.exit(1)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method, url, body=None, token=None):
    req = urllib.request.Request(url, method=method, data=json.dumps(body).encode() if body is not None else None)
    if body is not None:
        req.add_header("content-type", "application/json")
    if token:
        req.add_header("authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def wait_ready(url, proc):
    for _ in range(200):
        if proc.poll() is not None:
            die(f"{url} exited at start (code {proc.returncode})")
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    die(f"{url} did not answer /healthz")


class Server:
    """A process on a loopback port, stopped by stop()."""

    def __init__(self, name, argv, env=None, url_path=""):
        self.name, self.port = name, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        full_env = dict(os.environ, **(env or {}), BIND_ADDR=f"127.0.0.1:{self.port}")
        argv = [a.replace("{port}", str(self.port)) for a in argv]
        self.log = tempfile.NamedTemporaryFile(prefix=f"hotpath-{name}-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(argv, env=full_env, stdout=self.log, stderr=subprocess.STDOUT)

    def cpu_ticks(self):
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime, stime

    def rss_mib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            kb = int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))
        return kb / 1024

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def wrk(url, secs, conns, threads, token=None, script=None, check=True):
    """One wrk run. With `check`, stops the script when any answer was not
    2xx: numbers measured on error answers would mislead. (A run on a thread
    of its own passes check=False and is checked by the caller: exiting on
    a thread ends only that thread.)"""
    argv = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{secs}s", "--latency"]
    if token:
        argv += ["-H", f"authorization: Bearer {token}"]
    if script:
        argv += ["-s", script]
    out = subprocess.run(argv + [url], capture_output=True, text=True, timeout=secs + 30).stdout
    def ms(label):
        m = re.search(rf"^\s*{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if not m:
            return float("nan")
        return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]
    requests = re.search(r"(\d+) requests in", out)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if not (requests and rps):
        die(f"wrk gave no result for {url}:\n{out}")
    result = {"requests": int(requests.group(1)), "rps": float(rps.group(1)), "p50_ms": ms("50"),
              "p99_ms": ms("99"), "non_2xx": int(non2xx.group(1)) if non2xx else 0}
    if check and result["non_2xx"]:
        die(f"{url}: {result['non_2xx']} answers were not 2xx")
    return result


class Others:
    """The CPU of what a request passes through besides the server:
    PostgreSQL (the postmaster and its backends), Redis, and the client
    making the load (wrk or pgbench: this script's children, counted once
    they have exited), in seconds. With the server's, it accounts for the
    machine: on a saturated one the columns add up to its cores."""

    def __init__(self):
        self.postgres = self._pid("PostgreSQL", postmaster_pid, "postgres")
        self.redis = self._pid("Redis", redis_pid, "redis")

    @staticmethod
    def _pid(name, find, comm):
        """The process to measure, or None (its column left empty) when it
        is not one this machine can see, such as a database elsewhere."""
        try:
            pid = find()
            with open(f"/proc/{pid}/comm") as f:
                if comm not in f.read():
                    raise ValueError(f"process {pid} here is not {name}: it runs elsewhere")
            return pid
        except (OSError, subprocess.SubprocessError, ValueError) as e:
            print(f"hotpath: {name}'s CPU is not measured ({e})", file=sys.stderr)
            return None

    def seconds(self):
        c = resource.getrusage(resource.RUSAGE_CHILDREN)
        found = [pid for pid in (self.postgres, self.redis) if pid]
        ticks = dict(zip(found, tree_ticks(*found)))
        secs = lambda pid: ticks[pid] / TICK if pid else float("nan")
        return {"pg": secs(self.postgres), "redis": secs(self.redis), "client": c.ru_utime + c.ru_stime}

    def per_request(self, before, n, into):
        """Adds `pg_us`, `redis_us` and `client_us` per request since `before`."""
        after = self.seconds()
        for k, v in after.items():
            into[f"{k}_us"] = (v - before[k]) * 1e6 / max(n, 1)
        return into


def measured(server, url, a, others, token=None, script=None, conns=None):
    """One warmed-up wrk round with the CPU per request of the server and
    of the processes around it ([`Others`])."""
    conns = conns or a.connections
    wrk(url, a.warmup, conns, a.threads, token, script)
    before, around = server.cpu_ticks(), others.seconds()
    r = wrk(url, a.secs, conns, a.threads, token, script)
    r["cpu_us_per_req"] = (server.cpu_ticks() - before) * 1e6 / TICK / max(r["requests"], 1)
    return others.per_request(around, r["requests"], r)


def tree_ticks(*roots):
    """CPU ticks of each root process with all its descendants, in the
    order given, from one pass over /proc: utime + stime of each live
    process, plus cutime + cstime (what each has reaped). So PostgreSQL's
    backends count after they exited too (pgbench's close at its end, and
    their CPU moves to the postmaster), without counting anything twice."""
    children, own = {}, {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        own[int(pid)] = sum(int(x) for x in fields[11:15])  # utime, stime, cutime, cstime
        children.setdefault(int(fields[1]), []).append(int(pid))
    totals = []
    for root in roots:
        total, todo = 0, [root]
        while todo:
            pid = todo.pop()
            total += own.get(pid, 0)
            todo += children.get(pid, [])
        totals.append(total)
    return tuple(totals)


def redis_pid():
    url = os.environ["REDIS_URL"]
    argv = ["redis-cli", "-s", url[len("unix://"):]] if url.startswith("unix://") else ["redis-cli", "-u", url]
    info = subprocess.run(argv + ["INFO", "server"], capture_output=True, text=True, timeout=10).stdout
    pid = next((l.split(":")[1] for l in info.splitlines() if l.startswith("process_id:")), None)
    if pid is None:
        raise ValueError(f"INFO from {url} has no process_id")
    return int(pid)


def postmaster_pid():
    """From the data directory's postmaster.pid (readable on the machine
    that runs PostgreSQL, which is the only one this script measures)."""
    psql = os.path.join(os.environ.get("PG_BINDIR", "/usr/bin"), "psql")
    data = subprocess.run([psql, os.environ["DATABASE_URL"], "-Atc", "SHOW data_directory"],
                          capture_output=True, text=True, timeout=10).stdout.strip()
    with open(os.path.join(data, "postmaster.pid")) as f:
        return int(f.readline())


def pgbench_bin():
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pgbench"))
    if os.environ.get("PG_BINDIR"):
        found.append(os.path.join(os.environ["PG_BINDIR"], "pgbench"))
    return found[-1] if found else die("pgbench not found (it comes with Debian's postgresql)")


def set_up(url):
    """A user with 20 tasks and a long-lived token."""
    http("POST", f"{url}/auth/register", {"email": EMAIL, "password": PASSWORD})
    status, body = http("POST", f"{url}/auth/login", {"email": EMAIL, "password": PASSWORD})
    if status != 200:
        die(f"{url}: login answered {status}: {body[:200]!r}")
    token = json.loads(body)["access_token"]
    status, body = http("GET", f"{url}/tasks?limit=100", token=token)
    for i in range(20 - len(json.loads(body))):
        http("POST", f"{url}/tasks", {"title": f"hot path task {i}"}, token)
    status, body = http("GET", f"{url}/tasks", token=token)
    if status != 200 or len(json.loads(body)) != 20:
        die(f"{url}: GET /tasks answered {status} with {body[:100]!r}")
    return token, len(body)


def hashing_rate(proc):
    """Hashes per second and threads from benches/examples/hashing.rs's
    line, once `proc` (its Popen) has ended."""
    out, err = proc.communicate(timeout=120)
    m = re.match(r"([\d.]+) hashes/s on (\d+) threads", out)
    if proc.returncode != 0 or not m:
        die(f"the hashing example failed: {err.strip() or out.strip()}")
    return float(m.group(1)), int(m.group(2))


def summary(values):
    values = [v for v in values if v == v]
    if not values:
        return {"median": float("nan"), "min": float("nan"), "max": float("nan")}
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--secs", type=int, default=8, help="seconds per measured round")
    p.add_argument("--warmup", type=int, default=2, help="seconds of warm-up before each round")
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--base-bin", help="another build of the server to measure beside this one (GET /tasks, cached)")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    p.add_argument("--profile", default="release", help="the cargo profile of the binaries (debug: the test "
                   "command's quick run that keeps this script from rotting; its numbers mean nothing)")
    a = p.parse_args()
    # A SIGTERM (a CI timeout, kill) unwinds like Ctrl-C, so the servers
    # this started are stopped by the `finally` below, not left running.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    for k in ("DATABASE_URL", "REDIS_URL"):
        if not os.environ.get(k):
            die(f"{k} is not set: run through scripts/bench.sh hotpath")
    db_url = os.environ["DATABASE_URL"]
    db_base = db_url.rsplit("/", 1)[0]
    server_bin = os.path.join(ROOT, f"target/{a.profile}/tollgate")
    bare_bin = os.path.join(ROOT, f"target/{a.profile}/examples/bare")
    hashing_bin = os.path.join(ROOT, f"target/{a.profile}/examples/hashing")
    common = {"ACCESS_TOKEN_TTL_SECS": "86400", "RUST_LOG": "error"}

    servers = []
    try:
        main_srv = Server("server", [server_bin], common)
        miss_srv = Server("miss", [server_bin], dict(common, CACHE_BACKEND="off"))
        servers += [main_srv, miss_srv]
        wait_ready(main_srv.url, main_srv.proc)
        wait_ready(miss_srv.url, miss_srv.proc)
        token, body_size = set_up(main_srv.url)
        bare = Server("bare", [bare_bin, "127.0.0.1:{port}", str(body_size)])
        servers.append(bare)
        wait_ready(bare.url, bare.proc)
        uid = subprocess.run(["psql", db_url, "-tAc", f"SELECT id FROM users WHERE email = '{EMAIL}'"],
                             check=True, capture_output=True, text=True).stdout.strip()
        floor = Server("floor", [bare_bin, "127.0.0.1:{port}", str(body_size), uid])
        servers.append(floor)
        wait_ready(floor.url, floor.proc)
        uds = None
        if os.environ.get("REDIS_SOCKET_URL"):
            uds = Server("uds", [server_bin], dict(common, REDIS_URL=os.environ["REDIS_SOCKET_URL"]))
            servers.append(uds)
            wait_ready(uds.url, uds.proc)
        base = None
        if a.base_bin:
            subprocess.run(["psql", db_url, "-qc", "DROP DATABASE IF EXISTS hotpath_base"], check=True,
                           capture_output=True)
            subprocess.run(["psql", db_url, "-qc", "CREATE DATABASE hotpath_base"], check=True, capture_output=True)
            base = Server("base", [a.base_bin], dict(common, DATABASE_URL=f"{db_base}/hotpath_base"))
            servers.append(base)
            wait_ready(base.url, base.proc)
            base_token, _ = set_up(base.url)
        others = Others()
        pgbench = pgbench_bin()
        subprocess.run(["psql", db_url, "-qc", "DROP DATABASE IF EXISTS pgbench"], check=True, capture_output=True)
        subprocess.run(["psql", db_url, "-qc", "CREATE DATABASE pgbench"], check=True, capture_output=True)
        subprocess.run([pgbench, "-i", "-q", "-s", "1", f"{db_base}/pgbench"], check=True, capture_output=True)

        paths = [
            ("bare", f"bare server ({body_size} B body)", lambda: measured(bare, bare.url + "/", a, others)),
            ("healthz", "GET /healthz", lambda: measured(main_srv, main_srv.url + "/healthz", a, others)),
            ("cached", "GET /tasks, cached", lambda: measured(main_srv, main_srv.url + "/tasks", a, others, token)),
            ("me", "GET /me", lambda: measured(main_srv, main_srv.url + "/me", a, others, token)),
            ("miss", "GET /tasks, CACHE_BACKEND=off", lambda: measured(miss_srv, miss_srv.url + "/tasks", a, others, token)),
            ("floor", "bare server + the miss path's read", lambda: measured(floor, floor.url + "/", a, others)),
        ]
        if uds:
            paths.insert(3, ("cached_uds", "GET /tasks, cached, Redis socket",
                             lambda: measured(uds, uds.url + "/tasks", a, others, token)))
        if base:
            paths.append(("base_cached", "GET /tasks, cached (--base-bin)",
                          lambda: measured(base, base.url + "/tasks", a, others, base_token)))

        def pgbench_round(url, *how):
            conns = str(min(a.connections, 32))
            args = [pgbench, *how, "-M", "prepared", "-n", "-c", conns, "-j", str(a.threads), "-T"]
            subprocess.run(args + [str(a.warmup), url], capture_output=True, timeout=a.warmup + 60)
            around = others.seconds()
            out = subprocess.run(args + [str(a.secs), url], capture_output=True, text=True,
                                 timeout=a.secs + 60).stdout
            m = re.search(r"tps = ([\d.]+)", out)
            n = re.search(r"number of transactions actually processed: (\d+)", out)
            return others.per_request(around, int(n.group(1)) if n else 0,
                                      {"rps": float(m.group(1)) if m else float("nan")})
        paths.append(("pgbench", "pgbench -S -M prepared", lambda: pgbench_round(f"{db_base}/pgbench", "-S")))
        # The miss path's own statement, as the server sends it, for its
        # user: what PostgreSQL alone does with it is the miss path's real
        # ceiling (20 rows sorted and sent cost it about twice pgbench -S).
        list_sql = tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False)
        list_sql.write(f"\\set uid {int(uid)}\n"
                       "SELECT id, user_id, title, description, is_completed, due_date, created_at, updated_at "
                       "FROM tasks WHERE user_id = :uid AND (NULL::boolean IS NULL OR is_completed = NULL) "
                       "ORDER BY id LIMIT 20 OFFSET 0;\n")
        list_sql.close()
        paths.append(("pgbench_list", "pgbench, the miss path's SELECT",
                      lambda: pgbench_round(db_url, "-f", list_sql.name)))

        rounds = {key: [] for key, _, _ in paths}
        for r in range(a.rounds):
            for key, label, run in paths:
                rounds[key].append(run())
                print(f"hotpath: round {r + 1}/{a.rounds} {label}: {rounds[key][-1]['rps']:.0f} req/s",
                      file=sys.stderr)

        # Logins: a storm of correct logins, and the cached read beside it,
        # against the same read just before it (same shape, so the two p99s
        # compare), in rounds: one round's p99 moves with any stall of the
        # machine's, the median of the rounds' ratios much less.
        storm_users = [f"storm-{i}@tollgate-bench.example" for i in range(STORM_USERS)]
        for email in storm_users:
            status, body = http("POST", f"{main_srv.url}/auth/register", {"email": email, "password": PASSWORD})
            if status not in (201, 409):
                die(f"registering {email} answered {status}: {body[:200]!r}")
        bodies = ", ".join(f"'{json.dumps({'email': e, 'password': PASSWORD})}'" for e in storm_users)
        script = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)
        script.write(f"local bodies = {{{bodies}}}\nlocal n = 0\n"
                     "request = function()\n  n = n + 1\n"
                     '  return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, '
                     "bodies[n % #bodies + 1])\nend\n")
        script.close()
        cores = os.cpu_count() or 1
        # The storm runs a second on either side of the read beside it (for
        # short runs too: the read must not start after the storm ended).
        read_secs = max(a.secs - 2, 1)
        storms, bare_storms, alone = [], [], []
        hashing = lambda secs: subprocess.Popen([hashing_bin, str(secs)], stdout=subprocess.PIPE,
                                                stderr=subprocess.PIPE, text=True)
        for r in range(a.rounds):
            # Login throughput: a storm with nothing beside it against the
            # server's hashing pool alone, one after the other. Both alone:
            # a hash's time measured during a storm beside reads is
            # stretched by the reads, and logins over it would come out
            # near 100 % whatever the login path costs.
            pool_rate, hash_threads = hashing_rate(hashing(read_secs))
            logins = wrk(main_srv.url + "/auth/login", read_secs, 2 * cores, 1, script=script.name)
            alone.append({"logins_per_s": logins["rps"], "hashes_per_s": pool_rate,
                          "share": logins["rps"] / pool_rate})
            # The floor: the bare server's read, before and during the
            # hashing alone (the server's pool at its settings, no server).
            bare_idle = wrk(bare.url + "/", read_secs, a.connections, 1)
            beside = hashing(read_secs + 2)
            time.sleep(1)
            bare_during = wrk(bare.url + "/", read_secs, a.connections, 1)
            bare_storms.append({"hashes_per_s": hashing_rate(beside)[0], "idle_p99_ms": bare_idle["p99_ms"],
                                "during_p99_ms": bare_during["p99_ms"]})
            idle = wrk(main_srv.url + "/tasks", read_secs, a.connections, 1, token)
            storm = {}
            def login_storm():
                storm.update(wrk(main_srv.url + "/auth/login", read_secs + 2, 2 * cores, 1,
                                 script=script.name, check=False))
            t = threading.Thread(target=login_storm)
            t.start()
            time.sleep(1)
            during = wrk(main_srv.url + "/tasks", read_secs, a.connections, 1, token)
            t.join()
            if not storm:
                die("the login storm's wrk gave no result")
            if storm["non_2xx"]:
                die(f"{storm['non_2xx']} logins of the storm were not 200: the login numbers would mean nothing")
            storms.append({"rps": storm["rps"], "idle_p99_ms": idle["p99_ms"], "during_p99_ms": during["p99_ms"],
                           "ratio": during["p99_ms"] / idle["p99_ms"] if idle["p99_ms"] else float("nan")})
            print(f"hotpath: round {r + 1}/{a.rounds} logins alone: {logins['rps']:.1f}/s against the hashing pool "
                  f"alone: {pool_rate:.1f} hashes/s", file=sys.stderr)
            print(f"hotpath: round {r + 1}/{a.rounds} login storm: {storm['rps']:.1f} logins/s, cached p99 "
                  f"{idle['p99_ms']:.2f} ms before, {during['p99_ms']:.2f} ms during; bare server's p99 "
                  f"{bare_idle['p99_ms']:.2f} ms before, {bare_during['p99_ms']:.2f} ms beside the hashing alone "
                  f"({bare_storms[-1]['hashes_per_s']:.1f} hashes/s)", file=sys.stderr)
        alone_med = {k: statistics.median(x[k] for x in alone) for k in alone[0]}
        storm_med = {k: statistics.median(x[k] for x in storms) for k in storms[0]}
        bare_storm_med = {k: statistics.median(x[k] for x in bare_storms) for k in bare_storms[0]}

        # The other side of that trade (HASH_NICE): one login at a time
        # while cached reads keep every core busy, as a user logging in to
        # a saturated server sees it.
        busy = []
        def one_by_one():
            time.sleep(0.5)
            end = time.time() + max(a.secs - 1.5, 1)
            while time.time() < end:
                t0 = time.perf_counter()
                status, _ = http("POST", main_srv.url + "/auth/login", {"email": EMAIL, "password": PASSWORD})
                busy.append((status, (time.perf_counter() - t0) * 1000))
                time.sleep(0.1)
        t = threading.Thread(target=one_by_one)
        t.start()
        wrk(main_srv.url + "/tasks", a.secs, a.connections, a.threads, token)
        t.join()
        if not busy or any(status != 200 for status, _ in busy):
            die(f"logins under read load answered {sorted({status for status, _ in busy})}, not all 200")
        busy_ms = [ms for _, ms in busy]

        # Memory, on a fresh server: idle, after a login storm, under 256
        # connections.
        mem = Server("memory", [server_bin], common)
        servers.append(mem)
        wait_ready(mem.url, mem.proc)
        time.sleep(1)
        rss_idle = mem.rss_mib()
        wrk(mem.url + "/auth/login", a.secs, 2 * cores, 1, script=script.name)
        time.sleep(2)
        rss_after_storm = mem.rss_mib()
        peak = [0.0]
        def sample():
            end = time.time() + a.secs
            while time.time() < end:
                peak[0] = max(peak[0], mem.rss_mib())
                time.sleep(0.25)
        t = threading.Thread(target=sample)
        t.start()
        wrk(mem.url + "/tasks", a.secs, 256, a.threads, token)
        t.join()
    finally:
        for s in servers:
            s.stop()

    cpu_keys = ("cpu_us_per_req", "pg_us", "redis_us", "client_us")
    for x in (x for v in rounds.values() for x in v):
        # pgbench's rows have no server; a process not measured leaves the
        # sum empty rather than short.
        x["all_us"] = x.get("cpu_us_per_req", 0.0) + x["pg_us"] + x["redis_us"] + x["client_us"]
    med = {k: {m: summary([x.get(m, float("nan")) for x in v]) for m in ("rps", "p50_ms", "p99_ms", *cpu_keys, "all_us")}
           for k, v in rounds.items()}
    ratio = lambda x, y: med[x]["rps"]["median"] / med[y]["rps"]["median"]
    result = {
        "rounds": a.rounds, "secs": a.secs, "connections": a.connections, "cores": cores,
        "paths": {k: {"label": l, **med[k]} for k, l, _ in paths},
        "ratios": {"cached_over_bare": ratio("cached", "bare"), "miss_over_pgbench": ratio("miss", "pgbench"),
                   "miss_over_its_select": ratio("miss", "pgbench_list"),
                   "floor_over_pgbench": ratio("floor", "pgbench"), "miss_over_floor": ratio("miss", "floor"),
                   **({"cached_uds_over_bare": ratio("cached_uds", "bare")} if uds else {}),
                   **({"cached_over_base": ratio("cached", "base_cached")} if base else {})},
        # Login throughput alone against the hashing pool alone (its
        # threads' count over the rate is one hash's time); the median of
        # the rounds' ratios.
        "login": {"rps": alone_med["logins_per_s"], "ceiling_rps": alone_med["hashes_per_s"],
                  "hash_ms": hash_threads * 1000 / alone_med["hashes_per_s"], "hash_threads": hash_threads,
                  "share_of_ceiling": alone_med["share"], "alone_rounds": alone,
                  "rps_beside_reads": storm_med["rps"],
                  "cached_p99_idle_ms": storm_med["idle_p99_ms"], "cached_p99_during_storm_ms": storm_med["during_p99_ms"],
                  "p99_ratio": storm_med["ratio"], "storm_rounds": storms,
                  "p99_target_ms": 2 * storm_med["idle_p99_ms"],
                  # The same read of the bare server, before and beside the
                  # hashing alone: what the hashing costs any server's p99
                  # here (its ratio means little: one wrk thread keeps the
                  # bare server's idle p99 near a scheduler tick already).
                  "bare_p99_idle_ms": bare_storm_med["idle_p99_ms"],
                  "bare_p99_beside_hashing_ms": bare_storm_med["during_p99_ms"],
                  "bare_hashes_per_s": bare_storm_med["hashes_per_s"], "bare_rounds": bare_storms,
                  "one_login_under_read_load_ms": {"n": len(busy_ms), "median": statistics.median(busy_ms),
                                                   "max": max(busy_ms)}},
        # What the miss target leaves per request, against what it takes:
        # on a saturated machine the columns add up to its cores.
        "miss_budget": {"target_rps": med["pgbench"]["rps"]["median"] / 2,
                        "budget_us": cores * 2e6 / med["pgbench"]["rps"]["median"],
                        "server_us": med["miss"]["cpu_us_per_req"]["median"],
                        **{k: med["miss"][k]["median"] for k in ("pg_us", "redis_us", "client_us", "all_us")}},
        "rss_mib": {"idle": rss_idle, "idle_after_login_storm": rss_after_storm, "peak_256_connections": peak[0]},
    }
    if a.json:
        print(json.dumps(result, indent=2))
        return
    print(f"hotpath: {a.rounds} interleaved rounds of {a.secs} s (+{a.warmup} s warm-up), wrk -t{a.threads} "
          f"-c{a.connections}, {cores} cores shared by everything; medians (min..max)")
    print(f"{'':<34} {'':>26} {'':>7} {'':>7}  CPU µs per request (pgbench: per statement)")
    print(f"{'path':<34} {'req/s (min..max)':>26} {'p50 ms':>7} {'p99 ms':>7} {'server':>7} {'pg':>6} {'redis':>6} "
          f"{'client':>6} {'all':>6}")
    cell = lambda v, w: f"{'' if v != v else f'{v:.1f}':>{w}}"
    for k, label, _ in paths:
        m = med[k]
        rps = f"{m['rps']['median']:,.0f} ({m['rps']['min']:,.0f}..{m['rps']['max']:,.0f})"
        p50, p99 = (m[q]["median"] for q in ("p50_ms", "p99_ms"))
        print(f"{label:<34} {rps:>26} {'' if p50 != p50 else f'{p50:.2f}':>7} {'' if p99 != p99 else f'{p99:.2f}':>7} "
              + " ".join(cell(m[c]["median"], w) for c, w in zip((*cpu_keys, "all_us"), (7, 6, 6, 6, 6))))
    r = result["ratios"]
    print(f"cached / bare: {r['cached_over_bare']:.1%} (target 50 %)"
          + (f", with Redis over a Unix socket {r['cached_uds_over_bare']:.1%}" if uds else "")
          + f"; miss / pgbench: {r['miss_over_pgbench']:.1%} (target 50 %), / its SELECT alone: "
            f"{r['miss_over_its_select']:.1%}, / the bare server + its read: {r['miss_over_floor']:.1%}"
          + (f"; cached, this build / --base-bin: {r['cached_over_base']:.1%}" if base else ""))
    mb = result["miss_budget"]
    spends = ("the processes around it were not all measured" if mb["all_us"] != mb["all_us"] else
              f"it spends {mb['all_us']:.1f} (server {mb['server_us']:.1f}, PostgreSQL {mb['pg_us']:.1f}, "
              f"Redis {mb['redis_us']:.1f}, wrk {mb['client_us']:.1f})")
    print(f"miss path: 50 % of pgbench -S is {mb['target_rps']:,.0f} req/s, {mb['budget_us']:.1f} µs of CPU per request "
          f"on {cores} cores; {spends}. The bare server + the miss path's read (no authentication, revocation "
          f"or JSON) reaches {r['floor_over_pgbench']:.1%} of pgbench -S")
    lg = result["login"]
    print(f"login: {lg['rps']:.1f}/s alone, against {lg['ceiling_rps']:.1f} hashes/s of the server's hashing pool "
          f"alone ({lg['hash_threads']} threads, {lg['hash_ms']:.1f} ms a hash): {lg['share_of_ceiling']:.1%} of "
          f"cores / hash time (target 90 %, median of the rounds' ratios); during a storm beside cached reads "
          f"{lg['rps_beside_reads']:.1f}/s, the cached p99 {lg['cached_p99_idle_ms']:.2f} ms just before, "
          f"{lg['cached_p99_during_storm_ms']:.2f} ms during the storm, median ratio of {a.rounds} rounds "
          f"{lg['p99_ratio']:.2f}x (target 2x: {lg['p99_target_ms']:.2f} ms); the bare server's p99 beside the "
          f"same hashing alone ({lg['bare_hashes_per_s']:.1f} hashes/s): {lg['bare_p99_idle_ms']:.2f} ms before, "
          f"{lg['bare_p99_beside_hashing_ms']:.2f} ms during")
    b = lg["one_login_under_read_load_ms"]
    print(f"one login at a time while cached reads keep the cores busy: median {b['median']:.0f} ms, slowest "
          f"{b['max']:.0f} ms of {b['n']} (HASH_NICE trades this against the storm's p99)")
    m = result["rss_mib"]
    print(f"resident (a fresh server): {m['idle']:.1f} MiB idle, {m['idle_after_login_storm']:.1f} MiB idle after a "
          f"login storm (target 30), {m['peak_256_connections']:.1f} MiB at most under 256 connections (target 100)")


if __name__ == "__main__":
    main()
