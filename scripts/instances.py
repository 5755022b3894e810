#!/usr/bin/env python3
"""Several instances behave as one server: read-your-writes and the login
limit through a load balancer that sends consecutive requests to different
instances (scripts/faults.sh instances). Loopback only, bounded in time.

First, revocations answered by one instance hold on all: a user's token
works on every instance (several requests, round robin), then it is banned,
or its session logged out, or all its sessions, through the proxy, and the
next requests, whichever instance answers them, must all be 401. Then, for
--seconds, a writer creates, completes and deletes its tasks and reads
each change back at once (GET /tasks and GET /tasks/{id}): every read that
does not show the write just answered is a stale read. Then one account
gets wrong passwords one at a time: exactly LOGIN_MAX_FAILURES of them are
verified (401) before the 429s, whichever instance answers each.

Prints one JSON line: {"revoked_checked", "accepted_after_revocation",
"writes", "stale_reads", "stale_seen" (the first ten: seconds into the
writer, which read, its status), "errors", "verified_failures",
"throttled", "max_failures"}.
"""
import argparse
import json
import random
import time
import urllib.error
import urllib.request


def call(base, method, path, token=None, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method)
    if token:
        req.add_header("authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            raw = r.read()
            return r.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as e:
        return e.code, None


def login(base, email, password):
    status, pair = call(base, "POST", "/auth/login", body={"email": email, "password": password})
    assert status == 200, f"login of {email}: {status}"
    return pair["access_token"]


def revocations(a, tag):
    """(requests checked after a revocation, how many were accepted)."""
    admin = login(a.url, a.admin_email, a.admin_password)
    checked = accepted = 0
    for kind in ("ban", "logout", "logout-all"):
        email, password = f"revoked-{kind}-{tag}@tollgate.example", "revoked-password-1"
        assert call(a.url, "POST", "/auth/register", body={"email": email, "password": password})[0] == 201
        token, other = login(a.url, email, password), login(a.url, email, password)
        for _ in range(6):  # every instance has verified it and checked it once
            assert call(a.url, "GET", "/tasks", token)[0] == 200, f"{kind}: token works before"
        if kind == "ban":
            uid = call(a.url, "GET", "/me", token)[1]["id"]
            assert call(a.url, "PATCH", f"/admin/users/{uid}/status", admin, {"status": "banned"})[0] == 200
        else:
            assert call(a.url, "POST", f"/auth/{kind}", token)[0] == 204
        for _ in range(6):
            checked += 1
            accepted += call(a.url, "GET", "/tasks", token)[0] != 401
        if kind == "logout":  # the user's other session lives on
            assert call(a.url, "GET", "/tasks", other)[0] == 200, "logout ended another session"
    return checked, accepted


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--max-failures", type=int, default=10)
    ap.add_argument("--admin-email", required=True)
    ap.add_argument("--admin-password", required=True)
    a = ap.parse_args()
    if not a.url.startswith(("http://127.", "http://localhost", "http://[::1]")):
        raise SystemExit("instances.py: loopback URLs only")
    tag = f"{random.getrandbits(32):08x}"
    checked, accepted = revocations(a, tag)
    email, password = f"instances-{tag}@tollgate.example", "instances-password-1"
    assert call(a.url, "POST", "/auth/register", body={"email": email, "password": password})[0] == 201
    status, pair = call(a.url, "POST", "/auth/login", body={"email": email, "password": password})
    assert status == 200, status
    token = pair["access_token"]
    writes = stale = errors = 0
    stale_seen = []  # the first few, for the reader: when, which read, what it got
    start = time.monotonic()
    end = start + a.seconds

    def expect(ok, read, status):
        nonlocal stale
        if not ok:
            stale += 1
            if len(stale_seen) < 10:
                stale_seen.append({"t": round(time.monotonic() - start, 2), "read": read, "status": status})

    while time.monotonic() < end:
        status, task = call(a.url, "POST", "/tasks", token, {"title": f"w{writes}"})
        if status != 201:
            errors += 1
            continue
        writes += 1
        tid = task["id"]
        status, listed = call(a.url, "GET", "/tasks?limit=100", token)
        expect(tid in [t["id"] for t in listed or []], "list after create", status)
        status, _ = call(a.url, "GET", f"/tasks/{tid}", token)
        expect(status == 200, "get after create", status)
        if call(a.url, "PATCH", f"/tasks/{tid}", token, {"isCompleted": True})[0] != 200:
            errors += 1
        status, listed = call(a.url, "GET", "/tasks?limit=100", token)
        expect({t["id"]: t for t in listed or []}.get(tid, {}).get("isCompleted", False), "list after update", status)
        if call(a.url, "DELETE", f"/tasks/{tid}", token)[0] != 204:
            errors += 1
        status, _ = call(a.url, "GET", f"/tasks/{tid}", token)
        expect(status == 404, "get after delete", status)
        status, listed = call(a.url, "GET", "/tasks?limit=100", token)
        expect(tid not in [t["id"] for t in listed or []], "list after delete", status)
    verified = throttled = 0
    for _ in range(a.max_failures + 5):
        status, _ = call(a.url, "POST", "/auth/login", body={"email": email, "password": "wrong-password-x"})
        verified += status == 401
        throttled += status == 429
    print(json.dumps({"revoked_checked": checked, "accepted_after_revocation": accepted, "writes": writes, "stale_reads": stale, "stale_seen": stale_seen, "errors": errors, "verified_failures": verified,
                      "throttled": throttled, "max_failures": a.max_failures}))


if __name__ == "__main__":
    main()
