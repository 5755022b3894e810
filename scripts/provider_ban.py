#!/usr/bin/env python3
"""Time from a ban's answer to the first 401 for an identity provider's
token, over N ban cycles, and how many requests after a ban were accepted
(must be 0). Loopback only.

    node server/tests/oidc/provider.mjs --keys /tmp/keys.json     # prints its URL
    OIDC_ISSUER=<that URL> OIDC_AUDIENCE=urn:tollgate:api \
      ADMIN_EMAIL=admin@tollgate.test ADMIN_PASSWORD=admin-password-1 target/release/tollgate
    python3 scripts/provider_ban.py http://127.0.0.1:8080 <provider URL> 20

Each cycle re-activates the subject, waits for the next second (a token
issued after the re-activation), takes a fresh token from the provider's
token endpoint, checks it works, bans the subject, and times the requests
after the ban's answer until the first 401."""
import json, sys, time, urllib.request, urllib.error, urllib.parse, statistics
server, provider, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
for url in (server, provider):
    if not url.startswith(("http://127.", "http://localhost", "http://[::1]")):
        raise SystemExit(f"provider_ban.py: loopback URLs only, not {url}")
def req(method, url, token=None, body=None, form=None):
    data = json.dumps(body).encode() if body is not None else (urllib.parse.urlencode(form).encode() if form else None)
    r = urllib.request.Request(url, data=data, method=method)
    if token: r.add_header("Authorization", f"Bearer {token}")
    if body is not None: r.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(r) as resp: return resp.status, resp.read()
    except urllib.error.HTTPError as e: return e.code, e.read()
def provider_token():
    s, b = req("POST", f"{provider}/token", form={"grant_type": "client_credentials", "client_id": "tg-user-3",
        "client_secret": "tg-user-3-secret", "resource": "urn:tollgate:api"})
    assert s == 200, b
    return json.loads(b)["access_token"]
s, b = req("POST", f"{server}/auth/login", body={"email": "admin@tollgate.test", "password": "admin-password-1"})
admin = json.loads(b)["access_token"]
tok = provider_token()
s, b = req("GET", f"{server}/me", tok); uid = json.loads(b)["id"]
gaps, accepted = [], 0
for i in range(n):
    req("PATCH", f"{server}/admin/users/{uid}/status", admin, {"status": "active"})
    sec = int(time.time())
    while int(time.time()) == sec: time.sleep(0.01)
    tok = provider_token()
    assert req("GET", f"{server}/tasks", tok)[0] == 200
    s, _ = req("PATCH", f"{server}/admin/users/{uid}/status", admin, {"status": "banned"})
    answered = time.perf_counter()
    s, _ = req("GET", f"{server}/tasks", tok)
    if s == 200: accepted += 1
    while s != 401:
        s, _ = req("GET", f"{server}/tasks", tok)
    gaps.append((time.perf_counter() - answered) * 1000)
req("PATCH", f"{server}/admin/users/{uid}/status", admin, {"status": "active"})
print(f"cycles {n}  accepted after ban {accepted}  ban answer -> first 401 ms: median {statistics.median(gaps):.2f} "
      f"min {min(gaps):.2f} max {max(gaps):.2f}")
