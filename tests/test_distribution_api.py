"""The service's own OpenAPI description, fuzzed: schemathesis generates requests for every
operation it declares (STAC API, assets, basket, account, portal) from their parameter and
body schemas, sent over HTTP to ``agriseries serve`` on loopback, with and without a valid
token, against both catalogue backends; no answer may be a server error (5xx).

The number of examples per operation is bounded (``EXAMPLES``) so that the module stays
around a minute; the products and fixtures are those of tests/test_distribution.py.
"""

from __future__ import annotations

import httpx
import pytest

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, given, settings  # noqa: E402

from test_distribution import auth, backend, published, service, site, token  # noqa: E402,F401

pytestmark = pytest.mark.allow_hosts(["127.0.0.1"])

EXAMPLES = 3


def test_no_server_error(service, token):  # noqa: F811
    """For every operation of /api, generated requests each sent twice: anonymous and with
    a user's token (so the routes behind the access check are reached too); never a 5xx."""
    api = schemathesis.openapi.from_url(f"{service.url}/api")
    failures, ops, calls = [], [], [0]
    for result in api.get_all_operations():
        op = result.ok()
        ops.append(f"{op.method.upper()} {op.path}")

        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(case=op.as_strategy())
        def check(case) -> None:
            for headers in ({}, auth(token)):
                try:
                    r = case.call(headers=headers, timeout=30)
                except httpx.HTTPError as e:
                    failures.append(f"{case.method} {case.formatted_path}: {e}")
                    continue
                calls[0] += 1
                if r.status_code >= 500:
                    failures.append(f"{case.method} {case.formatted_path} query={case.query} "
                                    f"body={case.body!r:.300}: {r.status_code} {r.text[:300]}")

        check()
    assert len(ops) >= 15 and "POST /search" in ops and calls[0] >= 2 * len(ops), (ops, calls)
    assert not failures, "\n".join(failures[:10])
