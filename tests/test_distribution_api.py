"""The service's own OpenAPI description, fuzzed: schemathesis generates requests for every
operation it declares (STAC API, assets, basket, account, portal) from their parameter and
body schemas, sent over HTTP to ``agriseries serve`` on loopback, with and without a valid
token, against both catalogue backends; no answer may be a server error (5xx).

The number of examples per operation is bounded (``EXAMPLES``) so that the module stays
around a minute; the products and fixtures are those of tests/test_distribution.py.

Also stac-api-validator over both backends (its schema look-ups served from the offline
copies the tests have: nothing is downloaded).
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


def _offline_schemas(monkeypatch) -> list[str]:
    """stac-validator (inside stac-api-validator) reads the JSON schemas it needs from the
    copies the tests have (pystac's core schemas, tests/data/stac_schemas) instead of
    fetching them; a schema it has no copy of is an error, never a download. Returns the
    list of schemas it asked for."""
    import json
    import re

    import stac_validator.utilities as su
    from pystac.validation.local_validator import get_local_schema_cache

    from stac_offline import SCHEMAS

    core = get_local_schema_cache()
    ext = re.compile(r"https://stac-extensions\.github\.io/([^/]+)/(v[^/]+)/schema\.json$")
    asked: list[str] = []

    def fetch(path: str) -> dict:
        asked.append(path)
        if path in core:
            return core[path]
        m = ext.match(path)
        if m and (SCHEMAS / m.group(1) / m.group(2) / "schema.json").is_file():
            return json.loads((SCHEMAS / m.group(1) / m.group(2) / "schema.json").read_text())
        m = re.match(r"https://schemas\.stacspec\.org/(v[^/]+)/(.+)$", path)
        if m:
            for uri, doc in core.items():
                if uri.endswith(f"/{m.group(1)}/{m.group(2)}"):
                    return doc
        raise ValueError(f"no offline copy of the schema {path}")

    monkeypatch.setattr(su, "_schema_cache", fetch)
    return asked


def _validator():
    """stac-api-validator's QueryConfig and validate_api, and the PyPI package stac_check it
    uses (the tests' own offline validator is tests/stac_offline.py, not in its way)."""
    import sys

    import stac_check.lint  # noqa: F401  (the PyPI package)
    from stac_api_validator.validations import QueryConfig, validate_api

    return QueryConfig, validate_api, sys.modules["stac_check"]


def test_stac_api_validator(service, token, backend, monkeypatch):  # noqa: F811
    """stac-api-validator over the service, both backends, with the conformance classes it
    declares among core, browseable, collections, features, item-search, its fields, sort,
    query and filter (query: both backends must declare it; the validator's checks of
    eq, neq, lt, lte, gt, gte, startsWith, endsWith, contains and in, GET and POST, each
    with results that all match): no error (schemas offline, its stac-check and
    stac-validator runs included)."""
    asked = _offline_schemas(monkeypatch)
    QueryConfig, validate_api, real_stac_check = _validator()
    import sys
    import warnings as _warnings

    monkeypatch.setitem(sys.modules, "stac_check", real_stac_check)  # while it runs
    conf = httpx.get(f"{service.url}/conformance", timeout=30).json()["conformsTo"]
    classes = [c for c, uri in (
        ("core", "https://api.stacspec.org/v1.0.0/core"),
        ("browseable", "https://api.stacspec.org/v1.0.0/browseable"),
        ("collections", "https://api.stacspec.org/v1.0.0/collections"),
        ("features", "https://api.stacspec.org/v1.0.0/ogcapi-features"),
        ("item-search", "https://api.stacspec.org/v1.0.0/item-search"),
        ("item-search#fields", "https://api.stacspec.org/v1.0.0/item-search#fields"),
        ("item-search#sort", "https://api.stacspec.org/v1.0.0/item-search#sort"),
        ("filter", "https://api.stacspec.org/v1.0.0-rc.2/item-search#filter"),
        ("item-search#query", "https://api.stacspec.org/v1.0.0/item-search#query"),
        ("features#query", "https://api.stacspec.org/v1.0.0/ogcapi-features#query"))
        if uri in conf]
    assert {"core", "features", "item-search", "item-search#fields", "item-search#sort",
            "item-search#query", "features#query"} <= set(classes), conf
    geometry = ('{"type": "Polygon", "coordinates": [[[3.0, 50.8], [3.1, 50.8], [3.1, 50.9], '
                '[3.0, 50.9], [3.0, 50.8]]]}')
    with _warnings.catch_warnings():
        _warnings.simplefilter("ignore", DeprecationWarning)  # pystac's, inside the validator
        warnings, errors = validate_api(
            root_url=service.url, ccs_to_validate=classes, collection="agriseries-l2a",
            geometry=geometry, auth_bearer_token=token, auth_query_parameter=None,
            # a property every item has with a non-empty value: the validator takes a
            # present 0.0 (the cloud cover of some items) for a missing field
            fields_nested_property="properties.platform", validate_pagination=False,
            # the query checks, for the L2A items: eo:cloud_cover 0.0 (two), 0.098 (three),
            # 0.293, 4.59, 94.824, 100.0; platform sentinel-2a or landsat-8; instruments
            # ["msi"] or ["oli", "tirs"]. Numbers given as numbers: the validator sends the
            # values as given, and its command line's strings ("50") are not numbers to the
            # query extension (lt "50" is refused, eq "0" compares a string)
            query_config=QueryConfig(
                query_comparison_field="eo:cloud_cover", query_eq_value=0.0,
                query_neq_value=0.0, query_lt_value=50, query_lte_value=4.59,
                query_gt_value=0.098, query_gte_value=94.824, query_substring_field="platform",
                query_starts_with_value="sentinel", query_ends_with_value="2a",
                query_contains_value="tinel", query_in_field="instruments",
                query_in_values="msi,oli"),
            transaction_collection=None,
            headers=None, open_assets_urls=False)
    print(f"{backend[0]}: {classes}; warnings {warnings.errors}; schemas {sorted(set(asked))}")
    assert asked, "stac-validator validated nothing"
    assert not errors.errors, "\n".join(msg for _, msg in errors.errors[:20])
