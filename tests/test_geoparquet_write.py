"""The embedded catalogue's file writer (``catalog.geoparquet.write_items``): items converted
a piece at a time, written in row groups, the same items as rustac's write of all of them at
once. The items are real STAC API responses of tests/data/acquire (Earth Search Sentinel-2
L2A and Landsat C2 L2: different assets and properties, so the pieces' schemas differ)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data" / "acquire"

pytest.importorskip("rustac")
pq = pytest.importorskip("pyarrow.parquet")


def real_items() -> list[dict]:
    out = []
    for name in ("earth-search_v1_sentinel-2-l2a", "earth-search_v1_landsat-c2-l2",
                 "earth-search_v1_sentinel-2-c1-l2a"):
        out += json.loads((DATA / f"{name}.json").read_text())["features"]
    for it in out:
        it["collection"] = "mixed"
        it["links"] = []
    return sorted(out, key=lambda it: (it["properties"]["datetime"], it["id"]))


def _plain(x):
    """An item without the nulls a columnar file gives the properties other items have."""
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items() if v is not None}
    if isinstance(x, list):
        return [_plain(v) for v in x]
    return x


def test_pieces_and_row_groups_hold_what_one_rustac_write_holds(tmp_path):
    from agriseries.distribution.catalog.geoparquet import (
        rustac_write,
        duckdb_client,
        write_items,
    )

    items = real_items()
    assert len({json.dumps(sorted(it["assets"])) for it in items}) >= 2  # schemas differ
    ours, ref = tmp_path / "ours.parquet", tmp_path / "ref.parquet"
    assert write_items(ours, iter(items), row_group_items=4, piece_items=3) == len(items)
    asyncio.run(rustac_write(ref, items))
    md = pq.read_metadata(ours)
    sizes = [md.row_group(i).num_rows for i in range(md.num_row_groups)]
    assert sizes == [4] * (len(items) // 4) + ([len(items) % 4] if len(items) % 4 else [])
    geo = json.loads(md.metadata[b"geo"])
    ref_geo = json.loads(pq.read_metadata(ref).metadata[b"geo"])
    assert geo["columns"]["geometry"]["bbox"] == ref_geo["columns"]["geometry"]["bbox"]
    assert sorted(f.name for f in tmp_path.iterdir()) == ["ours.parquet", "ref.parquet"]
    c = duckdb_client(tmp_path / "ext")
    for kw in ({}, {"bbox": [-106.0, 39.0, -104.0, 41.0]},
               {"datetime": "2023-10-08T17:00:00Z/2023-10-08T18:00:00Z"},
               {"filter": {"op": "<", "args": [{"property": "eo:cloud_cover"}, 20]},
                "filter-lang": "cql2-json"}):
        a = c.search(str(ours), limit=1000, **kw)
        b = c.search(str(ref), limit=1000, **kw)
        assert a and [it["id"] for it in a] == [it["id"] for it in b], kw
        assert [_plain(it) for it in a] == [_plain(it) for it in b], kw
    assert len(c.search(str(ours), limit=1000)) == len(items)


def test_no_item_is_an_error_naming_the_file(tmp_path):
    from agriseries.distribution.catalog.geoparquet import write_items

    with pytest.raises(ValueError, match="empty.parquet: no item"):
        write_items(tmp_path / "empty.parquet", [])
    assert list(tmp_path.iterdir()) == []
