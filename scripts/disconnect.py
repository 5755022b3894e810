#!/usr/bin/env python3
"""Clients that hang up mid-request while bans and logouts happen.

    scripts/disconnect.py --url http://127.0.0.1:PORT --database-url postgres://... \
        --admin-email E --admin-password P [--seconds 10] [--users 12]

Loopback only (refuses any other host), bounded in time and requests, stops
by itself. While readers load the server with ordinary keep-alive requests,
a chaos client sends bans, re-activations, logouts, task writes and logins
on fresh connections and hangs up 0 to 3 ms later without reading the
answer. Afterwards (1 s for running work to finish) every token is judged
twice: by PostgreSQL (the truth: user status, not-before, revoked session)
and by the server (`GET /me`). A token PostgreSQL calls dead that the server
accepts is a revoked request accepted. Prints one JSON line of counts.
"""
import argparse
import base64
import http.client
import json
import random
import socket
import subprocess
import sys
import threading
import time
import urllib.parse

PASSWORD = "disconnect-password-1"


def request(host, port, method, path, body=None, token=None):
    c = http.client.HTTPConnection(host, port, timeout=10)
    headers = {"content-type": "application/json"} if body is not None else {}
    if token:
        headers["authorization"] = f"Bearer {token}"
    c.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, (json.loads(data) if data and r.getheader("content-type", "").find("json") >= 0 else None)


def hang_up(host, port, method, path, body=None, token=None):
    raw = json.dumps(body) if body is not None else ""
    head = f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n"
    if token:
        head += f"Authorization: Bearer {token}\r\n"
    if body is not None:
        head += f"Content-Type: application/json\r\nContent-Length: {len(raw)}\r\n"
    s = socket.create_connection((host, port), timeout=5)
    # Sometimes only part of the body: the server must drop that request.
    payload = (head + "\r\n" + raw).encode()
    if random.random() < 0.2:
        payload = payload[: max(1, len(payload) - random.randint(1, 5))]
    s.sendall(payload)
    time.sleep(random.uniform(0, 0.003))
    s.close()


def sid_of(token):
    payload = token.split(".")[1]
    payload += "=" * (-len(payload) % 4)
    return int(json.loads(base64.urlsafe_b64decode(payload))["sid"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--database-url", required=True)
    ap.add_argument("--admin-email", required=True)
    ap.add_argument("--admin-password", required=True)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--users", type=int, default=60)
    a = ap.parse_args()
    u = urllib.parse.urlparse(a.url)
    host, port = u.hostname, u.port
    if not host or not (host == "localhost" or host.startswith("127.") or host == "::1"):
        sys.exit(f"disconnect: {host} is not a loopback address; refusing to send load there")

    st, tok = request(host, port, "POST", "/auth/login", {"email": a.admin_email, "password": a.admin_password})
    if st != 200:
        sys.exit(f"disconnect: admin login answered {st}")
    admin = tok["access_token"]
    run = random.randint(0, 1 << 30)
    users = []  # (id, email, [access tokens])
    for i in range(a.users):
        email = f"hangup-{run}-{i}@tollgate.example"
        st, body = request(host, port, "POST", "/auth/register", {"email": email, "password": PASSWORD})
        if st != 201:
            sys.exit(f"disconnect: register answered {st}")
        tokens = []
        for _ in range(2):
            st, t = request(host, port, "POST", "/auth/login", {"email": email, "password": PASSWORD})
            if st != 200:
                sys.exit(f"disconnect: login answered {st}")
            tokens.append(t["access_token"])
        users.append((body["id"], email, tokens))

    # Each revocation happens once (half the users are banned, the other
    # half log one session out), so a mirror lost with its client is not
    # healed by a later revocation of the same user: it shows at the end.
    # Task writes and logins hang up around them until the time is up.
    once = [("ban", u) for u in users[: len(users) // 2]] + [("logout", u) for u in users[len(users) // 2 :]]
    random.shuffle(once)
    stop = time.monotonic() + a.seconds
    counts = {"hangups": 0, "reads": 0, "read_errors": 0}
    lock = threading.Lock()

    def chaos():
        rng = random.Random()
        while time.monotonic() < stop and counts["hangups"] < 20000:
            with lock:
                action = once.pop() if once and rng.random() < 0.5 else None
            if action and action[0] == "ban":
                uid = action[1][0]
                hang_up(host, port, "PATCH", f"/admin/users/{uid}/status", {"status": "banned"}, admin)
            elif action:
                hang_up(host, port, "POST", "/auth/logout", None, action[1][2][0])
            else:
                _, email, tokens = rng.choice(users)
                if rng.random() < 0.7:
                    hang_up(host, port, "POST", "/tasks", {"title": "hung up"}, rng.choice(tokens))
                else:
                    pw = PASSWORD if rng.random() < 0.5 else "a wrong password"
                    hang_up(host, port, "POST", "/auth/login", {"email": email, "password": pw})
            with lock:
                counts["hangups"] += 1
            time.sleep(0.002)

    def reader():
        rng = random.Random()
        c = http.client.HTTPConnection(host, port, timeout=10)
        while time.monotonic() < stop and counts["reads"] < 200000:
            _, _, tokens = rng.choice(users)
            try:
                c.request("GET", rng.choice(["/me", "/tasks"]), headers={"authorization": f"Bearer {rng.choice(tokens)}"})
                r = c.getresponse()
                r.read()
                bad = r.status not in (200, 401)
            except OSError:
                c = http.client.HTTPConnection(host, port, timeout=10)
                bad = True
            with lock:
                counts["reads"] += 1
                counts["read_errors"] += int(bad)

    threads = [threading.Thread(target=chaos) for _ in range(3)] + [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    time.sleep(1.0)  # work that began runs to its end

    ids = ",".join(str(uid) for uid, _, _ in users)
    out = subprocess.run(
        ["psql", a.database_url, "-At", "-F", " ", "-c",
         f"SELECT s.id, u.status, u.min_session_id, s.revoked_at IS NOT NULL "
         f"FROM sessions s JOIN users u ON u.id = s.user_id WHERE u.id IN ({ids})"],
        capture_output=True, text=True, check=True).stdout
    dead = {}
    for row in out.strip().splitlines():
        sid, status, min_sid, revoked = row.split(" ")
        dead[int(sid)] = status != "active" or int(sid) <= int(min_sid) or revoked == "t"
    revoked_checked = accepted = 0
    for _, _, tokens in users:
        for t in tokens:
            if not dead.get(sid_of(t), True):
                continue
            revoked_checked += 1
            for path in ("/me", "/tasks"):
                st, _ = request(host, port, "GET", path, token=t)
                accepted += int(st == 200)
    # Login still answers: a fresh account logs in, a banned one gets 403.
    email = f"hangup-{run}-after@tollgate.example"
    login_after, deadline = 0, time.monotonic() + 60
    while login_after != 200 and time.monotonic() < deadline:
        # The hash queue may still be draining the hung-up logins.
        try:
            request(host, port, "POST", "/auth/register", {"email": email, "password": PASSWORD})
            login_after, _ = request(host, port, "POST", "/auth/login", {"email": email, "password": PASSWORD})
        except OSError:
            login_after = -1
        time.sleep(0.2 if login_after != 200 else 0)
    print(json.dumps({**counts, "revoked_tokens": revoked_checked, "accepted_after_revocation": accepted,
                      "login_after": login_after}))


if __name__ == "__main__":
    main()
