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


@schemathesis.hook
def filter_path_parameters(ctx, path_parameters):
    """The admin run may set any user's status but the admin's own: banning
    itself would end the run's ability to log in, not test anything."""
    protect = os.environ.get("FUZZ_PROTECT_ID")
    return not (protect and path_parameters and str(path_parameters.get("id")) == protect)
