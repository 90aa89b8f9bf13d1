"""L3A graphs computed with a caller's ``distributed.Client``: no pixels in the graphs.

Real engine: a dask.distributed LocalCluster of 2 worker processes (1 thread each) on the
loopback. Real data: the three weeks of the WorldCereal Flanders 2018 patch of the
production tests (tests/data/production/inbox: 8 Sentinel-2 L2A dates, 1 Landsat 8 date).

The graphs an L3A synthesis sends the scheduler carry no pixels: the 20 m masks the coarse
pass computed and the coarse fields are scattered to the workers once and named by key,
and each row of the write sends only the tasks of that row. Measured with distributed's own
count of the bytes it sends (its "large graph" warning, at a threshold of 0 bytes), on a
grid of 2 x 2 blocks of 512 px at 10 m around the patch; the products equal those of the
local scheduler. (The production's ``engine.chunks: cluster``, which computed a job's graphs
this way, was removed: tests/test_site.py.)

Sockets: Dask talks TCP on the loopback, so the module is marked ``allow_hosts``.
"""

from __future__ import annotations

import datetime as dt
import re
import warnings
from pathlib import Path

import dask
import numpy as np
import pytest
import rasterio

pytestmark = pytest.mark.allow_hosts(["127.0.0.1"])

INBOX = Path(__file__).parent / "data" / "production" / "inbox"


@pytest.fixture(scope="module")
def cluster():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                      host="127.0.0.1", memory_limit="2GiB") as lc, Client(lc) as client:
        yield client


def _pixels(folder: Path) -> dict[str, np.ndarray]:
    out = {}
    for f in sorted(folder.rglob("*.tif")):
        with rasterio.open(f) as src:
            out[str(f.relative_to(folder))] = src.read()
    return out


def _wide_synthesis(store, size: int, chunk: int):
    """The lazy synthesis of the store's L2A dates (June 2018) on a 20 m grid of ``size``
    px around the patch (reads past the files are no data), ``chunk`` px blocks at 10 m."""
    from odc.geo.geom import Geometry

    from agriseries.composite import WaspParams
    from agriseries.composite.processor import (
        R1_BANDS,
        R2_BANDS,
        CompositeGrids,
        acquisition_from_product,
        merge_passes,
        synthesize,
    )
    from agriseries.core.grid import snap_to_tile, tile_geobox

    items = list(store.items(level="L2A"))
    t20 = tile_geobox("T31UDS", 20)
    patch = snap_to_tile(t20, Geometry(items[0].geometry, "EPSG:4326").to_crs(t20.crs))
    r0 = int(round((patch.affine.f - t20.affine.f) / t20.affine.e)) - 8
    c0 = int(round((patch.affine.c - t20.affine.c) / t20.affine.a)) - 8
    grids = CompositeGrids.from_grid(t20[r0:r0 + size, c0:c0 + size], (10, 20))
    acqs = [acquisition_from_product(store.open(it), grids,
                                     {10: R1_BANDS, 20: R2_BANDS + ("B02",)},
                                     {10: chunk, 20: chunk // 2}) for it in items]
    acqs, _ = merge_passes(acqs)
    out, _ = synthesize(acqs, dt.date(2018, 6, 15), grids, {10: R1_BANDS, 20: R2_BANDS},
                        {20: ("B02",)}, WaspParams(chunks=chunk))
    return out, grids, len(acqs)


def _write(out, grids, folder: Path) -> None:
    from agriseries.io.cog import CogJob, write_cogs

    folder.mkdir()
    write_cogs([CogJob(folder / f"{v}_{res}m.tif", ds[v].data, grids.fine[res])
                for res, ds in out.items() for v in ds.data_vars])


def test_l3a_graphs_sent_to_the_cluster_carry_no_pixels(tmp_path, cluster):
    from agriseries.io.ingest import ingest
    from agriseries.io.store import ProductStore

    client = cluster
    store = ProductStore(tmp_path / "store")
    assert all(r.status == "ingested" for r in ingest(sorted(INBOX.glob("*.nc")), store))
    size, chunk = 512, 512  # 20 m grid of 512 px: 2 x 2 blocks of 512 px at 10 m, 256 at 20 m
    with dask.config.set(scheduler="threads"):
        out, grids, dates = _wide_synthesis(store, size, chunk)
        _write(out, grids, tmp_path / "local")
    sizes = []
    with dask.config.set({"scheduler": client,
                          "distributed.admin.large-graph-warning-threshold": "0B"}), \
            warnings.catch_warnings(record=True) as seen:
        warnings.filterwarnings("always", message="Sending large graph", category=UserWarning)
        out, grids, _ = _wide_synthesis(store, size, chunk)
        _write(out, grids, tmp_path / "cluster")
    units = {"B": 1, "kiB": 2**10, "MiB": 2**20, "GiB": 2**30}
    for w in seen:
        m = re.search(r"Sending large graph of size ([\d.]+) (\w+)", str(w.message))
        assert m, w.message
        sizes.append(float(m[1]) * units[m[2]])
    # the coarse pass (one graph), then one per row of blocks (2 rows)
    assert len(sizes) == 3, sizes
    # one row of the held 20 m masks alone (every date, 256 x 512 px, uint8) weighs more than
    # any graph sent: they are on the workers, not in the graphs (before, each row sent
    # the masks of the whole grid and the coarse windows: 3.4 MiB here)
    row_of_masks = dates * (chunk // 2) * size
    assert max(sizes) < row_of_masks, (sizes, row_of_masks)
    a, b = _pixels(tmp_path / "local"), _pixels(tmp_path / "cluster")
    assert len(a) == 2 * 3 + 4 + 6
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    # the scattered data goes with the graphs that held it
    del out, grids
    import gc
    import time

    def scattered(dask_scheduler):
        return [k for k in dask_scheduler.tasks if str(k).startswith("ndarray-")]

    t0 = time.monotonic()
    while (left := client.run_on_scheduler(scattered)) and time.monotonic() - t0 < 10:
        gc.collect()
        time.sleep(0.1)
    assert left == []
