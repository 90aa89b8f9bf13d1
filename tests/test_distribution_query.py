"""The STAC API query extension (``query``), on both catalogue backends, for real: the
products of tests/test_distribution.py published, ``agriseries serve`` on loopback, every
request over HTTP (GET and POST ``/search``, ``/collections/<id>/items``, the basket). The
expected answers are computed from the product items in the store, not from the service.

Also :func:`agriseries.distribution.query.query_filter` itself: what it makes of each
operator and which values it refuses.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from agriseries.distribution.query import QueryError, query_filter
from test_distribution import (  # noqa: F401  (module fixtures)
    auth,
    backend,
    cli,
    published,
    service,
    site,
    token,
)

pytestmark = pytest.mark.allow_hosts(["127.0.0.1"])

L2A = "agriseries-l2a"


@pytest.fixture()
def c(service):  # noqa: F811
    with httpx.Client(base_url=service.url, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def store_items(published):  # noqa: F811
    """The product items of the store, by id, as the production wrote them."""
    out = {}
    for f in Path(published.store).glob("*/*/*/*/*.json"):
        d = json.loads(f.read_text())
        if isinstance(d, dict) and d.get("type") == "Feature" and d["id"] == f.stem:
            out[d["id"]] = d
    assert len(out) == 19, sorted(out)
    return out


def _l2a(store_items, keep) -> set[str]:
    return {i for i, d in store_items.items() if i.startswith("L2A_") and keep(d["properties"])}


def _pages(c, first: httpx.Response) -> list[dict]:
    """Every feature of a search, following its next links (GET or POST)."""
    assert first.status_code == 200, first.text[:300]
    r, out = first.json(), []
    for _ in range(50):
        out += r["features"]
        nxt = [ln for ln in r["links"] if ln["rel"] == "next"]
        if not nxt:
            return out
        ln = nxt[0]
        resp = (c.post(ln["href"], json=ln["body"]) if ln.get("method") == "POST"
                else c.get(ln["href"]))
        assert resp.status_code == 200, (ln, resp.text[:300])
        r = resp.json()
    raise AssertionError("more than 50 pages")


def _three_ways(c, query: dict, *, filt=None, limit: int = 3) -> list[set[str]]:
    """The ids found in L2A by GET /search, POST /search and GET /collections/L2A/items,
    each through all its pages (``limit`` a page)."""
    get = {"collections": L2A, "limit": limit, "query": json.dumps(query)}
    post = {"collections": [L2A], "limit": limit, "query": query}
    items = {"limit": limit, "query": json.dumps(query)}
    if filt is not None:
        get.update({"filter": filt[0], "filter-lang": filt[1]})
        items.update({"filter": filt[0], "filter-lang": filt[1]})
        post.update({"filter": json.loads(filt[0]) if filt[1] == "cql2-json" else filt[0],
                     "filter-lang": filt[1]})
    return [{f["id"] for f in _pages(c, r)} for r in (
        c.get("/search", params=get), c.post("/search", json=post),
        c.get(f"/collections/{L2A}/items", params=items))]


def test_query_conformance_declared(service, c):  # noqa: F811
    """Both backends declare the query extension for item search and for a collection's
    items; the OpenAPI description lists the parameter."""
    conf = c.get("/conformance").json()["conformsTo"]
    assert "https://api.stacspec.org/v1.0.0/item-search#query" in conf, conf
    assert "https://api.stacspec.org/v1.0.0/ogcapi-features#query" in conf, conf
    api = c.get("/api").json()
    names = {p.get("name") for p in api["paths"]["/search"]["get"].get("parameters", [])}
    assert "query" in names, names


def test_numbers_compared_as_numbers(service, published, store_items, c):  # noqa: F811
    """eo:cloud_cover lt / lte / gt / gte / eq / neq / in: exactly the L2A items whose
    cloud cover is so (as numbers: lt 50 does not find the item of 100.0, which a text
    comparison does), through every page, by GET and POST search and the items route."""
    cc = (lambda p: p["eo:cloud_cover"])
    assert sorted(cc(d["properties"]) for i, d in store_items.items()
                  if i.startswith("L2A_")) == [0.0, 0.0, 0.098, 0.098, 0.098, 0.293, 4.59,
                                                94.824, 100.0]
    cases = [({"lt": 50}, lambda v: v < 50), ({"gt": 50}, lambda v: v > 50),
             ({"lte": 0.098}, lambda v: v <= 0.098), ({"gte": 4.59}, lambda v: v >= 4.59),
             ({"gt": 0.098, "lt": 94.824}, lambda v: 0.098 < v < 94.824),
             ({"eq": 0}, lambda v: v == 0), ({"neq": 0}, lambda v: v != 0),
             ({"ne": 0.098}, lambda v: v != 0.098), ({"in": [0, 100]}, lambda v: v in (0, 100)),
             ({"lt": 9}, lambda v: v < 9)]  # "100.0" < "9" and "94.824" < "9" as text
    for ops, keep in cases:
        want = _l2a(store_items, lambda p, keep=keep: keep(cc(p)))
        assert want, ops
        for got in _three_ways(c, {"eo:cloud_cover": ops}):
            assert got == want, (ops, sorted(got ^ want))
    assert "L2A_S2A_T31UDS_20180620T105211_SEN2COR" not in _l2a(  # the 100.0 one
        store_items, lambda p: cc(p) < 50)
    # no collection named: every collection's items whose cloud cover is under 1 (the two
    # L3A composites have 0.0; the L3B products have none)
    got = {f["id"] for f in _pages(c, c.post("/search", json={
        "limit": 4, "query": {"eo:cloud_cover": {"lt": 1}}}))}
    want = {i for i, d in store_items.items()
            if d["properties"].get("eo:cloud_cover") is not None
            and d["properties"]["eo:cloud_cover"] < 1}
    assert got == want and any(i.startswith("L3A_") for i in want), sorted(got ^ want)


def test_dates_strings_booleans_and_in(service, published, store_items, c):  # noqa: F811
    """Date-time comparisons, the string operators (case-insensitive; ``%`` and ``_`` of
    the value taken literally), ``in`` on a string and on an array property, ``eq`` on an
    array, booleans, a plain value for eq: the same items on both backends as computed from
    the store."""
    lineage = "processing:lineage"
    s2 = _l2a(store_items, lambda p: p["platform"].startswith("sentinel"))
    l8 = _l2a(store_items, lambda p: p["platform"] == "landsat-8")
    every = _l2a(store_items, lambda p: True)
    assert s2 and l8 and s2 | l8 == every
    needle = "10m_00002806639B424A"  # an underscore: a LIKE wildcard unless escaped
    with_needle = _l2a(store_items, lambda p: needle in p[lineage])
    assert with_needle and not _l2a(store_items, lambda p: "10mX00002806639B424A" in p[lineage])
    cases = [
        ({"datetime": {"gte": "2018-07-01T00:00:00Z"}},
         _l2a(store_items, lambda p: p["datetime"] >= "2018-07-01T00:00:00Z")),
        ({"datetime": {"lt": "2018-06-25T00:00:00+00:00"}},
         _l2a(store_items, lambda p: p["datetime"] < "2018-06-25T00:00:00Z")),
        ({"platform": {"startsWith": "SENTINEL-"}}, s2),
        ({"platform": {"endsWith": "-8"}}, l8),
        ({"platform": {"contains": "Tinel"}}, s2),
        ({"platform": {"eq": "Landsat-8"}}, l8),
        ({"platform": "landsat-8"}, l8),
        ({"platform": {"neq": "LANDSAT-8"}}, s2),
        ({"platform": {"in": ["LANDSAT-8", "sentinel-2b"]}}, l8),
        ({"instruments": {"in": ["oli", "nothing"]}}, l8),
        ({"instruments": {"eq": "msi"}}, s2),
        ({"instruments": {"neq": "msi"}}, l8),
        ({"agriseries:sensor_assumed": {"eq": False}}, l8),
        ({"agriseries:sensor_assumed": True}, s2),
        ({"constellation": {"eq": None}}, set()),
        ({"constellation": {"neq": None}}, every),
        ({lineage: {"contains": needle}}, with_needle),
        ({lineage: {"contains": "10mX00002806639B424A"}}, set()),  # _ is not a wildcard
        ({lineage: {"contains": "10m%00002806639B424A"}}, set()),  # nor is %
        ({lineage: {"startsWith": "ingested from"}}, every),
        ({"platform": {"startsWith": "sentinel", "endsWith": "2a"},
          "eo:cloud_cover": {"lt": 1}},
         _l2a(store_items, lambda p: p["platform"] == "sentinel-2a" and p["eo:cloud_cover"] < 1)),
        ({"no:such_property": {"eq": "x"}}, set()),
    ]
    for q, want in cases:
        for got in _three_ways(c, q, limit=4):
            assert got == want, (q, sorted(got ^ want))


def test_query_and_filter(service, published, store_items, c):  # noqa: F811
    """``query`` ANDed with the search's CQL2 ``filter`` (JSON and text), the items route
    too; the answer's self and next links carry the request's own query and filter."""
    want = _l2a(store_items, lambda p: p["eo:cloud_cover"] < 50
                and p["datetime"] >= "2018-06-28T00:00:00Z")
    assert want and want != _l2a(store_items, lambda p: p["eo:cloud_cover"] < 50)
    q = {"eo:cloud_cover": {"lt": 50}}
    jf = json.dumps({"op": ">=", "args": [{"property": "datetime"},
                                           {"timestamp": "2018-06-28T00:00:00Z"}]})
    for filt in ((jf, "cql2-json"), ("datetime >= TIMESTAMP('2018-06-28T00:00:00Z')",
                                     "cql2-text")):
        for got in _three_ways(c, q, filt=filt, limit=2):
            assert got == want, (filt, sorted(got ^ want))
    # the links say what was asked
    r = c.post("/search", json={"collections": [L2A], "limit": 2, "query": q,
                                "filter": json.loads(jf)}).json()
    for ln in r["links"]:
        if ln["rel"] in ("self", "next") and "body" in ln:
            assert ln["body"]["query"] == q and ln["body"]["filter"] == json.loads(jf), ln
    r = c.get("/search", params={"collections": L2A, "limit": 2, "query": json.dumps(q)}).json()
    nxt = [ln for ln in r["links"] if ln["rel"] == "next"]
    assert nxt and "filter" not in httpx.URL(nxt[0]["href"]).params, nxt
    assert json.loads(httpx.URL(nxt[0]["href"]).params["query"]) == q


def test_basket_search_with_query(service, published, backend, store_items, c):  # noqa: F811
    """The basket's search (the service's own internal search) serves query too."""
    tok = cli("users", "add", f"query-basket-{backend[0]}", "--store",
              str(published.store)).stdout.strip()
    h = auth(tok)
    c.delete("/basket", headers=h)
    want = _l2a(store_items, lambda p: p["eo:cloud_cover"] < 50)
    r = c.post("/basket/search", headers=h, json={"collections": [L2A],
                                                  "query": {"eo:cloud_cover": {"lt": 50}}})
    assert r.status_code == 200 and r.json() == {"matched": len(want), "added": len(want)}, \
        r.text
    assert {x["id"] for x in c.get("/basket", headers=h).json()["items"]} == want
    bad = c.post("/basket/search", headers=h, json={"query": {"eo:cloud_cover": {"lt": "5"}}})
    assert bad.status_code == 400 and "eo:cloud_cover" in bad.text, bad.text


def test_bad_query_is_400_naming_it(service, c):  # noqa: F811
    """A malformed query: 400 with a message naming the property, the operator and what
    was expected; by GET, by POST and on the items route."""
    cases = [
        ("{not json", "not JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('"eo:cloud_cover"', "expected a JSON object"),
        ('{"eo:cloud_cover": {"below": 5}}', "unknown operator 'below'"),
        ('{"eo:cloud_cover": {}}', "no operator"),
        ('{"eo:cloud_cover": [1, 2]}', "expected an object of operators"),
        ('{"eo:cloud_cover": {"lt": "50"}}', "'eo:cloud_cover' lt: expected a number or an "
                                              "RFC 3339 date-time"),
        ('{"eo:cloud_cover": {"gte": true}}', "'eo:cloud_cover' gte: expected a number"),
        ('{"datetime": {"lt": "2018-13-01T00:00:00Z"}}', "'datetime' lt: expected a number"),
        ('{"platform": {"startsWith": 5}}', "'platform' startsWith: expected a string"),
        ('{"platform": {"contains": ["a"]}}', "'platform' contains: expected a string"),
        ('{"platform": {"in": "landsat-8"}}', "'platform' in: expected a non-empty array"),
        ('{"platform": {"in": []}}', "'platform' in: expected a non-empty array"),
        ('{"platform": {"in": [true]}}', "'platform' in: expected a non-empty array"),
        ('{"platform": {"eq": {"a": 1}}}', "'platform' eq: expected a string, a number"),
        ('{"platform": {"eq": [1]}}', "'platform' eq: expected a string, a number"),
        ('{"eo:cloud_cover": {"lt": NaN}}', "'eo:cloud_cover' lt: expected a finite number"),
    ]
    for text, says in cases:
        answers = [c.get("/search", params={"query": text}),
                   c.get(f"/collections/{L2A}/items", params={"query": text})]
        try:
            value = json.loads(text)
        except ValueError:
            value = None
        if isinstance(value, (dict, list)):
            answers.append(c.post("/search", content='{"query": %s}' % text,
                                  headers={"content-type": "application/json"}))
        for r in answers:
            assert r.status_code == 400, (text, r.request.method, r.status_code, r.text[:300])
            assert says in r.json()["description"], (text, r.json())
    r = c.get("/search", params=[("query", "{}"), ("query", "{}")])
    assert r.status_code == 400 and "2 times" in r.json()["description"]
    r = c.get("/search", params={"query": '{"platform": {"eq": "x"}}', "filter": "a <<< 3"})
    assert r.status_code == 400 and "invalid CQL2 filter" in r.json()["description"], r.text


# ------------------------------------------------------------------ the translation itself


def test_query_filter_translation():
    """What each operator becomes; kinds known (the embedded catalogue) or not (pgstac)."""
    p = {"property": "p"}

    def ci(x):
        return {"op": "casei", "args": [x]}

    assert query_filter({}) is None
    assert query_filter({"properties.p": {"lt": 5}}) == {"op": "<", "args": [p, 5]}
    assert query_filter({"p": {"gte": 1, "lte": 2}}) == {
        "op": "and", "args": [{"op": ">=", "args": [p, 1]}, {"op": "<=", "args": [p, 2]}]}
    assert query_filter({"p": {"startsWith": "a_b%c\\"}}, {}) == {
        "op": "like", "args": [ci(p), ci("a\\_b\\%c\\\\%")]}
    assert query_filter({"p": {"eq": "X"}}, {"p": "string"}) == {
        "op": "=", "args": [ci(p), ci("X")]}
    assert query_filter({"p": {"eq": "X"}}) == {"op": "or", "args": [
        {"op": "=", "args": [ci(p), ci("X")]}, {"op": "a_contains", "args": [p, ["X"]]}]}
    assert query_filter({"p": {"eq": "X"}}, {"p": "array"}) == {
        "op": "a_contains", "args": [p, ["X"]]}
    assert query_filter({"p": {"in": ["a", 1]}}, {}) == {"op": "or", "args": [
        {"op": "in", "args": [p, [1]]}, {"op": "in", "args": [ci(p), [ci("a")]]}]}
    assert query_filter({"p": {"neq": None}}) == {
        "op": "not", "args": [{"op": "isNull", "args": [p]}]}
    assert query_filter({"p": {"eq": "2018-07-01T00:00:00Z"}}) == {
        "op": "=", "args": [p, "2018-07-01T00:00:00Z"]}
    for q, kinds, says in (({"p": {"eq": "1"}}, {"p": "number"}, "holds numbers"),
                           ({"p": {"in": [1]}}, {"p": "array"}, "holds arrays"),
                           ({"p": {"contains": "a"}}, {"p": "array"}, "holds arrays"),
                           ({"": {"eq": 1}}, None, "non-empty string"),
                           ({"p": {"lt": float("inf")}}, None, "finite")):
        with pytest.raises(QueryError, match=says):
            query_filter(q, kinds)
