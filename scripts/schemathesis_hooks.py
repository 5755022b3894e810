"""Authentication for scripts/schemathesis.sh: logs the fuzz account in.

The run calls POST /auth/logout and /auth/logout-all with the token it was
given, on purpose, so a token can die mid-run: schemathesis calls `get`
again after any 401 (its default `retry_on`), and the next operations test
the API, not the refusal of a dead token. Credentials come from the
environment the script sets; the token is never printed.
"""

import os

import requests
import schemathesis


@schemathesis.auth()
class Login:
    def get(self, case, ctx):
        r = requests.post(
            os.environ["TOLLGATE_URL"] + "/auth/login",
            json={"email": os.environ["FUZZ_EMAIL"], "password": os.environ["FUZZ_PASSWORD"]},
            timeout=10,
        )
        r.raise_for_status()
        return r.json()["access_token"]

    def set(self, case, data, ctx):
        case.headers = case.headers or {}
        case.headers["Authorization"] = f"Bearer {data}"


# What JSON Schema cannot say: which strings are GraphQL documents of our
# schema. A schema-valid body for POST /graphql is any {query: string}, and
# the server rightly refuses almost every such string with a 400 (it does
# not parse). So a *positive* case gets a real document of the schema, its
# generated text moved into the variables (where it exercises validation:
# titles, contents, cursors, ids), and no operationName. Negative cases
# (not an object, no query, a wrong type, an unknown member) are left as
# generated: the server must refuse them.
DOCUMENTS = [
    ("{ me { id displayName } }", None),
    (
        "query($s: String) { posts(first: 5, after: $s) { items { id title commentCount author { id }"
        " comments(first: 2) { items { id content } nextCursor } } nextCursor } }",
        "String",
    ),
    ("mutation($s: String!) { createPost(input: {title: $s, content: $s}) { id title createdAt } }", "String"),
    ("mutation($s: String!) { addComment(input: {postId: \"1\", content: $s}) { id post { id } } }", "String"),
    ("query($s: ID!) { post(id: $s) { id title author { displayName } commentCount } }", "ID"),
    ("mutation($s: ID!) { deleteComment(id: $s) }", "ID"),
]


def protect_admin(case):
    """The admin run may set any user's status but the admin's own: banning
    itself would end the run's ability to log in, not test anything. Its id
    is 1 in the run's fresh database, which is also the lowest id the
    document allows, so the coverage phase tries it first. Such a case is
    sent to an id that names nobody (a 404, also declared)."""
    protect = os.environ.get("FUZZ_PROTECT_ID")
    params = case.path_parameters
    if protect and params and str(params.get("id")) == protect:
        case.path_parameters = {**params, "id": 999_999_999}
    return case


@schemathesis.hook
def map_case(ctx, case):
    case = protect_admin(case)
    if case.path != "/graphql" or case.meta is None:
        return case
    if case.meta.generation.mode != schemathesis.GenerationMode.POSITIVE or not isinstance(case.body, dict):
        return case
    text = case.body.get("query")
    if not isinstance(text, str):
        return case
    document, kind = DOCUMENTS[sum(map(ord, text)) % len(DOCUMENTS)]
    case.body = {"query": document, "variables": {"s": text} if kind else None}
    return case
