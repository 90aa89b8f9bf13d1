"""Publication into the embedded catalogue: deferred rewrites over a backlog.

A publisher draining a backlog into the geoparquet backend records each batch in the index
and rewrites each collection's file once at the end (not once per batch); a deferred change
that was not written (publisher killed) is written by the next flush, from another process.
The items are a real product's (the MUSCATE Landsat 8 sample of tests/data) copied under new
ids and dates; the production database and its outbox are a real job store (SQLite).
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_publish_pgstac import items, store  # noqa: E402,F401  (the module's fixture)


def searched(folder: Path, collection: str = "agriseries-l2a") -> set[str]:
    """The ids a search of the collection's file finds (DuckDB, as the service does)."""
    from agriseries.distribution.catalog.geoparquet import duckdb_client

    f = folder / f"{collection}.parquet"
    if not f.exists():
        return set()
    found = duckdb_client(folder / "duckdb-extensions").search(str(f), limit=100000)
    return {it["id"] for it in found}


def listed(folder: Path) -> dict[str, dict]:
    return {c["id"]: c for c in json.loads((folder / "collections.json").read_text())}


def test_deferred_apply_written_by_the_next_flush_even_in_another_process(tmp_path, store):
    from agriseries.distribution.catalog.geoparquet import GeoparquetCatalog

    pubs = items(store, 30)
    folder = tmp_path / "catalog"
    cat = GeoparquetCatalog(folder)
    cat.apply(pubs[:10], [], store)
    assert searched(folder) == {p["id"] for p in pubs[:10]} and cat.pending() == []
    cat.apply(pubs[10:], [pubs[0]["id"]], store, defer=True)
    assert cat.count() == 29 and cat.pending() == ["agriseries-l2a"]
    assert searched(folder) == {p["id"] for p in pubs[:10]}  # the files are not rewritten yet
    # the publisher is gone; another process flushes what it left
    code = ("import sys; from agriseries.distribution.catalog.geoparquet import "
            "GeoparquetCatalog as G; print(G(sys.argv[1]).flush(sys.argv[2]))")
    out = subprocess.run([sys.executable, "-c", code, str(folder), str(store)], check=True,
                         capture_output=True, text=True, timeout=300).stdout
    assert out.strip() == "['agriseries-l2a']"
    assert searched(folder) == {p["id"] for p in pubs[1:]}
    assert cat.pending() == [] and cat.flush(store) == []
    ext = listed(folder)["agriseries-l2a"]["extent"]["temporal"]["interval"][0]
    assert ext[1].startswith(pubs[-1]["properties"]["datetime"][:10])
    cat.apply([], [p["id"] for p in pubs], store)  # everything removed: file and entry gone
    assert not (folder / "agriseries-l2a.parquet").exists() and listed(folder) == {}


def test_backlog_drained_with_one_rewrite_per_collection(tmp_path, store):
    """1,200 products recorded by production (a job store's outbox), drained in batches of
    500: every product in the catalogue's file once, written once (not once per batch)."""
    from agriseries.distribution.catalog.geoparquet import GeoparquetCatalog
    from agriseries.distribution.publisher import Publisher
    from agriseries.production.catalogue import ProductCatalogue
    from agriseries.production.records import ProductRecord

    writes: list[tuple[str, int]] = []

    class Counted(GeoparquetCatalog):
        def _write_parquet(self, collection, its):
            writes.append((collection, len(its)))
            super()._write_parquet(collection, its)

    f = next(p for p in store.glob("L2A/*/*/*/*.json") if p.stem == p.parent.name)
    raw = json.loads(f.read_text())
    db = f"sqlite:///{tmp_path / 'jobs.sqlite'}"
    pc = ProductCatalogue(db)
    recs = []
    for p in items(store, 1200):
        it = {**raw, "id": p["id"], "properties": p["properties"]}
        when = dt.datetime.fromisoformat(p["properties"]["datetime"].replace("Z", "+00:00"))
        recs.append(ProductRecord(p["id"], "L2A", "T31TCJ", when, when, str(f), it))
    pc.add_products(recs)
    pc.close()
    pub = Publisher(db, Counted(tmp_path / "catalog"), store, timeout_s=300)
    try:
        rep = pub.drain(batch=500)
    finally:
        pub.close()
    assert rep.published == 1200 and rep.backlog == 0 and not rep.failures, rep
    assert writes == [("agriseries-l2a", 1200)]
    assert searched(tmp_path / "catalog") == {r.product_id for r in recs}
