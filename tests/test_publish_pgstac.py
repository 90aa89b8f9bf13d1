"""Publication into pgstac in bulk (``PgstacCatalog._load_items``), against pgstac's own
``upsert_items`` on the same real items, in the session's PostgreSQL server.

The items are the STAC item of a real product (the MUSCATE Landsat 8 sample of tests/data,
ingested into a temporary store, with the store's L2A collection and its ``item_assets``)
copied under new ids and dates, as the distribution benchmark does.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.allow_hosts(["127.0.0.1"])

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("publish-pgstac") / "store"
    src = next((DATA / "muscate" / "L8_N2A").glob("LANDSAT8_*D0005H0002"))
    subprocess.run([sys.executable, "-m", "agriseries.cli", "ingest", str(src), "--store",
                    str(root), "--allow-missing-bands"], check=True, capture_output=True,
                   timeout=300)
    return root


def items(store: Path, n: int, *, period_every: int = 0) -> list[dict]:
    """``n`` published copies of the store's L2A item, 9 days apart from 2016 on (three
    years and more for n > 120); every ``period_every``-th one a period item (start/end)."""
    from agriseries.distribution.items import published_item

    f = next(p for p in store.glob("L2A/*/*/*/*.json") if p.stem == p.parent.name)
    item = json.loads(f.read_text())
    t0 = dt.datetime(2016, 1, 1, tzinfo=dt.UTC)
    out = []
    for i in range(n):
        it = copy.deepcopy(item)
        it["id"] = f"{item['id']}-{i:05d}"
        when = t0 + dt.timedelta(days=9 * i)
        props = it["properties"]
        props["datetime"] = when.strftime("%Y-%m-%dT%H:%M:%SZ")
        props.pop("start_datetime", None)
        props.pop("end_datetime", None)
        if period_every and i % period_every == 0:
            props["start_datetime"] = (when - dt.timedelta(days=15)).strftime("%Y-%m-%dT%H:%M:%SZ")
            props["end_datetime"] = (when + dt.timedelta(days=15)).strftime("%Y-%m-%dT%H:%M:%SZ")
        out.append(published_item(it, f, store))
    return out


def catalog(postgres_server, **kw):
    from sqlalchemy.engine import make_url

    from agriseries.distribution.catalog.pgstac import PgstacCatalog

    name = make_url(postgres_server.create_database()).database
    return PgstacCatalog(f"postgresql://{postgres_server.user}@127.0.0.1:"
                         f"{postgres_server.port}/{name}", **kw)


def served(cat, ids: list[str]) -> dict[str, dict]:
    """The items as pgstac gives them back (hydrated with the collection's base item)."""
    with cat._tx("read items") as cur:
        cur.execute("SELECT i.id, pgstac.get_item(i.id) FROM unnest(%s::text[]) AS i(id)",
                    (ids,))
        return dict(cur.fetchall())


def rows(cat) -> list[tuple]:
    with cat._tx("read rows") as cur:
        cur.execute("SELECT id, collection, datetime, end_datetime, ST_AsText(geometry) "
                    "FROM pgstac.items ORDER BY id")
        return cur.fetchall()


def test_bulk_load_gives_what_upsert_items_gives(postgres_server, store):
    """Same rows (datetimes, geometry, collection) and the same served items as
    ``pgstac.upsert_items``; each served item equal to the published one."""
    pubs = items(store, 60, period_every=7)
    ref, bulk = catalog(postgres_server), catalog(postgres_server)
    try:
        from agriseries.distribution.items import level_collection

        with ref._tx("reference") as cur:
            cur.execute("SELECT pgstac.upsert_collection(%s::jsonb)",
                        (json.dumps(level_collection("agriseries-l2a", pubs, store)),))
            cur.execute("SELECT pgstac.upsert_items(%s::jsonb)", (json.dumps(pubs),))
        bulk.apply(pubs, [], store)
        assert rows(bulk) == rows(ref)
        ids = [p["id"] for p in pubs]
        got = served(bulk, ids)
        assert got == served(ref, ids)
        for p in pubs:
            assert got[p["id"]] == json.loads(json.dumps(p)), p["id"]
    finally:
        ref.close()
        bulk.close()


def test_republish_keeps_one_copy_with_the_latest_content(postgres_server, store):
    pubs = items(store, 700)
    cat = catalog(postgres_server)
    try:
        for i in range(0, len(pubs), 500):
            cat.apply(pubs[i:i + 500], [], store)
        assert cat.count() == 700
        changed = copy.deepcopy(pubs[10])
        changed["properties"]["eo:cloud_cover"] = 99.5
        again = copy.deepcopy(pubs[11])
        cat.apply([pubs[10], changed, again, *pubs[600:]], [pubs[0]["id"], "no-such-item"], store)
        assert cat.count() == 699
        assert cat.ids() == {p["id"] for p in pubs[1:]}
        assert served(cat, [changed["id"]])[changed["id"]]["properties"]["eo:cloud_cover"] == 99.5
        with cat._tx("extent") as cur:
            cur.execute("SELECT content->'extent'->'temporal'->'interval' FROM pgstac.collections")
            (interval,), = cur.fetchall()
        assert interval[0][0].startswith("2016-01-01") and interval[0][1].startswith(
            pubs[-1]["properties"]["datetime"][:10])
    finally:
        cat.close()


def test_year_partitions_made_as_needed(postgres_server, store):
    """A collection partitioned by year (pgstac's ``partition_trunc``): a batch spanning
    several years lands in one partition per year, searchable by datetime."""
    pubs = items(store, 150)  # 2016-01 .. 2019-09
    cat = catalog(postgres_server)
    try:
        cat.apply(pubs[:1], [], store)
        with cat._tx("partition by year") as cur:
            cur.execute("UPDATE pgstac.collections SET partition_trunc = 'year'")
        cat.apply(pubs[1:], [], store)
        with cat._tx("partitions") as cur:
            cur.execute("SELECT partition, count(*) FROM pgstac.partitions_view p JOIN "
                        "pgstac.items i ON i.datetime <@ p.partition_dtrange GROUP BY 1 ORDER BY 1")
            parts = cur.fetchall()
            cur.execute("SELECT count(*) FROM pgstac.items WHERE datetime >= '2018-01-01' "
                        "AND datetime < '2019-01-01'")
            (n2018,), = cur.fetchall()
        assert [p for p, _ in parts] == [f"_items_1_{y}" for y in (2016, 2017, 2018, 2019)]
        assert sum(n for _, n in parts) == 150
        assert n2018 == sum(1 for p in pubs if p["properties"]["datetime"].startswith("2018"))
    finally:
        cat.close()


def test_failed_batch_publishes_nothing(postgres_server, store):
    """An item pgstac refuses (a geometry that is not GeoJSON) fails the whole batch with
    a StoreError naming the catalogue; nothing of it is published, the next batch goes in."""
    from agriseries.core.errors import StoreError

    pubs = items(store, 20)
    bad = copy.deepcopy(pubs[5])
    bad["geometry"] = {"type": "Polygon", "coordinates": "nonsense"}
    cat = catalog(postgres_server)
    try:
        with pytest.raises(StoreError, match="pgstac catalogue .*publish 20 item"):
            cat.apply([*pubs[:5], bad, *pubs[6:]], [], store)
        assert cat.count() == 0
        cat.apply(pubs, [], store)
        assert cat.count() == 20
    finally:
        cat.close()
